//! Storage keys: `/registry/<group-resource>/<namespace>/<name>`, or
//! `/registry/<group-resource>/<name>` for cluster-scoped kinds, like
//! kube-apiserver's etcd layout (`/registry/pods/default/x`,
//! `/registry/deployments.apps/default/web`).
//!
//! Exceptions, as in Kubernetes: `events.k8s.io` events share core events'
//! storage (`/registry/events/…`), so both API groups see the same objects.
//! They are stored as sent (PARTIAL: no field conversion between the two
//! shapes yet, only `apiVersion`/`kind` follow the URL). Leases live under
//! `/registry/leases.coordination.k8s.io/`.

use super::registry::ResourceDef;

/// The prefix every object of this resource lives under (ends with `/`).
pub fn resource_prefix(def: &ResourceDef) -> String {
    format!("/registry/{}/", storage_resource(def))
}

/// The group-resource used in keys; events.k8s.io shares core events.
pub fn storage_resource(def: &ResourceDef) -> String {
    if def.group == "events.k8s.io" && def.plural == "events" {
        return "events".to_string();
    }
    def.group_resource()
}

/// The prefix of one collection: a namespace, or every namespace when `None`.
pub fn collection_prefix(def: &ResourceDef, namespace: Option<&str>) -> String {
    match (def.namespaced, namespace) {
        (true, Some(ns)) => format!("{}{}/", resource_prefix(def), ns),
        _ => resource_prefix(def),
    }
}

/// The key of one object.
pub fn object_key(def: &ResourceDef, namespace: Option<&str>, name: &str) -> String {
    match (def.namespaced, namespace) {
        (true, Some(ns)) => format!("{}{}/{}", resource_prefix(def), ns, name),
        _ => format!("{}{}", resource_prefix(def), name),
    }
}

/// The prefix under which every namespaced resource of `namespace` lives, for
/// one resource; used when a namespace is emptied.
pub fn namespace_key(name: &str) -> String {
    format!("/registry/namespaces/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(group: &str, plural: &str, namespaced: bool) -> ResourceDef {
        ResourceDef::for_test(group, plural, namespaced)
    }

    #[test]
    fn keys_follow_kube_layout() {
        assert_eq!(
            object_key(&def("", "pods", true), Some("default"), "x"),
            "/registry/pods/default/x"
        );
        assert_eq!(
            object_key(&def("apps", "deployments", true), Some("default"), "web"),
            "/registry/deployments.apps/default/web"
        );
        assert_eq!(
            object_key(&def("", "nodes", false), None, "n1"),
            "/registry/nodes/n1"
        );
        assert_eq!(
            collection_prefix(&def("", "pods", true), None),
            "/registry/pods/"
        );
        assert_eq!(
            collection_prefix(&def("", "pods", true), Some("a")),
            "/registry/pods/a/"
        );
        assert_eq!(
            resource_prefix(&def("coordination.k8s.io", "leases", true)),
            "/registry/leases.coordination.k8s.io/"
        );
        assert_eq!(
            resource_prefix(&def("events.k8s.io", "events", true)),
            "/registry/events/"
        );
        assert_eq!(namespace_key("default"), "/registry/namespaces/default");
    }
}
