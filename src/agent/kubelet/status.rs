//! Pod status as the kubelet reports it: phase (kubelet's `getPhase`),
//! conditions, container statuses and QoS class, built from the worker's
//! view of each container. Pure functions, unit tested.

use chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};

fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CState {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: DateTime<Utc>,
    },
    Terminated {
        exit_code: i32,
        reason: String,
        started_at: Option<DateTime<Utc>>,
        finished_at: Option<DateTime<Utc>>,
        container_id: String,
    },
}

impl CState {
    pub fn waiting(reason: &str, message: Option<String>) -> Self {
        Self::Waiting {
            reason: reason.into(),
            message,
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Self::Waiting { reason, message } => {
                let mut w = json!({"reason": reason});
                if let Some(m) = message {
                    w["message"] = json!(m);
                }
                json!({"waiting": w})
            }
            Self::Running { started_at } => json!({"running": {"startedAt": ts(started_at)}}),
            Self::Terminated {
                exit_code,
                reason,
                started_at,
                finished_at,
                container_id,
            } => {
                let mut t =
                    json!({"exitCode": exit_code, "reason": reason, "containerID": container_id});
                if let Some(s) = started_at {
                    t["startedAt"] = json!(ts(s));
                }
                if let Some(f) = finished_at {
                    t["finishedAt"] = json!(ts(f));
                }
                json!({"terminated": t})
            }
        }
    }
}

/// The worker's view of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CView {
    pub name: String,
    pub image: String,
    pub image_id: String,
    /// `containerd://<id>` once created.
    pub container_id: Option<String>,
    pub state: CState,
    pub last: Option<CState>,
    pub restart_count: u32,
    pub ready: bool,
    pub started: bool,
}

impl CView {
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "name": self.name,
            "image": self.image,
            "imageID": self.image_id,
            "state": self.state.to_json(),
            "lastState": self.last.as_ref().map_or(json!({}), CState::to_json),
            "restartCount": self.restart_count,
            "ready": self.ready,
            "started": self.started,
        });
        if let Some(id) = &self.container_id {
            v["containerID"] = json!(id);
        }
        v
    }
}

/// kubelet's `getPhase` for the app containers (init containers done).
pub fn phase(app: &[CView], restart_policy: &str) -> &'static str {
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in app {
        match &c.state {
            CState::Running { .. } => running += 1,
            CState::Terminated { exit_code, .. } => {
                stopped += 1;
                if *exit_code == 0 {
                    succeeded += 1;
                }
            }
            CState::Waiting { .. } => {
                if c.last.is_some() {
                    stopped += 1;
                } else {
                    waiting += 1;
                }
            }
        }
    }
    if waiting > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if stopped > 0 {
        if restart_policy == "Always" {
            return "Running";
        }
        if stopped == succeeded {
            return "Succeeded";
        }
        if restart_policy == "Never" {
            return "Failed";
        }
        return "Running";
    }
    "Pending"
}

/// Guaranteed, Burstable or BestEffort (kube's `GetPodQOS`, simplified to
/// cpu and memory).
pub fn qos_class(pod: &Pod) -> &'static str {
    let Some(spec) = &pod.spec else {
        return "BestEffort";
    };
    let all = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    let mut any = false;
    let mut guaranteed = true;
    for c in all {
        let r = c.resources.clone().unwrap_or_default();
        let limits = r.limits.unwrap_or_default();
        let requests = r.requests.unwrap_or_default();
        if !limits.is_empty() || !requests.is_empty() {
            any = true;
        }
        for res in ["cpu", "memory"] {
            let l = limits.get(res).map(|q| q.0.clone());
            let q = requests.get(res).map(|q| q.0.clone()).or(l.clone());
            if l.is_none() || q != l {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        _ => "Burstable",
    }
}

fn condition(kind: &str, ok: bool, reason: Option<&str>, since: &DateTime<Utc>) -> Value {
    let mut c = json!({"type": kind, "status": if ok { "True" } else { "False" }, "lastProbeTime": null, "lastTransitionTime": ts(since)});
    if let Some(r) = reason {
        c["reason"] = json!(r);
    }
    c
}

/// Everything the status is built from.
pub struct PodView<'a> {
    pub pod: &'a Pod,
    pub phase: &'static str,
    pub network_ready: bool,
    pub init_done: bool,
    pub init: &'a [CView],
    pub app: &'a [CView],
    pub pod_ip: Option<String>,
    pub host_ip: String,
    pub start_time: DateTime<Utc>,
    /// A pod-level reason/message (e.g. a volume that could not be set up).
    pub message: Option<String>,
}

pub fn build(v: &PodView<'_>) -> Value {
    let since = v.start_time;
    let all_ready = !v.app.is_empty() && v.app.iter().all(|c| c.ready);
    let not_ready_reason = if all_ready {
        None
    } else {
        Some("ContainersNotReady")
    };
    let conditions = vec![
        condition("PodReadyToStartContainers", v.network_ready, None, &since),
        condition(
            "Initialized",
            v.init_done,
            if v.init_done {
                None
            } else {
                Some("ContainersNotInitialized")
            },
            &since,
        ),
        condition("Ready", all_ready, not_ready_reason, &since),
        condition("ContainersReady", all_ready, not_ready_reason, &since),
        condition("PodScheduled", true, None, &since),
    ];
    let mut s = json!({
        "phase": v.phase,
        "conditions": conditions,
        "hostIP": v.host_ip,
        "hostIPs": [{"ip": v.host_ip}],
        "startTime": ts(&v.start_time),
        "qosClass": qos_class(v.pod),
        "containerStatuses": v.app.iter().map(CView::to_json).collect::<Vec<_>>(),
    });
    if !v.init.is_empty() {
        s["initContainerStatuses"] = json!(v.init.iter().map(CView::to_json).collect::<Vec<_>>());
    }
    if let Some(ip) = &v.pod_ip {
        s["podIP"] = json!(ip);
        s["podIPs"] = json!([{"ip": ip}]);
    }
    if let Some(m) = &v.message {
        s["message"] = json!(m);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(state: CState, last: Option<CState>) -> CView {
        CView {
            name: "c".into(),
            image: "i".into(),
            image_id: String::new(),
            container_id: None,
            state,
            last,
            restart_count: 0,
            ready: false,
            started: false,
        }
    }

    fn term(code: i32) -> CState {
        CState::Terminated {
            exit_code: code,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            started_at: None,
            finished_at: None,
            container_id: "containerd://x".into(),
        }
    }

    #[test]
    fn phases_follow_getphase() {
        let creating = view(CState::waiting("ContainerCreating", None), None);
        assert_eq!(phase(&[creating], "Always"), "Pending");
        let run = view(
            CState::Running {
                started_at: Utc::now(),
            },
            None,
        );
        assert_eq!(phase(&[run], "Always"), "Running");
        let crash = view(CState::waiting("CrashLoopBackOff", None), Some(term(1)));
        assert_eq!(phase(&[crash], "Always"), "Running");
        assert_eq!(phase(&[view(term(0), None)], "Never"), "Succeeded");
        assert_eq!(phase(&[view(term(1), None)], "Never"), "Failed");
        assert_eq!(
            phase(&[view(term(0), None), view(term(1), None)], "OnFailure"),
            "Running"
        );
    }

    #[test]
    fn qos_classes() {
        let pod = |res: serde_json::Value| -> Pod {
            serde_json::from_value(
                json!({"spec": {"containers": [{"name": "c", "resources": res}]}}),
            )
            .unwrap()
        };
        assert_eq!(qos_class(&pod(json!({}))), "BestEffort");
        assert_eq!(
            qos_class(&pod(json!({"limits": {"cpu": "1", "memory": "1Gi"}}))),
            "Guaranteed"
        );
        assert_eq!(
            qos_class(&pod(json!({"requests": {"memory": "1Gi"}}))),
            "Burstable"
        );
    }

    #[test]
    fn status_has_conditions_and_ips() {
        let pod: Pod =
            serde_json::from_value(json!({"spec": {"containers": [{"name": "c"}]}})).unwrap();
        let mut c = view(
            CState::Running {
                started_at: Utc::now(),
            },
            None,
        );
        c.ready = true;
        let app = [c];
        let s = build(&PodView {
            pod: &pod,
            phase: "Running",
            network_ready: true,
            init_done: true,
            init: &[],
            app: &app,
            pod_ip: Some("10.42.0.2".into()),
            host_ip: "192.168.1.2".into(),
            start_time: Utc::now(),
            message: None,
        });
        assert_eq!(s["podIP"], "10.42.0.2");
        let ready = s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(ready["status"], "True");
        assert_eq!(
            s["containerStatuses"][0]["state"]["running"].is_object(),
            true
        );
        assert_eq!(s["qosClass"], "BestEffort");
    }
}
