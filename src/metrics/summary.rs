//! The numbers a node reports and the shapes the API serves from them.
//!
//! [`Summary`] is the subset of the kubelet's Summary API
//! (`/stats/summary`, `stats/v1alpha1`) that resource metrics need: the
//! node's and each container's CPU (cumulative core-nanoseconds and the
//! rate over the last sampling window, in nanocores) and memory working
//! set, with the time of the newer sample and the window. Field names are
//! the kubelet's, so a tool that reads a kubelet's summary reads ours.
//!
//! [`node_metrics`] and [`pod_metrics`] turn them into `metrics.k8s.io/v1beta1`
//! `NodeMetrics` and `PodMetrics` as metrics-server serves them: `timestamp`,
//! `window`, `usage.cpu` in canonical decimal units (nanocores: `12345n`),
//! `usage.memory` in canonical binary units (`51200Ki`).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// What one node reports (`GET /stats/summary` on its kubelet API).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub node: NodeStats,
    #[serde(default)]
    pub pods: Vec<PodStats>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStats {
    pub node_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRef {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStats {
    pub pod_ref: PodRef,
    #[serde(default)]
    pub containers: Vec<ContainerStats>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStats {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
}

/// CPU of a node or container: the rate over the window that ends at `time`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuStats {
    /// When the newer of the two samples was taken.
    pub time: DateTime<Utc>,
    /// Average usage over the window, in billionths of a core.
    pub usage_nano_cores: u64,
    /// Cumulative usage since the cgroup (or the machine) started.
    pub usage_core_nano_seconds: u64,
    /// rk3s's addition: the window the rate is over, in seconds (the kubelet
    /// leaves it implicit; metrics-server reports it as `window`).
    #[serde(default)]
    pub window_seconds: f64,
}

/// Memory of a node or container at `time`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryStats {
    pub time: DateTime<Utc>,
    /// Usage minus inactive file pages: what the kernel cannot easily reclaim.
    pub working_set_bytes: u64,
    pub usage_bytes: u64,
}

/// A CPU quantity in kube's canonical decimal form from nanocores:
/// `1500000n` → `1500u`, `2000000000n` → `2`.
pub fn cpu_quantity(nanocores: u64) -> String {
    const SUFFIXES: [&str; 5] = ["n", "u", "m", "", "k"];
    let (mut v, mut i) = (nanocores, 0);
    while v != 0 && v % 1000 == 0 && i + 1 < SUFFIXES.len() {
        v /= 1000;
        i += 1;
    }
    if v == 0 {
        return "0".into();
    }
    format!("{v}{}", SUFFIXES[i])
}

/// A memory quantity in kube's canonical binary form from bytes:
/// `52428800` → `50Mi`, `1000` → `1000`.
pub fn memory_quantity(bytes: u64) -> String {
    const SUFFIXES: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    let (mut v, mut i) = (bytes, 0);
    while v != 0 && v % 1024 == 0 && i + 1 < SUFFIXES.len() {
        v /= 1024;
        i += 1;
    }
    format!("{v}{}", SUFFIXES[i])
}

/// A window as metrics-server writes it (a Go duration: `10.003s`).
pub fn window(seconds: f64) -> String {
    let ms = (seconds * 1000.0).round() as u64;
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        let text = format!("{:.3}", ms as f64 / 1000.0);
        format!("{}s", text.trim_end_matches('0'))
    }
}

fn timestamp(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The object metadata metrics-server gives: name, namespace, labels of the
/// measured object, and its own creation time (now).
fn metadata(name: &str, namespace: Option<&str>, labels: &Value, now: &DateTime<Utc>) -> Value {
    let mut m = json!({"name": name, "creationTimestamp": timestamp(now)});
    if let Some(ns) = namespace {
        m["namespace"] = json!(ns);
    }
    if labels.as_object().is_some_and(|l| !l.is_empty()) {
        m["labels"] = labels.clone();
    }
    m
}

/// `NodeMetrics` for a node, `None` until its first CPU rate exists.
pub fn node_metrics(node: &NodeStats, labels: &Value, now: &DateTime<Utc>) -> Option<Value> {
    let cpu = node.cpu.as_ref()?;
    let memory = node.memory.as_ref()?;
    Some(json!({
        "kind": "NodeMetrics",
        "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": metadata(&node.node_name, None, labels, now),
        "timestamp": timestamp(&cpu.time),
        "window": window(cpu.window_seconds),
        "usage": {
            "cpu": cpu_quantity(cpu.usage_nano_cores),
            "memory": memory_quantity(memory.working_set_bytes),
        },
    }))
}

/// `PodMetrics` for a pod, `None` while a container has no CPU rate yet
/// (metrics-server leaves such pods out rather than report a partial pod).
pub fn pod_metrics(pod: &PodStats, labels: &Value, now: &DateTime<Utc>) -> Option<Value> {
    if pod.containers.is_empty() {
        return None;
    }
    let mut containers = Vec::new();
    let mut newest: Option<&CpuStats> = None;
    for c in &pod.containers {
        let cpu = c.cpu.as_ref()?;
        let memory = c.memory.as_ref()?;
        if newest.is_none_or(|n| cpu.time > n.time) {
            newest = Some(cpu);
        }
        containers.push(json!({
            "name": c.name,
            "usage": {
                "cpu": cpu_quantity(cpu.usage_nano_cores),
                "memory": memory_quantity(memory.working_set_bytes),
            },
        }));
    }
    let cpu = newest?;
    Some(json!({
        "kind": "PodMetrics",
        "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": metadata(&pod.pod_ref.name, Some(&pod.pod_ref.namespace), labels, now),
        "timestamp": timestamp(&cpu.time),
        "window": window(cpu.window_seconds),
        "containers": containers,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_are_canonical_as_kube_prints_them() {
        assert_eq!(cpu_quantity(0), "0");
        assert_eq!(cpu_quantity(123_456_789), "123456789n");
        assert_eq!(cpu_quantity(1_500_000), "1500u");
        assert_eq!(cpu_quantity(250_000_000), "250m");
        assert_eq!(cpu_quantity(2_000_000_000), "2");
        assert_eq!(memory_quantity(0), "0");
        assert_eq!(memory_quantity(1000), "1000");
        assert_eq!(memory_quantity(51_200 * 1024 + 1024), "51201Ki");
        assert_eq!(memory_quantity(50 * 1024 * 1024), "50Mi");
        // What kubectl reads back is the same number.
        for n in [1u64, 999, 1_000_000_001, 987_654_321] {
            let q = cpu_quantity(n);
            let parsed = crate::quantity::parse(&q).unwrap();
            assert!((parsed * 1e9 - n as f64).abs() < 1.0, "{q}");
        }
    }

    #[test]
    fn windows_read_like_go_durations() {
        assert_eq!(window(10.0), "10s");
        assert_eq!(window(10.0034), "10.003s");
        assert_eq!(window(15.5), "15.5s");
    }

    fn cpu(n: u64, at: i64) -> Option<CpuStats> {
        Some(CpuStats {
            time: DateTime::from_timestamp(at, 0).unwrap(),
            usage_nano_cores: n,
            usage_core_nano_seconds: n * 10,
            window_seconds: 10.0,
        })
    }

    fn mem(bytes: u64) -> Option<MemoryStats> {
        Some(MemoryStats {
            time: DateTime::from_timestamp(0, 0).unwrap(),
            working_set_bytes: bytes,
            usage_bytes: bytes,
        })
    }

    #[test]
    fn pod_metrics_have_metrics_servers_shape() {
        let now = DateTime::from_timestamp(1_000, 0).unwrap();
        let pod = PodStats {
            pod_ref: PodRef {
                name: "web".into(),
                namespace: "default".into(),
                uid: "u".into(),
            },
            containers: vec![
                ContainerStats {
                    name: "a".into(),
                    cpu: cpu(1_000_000, 990),
                    memory: mem(4096),
                },
                ContainerStats {
                    name: "b".into(),
                    cpu: cpu(5, 995),
                    memory: mem(1000),
                },
            ],
        };
        let got = pod_metrics(&pod, &json!({"app": "web"}), &now).unwrap();
        assert_eq!(
            got,
            json!({
                "kind": "PodMetrics", "apiVersion": "metrics.k8s.io/v1beta1",
                "metadata": {"name": "web", "namespace": "default",
                    "creationTimestamp": "1970-01-01T00:16:40Z", "labels": {"app": "web"}},
                "timestamp": "1970-01-01T00:16:35Z", "window": "10s",
                "containers": [
                    {"name": "a", "usage": {"cpu": "1m", "memory": "4Ki"}},
                    {"name": "b", "usage": {"cpu": "5n", "memory": "1000"}},
                ],
            })
        );
        // A container without a rate yet hides the pod.
        let mut partial = pod.clone();
        partial.containers[1].cpu = None;
        assert_eq!(pod_metrics(&partial, &json!({}), &now), None);
    }

    #[test]
    fn node_metrics_need_both_figures() {
        let now = DateTime::from_timestamp(1_000, 0).unwrap();
        let mut node = NodeStats {
            node_name: "n1".into(),
            cpu: cpu(1_999_000_000, 990),
            memory: mem(3 * 1024 * 1024 * 1024),
        };
        let got = node_metrics(&node, &json!({}), &now).unwrap();
        assert_eq!(got["usage"], json!({"cpu": "1999m", "memory": "3Gi"}));
        assert_eq!(got["metadata"]["name"], "n1");
        assert!(got["metadata"].get("labels").is_none());
        node.memory = None;
        assert_eq!(node_metrics(&node, &json!({}), &now), None);
    }

    #[test]
    fn summary_reads_a_kubelet_summary() {
        // The kubelet's field names; fields we do not use are ignored.
        let text = r#"{"node":{"nodeName":"n","startTime":"2024-01-01T00:00:00Z",
            "cpu":{"time":"2024-01-01T00:00:10Z","usageNanoCores":5,"usageCoreNanoSeconds":50},
            "memory":{"time":"2024-01-01T00:00:10Z","workingSetBytes":7,"usageBytes":9,"rssBytes":1}},
            "pods":[{"podRef":{"name":"p","namespace":"d","uid":"u"},"containers":[{"name":"c"}]}]}"#;
        let s: Summary = serde_json::from_str(text).unwrap();
        assert_eq!(s.node.cpu.as_ref().unwrap().usage_nano_cores, 5);
        assert_eq!(s.node.memory.as_ref().unwrap().working_set_bytes, 7);
        assert_eq!(s.pods[0].containers[0].cpu, None);
    }
}
