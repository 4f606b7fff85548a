//! Kind-specific validation of new objects: pod specs (pods and every pod
//! template), workloads and Services.

use std::collections::HashSet;

use serde_json::Value;

use super::meta::{is_dns1123_label, labels};
use super::{go_label_selector, go_map, quote, Errs};
use crate::apiserver::admission::AdmissionRequest;

pub(super) fn kind(req: &AdmissionRequest<'_>, obj: &Value, errs: &mut Errs) {
    let spec = &obj["spec"];
    match req.def.group_resource().as_str() {
        "pods" => pod_spec("spec", spec, errs),
        "podtemplates" => template("template", &obj["template"], errs),
        "replicationcontrollers" => replication_controller(spec, errs),
        "deployments.apps" => workload(spec, "deployment", true, errs),
        "replicasets.apps" => workload(spec, "replicaset", true, errs),
        "statefulsets.apps" => workload(spec, "statefulset", true, errs),
        "daemonsets.apps" => workload(spec, "daemonset", false, errs),
        "jobs.batch" => job_spec("spec", spec, errs),
        "cronjobs.batch" => cron_job(spec, errs),
        "services" => service(spec, errs),
        "certificatesigningrequests.certificates.k8s.io" => super::csr::spec(obj, errs),
        _ => {}
    }
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("")
}

fn port_range(field: &str, v: &Value, errs: &mut Errs) {
    if let Some(n) = v.as_i64() {
        if !(1..=65535).contains(&n) {
            errs.invalid(
                field,
                &n.to_string(),
                "must be between 1 and 65535, inclusive",
            );
        }
    }
}

fn protocol(field: &str, v: &Value, errs: &mut Errs) {
    if let Some(p) = v.as_str() {
        if !["SCTP", "TCP", "UDP"].contains(&p) {
            errs.not_supported(field, p, &["SCTP", "TCP", "UDP"]);
        }
    }
}

/// A `PodTemplateSpec` at `path`.
fn template(path: &str, t: &Value, errs: &mut Errs) {
    if !t.is_object() {
        errs.required(path, "");
        return;
    }
    labels(
        &format!("{path}.metadata.labels"),
        t.pointer("/metadata/labels"),
        errs,
    );
    pod_spec(&format!("{path}.spec"), &t["spec"], errs);
}

pub(super) fn pod_spec(path: &str, spec: &Value, errs: &mut Errs) {
    let mut volumes = HashSet::new();
    for (i, v) in spec["volumes"].as_array().into_iter().flatten().enumerate() {
        let f = format!("{path}.volumes[{i}].name");
        match s(v, "name") {
            "" => errs.required(&f, ""),
            n => {
                for msg in is_dns1123_label(n) {
                    errs.invalid(&f, &quote(n), &msg);
                }
                if !volumes.insert(n.to_string()) {
                    errs.duplicate(&f, &quote(n));
                }
            }
        }
    }
    let containers = spec["containers"].as_array();
    if containers.is_none_or(|c| c.is_empty()) {
        errs.required(&format!("{path}.containers"), "");
    }
    let mut names = HashSet::new();
    for list in ["initContainers", "containers"] {
        for (i, c) in spec[list].as_array().into_iter().flatten().enumerate() {
            container(
                &format!("{path}.{list}[{i}]"),
                c,
                &volumes,
                &mut names,
                errs,
            );
        }
    }
    if let Some(p) = spec["restartPolicy"].as_str() {
        if !["Always", "OnFailure", "Never"].contains(&p) {
            errs.not_supported(
                &format!("{path}.restartPolicy"),
                p,
                &["Always", "OnFailure", "Never"],
            );
        }
    }
    if let Some(p) = spec["dnsPolicy"].as_str() {
        let valid = ["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"];
        if !valid.contains(&p) {
            errs.not_supported(&format!("{path}.dnsPolicy"), p, &valid);
        }
    }
    if let Some(n) = spec["activeDeadlineSeconds"].as_i64() {
        if n <= 0 {
            errs.invalid(
                &format!("{path}.activeDeadlineSeconds"),
                &n.to_string(),
                "must be between 1 and 2147483647, inclusive",
            );
        }
    }
    // kube checks it with the pod security context (its internal type holds
    // both fields), hence the path under `securityContext`.
    if spec["shareProcessNamespace"] == Value::Bool(true) && spec["hostPID"] == Value::Bool(true) {
        errs.invalid(
            &format!("{path}.securityContext.shareProcessNamespace"),
            "true",
            "ShareProcessNamespace and HostPID cannot both be enabled",
        );
    }
}

pub(super) fn container(
    path: &str,
    c: &Value,
    volumes: &HashSet<String>,
    names: &mut HashSet<String>,
    errs: &mut Errs,
) {
    let f = format!("{path}.name");
    match s(c, "name") {
        "" => errs.required(&f, ""),
        n => {
            for msg in is_dns1123_label(n) {
                errs.invalid(&f, &quote(n), &msg);
            }
            if !names.insert(n.to_string()) {
                errs.duplicate(&f, &quote(n));
            }
        }
    }
    if s(c, "image").trim().is_empty() {
        errs.required(&format!("{path}.image"), "");
    }
    if let Some(p) = c["imagePullPolicy"].as_str() {
        let valid = ["Always", "IfNotPresent", "Never"];
        if !valid.contains(&p) {
            errs.not_supported(&format!("{path}.imagePullPolicy"), p, &valid);
        }
    }
    for (i, p) in c["ports"].as_array().into_iter().flatten().enumerate() {
        let pp = format!("{path}.ports[{i}]");
        match p.get("containerPort") {
            None | Some(Value::Null) => errs.required(&format!("{pp}.containerPort"), ""),
            Some(v) => port_range(&format!("{pp}.containerPort"), v, errs),
        }
        if p["hostPort"].as_i64().is_some_and(|n| n != 0) {
            port_range(&format!("{pp}.hostPort"), &p["hostPort"], errs);
        }
        protocol(&format!("{pp}.protocol"), &p["protocol"], errs);
    }
    for (i, e) in c["env"].as_array().into_iter().flatten().enumerate() {
        if s(e, "name").is_empty() {
            errs.required(&format!("{path}.env[{i}].name"), "");
        }
    }
    for (i, m) in c["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let mp = format!("{path}.volumeMounts[{i}]");
        let n = s(m, "name");
        if n.is_empty() {
            errs.required(&format!("{mp}.name"), "");
        } else if !volumes.contains(n) {
            errs.not_found(&format!("{mp}.name"), &quote(n));
        }
        if s(m, "mountPath").is_empty() {
            errs.required(&format!("{mp}.mountPath"), "");
        }
    }
}

/// Whether a label selector (`matchLabels`/`matchExpressions`) selects
/// `labels` (an empty selector selects everything; see `crate::k8s::selector`).
pub fn selector_matches(sel: &Value, labels: Option<&Value>) -> bool {
    crate::k8s::selector::json_matches(sel, labels.and_then(Value::as_object))
}

fn selector_is_empty(sel: &Value) -> bool {
    sel["matchLabels"].as_object().is_none_or(|m| m.is_empty())
        && sel["matchExpressions"]
            .as_array()
            .is_none_or(|a| a.is_empty())
}

fn replicas(field: &str, v: &Value, errs: &mut Errs) {
    if let Some(n) = v.as_i64() {
        if n < 0 {
            errs.invalid(field, &n.to_string(), "must be greater than or equal to 0");
        }
    }
}

/// Deployment, ReplicaSet, StatefulSet and DaemonSet specs.
fn workload(spec: &Value, noun: &str, has_replicas: bool, errs: &mut Errs) {
    if has_replicas {
        replicas("spec.replicas", &spec["replicas"], errs);
    }
    let sel = &spec["selector"];
    if !sel.is_object() {
        errs.required("spec.selector", "");
    } else {
        labels("spec.selector.matchLabels", sel.get("matchLabels"), errs);
        if selector_is_empty(sel) {
            errs.invalid(
                "spec.selector",
                &go_label_selector(sel),
                &format!("empty selector is invalid for {noun}"),
            );
        }
    }
    let t = &spec["template"];
    if sel.is_object() && !selector_is_empty(sel) && t.is_object() {
        let tl = t.pointer("/metadata/labels");
        if !selector_matches(sel, tl) {
            errs.invalid(
                "spec.template.metadata.labels",
                &go_map(tl),
                "`selector` does not match template `labels`",
            );
        }
    }
    // As kube: a StatefulSet's template is validated with one volume per
    // claim template, which its pods get from the controller.
    let mut with_claims = t.clone();
    if noun == "statefulset" {
        let claims: Vec<Value> = spec["volumeClaimTemplates"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|ct| ct.pointer("/metadata/name").and_then(Value::as_str))
            .map(|n| serde_json::json!({"name": n, "persistentVolumeClaim": {"claimName": n}}))
            .collect();
        if let Some(pod) = with_claims.get_mut("spec").and_then(Value::as_object_mut) {
            let vols = pod.entry("volumes").or_insert_with(|| Value::Array(Vec::new()));
            if let Some(vols) = vols.as_array_mut() {
                for c in claims {
                    if !vols.iter().any(|v| v["name"] == c["name"]) {
                        vols.push(c);
                    }
                }
            }
        }
    }
    let t = &with_claims;
    template("spec.template", t, errs);
    if let Some(p) = t.pointer("/spec/restartPolicy").and_then(Value::as_str) {
        if p != "Always" && ["OnFailure", "Never"].contains(&p) {
            errs.not_supported("spec.template.spec.restartPolicy", p, &["Always"]);
        }
    }
    if noun != "statefulset" && noun != "daemonset" {
        if let Some(n) = spec["minReadySeconds"].as_i64().filter(|n| *n < 0) {
            errs.invalid(
                "spec.minReadySeconds",
                &n.to_string(),
                "must be greater than or equal to 0",
            );
        }
    }
}

fn replication_controller(spec: &Value, errs: &mut Errs) {
    replicas("spec.replicas", &spec["replicas"], errs);
    let sel = spec
        .get("selector")
        .filter(|s| s.as_object().is_some_and(|m| !m.is_empty()));
    match sel {
        None => errs.required("spec.selector", ""),
        Some(sel) => {
            labels("spec.selector", Some(sel), errs);
            let t = &spec["template"];
            if t.is_object() {
                let tl = t.pointer("/metadata/labels");
                let wrapped = serde_json::json!({"matchLabels": sel});
                if !selector_matches(&wrapped, tl) {
                    errs.invalid(
                        "spec.template.metadata.labels",
                        &go_map(tl),
                        "`selector` does not match template `labels`",
                    );
                }
            }
        }
    }
    template("spec.template", &spec["template"], errs);
}

fn job_spec(path: &str, spec: &Value, errs: &mut Errs) {
    for k in ["parallelism", "completions", "backoffLimit"] {
        if let Some(n) = spec[k].as_i64().filter(|n| *n < 0) {
            errs.invalid(
                &format!("{path}.{k}"),
                &n.to_string(),
                "must be greater than or equal to 0",
            );
        }
    }
    let t = &spec["template"];
    template(&format!("{path}.template"), t, errs);
    if let Some(p) = t.pointer("/spec/restartPolicy").and_then(Value::as_str) {
        if p == "Always" {
            errs.not_supported(
                &format!("{path}.template.spec.restartPolicy"),
                p,
                &["OnFailure", "Never"],
            );
        }
    }
}

fn cron_job(spec: &Value, errs: &mut Errs) {
    if spec["schedule"]
        .as_str()
        .is_none_or(|s| s.trim().is_empty())
    {
        errs.required("spec.schedule", "");
    }
    if let Some(p) = spec["concurrencyPolicy"].as_str() {
        let valid = ["Allow", "Forbid", "Replace"];
        if !valid.contains(&p) {
            errs.not_supported("spec.concurrencyPolicy", p, &valid);
        }
    }
    job_spec("spec.jobTemplate.spec", &spec["jobTemplate"]["spec"], errs);
}

fn service(spec: &Value, errs: &mut Errs) {
    let ty = spec["type"].as_str().unwrap_or("ClusterIP");
    let valid = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
    if !valid.contains(&ty) {
        errs.not_supported("spec.type", ty, &valid);
    }
    let ports = spec["ports"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let headless = spec["clusterIP"].as_str() == Some("None");
    if ports.is_empty() && !headless && ty != "ExternalName" {
        errs.required("spec.ports", "");
    }
    if ty == "ExternalName" && spec["externalName"].as_str().is_none_or(str::is_empty) {
        errs.required("spec.externalName", "");
    }
    let mut names = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = format!("spec.ports[{i}]");
        let name = s(p, "name");
        if ports.len() > 1 && name.is_empty() {
            errs.required(&format!("{pp}.name"), "");
        } else if !name.is_empty() && !names.insert(name.to_string()) {
            errs.duplicate(&format!("{pp}.name"), &quote(name));
        }
        match p.get("port") {
            None | Some(Value::Null) => errs.invalid(
                &format!("{pp}.port"),
                "0",
                "must be between 1 and 65535, inclusive",
            ),
            Some(v) => port_range(&format!("{pp}.port"), v, errs),
        }
        protocol(&format!("{pp}.protocol"), &p["protocol"], errs);
        if p["targetPort"].is_i64() {
            port_range(&format!("{pp}.targetPort"), &p["targetPort"], errs);
        }
        if let Some(n) = p["nodePort"].as_i64().filter(|n| *n != 0) {
            if ty == "ClusterIP" {
                errs.forbidden(
                    &format!("{pp}.nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                );
            } else {
                port_range(&format!("{pp}.nodePort"), &Value::from(n), errs);
            }
        }
    }
    if let Some(a) = spec["sessionAffinity"].as_str() {
        if !["ClientIP", "None"].contains(&a) {
            errs.not_supported("spec.sessionAffinity", a, &["ClientIP", "None"]);
        }
    }
}
