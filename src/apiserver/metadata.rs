//! Metadata-only renderings (`Accept: application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1`
//! and `as=PartialObjectMetadataList`), as kube-apiserver's response
//! transform makes them (apiserver `handlers/response.go`): an object
//! becomes `{kind: PartialObjectMetadata, apiVersion: meta.k8s.io/<v>,
//! metadata}`, a list becomes a `PartialObjectMetadataList` whose items carry
//! their own kind and apiVersion. client-go's metadata informers and
//! kube-rs's `metadata_watcher` use them to follow every kind cheaply.
//!
//! Asking for the single form on a list (or the list form on one object, or
//! on a watch, whose events are single objects) is a 406 NotAcceptable
//! worded as kube words it, naming the Go type kube would have had: the
//! internal type of a built-in kind (`*core.PodList`), `unstructured` for
//! custom resources.

use serde_json::{json, Value};

use super::registry::ResourceDef;
use super::status::ApiStatus;

/// `meta.k8s.io/<version>` `PartialObjectMetadata` of one object.
pub fn partial(obj: &Value, version: &str) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": format!("meta.k8s.io/{version}"),
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// A `PartialObjectMetadataList` with the list's metadata (resourceVersion,
/// continue, remainingItemCount).
pub fn partial_list(items: &[Value], list_meta: Value, version: &str) -> Value {
    json!({
        "kind": "PartialObjectMetadataList",
        "apiVersion": format!("meta.k8s.io/{version}"),
        "metadata": list_meta,
        "items": items.iter().map(|o| partial(o, version)).collect::<Vec<_>>(),
    })
}

/// The Go type kube names in its 406 (`%T` of the storage's object).
fn go_type(def: &ResourceDef, custom: bool, list: bool) -> String {
    let suffix = if list { "List" } else { "" };
    if custom {
        return format!("*unstructured.Unstructured{suffix}");
    }
    // Internal packages are named after the group's first label; the core
    // group's (and events.k8s.io's Event, stored as core's) is `core`.
    let package = match def.group.as_str() {
        "" | "events.k8s.io" => "core",
        g => g.split('.').next().unwrap_or(g),
    };
    format!("*{package}.{}{suffix}", def.kind)
}

/// `as=PartialObjectMetadata` on a list (or watch-less collection read).
pub fn single_on_list(def: &ResourceDef, custom: bool) -> ApiStatus {
    ApiStatus::not_acceptable_message(format!(
        "you requested PartialObjectMetadata, but the requested object is a list ({})",
        go_type(def, custom, true)
    ))
}

/// `as=PartialObjectMetadataList` on one object (a get or a watch event).
pub fn list_on_single(def: &ResourceDef, custom: bool) -> ApiStatus {
    ApiStatus::not_acceptable_message(format!(
        "you requested PartialObjectMetadataList, but the requested object is not a list ({})",
        go_type(def, custom, false)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_keeps_only_metadata() {
        let pod = json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "a", "uid": "u", "ownerReferences": [{"uid": "o"}]}, "spec": {"containers": []}});
        assert_eq!(
            partial(&pod, "v1"),
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": {"name": "a", "uid": "u", "ownerReferences": [{"uid": "o"}]}})
        );
        let list = partial_list(&[pod], json!({"resourceVersion": "7"}), "v1beta1");
        assert_eq!(list["kind"], "PartialObjectMetadataList");
        assert_eq!(list["metadata"]["resourceVersion"], "7");
        assert_eq!(list["items"][0]["apiVersion"], "meta.k8s.io/v1beta1");
        assert!(list["items"][0].get("spec").is_none());
    }

    #[test]
    fn mismatches_name_the_go_type_kube_would() {
        let reg = crate::apiserver::builtin::builtin_registry();
        let pods = reg.lookup("", "v1", "pods").unwrap();
        let e = single_on_list(&pods, false);
        assert_eq!(e.code, 406);
        assert_eq!(
            e.message,
            "you requested PartialObjectMetadata, but the requested object is a list (*core.PodList)"
        );
        let deploys = reg.lookup("apps", "v1", "deployments").unwrap();
        assert_eq!(
            list_on_single(&deploys, false).message,
            "you requested PartialObjectMetadataList, but the requested object is not a list (*apps.Deployment)"
        );
        assert!(list_on_single(&deploys, true)
            .message
            .ends_with("(*unstructured.Unstructured)"));
    }
}
