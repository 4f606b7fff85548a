//! Printers for networking, RBAC, certificates, storage, scheduling,
//! admission and aggregation kinds.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::core::load_balancer;
use super::util::*;

fn name(obj: &Value) -> Value {
    json!(s(obj, "/metadata/name"))
}

pub(super) fn ingress(now: DateTime<Utc>, obj: &Value) -> Vec<Value> {
    let rules = arr(obj, "/spec/rules");
    const MAX: usize = 3;
    let mut hosts: Vec<&str> = Vec::new();
    let mut more = false;
    for rule in rules {
        if hosts.len() == MAX {
            more = true;
        }
        let host = s(rule, "/host");
        if !more && !host.is_empty() {
            hosts.push(host);
        }
    }
    let hosts = if hosts.is_empty() {
        "*".to_string()
    } else if more {
        format!("{} + {} more...", hosts.join(","), rules.len() - MAX)
    } else {
        hosts.join(",")
    };
    let ports = if arr(obj, "/spec/tls").is_empty() {
        "80"
    } else {
        "80, 443"
    };
    vec![
        name(obj),
        json!(or(s(obj, "/spec/ingressClassName"), "<none>")),
        json!(hosts),
        json!(load_balancer(obj)),
        json!(ports),
        json!(age(now, obj)),
    ]
}

pub(super) fn ingress_class(now: DateTime<Utc>, obj: &Value) -> Vec<Value> {
    let parameters = match obj.pointer("/spec/parameters").filter(|p| p.is_object()) {
        None => "<none>".to_string(),
        Some(p) => {
            let mut text = s(p, "/kind").to_string();
            if let Some(group) = p.get("apiGroup").and_then(Value::as_str) {
                text = format!("{text}.{group}");
            }
            format!("{text}/{}", s(p, "/name"))
        }
    };
    vec![
        name(obj),
        json!(s(obj, "/spec/controller")),
        json!(parameters),
        json!(age(now, obj)),
    ]
}

pub(super) fn network_policy(now: DateTime<Utc>, obj: &Value) -> Vec<Value> {
    vec![
        name(obj),
        json!(format_selector(obj.pointer("/spec/podSelector"))),
        json!(age(now, obj)),
    ]
}

/// `rbac.SubjectsStrings`: users, groups and "namespace/name" service accounts.
fn subjects(obj: &Value) -> (String, String, String) {
    let (mut users, mut groups, mut sas) = (Vec::new(), Vec::new(), Vec::new());
    for subject in arr(obj, "/subjects") {
        match s(subject, "/kind") {
            "ServiceAccount" => sas.push(format!(
                "{}/{}",
                s(subject, "/namespace"),
                s(subject, "/name")
            )),
            "User" => users.push(s(subject, "/name").to_string()),
            "Group" => groups.push(s(subject, "/name").to_string()),
            _ => {}
        }
    }
    (users.join(", "), groups.join(", "), sas.join(", "))
}

/// RoleBinding and ClusterRoleBinding.
pub(super) fn role_binding(now: DateTime<Utc>, obj: &Value) -> Vec<Value> {
    let (users, groups, sas) = subjects(obj);
    vec![
        name(obj),
        json!(format!(
            "{}/{}",
            s(obj, "/roleRef/kind"),
            s(obj, "/roleRef/name")
        )),
        json!(age(now, obj)),
        json!(users),
        json!(groups),
        json!(sas),
    ]
}

pub(super) fn certificate_signing_request(now: DateTime<Utc>, obj: &Value) -> Vec<Value> {
    let has = |t: &str| {
        arr(obj, "/status/conditions")
            .iter()
            .any(|c| s(c, "/type") == t)
    };
    let mut status = if has("Denied") {
        "Denied".to_string()
    } else if has("Approved") {
        "Approved".to_string()
    } else {
        "Pending".to_string()
    };
    if has("Failed") {
        status.push_str(",Failed");
    }
    if !s(obj, "/status/certificate").is_empty() {
        status.push_str(",Issued");
    }
    let requested = oi(obj, "/spec/expirationSeconds").map_or("<none>".to_string(), |secs| {
        human_duration(chrono::Duration::seconds(secs))
    });
    vec![
        name(obj),
        json!(age(now, obj)),
        json!(or(s(obj, "/spec/signerName"), "<none>")),
        json!(s(obj, "/spec/username")),
        json!(requested),
        json!(status),
    ]
}

pub(super) fn lease(now: DateTime<Utc>, obj: &Value) -> Vec<Value> {
    vec![
        name(obj),
        json!(s(obj, "/spec/holderIdentity")),
        json!(age(now, obj)),
    ]
}

pub(super) fn storage_class(now: DateTime<Utc>, obj: &Value) -> Vec<Value> {
    let annotations = [
        "storageclass.kubernetes.io/is-default-class",
        "storageclass.beta.kubernetes.io/is-default-class",
    ];
    let is_default = annotations.iter().any(|a| {
        obj.pointer("/metadata/annotations")
            .and_then(|m| m.get(*a))
            .and_then(Value::as_str)
            == Some("true")
    });
    let mut title = s(obj, "/metadata/name").to_string();
    if is_default {
        title.push_str(" (default)");
    }
    vec![
        json!(title),
        json!(s(obj, "/provisioner")),
        json!(or(s(obj, "/reclaimPolicy"), "Delete")),
        json!(or(s(obj, "/volumeBindingMode"), "Immediate")),
        json!(ob(obj, "/allowVolumeExpansion").unwrap_or(false)),
        json!(age(now, obj)),
    ]
}

pub(super) fn priority_class(now: DateTime<Utc>, obj: &Value) -> Vec<Value> {
    vec![
        name(obj),
        json!(i(obj, "/value")),
        json!(ob(obj, "/globalDefault").unwrap_or(false)),
        json!(age(now, obj)),
        json!(s(obj, "/preemptionPolicy")),
    ]
}

pub(super) fn runtime_class(now: DateTime<Utc>, obj: &Value) -> Vec<Value> {
    vec![name(obj), json!(s(obj, "/handler")), json!(age(now, obj))]
}

pub(super) fn volume_attachment(now: DateTime<Utc>, obj: &Value) -> Vec<Value> {
    vec![
        name(obj),
        json!(s(obj, "/spec/attacher")),
        json!(s(obj, "/spec/source/persistentVolumeName")),
        json!(s(obj, "/spec/nodeName")),
        json!(ob(obj, "/status/attached").unwrap_or(false)),
        json!(age(now, obj)),
    ]
}

pub(super) fn endpoint_slice(now: DateTime<Utc>, obj: &Value) -> Vec<Value> {
    let ports: Vec<String> = arr(obj, "/ports")
        .iter()
        .map(
            |p| match (oi(p, "/port"), p.get("name").and_then(Value::as_str)) {
                (Some(port), _) => port.to_string(),
                (None, Some(name)) => name.to_string(),
                (None, None) => "*".to_string(),
            },
        )
        .collect();
    let addresses: Vec<String> = arr(obj, "/endpoints")
        .iter()
        .flat_map(|e| {
            arr(e, "/addresses")
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
        })
        .collect();
    vec![
        name(obj),
        json!(s(obj, "/addressType")),
        json!(list_with_more(&ports, ports.len(), "<unset>")),
        json!(list_with_more(&addresses, addresses.len(), "<unset>")),
        json!(age(now, obj)),
    ]
}

pub(super) fn csi_node(now: DateTime<Utc>, obj: &Value) -> Vec<Value> {
    vec![
        name(obj),
        json!(arr(obj, "/spec/drivers").len() as i64),
        json!(age(now, obj)),
    ]
}

pub(super) fn csi_driver(now: DateTime<Utc>, obj: &Value) -> Vec<Value> {
    let modes: Vec<&str> = arr(obj, "/spec/volumeLifecycleModes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let tokens = match obj.pointer("/spec/tokenRequests").and_then(Value::as_array) {
        None => "<unset>".to_string(),
        Some(list) => list
            .iter()
            .map(|t| s(t, "/audience"))
            .collect::<Vec<_>>()
            .join(","),
    };
    vec![
        name(obj),
        json!(ob(obj, "/spec/attachRequired").unwrap_or(true)),
        json!(ob(obj, "/spec/podInfoOnMount").unwrap_or(false)),
        json!(ob(obj, "/spec/storageCapacity").unwrap_or(false)),
        json!(tokens),
        json!(ob(obj, "/spec/requiresRepublish").unwrap_or(false)),
        json!(if modes.is_empty() {
            "<none>".to_string()
        } else {
            modes.join(",")
        }),
        json!(age(now, obj)),
    ]
}

pub(super) fn csi_storage_capacity(_now: DateTime<Utc>, obj: &Value) -> Vec<Value> {
    let capacity = match obj.get("capacity") {
        Some(v) if !v.is_null() => quantity(Some(v)),
        _ => "<unset>".to_string(),
    };
    vec![
        name(obj),
        json!(s(obj, "/storageClassName")),
        json!(capacity),
    ]
}

pub(super) fn webhook_configuration(now: DateTime<Utc>, obj: &Value) -> Vec<Value> {
    vec![
        name(obj),
        json!(arr(obj, "/webhooks").len() as i64),
        json!(age(now, obj)),
    ]
}

pub(super) fn validating_admission_policy(now: DateTime<Utc>, obj: &Value) -> Vec<Value> {
    let param_kind = match obj.pointer("/spec/paramKind").filter(|p| p.is_object()) {
        Some(p) => format!("{}/{}", s(p, "/apiVersion"), s(p, "/kind")),
        None => "<unset>".to_string(),
    };
    vec![
        name(obj),
        json!(arr(obj, "/spec/validations").len() as i64),
        json!(param_kind),
        json!(age(now, obj)),
    ]
}

pub(super) fn validating_admission_policy_binding(now: DateTime<Utc>, obj: &Value) -> Vec<Value> {
    let param = match obj.pointer("/spec/paramRef").filter(|p| p.is_object()) {
        None => "<unset>".to_string(),
        Some(p) if !s(p, "/name").is_empty() => {
            let ns = s(p, "/namespace");
            if ns.is_empty() {
                format!("*/{}", s(p, "/name"))
            } else {
                format!("{ns}/{}", s(p, "/name"))
            }
        }
        Some(p) if p.get("selector").is_some_and(Value::is_object) => {
            selector_string(p.get("selector"))
        }
        Some(_) => "<unset>".to_string(),
    };
    vec![
        name(obj),
        json!(s(obj, "/spec/policyName")),
        json!(param),
        json!(age(now, obj)),
    ]
}

/// kube-aggregator's APIService convertor: the backing service or "Local",
/// and the Available condition with its reason when not True.
pub(super) fn api_service(now: DateTime<Utc>, obj: &Value) -> Vec<Value> {
    let service = match obj.pointer("/spec/service").filter(|v| v.is_object()) {
        Some(svc) => format!("{}/{}", s(svc, "/namespace"), s(svc, "/name")),
        None => "Local".to_string(),
    };
    let available = arr(obj, "/status/conditions")
        .iter()
        .find(|c| s(c, "/type") == "Available")
        .map_or("Unknown".to_string(), |c| {
            let (status, reason) = (s(c, "/status"), s(c, "/reason"));
            if status == "True" || reason.is_empty() {
                status.to_string()
            } else {
                format!("{status} ({reason})")
            }
        });
    vec![
        name(obj),
        json!(service),
        json!(available),
        json!(age(now, obj)),
    ]
}
