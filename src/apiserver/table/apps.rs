//! Printers for workload, batch, autoscaling and policy kinds.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::util::*;

pub(super) fn deployment(now: DateTime<Utc>, obj: &Value) -> Vec<Value> {
    let ready = format!(
        "{}/{}",
        i(obj, "/status/readyReplicas"),
        i(obj, "/spec/replicas")
    );
    workload_row(
        now,
        obj,
        vec![
            json!(ready),
            json!(i(obj, "/status/updatedReplicas")),
            json!(i(obj, "/status/availableReplicas")),
        ],
        "/spec/template/spec",
        Some(selector_string(obj.pointer("/spec/selector"))),
    )
}

pub(super) fn replica_set(now: DateTime<Utc>, obj: &Value) -> Vec<Value> {
    workload_row(
        now,
        obj,
        replica_counts(obj),
        "/spec/template/spec",
        Some(format_selector(obj.pointer("/spec/selector"))),
    )
}

pub(super) fn daemon_set(now: DateTime<Utc>, obj: &Value) -> Vec<Value> {
    workload_row(
        now,
        obj,
        vec![
            json!(i(obj, "/status/desiredNumberScheduled")),
            json!(i(obj, "/status/currentNumberScheduled")),
            json!(i(obj, "/status/numberReady")),
            json!(i(obj, "/status/updatedNumberScheduled")),
            json!(i(obj, "/status/numberAvailable")),
            json!(format_labels(
                obj.pointer("/spec/template/spec/nodeSelector")
            )),
        ],
        "/spec/template/spec",
        Some(format_selector(obj.pointer("/spec/selector"))),
    )
}

pub(super) fn stateful_set(now: DateTime<Utc>, obj: &Value) -> Vec<Value> {
    let ready = format!(
        "{}/{}",
        i(obj, "/status/readyReplicas"),
        i(obj, "/spec/replicas")
    );
    workload_row(now, obj, vec![json!(ready)], "/spec/template/spec", None)
}

pub(super) fn controller_revision(now: DateTime<Utc>, obj: &Value) -> Vec<Value> {
    let controller = arr(obj, "/metadata/ownerReferences")
        .iter()
        .find(|r| ob(r, "/controller") == Some(true))
        .map_or("<none>".to_string(), |r| {
            let group = s(r, "/apiVersion").rsplit_once('/').map_or("", |(g, _)| g);
            let kind = s(r, "/kind");
            let group_kind = if group.is_empty() {
                kind.to_string()
            } else {
                format!("{kind}.{group}")
            };
            if group_kind.is_empty() {
                s(r, "/name").to_string()
            } else {
                format!("{}/{}", group_kind.to_lowercase(), s(r, "/name"))
            }
        });
    vec![
        json!(s(obj, "/metadata/name")),
        json!(controller),
        json!(i(obj, "/revision")),
        json!(age(now, obj)),
    ]
}

fn job_condition(obj: &Value, type_: &str) -> bool {
    arr(obj, "/status/conditions")
        .iter()
        .find(|c| s(c, "/type") == type_)
        .is_some_and(|c| s(c, "/status") == "True")
}

pub(super) fn job(now: DateTime<Utc>, obj: &Value) -> Vec<Value> {
    let succeeded = i(obj, "/status/succeeded");
    let completions = match oi(obj, "/spec/completions") {
        Some(c) => format!("{succeeded}/{c}"),
        None => {
            let parallelism = i(obj, "/spec/parallelism");
            if parallelism > 1 {
                format!("{succeeded}/1 of {parallelism}")
            } else {
                format!("{succeeded}/1")
            }
        }
    };
    let duration = match (
        time(obj, "/status/startTime"),
        time(obj, "/status/completionTime"),
    ) {
        (None, _) => String::new(),
        (Some(start), None) => human_duration(now - start),
        (Some(start), Some(end)) => human_duration(end - start),
    };
    let deleting = obj
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null());
    let status = if job_condition(obj, "Complete") {
        "Complete"
    } else if job_condition(obj, "Failed") {
        "Failed"
    } else if deleting {
        "Terminating"
    } else if job_condition(obj, "Suspended") {
        "Suspended"
    } else if job_condition(obj, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    workload_row(
        now,
        obj,
        vec![json!(status), json!(completions), json!(duration)],
        "/spec/template/spec",
        Some(format_selector(obj.pointer("/spec/selector"))),
    )
}

pub(super) fn cron_job(now: DateTime<Utc>, obj: &Value) -> Vec<Value> {
    let last = match time(obj, "/status/lastScheduleTime") {
        Some(t) => since(now, Some(t)),
        None => "<none>".to_string(),
    };
    workload_row(
        now,
        obj,
        vec![
            json!(s(obj, "/spec/schedule")),
            json!(or(s(obj, "/spec/timeZone"), "<none>")),
            json!(bool_ptr(ob(obj, "/spec/suspend"))),
            json!(arr(obj, "/status/active").len() as i64),
            json!(last),
        ],
        "/spec/jobTemplate/spec/template/spec",
        Some(format_selector(
            obj.pointer("/spec/jobTemplate/spec/selector"),
        )),
    )
}

fn q(v: &Value, ptr: &str) -> String {
    quantity(v.pointer(ptr))
}

fn current_or_unknown(status: Option<&Value>, ptr: &str) -> String {
    status
        .and_then(|st| st.pointer(ptr))
        .map_or("<unknown>".to_string(), |v| quantity(Some(v)))
}

/// `formatHPAMetrics` over autoscaling/v2 metric specs.
fn hpa_metrics_v2(specs: &[Value], statuses: &[Value]) -> String {
    if specs.is_empty() {
        return "<none>".to_string();
    }
    let mut list: Vec<String> = Vec::new();
    for (idx, spec) in specs.iter().enumerate() {
        let status = statuses.get(idx);
        let text = match s(spec, "/type") {
            "External" | "Object" => {
                let key = if s(spec, "/type") == "External" {
                    "external"
                } else {
                    "object"
                };
                let st = status.and_then(|st| st.get(key));
                if spec
                    .pointer(&format!("/{key}/target/averageValue"))
                    .is_some()
                {
                    format!(
                        "{}/{} (avg)",
                        current_or_unknown(st, "/current/averageValue"),
                        q(spec, &format!("/{key}/target/averageValue"))
                    )
                } else {
                    let current = st.map_or("<unknown>".to_string(), |st| q(st, "/current/value"));
                    format!("{current}/{}", q(spec, &format!("/{key}/target/value")))
                }
            }
            "Pods" => {
                let current = status
                    .and_then(|st| st.get("pods"))
                    .map_or("<unknown>".to_string(), |st| q(st, "/current/averageValue"));
                format!("{current}/{}", q(spec, "/pods/target/averageValue"))
            }
            "Resource" | "ContainerResource" => {
                let key = if s(spec, "/type") == "Resource" {
                    "resource"
                } else {
                    "containerResource"
                };
                let st = status.and_then(|st| st.get(key));
                let name = s(spec, &format!("/{key}/name"));
                if spec
                    .pointer(&format!("/{key}/target/averageValue"))
                    .is_some()
                {
                    let current =
                        st.map_or("<unknown>".to_string(), |st| q(st, "/current/averageValue"));
                    format!(
                        "{name}: {current}/{}",
                        q(spec, &format!("/{key}/target/averageValue"))
                    )
                } else {
                    let current = st
                        .and_then(|st| oi(st, "/current/averageUtilization"))
                        .map_or("<unknown>".to_string(), |u| format!("{u}%"));
                    let target = oi(spec, &format!("/{key}/target/averageUtilization"))
                        .map_or("<auto>".to_string(), |u| format!("{u}%"));
                    format!("{name}: {current}/{target}")
                }
            }
            _ => "<unknown type>".to_string(),
        };
        list.push(text);
    }
    let count = list.len();
    if count > 2 {
        format!("{} + {} more...", list[..2].join(", "), count - 2)
    } else {
        list.join(", ")
    }
}

/// Both autoscaling/v2 and v1 HPAs (v1 has only the CPU utilization target).
pub(super) fn horizontal_pod_autoscaler(now: DateTime<Utc>, obj: &Value) -> Vec<Value> {
    let metrics =
        if obj.pointer("/spec/metrics").is_some() || s(obj, "/apiVersion") != "autoscaling/v1" {
            hpa_metrics_v2(
                arr(obj, "/spec/metrics"),
                arr(obj, "/status/currentMetrics"),
            )
        } else {
            let target = oi(obj, "/spec/targetCPUUtilizationPercentage");
            let current = oi(obj, "/status/currentCPUUtilizationPercentage")
                .map_or("<unknown>".to_string(), |u| format!("{u}%"));
            // v1 defaults the target to 80% when converting to the internal type.
            format!("cpu: {current}/{}%", target.unwrap_or(80))
        };
    let min = oi(obj, "/spec/minReplicas").map_or("<unset>".to_string(), |m| m.to_string());
    vec![
        json!(s(obj, "/metadata/name")),
        json!(format!(
            "{}/{}",
            s(obj, "/spec/scaleTargetRef/kind"),
            s(obj, "/spec/scaleTargetRef/name")
        )),
        json!(metrics),
        json!(min),
        json!(i(obj, "/spec/maxReplicas")),
        json!(i(obj, "/status/currentReplicas")),
        json!(age(now, obj)),
    ]
}

fn int_or_string(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "N/A".to_string(),
    }
}

pub(super) fn pod_disruption_budget(now: DateTime<Utc>, obj: &Value) -> Vec<Value> {
    vec![
        json!(s(obj, "/metadata/name")),
        json!(int_or_string(obj.pointer("/spec/minAvailable"))),
        json!(int_or_string(obj.pointer("/spec/maxUnavailable"))),
        json!(i(obj, "/status/disruptionsAllowed")),
        json!(age(now, obj)),
    ]
}
