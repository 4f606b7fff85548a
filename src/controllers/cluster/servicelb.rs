//! ServiceLB (k3s's `servicelb`, disabled with `--disable servicelb`): a
//! LoadBalancer Service is served on its ports on the node IPs of every
//! eligible node, and its `status.loadBalancer.ingress` lists those IPs.
//!
//! k3s runs a `svclb-*` DaemonSet with hostPorts per Service; rk3s needs
//! no pods: this controller only decides *which nodes serve* and writes
//! the status, and each node's service proxy (`crate::proxy`) serves the
//! Service port on the ingress IPs that are its own (as it serves
//! external IPs). One pass ([`plan`]) looks at every LoadBalancer Service
//! and every node at once, because ports conflict across Services.
//!
//! Rules, as k3s:
//! - eligible nodes are Ready; once any node carries the label
//!   `svccontroller.k3s.cattle.io/enablelb`, only nodes where it is
//!   `"true"` serve; a Service labelled `svccontroller.k3s.cattle.io/lbpool=P`
//!   is served only by nodes with the same label and value;
//! - a node's ExternalIP is preferred over its InternalIP;
//! - a `(protocol, port)` is served on a node by one LoadBalancer only: the
//!   oldest Service keeps it; a later one leaves that node out of its
//!   status and gets a Warning Event (`PortInUse`) naming the holder. With
//!   the built-in ingress enabled, TCP 80 and 443 are the ingress's on
//!   every node, so a LoadBalancer asking for them is a conflict too;
//! - Services with a `spec.loadBalancerClass` belong to another controller.
//!
//! Partial: IPv4 only; `ipMode` is not set (kube's default, VIP).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::k8s::events::{object_ref, EventRecorder, EventType};
use crate::controllers::Context;

pub const ENABLE_LB_LABEL: &str = "svccontroller.k3s.cattle.io/enablelb";
pub const LB_POOL_LABEL: &str = "svccontroller.k3s.cattle.io/lbpool";
/// The ports the built-in ingress holds on every node.
pub const INGRESS_PORTS: [u16; 2] = [80, 443];
const PERIOD: Duration = Duration::from_secs(30);

/// What one LoadBalancer Service should get.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    /// The ingress IPs, sorted.
    pub ips: Vec<String>,
    /// Messages for nodes left out because a port was taken.
    pub conflicts: Vec<String>,
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

/// ExternalIP if the node has one, else InternalIP (IPv4).
fn node_ip(node: &Node) -> Option<String> {
    let addrs = node.status.as_ref()?.addresses.as_ref()?;
    let pick = |kind: &str| {
        addrs
            .iter()
            .find(|a| a.type_ == kind && a.address.parse::<std::net::Ipv4Addr>().is_ok())
            .map(|a| a.address.clone())
    };
    pick("ExternalIP").or_else(|| pick("InternalIP"))
}

fn is_ours(svc: &Service) -> bool {
    svc.spec.as_ref().is_some_and(|s| {
        s.type_.as_deref() == Some("LoadBalancer") && s.load_balancer_class.is_none()
    })
}

fn ports(svc: &Service) -> Vec<(String, u16)> {
    svc.spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
            Some((proto, u16::try_from(p.port).ok()?))
        })
        .collect()
}

/// Decides, for every LoadBalancer Service, which nodes serve it.
/// `ingress_holds_web_ports`: the built-in ingress owns TCP 80/443.
pub fn plan(
    services: &[Arc<Service>],
    nodes: &[Arc<Node>],
    ingress_holds_web_ports: bool,
) -> BTreeMap<(String, String), Placement> {
    let allow_list = nodes
        .iter()
        .any(|n| n.labels().contains_key(ENABLE_LB_LABEL));
    let eligible: Vec<&Arc<Node>> = nodes
        .iter()
        .filter(|n| node_ready(n))
        .filter(|n| !allow_list || n.labels().get(ENABLE_LB_LABEL).is_some_and(|v| v == "true"))
        .collect();
    let mut lbs: Vec<&Arc<Service>> = services.iter().filter(|s| is_ours(s)).collect();
    // The oldest Service keeps a contested port.
    lbs.sort_by_key(|s| {
        (
            s.creation_timestamp().map(|t| t.0),
            s.namespace(),
            s.name_any(),
        )
    });
    // (node, proto, port) → holder.
    let mut taken: BTreeMap<(String, String, u16), String> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for svc in lbs {
        let key = (svc.namespace().unwrap_or_default(), svc.name_any());
        let holder = format!("LoadBalancer {}/{}", key.0, key.1);
        let pool = svc.labels().get(LB_POOL_LABEL);
        let wanted = ports(svc);
        let mut placement = Placement::default();
        let mut ips = BTreeSet::new();
        for node in &eligible {
            if pool.is_some_and(|p| node.labels().get(LB_POOL_LABEL) != Some(p)) {
                continue;
            }
            let name = node.name_any();
            let clash = wanted.iter().find_map(|(proto, port)| {
                if ingress_holds_web_ports && proto == "TCP" && INGRESS_PORTS.contains(port) {
                    return Some(format!("port {port}/{proto} on node {name} is the built-in ingress's (disable it with --disable traefik to use it)"));
                }
                let by = taken.get(&(name.clone(), proto.clone(), *port))?;
                Some(format!("port {port}/{proto} on node {name} is already used by {by}"))
            });
            if let Some(msg) = clash {
                placement.conflicts.push(msg);
                continue;
            }
            for (proto, port) in &wanted {
                taken.insert((name.clone(), proto.clone(), *port), holder.clone());
            }
            if let Some(ip) = node_ip(node) {
                ips.insert(ip);
            }
        }
        placement.ips = ips.into_iter().collect();
        out.insert(key, placement);
    }
    out
}

fn current_ips(svc: &Service) -> Vec<String> {
    let mut ips: Vec<String> = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.clone())
        .collect();
    ips.sort();
    ips
}

/// One pass: write every status that differs, report new conflicts.
async fn reconcile(
    ctx: &Context,
    services: &Store<Service>,
    nodes: &Store<Node>,
    ingress: bool,
    recorder: &EventRecorder,
    reported: &mut HashSet<(String, String)>,
) {
    let all = services.state();
    let placements = plan(&all, &nodes.state(), ingress);
    for svc in &all {
        let key = (svc.namespace().unwrap_or_default(), svc.name_any());
        let Some(placement) = placements.get(&key) else {
            continue;
        };
        for msg in &placement.conflicts {
            let uid = svc.uid().unwrap_or_default();
            if reported.insert((uid, msg.clone())) {
                recorder
                    .record(
                        &object_ref(svc.as_ref()),
                        EventType::Warning,
                        "PortInUse",
                        msg,
                    )
                    .await;
            }
        }
        if current_ips(svc) == placement.ips {
            continue;
        }
        let ingress: Vec<_> = placement.ips.iter().map(|ip| json!({"ip": ip})).collect();
        let patch = json!({"status": {"loadBalancer": {"ingress": ingress}}});
        let api: Api<Service> = Api::namespaced(ctx.client.clone(), &key.0);
        match api
            .patch_status(&key.1, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                tracing::info!(service = %format!("{}/{}", key.0, key.1), ips = ?placement.ips, "servicelb: status updated")
            }
            Err(e) => {
                tracing::warn!(service = %format!("{}/{}", key.0, key.1), "servicelb: failed to update the status: {e}")
            }
        }
    }
}

/// Runs ServiceLB until shutdown: a pass on every Service or Node change
/// (gathered for a moment) and every 30 s.
pub async fn run(ctx: Context) {
    if !ctx.options.servicelb {
        tracing::info!(
            "servicelb disabled: LoadBalancer Services stay pending for another controller"
        );
        return;
    }
    let (svc_reader, svc_writer) = reflector::store::<Service>();
    let (node_reader, node_writer) = reflector::store::<Node>();
    let svc_events = reflector::reflector(
        svc_writer,
        watcher::watcher(
            Api::<Service>::all(ctx.client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .map(|_| ());
    let node_events = reflector::reflector(
        node_writer,
        watcher::watcher(
            Api::<Node>::all(ctx.client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .map(|_| ());
    let mut events = futures::stream::select(svc_events, node_events).boxed();
    let recorder = EventRecorder::new(ctx.client.clone(), "service-lb-controller");
    let mut reported = HashSet::new();
    // The stores fill only while the streams are polled: drive them until
    // both kinds are listed.
    loop {
        use futures::FutureExt as _;
        let ready = svc_reader.wait_until_ready().now_or_never().is_some()
            && node_reader.wait_until_ready().now_or_never().is_some();
        if ready {
            break;
        }
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            e = events.next() => if e.is_none() { return },
        }
    }
    loop {
        reconcile(
            &ctx,
            &svc_reader,
            &node_reader,
            ctx.options.ingress_holds_web_ports,
            &recorder,
            &mut reported,
        )
        .await;
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            e = events.next() => if e.is_none() { return },
            _ = tokio::time::sleep(PERIOD) => {}
        }
        // Take the rest of a burst before the next pass.
        tokio::time::sleep(Duration::from_millis(100)).await;
        while let Some(Some(_)) = futures::FutureExt::now_or_never(events.next()) {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(
        name: &str,
        labels: serde_json::Value,
        internal: &str,
        external: Option<&str>,
        ready: bool,
    ) -> Arc<Node> {
        let mut addrs = vec![json!({"type": "InternalIP", "address": internal})];
        if let Some(e) = external {
            addrs.push(json!({"type": "ExternalIP", "address": e}));
        }
        Arc::new(serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "status": {"addresses": addrs,
                       "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
        })).unwrap())
    }

    fn lb(name: &str, created: &str, port: i32, labels: serde_json::Value) -> Arc<Service> {
        Arc::new(serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "creationTimestamp": created, "labels": labels, "uid": name},
            "spec": {"type": "LoadBalancer", "ports": [{"port": port, "protocol": "TCP"}]},
        })).unwrap())
    }

    fn key(name: &str) -> (String, String) {
        ("default".into(), name.into())
    }

    #[test]
    fn ready_nodes_serve_with_external_ips_preferred() {
        let nodes = [
            node("a", json!({}), "10.0.0.1", None, true),
            node("b", json!({}), "10.0.0.2", Some("203.0.113.2"), true),
            node("c", json!({}), "10.0.0.3", None, false),
        ];
        let p = plan(
            &[lb("web", "2026-01-01T00:00:00Z", 8080, json!({}))],
            &nodes,
            true,
        );
        assert_eq!(p[&key("web")].ips, vec!["10.0.0.1", "203.0.113.2"]);
        assert!(p[&key("web")].conflicts.is_empty());
    }

    #[test]
    fn the_enablelb_label_turns_on_an_allow_list_and_pools_narrow_it() {
        let nodes = [
            node(
                "a",
                json!({ENABLE_LB_LABEL: "true", LB_POOL_LABEL: "edge"}),
                "10.0.0.1",
                None,
                true,
            ),
            node(
                "b",
                json!({ENABLE_LB_LABEL: "false"}),
                "10.0.0.2",
                None,
                true,
            ),
            node("c", json!({}), "10.0.0.3", None, true),
            node(
                "d",
                json!({ENABLE_LB_LABEL: "true"}),
                "10.0.0.4",
                None,
                true,
            ),
        ];
        let services = [
            lb("any", "2026-01-01T00:00:00Z", 8080, json!({})),
            lb(
                "edge",
                "2026-01-01T00:00:01Z",
                9090,
                json!({LB_POOL_LABEL: "edge"}),
            ),
        ];
        let p = plan(&services, &nodes, true);
        assert_eq!(p[&key("any")].ips, vec!["10.0.0.1", "10.0.0.4"]);
        assert_eq!(p[&key("edge")].ips, vec!["10.0.0.1"]);
    }

    #[test]
    fn a_taken_port_leaves_the_node_out_with_a_reason() {
        let nodes = [node("a", json!({}), "10.0.0.1", None, true)];
        let services = [
            lb("second", "2026-01-02T00:00:00Z", 8080, json!({})),
            lb("first", "2026-01-01T00:00:00Z", 8080, json!({})),
            lb("web", "2026-01-01T00:00:00Z", 443, json!({})),
        ];
        let p = plan(&services, &nodes, true);
        assert_eq!(p[&key("first")].ips, vec!["10.0.0.1"]);
        assert!(p[&key("second")].ips.is_empty());
        assert_eq!(
            p[&key("second")].conflicts,
            vec!["port 8080/TCP on node a is already used by LoadBalancer default/first"]
        );
        // 443 is the built-in ingress's unless it is disabled.
        assert!(p[&key("web")].ips.is_empty());
        assert!(p[&key("web")].conflicts[0].contains("built-in ingress"));
        assert_eq!(
            plan(&services, &nodes, false)[&key("web")].ips,
            vec!["10.0.0.1"]
        );
    }

    #[test]
    fn other_classes_and_other_types_are_left_alone() {
        let nodes = [node("a", json!({}), "10.0.0.1", None, true)];
        let mut classed = (*lb("metallb", "2026-01-01T00:00:00Z", 8080, json!({}))).clone();
        classed.spec.as_mut().unwrap().load_balancer_class = Some("metallb.io/x".into());
        let mut plain = (*lb("plain", "2026-01-01T00:00:00Z", 8081, json!({}))).clone();
        plain.spec.as_mut().unwrap().type_ = Some("NodePort".into());
        let p = plan(&[Arc::new(classed), Arc::new(plain)], &nodes, true);
        assert!(p.is_empty());
    }
}
