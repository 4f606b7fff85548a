//! Printers for core/v1 kinds other than pods (nodes, services, …), cell for cell as
//! kube-apiserver's `printers.go` with `Wide: true`.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::util::*;

pub(super) fn pod_template(_now: DateTime<Utc>, obj: &Value) -> Vec<Value> {
    let (names, images) = containers(obj.pointer("/template/spec"));
    vec![
        json!(s(obj, "/metadata/name")),
        json!(names),
        json!(images),
        json!(format_labels(obj.pointer("/template/metadata/labels"))),
    ]
}

pub(super) fn replication_controller(now: DateTime<Utc>, obj: &Value) -> Vec<Value> {
    workload_row(
        now,
        obj,
        replica_counts(obj),
        "/spec/template/spec",
        Some(format_labels(obj.pointer("/spec/selector"))),
    )
}

fn lb_status(ingress: &[Value]) -> String {
    let mut set: Vec<&str> = ingress
        .iter()
        .filter_map(|e| {
            let ip = s(e, "/ip");
            let host = s(e, "/hostname");
            if !ip.is_empty() {
                Some(ip)
            } else if !host.is_empty() {
                Some(host)
            } else {
                None
            }
        })
        .collect();
    set.sort_unstable();
    set.dedup();
    set.join(",")
}

/// The load balancer addresses of a Service or Ingress status, unclipped
/// (the server prints wide).
pub(super) fn load_balancer(obj: &Value) -> String {
    lb_status(arr(obj, "/status/loadBalancer/ingress"))
}

fn service_external_ip(svc: &Value) -> String {
    let external: Vec<&str> = arr(svc, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    match s(svc, "/spec/type") {
        "ClusterIP" | "NodePort" | "" => {
            if external.is_empty() {
                "<none>".to_string()
            } else {
                external.join(",")
            }
        }
        "LoadBalancer" => {
            let lb = load_balancer(svc);
            if !external.is_empty() {
                let mut all: Vec<&str> = if lb.is_empty() {
                    Vec::new()
                } else {
                    lb.split(',').collect()
                };
                all.extend(external);
                all.join(",")
            } else if !lb.is_empty() {
                lb
            } else {
                "<pending>".to_string()
            }
        }
        "ExternalName" => s(svc, "/spec/externalName").to_string(),
        _ => "<unknown>".to_string(),
    }
}

pub(super) fn service(now: DateTime<Utc>, svc: &Value) -> Vec<Value> {
    let cluster_ip = arr(svc, "/spec/clusterIPs")
        .first()
        .and_then(Value::as_str)
        .unwrap_or("<none>");
    let ports: Vec<String> = arr(svc, "/spec/ports")
        .iter()
        .map(|p| {
            let protocol = or(s(p, "/protocol"), "TCP");
            let node_port = i(p, "/nodePort");
            if node_port > 0 {
                format!("{}:{node_port}/{protocol}", i(p, "/port"))
            } else {
                format!("{}/{protocol}", i(p, "/port"))
            }
        })
        .collect();
    let ports = if ports.is_empty() {
        "<none>".to_string()
    } else {
        ports.join(",")
    };
    vec![
        json!(s(svc, "/metadata/name")),
        json!(s(svc, "/spec/type")),
        json!(cluster_ip),
        json!(service_external_ip(svc)),
        json!(ports),
        json!(age(now, svc)),
        json!(format_labels(svc.pointer("/spec/selector"))),
    ]
}

/// `formatEndpoints` with all ports: up to three `ip:port`, then "+ N more...".
pub(super) fn endpoints(now: DateTime<Utc>, ep: &Value) -> Vec<Value> {
    let subsets = arr(ep, "/subsets");
    let text = if subsets.is_empty() {
        "<none>".to_string()
    } else {
        const MAX: usize = 3;
        let mut list: Vec<String> = Vec::new();
        let mut more = false;
        let mut count = 0usize;
        for ss in subsets {
            let addresses = arr(ss, "/addresses");
            let ports = arr(ss, "/ports");
            if ports.is_empty() {
                count += addresses.len();
                for a in addresses {
                    if list.len() == MAX {
                        more = true;
                        break;
                    }
                    list.push(s(a, "/ip").to_string());
                }
                continue;
            }
            for port in ports {
                count += addresses.len();
                for a in addresses {
                    if list.len() == MAX {
                        more = true;
                        break;
                    }
                    let ip = s(a, "/ip");
                    let host = if ip.contains(':') {
                        format!("[{ip}]")
                    } else {
                        ip.to_string()
                    };
                    list.push(format!("{host}:{}", i(port, "/port")));
                }
            }
        }
        let ret = list.join(",");
        if more {
            format!("{ret} + {} more...", count - MAX)
        } else {
            ret
        }
    };
    vec![
        json!(s(ep, "/metadata/name")),
        json!(text),
        json!(age(now, ep)),
    ]
}

fn node_roles(node: &Value) -> String {
    let mut roles: Vec<String> = Vec::new();
    if let Some(labels) = node.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in labels {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.push(role.to_string());
                }
            } else if k == "kubernetes.io/role" {
                if let Some(v) = v.as_str().filter(|v| !v.is_empty()) {
                    roles.push(v.to_string());
                }
            }
        }
    }
    roles.sort();
    roles.dedup();
    if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.join(",")
    }
}

fn node_address(node: &Value, type_: &str) -> String {
    arr(node, "/status/addresses")
        .iter()
        .find(|a| s(a, "/type") == type_)
        .map_or("<none>".to_string(), |a| s(a, "/address").to_string())
}

pub(super) fn node(now: DateTime<Utc>, node: &Value) -> Vec<Value> {
    // Like upstream, the last Ready condition wins.
    let ready = arr(node, "/status/conditions")
        .iter()
        .rev()
        .find(|c| s(c, "/type") == "Ready");
    let mut status = vec![match ready {
        Some(c) if s(c, "/status") == "True" => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }];
    if ob(node, "/spec/unschedulable") == Some(true) {
        status.push("SchedulingDisabled");
    }
    vec![
        json!(s(node, "/metadata/name")),
        json!(status.join(",")),
        json!(node_roles(node)),
        json!(age(now, node)),
        json!(s(node, "/status/nodeInfo/kubeletVersion")),
        json!(node_address(node, "InternalIP")),
        json!(node_address(node, "ExternalIP")),
        json!(or(s(node, "/status/nodeInfo/osImage"), "<unknown>")),
        json!(or(s(node, "/status/nodeInfo/kernelVersion"), "<unknown>")),
        json!(or(
            s(node, "/status/nodeInfo/containerRuntimeVersion"),
            "<unknown>"
        )),
    ]
}

/// Both `v1` and `events.k8s.io/v1` events; the latter's fields are mapped to
/// the core names first, as the internal type does.
pub(super) fn event(now: DateTime<Utc>, ev: &Value, events_group: bool) -> Vec<Value> {
    let field = |core: &str, events: &str| -> String {
        s(ev, if events_group { events } else { core }).to_string()
    };
    let first_ts = time(
        ev,
        if events_group {
            "/deprecatedFirstTimestamp"
        } else {
            "/firstTimestamp"
        },
    );
    let last_ts = time(
        ev,
        if events_group {
            "/deprecatedLastTimestamp"
        } else {
            "/lastTimestamp"
        },
    );
    let event_time = time(ev, "/eventTime");
    let first = if first_ts.is_some() {
        since(now, first_ts)
    } else {
        since(now, event_time)
    };
    let mut last = if last_ts.is_some() {
        since(now, last_ts)
    } else {
        first.clone()
    };
    let mut count = oi(
        ev,
        if events_group {
            "/deprecatedCount"
        } else {
            "/count"
        },
    )
    .unwrap_or(0);
    if ev.get("series").is_some_and(|v| !v.is_null()) {
        last = since(now, time(ev, "/series/lastObservedTime"));
        count = i(ev, "/series/count");
    } else if count == 0 {
        count = 1;
    }
    let regarding = if events_group {
        "/regarding"
    } else {
        "/involvedObject"
    };
    let kind = s(ev, &format!("{regarding}/kind")).to_lowercase();
    let target_name = s(ev, &format!("{regarding}/name"));
    let target = if target_name.is_empty() {
        kind
    } else {
        format!("{kind}/{target_name}")
    };
    let component = field("/source/component", "/deprecatedSource/component");
    let host = field("/source/host", "/deprecatedSource/host");
    let component = if component.is_empty() {
        s(ev, "/reportingController").to_string()
    } else {
        component
    };
    let host = if host.is_empty() {
        s(ev, "/reportingInstance").to_string()
    } else {
        host
    };
    let source = if host.is_empty() {
        component
    } else {
        format!("{component}, {host}")
    };
    vec![
        json!(last),
        json!(s(ev, "/type")),
        json!(s(ev, "/reason")),
        json!(target),
        json!(s(ev, &format!("{regarding}/fieldPath"))),
        json!(source),
        json!(field("/message", "/note").trim()),
        json!(first),
        json!(count),
        json!(s(ev, "/metadata/name")),
    ]
}

pub(super) fn namespace(now: DateTime<Utc>, ns: &Value) -> Vec<Value> {
    vec![
        json!(s(ns, "/metadata/name")),
        json!(s(ns, "/status/phase")),
        json!(age(now, ns)),
    ]
}

pub(super) fn secret(now: DateTime<Utc>, obj: &Value) -> Vec<Value> {
    vec![
        json!(s(obj, "/metadata/name")),
        json!(s(obj, "/type")),
        json!(map_len(obj, "/data") as i64),
        json!(age(now, obj)),
    ]
}

/// kube's `printComponentStatus`: the `Healthy` condition decides.
pub(super) fn component_status(obj: &Value) -> Vec<Value> {
    let healthy = arr(obj, "/conditions")
        .iter()
        .find(|c| c["type"] == "Healthy");
    let (status, message, error) = match healthy {
        Some(c) => (
            if c["status"] == "True" { "Healthy" } else { "Unhealthy" },
            s(c, "/message"),
            s(c, "/error"),
        ),
        None => ("Unknown", "", ""),
    };
    vec![
        json!(s(obj, "/metadata/name")),
        json!(status),
        json!(message),
        json!(error),
    ]
}

pub(super) fn config_map(now: DateTime<Utc>, obj: &Value) -> Vec<Value> {
    let n = map_len(obj, "/data") + map_len(obj, "/binaryData");
    vec![
        json!(s(obj, "/metadata/name")),
        json!(n as i64),
        json!(age(now, obj)),
    ]
}

pub(super) fn service_account(now: DateTime<Utc>, obj: &Value) -> Vec<Value> {
    vec![
        json!(s(obj, "/metadata/name")),
        json!(arr(obj, "/secrets").len() as i64),
        json!(age(now, obj)),
    ]
}

fn storage_class_of(obj: &Value) -> String {
    let annotated = s(
        obj,
        "/metadata/annotations/volume.beta.kubernetes.io~1storage-class",
    );
    if !annotated.is_empty() {
        return annotated.to_string();
    }
    s(obj, "/spec/storageClassName").to_string()
}

fn deleting(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
}

pub(super) fn persistent_volume(now: DateTime<Utc>, pv: &Value) -> Vec<Value> {
    let claim = if pv.pointer("/spec/claimRef").is_some_and(|v| v.is_object()) {
        format!(
            "{}/{}",
            s(pv, "/spec/claimRef/namespace"),
            s(pv, "/spec/claimRef/name")
        )
    } else {
        String::new()
    };
    let phase = if deleting(pv) {
        "Terminating".to_string()
    } else {
        s(pv, "/status/phase").to_string()
    };
    vec![
        json!(s(pv, "/metadata/name")),
        json!(quantity(pv.pointer("/spec/capacity/storage"))),
        json!(access_modes(arr(pv, "/spec/accessModes"))),
        json!(s(pv, "/spec/persistentVolumeReclaimPolicy")),
        json!(phase),
        json!(claim),
        json!(storage_class_of(pv)),
        json!(or(s(pv, "/spec/volumeAttributesClassName"), "<unset>")),
        json!(s(pv, "/status/reason")),
        json!(age(now, pv)),
        json!(or(s(pv, "/spec/volumeMode"), "<unset>")),
    ]
}

pub(super) fn persistent_volume_claim(now: DateTime<Utc>, pvc: &Value) -> Vec<Value> {
    let phase = if deleting(pvc) {
        "Terminating".to_string()
    } else {
        s(pvc, "/status/phase").to_string()
    };
    let bound = !s(pvc, "/spec/volumeName").is_empty();
    let (capacity, modes) = if bound {
        (
            quantity(pvc.pointer("/status/capacity/storage")),
            access_modes(arr(pvc, "/status/accessModes")),
        )
    } else {
        (String::new(), String::new())
    };
    vec![
        json!(s(pvc, "/metadata/name")),
        json!(phase),
        json!(s(pvc, "/spec/volumeName")),
        json!(capacity),
        json!(modes),
        json!(storage_class_of(pvc)),
        json!(or(s(pvc, "/spec/volumeAttributesClassName"), "<unset>")),
        json!(age(now, pvc)),
        json!(or(s(pvc, "/spec/volumeMode"), "<unset>")),
    ]
}

pub(super) fn resource_quota(now: DateTime<Utc>, rq: &Value) -> Vec<Value> {
    let mut names: Vec<&String> = rq
        .pointer("/status/hard")
        .and_then(Value::as_object)
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    names.sort();
    let mut requests = Vec::new();
    let mut limits = Vec::new();
    for name in names {
        let used = quantity(rq.pointer(&format!(
            "/status/used/{}",
            name.replace('~', "~0").replace('/', "~1")
        )));
        let hard = quantity(rq.pointer(&format!(
            "/status/hard/{}",
            name.replace('~', "~0").replace('/', "~1")
        )));
        let entry = format!("{name}: {used}/{hard}");
        let pieces: Vec<&str> = name.split('.').collect();
        if pieces.len() > 1 && pieces[0] == "limits" {
            limits.push(entry);
        } else {
            requests.push(entry);
        }
    }
    vec![
        json!(s(rq, "/metadata/name")),
        json!(requests.join(", ")),
        json!(limits.join(", ")),
        json!(age(now, rq)),
    ]
}
