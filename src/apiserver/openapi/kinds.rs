//! Which k8s-openapi type serves each built-in kind, and the generation of
//! `components.schemas` from those types' schemars output, post-processed
//! into the shape kube-apiserver publishes (GVK and patch extensions).

use k8s_openapi::schemars::generate::{SchemaGenerator, SchemaSettings};
use k8s_openapi::schemars::JsonSchema;
use k8s_openapi::Resource;
use serde_json::{json, Map, Value};

use crate::apiserver::strategic::meta;

/// A built-in kind and the function that registers its schema.
pub struct BuiltinKind {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub schema_name: fn() -> String,
    pub register: fn(&mut SchemaGenerator),
}

fn entry<T: Resource + JsonSchema>() -> BuiltinKind {
    BuiltinKind {
        group: T::GROUP,
        version: T::VERSION,
        kind: T::KIND,
        schema_name: || T::schema_name().into_owned(),
        register: |g| {
            g.subschema_for::<T>();
        },
    }
}

macro_rules! builtin_kinds {
    ($($path:path),* $(,)?) => {
        /// Every built-in kind k8s-openapi knows, for Kubernetes 1.33.
        pub fn builtin_kinds() -> &'static [BuiltinKind] {
            static KINDS: std::sync::OnceLock<Vec<BuiltinKind>> = std::sync::OnceLock::new();
            KINDS.get_or_init(|| vec![$(entry::<$path>()),*])
        }
    };
}

builtin_kinds!(
    k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration,
    k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicy,
    k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicyBinding,
    k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration,
    k8s_openapi::api::admissionregistration::v1alpha1::MutatingAdmissionPolicy,
    k8s_openapi::api::admissionregistration::v1alpha1::MutatingAdmissionPolicyBinding,
    k8s_openapi::api::admissionregistration::v1beta1::ValidatingAdmissionPolicy,
    k8s_openapi::api::admissionregistration::v1beta1::ValidatingAdmissionPolicyBinding,
    k8s_openapi::api::apiserverinternal::v1alpha1::StorageVersion,
    k8s_openapi::api::apps::v1::ControllerRevision,
    k8s_openapi::api::apps::v1::DaemonSet,
    k8s_openapi::api::apps::v1::Deployment,
    k8s_openapi::api::apps::v1::ReplicaSet,
    k8s_openapi::api::apps::v1::StatefulSet,
    k8s_openapi::api::authentication::v1::SelfSubjectReview,
    k8s_openapi::api::authentication::v1::TokenRequest,
    k8s_openapi::api::authentication::v1::TokenReview,
    k8s_openapi::api::authorization::v1::LocalSubjectAccessReview,
    k8s_openapi::api::authorization::v1::SelfSubjectAccessReview,
    k8s_openapi::api::authorization::v1::SelfSubjectRulesReview,
    k8s_openapi::api::authorization::v1::SubjectAccessReview,
    k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler,
    k8s_openapi::api::autoscaling::v1::Scale,
    k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler,
    k8s_openapi::api::batch::v1::CronJob,
    k8s_openapi::api::batch::v1::Job,
    k8s_openapi::api::certificates::v1::CertificateSigningRequest,
    k8s_openapi::api::certificates::v1alpha1::ClusterTrustBundle,
    k8s_openapi::api::certificates::v1beta1::ClusterTrustBundle,
    k8s_openapi::api::coordination::v1::Lease,
    k8s_openapi::api::coordination::v1alpha2::LeaseCandidate,
    k8s_openapi::api::coordination::v1beta1::LeaseCandidate,
    k8s_openapi::api::core::v1::Binding,
    k8s_openapi::api::core::v1::ComponentStatus,
    k8s_openapi::api::core::v1::ConfigMap,
    k8s_openapi::api::core::v1::Endpoints,
    k8s_openapi::api::core::v1::Event,
    k8s_openapi::api::core::v1::LimitRange,
    k8s_openapi::api::core::v1::Namespace,
    k8s_openapi::api::core::v1::Node,
    k8s_openapi::api::core::v1::PersistentVolume,
    k8s_openapi::api::core::v1::PersistentVolumeClaim,
    k8s_openapi::api::core::v1::Pod,
    k8s_openapi::api::core::v1::PodTemplate,
    k8s_openapi::api::core::v1::ReplicationController,
    k8s_openapi::api::core::v1::ResourceQuota,
    k8s_openapi::api::core::v1::Secret,
    k8s_openapi::api::core::v1::Service,
    k8s_openapi::api::core::v1::ServiceAccount,
    k8s_openapi::api::discovery::v1::EndpointSlice,
    k8s_openapi::api::events::v1::Event,
    k8s_openapi::api::flowcontrol::v1::FlowSchema,
    k8s_openapi::api::flowcontrol::v1::PriorityLevelConfiguration,
    k8s_openapi::api::networking::v1::IPAddress,
    k8s_openapi::api::networking::v1::Ingress,
    k8s_openapi::api::networking::v1::IngressClass,
    k8s_openapi::api::networking::v1::NetworkPolicy,
    k8s_openapi::api::networking::v1::ServiceCIDR,
    k8s_openapi::api::networking::v1beta1::IPAddress,
    k8s_openapi::api::networking::v1beta1::ServiceCIDR,
    k8s_openapi::api::node::v1::RuntimeClass,
    k8s_openapi::api::policy::v1::Eviction,
    k8s_openapi::api::policy::v1::PodDisruptionBudget,
    k8s_openapi::api::rbac::v1::ClusterRole,
    k8s_openapi::api::rbac::v1::ClusterRoleBinding,
    k8s_openapi::api::rbac::v1::Role,
    k8s_openapi::api::rbac::v1::RoleBinding,
    k8s_openapi::api::resource::v1alpha3::DeviceClass,
    k8s_openapi::api::resource::v1alpha3::DeviceTaintRule,
    k8s_openapi::api::resource::v1alpha3::ResourceClaim,
    k8s_openapi::api::resource::v1alpha3::ResourceClaimTemplate,
    k8s_openapi::api::resource::v1alpha3::ResourceSlice,
    k8s_openapi::api::resource::v1beta1::DeviceClass,
    k8s_openapi::api::resource::v1beta1::ResourceClaim,
    k8s_openapi::api::resource::v1beta1::ResourceClaimTemplate,
    k8s_openapi::api::resource::v1beta1::ResourceSlice,
    k8s_openapi::api::resource::v1beta2::DeviceClass,
    k8s_openapi::api::resource::v1beta2::ResourceClaim,
    k8s_openapi::api::resource::v1beta2::ResourceClaimTemplate,
    k8s_openapi::api::resource::v1beta2::ResourceSlice,
    k8s_openapi::api::scheduling::v1::PriorityClass,
    k8s_openapi::api::storage::v1::CSIDriver,
    k8s_openapi::api::storage::v1::CSINode,
    k8s_openapi::api::storage::v1::CSIStorageCapacity,
    k8s_openapi::api::storage::v1::StorageClass,
    k8s_openapi::api::storage::v1::VolumeAttachment,
    k8s_openapi::api::storage::v1alpha1::VolumeAttributesClass,
    k8s_openapi::api::storage::v1beta1::VolumeAttributesClass,
    k8s_openapi::api::storagemigration::v1alpha1::StorageVersionMigration,
    k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService,
);

/// The built-in kind for a group/version/kind, if any.
pub fn find(group: &str, version: &str, kind: &str) -> Option<&'static BuiltinKind> {
    builtin_kinds()
        .iter()
        .find(|k| k.group == group && k.version == version && k.kind == kind)
}

/// A generator using OpenAPI 3.0 conventions (`#/components/schemas/…`,
/// `allOf` around `$ref`s that carry a description, as kube publishes).
pub fn generator() -> SchemaGenerator {
    SchemaSettings::openapi3().into_generator()
}

/// Register the meta types every group-version document references.
pub fn register_common(g: &mut SchemaGenerator) {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta_v1;
    g.subschema_for::<meta_v1::ListMeta>();
    g.subschema_for::<meta_v1::Status>();
    g.subschema_for::<meta_v1::DeleteOptions>();
}

/// Turn the generator's definitions into `components.schemas`: add
/// `x-kubernetes-group-version-kind` to kinds and the patch/list
/// extensions to tagged fields.
pub fn finish(mut g: SchemaGenerator) -> Map<String, Value> {
    let mut defs = g.take_definitions(true);
    for k in builtin_kinds() {
        if let Some(Value::Object(schema)) = defs.get_mut(&(k.schema_name)()) {
            schema.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{"group": k.group, "kind": k.kind, "version": k.version}]),
            );
        }
    }
    for m in meta::FIELDS {
        let Some(prop) = defs
            .get_mut(m.owner)
            .and_then(|s| s.pointer_mut(&format!("/properties/{}", m.field)))
        else {
            continue;
        };
        let Some(prop) = prop.as_object_mut() else {
            continue;
        };
        if !m.strategy.is_empty() {
            prop.insert("x-kubernetes-patch-strategy".into(), m.strategy.into());
        }
        if !m.merge_key.is_empty() {
            prop.insert("x-kubernetes-patch-merge-key".into(), m.merge_key.into());
        }
        if !m.list_type.is_empty() {
            prop.insert("x-kubernetes-list-type".into(), m.list_type.into());
        }
        if !m.map_keys.is_empty() {
            prop.insert("x-kubernetes-list-map-keys".into(), json!(m.map_keys));
        }
    }
    for schema in defs.values_mut() {
        mark_int_or_string(schema);
    }
    defs
}

/// kube publishes IntOrString and Quantity with `format: int-or-string`
/// besides the extension; explain prints the format as the field type.
fn mark_int_or_string(schema: &mut Value) {
    if let Some(obj) = schema.as_object_mut() {
        if obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
            obj.entry("format")
                .or_insert_with(|| "int-or-string".into());
        }
    }
}

/// The schema of a kind's list type (`DeploymentList`), which k8s-openapi
/// models generically.
pub fn list_schema(group: &str, version: &str, kind: &str, item_schema: &str) -> Value {
    json!({
        "description": format!("{kind}List is a list of {kind} objects."),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"description": "APIVersion defines the versioned schema of this representation of an object.", "type": "string"},
            "items": {"description": format!("List of {kind} objects."), "type": "array", "items": {"$ref": format!("#/components/schemas/{item_schema}")}},
            "kind": {"description": "Kind is a string value representing the REST resource this object represents.", "type": "string"},
            "metadata": {"allOf": [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta"}], "description": "Standard list metadata."}
        },
        "x-kubernetes-group-version-kind": [{"group": group, "kind": format!("{kind}List"), "version": version}]
    })
}

/// The schema name a custom (unknown) kind gets, like kube's
/// reversed-group naming for CRDs: `com.example.v1.Widget`.
pub fn custom_schema_name(group: &str, version: &str, kind: &str) -> String {
    let reversed: Vec<&str> = group.split('.').rev().collect();
    format!("{}.{version}.{kind}", reversed.join("."))
}

/// A permissive schema for kinds without a known type (CRDs).
pub fn custom_schema(group: &str, version: &str, kind: &str) -> Value {
    json!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"allOf": [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}]}
        },
        "x-kubernetes-group-version-kind": [{"group": group, "kind": kind, "version": version}]
    })
}
