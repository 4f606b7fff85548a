//! Defaults of the non-workload kinds: Service (`SetDefaults_Service` and
//! the IP-family fields the service REST storage fills), Namespace, PVC/PV,
//! Secret, Endpoints, EndpointSlice, networking, autoscaling, scheduling,
//! storage, RBAC bindings and CRDs.

use serde_json::{json, Value};

use super::{child, default, default_str, each, existing};

pub(super) fn service(obj: &mut Value, old: Option<&Value>) {
    let Some(s) = existing(obj, "spec") else {
        return;
    };
    let Some(m) = s.as_object_mut() else { return };
    default_str(m, "sessionAffinity", "None");
    if m["sessionAffinity"] == "None" {
        m.remove("sessionAffinityConfig");
    } else if m["sessionAffinity"] == "ClientIP"
        && m.get("sessionAffinityConfig")
            .and_then(|c| c.pointer("/clientIP/timeoutSeconds"))
            .is_none_or(Value::is_null)
    {
        m.insert(
            "sessionAffinityConfig".into(),
            json!({"clientIP": {"timeoutSeconds": 10800}}),
        );
    }
    default_str(m, "type", "ClusterIP");
    let ty = m["type"].as_str().unwrap_or("").to_string();
    // An update that leaves out the allocated IP keeps it, as kube's
    // service storage does (`patchAllocatedValues`).
    if let Some(old_spec) = old.and_then(|o| o.get("spec")) {
        let old_ty = old_spec["type"].as_str().unwrap_or("");
        if ty != "ExternalName" && old_ty != "ExternalName" {
            for k in ["clusterIP", "clusterIPs"] {
                let empty = match m.get(k) {
                    None | Some(Value::Null) => true,
                    Some(Value::String(s)) => s.is_empty(),
                    Some(Value::Array(a)) => a.is_empty(),
                    _ => false,
                };
                if empty {
                    if let Some(v) = old_spec.get(k) {
                        m.insert(k.into(), v.clone());
                    }
                }
            }
        }
    }
    for p in m
        .get_mut("ports")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        let Some(p) = p.as_object_mut() else { continue };
        default_str(p, "protocol", "TCP");
        let unset = match p.get("targetPort") {
            None | Some(Value::Null) => true,
            Some(Value::String(s)) => s.is_empty(),
            Some(v) => v.as_i64() == Some(0),
        };
        if unset {
            let port = p.get("port").cloned().unwrap_or(json!(0));
            p.insert("targetPort".into(), port);
        }
    }
    let has_external_ips = m
        .get("externalIPs")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    let externally_accessible =
        ty == "LoadBalancer" || ty == "NodePort" || (ty == "ClusterIP" && has_external_ips);
    if externally_accessible {
        default_str(m, "externalTrafficPolicy", "Cluster");
    }
    if matches!(ty.as_str(), "ClusterIP" | "NodePort" | "LoadBalancer") {
        default(m, "internalTrafficPolicy", json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        default(m, "allocateLoadBalancerNodePorts", json!(true));
    }
    if ty != "ExternalName" {
        // rk3s serves single-stack IPv4.
        default(m, "ipFamilyPolicy", json!("SingleStack"));
        default(m, "ipFamilies", json!(["IPv4"]));
    }
    if let Some(status) = child(obj, "status") {
        default(status, "loadBalancer", json!({}));
    }
}

pub(super) fn namespace(obj: &mut Value) {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if !name.is_empty() {
        if let Some(labels) = child(obj, "metadata").and_then(|m| {
            m.entry("labels").or_insert(json!({}));
            m.get_mut("labels").and_then(Value::as_object_mut)
        }) {
            labels.insert("kubernetes.io/metadata.name".into(), json!(name));
        }
    }
    if let Some(status) = child(obj, "status") {
        default_str(status, "phase", "Active");
    }
}

pub(crate) fn pvc(obj: &mut Value) {
    if let Some(s) = existing(obj, "spec").and_then(Value::as_object_mut) {
        default(s, "volumeMode", json!("Filesystem"));
    }
    if let Some(status) = child(obj, "status") {
        default_str(status, "phase", "Pending");
    }
}

pub(super) fn pv(obj: &mut Value) {
    if let Some(s) = existing(obj, "spec") {
        if let Some(m) = s.as_object_mut() {
            default_str(m, "persistentVolumeReclaimPolicy", "Retain");
            default(m, "volumeMode", json!("Filesystem"));
        }
        if let Some(h) = existing(s, "hostPath").and_then(Value::as_object_mut) {
            default(h, "type", json!(""));
        }
    }
    if let Some(status) = child(obj, "status") {
        default_str(status, "phase", "Pending");
    }
}

pub(super) fn secret(obj: &mut Value) {
    if let Some(m) = obj.as_object_mut() {
        default_str(m, "type", "Opaque");
    }
}

pub(super) fn endpoints(obj: &mut Value) {
    for subset in each(obj, "subsets") {
        for p in each(subset, "ports") {
            if let Some(p) = p.as_object_mut() {
                default_str(p, "protocol", "TCP");
            }
        }
    }
}

pub(super) fn endpoint_slice(obj: &mut Value) {
    for p in each(obj, "ports") {
        if let Some(p) = p.as_object_mut() {
            default(p, "name", json!(""));
            default(p, "protocol", json!("TCP"));
        }
    }
}

pub(super) fn network_policy(obj: &mut Value) {
    let Some(s) = existing(obj, "spec") else {
        return;
    };
    for dir in ["ingress", "egress"] {
        for rule in each(s, dir) {
            for p in each(rule, "ports") {
                if let Some(p) = p.as_object_mut() {
                    default(p, "protocol", json!("TCP"));
                }
            }
        }
    }
    let Some(m) = s.as_object_mut() else { return };
    if m.get("policyTypes")
        .and_then(Value::as_array)
        .is_none_or(|a| a.is_empty())
    {
        let egress = m
            .get("egress")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
        let types = if egress {
            json!(["Ingress", "Egress"])
        } else {
            json!(["Ingress"])
        };
        m.insert("policyTypes".into(), types);
    }
}

pub(super) fn ingress_class(obj: &mut Value) {
    if let Some(p) = obj
        .pointer_mut("/spec/parameters")
        .and_then(Value::as_object_mut)
    {
        default(p, "scope", json!("Cluster"));
    }
}

pub(super) fn hpa(obj: &mut Value, version: &str) {
    let Some(s) = existing(obj, "spec") else {
        return;
    };
    let Some(m) = s.as_object_mut() else { return };
    default(m, "minReplicas", json!(1));
    if version != "v2" {
        return;
    }
    if m.get("metrics")
        .and_then(Value::as_array)
        .is_none_or(|a| a.is_empty())
    {
        m.insert(
            "metrics".into(),
            json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]),
        );
    }
    let Some(b) = m.get_mut("behavior").and_then(Value::as_object_mut) else {
        return;
    };
    let rules =
        |b: &mut serde_json::Map<String, Value>, key: &str, window: i64, policies: Value| {
            let r = b.entry(key).or_insert(Value::Null);
            if r.is_null() {
                *r = json!({});
            }
            if let Some(r) = r.as_object_mut() {
                default(r, "stabilizationWindowSeconds", json!(window));
                default(r, "selectPolicy", json!("Max"));
                default(r, "policies", policies);
            }
        };
    rules(
        b,
        "scaleUp",
        0,
        json!([{"type": "Pods", "value": 4, "periodSeconds": 15}, {"type": "Percent", "value": 100, "periodSeconds": 15}]),
    );
    rules(
        b,
        "scaleDown",
        300,
        json!([{"type": "Percent", "value": 100, "periodSeconds": 15}]),
    );
}

pub(super) fn priority_class(obj: &mut Value) {
    if let Some(m) = obj.as_object_mut() {
        default(m, "preemptionPolicy", json!("PreemptLowerPriority"));
    }
}

pub(super) fn storage_class(obj: &mut Value) {
    if let Some(m) = obj.as_object_mut() {
        default(m, "reclaimPolicy", json!("Delete"));
        default(m, "volumeBindingMode", json!("Immediate"));
    }
}

pub(super) fn role_binding(obj: &mut Value) {
    if let Some(r) = existing(obj, "roleRef").and_then(Value::as_object_mut) {
        default_str(r, "apiGroup", "rbac.authorization.k8s.io");
    }
    for s in each(obj, "subjects") {
        let Some(m) = s.as_object_mut() else { continue };
        if m.get("apiGroup")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            match m.get("kind").and_then(Value::as_str) {
                Some("ServiceAccount") => {
                    m.insert("apiGroup".into(), json!(""));
                }
                Some("User") | Some("Group") => {
                    m.insert("apiGroup".into(), json!("rbac.authorization.k8s.io"));
                }
                _ => {}
            }
        }
    }
}

pub(super) fn crd(obj: &mut Value) {
    let Some(s) = existing(obj, "spec") else {
        return;
    };
    if let Some(n) = existing(s, "names").and_then(Value::as_object_mut) {
        let kind = n
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        default_str(n, "singular", &kind.to_lowercase());
        if !kind.is_empty() {
            default_str(n, "listKind", &format!("{kind}List"));
        }
    }
    if let Some(m) = s.as_object_mut() {
        default(m, "conversion", json!({"strategy": "None"}));
    }
}
