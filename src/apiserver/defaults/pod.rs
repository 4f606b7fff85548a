//! Pod, pod template and container defaults (`SetDefaults_PodSpec`,
//! `SetDefaults_Container`, `SetDefaults_Volume`, probes, …), plus what the
//! pod strategy and the `Priority` and `DefaultTolerationSeconds` admission
//! plug-ins add to pods.

use serde_json::{json, Value};

use super::{child, default, default_int, default_str, each, existing};

/// A Pod: spec defaults plus the pod-only ones (`enableServiceLinks`,
/// requests from limits, host-network ports), priority, default tolerations
/// and, on create, `status.qosClass`.
pub(super) fn pod(obj: &mut Value, create: bool, old: Option<&Value>) {
    let Some(spec) = existing(obj, "spec") else {
        return;
    };
    pod_spec(spec);
    let host_network = spec["hostNetwork"].as_bool() == Some(true);
    for list in ["containers", "initContainers"] {
        for c in each(spec, list) {
            requests_from_limits(c);
            if host_network {
                for p in each(c, "ports") {
                    if let Some(m) = p.as_object_mut() {
                        let cp = m.get("containerPort").cloned().unwrap_or(json!(0));
                        default_int(m, "hostPort", cp.as_i64().unwrap_or(0));
                    }
                }
            }
        }
    }
    let Some(m) = spec.as_object_mut() else {
        return;
    };
    default(m, "enableServiceLinks", json!(true));
    match old.and_then(|o| o.get("spec")) {
        // The Priority plug-in keeps what it set on create.
        Some(old_spec) => {
            for k in ["priority", "preemptionPolicy"] {
                if let Some(v) = old_spec.get(k) {
                    default(m, k, v.clone());
                }
            }
        }
        None => priority(m),
    }
    default_tolerations(m);
    if create {
        let qos = qos_class(spec);
        if let Some(status) = child(obj, "status") {
            default(status, "qosClass", json!(qos));
        }
    }
}

/// The `Priority` admission plug-in for the classes every cluster has; other
/// classes would need a PriorityClass lookup and are left alone.
fn priority(m: &mut serde_json::Map<String, Value>) {
    let class = m
        .get("priorityClassName")
        .and_then(Value::as_str)
        .unwrap_or("");
    let value = match class {
        "" => 0,
        "system-node-critical" => 2_000_001_000,
        "system-cluster-critical" => 2_000_000_000,
        _ => return,
    };
    default(m, "priority", json!(value));
    default(m, "preemptionPolicy", json!("PreemptLowerPriority"));
}

/// `DefaultTolerationSeconds`: tolerate not-ready and unreachable nodes
/// for 300s unless the pod already tolerates those taints.
fn default_tolerations(m: &mut serde_json::Map<String, Value>) {
    let list = m
        .entry("tolerations")
        .or_insert_with(|| json!([]))
        .as_array_mut();
    let Some(list) = list else {
        return;
    };
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let tolerated = list.iter().any(|t| {
            let k = t["key"].as_str().unwrap_or("");
            let effect = t["effect"].as_str().unwrap_or("");
            let exists = t["operator"].as_str() == Some("Exists");
            (k == key || (k.is_empty() && exists)) && (effect.is_empty() || effect == "NoExecute")
        });
        if !tolerated {
            list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
        }
    }
}

/// Requests default to limits in pods (not in templates).
fn requests_from_limits(c: &mut Value) {
    let Some(limits) = c
        .pointer("/resources/limits")
        .and_then(Value::as_object)
        .cloned()
    else {
        return;
    };
    if let Some(req) = child(&mut c["resources"], "requests") {
        for (k, v) in limits {
            req.entry(k).or_insert(v);
        }
    }
}

/// `status.qosClass` as the pod strategy computes it (cpu and memory only).
pub(super) fn qos_class(spec: &Value) -> &'static str {
    let mut any = false;
    let mut guaranteed = true;
    let containers = ["containers", "initContainers"]
        .iter()
        .flat_map(|l| spec[*l].as_array().into_iter().flatten());
    for c in containers {
        let req = &c["resources"]["requests"];
        let lim = &c["resources"]["limits"];
        for r in ["cpu", "memory"] {
            let (q, l) = (req.get(r), lim.get(r));
            if q.is_some() || l.is_some() {
                any = true;
            }
            match (q, l) {
                (_, None) => guaranteed = false,
                (Some(q), Some(l)) if q != l => guaranteed = false,
                _ => {}
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

/// A `PodTemplateSpec` at `obj[key]` (`spec.template` and friends).
pub(crate) fn template_at(obj: &mut Value, key: &str) {
    if let Some(t) = existing(obj, key) {
        template(t);
    }
}

/// A `PodTemplateSpec`: kube always prints its metadata (with a null
/// `creationTimestamp`) and defaults its spec.
pub(crate) fn template(t: &mut Value) {
    if let Some(meta) = child(t, "metadata") {
        meta.entry("creationTimestamp").or_insert(Value::Null);
    }
    if let Some(spec) = existing(t, "spec") {
        pod_spec(spec);
    }
}

/// `SetDefaults_PodSpec` and everything nested in a pod spec.
pub(crate) fn pod_spec(spec: &mut Value) {
    if let Some(m) = spec.as_object_mut() {
        default_str(m, "dnsPolicy", "ClusterFirst");
        default_str(m, "restartPolicy", "Always");
        default(m, "securityContext", json!({}));
        default(m, "terminationGracePeriodSeconds", json!(30));
        default_str(m, "schedulerName", "default-scheduler");
        // v1 conversion keeps the deprecated alias equal to serviceAccountName.
        let sa = m
            .get("serviceAccountName")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .or_else(|| m.get("serviceAccount").and_then(Value::as_str))
            .unwrap_or("")
            .to_string();
        if sa.is_empty() {
            m.remove("serviceAccount");
        } else {
            m.insert("serviceAccountName".into(), json!(sa));
            m.insert("serviceAccount".into(), json!(sa));
        }
    }
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        for c in each(spec, list) {
            container(c);
        }
    }
    for v in each(spec, "volumes") {
        volume(v);
    }
}

/// `Always` for `:latest` or no tag (and no digest), else `IfNotPresent`.
pub(crate) fn pull_policy(image: &str) -> &'static str {
    let (name, digest) = match image.split_once('@') {
        Some((n, _)) => (n, true),
        None => (image, false),
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.split_once(':') {
        Some((_, "latest")) => "Always",
        Some(_) => "IfNotPresent",
        None if digest || image.is_empty() => "IfNotPresent",
        None => "Always",
    }
}

fn container(c: &mut Value) {
    let image = c["image"].as_str().unwrap_or("").to_string();
    let Some(m) = c.as_object_mut() else {
        return;
    };
    default_str(m, "imagePullPolicy", pull_policy(&image));
    default_str(m, "terminationMessagePath", "/dev/termination-log");
    default_str(m, "terminationMessagePolicy", "File");
    default(m, "resources", json!({}));
    for p in each(c, "ports") {
        if let Some(m) = p.as_object_mut() {
            default_str(m, "protocol", "TCP");
        }
    }
    for probe_key in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = existing(c, probe_key) {
            probe(p);
        }
    }
    for hook in ["postStart", "preStop"] {
        if let Some(h) = c.pointer_mut(&format!("/lifecycle/{hook}/httpGet")) {
            http_get(h);
        }
    }
    for e in each(c, "env") {
        if let Some(f) = e.pointer_mut("/valueFrom/fieldRef") {
            field_ref(f);
        }
        if let Some(r) = e.pointer_mut("/valueFrom/resourceFieldRef") {
            resource_field_ref(r);
        }
    }
}

fn probe(p: &mut Value) {
    if let Some(m) = p.as_object_mut() {
        default_int(m, "timeoutSeconds", 1);
        default_int(m, "periodSeconds", 10);
        default_int(m, "successThreshold", 1);
        default_int(m, "failureThreshold", 3);
    }
    if let Some(h) = existing(p, "httpGet") {
        http_get(h);
    }
    if let Some(g) = existing(p, "grpc").and_then(Value::as_object_mut) {
        default(g, "service", json!(""));
    }
}

fn http_get(h: &mut Value) {
    if let Some(m) = h.as_object_mut() {
        default_str(m, "path", "/");
        default_str(m, "scheme", "HTTP");
    }
}

fn field_ref(f: &mut Value) {
    if let Some(m) = f.as_object_mut() {
        default_str(m, "apiVersion", "v1");
    }
}

fn resource_field_ref(r: &mut Value) {
    if let Some(m) = r.as_object_mut() {
        default(m, "divisor", json!("0"));
    }
}

/// Defaults of the downward API items (volume and projection).
fn downward_items(d: &mut Value) {
    for item in each(d, "items") {
        if let Some(f) = existing(item, "fieldRef") {
            field_ref(f);
        }
        if let Some(r) = existing(item, "resourceFieldRef") {
            resource_field_ref(r);
        }
    }
}

const MODE_0644: i64 = 420;

fn volume(v: &mut Value) {
    let Some(m) = v.as_object_mut() else {
        return;
    };
    if !m.keys().any(|k| k != "name") {
        m.insert("emptyDir".into(), json!({}));
    }
    for (key, has_mode) in [
        ("secret", true),
        ("configMap", true),
        ("downwardAPI", true),
        ("projected", true),
        ("hostPath", false),
    ] {
        let Some(src) = m.get_mut(key).and_then(Value::as_object_mut) else {
            continue;
        };
        if has_mode {
            default(src, "defaultMode", json!(MODE_0644));
        } else {
            default(src, "type", json!(""));
        }
    }
    if let Some(d) = existing(v, "downwardAPI") {
        downward_items(d);
    }
    for s in v
        .pointer_mut("/projected/sources")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        if let Some(t) = existing(s, "serviceAccountToken").and_then(Value::as_object_mut) {
            default(t, "expirationSeconds", json!(3600));
        }
        if let Some(d) = existing(s, "downwardAPI") {
            downward_items(d);
        }
    }
    if let Some(spec) = v.pointer_mut("/ephemeral/volumeClaimTemplate/spec") {
        if let Some(m) = spec.as_object_mut() {
            default(m, "volumeMode", json!("Filesystem"));
        }
    }
    let simple: [(&str, &[(&str, Value)]); 4] = [
        ("iscsi", &[("iscsiInterface", json!("default"))]),
        (
            "rbd",
            &[
                ("pool", json!("rbd")),
                ("user", json!("admin")),
                ("keyring", json!("/etc/ceph/keyring")),
            ],
        ),
        (
            "azureDisk",
            &[
                ("cachingMode", json!("ReadWrite")),
                ("fsType", json!("ext4")),
                ("readOnly", json!(false)),
                ("kind", json!("Shared")),
            ],
        ),
        (
            "scaleIO",
            &[
                ("storageMode", json!("ThinProvisioned")),
                ("fsType", json!("xfs")),
            ],
        ),
    ];
    for (key, fields) in simple {
        if let Some(src) = v.get_mut(key).and_then(Value::as_object_mut) {
            for (k, val) in fields {
                default(src, k, val.clone());
            }
        }
    }
}
