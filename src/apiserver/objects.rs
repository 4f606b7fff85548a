//! Object bookkeeping shared by the handlers: what is stored (JSON without
//! `resourceVersion`), what is served (with `resourceVersion` = the record's
//! `mod_revision`), system-set metadata, `generation`, and name validation.
//!
//! Partial: kind-specific defaulting and validation (Pod defaults, Service IP
//! allocation…) are not done here; names are checked against DNS-1123 rules.

use rand::Rng;
use serde_json::{json, Map, Value};

use super::registry::ResourceDef;
use super::status::{ApiStatus, Cause};
use crate::store::Record;

/// Resources whose strategies maintain `metadata.generation` (bumped on any
/// change outside metadata and status), plus every custom resource.
const GENERATION_RESOURCES: &[&str] = &[
    "deployments.apps",
    "replicasets.apps",
    "statefulsets.apps",
    "daemonsets.apps",
    "controllerrevisions.apps",
    "jobs.batch",
    "cronjobs.batch",
    "replicationcontrollers",
    "ingresses.networking.k8s.io",
    "ingressclasses.networking.k8s.io",
    "networkpolicies.networking.k8s.io",
    "poddisruptionbudgets.policy",
    "customresourcedefinitions.apiextensions.k8s.io",
    "horizontalpodautoscalers.autoscaling",
    "validatingwebhookconfigurations.admissionregistration.k8s.io",
    "mutatingwebhookconfigurations.admissionregistration.k8s.io",
    "validatingadmissionpolicies.admissionregistration.k8s.io",
    "flowschemas.flowcontrol.apiserver.k8s.io",
    "prioritylevelconfigurations.flowcontrol.apiserver.k8s.io",
];

/// Groups served by Kubernetes itself; anything else is a custom resource.
fn is_builtin_group(group: &str) -> bool {
    matches!(
        group,
        "" | "apps" | "batch" | "autoscaling" | "policy" | "extensions"
    ) || (group.ends_with(".k8s.io") && !group.contains(".x-k8s.io"))
}

pub fn tracks_generation(def: &ResourceDef) -> bool {
    GENERATION_RESOURCES.contains(&def.group_resource().as_str()) || !is_builtin_group(&def.group)
}

/// Kinds for which PUT on a missing object creates it (Kubernetes'
/// `AllowCreateOnUpdate`).
pub fn allows_create_on_update(def: &ResourceDef) -> bool {
    matches!(
        def.group_resource().as_str(),
        "events"
            | "events.events.k8s.io"
            | "endpoints"
            | "endpointslices.discovery.k8s.io"
            | "limitranges"
            | "leases.coordination.k8s.io"
    )
}

/// Whether `.status` is owned by the status subresource.
pub fn has_status_subresource(def: &ResourceDef) -> bool {
    def.has_subresource("status")
}

/// The served form of a stored record.
pub fn from_record(def: &ResourceDef, rec: &Record) -> Result<Value, ApiStatus> {
    let mut v: Value = serde_json::from_slice(&rec.value).map_err(|e| {
        ApiStatus::internal(format!("failed to decode stored object {}: {e}", rec.key))
    })?;
    v = super::events::for_reading(def, v);
    set_type(def, &mut v);
    set_resource_version(&mut v, rec.mod_revision);
    Ok(v)
}

/// Sets `apiVersion`/`kind` to the served version (keys are shared across
/// versions of one group-resource).
pub fn set_type(def: &ResourceDef, v: &mut Value) {
    if let Some(o) = v.as_object_mut() {
        o.insert("apiVersion".into(), json!(def.api_version()));
        o.insert("kind".into(), json!(def.kind));
    }
}

pub fn set_resource_version(v: &mut Value, rev: i64) {
    meta_mut(v).insert("resourceVersion".into(), json!(rev.to_string()));
}

/// The stored bytes: the object without `resourceVersion`.
pub fn to_stored(v: &Value) -> Vec<u8> {
    let mut v = v.clone();
    meta_mut(&mut v).remove("resourceVersion");
    serde_json::to_vec(&v).unwrap_or_default()
}

/// The stored bytes of an object served as `def`: Events in core/v1's
/// shape whatever group they came through (see `events`), the rest as is.
pub fn to_stored_for(def: &ResourceDef, v: &Value) -> Vec<u8> {
    match super::events::for_storage(def, v) {
        Some(core) => to_stored(&core),
        None => to_stored(v),
    }
}

/// `metadata`, created if missing.
pub fn meta_mut(v: &mut Value) -> &mut Map<String, Value> {
    if !v.get("metadata").is_some_and(Value::is_object) {
        v["metadata"] = json!({});
    }
    v["metadata"]
        .as_object_mut()
        .expect("metadata is an object")
}

pub fn meta_str<'a>(v: &'a Value, field: &str) -> Option<&'a str> {
    v.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

pub fn now_rfc3339() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub fn rfc3339_in(secs: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(secs))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Kubernetes' 5-character generateName suffix (consonants and digits).
pub fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::thread_rng();
    (0..5)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Everything but `metadata` and `status`: a change here bumps `generation`.
pub fn spec_part(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        for k in ["metadata", "status", "apiVersion", "kind"] {
            o.remove(k);
        }
    }
    v
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// Kinds whose names must be DNS-1123 labels rather than subdomains.
fn needs_label_name(def: &ResourceDef) -> bool {
    matches!(def.group_resource().as_str(), "namespaces" | "services")
}

/// Checks the name of a new object, as kube-apiserver's `ValidateObjectMeta`.
pub fn validate_name(def: &ResourceDef, name: &str) -> Result<(), ApiStatus> {
    // RBAC and a few others allow path-segment names; keep to DNS rules
    // elsewhere, which is what kubectl users meet.
    let lenient = def.group == "rbac.authorization.k8s.io";
    let ok = if lenient {
        !name.is_empty()
            && name != "."
            && name != ".."
            && !name.contains('/')
            && !name.contains('%')
    } else if needs_label_name(def) {
        is_dns_label(name)
    } else {
        is_dns_subdomain(name)
    };
    if ok {
        return Ok(());
    }
    let rule = if needs_label_name(def) {
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and \
         end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is \
         '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
    } else {
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must \
         start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is \
         '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
    };
    Err(ApiStatus::invalid(
        &def.kind,
        &def.group,
        name,
        vec![Cause {
            reason: "FieldValueInvalid".into(),
            message: format!("Invalid value: \"{name}\": {rule}"),
            field: "metadata.name".into(),
        }],
    ))
}

/// The strings of a JSON array (other items skipped); empty when `v` is
/// missing or not an array.
pub fn string_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// The `metadata.finalizers` list.
pub fn finalizers(v: &Value) -> Vec<String> {
    string_list(v.pointer("/metadata/finalizers"))
}

pub fn set_finalizers(v: &mut Value, list: &[String]) {
    let m = meta_mut(v);
    if list.is_empty() {
        m.remove("finalizers");
    } else {
        m.insert("finalizers".into(), json!(list));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(group: &str, plural: &str) -> ResourceDef {
        ResourceDef::for_test(group, plural, true)
    }

    #[test]
    fn generation_kinds() {
        assert!(tracks_generation(&def("apps", "deployments")));
        assert!(!tracks_generation(&def("", "configmaps")));
        assert!(!tracks_generation(&def("", "pods")));
        assert!(tracks_generation(&def("example.com", "widgets")));
    }

    #[test]
    fn names() {
        assert!(validate_name(&def("", "configmaps"), "a.b-c").is_ok());
        assert_eq!(
            validate_name(&def("", "configmaps"), "Bad")
                .unwrap_err()
                .code,
            422
        );
        assert!(validate_name(&def("", "namespaces"), "a.b").is_err());
        assert!(validate_name(
            &def("rbac.authorization.k8s.io", "clusterroles"),
            "system:x"
        )
        .is_ok());
    }

    #[test]
    fn stored_form_has_no_resource_version() {
        let v = json!({"metadata": {"name": "x", "resourceVersion": "5"}});
        let stored: Value = serde_json::from_slice(&to_stored(&v)).unwrap();
        assert!(stored["metadata"].get("resourceVersion").is_none());
        let rec = Record {
            key: "k".into(),
            value: to_stored(&v),
            create_revision: 1,
            mod_revision: 7,
        };
        let served = from_record(&def("", "configmaps"), &rec).unwrap();
        assert_eq!(served["metadata"]["resourceVersion"], "7");
        assert_eq!(served["kind"], "K");
    }

    #[test]
    fn suffix_shape() {
        let s = random_suffix();
        assert_eq!(s.len(), 5);
        assert!(s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
    }
}
