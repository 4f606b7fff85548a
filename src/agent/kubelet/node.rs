//! The Node object: host facts, registration (labels and taints applied
//! once, at creation) and the status the kubelet computes every
//! [`STATUS_PERIOD`] (capacity, addresses, nodeInfo, conditions with
//! kube's reasons and messages) and posts only when it changed or every
//! [`REPORT_FREQUENCY`], as kubelet does: the Lease (kept in memory by the
//! store) is the heartbeat, so an idle node writes nothing to disk.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{json, Value};

use crate::config::NodeConfig;

/// How often the kubelet looks at its node (a read; a write only on change).
pub const STATUS_PERIOD: Duration = Duration::from_secs(10);
/// kubelet's nodeStatusReportFrequency: an unchanged status is re-posted
/// this often, so `lastHeartbeatTime` says the kubelet is alive to readers
/// that do not look at the Lease.
pub const REPORT_FREQUENCY: Duration = Duration::from_secs(300);
pub const KUBELET_VERSION: &str = "v1.32.0+rk3s1";
pub const MAX_PODS: u32 = 110;
/// Below this much available memory the node reports MemoryPressure
/// (kubelet's default hard eviction threshold).
const MEMORY_PRESSURE_BYTES: u64 = 100 << 20;
/// Below this share of free space on the data dir's filesystem: DiskPressure.
const DISK_PRESSURE_FREE: f64 = 0.10;

/// What the node reports about its machine.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeFacts {
    pub cpus: u32,
    pub memory_bytes: u64,
    pub memory_available_bytes: u64,
    pub disk_bytes: u64,
    pub disk_free_bytes: u64,
    pub hostname: String,
    pub internal_ip: IpAddr,
    pub os_image: String,
    pub kernel_version: String,
    pub arch: &'static str,
    pub runtime_version: String,
}

/// Kubernetes' GOARCH name for this machine.
pub fn kube_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "riscv64" => "riscv64",
        other => other,
    }
}

fn meminfo(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kb| kb * 1024)
}

fn statvfs(path: &Path) -> (u64, u64) {
    crate::hostos::fs_usage(path).map_or((0, 0), |u| (u.capacity, u.available))
}

fn read_hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn os_image() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim_matches('"').to_string())
            })
        })
        .unwrap_or_else(|| "Linux".into())
}

/// The address of the interface that holds the default route (the UDP
/// "connect" trick sends nothing), or loopback when there is none.
pub fn detect_node_ip() -> IpAddr {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("8.8.8.8:53")?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

impl NodeFacts {
    /// Reads the machine; `disk_dir` is the data dir whose filesystem is the
    /// node's ephemeral storage.
    pub fn gather(node: &NodeConfig, disk_dir: &Path, runtime_version: &str) -> Self {
        let (disk_bytes, disk_free_bytes) = statvfs(disk_dir);
        Self {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            memory_bytes: meminfo("MemTotal:").unwrap_or(0),
            memory_available_bytes: meminfo("MemAvailable:").unwrap_or(0),
            disk_bytes,
            disk_free_bytes,
            hostname: read_hostname().unwrap_or_else(|| node.node_name.clone()),
            internal_ip: node.node_ip.unwrap_or_else(detect_node_ip),
            os_image: os_image(),
            kernel_version: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            arch: kube_arch(),
            runtime_version: runtime_version.to_string(),
        }
    }
}

fn condition(kind: &str, status: bool, reason: &str, message: &str, now: &str) -> Value {
    json!({
        "type": kind,
        "status": if status { "True" } else { "False" },
        "reason": reason,
        "message": message,
        "lastHeartbeatTime": now,
        "lastTransitionTime": now,
    })
}

/// The node's status. `network_ready` is false until the pod network is
/// configured (kubelet's NetworkPluginNotReady).
pub fn build_status(facts: &NodeFacts, network_ready: bool) -> Value {
    let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mem_pressure =
        facts.memory_available_bytes > 0 && facts.memory_available_bytes < MEMORY_PRESSURE_BYTES;
    let disk_pressure = facts.disk_bytes > 0
        && (facts.disk_free_bytes as f64) < DISK_PRESSURE_FREE * facts.disk_bytes as f64;
    let ready = if network_ready {
        condition(
            "Ready",
            true,
            "KubeletReady",
            "kubelet is posting ready status",
            &now,
        )
    } else {
        condition(
            "Ready",
            false,
            "KubeletNotReady",
            "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:waiting for the node's spec.podCIDR",
            &now,
        )
    };
    let memory = if mem_pressure {
        condition(
            "MemoryPressure",
            true,
            "KubeletHasInsufficientMemory",
            "kubelet has insufficient memory available",
            &now,
        )
    } else {
        condition(
            "MemoryPressure",
            false,
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
            &now,
        )
    };
    let disk = if disk_pressure {
        condition(
            "DiskPressure",
            true,
            "KubeletHasDiskPressure",
            "kubelet has disk pressure",
            &now,
        )
    } else {
        condition(
            "DiskPressure",
            false,
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
            &now,
        )
    };
    let pid = condition(
        "PIDPressure",
        false,
        "KubeletHasSufficientPID",
        "kubelet has sufficient PID available",
        &now,
    );
    let capacity = json!({
        "cpu": facts.cpus.to_string(),
        "memory": format!("{}Ki", facts.memory_bytes / 1024),
        "pods": MAX_PODS.to_string(),
        "ephemeral-storage": format!("{}Ki", facts.disk_bytes / 1024),
    });
    // No reservations are configured: allocatable is capacity, as in k3s.
    json!({
        "capacity": capacity,
        "allocatable": capacity,
        "conditions": [memory, disk, pid, ready],
        "addresses": [
            {"type": "InternalIP", "address": facts.internal_ip.to_string()},
            {"type": "Hostname", "address": facts.hostname},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {
            "machineID": std::fs::read_to_string("/etc/machine-id").map(|s| s.trim().to_string()).unwrap_or_default(),
            "systemUUID": "",
            "bootID": std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default(),
            "kernelVersion": facts.kernel_version,
            "osImage": facts.os_image,
            "containerRuntimeVersion": facts.runtime_version,
            "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": KUBELET_VERSION,
            "operatingSystem": "linux",
            "architecture": facts.arch,
        },
    })
}

/// The Node as first registered: k3s's labels, `--node-label`s and
/// `--node-taint`s.
pub fn build_node(node: &NodeConfig, facts: &NodeFacts) -> Value {
    let mut labels = serde_json::Map::new();
    labels.insert("kubernetes.io/hostname".into(), json!(node.node_name));
    labels.insert("kubernetes.io/os".into(), json!("linux"));
    labels.insert("kubernetes.io/arch".into(), json!(facts.arch));
    labels.insert("beta.kubernetes.io/os".into(), json!("linux"));
    labels.insert("beta.kubernetes.io/arch".into(), json!(facts.arch));
    labels.insert("node.kubernetes.io/instance-type".into(), json!("rk3s"));
    labels.insert("beta.kubernetes.io/instance-type".into(), json!("rk3s"));
    for (k, v) in &node.node_labels {
        labels.insert(k.clone(), json!(v));
    }
    let taints: Vec<Value> = node
        .node_taints
        .iter()
        .map(|t| {
            let mut m = json!({"key": t.key, "effect": t.effect.name()});
            if let Some(v) = &t.value {
                m["value"] = json!(v);
            }
            m
        })
        .collect();
    let mut spec = json!({});
    if !taints.is_empty() {
        spec["taints"] = json!(taints);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node.node_name, "labels": labels},
        "spec": spec,
    })
}

#[derive(Debug, thiserror::Error)]
#[error("failed to {op}: {source}")]
pub struct NodeError {
    op: String,
    #[source]
    source: Box<kube::Error>,
}

fn node_err(op: impl Into<String>) -> impl FnOnce(kube::Error) -> NodeError {
    let op = op.into();
    move |e| NodeError {
        op,
        source: Box::new(e),
    }
}

/// Creates the Node, or leaves an existing one's spec alone (a restarted
/// agent keeps what the cluster changed), then posts its status.
pub async fn register(
    client: &Client,
    node: &NodeConfig,
    facts: &NodeFacts,
    network_ready: bool,
) -> Result<Node, NodeError> {
    let api: Api<Node> = Api::all(client.clone());
    let name = &node.node_name;
    if api
        .get_opt(name)
        .await
        .map_err(node_err(format!("get node {name}")))?
        .is_none()
    {
        let obj: Node = serde_json::from_value(build_node(node, facts)).expect("valid node");
        match api.create(&PostParams::default(), &obj).await {
            Ok(_) => tracing::info!(node = %name, "registered the node"),
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(node_err(format!("register node {name}"))(e)),
        }
    }
    post_status(client, name, facts, network_ready).await
}

/// Whether `new` (a [`build_status`]) says something `old` does not, the
/// conditions' timestamps aside: the only test for a write besides the
/// report frequency.
pub fn status_changed(old: &Value, new: &Value) -> bool {
    fn strip(v: &Value) -> Value {
        let mut v = v.clone();
        for c in v["conditions"].as_array_mut().into_iter().flatten() {
            if let Some(m) = c.as_object_mut() {
                m.remove("lastHeartbeatTime");
                m.remove("lastTransitionTime");
            }
        }
        v
    }
    let (old, new) = (strip(old), strip(new));
    let Some(fields) = new.as_object() else {
        return true;
    };
    // Only the fields the kubelet owns: others (images, volumes) are not ours.
    fields.iter().any(|(k, v)| old.get(k) != Some(v))
}

/// The newest `lastHeartbeatTime` among `status`'s conditions.
fn last_heartbeat(status: &Value) -> Option<chrono::DateTime<Utc>> {
    status["conditions"]
        .as_array()?
        .iter()
        .filter_map(|c| c["lastHeartbeatTime"].as_str())
        .filter_map(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .max()
}

/// Posts the node's status when it changed or the last report is older
/// than [`REPORT_FREQUENCY`] (kubelet's nodeStatusReportFrequency); on an
/// idle node this writes nothing (the Lease is the heartbeat). Returns the
/// Node as it now is.
pub async fn post_status(
    client: &Client,
    name: &str,
    facts: &NodeFacts,
    network_ready: bool,
) -> Result<Node, NodeError> {
    let api: Api<Node> = Api::all(client.clone());
    let mut status = build_status(facts, network_ready);
    let current = api
        .get_opt(name)
        .await
        .map_err(node_err(format!("get node {name}")))?;
    if let Some(cur) = &current {
        let old =
            serde_json::to_value(cur.status.clone().unwrap_or_default()).unwrap_or(Value::Null);
        // Normalise ours through the same types the old one went through.
        let new = serde_json::from_value::<k8s_openapi::api::core::v1::NodeStatus>(status.clone())
            .ok()
            .and_then(|s| serde_json::to_value(s).ok())
            .unwrap_or(Value::Null);
        let fresh = last_heartbeat(&old).is_some_and(|t| {
            (Utc::now() - t).to_std().unwrap_or(Duration::ZERO) < REPORT_FREQUENCY
        });
        if fresh && !status_changed(&old, &new) {
            return Ok(cur.clone());
        }
        // Keep lastTransitionTime where the condition did not change.
        if let Some(old) = cur.status.as_ref().and_then(|s| s.conditions.as_ref()) {
            for c in status["conditions"].as_array_mut().into_iter().flatten() {
                if let Some(o) = old
                    .iter()
                    .find(|o| o.type_ == c["type"] && o.status == c["status"])
                {
                    if let Some(t) = &o.last_transition_time {
                        c["lastTransitionTime"] = json!(t.0.to_string());
                    }
                }
            }
        }
    }
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": status})),
    )
    .await
    .map_err(node_err(format!("update the status of node {name}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> NodeFacts {
        NodeFacts {
            cpus: 4,
            memory_bytes: 4 << 30,
            memory_available_bytes: 2 << 30,
            disk_bytes: 100 << 30,
            disk_free_bytes: 50 << 30,
            hostname: "pi1".into(),
            internal_ip: "192.168.1.10".parse().unwrap(),
            os_image: "Debian GNU/Linux 12 (bookworm)".into(),
            kernel_version: "6.1.0".into(),
            arch: "arm64",
            runtime_version: "containerd://1.6.20".into(),
        }
    }

    #[test]
    fn node_has_k3s_labels_and_taints() {
        let mut cfg = NodeConfig {
            node_name: "pi1".into(),
            node_ip: None,
            node_labels: Default::default(),
            node_taints: vec!["dedicated=gpu:NoSchedule".parse().unwrap()],
            container_runtime_endpoint: String::new(),
            private_registry: Default::default(),
            kubelet_args: Default::default(),
            node_external_ip: None,
            flannel_iface: None,
            resolv_conf: None,
            ingress_http_port: 80,
            ingress_https_port: 443,
            run_dir: Default::default(),
        };
        cfg.node_labels.insert("example.com/a".into(), "b".into());
        let n = build_node(&cfg, &facts());
        assert_eq!(
            n["metadata"]["labels"]["node.kubernetes.io/instance-type"],
            "rk3s"
        );
        assert_eq!(n["metadata"]["labels"]["kubernetes.io/arch"], "arm64");
        assert_eq!(n["metadata"]["labels"]["example.com/a"], "b");
        assert_eq!(
            n["spec"]["taints"][0],
            json!({"key": "dedicated", "value": "gpu", "effect": "NoSchedule"})
        );
        let _: Node = serde_json::from_value(n).unwrap();
    }

    #[test]
    fn status_reports_capacity_and_conditions() {
        let s = build_status(&facts(), true);
        assert_eq!(s["capacity"]["cpu"], "4");
        assert_eq!(s["capacity"]["pods"], "110");
        assert_eq!(s["capacity"]["memory"], "4194304Ki");
        assert_eq!(s["nodeInfo"]["kubeletVersion"], KUBELET_VERSION);
        let ready = s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(ready["reason"], "KubeletReady");
        let not_ready = build_status(&facts(), false);
        assert_eq!(not_ready["conditions"][3]["status"], "False");
        let mut low = facts();
        low.memory_available_bytes = 10 << 20;
        assert_eq!(
            build_status(&low, true)["conditions"][0]["reason"],
            "KubeletHasInsufficientMemory"
        );
    }

    #[test]
    fn an_unchanged_status_is_not_a_change_though_its_times_moved() {
        let a = build_status(&facts(), true);
        let mut b = a.clone();
        for c in b["conditions"].as_array_mut().unwrap() {
            c["lastHeartbeatTime"] = json!("2030-01-01T00:00:00Z");
            c["lastTransitionTime"] = json!("2030-01-01T00:00:00Z");
        }
        assert!(!status_changed(&a, &b));
        // Fields the kubelet does not own (images) do not count either.
        let mut with_images = a.clone();
        with_images["images"] = json!([{"names": ["busybox"]}]);
        assert!(!status_changed(&with_images, &b));
        assert!(status_changed(&a, &build_status(&facts(), false)));
        let mut low = facts();
        low.memory_available_bytes = 10 << 20;
        assert!(status_changed(&a, &build_status(&low, true)));
        let mut moved = facts();
        moved.internal_ip = "192.168.1.11".parse().unwrap();
        assert!(status_changed(&a, &build_status(&moved, true)));
    }

    #[test]
    fn the_heartbeat_is_the_newest_condition_time() {
        let mut s = build_status(&facts(), true);
        s["conditions"][1]["lastHeartbeatTime"] = json!("2030-01-01T00:00:00Z");
        assert_eq!(
            last_heartbeat(&s).unwrap().to_rfc3339(),
            "2030-01-01T00:00:00+00:00"
        );
        assert!(last_heartbeat(&json!({})).is_none());
    }
}
