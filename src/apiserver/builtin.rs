//! PLACEHOLDER (the `apimeta` helper's version replaces this file at merge):
//! a few built-in kinds, enough for the API-server core's tests.

use super::registry::{Registry, ResourceDef};

fn def(
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    namespaced: bool,
    short: &[&str],
    subs: &[&str],
) -> ResourceDef {
    ResourceDef {
        group: group.into(),
        version: version.into(),
        kind: kind.into(),
        plural: plural.into(),
        singular: kind.to_ascii_lowercase(),
        short_names: short.iter().map(|s| s.to_string()).collect(),
        categories: vec![],
        namespaced,
        subresources: subs.iter().map(|s| s.to_string()).collect(),
        verbs: [
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        columns: vec![],
    }
}

/// The served built-in kinds.
pub fn builtin_registry() -> Registry {
    let r = Registry::empty();
    r.insert(def(
        "",
        "v1",
        "Namespace",
        "namespaces",
        false,
        &["ns"],
        &["status", "finalize"],
    ));
    r.insert(def("", "v1", "ConfigMap", "configmaps", true, &["cm"], &[]));
    r.insert(def("", "v1", "Secret", "secrets", true, &[], &[]));
    r.insert(def("", "v1", "Pod", "pods", true, &["po"], &["status"]));
    r.insert(def("", "v1", "Node", "nodes", false, &["no"], &["status"]));
    r.insert(def("", "v1", "Event", "events", true, &["ev"], &[]));
    r.insert(def(
        "",
        "v1",
        "Service",
        "services",
        true,
        &["svc"],
        &["status"],
    ));
    r.insert(def(
        "apps",
        "v1",
        "Deployment",
        "deployments",
        true,
        &["deploy"],
        &["status", "scale"],
    ));
    r.insert(def(
        "coordination.k8s.io",
        "v1",
        "Lease",
        "leases",
        true,
        &[],
        &[],
    ));
    r.insert(def(
        "events.k8s.io",
        "v1",
        "Event",
        "events",
        true,
        &["ev"],
        &[],
    ));
    r.insert(def(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        false,
        &["crd", "crds"],
        &["status"],
    ));
    r
}
