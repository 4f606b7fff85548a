//! Workload defaults: apps/v1 (`SetDefaults_Deployment`, …), batch/v1 (Job,
//! CronJob, and the Job strategy's generated selector) and the core
//! ReplicationController and PodTemplate.

use serde_json::{json, Value};

use super::pod::{template, template_at};
use super::{child, default, default_str, existing};

fn spec(obj: &mut Value) -> Option<&mut Value> {
    existing(obj, "spec")
}

pub(super) fn deployment(obj: &mut Value) {
    let Some(s) = spec(obj) else { return };
    if let Some(m) = s.as_object_mut() {
        default(m, "replicas", json!(1));
        default(m, "revisionHistoryLimit", json!(10));
        default(m, "progressDeadlineSeconds", json!(600));
    }
    if let Some(st) = child(s, "strategy") {
        default_str(st, "type", "RollingUpdate");
        if st["type"] == "RollingUpdate" {
            let ru = st.entry("rollingUpdate").or_insert(Value::Null);
            if ru.is_null() {
                *ru = json!({});
            }
            if let Some(ru) = ru.as_object_mut() {
                default(ru, "maxUnavailable", json!("25%"));
                default(ru, "maxSurge", json!("25%"));
            }
        }
    }
    template_at(s, "template");
}

pub(super) fn replica_set(obj: &mut Value) {
    let Some(s) = spec(obj) else { return };
    if let Some(m) = s.as_object_mut() {
        default(m, "replicas", json!(1));
    }
    template_at(s, "template");
}

pub(super) fn replication_controller(obj: &mut Value) {
    let labels = obj
        .pointer("/spec/template/metadata/labels")
        .filter(|l| l.as_object().is_some_and(|m| !m.is_empty()))
        .cloned();
    if let Some(labels) = labels {
        if let Some(s) = spec(obj).and_then(Value::as_object_mut) {
            if s.get("selector")
                .and_then(Value::as_object)
                .is_none_or(|m| m.is_empty())
            {
                s.insert("selector".into(), labels.clone());
            }
        }
        if let Some(meta) = child(obj, "metadata") {
            if meta
                .get("labels")
                .and_then(Value::as_object)
                .is_none_or(|m| m.is_empty())
            {
                meta.insert("labels".into(), labels);
            }
        }
    }
    let Some(s) = spec(obj) else { return };
    if let Some(m) = s.as_object_mut() {
        default(m, "replicas", json!(1));
    }
    template_at(s, "template");
}

pub(super) fn daemon_set(obj: &mut Value) {
    let Some(s) = spec(obj) else { return };
    if let Some(m) = s.as_object_mut() {
        default(m, "revisionHistoryLimit", json!(10));
    }
    if let Some(st) = child(s, "updateStrategy") {
        default_str(st, "type", "RollingUpdate");
        if st["type"] == "RollingUpdate" {
            let ru = st.entry("rollingUpdate").or_insert(Value::Null);
            if ru.is_null() {
                *ru = json!({});
            }
            if let Some(ru) = ru.as_object_mut() {
                default(ru, "maxUnavailable", json!(1));
                default(ru, "maxSurge", json!(0));
            }
        }
    }
    template_at(s, "template");
}

pub(super) fn stateful_set(obj: &mut Value) {
    let Some(s) = spec(obj) else { return };
    if let Some(m) = s.as_object_mut() {
        default_str(m, "podManagementPolicy", "OrderedReady");
        default(m, "replicas", json!(1));
        default(m, "revisionHistoryLimit", json!(10));
    }
    if let Some(st) = child(s, "updateStrategy") {
        if st
            .get("type")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            st.insert("type".into(), json!("RollingUpdate"));
            default(st, "rollingUpdate", json!({}));
        }
        if st["type"] == "RollingUpdate" {
            if let Some(ru) = st.get_mut("rollingUpdate").and_then(Value::as_object_mut) {
                default(ru, "partition", json!(0));
            }
        }
    }
    if let Some(p) = child(s, "persistentVolumeClaimRetentionPolicy") {
        default_str(p, "whenDeleted", "Retain");
        default_str(p, "whenScaled", "Retain");
    }
    template_at(s, "template");
    for t in s
        .get_mut("volumeClaimTemplates")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        let Some(m) = t.as_object_mut() else { continue };
        default(m, "apiVersion", json!("v1"));
        default(m, "kind", json!("PersistentVolumeClaim"));
        if let Some(meta) = child(t, "metadata") {
            meta.entry("creationTimestamp").or_insert(Value::Null);
        }
        super::other::pvc(t);
    }
}

/// Job defaults, and on create the strategy's generated selector and labels
/// (unless `manualSelector` is true).
pub(super) fn job(obj: &mut Value, create: bool, name: &str) {
    let uid = obj
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or(name)
        .to_string();
    let Some(s) = spec(obj) else { return };
    job_spec(s);
    // The v1 conversion turns an unset manualSelector into false.
    if let Some(m) = s.as_object_mut() {
        default(m, "manualSelector", json!(false));
    }
    if create && s["manualSelector"].as_bool() != Some(true) {
        if let Some(labels) = s
            .pointer_mut("/template")
            .and_then(|t| child(t, "metadata"))
            .and_then(|m| {
                m.entry("labels").or_insert(json!({}));
                m.get_mut("labels").and_then(Value::as_object_mut)
            })
        {
            for k in ["batch.kubernetes.io/controller-uid", "controller-uid"] {
                labels.entry(k).or_insert(json!(uid));
            }
            for k in ["batch.kubernetes.io/job-name", "job-name"] {
                labels.entry(k).or_insert(json!(name));
            }
        }
        if let Some(sel) = child(s, "selector") {
            if let Some(ml) = sel
                .entry("matchLabels")
                .or_insert(json!({}))
                .as_object_mut()
            {
                ml.entry("batch.kubernetes.io/controller-uid")
                    .or_insert(json!(uid));
            }
        }
    }
    template_at(s, "template");
    // Defaulting on read copies the template labels to a label-less Job.
    let labels = obj
        .pointer("/spec/template/metadata/labels")
        .filter(|l| l.as_object().is_some_and(|m| !m.is_empty()))
        .cloned();
    if let (Some(labels), Some(meta)) = (labels, child(obj, "metadata")) {
        if meta
            .get("labels")
            .and_then(Value::as_object)
            .is_none_or(|m| m.is_empty())
        {
            meta.insert("labels".into(), labels);
        }
    }
}

fn job_spec(s: &mut Value) {
    let Some(m) = s.as_object_mut() else { return };
    let has = |m: &serde_json::Map<String, Value>, k: &str| m.get(k).is_some_and(|v| !v.is_null());
    if !has(m, "completions") && !has(m, "parallelism") {
        m.insert("completions".into(), json!(1));
    }
    default(m, "parallelism", json!(1));
    let backoff = if has(m, "backoffLimitPerIndex") {
        i64::from(i32::MAX)
    } else {
        6
    };
    default(m, "backoffLimit", json!(backoff));
    default(m, "completionMode", json!("NonIndexed"));
    default(m, "suspend", json!(false));
    let replacement = if has(m, "podFailurePolicy") {
        "Failed"
    } else {
        "TerminatingOrFailed"
    };
    default(m, "podReplacementPolicy", json!(replacement));
    for rule in m
        .get_mut("podFailurePolicy")
        .and_then(|p| p.get_mut("rules"))
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        for c in rule
            .get_mut("onPodConditions")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(c) = c.as_object_mut() {
                default_str(c, "status", "True");
            }
        }
    }
}

pub(super) fn cron_job(obj: &mut Value) {
    let Some(s) = spec(obj) else { return };
    if let Some(m) = s.as_object_mut() {
        default_str(m, "concurrencyPolicy", "Allow");
        default(m, "suspend", json!(false));
        default(m, "successfulJobsHistoryLimit", json!(3));
        default(m, "failedJobsHistoryLimit", json!(1));
    }
    if let Some(jt) = existing(s, "jobTemplate") {
        if let Some(meta) = child(jt, "metadata") {
            meta.entry("creationTimestamp").or_insert(Value::Null);
        }
        if let Some(t) = jt.pointer_mut("/spec/template").filter(|t| t.is_object()) {
            template(t);
        }
    }
}
