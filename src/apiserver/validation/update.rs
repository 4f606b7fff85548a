//! Update rules: what may not change once an object exists.

use serde_json::Value;

use super::{go_label_selector, quote, Errs};
use crate::apiserver::admission::AdmissionRequest;

const IMMUTABLE: &str = "field is immutable";

pub(super) fn kind(req: &AdmissionRequest<'_>, old: &Value, new: &Value, errs: &mut Errs) {
    match req.def.group_resource().as_str() {
        "pods" => pod(old, new, errs),
        "services" => service(old, new, errs),
        "deployments.apps" | "replicasets.apps" | "daemonsets.apps" => selector(old, new, errs),
        "statefulsets.apps" => stateful_set(old, new, errs),
        "jobs.batch" => job(old, new, errs),
        "configmaps" => immutable_data(old, new, &["data", "binaryData"], errs),
        "secrets" => {
            immutable_data(old, new, &["data", "stringData"], errs);
            if old["type"] != new["type"] {
                let t = new["type"].as_str().unwrap_or("");
                errs.invalid("type", &quote(t), IMMUTABLE);
            }
        }
        "persistentvolumeclaims" => pvc(old, new, errs),
        _ => {}
    }
}

/// kube's list of what a Pod update may change.
const POD_UPDATABLE: &str = "`spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

fn pod(old: &Value, new: &Value, errs: &mut Errs) {
    let mut a = old["spec"].clone();
    let mut b = new["spec"].clone();
    for list in ["containers", "initContainers"] {
        let images: Vec<Value> = a[list]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| c["image"].clone())
            .collect();
        if let Some(cs) = b.get_mut(list).and_then(Value::as_array_mut) {
            for (c, img) in cs.iter_mut().zip(images) {
                c["image"] = img;
            }
        }
    }
    // A first nodeName is what a binding sets; allowed here for clients that
    // bind with an update.
    if a["nodeName"].as_str().is_none_or(str::is_empty) {
        if let (Some(a), Some(n)) = (a.as_object_mut(), b.get("nodeName")) {
            a.insert("nodeName".into(), n.clone());
        }
    }
    for k in ["activeDeadlineSeconds", "ephemeralContainers"] {
        match b.get(k) {
            Some(v) => a[k] = v.clone(),
            None => {
                a.as_object_mut().map(|m| m.remove(k));
            }
        }
    }
    let old_tol = a["tolerations"].as_array().cloned().unwrap_or_default();
    let new_tol = b["tolerations"].as_array().cloned().unwrap_or_default();
    if old_tol.iter().all(|t| new_tol.contains(t)) {
        a["tolerations"] = b["tolerations"].clone();
        if b.get("tolerations").is_none() {
            a.as_object_mut().map(|m| m.remove("tolerations"));
        }
    }
    if a["terminationGracePeriodSeconds"]
        .as_i64()
        .is_some_and(|n| n < 0)
        && b["terminationGracePeriodSeconds"].as_i64() == Some(1)
    {
        a["terminationGracePeriodSeconds"] = Value::from(1);
    }
    if a != b {
        errs.forbidden(
            "spec",
            &format!("pod updates may not change fields other than {POD_UPDATABLE}"),
        );
    }
}

fn service(old: &Value, new: &Value, errs: &mut Errs) {
    let (o, n) = (&old["spec"], &new["spec"]);
    let old_ip = o["clusterIP"].as_str().unwrap_or("");
    if n["type"] != "ExternalName" && o["type"] != "ExternalName" && !old_ip.is_empty() {
        let new_ip = n["clusterIP"].as_str().unwrap_or("");
        if new_ip != old_ip {
            errs.invalid("spec.clusterIP", &quote(new_ip), IMMUTABLE);
        }
    }
}

fn selector(old: &Value, new: &Value, errs: &mut Errs) {
    let (o, n) = (&old["spec"]["selector"], &new["spec"]["selector"]);
    if o != n {
        errs.invalid("spec.selector", &go_label_selector(n), IMMUTABLE);
    }
}

fn stateful_set(old: &Value, new: &Value, errs: &mut Errs) {
    let strip = |v: &Value| {
        let mut s = v["spec"].clone();
        if let Some(m) = s.as_object_mut() {
            for k in [
                "replicas",
                "ordinals",
                "template",
                "updateStrategy",
                "persistentVolumeClaimRetentionPolicy",
                "minReadySeconds",
            ] {
                m.remove(k);
            }
        }
        s
    };
    if strip(old) != strip(new) {
        errs.forbidden("spec", "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden");
    }
}

fn job(old: &Value, new: &Value, errs: &mut Errs) {
    let (o, n) = (&old["spec"], &new["spec"]);
    if o["selector"] != n["selector"] {
        errs.invalid(
            "spec.selector",
            &go_label_selector(&n["selector"]),
            IMMUTABLE,
        );
    }
    if o["completions"] != n["completions"] && o["completionMode"] != "Indexed" {
        let v = n["completions"]
            .as_i64()
            .map_or("null".to_string(), |c| c.to_string());
        errs.invalid("spec.completions", &v, IMMUTABLE);
    }
    // Scheduling directives of a suspended Job may change; the rest may not.
    if o["template"] != n["template"] {
        let mut a = o["template"].clone();
        let b = &n["template"];
        let suspended = o["suspend"] == true;
        if suspended {
            for k in ["nodeSelector", "tolerations", "affinity", "schedulingGates"] {
                copy_field(&mut a, b, "spec", k);
            }
            copy_field(&mut a, b, "metadata", "labels");
            copy_field(&mut a, b, "metadata", "annotations");
        }
        if &a != b {
            errs.invalid("spec.template", &compact(b), IMMUTABLE);
        }
    }
}

/// `to[section][key] = from[section][key]`, removing it when `from` lacks it.
fn copy_field(to: &mut Value, from: &Value, section: &str, key: &str) {
    let Some(m) = to.get_mut(section).and_then(Value::as_object_mut) else {
        return;
    };
    match from[section].get(key) {
        Some(v) => {
            m.insert(key.into(), v.clone());
        }
        None => {
            m.shift_remove(key);
        }
    }
}

fn compact(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn immutable_data(old: &Value, new: &Value, fields: &[&str], errs: &mut Errs) {
    if old["immutable"] != true {
        return;
    }
    if new["immutable"] != true {
        errs.forbidden("immutable", "field is immutable when `immutable` is set");
    }
    for f in fields {
        if old[*f] != new[*f] {
            errs.forbidden(f, "field is immutable when `immutable` is set");
        }
    }
}

fn pvc(old: &Value, new: &Value, errs: &mut Errs) {
    let strip = |v: &Value| {
        let mut s = v["spec"].clone();
        if let Some(r) = s.get_mut("resources").and_then(Value::as_object_mut) {
            r.remove("requests");
        }
        // Binding sets a first volumeName.
        if old["spec"]["volumeName"].as_str().is_none_or(str::is_empty) {
            s.as_object_mut().map(|m| m.remove("volumeName"));
        }
        // The retroactive default StorageClass sets a first class name.
        if old["spec"]["storageClassName"].is_null() {
            s.as_object_mut().map(|m| m.remove("storageClassName"));
        }
        s
    };
    if strip(old) != strip(new) {
        errs.forbidden(
            "spec",
            "spec is immutable after creation except resources.requests for bound claims",
        );
    }
}
