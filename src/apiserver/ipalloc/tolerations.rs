//! kube's DefaultTolerationSeconds admission plug-in: every new pod tolerates
//! the `node.kubernetes.io/not-ready` and `node.kubernetes.io/unreachable`
//! NoExecute taints for `default_toleration_seconds` (300 s), unless it
//! already tolerates them, so the node lifecycle controller evicts it only
//! after that time.

use serde_json::{json, Value};

use crate::apiserver::admission::{Admission, AdmissionRequest, Operation};
use crate::apiserver::status::ApiStatus;

pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

pub struct DefaultTolerationSeconds {
    pub seconds: i64,
}

/// Whether `tolerations` already tolerate `key`'s NoExecute taint.
fn tolerates(tolerations: &[Value], key: &str) -> bool {
    tolerations.iter().any(|t| {
        let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
        let tkey = t.get("key").and_then(Value::as_str).unwrap_or("");
        let op = t.get("operator").and_then(Value::as_str).unwrap_or("Equal");
        (effect.is_empty() || effect == "NoExecute")
            && (tkey == key || (tkey.is_empty() && op == "Exists"))
    })
}

/// Adds the two default tolerations `pod` lacks.
pub fn add_default_tolerations(pod: &mut Value, seconds: i64) {
    if !pod["spec"].is_object() {
        return;
    }
    let list = pod["spec"]
        .as_object_mut()
        .expect("spec is an object")
        .entry("tolerations")
        .or_insert_with(|| json!([]));
    if !list.is_array() {
        *list = json!([]);
    }
    let arr = list.as_array_mut().expect("tolerations is an array");
    for key in [NOT_READY, UNREACHABLE] {
        if !tolerates(arr, key) {
            arr.push(
                json!({"key": key, "operator": "Exists", "effect": "NoExecute",
                            "tolerationSeconds": seconds}),
            );
        }
    }
}

impl Admission for DefaultTolerationSeconds {
    fn name(&self) -> &'static str {
        "default-toleration-seconds"
    }

    fn admit(
        &self,
        req: &AdmissionRequest<'_>,
        obj: &mut Value,
        _warnings: &mut Vec<String>,
    ) -> Result<(), ApiStatus> {
        if req.def.group_resource() == "pods"
            && req.subresource.is_none()
            && req.operation == Operation::Create
        {
            add_default_tolerations(obj, self.seconds);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_only_what_is_missing() {
        let mut pod = json!({"spec": {"containers": []}});
        add_default_tolerations(&mut pod, 300);
        let t = pod["spec"]["tolerations"].as_array().unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0]["key"], NOT_READY);
        assert_eq!(t[1]["tolerationSeconds"], 300);
        let mut own = json!({"spec": {"tolerations": [
            {"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}]}});
        add_default_tolerations(&mut own, 300);
        let t = own["spec"]["tolerations"].as_array().unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0]["tolerationSeconds"], 5);
        let mut all = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        add_default_tolerations(&mut all, 300);
        assert_eq!(all["spec"]["tolerations"].as_array().unwrap().len(), 1);
    }
}
