//! The kinds kube-apiserver 1.32 serves, as registry entries: verbs, short
//! names, categories and subresources exactly as its discovery documents
//! list them, and each kind's table columns.
//!
//! Extra per-kind facts discovery needs but `ResourceDef` does not carry
//! (group priorities, subresource verbs and response kinds, storage
//! versions) live here, keyed by group/version/kind, so the contract type
//! stays unchanged.
//!
//! `componentstatuses` is answered, never stored (`super::componentstatus`).
//! Left out on purpose: `flowcontrol.apiserver.k8s.io` (no priority-and-fairness),
//! and alpha/beta APIs off by default in 1.32.

use crate::apiserver::registry::{Registry, ResourceDef};
use crate::apiserver::table::{columns_for, default_columns};

/// The verbs of a full CRUD resource, sorted as discovery lists them.
pub const FULL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const NO_COLLECTION: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];
const CREATE_ONLY: &[&str] = &["create"];

struct Spec {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    categories: &'static [&'static str],
    subresources: &'static [&'static str],
    verbs: &'static [&'static str],
}

const fn r(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
) -> Spec {
    Spec {
        group,
        version,
        kind,
        plural,
        namespaced,
        short: &[],
        categories: &[],
        subresources: &[],
        verbs: FULL_VERBS,
    }
}

impl Spec {
    const fn short(mut self, short: &'static [&'static str]) -> Self {
        self.short = short;
        self
    }
    const fn cats(mut self, categories: &'static [&'static str]) -> Self {
        self.categories = categories;
        self
    }
    const fn subs(mut self, subresources: &'static [&'static str]) -> Self {
        self.subresources = subresources;
        self
    }
    const fn verbs(mut self, verbs: &'static [&'static str]) -> Self {
        self.verbs = verbs;
        self
    }
}

const NS: bool = true;
const CLUSTER: bool = false;
const ALL: &[&str] = &["all"];
const API_EXT: &[&str] = &["api-extensions"];
const STATUS: &[&str] = &["status"];
const SCALE_STATUS: &[&str] = &["scale", "status"];

const CORE: &str = "";
const APPS: &str = "apps";
const RBAC: &str = "rbac.authorization.k8s.io";
const STORAGE: &str = "storage.k8s.io";
const ADMISSION: &str = "admissionregistration.k8s.io";
const NET: &str = "networking.k8s.io";

// One line per resource reads best as a table.
#[rustfmt::skip]
static SPECS: &[Spec] = &[
    // core/v1
    r(CORE, "v1", "Binding", "bindings", NS).verbs(CREATE_ONLY),
    r(CORE, "v1", "ComponentStatus", "componentstatuses", CLUSTER).short(&["cs"]).verbs(&["get", "list"]),
    r(CORE, "v1", "ConfigMap", "configmaps", NS).short(&["cm"]),
    r(CORE, "v1", "Endpoints", "endpoints", NS).short(&["ep"]),
    r(CORE, "v1", "Event", "events", NS).short(&["ev"]),
    r(CORE, "v1", "LimitRange", "limitranges", NS).short(&["limits"]),
    r(CORE, "v1", "Namespace", "namespaces", CLUSTER).short(&["ns"]).subs(&["finalize", "status"]).verbs(NO_COLLECTION),
    r(CORE, "v1", "Node", "nodes", CLUSTER).short(&["no"]).subs(&["proxy", "status"]),
    r(CORE, "v1", "PersistentVolumeClaim", "persistentvolumeclaims", NS).short(&["pvc"]).subs(STATUS),
    r(CORE, "v1", "PersistentVolume", "persistentvolumes", CLUSTER).short(&["pv"]).subs(STATUS),
    r(CORE, "v1", "Pod", "pods", NS).short(&["po"]).cats(ALL).subs(&[
        "attach",
        "binding",
        "ephemeralcontainers",
        "eviction",
        "exec",
        "log",
        "portforward",
        "proxy",
        "status",
    ]),
    r(CORE, "v1", "PodTemplate", "podtemplates", NS),
    r(CORE, "v1", "ReplicationController", "replicationcontrollers", NS).short(&["rc"]).cats(ALL).subs(SCALE_STATUS),
    r(CORE, "v1", "ResourceQuota", "resourcequotas", NS).short(&["quota"]).subs(STATUS),
    r(CORE, "v1", "Secret", "secrets", NS),
    r(CORE, "v1", "ServiceAccount", "serviceaccounts", NS).short(&["sa"]).subs(&["token"]),
    r(CORE, "v1", "Service", "services", NS).short(&["svc"]).cats(ALL).subs(&["proxy", "status"]),
    // apiregistration.k8s.io
    r("apiregistration.k8s.io", "v1", "APIService", "apiservices", CLUSTER).cats(API_EXT).subs(STATUS),
    // apps
    r(APPS, "v1", "ControllerRevision", "controllerrevisions", NS),
    r(APPS, "v1", "DaemonSet", "daemonsets", NS).short(&["ds"]).cats(ALL).subs(STATUS),
    r(APPS, "v1", "Deployment", "deployments", NS).short(&["deploy"]).cats(ALL).subs(SCALE_STATUS),
    r(APPS, "v1", "ReplicaSet", "replicasets", NS).short(&["rs"]).cats(ALL).subs(SCALE_STATUS),
    r(APPS, "v1", "StatefulSet", "statefulsets", NS).short(&["sts"]).cats(ALL).subs(SCALE_STATUS),
    // events.k8s.io
    r("events.k8s.io", "v1", "Event", "events", NS).short(&["ev"]),
    // authentication / authorization: create-only reviews
    r("authentication.k8s.io", "v1", "SelfSubjectReview", "selfsubjectreviews", CLUSTER).verbs(CREATE_ONLY),
    r("authentication.k8s.io", "v1", "TokenReview", "tokenreviews", CLUSTER).verbs(CREATE_ONLY),
    r("authorization.k8s.io", "v1", "LocalSubjectAccessReview", "localsubjectaccessreviews", NS).verbs(CREATE_ONLY),
    r("authorization.k8s.io", "v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews", CLUSTER).verbs(CREATE_ONLY),
    r("authorization.k8s.io", "v1", "SelfSubjectRulesReview", "selfsubjectrulesreviews", CLUSTER).verbs(CREATE_ONLY),
    r("authorization.k8s.io", "v1", "SubjectAccessReview", "subjectaccessreviews", CLUSTER).verbs(CREATE_ONLY),
    // autoscaling: v2 preferred, v1 still served
    r("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", NS).short(&["hpa"]).cats(ALL).subs(STATUS),
    r("autoscaling", "v1", "HorizontalPodAutoscaler", "horizontalpodautoscalers", NS).short(&["hpa"]).cats(ALL).subs(STATUS),
    // batch
    r("batch", "v1", "CronJob", "cronjobs", NS).short(&["cj"]).cats(ALL).subs(STATUS),
    r("batch", "v1", "Job", "jobs", NS).cats(ALL).subs(STATUS),
    // certificates.k8s.io
    r("certificates.k8s.io", "v1", "CertificateSigningRequest", "certificatesigningrequests", CLUSTER)
        .short(&["csr"])
        .subs(&["approval", "status"]),
    // networking.k8s.io
    r(NET, "v1", "IngressClass", "ingressclasses", CLUSTER),
    r(NET, "v1", "Ingress", "ingresses", NS).short(&["ing"]).subs(STATUS),
    r(NET, "v1", "NetworkPolicy", "networkpolicies", NS).short(&["netpol"]),
    // policy
    r("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", NS).short(&["pdb"]).subs(STATUS),
    // rbac.authorization.k8s.io
    r(RBAC, "v1", "ClusterRoleBinding", "clusterrolebindings", CLUSTER),
    r(RBAC, "v1", "ClusterRole", "clusterroles", CLUSTER),
    r(RBAC, "v1", "RoleBinding", "rolebindings", NS),
    r(RBAC, "v1", "Role", "roles", NS),
    // storage.k8s.io
    r(STORAGE, "v1", "CSIDriver", "csidrivers", CLUSTER),
    r(STORAGE, "v1", "CSINode", "csinodes", CLUSTER),
    r(STORAGE, "v1", "CSIStorageCapacity", "csistoragecapacities", NS),
    r(STORAGE, "v1", "StorageClass", "storageclasses", CLUSTER).short(&["sc"]),
    r(STORAGE, "v1", "VolumeAttachment", "volumeattachments", CLUSTER).subs(STATUS),
    // admissionregistration.k8s.io
    r(ADMISSION, "v1", "MutatingWebhookConfiguration", "mutatingwebhookconfigurations", CLUSTER).cats(API_EXT),
    r(ADMISSION, "v1", "ValidatingAdmissionPolicy", "validatingadmissionpolicies", CLUSTER).cats(API_EXT).subs(STATUS),
    r(ADMISSION, "v1", "ValidatingAdmissionPolicyBinding", "validatingadmissionpolicybindings", CLUSTER).cats(API_EXT),
    r(ADMISSION, "v1", "ValidatingWebhookConfiguration", "validatingwebhookconfigurations", CLUSTER).cats(API_EXT),
    // apiextensions.k8s.io
    r("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", CLUSTER)
        .short(&["crd", "crds"])
        .cats(API_EXT)
        .subs(STATUS),
    // scheduling, coordination, node, discovery
    r("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", CLUSTER).short(&["pc"]),
    r("coordination.k8s.io", "v1", "Lease", "leases", NS),
    r("node.k8s.io", "v1", "RuntimeClass", "runtimeclasses", CLUSTER),
    r("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", NS),
];

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Every built-in resource as a registry entry, in the order above.
pub fn builtin_defs() -> Vec<ResourceDef> {
    SPECS
        .iter()
        .map(|spec| ResourceDef {
            group: spec.group.to_string(),
            version: spec.version.to_string(),
            kind: spec.kind.to_string(),
            plural: spec.plural.to_string(),
            singular: spec.kind.to_lowercase(),
            short_names: strings(spec.short),
            categories: strings(spec.categories),
            namespaced: spec.namespaced,
            subresources: strings(spec.subresources),
            verbs: strings(spec.verbs),
            columns: columns_for(spec.group, spec.kind).unwrap_or_else(default_columns),
        })
        .collect()
}

/// A registry holding every built-in resource.
pub fn builtin_registry() -> Registry {
    let registry = Registry::empty();
    for def in builtin_defs() {
        registry.insert(def);
    }
    registry
}

/// kube-apiserver's APIService priorities (group, version-within-group) for
/// the built-in group versions. Higher sorts first. Custom resource groups
/// get (1000, 100), as the CRD registration controller gives them.
pub fn group_version_priority(group: &str, version: &str) -> (i32, i32) {
    let group_priority = match group {
        "" => 18000,
        // The aggregator lists its own group first in kube-apiserver.
        "apiregistration.k8s.io" => 18100,
        "apps" => 17800,
        "events.k8s.io" => 17750,
        "authentication.k8s.io" => 17700,
        "authorization.k8s.io" => 17600,
        "autoscaling" => 17500,
        "batch" => 17400,
        "certificates.k8s.io" => 17300,
        "networking.k8s.io" => 17200,
        "policy" => 17100,
        "rbac.authorization.k8s.io" => 17000,
        "storage.k8s.io" => 16800,
        "admissionregistration.k8s.io" | "apiextensions.k8s.io" => 16700,
        "scheduling.k8s.io" => 16600,
        "coordination.k8s.io" => 16500,
        "node.k8s.io" => 16300,
        "discovery.k8s.io" => 16200,
        "flowcontrol.apiserver.k8s.io" => 16100,
        _ => 1000,
    };
    let version_priority = match (group, version) {
        ("autoscaling", "v2") => 30,
        (_, "v1") if group_priority > 1000 => 15,
        _ if group_priority > 1000 => 9,
        _ => 100,
    };
    (group_priority, version_priority)
}

/// What discovery says about a subresource: its verbs and the
/// (group, version, kind) it responds with. Group and version are empty when
/// they are the parent's, as kube-apiserver reports them.
pub struct SubresourceInfo {
    pub verbs: &'static [&'static str],
    pub group: &'static str,
    pub version: &'static str,
    pub kind: String,
}

const GET_PATCH_UPDATE: &[&str] = &["get", "patch", "update"];
const CONNECT: &[&str] = &["create", "get"];
const PROXY: &[&str] = &["create", "delete", "get", "patch", "update"];

/// The discovery facts of `sub` on `def`. Unknown subresources (custom
/// resources' status) answer like `status`.
pub fn subresource_info(def: &ResourceDef, sub: &str) -> SubresourceInfo {
    let same = |verbs: &'static [&'static str], kind: &str| SubresourceInfo {
        verbs,
        group: "",
        version: "",
        kind: kind.to_string(),
    };
    let other = |verbs, group, version, kind: &str| SubresourceInfo {
        verbs,
        group,
        version,
        kind: kind.to_string(),
    };
    match sub {
        "scale" => other(GET_PATCH_UPDATE, "autoscaling", "v1", "Scale"),
        "eviction" => other(CREATE_ONLY, "policy", "v1", "Eviction"),
        "token" => other(CREATE_ONLY, "authentication.k8s.io", "v1", "TokenRequest"),
        "binding" => same(CREATE_ONLY, "Binding"),
        "log" => same(&["get"], &def.kind),
        "exec" => same(CONNECT, &format!("{}ExecOptions", def.kind)),
        "attach" => same(CONNECT, &format!("{}AttachOptions", def.kind)),
        "portforward" => same(CONNECT, &format!("{}PortForwardOptions", def.kind)),
        "proxy" => same(PROXY, &format!("{}ProxyOptions", def.kind)),
        "finalize" => same(&["update"], &def.kind),
        _ => same(GET_PATCH_UPDATE, &def.kind),
    }
}

/// The (group, version, kind) a resource is stored as, for legacy
/// discovery's `storageVersionHash`.
pub fn storage_version(def: &ResourceDef) -> (String, String, String) {
    match (def.group.as_str(), def.kind.as_str()) {
        ("events.k8s.io", "Event") => (String::new(), "v1".into(), "Event".into()),
        ("autoscaling", "HorizontalPodAutoscaler") => {
            ("autoscaling".into(), "v2".into(), def.kind.clone())
        }
        _ => (def.group.clone(), def.version.clone(), def.kind.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_resources_match_kube_discovery() {
        let reg = builtin_registry();
        let pods = reg.lookup("", "v1", "pods").expect("pods");
        assert_eq!(pods.kind, "Pod");
        assert_eq!(pods.singular, "pod");
        assert_eq!(pods.short_names, ["po"]);
        assert_eq!(pods.categories, ["all"]);
        assert!(pods.namespaced);
        assert_eq!(pods.verbs, FULL_VERBS);
        for sub in [
            "status",
            "binding",
            "eviction",
            "log",
            "exec",
            "attach",
            "portforward",
            "proxy",
            "ephemeralcontainers",
        ] {
            assert!(pods.has_subresource(sub), "pods/{sub}");
        }
        let ns = reg.lookup("", "v1", "namespaces").expect("namespaces");
        assert!(!ns.namespaced);
        assert!(!ns.verbs.iter().any(|v| v == "deletecollection"));
        let bindings = reg.lookup("", "v1", "bindings").expect("bindings");
        assert_eq!(bindings.verbs, ["create"]);
    }

    #[test]
    fn kubectl_get_all_categories_are_kubes() {
        let mut all: Vec<String> = builtin_defs()
            .into_iter()
            .filter(|d| d.categories.iter().any(|c| c == "all"))
            .map(|d| d.plural)
            .collect();
        all.sort();
        all.dedup();
        assert_eq!(
            all,
            [
                "cronjobs",
                "daemonsets",
                "deployments",
                "horizontalpodautoscalers",
                "jobs",
                "pods",
                "replicasets",
                "replicationcontrollers",
                "services",
                "statefulsets"
            ]
        );
    }

    #[test]
    fn short_names_are_unique_per_group() {
        let defs = builtin_defs();
        let mut seen = std::collections::HashSet::new();
        for d in &defs {
            for s in &d.short_names {
                assert!(
                    seen.insert((d.group.clone(), d.version.clone(), s.clone())),
                    "duplicate {s}"
                );
            }
        }
        let crd = defs
            .iter()
            .find(|d| d.plural == "customresourcedefinitions")
            .expect("crd");
        assert_eq!(crd.short_names, ["crd", "crds"]);
        assert_eq!(crd.categories, ["api-extensions"]);
    }

    #[test]
    fn reviews_are_create_only_and_every_listable_kind_has_columns() {
        for d in builtin_defs() {
            if d.plural.ends_with("reviews") {
                assert_eq!(d.verbs, ["create"], "{}", d.plural);
            }
            assert!(!d.columns.is_empty(), "{}", d.plural);
            assert!(
                d.columns[0].name == "Name" || d.columns[0].name == "Last Seen",
                "{}",
                d.plural
            );
        }
    }

    #[test]
    fn subresources_answer_with_kubes_kinds() {
        let reg = builtin_registry();
        let deploy = reg
            .lookup("apps", "v1", "deployments")
            .expect("deployments");
        let scale = subresource_info(&deploy, "scale");
        assert_eq!(
            (scale.group, scale.version, scale.kind.as_str()),
            ("autoscaling", "v1", "Scale")
        );
        assert_eq!(scale.verbs, ["get", "patch", "update"]);
        let pods = reg.lookup("", "v1", "pods").expect("pods");
        assert_eq!(subresource_info(&pods, "exec").kind, "PodExecOptions");
        assert_eq!(subresource_info(&pods, "exec").verbs, ["create", "get"]);
        assert_eq!(subresource_info(&pods, "eviction").group, "policy");
        assert_eq!(
            subresource_info(&pods, "proxy").verbs,
            ["create", "delete", "get", "patch", "update"]
        );
        let sa = reg.lookup("", "v1", "serviceaccounts").expect("sa");
        assert_eq!(subresource_info(&sa, "token").kind, "TokenRequest");
    }

    #[test]
    fn priorities_order_core_first_and_prefer_autoscaling_v2() {
        assert!(group_version_priority("", "v1").0 > group_version_priority("apps", "v1").0);
        assert!(
            group_version_priority("autoscaling", "v2").1
                > group_version_priority("autoscaling", "v1").1
        );
        assert_eq!(group_version_priority("example.com", "v1"), (1000, 100));
    }
}
