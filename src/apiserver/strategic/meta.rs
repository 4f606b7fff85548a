//! Patch metadata for built-in types: the `patchStrategy`/`patchMergeKey`
//! struct tags and `+listType`/`+listMapKey` markers of k8s.io/api, keyed by
//! the OpenAPI schema name of the owning type. Shared by the strategic merge
//! code and the OpenAPI extensions. Partial: the lists kubectl users touch
//! (pods, workloads, services, metadata, conditions); any other list is
//! replaced wholesale by a strategic merge patch, as Kubernetes does for
//! untagged lists.

/// One tagged list or map field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldMeta {
    /// Schema name of the type owning the field.
    pub owner: &'static str,
    pub field: &'static str,
    /// `x-kubernetes-patch-strategy`, e.g. `merge` or `merge,retainKeys`.
    pub strategy: &'static str,
    /// `x-kubernetes-patch-merge-key`; empty for primitive lists.
    pub merge_key: &'static str,
    /// `x-kubernetes-list-type`; empty when not tagged.
    pub list_type: &'static str,
    /// `x-kubernetes-list-map-keys` when `list_type` is `map`.
    pub map_keys: &'static [&'static str],
}

const fn f(
    owner: &'static str,
    field: &'static str,
    strategy: &'static str,
    merge_key: &'static str,
    list_type: &'static str,
    map_keys: &'static [&'static str],
) -> FieldMeta {
    FieldMeta { owner, field, strategy, merge_key, list_type, map_keys }
}


/// The table. Owners are full schema names.
pub static FIELDS: &[FieldMeta] = &[
    f("io.k8s.api.core.v1.PodSpec", "containers", "merge", "name", "map", &["name"]),
    f("io.k8s.api.core.v1.PodSpec", "initContainers", "merge", "name", "map", &["name"]),
    f("io.k8s.api.core.v1.PodSpec", "ephemeralContainers", "merge", "name", "map", &["name"]),
    f("io.k8s.api.core.v1.PodSpec", "volumes", "merge,retainKeys", "name", "map", &["name"]),
    f("io.k8s.api.core.v1.PodSpec", "imagePullSecrets", "merge", "name", "map", &["name"]),
    f("io.k8s.api.core.v1.PodSpec", "hostAliases", "merge", "ip", "map", &["ip"]),
    f("io.k8s.api.core.v1.PodSpec", "topologySpreadConstraints", "merge", "topologyKey", "map", &["topologyKey", "whenUnsatisfiable"]),
    f("io.k8s.api.core.v1.PodSpec", "resourceClaims", "merge,retainKeys", "name", "map", &["name"]),
    f("io.k8s.api.core.v1.PodSpec", "schedulingGates", "merge", "name", "map", &["name"]),
    f("io.k8s.api.core.v1.PodSpec", "tolerations", "", "", "atomic", &[]),
    f("io.k8s.api.core.v1.Container", "ports", "merge", "containerPort", "map", &["containerPort", "protocol"]),
    f("io.k8s.api.core.v1.Container", "env", "merge", "name", "map", &["name"]),
    f("io.k8s.api.core.v1.Container", "volumeMounts", "merge", "mountPath", "map", &["mountPath"]),
    f("io.k8s.api.core.v1.Container", "volumeDevices", "merge", "devicePath", "map", &["devicePath"]),
    f("io.k8s.api.core.v1.Container", "resizePolicy", "", "", "atomic", &[]),
    f("io.k8s.api.core.v1.EphemeralContainer", "ports", "merge", "containerPort", "map", &["containerPort", "protocol"]),
    f("io.k8s.api.core.v1.EphemeralContainer", "env", "merge", "name", "map", &["name"]),
    f("io.k8s.api.core.v1.EphemeralContainer", "volumeMounts", "merge", "mountPath", "map", &["mountPath"]),
    f("io.k8s.api.core.v1.EphemeralContainer", "volumeDevices", "merge", "devicePath", "map", &["devicePath"]),
    f("io.k8s.api.core.v1.PodStatus", "conditions", "merge", "type", "map", &["type"]),
    f("io.k8s.api.core.v1.PodStatus", "podIPs", "merge", "ip", "map", &["ip"]),
    f("io.k8s.api.core.v1.PodStatus", "hostIPs", "merge", "ip", "atomic", &[]),
    f("io.k8s.api.core.v1.NodeStatus", "conditions", "merge", "type", "map", &["type"]),
    f("io.k8s.api.core.v1.NodeStatus", "addresses", "merge", "type", "map", &["type"]),
    f("io.k8s.api.core.v1.NodeSpec", "podCIDRs", "merge", "", "set", &[]),
    f("io.k8s.api.core.v1.NamespaceStatus", "conditions", "merge", "type", "map", &["type"]),
    f("io.k8s.api.core.v1.PersistentVolumeClaimStatus", "conditions", "merge", "type", "map", &["type"]),
    f("io.k8s.api.core.v1.ReplicationControllerStatus", "conditions", "merge", "type", "map", &["type"]),
    f("io.k8s.api.core.v1.ComponentStatus", "conditions", "merge", "type", "map", &["type"]),
    f("io.k8s.api.core.v1.ServiceSpec", "ports", "merge", "port", "map", &["port", "protocol"]),
    f("io.k8s.api.core.v1.ServiceStatus", "conditions", "merge", "type", "map", &["type"]),
    f("io.k8s.api.core.v1.ServiceAccount", "secrets", "merge", "name", "", &[]),
    f("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "finalizers", "merge", "", "set", &[]),
    f("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "ownerReferences", "merge", "uid", "map", &["uid"]),
    f("io.k8s.api.apps.v1.DeploymentSpec", "strategy", "retainKeys", "", "", &[]),
    f("io.k8s.api.apps.v1.DeploymentStatus", "conditions", "merge", "type", "map", &["type"]),
    f("io.k8s.api.apps.v1.ReplicaSetStatus", "conditions", "merge", "type", "map", &["type"]),
    f("io.k8s.api.apps.v1.StatefulSetStatus", "conditions", "merge", "type", "map", &["type"]),
    f("io.k8s.api.apps.v1.DaemonSetStatus", "conditions", "merge", "type", "map", &["type"]),
    f("io.k8s.api.batch.v1.JobStatus", "conditions", "merge", "type", "atomic", &[]),
    f("io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerStatus", "conditions", "merge", "type", "map", &["type"]),
    f("io.k8s.api.policy.v1.PodDisruptionBudgetStatus", "conditions", "merge", "type", "map", &["type"]),
];

/// The metadata of `owner.field`, if tagged.
pub fn lookup(owner: &str, field: &str) -> Option<&'static FieldMeta> {
    FIELDS.iter().find(|m| m.owner == owner && m.field == field)
}
