//! Writes: create (generateName, uid, creationTimestamp, generation,
//! namespace checks, dryRun) and update (PUT, resourceVersion conflicts, the
//! status split), both through the read-modify-CAS [`write_loop`] that PATCH
//! and apply share. Writes that change nothing are not stored.

use axum::response::Response;
use http::StatusCode;
use serde_json::{json, Value};

use crate::apiserver::context::{store_err, Ctx};
use crate::apiserver::keys;
use crate::apiserver::objects::{self, meta_mut, meta_str};
use crate::apiserver::registry::ResourceDef;
use crate::apiserver::status::{self, ApiStatus, Target};
use crate::apiserver::subresources::ephemeral_containers;
use crate::store::StoreError;

pub(super) fn check_type(def: &ResourceDef, obj: &Value) -> Result<(), ApiStatus> {
    if let Some(av) = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        let group = av.rsplit_once('/').map_or("", |(g, _)| g);
        if group != def.group {
            return Err(ApiStatus::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({})",
                def.api_version()
            )));
        }
    }
    if let Some(k) = obj
        .get("kind")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        if k != def.kind {
            return Err(ApiStatus::bad_request(format!(
                "{k} in version \"{}\" cannot be handled as a {}{}",
                def.version,
                def.kind,
                decode_cause(def, k)
            )));
        }
    }
    Ok(())
}

/// Why kube's decoder refused a body of kind `k` for a built-in `def`
/// (`transformDecodeError` appends it): a kind its scheme does not know, or
/// one it cannot convert. Custom resources get no cause.
fn decode_cause(def: &ResourceDef, k: &str) -> String {
    use crate::apiserver::openapi::builtin_kinds;
    let builtin = |kind: &str| {
        builtin_kinds()
            .iter()
            .any(|b| b.group == def.group && b.version == def.version && b.kind == kind)
    };
    if !builtin(&def.kind) {
        return String::new();
    }
    if builtin(k) {
        // Internal packages are named after the group's first label.
        let package = match def.group.as_str() {
            "" => "core",
            g => g.split('.').next().unwrap_or(g),
        };
        return format!(
            ": converting ({}.{k}) to ({package}.{}): unknown conversion",
            def.version, def.kind
        );
    }
    format!(
        ": no kind \"{k}\" is registered for version \"{}\" in scheme \"pkg/api/legacyscheme/scheme.go:30\"",
        def.api_version()
    )
}

fn check_namespace(ctx: &Ctx, obj: &mut Value) -> Result<(), ApiStatus> {
    if !ctx.def.namespaced {
        meta_mut(obj).remove("namespace");
        return Ok(());
    }
    let url_ns = ctx
        .namespace
        .clone()
        .ok_or_else(|| ApiStatus::method_not_allowed("POST"))?;
    match meta_str(obj, "namespace") {
        Some(ns) if ns != url_ns => return Err(ApiStatus::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => {
            meta_mut(obj).insert("namespace".into(), json!(url_ns));
        }
    }
    Ok(())
}

/// kube's storage refuses to create an object that carries a (numeric,
/// non-zero) resourceVersion, as `kubectl get -o yaml` output does; it is
/// the last check of a POST (after admission), and a dry run never reaches it.
fn refuse_resource_version(obj: &Value) -> Result<(), ApiStatus> {
    let rv = meta_str(obj, "resourceVersion").and_then(|v| v.parse::<u64>().ok());
    if rv.is_some_and(|v| v != 0) {
        return Err(ApiStatus::unknown(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    Ok(())
}

pub(super) fn create(ctx: &Ctx, obj: Value) -> Result<Response, ApiStatus> {
    create_posted(ctx, obj, false)
}

/// Create; `posted` for a POST, whose body may not carry a resourceVersion.
pub(super) fn create_posted(ctx: &Ctx, mut obj: Value, posted: bool) -> Result<Response, ApiStatus> {
    // Decided now (the resourceVersion is cleared below), answered last.
    let mut refused = if posted { refuse_resource_version(&obj).err() } else { None };
    check_type(&ctx.def, &obj)?;
    check_namespace(ctx, &mut obj)?;
    objects::set_type(&ctx.def, &mut obj);
    let generate = meta_str(&obj, "generateName").map(String::from);
    let name = meta_str(&obj, "name").map(String::from);
    if name.is_none() && generate.is_none() {
        return Err(ApiStatus::invalid(
            &ctx.def.kind,
            &ctx.def.group,
            "",
            vec![status::Cause {
                reason: "FieldValueRequired".into(),
                message: "Required value: name or generateName is required".into(),
                field: "metadata.name".into(),
            }],
        ));
    }
    if let Some(n) = &name {
        objects::validate_name(&ctx.def, n)?;
    }
    if let Some(ns) = ctx.namespace.as_deref() {
        let nsrec = ctx
            .state
            .store
            .get(&keys::namespace_key(ns))
            .map_err(store_err)?;
        let nsobj: Value = nsrec
            .map(|r| serde_json::from_slice(&r.value).unwrap_or(Value::Null))
            .ok_or_else(|| {
                ApiStatus::not_found(Target {
                    group: "",
                    resource: "namespaces",
                    name: ns,
                })
            })?;
        if nsobj.pointer("/metadata/deletionTimestamp").is_some() {
            let n = name.clone().unwrap_or_default();
            return Err(ApiStatus::forbidden(
                ctx.target(&n),
                &format!(
                    "unable to create new content in namespace {ns} because it is being terminated"
                ),
            ));
        }
    }
    {
        let m = meta_mut(&mut obj);
        m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        m.insert("creationTimestamp".into(), json!(objects::now_rfc3339()));
        for k in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "selfLink",
        ] {
            m.remove(k);
        }
    }
    if objects::tracks_generation(&ctx.def) {
        meta_mut(&mut obj).insert("generation".into(), json!(1));
    }
    match ctx.def.group_resource().as_str() {
        "namespaces" => {
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
            let n = name.clone().unwrap_or_default();
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(n);
        }
        "pods" => obj["status"] = json!({"phase": "Pending"}),
        "nodes" => {}
        _ if objects::has_status_subresource(&ctx.def) => {
            if let Some(o) = obj.as_object_mut() {
                o.remove("status");
            }
        }
        _ => {}
    }
    let warnings = ctx.admit(
        crate::apiserver::admission::Operation::Create,
        name.as_deref().unwrap_or(""),
        None,
        &mut obj,
    )?;
    for _attempt in 0..8 {
        let n = match (&name, &generate) {
            (Some(n), _) => n.clone(),
            (None, Some(g)) => format!("{g}{}", objects::random_suffix()),
            _ => unreachable!("checked above"),
        };
        meta_mut(&mut obj).insert("name".into(), json!(n));
        let key = keys::object_key(&ctx.def, ctx.namespace.as_deref(), &n);
        if ctx.dry_run() {
            if ctx.state.store.get(&key).map_err(store_err)?.is_some() {
                return Err(ApiStatus::already_exists(ctx.target(&n)));
            }
            return Ok(ctx.respond_warned(StatusCode::CREATED, &obj, &warnings));
        }
        if let Some(e) = refused.take() {
            return Err(e);
        }
        match ctx.state.store.create(&key, &objects::to_stored_for(&ctx.def, &obj)) {
            Ok(rec) => {
                return Ok(ctx.respond_warned(
                    StatusCode::CREATED,
                    &objects::from_record(&ctx.def, &rec)?,
                    &warnings,
                ))
            }
            Err(StoreError::AlreadyExists { .. }) if name.is_none() => continue,
            Err(StoreError::AlreadyExists { .. }) => {
                return Err(ApiStatus::already_exists(ctx.target(&n)))
            }
            Err(e) => return Err(store_err(e)),
        }
    }
    let g = generate.unwrap_or_default();
    Err(ApiStatus::generate_name_conflict(ctx.target(&g)))
}

/// A CSR's `approval` update: only `status.conditions` change, and only
/// for a user allowed to `approve` the request's signer (kube's
/// CertificateApproval admission: `signers` in certificates.k8s.io, named
/// by the signer or `<domain>/*`).
fn approval_update(ctx: &Ctx, cur: &Value, new: &Value) -> Result<Value, ApiStatus> {
    let name = ctx.name.clone().unwrap_or_default();
    let signer = cur
        .pointer("/spec/signerName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let wildcard = signer
        .split_once('/')
        .map(|(domain, _)| format!("{domain}/*"))
        .unwrap_or_default();
    let allowed = [signer, wildcard.as_str()].iter().any(|resource_name| {
        ctx.state.authorizer.authorize(
            &ctx.user,
            &crate::apiserver::auth::Attributes {
                resource_request: true,
                path: "",
                verb: "approve",
                group: "certificates.k8s.io",
                resource: "signers",
                subresource: None,
                namespace: None,
                name: Some(resource_name),
            },
        )
    });
    if !allowed {
        return Err(ApiStatus::forbidden(
            ctx.target(&name),
            &format!("user not permitted to approve requests with signerName \"{signer}\""),
        ));
    }
    let mut merged = cur.clone();
    let conditions = new
        .pointer("/status/conditions")
        .cloned()
        .unwrap_or(Value::Null);
    if !merged["status"].is_object() {
        merged["status"] = serde_json::json!({});
    }
    if conditions.is_null() {
        merged["status"].as_object_mut().map(|o| o.remove("conditions"));
    } else {
        merged["status"]["conditions"] = conditions;
    }
    Ok(merged)
}

/// Carries system fields over from `cur` and applies the status split.
fn prepare_update(ctx: &Ctx, cur: &Value, mut new: Value) -> Result<Value, ApiStatus> {
    let name = ctx.name.clone().unwrap_or_default();
    if meta_str(&new, "name").is_some_and(|n| n != name) {
        return Err(ApiStatus::bad_request(
            "the name of the object does not match the name on the URL",
        ));
    }
    check_type(&ctx.def, &new)?;
    objects::set_type(&ctx.def, &mut new);
    if ctx.sub.as_deref() == Some("approval") {
        return approval_update(ctx, cur, &new);
    }
    if ctx.sub.as_deref() == Some(ephemeral_containers::SUBRESOURCE) {
        return Ok(ephemeral_containers::split(cur, &new));
    }
    if ctx.sub.as_deref() == Some("status") {
        let mut merged = cur.clone();
        merged["status"] = new.get("status").cloned().unwrap_or(Value::Null);
        if merged["status"].is_null() {
            merged.as_object_mut().map(|o| o.remove("status"));
        }
        return Ok(merged);
    }
    for k in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match cur.pointer(&format!("/metadata/{k}")) {
            Some(v) => {
                meta_mut(&mut new).insert(k.into(), v.clone());
            }
            None => {
                meta_mut(&mut new).remove(k);
            }
        }
    }
    if objects::has_status_subresource(&ctx.def) {
        match cur.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                new.as_object_mut().map(|o| o.remove("status"));
            }
        }
    }
    if cur.pointer("/metadata/deletionTimestamp").is_some() {
        let old = objects::finalizers(cur);
        if objects::finalizers(&new).iter().any(|f| !old.contains(f)) {
            return Err(ApiStatus::invalid(
                &ctx.def.kind,
                &ctx.def.group,
                &name,
                vec![status::Cause {
                    reason: "FieldValueForbidden".into(),
                    message:
                        "Forbidden: no new finalizers can be added if the object is being deleted"
                            .into(),
                    field: "metadata.finalizers".into(),
                }],
            ));
        }
    }
    if objects::tracks_generation(&ctx.def) && objects::spec_part(cur) != objects::spec_part(&new) {
        let g = cur
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            + 1;
        meta_mut(&mut new).insert("generation".into(), json!(g));
    }
    Ok(new)
}

/// The read-modify-CAS loop shared by PUT and PATCH.
pub(super) fn write_loop(
    ctx: &Ctx,
    build: &dyn Fn(&Value) -> Result<Value, ApiStatus>,
) -> Result<Response, ApiStatus> {
    let name = ctx.name.clone().unwrap_or_default();
    let key = ctx.key();
    for _ in 0..10 {
        let (rec, cur) = ctx.read_current(&key, &name)?;
        let desired = build(&cur)?;
        let precondition = meta_str(&desired, "resourceVersion").map(String::from);
        if precondition
            .as_deref()
            .is_some_and(|rv| rv != rec.mod_revision.to_string())
        {
            return Err(ApiStatus::modified(ctx.target(&name)));
        }
        let mut new = prepare_update(ctx, &cur, desired)?;
        let warnings = ctx.admit(
            crate::apiserver::admission::Operation::Update,
            &name,
            Some(&cur),
            &mut new,
        )?;
        // A write that changes nothing is not stored (same resourceVersion),
        // as kube's storage skips byte-identical updates.
        if without_resource_version(&new) == without_resource_version(&cur) {
            return Ok(ctx.respond_warned(StatusCode::OK, &cur, &warnings));
        }
        if ctx.dry_run() {
            // As kube: a dry-run update answers with the current version.
            objects::set_resource_version(&mut new, rec.mod_revision);
            return Ok(ctx.respond_warned(StatusCode::OK, &new, &warnings));
        }
        let finished = new.pointer("/metadata/deletionTimestamp").is_some()
            && objects::finalizers(&new).is_empty()
            && new
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                == 0;
        let res = if finished {
            ctx.state
                .store
                .delete(&key, Some(rec.mod_revision))
                .map(|r| {
                    let mut v = new.clone();
                    objects::set_resource_version(&mut v, r.mod_revision);
                    v
                })
        } else {
            ctx.state
                .store
                .update(&key, &objects::to_stored_for(&ctx.def, &new), rec.mod_revision)
                .and_then(|r| {
                    objects::from_record(&ctx.def, &r).map_err(|e| StoreError::Backend(e.message))
                })
        };
        match res {
            Ok(v) => return Ok(ctx.respond_warned(StatusCode::OK, &v, &warnings)),
            Err(StoreError::Conflict { .. }) if precondition.is_some() => {
                return Err(ApiStatus::modified(ctx.target(&name)))
            }
            Err(StoreError::Conflict { .. }) | Err(StoreError::NotFound { .. }) => continue,
            Err(e) => return Err(store_err(e)),
        }
    }
    Err(ApiStatus::modified(ctx.target(&name)))
}

fn without_resource_version(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.shift_remove("resourceVersion");
    }
    v
}

pub(super) fn update(ctx: &Ctx, obj: Value) -> Result<Response, ApiStatus> {
    let exists = ctx
        .state
        .store
        .get(&ctx.key())
        .map_err(store_err)?
        .is_some();
    if !exists && objects::allows_create_on_update(&ctx.def) && ctx.sub.is_none() {
        return create(ctx, obj);
    }
    write_loop(ctx, &|_cur| Ok(obj.clone()))
}
