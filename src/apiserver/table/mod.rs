//! Server-side printing: list results as `meta.k8s.io/v1` `Table`s, the form
//! `kubectl get` asks for (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`).
//!
//! Column definitions come from the resource's registry entry (built-in kinds
//! carry kube-apiserver's printer columns, see `columns_for`); cells come from
//! a printer per built-in kind that mirrors kube-apiserver's
//! `pkg/printers/internalversion/printers.go` of Kubernetes 1.32, always with
//! `Wide: true` as the server does. Kinds without a printer get the default
//! convertor's cells (Name, Created At) or, for custom resources, Name and Age.
//!
//! Custom resources' `additionalPrinterColumns` carry a `json_path`: simple
//! dotted paths (`.spec.cronSpec`, `.metadata.creationTimestamp`, `.a[0].b`)
//! are evaluated; `date` columns print as ages. Partial: JSONPath filters,
//! wildcards and recursive descent give `null` cells (kubectl prints
//! `<none>`).

mod apps;
mod columns;
mod core;
mod descriptions;
mod other;
mod pod;
mod util;

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

use crate::apiserver::registry::ResourceDef;
pub use columns::{columns_for, custom_resource_columns, default_columns};
pub use util::human_duration;

/// What each row's `object` carries (`includeObject` query parameter).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IncludeObject {
    /// No object.
    None,
    /// A `PartialObjectMetadata` with the object's metadata (the default).
    #[default]
    Metadata,
    /// The full object.
    Object,
}

/// An `includeObject` value the server does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unrecognized includeObject value: {0:?}")]
pub struct UnknownIncludeObject(pub String);

impl FromStr for IncludeObject {
    type Err = UnknownIncludeObject;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "None" => Ok(IncludeObject::None),
            "Metadata" | "" => Ok(IncludeObject::Metadata),
            "Object" => Ok(IncludeObject::Object),
            other => Err(UnknownIncludeObject(other.to_string())),
        }
    }
}

impl IncludeObject {
    /// Parse the optional query value; absent means `Metadata`. The error's
    /// text is the message of kube's 400 BadRequest.
    pub fn from_query(value: Option<&str>) -> Result<Self, UnknownIncludeObject> {
        value.map_or(Ok(IncludeObject::Metadata), str::parse)
    }
}

impl fmt::Display for IncludeObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IncludeObject::None => "None",
            IncludeObject::Metadata => "Metadata",
            IncludeObject::Object => "Object",
        })
    }
}

/// A `meta.k8s.io/v1` `Table` of `items` (objects of `def`'s kind), with the
/// list's `resourceVersion`, `continue` token and `remainingItemCount`.
pub fn to_table(
    def: &ResourceDef,
    items: &[Value],
    resource_version: &str,
    continue_token: Option<&str>,
    remaining: Option<i64>,
    include_object: IncludeObject,
) -> Value {
    to_table_at(
        Utc::now(),
        def,
        items,
        resource_version,
        continue_token,
        remaining,
        include_object,
    )
}

/// `to_table` with an explicit "now" for ages (tests).
pub fn to_table_at(
    now: DateTime<Utc>,
    def: &ResourceDef,
    items: &[Value],
    resource_version: &str,
    continue_token: Option<&str>,
    remaining: Option<i64>,
    include_object: IncludeObject,
) -> Value {
    let mut metadata = Map::new();
    if !resource_version.is_empty() {
        metadata.insert("resourceVersion".into(), json!(resource_version));
    }
    if let Some(token) = continue_token.filter(|t| !t.is_empty()) {
        metadata.insert("continue".into(), json!(token));
    }
    if let Some(n) = remaining {
        metadata.insert("remainingItemCount".into(), json!(n));
    }
    let column_defs: Vec<Value> = def
        .columns
        .iter()
        .map(|c| {
            json!({"name": c.name, "type": c.type_, "format": c.format,
                   "description": c.description, "priority": c.priority})
        })
        .collect();
    let rows: Vec<Value> = items
        .iter()
        .map(|item| row(now, def, item, include_object))
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": column_defs,
        "rows": rows,
    })
}

/// Drop the column definitions of a table, as kube does for every watch event
/// after the first (`columnDefinitions: null`).
pub fn strip_column_definitions(table: &mut Value) {
    if let Some(obj) = table.as_object_mut() {
        obj.insert("columnDefinitions".into(), Value::Null);
    }
}

fn row(
    now: DateTime<Utc>,
    def: &ResourceDef,
    item: &Value,
    include_object: IncludeObject,
) -> Value {
    let (cells, conditions) = match print(now, def, item) {
        Some(printed) if printed.cells.len() == def.columns.len() => {
            (printed.cells, printed.conditions)
        }
        _ => (generic_cells(now, def, item), None),
    };
    let mut row = Map::new();
    row.insert("cells".into(), Value::Array(cells));
    if let Some(conditions) = conditions {
        row.insert("conditions".into(), conditions);
    }
    match include_object {
        IncludeObject::None => {}
        IncludeObject::Metadata => {
            let metadata = item.get("metadata").cloned().unwrap_or_else(|| json!({}));
            row.insert(
                "object".into(),
                json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": metadata}),
            );
        }
        IncludeObject::Object => {
            row.insert("object".into(), item.clone());
        }
    }
    Value::Object(row)
}

/// Cells by column name, for kinds without a printer (default convertor,
/// custom resources) or with columns this server does not know.
fn generic_cells(now: DateTime<Utc>, def: &ResourceDef, item: &Value) -> Vec<Value> {
    let created = util::time(item, "/metadata/creationTimestamp");
    def.columns
        .iter()
        .map(|c| match (c.name.as_str(), c.type_.as_str()) {
            (_, type_) if c.json_path.is_some() => {
                let v = json_path(item, c.json_path.as_deref().unwrap_or_default());
                match (type_, v) {
                    (_, None | Some(Value::Null)) => Value::Null,
                    ("date", Some(Value::String(t))) => {
                        json!(util::since(now, util::parse_time(&t)))
                    }
                    (_, Some(v)) => v,
                }
            }
            ("Name", _) => json!(util::s(item, "/metadata/name")),
            ("Created At", _) => {
                // The default convertor formats Go's zero time for a missing timestamp.
                json!(created.map_or("0001-01-01T00:00:00Z".to_string(), |t| t
                    .to_rfc3339_opts(SecondsFormat::Secs, true)))
            }
            ("Age", _) => json!(util::since(now, created)),
            _ => Value::Null,
        })
        .collect()
}

/// Evaluates a simple JSONPath (`.spec.a.b`, `.items[0].name`, with
/// optional `{}` braces); `None` when a step is missing or the path uses
/// anything else.
pub fn json_path(obj: &Value, path: &str) -> Option<Value> {
    let path = path.trim();
    let path = path
        .strip_prefix('{')
        .and_then(|p| p.strip_suffix('}'))
        .unwrap_or(path);
    let path = path.strip_prefix('$').unwrap_or(path);
    let mut cur = obj;
    for step in path.split('.').filter(|s| !s.is_empty()) {
        let (field, indexes) = match step.find('[') {
            Some(i) => (&step[..i], &step[i..]),
            None => (step, ""),
        };
        if !field.is_empty() {
            cur = cur.get(field)?;
        }
        for index in indexes.split('[').filter(|s| !s.is_empty()) {
            let n: usize = index.strip_suffix(']')?.parse().ok()?;
            cur = cur.get(n)?;
        }
    }
    Some(cur.clone())
}

fn print(now: DateTime<Utc>, def: &ResourceDef, obj: &Value) -> Option<pod::Printed> {
    let cells = match (def.group.as_str(), def.kind.as_str()) {
        ("", "Pod") => return Some(pod::pod(now, obj)),
        ("", "PodTemplate") => core::pod_template(now, obj),
        ("", "ReplicationController") => core::replication_controller(now, obj),
        ("", "Service") => core::service(now, obj),
        ("", "Endpoints") => core::endpoints(now, obj),
        ("", "Node") => core::node(now, obj),
        ("", "Event") => core::event(now, obj, false),
        ("events.k8s.io", "Event") => core::event(now, obj, true),
        ("", "Namespace") => core::namespace(now, obj),
        ("", "Secret") => core::secret(now, obj),
        ("", "ComponentStatus") => core::component_status(obj),
        ("", "ConfigMap") => core::config_map(now, obj),
        ("", "ServiceAccount") => core::service_account(now, obj),
        ("", "PersistentVolume") => core::persistent_volume(now, obj),
        ("", "PersistentVolumeClaim") => core::persistent_volume_claim(now, obj),
        ("", "ResourceQuota") => core::resource_quota(now, obj),
        ("apps", "Deployment") => apps::deployment(now, obj),
        ("apps", "ReplicaSet") => apps::replica_set(now, obj),
        ("apps", "DaemonSet") => apps::daemon_set(now, obj),
        ("apps", "StatefulSet") => apps::stateful_set(now, obj),
        ("apps", "ControllerRevision") => apps::controller_revision(now, obj),
        ("batch", "Job") => apps::job(now, obj),
        ("batch", "CronJob") => apps::cron_job(now, obj),
        ("autoscaling", "HorizontalPodAutoscaler") => apps::horizontal_pod_autoscaler(now, obj),
        ("policy", "PodDisruptionBudget") => apps::pod_disruption_budget(now, obj),
        ("networking.k8s.io", "Ingress") => other::ingress(now, obj),
        ("networking.k8s.io", "IngressClass") => other::ingress_class(now, obj),
        ("networking.k8s.io", "NetworkPolicy") => other::network_policy(now, obj),
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            other::role_binding(now, obj)
        }
        ("certificates.k8s.io", "CertificateSigningRequest") => {
            other::certificate_signing_request(now, obj)
        }
        ("coordination.k8s.io", "Lease") => other::lease(now, obj),
        ("storage.k8s.io", "StorageClass") => other::storage_class(now, obj),
        ("storage.k8s.io", "VolumeAttachment") => other::volume_attachment(now, obj),
        ("storage.k8s.io", "CSINode") => other::csi_node(now, obj),
        ("storage.k8s.io", "CSIDriver") => other::csi_driver(now, obj),
        ("storage.k8s.io", "CSIStorageCapacity") => other::csi_storage_capacity(now, obj),
        ("scheduling.k8s.io", "PriorityClass") => other::priority_class(now, obj),
        ("node.k8s.io", "RuntimeClass") => other::runtime_class(now, obj),
        ("discovery.k8s.io", "EndpointSlice") => other::endpoint_slice(now, obj),
        (
            "admissionregistration.k8s.io",
            "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration",
        ) => other::webhook_configuration(now, obj),
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy") => {
            other::validating_admission_policy(now, obj)
        }
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding") => {
            other::validating_admission_policy_binding(now, obj)
        }
        ("apiregistration.k8s.io", "APIService") => other::api_service(now, obj),
        _ => return None,
    };
    Some(cells.into())
}

#[cfg(test)]
mod tests;
