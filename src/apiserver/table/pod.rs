//! The pod printer: READY, STATUS and RESTARTS exactly as kube-apiserver's
//! `printPod` derives them from container states, init containers, sidecars
//! (restartable init containers) and deletion.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::util::*;

/// What a printer produced for one object: the cells and the row conditions.
pub(super) struct Printed {
    pub cells: Vec<Value>,
    pub conditions: Option<Value>,
}

impl From<Vec<Value>> for Printed {
    fn from(cells: Vec<Value>) -> Self {
        Printed {
            cells,
            conditions: None,
        }
    }
}

fn condition_true(conditions: &[Value], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| s(c, "/type") == type_ && s(c, "/status") == "True")
}

/// `isPodInitializedConditionTrue`: the first Initialized condition decides.
fn initialized(conditions: &[Value]) -> bool {
    conditions
        .iter()
        .find(|c| s(c, "/type") == "Initialized")
        .is_some_and(|c| s(c, "/status") == "True")
}

fn later(current: &mut Option<DateTime<Utc>>, candidate: Option<DateTime<Utc>>) {
    if let Some(t) = candidate {
        if current.is_none_or(|c| c < t) {
            *current = Some(t);
        }
    }
}

/// The pod's STATUS, READY and RESTARTS logic of `printPod`.
pub(super) fn pod(now: DateTime<Utc>, pod: &Value) -> Printed {
    let conditions = arr(pod, "/status/conditions");
    let phase = s(pod, "/status/phase");
    let mut reason = phase.to_string();
    if !s(pod, "/status/reason").is_empty() {
        reason = s(pod, "/status/reason").to_string();
    }
    for c in conditions {
        if s(c, "/type") == "PodScheduled" && s(c, "/reason") == "SchedulingGated" {
            reason = "SchedulingGated".to_string();
        }
    }
    let row_conditions = match phase {
        "Succeeded" => Some(
            json!([{"type": "Completed", "status": "True", "reason": "Succeeded",
            "message": "The pod has completed successfully."}]),
        ),
        "Failed" => Some(
            json!([{"type": "Completed", "status": "True", "reason": "Failed",
            "message": "The pod failed."}]),
        ),
        _ => None,
    };

    let init_specs = arr(pod, "/spec/initContainers");
    let restartable = |name: &str| {
        init_specs
            .iter()
            .any(|c| s(c, "/name") == name && s(c, "/restartPolicy") == "Always")
    };
    let total = arr(pod, "/spec/containers").len()
        + init_specs
            .iter()
            .filter(|c| s(c, "/restartPolicy") == "Always")
            .count();
    let mut ready = 0usize;
    let mut restarts = 0i64;
    let mut sidecar_restarts = 0i64;
    let mut last_restart: Option<DateTime<Utc>> = None;
    let mut last_sidecar_restart: Option<DateTime<Utc>> = None;

    let mut initializing = false;
    for (idx, c) in arr(pod, "/status/initContainerStatuses").iter().enumerate() {
        let count = i(c, "/restartCount");
        restarts += count;
        let finished = time(c, "/lastState/terminated/finishedAt");
        if present(c, "/lastState/terminated") {
            later(&mut last_restart, finished);
        }
        let is_sidecar = restartable(s(c, "/name"));
        if is_sidecar {
            sidecar_restarts += count;
            if present(c, "/lastState/terminated") {
                later(&mut last_sidecar_restart, finished);
            }
        }
        let terminated = present(c, "/state/terminated");
        let waiting_reason = s(c, "/state/waiting/reason");
        if terminated && i(c, "/state/terminated/exitCode") == 0 {
            continue;
        } else if is_sidecar && ob(c, "/started") == Some(true) {
            if ob(c, "/ready") == Some(true) {
                ready += 1;
            }
            continue;
        } else if terminated {
            let term_reason = s(c, "/state/terminated/reason");
            reason = if !term_reason.is_empty() {
                format!("Init:{term_reason}")
            } else if i(c, "/state/terminated/signal") != 0 {
                format!("Init:Signal:{}", i(c, "/state/terminated/signal"))
            } else {
                format!("Init:ExitCode:{}", i(c, "/state/terminated/exitCode"))
            };
        } else if present(c, "/state/waiting")
            && !waiting_reason.is_empty()
            && waiting_reason != "PodInitializing"
        {
            reason = format!("Init:{waiting_reason}");
        } else {
            reason = format!("Init:{idx}/{}", init_specs.len());
        }
        initializing = true;
        break;
    }

    if !initializing || initialized(conditions) {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        for c in arr(pod, "/status/containerStatuses").iter().rev() {
            restarts += i(c, "/restartCount");
            if present(c, "/lastState/terminated") {
                later(
                    &mut last_restart,
                    time(c, "/lastState/terminated/finishedAt"),
                );
            }
            let waiting_reason = s(c, "/state/waiting/reason");
            let terminated = present(c, "/state/terminated");
            let term_reason = s(c, "/state/terminated/reason");
            if present(c, "/state/waiting") && !waiting_reason.is_empty() {
                reason = waiting_reason.to_string();
            } else if terminated && !term_reason.is_empty() {
                reason = term_reason.to_string();
            } else if terminated {
                let signal = i(c, "/state/terminated/signal");
                reason = if signal != 0 {
                    format!("Signal:{signal}")
                } else {
                    format!("ExitCode:{}", i(c, "/state/terminated/exitCode"))
                };
            } else if ob(c, "/ready") == Some(true) && present(c, "/state/running") {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            reason = if condition_true(conditions, "Ready") {
                "Running"
            } else {
                "NotReady"
            }
            .to_string();
        }
    }

    let deleting = pod
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null());
    if deleting && s(pod, "/status/reason") == "NodeLost" {
        reason = "Unknown".to_string();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".to_string();
    }

    let restarts_text = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", human_duration(now - t)),
        _ => restarts.to_string(),
    };

    let pod_ip = arr(pod, "/status/podIPs")
        .first()
        .map(|p| s(p, "/ip"))
        .unwrap_or("");
    let gates = arr(pod, "/spec/readinessGates");
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let true_count = gates
            .iter()
            .filter(|g| {
                conditions
                    .iter()
                    .find(|c| s(c, "/type") == s(g, "/conditionType"))
                    .is_some_and(|c| s(c, "/status") == "True")
            })
            .count();
        format!("{true_count}/{}", gates.len())
    };
    Printed {
        cells: vec![
            json!(s(pod, "/metadata/name")),
            json!(format!("{ready}/{total}")),
            json!(reason),
            json!(restarts_text),
            json!(age(now, pod)),
            json!(or(pod_ip, "<none>")),
            json!(or(s(pod, "/spec/nodeName"), "<none>")),
            json!(or(s(pod, "/status/nominatedNodeName"), "<none>")),
            json!(readiness_gates),
        ],
        conditions: row_conditions,
    }
}
