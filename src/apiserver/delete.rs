//! DELETE on objects and collections: preconditions (uid, resourceVersion),
//! `propagationPolicy`/`orphanDependents` recorded as the `orphan` and
//! `foregroundDeletion` finalizers (the garbage collector acts on them later),
//! finalizers holding objects with `deletionTimestamp` set, and graceful
//! deletion of pods bound to a node (their kubelet finishes it; with no
//! kubelet the pod stays until its finalizers/kubelet act). Namespaces turn
//! Terminating and are emptied, then removed. The default namespaces cannot be
//! deleted. The response is always the object (never a `Status` Success).
//! `dryRun=All` (query or DeleteOptions body) computes the answer and stores
//! nothing.

use axum::response::Response;
use http::StatusCode;
use serde_json::{json, Value};

use super::codec;
use super::keys;
use super::objects::{self, meta_mut, meta_str};
use super::context::{check_dry_run, store_err, Ctx};
use super::status::ApiStatus;
use crate::store::{ListOptions, StoreError};

pub(crate) fn delete(ctx: &Ctx, body: &[u8]) -> Result<Response, ApiStatus> {
    let v = delete_object(ctx, body)?;
    Ok(ctx.respond(StatusCode::OK, &v))
}

fn delete_object(ctx: &Ctx, body: &[u8]) -> Result<Value, ApiStatus> {
    let name = ctx.name.clone().unwrap_or_default();
    let opts: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        codec::parse_document(body, false)?
    };
    let dry_run = delete_dry_run(ctx, &opts)?;
    let policy = opts
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .or(ctx.q("propagationPolicy"))
        .map(String::from);
    let orphan = opts
        .get("orphanDependents")
        .and_then(Value::as_bool)
        .or(ctx.q("orphanDependents").map(|v| v == "true"));
    if ctx.def.group_resource() == "namespaces"
        && ["default", "kube-system", "kube-public"].contains(&name.as_str())
    {
        return Err(ApiStatus::forbidden(
            ctx.target(&name),
            "this namespace may not be deleted",
        ));
    }
    let key = ctx.key();
    for _ in 0..10 {
        let (rec, mut cur) = ctx.read_current(&key, &name)?;
        if let Some(uid) = opts.pointer("/preconditions/uid").and_then(Value::as_str) {
            let have = meta_str(&cur, "uid").unwrap_or("");
            if uid != have {
                return Err(ApiStatus::conflict(ctx.target(&name), &format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {have}")));
            }
        }
        if let Some(rv) = opts
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
        {
            if rv != rec.mod_revision.to_string() {
                return Err(ApiStatus::conflict(ctx.target(&name), &format!("Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}", rec.mod_revision)));
            }
        }
        let mut fins = objects::finalizers(&cur);
        let (add, drop) = match (orphan, policy.as_deref()) {
            (Some(true), _) | (_, Some("Orphan")) => (Some("orphan"), vec!["foregroundDeletion"]),
            (_, Some("Foreground")) => (Some("foregroundDeletion"), vec!["orphan"]),
            (Some(false), _) | (_, Some("Background")) => {
                (None, vec!["orphan", "foregroundDeletion"])
            }
            _ => (None, vec![]),
        };
        fins.retain(|f| !drop.contains(&f.as_str()));
        if let Some(a) = add {
            if !fins.iter().any(|f| f == a) {
                fins.push(a.into());
            }
        }
        let is_ns = ctx.def.group_resource() == "namespaces";
        let grace = pod_grace(ctx, &cur, &opts);
        if fins.is_empty() && !is_ns && grace == 0 {
            if dry_run {
                return Ok(cur);
            }
            match ctx.state.store.delete(&key, Some(rec.mod_revision)) {
                Ok(r) => {
                    objects::set_resource_version(&mut cur, r.mod_revision);
                    return Ok(cur);
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store_err(e)),
            }
        }
        objects::set_finalizers(&mut cur, &fins);
        if cur.pointer("/metadata/deletionTimestamp").is_none() {
            let m = meta_mut(&mut cur);
            m.insert(
                "deletionTimestamp".into(),
                json!(objects::rfc3339_in(grace)),
            );
            m.insert("deletionGracePeriodSeconds".into(), json!(grace));
        }
        if is_ns {
            cur["status"]["phase"] = json!("Terminating");
        }
        if dry_run {
            return Ok(cur);
        }
        match ctx
            .state
            .store
            .update(&key, &objects::to_stored_for(&ctx.def, &cur), rec.mod_revision)
        {
            Ok(r) => {
                if is_ns {
                    tokio::spawn(super::namespaces::finish_namespace(
                        ctx.state.clone(),
                        name.clone(),
                    ));
                }
                return objects::from_record(&ctx.def, &r);
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(store_err(e)),
        }
    }
    Err(ApiStatus::modified(ctx.target(&name)))
}

/// Whether a DELETE is a dry run: `dryRun` in the DeleteOptions body (what
/// kubectl sends) or in the query. Values other than `All` are refused as
/// kube-apiserver's `ValidateDeleteOptions` does.
fn delete_dry_run(ctx: &Ctx, opts: &Value) -> Result<bool, ApiStatus> {
    let body: Vec<String> = match opts.get("dryRun") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(other) => vec![other.to_string()],
    };
    check_dry_run("DeleteOptions", &body)?;
    Ok(ctx.dry_run() || body.iter().any(|v| v == "All"))
}

/// DELETE on a collection: deletes every selected object as a single DELETE
/// would, and returns the list of what was deleted (or marked for deletion).
pub(crate) fn delete_collection(mut ctx: Ctx, body: &[u8]) -> Result<Response, ApiStatus> {
    let sel = ctx.selectors()?;
    let prefix = keys::collection_prefix(&ctx.def, ctx.namespace.as_deref());
    let page = ctx
        .state
        .store
        .list(&ListOptions {
            prefix,
            ..Default::default()
        })
        .map_err(store_err)?;
    let mut items = Vec::new();
    for rec in &page.records {
        let obj = objects::from_record(&ctx.def, rec)?;
        if !sel.matches(&obj) {
            continue;
        }
        ctx.namespace = meta_str(&obj, "namespace").map(String::from);
        ctx.name = meta_str(&obj, "name").map(String::from);
        match delete_object(&ctx, body) {
            Ok(v) => items.push(v),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let rv = ctx.state.store.current_revision().to_string();
    Ok(ctx.respond(StatusCode::OK, &json!({"kind": format!("{}List", ctx.def.kind), "apiVersion": ctx.def.api_version(), "metadata": {"resourceVersion": rv}, "items": items})))
}

/// Pods bound to a node are deleted gracefully (their kubelet finishes the
/// deletion); unbound or finished pods, and every other kind, at once.
fn pod_grace(ctx: &Ctx, cur: &Value, opts: &Value) -> i64 {
    if ctx.def.group_resource() != "pods" {
        return 0;
    }
    let bound = cur
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let finished = matches!(
        cur.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded") | Some("Failed")
    );
    if !bound || finished {
        return 0;
    }
    opts.get("gracePeriodSeconds")
        .and_then(Value::as_i64)
        .or_else(|| ctx.q("gracePeriodSeconds").and_then(|g| g.parse().ok()))
        .or_else(|| {
            cur.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
        })
        .unwrap_or(30)
        .max(0)
}
