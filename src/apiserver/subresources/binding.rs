//! Serves the pod binding subresource (POST `pods/NAME/binding`), which the
//! scheduler uses to assign a pod to a node.
//!
//! As kube-apiserver's `BindingREST`: the body is a `v1` Binding whose
//! `target` is a Node; `spec.nodeName` is set once (409 Conflict when the pod
//! is already assigned or being deleted), the `PodScheduled=True` condition is
//! added, and the answer is a `Status` Success with code 201. The write is a
//! read-modify-CAS loop on the store, like `rest::write_loop`, so two
//! schedulers racing for one pod cannot both win.

use axum::response::Response;
use http::{Method, StatusCode};
use serde_json::{json, Map, Value};

use crate::apiserver::codec;
use crate::apiserver::objects::{self, meta_str};
use crate::apiserver::context::{store_err, Ctx};
use crate::apiserver::status::{self, ApiStatus, Cause};
use crate::store::StoreError;

pub(crate) fn handle(ctx: &Ctx, method: &Method, body: &[u8]) -> Result<Response, ApiStatus> {
    if method != Method::POST {
        return Err(ApiStatus::method_not_allowed(method.as_str()));
    }
    let name = ctx.name.clone().unwrap_or_default();
    let binding = codec::parse_document(body, false)?;
    let node = check_binding(&name, &binding)?;
    let key = ctx.key();
    let mut done = false;
    for _ in 0..10 {
        let (rec, cur) = ctx.read_current(&key, &name)?;
        let bound = bind_pod(ctx, &name, &cur, &node)?;
        if ctx.dry_run() {
            done = true;
            break;
        }
        match ctx
            .state
            .store
            .update(&key, &objects::to_stored(&bound), rec.mod_revision)
        {
            Ok(_) => {
                done = true;
                break;
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(store_err(e)),
        }
    }
    if !done {
        return Err(ApiStatus::modified(ctx.target(&name)));
    }
    let mut details = Map::new();
    details.insert("name".into(), json!(name));
    details.insert("kind".into(), json!("pods"));
    let mut s = status::success(details);
    s["code"] = json!(201);
    Ok(ctx.respond(StatusCode::CREATED, &s))
}

/// Checks the Binding body and returns the target node's name.
fn check_binding(pod: &str, binding: &Value) -> Result<String, ApiStatus> {
    let invalid = |field: &str, reason: &str, message: String| {
        ApiStatus::invalid(
            "Binding",
            "",
            pod,
            vec![Cause {
                reason: reason.into(),
                message,
                field: field.into(),
            }],
        )
    };
    if let Some(n) = meta_str(binding, "name").filter(|n| *n != pod) {
        return Err(ApiStatus::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({pod})"
        )));
    }
    let kind = binding
        .pointer("/target/kind")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !kind.is_empty() && kind != "Node" {
        return Err(invalid(
            "target.kind",
            "FieldValueNotSupported",
            format!("Unsupported value: \"{kind}\": supported values: \"Node\", \"\""),
        ));
    }
    binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(String::from)
        .ok_or_else(|| invalid("target.name", "FieldValueRequired", "Required value".into()))
}

/// The pod bound to `node`, or kube's 409 when it cannot be.
fn bind_pod(ctx: &Ctx, name: &str, cur: &Value, node: &str) -> Result<Value, ApiStatus> {
    if cur.pointer("/metadata/deletionTimestamp").is_some() {
        return Err(ApiStatus::conflict(
            ctx.target(name),
            &format!("pod {name} is being deleted, cannot be assigned to a host"),
        ));
    }
    if let Some(have) = cur
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    {
        return Err(ApiStatus::conflict(
            ctx.target(name),
            &format!("pod {name} is already assigned to node \"{have}\""),
        ));
    }
    let mut pod = cur.clone();
    pod["spec"]["nodeName"] = json!(node);
    set_scheduled_condition(&mut pod);
    Ok(pod)
}

/// Sets `PodScheduled=True`, replacing an earlier `False`.
pub(crate) fn set_scheduled_condition(pod: &mut Value) {
    if !pod["status"].is_object() {
        pod["status"] = json!({});
    }
    let now = objects::now_rfc3339();
    let cond = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null,
                      "lastTransitionTime": now});
    let conds = pod["status"]
        .as_object_mut()
        .expect("status is an object")
        .entry("conditions")
        .or_insert_with(|| json!([]));
    if !conds.is_array() {
        *conds = json!([]);
    }
    let list = conds.as_array_mut().expect("conditions is an array");
    list.retain(|c| c["type"] != "PodScheduled");
    list.push(cond);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_needs_a_node_target() {
        let ok = json!({"metadata": {"name": "p"}, "target": {"kind": "Node", "name": "n1"}});
        assert_eq!(check_binding("p", &ok).unwrap(), "n1");
        let no_name = json!({"target": {"kind": "Node"}});
        let e = check_binding("p", &no_name).unwrap_err();
        assert_eq!(e.code, 422);
        assert!(
            e.message.contains("target.name: Required value"),
            "{}",
            e.message
        );
        let wrong = json!({"target": {"kind": "Pod", "name": "x"}});
        assert_eq!(check_binding("p", &wrong).unwrap_err().code, 422);
        let other = json!({"metadata": {"name": "q"}, "target": {"name": "n1"}});
        assert_eq!(check_binding("p", &other).unwrap_err().code, 400);
    }

    #[test]
    fn scheduled_condition_replaces_a_false_one() {
        let mut pod = json!({"status": {"conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"},
            {"type": "Ready", "status": "False"}]}});
        set_scheduled_condition(&mut pod);
        let conds = pod["status"]["conditions"].as_array().unwrap();
        assert_eq!(conds.len(), 2);
        assert_eq!(conds[1]["type"], "PodScheduled");
        assert_eq!(conds[1]["status"], "True");
    }
}
