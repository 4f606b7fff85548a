//! The kinds whose protobuf encoding the decoder understands, and how each is decoded.
//!
//! Every top-level object type in `k8s-pb` (a message with `ObjectMeta` metadata) is listed under
//! the apiVersion it is served at. Decoding goes through the prost type, so the wire format is
//! checked against the real schema; the decoded value is then rendered with the derived `Debug`,
//! which is the only introspection prost offers (see `debug_tree`).

use k8s_pb::{api, apiextensions_apiserver, apimachinery, kube_aggregator, metrics};
use prost::Message;

/// The outcome of looking up and decoding one kind.
pub(super) enum Lookup {
    /// The kind is known and its bytes decoded; this is the value's `Debug` rendering.
    Decoded(String),
    /// The kind is known but its bytes are not a valid encoding of it.
    Malformed(prost::DecodeError),
    /// No kind of that name is served at that apiVersion.
    UnknownKind,
}

fn render<M: Message + Default + std::fmt::Debug>(raw: &[u8]) -> Lookup {
    match M::decode(raw) {
        Ok(message) => Lookup::Decoded(format!("{message:?}")),
        Err(err) => Lookup::Malformed(err),
    }
}

macro_rules! kinds {
    ($($api_version:literal => $module:path [$($kind:ident),* $(,)?],)*) => {
        /// Decodes `raw` as the message for `kind` in `api_version`.
        pub(super) fn lookup(api_version: &str, kind: &str, raw: &[u8]) -> Lookup {
            match (api_version, kind) {
                $($(($api_version, stringify!($kind)) => {
                    use $module as module;
                    render::<module::$kind>(raw)
                })*)*
                _ => Lookup::UnknownKind,
            }
        }

        /// Every (apiVersion, kind) pair that `lookup` knows.
        #[cfg(test)]
        pub(super) const ALL: &[(&str, &str)] = &[$($(($api_version, stringify!($kind)),)*)*];
    };
}

kinds! {
    "admissionregistration.k8s.io/v1" => api::admissionregistration::v1 [
        MutatingWebhookConfiguration, ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
        ValidatingWebhookConfiguration,
    ],
    "admissionregistration.k8s.io/v1alpha1" => api::admissionregistration::v1alpha1 [
        MutatingAdmissionPolicy, MutatingAdmissionPolicyBinding, ValidatingAdmissionPolicy,
        ValidatingAdmissionPolicyBinding,
    ],
    "admissionregistration.k8s.io/v1beta1" => api::admissionregistration::v1beta1 [
        MutatingAdmissionPolicy, MutatingAdmissionPolicyBinding, MutatingWebhookConfiguration,
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding, ValidatingWebhookConfiguration,
    ],
    "internal.apiserver.k8s.io/v1alpha1" => api::apiserverinternal::v1alpha1 [StorageVersion],
    "apps/v1" => api::apps::v1 [ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet],
    "apps/v1beta1" => api::apps::v1beta1 [ControllerRevision, Deployment, Scale, StatefulSet],
    "apps/v1beta2" => api::apps::v1beta2 [
        ControllerRevision, DaemonSet, Deployment, ReplicaSet, Scale, StatefulSet,
    ],
    "authentication.k8s.io/v1" => api::authentication::v1 [SelfSubjectReview, TokenRequest, TokenReview],
    "authentication.k8s.io/v1alpha1" => api::authentication::v1alpha1 [SelfSubjectReview],
    "authentication.k8s.io/v1beta1" => api::authentication::v1beta1 [SelfSubjectReview, TokenReview],
    "authorization.k8s.io/v1" => api::authorization::v1 [
        LocalSubjectAccessReview, SelfSubjectAccessReview, SelfSubjectRulesReview, SubjectAccessReview,
    ],
    "authorization.k8s.io/v1beta1" => api::authorization::v1beta1 [
        LocalSubjectAccessReview, SelfSubjectAccessReview, SelfSubjectRulesReview, SubjectAccessReview,
    ],
    "autoscaling/v1" => api::autoscaling::v1 [HorizontalPodAutoscaler, Scale],
    "autoscaling/v2" => api::autoscaling::v2 [HorizontalPodAutoscaler],
    "autoscaling/v2beta1" => api::autoscaling::v2beta1 [HorizontalPodAutoscaler],
    "autoscaling/v2beta2" => api::autoscaling::v2beta2 [HorizontalPodAutoscaler],
    "batch/v1" => api::batch::v1 [CronJob, Job],
    "batch/v1beta1" => api::batch::v1beta1 [CronJob],
    "certificates.k8s.io/v1" => api::certificates::v1 [CertificateSigningRequest],
    "certificates.k8s.io/v1alpha1" => api::certificates::v1alpha1 [ClusterTrustBundle],
    "certificates.k8s.io/v1beta1" => api::certificates::v1beta1 [
        CertificateSigningRequest, ClusterTrustBundle, PodCertificateRequest,
    ],
    "coordination.k8s.io/v1" => api::coordination::v1 [Lease],
    "coordination.k8s.io/v1alpha2" => api::coordination::v1alpha2 [LeaseCandidate],
    "coordination.k8s.io/v1beta1" => api::coordination::v1beta1 [Lease, LeaseCandidate],
    "v1" => api::core::v1 [
        Binding, ComponentStatus, ConfigMap, Endpoints, Event, LimitRange, Namespace, Node, PersistentVolume,
        PersistentVolumeClaim, Pod, PodStatusResult, PodTemplate, RangeAllocation, ReplicationController,
        ResourceQuota, Secret, Service, ServiceAccount,
    ],
    "discovery.k8s.io/v1" => api::discovery::v1 [EndpointSlice],
    "discovery.k8s.io/v1beta1" => api::discovery::v1beta1 [EndpointSlice],
    "events.k8s.io/v1" => api::events::v1 [Event],
    "events.k8s.io/v1beta1" => api::events::v1beta1 [Event],
    "extensions/v1beta1" => api::extensions::v1beta1 [
        DaemonSet, Deployment, Ingress, NetworkPolicy, ReplicaSet, Scale,
    ],
    "flowcontrol.apiserver.k8s.io/v1" => api::flowcontrol::v1 [FlowSchema, PriorityLevelConfiguration],
    "flowcontrol.apiserver.k8s.io/v1beta1" => api::flowcontrol::v1beta1 [
        FlowSchema, PriorityLevelConfiguration,
    ],
    "flowcontrol.apiserver.k8s.io/v1beta2" => api::flowcontrol::v1beta2 [
        FlowSchema, PriorityLevelConfiguration,
    ],
    "flowcontrol.apiserver.k8s.io/v1beta3" => api::flowcontrol::v1beta3 [
        FlowSchema, PriorityLevelConfiguration,
    ],
    "networking.k8s.io/v1" => api::networking::v1 [
        IPAddress, Ingress, IngressClass, NetworkPolicy, ServiceCIDR,
    ],
    "networking.k8s.io/v1beta1" => api::networking::v1beta1 [IPAddress, Ingress, IngressClass, ServiceCIDR],
    "node.k8s.io/v1" => api::node::v1 [RuntimeClass],
    "node.k8s.io/v1alpha1" => api::node::v1alpha1 [RuntimeClass],
    "node.k8s.io/v1beta1" => api::node::v1beta1 [RuntimeClass],
    "policy/v1" => api::policy::v1 [Eviction, PodDisruptionBudget],
    "policy/v1beta1" => api::policy::v1beta1 [Eviction, PodDisruptionBudget],
    "rbac.authorization.k8s.io/v1" => api::rbac::v1 [ClusterRole, ClusterRoleBinding, Role, RoleBinding],
    "rbac.authorization.k8s.io/v1alpha1" => api::rbac::v1alpha1 [
        ClusterRole, ClusterRoleBinding, Role, RoleBinding,
    ],
    "rbac.authorization.k8s.io/v1beta1" => api::rbac::v1beta1 [
        ClusterRole, ClusterRoleBinding, Role, RoleBinding,
    ],
    "resource.k8s.io/v1" => api::resource::v1 [
        DeviceClass, ResourceClaim, ResourceClaimTemplate, ResourceSlice,
    ],
    "resource.k8s.io/v1alpha3" => api::resource::v1alpha3 [DeviceTaintRule],
    "resource.k8s.io/v1beta1" => api::resource::v1beta1 [
        DeviceClass, ResourceClaim, ResourceClaimTemplate, ResourceSlice,
    ],
    "resource.k8s.io/v1beta2" => api::resource::v1beta2 [
        DeviceClass, ResourceClaim, ResourceClaimTemplate, ResourceSlice,
    ],
    "scheduling.k8s.io/v1" => api::scheduling::v1 [PriorityClass],
    "scheduling.k8s.io/v1alpha1" => api::scheduling::v1alpha1 [PriorityClass, Workload],
    "scheduling.k8s.io/v1beta1" => api::scheduling::v1beta1 [PriorityClass],
    "storage.k8s.io/v1" => api::storage::v1 [
        CSIDriver, CSINode, CSIStorageCapacity, StorageClass, VolumeAttachment, VolumeAttributesClass,
    ],
    "storage.k8s.io/v1alpha1" => api::storage::v1alpha1 [
        CSIStorageCapacity, VolumeAttachment, VolumeAttributesClass,
    ],
    "storage.k8s.io/v1beta1" => api::storage::v1beta1 [
        CSIDriver, CSINode, CSIStorageCapacity, StorageClass, VolumeAttachment, VolumeAttributesClass,
    ],
    "storagemigration.k8s.io/v1beta1" => api::storagemigration::v1beta1 [StorageVersionMigration],
    "apiextensions.k8s.io/v1" => apiextensions_apiserver::pkg::apis::apiextensions::v1 [
        CustomResourceDefinition,
    ],
    "apiextensions.k8s.io/v1beta1" => apiextensions_apiserver::pkg::apis::apiextensions::v1beta1 [
        CustomResourceDefinition,
    ],
    "meta.k8s.io/v1" => apimachinery::pkg::apis::meta::v1 [PartialObjectMetadata],
    "apiregistration.k8s.io/v1" => kube_aggregator::pkg::apis::apiregistration::v1 [APIService],
    "apiregistration.k8s.io/v1beta1" => kube_aggregator::pkg::apis::apiregistration::v1beta1 [APIService],
    "metrics.k8s.io/v1alpha1" => metrics::pkg::apis::metrics::v1alpha1 [NodeMetrics, PodMetrics],
    "metrics.k8s.io/v1beta1" => metrics::pkg::apis::metrics::v1beta1 [NodeMetrics, PodMetrics],
}
