//! The pod eviction subresource: POST `policy/v1` Eviction deletes the pod
//! (with the Eviction's `deleteOptions`) unless that would violate its
//! PodDisruptionBudget, in which case the answer is kube's 429
//! `Cannot evict pod as it would violate the pod's disruption budget.` with
//! a `DisruptionBudget` cause.
//!
//! Budgets: a pod that is Pending, Succeeded, Failed or already being
//! deleted is evicted without a check (kube's `canIgnorePDB`). More than one
//! matching budget is a 500, as in kube. A budget whose status the
//! disruption controller has observed (`observedGeneration` ≥ `generation`)
//! is used as is and its `disruptionsAllowed` decremented (with the pod in
//! `disruptedPods`); otherwise the numbers are computed here from the
//! matching pods (healthy = Ready and not being deleted, expected = every
//! matching pod that is not finished), `minAvailable`/`maxUnavailable` as an
//! integer or a percentage. An unhealthy pod may be evicted while the budget
//! is met (`IfHealthyBudget`). `dryRun` (query or `deleteOptions`) stores
//! nothing.
//!
//! Partial: the expected count comes from the pods, not from the owning
//! controllers' scale; `unhealthyPodEvictionPolicy: AlwaysAllow` is not read.

use axum::response::Response;
use http::{Method, StatusCode};
use serde_json::{json, Map, Value};

use crate::apiserver::codec;
use crate::apiserver::keys;
use crate::apiserver::objects::{self, meta_str};
use crate::apiserver::context::{store_err, Ctx};
use crate::apiserver::status::ApiStatus;
use crate::store::ListOptions;

pub(crate) fn handle(ctx: &Ctx, method: &Method, body: &[u8]) -> Result<Response, ApiStatus> {
    if *method != Method::POST {
        return Err(ApiStatus::method_not_allowed(method.as_str()));
    }
    let eviction = codec::decode_object(&ctx.headers, body)?;
    let name = ctx.name.clone().unwrap_or_default();
    if meta_str(&eviction, "name").is_some_and(|n| n != name) {
        return Err(ApiStatus::bad_request(
            "name in URL does not match name in Eviction object",
        ));
    }
    let (_, pod) = ctx.read_current(&ctx.key(), &name)?;
    let opts = eviction
        .get("deleteOptions")
        .filter(|o| o.is_object())
        .cloned()
        .unwrap_or_else(|| json!({}));
    let dry_run = ctx.dry_run()
        || opts
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|v| v == "All"));
    if !can_ignore_budget(&pod) {
        check_budget(ctx, &pod, dry_run)?;
    }
    let mut query = ctx.query.clone();
    if dry_run {
        query.insert("dryRun".into(), "All".into());
    }
    let pod_ctx = Ctx {
        state: ctx.state.clone(),
        def: ctx.def.clone(),
        namespace: ctx.namespace.clone(),
        name: ctx.name.clone(),
        sub: None,
        query,
        headers: ctx.headers.clone(),
        user: ctx.user.clone(),
    };
    let body = serde_json::to_vec(&opts).unwrap_or_default();
    crate::apiserver::delete::delete(&pod_ctx, &body)?;
    Ok(ctx.respond(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

/// kube's `canIgnorePDB`.
fn can_ignore_budget(pod: &Value) -> bool {
    pod.pointer("/metadata/deletionTimestamp").is_some()
        || matches!(
            pod.pointer("/status/phase").and_then(Value::as_str),
            Some("Pending" | "Succeeded" | "Failed") | None
        )
}

fn is_healthy(pod: &Value) -> bool {
    pod.pointer("/metadata/deletionTimestamp").is_none()
        && pod
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
}

fn is_finished(pod: &Value) -> bool {
    matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    )
}

fn selector_matches(pdb: &Value, pod: &Value) -> bool {
    // policy/v1: a null selector matches nothing, an empty one everything.
    let Some(sel) = pdb.pointer("/spec/selector").filter(|s| s.is_object()) else {
        return false;
    };
    let labels = pod.pointer("/metadata/labels").and_then(Value::as_object);
    crate::k8s::selector::json_matches(sel, labels)
}

fn list(ctx: &Ctx, group: &str, plural: &str) -> Result<Vec<Value>, ApiStatus> {
    let Some(def) = ctx.state.registry.lookup(group, "v1", plural) else {
        return Ok(Vec::new());
    };
    let page = ctx
        .state
        .store
        .list(&ListOptions {
            prefix: keys::collection_prefix(&def, ctx.namespace.as_deref()),
            start_after: None,
            limit: None,
            revision: None,
        })
        .map_err(store_err)?;
    page.records
        .iter()
        .map(|r| objects::from_record(&def, r))
        .collect()
}

/// An `IntOrString` budget figure against `expected` pods (percentages
/// round up, as kube's `GetScaledValueFromIntOrPercent(…, true)`).
fn scaled(v: &Value, expected: i64) -> Option<i64> {
    if let Some(n) = v.as_i64() {
        return Some(n);
    }
    let pct: i64 = v.as_str()?.strip_suffix('%')?.parse().ok()?;
    Some((expected * pct + 99) / 100)
}

/// `(disruptionsAllowed, desiredHealthy, currentHealthy)` computed from pods.
fn compute(ctx: &Ctx, pdb: &Value) -> Result<(i64, i64, i64), ApiStatus> {
    let pods: Vec<Value> = list(ctx, "", "pods")?
        .into_iter()
        .filter(|p| selector_matches(pdb, p) && !is_finished(p))
        .collect();
    let expected = pods.len() as i64;
    let healthy = pods.iter().filter(|p| is_healthy(p)).count() as i64;
    let desired = if let Some(min) = pdb.pointer("/spec/minAvailable") {
        scaled(min, expected).unwrap_or(0)
    } else if let Some(max) = pdb.pointer("/spec/maxUnavailable") {
        (expected - scaled(max, expected).unwrap_or(0)).max(0)
    } else {
        0
    };
    Ok(((healthy - desired).max(0), desired, healthy))
}

fn too_many_requests(message: String) -> ApiStatus {
    let mut details = Map::new();
    details.insert(
        "causes".into(),
        json!([{"reason": "DisruptionBudget", "message": message}]),
    );
    ApiStatus {
        code: 429,
        reason: "TooManyRequests",
        message: "Cannot evict pod as it would violate the pod's disruption budget.".into(),
        details: Some(Box::new(details)),
        retry_after: None,
    }
}

fn check_budget(ctx: &Ctx, pod: &Value, dry_run: bool) -> Result<(), ApiStatus> {
    let budgets: Vec<Value> = list(ctx, "policy", "poddisruptionbudgets")?
        .into_iter()
        .filter(|b| selector_matches(b, pod))
        .collect();
    let pdb = match budgets.as_slice() {
        [] => return Ok(()),
        [one] => one,
        _ => {
            return Err(ApiStatus::internal(
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            ))
        }
    };
    let pdb_name = meta_str(pdb, "name").unwrap_or_default().to_string();
    let generation = pdb
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let observed = pdb
        .pointer("/status/observedGeneration")
        .and_then(Value::as_i64);
    let fresh = observed.is_some_and(|o| o >= generation)
        && pdb.pointer("/status/disruptionsAllowed").is_some();
    let (allowed, desired, current) = if fresh {
        let n = |p: &str| pdb.pointer(p).and_then(Value::as_i64).unwrap_or(0);
        (
            n("/status/disruptionsAllowed"),
            n("/status/desiredHealthy"),
            n("/status/currentHealthy"),
        )
    } else {
        compute(ctx, pdb)?
    };
    if !is_healthy(pod) && current >= desired {
        return Ok(());
    }
    if allowed <= 0 {
        return Err(too_many_requests(format!(
            "The disruption budget {pdb_name} needs {desired} healthy pods and has {current} currently"
        )));
    }
    if fresh && !dry_run {
        record_disruption(ctx, pdb, meta_str(pod, "name").unwrap_or_default())?;
    }
    Ok(())
}

/// Decrements the observed budget, as kube's `checkAndDecrement`.
fn record_disruption(ctx: &Ctx, pdb: &Value, pod: &str) -> Result<(), ApiStatus> {
    let Some(def) = ctx
        .state
        .registry
        .lookup("policy", "v1", "poddisruptionbudgets")
    else {
        return Ok(());
    };
    let name = meta_str(pdb, "name").unwrap_or_default();
    let rv: i64 = meta_str(pdb, "resourceVersion")
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    let mut new = pdb.clone();
    let allowed = pdb
        .pointer("/status/disruptionsAllowed")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    new["status"]["disruptionsAllowed"] = json!(allowed - 1);
    new["status"]["disruptedPods"][pod] = json!(objects::now_rfc3339());
    objects::meta_mut(&mut new).shift_remove("resourceVersion");
    let key = keys::object_key(&def, ctx.namespace.as_deref(), name);
    match ctx.state.store.update(&key, &objects::to_stored(&new), rv) {
        Ok(_) => Ok(()),
        Err(crate::store::StoreError::Conflict { .. }) => Err(ApiStatus::modified(
            crate::apiserver::status::Target::of(&def, name),
        )),
        Err(e) => Err(store_err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_scale_percentages_up() {
        assert_eq!(scaled(&json!(2), 5), Some(2));
        assert_eq!(scaled(&json!("50%"), 3), Some(2));
        assert_eq!(scaled(&json!("x"), 3), None);
    }

    #[test]
    fn ignorable_and_healthy_pods() {
        let running = json!({"metadata": {"labels": {"app": "a"}}, "status": {"phase": "Running",
                             "conditions": [{"type": "Ready", "status": "True"}]}});
        assert!(!can_ignore_budget(&running));
        assert!(is_healthy(&running));
        assert!(can_ignore_budget(&json!({"status": {"phase": "Pending"}})));
        let pdb = json!({"spec": {"selector": {"matchLabels": {"app": "a"}}}});
        assert!(selector_matches(&pdb, &running));
        assert!(!selector_matches(&json!({"spec": {}}), &running));
        assert!(selector_matches(
            &json!({"spec": {"selector": {}}}),
            &running
        ));
    }

    #[test]
    fn refusal_wording() {
        let v = too_many_requests(
            "The disruption budget web needs 1 healthy pods and has 1 currently".into(),
        )
        .to_value();
        assert_eq!(v["code"], 429);
        assert_eq!(v["reason"], "TooManyRequests");
        assert_eq!(
            v["message"],
            "Cannot evict pod as it would violate the pod's disruption budget."
        );
        assert_eq!(v["details"]["causes"][0]["reason"], "DisruptionBudget");
    }
}
