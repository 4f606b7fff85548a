//! `pods/ephemeralcontainers`: a view of the Pod (GET answers the whole
//! Pod, as kube does) through which only `spec.ephemeralContainers` may
//! change. PUT takes a Pod; PATCH (strategic merge as `kubectl debug`
//! sends it, JSON merge or JSON patch) is applied to the whole stored Pod
//! first. Either way `rest` builds the new object through its ordinary
//! write loop and [`split`] keeps everything of the stored Pod except the
//! ephemeral containers, which admission then checks
//! (`validation::ephemeral`: only additions, no changes or removals, the
//! fields kube allows, unique names, an existing target container).
//!
//! The kubelet starts what is added here in the running pod
//! (`agent::kubelet::worker::ephemeral`).

use http::Method;
use serde_json::Value;

use crate::apiserver::status::ApiStatus;

/// The subresource's name.
pub const SUBRESOURCE: &str = "ephemeralcontainers";

/// Whether `sub` on `group_resource` is this view.
pub fn is_view(group_resource: &str, sub: &str) -> bool {
    group_resource == "pods" && sub == SUBRESOURCE
}

/// GET, PUT and PATCH only (kube registers get, update and patch).
pub fn check_method(method: &Method) -> Result<(), ApiStatus> {
    match *method {
        Method::GET | Method::PUT | Method::PATCH => Ok(()),
        ref m => Err(ApiStatus::method_not_allowed(m.as_str())),
    }
}

/// The stored Pod `cur` with the ephemeral containers of `new` (kube's
/// `ephemeralContainersStrategy.PrepareForUpdate`: everything else of the
/// update is dropped).
pub fn split(cur: &Value, new: &Value) -> Value {
    let mut merged = cur.clone();
    let wanted = new.pointer("/spec/ephemeralContainers").cloned();
    if !merged["spec"].is_object() {
        merged["spec"] = Value::Object(Default::default());
    }
    let spec = merged["spec"].as_object_mut().expect("made an object above");
    match wanted {
        Some(v) if !v.is_null() => {
            spec.insert("ephemeralContainers".into(), v);
        }
        _ => {
            spec.remove("ephemeralContainers");
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn split_keeps_only_the_ephemeral_containers_of_the_update() {
        let cur = json!({"metadata": {"name": "p", "labels": {"a": "1"}},
            "spec": {"containers": [{"name": "c", "image": "x"}]}, "status": {"phase": "Running"}});
        let new = json!({"metadata": {"name": "p", "labels": {"a": "2"}},
            "spec": {"containers": [{"name": "c", "image": "y"}],
                     "ephemeralContainers": [{"name": "d", "image": "busybox"}]},
            "status": {"phase": "Failed"}});
        let got = split(&cur, &new);
        assert_eq!(got["metadata"]["labels"]["a"], "1");
        assert_eq!(got["spec"]["containers"][0]["image"], "x");
        assert_eq!(got["status"]["phase"], "Running");
        assert_eq!(got["spec"]["ephemeralContainers"][0]["name"], "d");
        let removed = split(&got, &cur);
        assert!(removed["spec"].get("ephemeralContainers").is_none());
    }

    #[test]
    fn only_get_update_and_patch() {
        assert!(check_method(&Method::GET).is_ok());
        assert!(check_method(&Method::PATCH).is_ok());
        assert!(check_method(&Method::PUT).is_ok());
        assert!(check_method(&Method::DELETE).is_err());
        assert!(check_method(&Method::POST).is_err());
        assert!(is_view("pods", "ephemeralcontainers"));
        assert!(!is_view("deployments.apps", "ephemeralcontainers"));
    }
}
