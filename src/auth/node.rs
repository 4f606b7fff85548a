//! The Node authorizer: what a kubelet (`system:node:<name>` in
//! `system:nodes`) may do, decided by what is bound to its node.
//!
//! A node may: create, get, list and watch Nodes; update/patch only its
//! own Node, and get/update/patch only its own `nodes/status`; create Leases in `kube-node-lease` and
//! get/update/patch/delete its own; get/list/watch pods, update/patch
//! `pods/status`, delete and evict pods bound to it; get/list/watch
//! services, endpoints and endpointslices; get the configmaps, secrets and
//! PVCs that pods bound to it reference, and the PVs those PVCs are bound
//! to; create TokenRequests for ServiceAccounts its pods run as; create
//! events, CSRs, TokenReviews and SubjectAccessReviews; read CSIDrivers and
//! RuntimeClasses and manage its own CSINode. Anything else gets no opinion
//! here and goes on to RBAC (where `system:node` is bound to nobody).
//!
//! References are found by reading the store on each such request (pods of
//! one namespace), not from a maintained graph as kube does: these requests
//! come when a pod starts, not per second, so a namespace list costs less
//! than keeping a graph up to date. A create carries no name here, so
//! `node_restriction` (admission) checks the names of created Nodes and
//! Leases. Lists and watches of configmaps and secrets are allowed only for
//! one object (`fieldSelector=metadata.name=X`). PARTIAL: mirror pods cannot
//! be created.

use std::sync::Arc;

use serde_json::Value;

use crate::apiserver::auth::{Attributes, UserInfo};
use crate::store::{ListOptions, Store};

pub const NODES_GROUP: &str = "system:nodes";
pub const NODE_USER_PREFIX: &str = "system:node:";
const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// The node a user is the kubelet of, if any.
pub fn node_name(user: &UserInfo) -> Option<&str> {
    if !user.groups.iter().any(|g| g == NODES_GROUP) {
        return None;
    }
    user.name
        .strip_prefix(NODE_USER_PREFIX)
        .filter(|n| !n.is_empty())
}

/// The names a pod references, by kind.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PodRefs {
    pub secrets: Vec<String>,
    pub configmaps: Vec<String>,
    pub pvcs: Vec<String>,
}

fn str_at<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

fn each<'a>(v: &'a Value, ptr: &str) -> impl Iterator<Item = &'a Value> {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// What `pod` references: volumes (also projected ones), env, envFrom and
/// image pull secrets of every kind of container.
pub fn pod_refs(pod: &Value) -> PodRefs {
    let mut r = PodRefs::default();
    let push = |list: &mut Vec<String>, name: Option<&str>| {
        if let Some(n) = name.filter(|n| !n.is_empty()) {
            if !list.iter().any(|x| x == n) {
                list.push(n.to_string());
            }
        }
    };
    for s in each(pod, "/spec/imagePullSecrets") {
        push(&mut r.secrets, str_at(s, "/name"));
    }
    for vol in each(pod, "/spec/volumes") {
        push(&mut r.secrets, str_at(vol, "/secret/secretName"));
        push(&mut r.configmaps, str_at(vol, "/configMap/name"));
        push(&mut r.pvcs, str_at(vol, "/persistentVolumeClaim/claimName"));
        for src in each(vol, "/projected/sources") {
            push(&mut r.secrets, str_at(src, "/secret/name"));
            push(&mut r.configmaps, str_at(src, "/configMap/name"));
        }
        for driver in [
            "/csi/nodePublishSecretRef/name",
            "/cephfs/secretRef/name",
            "/rbd/secretRef/name",
        ] {
            push(&mut r.secrets, str_at(vol, driver));
        }
    }
    for kind in ["containers", "initContainers", "ephemeralContainers"] {
        for c in each(pod, &format!("/spec/{kind}")) {
            for e in each(c, "/envFrom") {
                push(&mut r.secrets, str_at(e, "/secretRef/name"));
                push(&mut r.configmaps, str_at(e, "/configMapRef/name"));
            }
            for e in each(c, "/env") {
                push(&mut r.secrets, str_at(e, "/valueFrom/secretKeyRef/name"));
                push(
                    &mut r.configmaps,
                    str_at(e, "/valueFrom/configMapKeyRef/name"),
                );
            }
        }
    }
    r
}

/// The Node authorizer over the store.
pub struct NodeAuthorizer {
    store: Arc<dyn Store>,
}

impl NodeAuthorizer {
    pub fn new(store: Arc<dyn Store>) -> Self {
        NodeAuthorizer { store }
    }

    fn object(&self, key: &str) -> Option<Value> {
        let rec = self.store.get(key).ok()??;
        serde_json::from_slice(&rec.value).ok()
    }

    fn pod_bound(&self, node: &str, ns: Option<&str>, name: Option<&str>) -> bool {
        let (Some(ns), Some(name)) = (ns, name) else {
            return false;
        };
        self.object(&format!("/registry/pods/{ns}/{name}"))
            .is_some_and(|p| str_at(&p, "/spec/nodeName") == Some(node))
    }

    /// The pods of `ns` bound to `node`.
    fn pods_on(&self, node: &str, ns: &str) -> Vec<Value> {
        let Ok(page) = self.store.list(&ListOptions {
            prefix: format!("/registry/pods/{ns}/"),
            ..Default::default()
        }) else {
            return Vec::new();
        };
        page.records
            .iter()
            .filter_map(|r| serde_json::from_slice::<Value>(&r.value).ok())
            .filter(|p| str_at(p, "/spec/nodeName") == Some(node))
            .collect()
    }

    fn referenced(&self, node: &str, resource: &str, ns: Option<&str>, name: Option<&str>) -> bool {
        let (Some(ns), Some(name)) = (ns, name) else {
            return false;
        };
        self.pods_on(node, ns).iter().any(|p| {
            let refs = pod_refs(p);
            let list = match resource {
                "secrets" => &refs.secrets,
                "configmaps" => &refs.configmaps,
                _ => &refs.pvcs,
            };
            list.iter().any(|n| n == name)
        })
    }

    fn pv_referenced(&self, node: &str, name: Option<&str>) -> bool {
        let Some(pv) = name else { return false };
        let Some(obj) = self.object(&format!("/registry/persistentvolumes/{pv}")) else {
            return false;
        };
        let (Some(ns), Some(claim)) = (
            str_at(&obj, "/spec/claimRef/namespace"),
            str_at(&obj, "/spec/claimRef/name"),
        ) else {
            return false;
        };
        self.referenced(node, "persistentvolumeclaims", Some(ns), Some(claim))
    }

    fn sa_used(&self, node: &str, ns: Option<&str>, name: Option<&str>) -> bool {
        let (Some(ns), Some(name)) = (ns, name) else {
            return false;
        };
        self.pods_on(node, ns)
            .iter()
            .any(|p| str_at(p, "/spec/serviceAccountName").unwrap_or("default") == name)
    }

    /// Whether `node`'s kubelet may do `a` (false: no opinion).
    pub fn allows(&self, node: &str, a: &Attributes<'_>) -> bool {
        if !a.resource_request {
            return false;
        }
        let own = a.name == Some(node);
        let read = matches!(a.verb, "get" | "list" | "watch");
        match (a.group, a.resource, a.subresource) {
            // Any node may be read (list/watch of all nodes is allowed anyway,
            // as in kube); only its own may be changed.
            ("", "nodes", None) => match a.verb {
                "create" | "get" | "list" | "watch" => true,
                "update" | "patch" => own,
                _ => false,
            },
            ("", "nodes", Some("status")) => matches!(a.verb, "get" | "update" | "patch") && own,
            ("coordination.k8s.io", "leases", None)
                if a.namespace == Some(NODE_LEASE_NAMESPACE) =>
            {
                match a.verb {
                    "create" => true,
                    "get" | "update" | "patch" | "delete" => own,
                    _ => false,
                }
            }
            ("", "pods", None) => match a.verb {
                "get" | "list" | "watch" => true,
                "delete" => self.pod_bound(node, a.namespace, a.name),
                _ => false,
            },
            ("", "pods", Some("status")) => {
                matches!(a.verb, "update" | "patch") && self.pod_bound(node, a.namespace, a.name)
            }
            ("", "pods", Some("eviction")) => {
                a.verb == "create" && self.pod_bound(node, a.namespace, a.name)
            }
            ("", "services" | "endpoints", None) | ("discovery.k8s.io", "endpointslices", None) => {
                read
            }
            ("", r @ ("configmaps" | "secrets" | "persistentvolumeclaims"), None) => {
                read && self.referenced(node, r, a.namespace, a.name)
            }
            ("", "persistentvolumes", None) => a.verb == "get" && self.pv_referenced(node, a.name),
            ("", "serviceaccounts", Some("token")) => {
                a.verb == "create" && self.sa_used(node, a.namespace, a.name)
            }
            ("" | "events.k8s.io", "events", None) => {
                matches!(a.verb, "create" | "update" | "patch")
            }
            ("authentication.k8s.io", "tokenreviews", None)
            | (
                "authorization.k8s.io",
                "subjectaccessreviews" | "localsubjectaccessreviews",
                None,
            ) => a.verb == "create",
            ("certificates.k8s.io", "certificatesigningrequests", None) => {
                matches!(a.verb, "create" | "get" | "list" | "watch")
            }
            ("storage.k8s.io", "csidrivers", None) | ("node.k8s.io", "runtimeclasses", None) => {
                read
            }
            ("storage.k8s.io", "csinodes", None) => match a.verb {
                "create" => true,
                "get" | "update" | "patch" | "delete" => own,
                _ => false,
            },
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::testing::MemoryStore;
    use serde_json::json;

    fn a<'a>(
        verb: &'a str,
        group: &'a str,
        resource: &'a str,
        sub: Option<&'a str>,
        ns: Option<&'a str>,
        name: Option<&'a str>,
    ) -> Attributes<'a> {
        Attributes::resource(verb, group, resource, sub, ns, name)
    }

    fn setup() -> NodeAuthorizer {
        let store = Arc::new(MemoryStore::new());
        let pod = json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"nodeName": "a", "serviceAccountName": "app",
                "volumes": [{"name": "s", "secret": {"secretName": "tls"}},
                            {"name": "d", "persistentVolumeClaim": {"claimName": "data"}}],
                "containers": [{"name": "c", "envFrom": [{"configMapRef": {"name": "cfg"}}]}]}});
        let other = json!({"metadata": {"name": "db", "namespace": "default"},
            "spec": {"nodeName": "b", "volumes": [{"name": "s", "secret": {"secretName": "dbpass"}}],
                "containers": [{"name": "c"}]}});
        let pv = json!({"metadata": {"name": "pv1"},
            "spec": {"claimRef": {"namespace": "default", "name": "data"}}});
        store
            .create("/registry/pods/default/web", pod.to_string().as_bytes())
            .unwrap();
        store
            .create("/registry/pods/default/db", other.to_string().as_bytes())
            .unwrap();
        store
            .create("/registry/persistentvolumes/pv1", pv.to_string().as_bytes())
            .unwrap();
        NodeAuthorizer::new(store)
    }

    #[test]
    fn node_names() {
        let u = |n: &str, g: &[&str]| UserInfo {
            name: n.into(),
            groups: g.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        assert_eq!(node_name(&u("system:node:a", &[NODES_GROUP])), Some("a"));
        assert_eq!(node_name(&u("system:node:a", &[])), None);
        assert_eq!(node_name(&u("bob", &[NODES_GROUP])), None);
    }

    #[test]
    fn own_node_and_lease_only() {
        let n = setup();
        assert!(n.allows("a", &a("update", "", "nodes", None, None, Some("a"))));
        assert!(n.allows(
            "a",
            &a("patch", "", "nodes", Some("status"), None, Some("a"))
        ));
        assert!(!n.allows("a", &a("update", "", "nodes", None, None, Some("b"))));
        assert!(!n.allows(
            "a",
            &a("patch", "", "nodes", Some("status"), None, Some("b"))
        ));
        assert!(!n.allows("a", &a("delete", "", "nodes", None, None, Some("a"))));
        let lease = |verb, name| {
            a(
                verb,
                "coordination.k8s.io",
                "leases",
                None,
                Some("kube-node-lease"),
                name,
            )
        };
        assert!(n.allows("a", &lease("update", Some("a"))));
        assert!(!n.allows("a", &lease("update", Some("b"))));
        assert!(!n.allows(
            "a",
            &a(
                "update",
                "coordination.k8s.io",
                "leases",
                None,
                Some("default"),
                Some("a")
            )
        ));
    }

    #[test]
    fn pods_bound_to_the_node() {
        let n = setup();
        assert!(n.allows(
            "a",
            &a(
                "update",
                "",
                "pods",
                Some("status"),
                Some("default"),
                Some("web")
            )
        ));
        assert!(!n.allows(
            "a",
            &a(
                "update",
                "",
                "pods",
                Some("status"),
                Some("default"),
                Some("db")
            )
        ));
        assert!(n.allows(
            "a",
            &a("delete", "", "pods", None, Some("default"), Some("web"))
        ));
        assert!(!n.allows(
            "a",
            &a("delete", "", "pods", None, Some("default"), Some("db"))
        ));
        assert!(!n.allows("a", &a("create", "", "pods", None, Some("default"), None)));
    }

    #[test]
    fn referenced_objects_only() {
        let n = setup();
        let get = |r, name| a("get", "", r, None, Some("default"), Some(name));
        assert!(n.allows("a", &get("secrets", "tls")));
        assert!(!n.allows("a", &get("secrets", "dbpass")));
        assert!(n.allows("b", &get("secrets", "dbpass")));
        assert!(n.allows("a", &get("configmaps", "cfg")));
        assert!(!n.allows("a", &get("configmaps", "other")));
        assert!(n.allows("a", &get("persistentvolumeclaims", "data")));
        assert!(n.allows(
            "a",
            &a("get", "", "persistentvolumes", None, None, Some("pv1"))
        ));
        assert!(!n.allows(
            "b",
            &a("get", "", "persistentvolumes", None, None, Some("pv1"))
        ));
        let token = |node, sa| {
            n.allows(
                node,
                &a(
                    "create",
                    "",
                    "serviceaccounts",
                    Some("token"),
                    Some("default"),
                    Some(sa),
                ),
            )
        };
        assert!(token("a", "app"));
        assert!(!token("a", "default"));
        assert!(token("b", "default"));
    }
}
