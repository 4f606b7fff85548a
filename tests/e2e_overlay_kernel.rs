//! The overlay on real kernel objects, without a cluster: two network
//! namespace "nodes" on a private bridge ([`common::netns`]), each running
//! [`Overlay`] over [`LinuxOverlayOps`] bound to its namespace, fed the
//! other's Node as the API would have it (built from the annotations the
//! other published). Each node gets an empty bridge holding its pod gateway
//! address, standing in for `cni0`, so traffic from pod address to pod
//! address crosses the overlay.
//!
//! Checks what flannel's tools would read back (`ip -d link`, `ip neigh`,
//! `bridge fdb`, `ip route`, `ethtool -k`), that packets cross, that a
//! restart changes nothing, that a deleted device comes back with its
//! MAC, that a removed node loses its entries, host-gw, and uninstall.
//!
//! Root-only: skips without `RK3S_E2E=1`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::netns::{Network, Node as NsNode};
use common::privilege::{require_e2e, require_tools};
use k8s_openapi::api::core::v1::{Node, NodeSpec};
use rk3s::overlay::controller::Overlay;
use rk3s::overlay::linux::LinuxOverlayOps;
use rk3s::overlay::{FlannelBackend, OverlayConfig};

struct Member {
    ns: NsNode,
    subnet: &'static str,
    state: tempfile::TempDir,
}

impl Member {
    fn new(net: &Network, name: &str, subnet: &'static str, gw: &str) -> Self {
        let ns = net.add_node(name).expect("node");
        sh(&ns, &["ip", "link", "add", "pods", "type", "bridge"]);
        sh(&ns, &["ip", "addr", "add", gw, "dev", "pods"]);
        sh(&ns, &["ip", "link", "set", "pods", "up"]);
        sh(&ns, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        Member {
            ns,
            subnet,
            state: tempfile::tempdir().unwrap(),
        }
    }

    fn config(&self, name: &str, backend: FlannelBackend) -> OverlayConfig {
        OverlayConfig {
            node_name: name.into(),
            backend,
            pod_cidr: self.subnet.parse().unwrap(),
            cluster_cidr: "10.42.0.0/16".parse().unwrap(),
            node_ip: self.ns.ip(),
            external_ip: None,
            iface: None,
            state_dir: self.state.path().to_path_buf(),
            host_netns: Some(format!("/var/run/netns/{}", self.ns.netns()).into()),
        }
    }

    async fn overlay(&self, name: &str, backend: FlannelBackend) -> (Overlay, Node) {
        let cfg = self.config(name, backend);
        let ops = LinuxOverlayOps::connect(cfg.host_netns.clone())
            .await
            .unwrap();
        let o = Overlay::new(cfg, Arc::new(ops)).unwrap();
        let ann = o.prepare(None).await.unwrap();
        let mut node = Node::default();
        node.metadata.name = Some(name.into());
        node.metadata.annotations = Some(ann);
        node.spec = Some(NodeSpec {
            pod_cidr: Some(self.subnet.into()),
            ..Default::default()
        });
        (o, node)
    }

    fn out(&self, argv: &[&str]) -> String {
        let o = self.ns.exec(argv);
        String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
    }
}

fn sh(ns: &NsNode, argv: &[&str]) {
    let o = ns.exec(argv);
    assert!(
        o.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn ping(m: &Member, from: &str, to: &str) -> bool {
    m.ns.exec_within(
        &["busybox", "ping", "-c", "1", "-W", "2", "-I", from, to],
        Duration::from_secs(10),
    )
    .map(|o| o.status.success())
    .unwrap_or(false)
}

fn mac_of(n: &Node) -> String {
    let data = &n.metadata.annotations.as_ref().unwrap()["flannel.alpha.coreos.com/backend-data"];
    let v: serde_json::Value = serde_json::from_str(data).unwrap();
    assert_eq!(v["VNI"], 1);
    v["VtepMAC"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vxlan_entries_match_flannel_and_carry_traffic() {
    if !require_e2e("vxlan_entries_match_flannel_and_carry_traffic") {
        return;
    }
    require_tools(
        "e2e_overlay_kernel",
        &[("bridge", "iproute2"), ("ethtool", "ethtool")],
    );
    let net = Network::new("ovk").expect("network");
    let a = Member::new(&net, "a", "10.42.1.0/24", "10.42.1.1/24");
    let b = Member::new(&net, "b", "10.42.2.0/24", "10.42.2.1/24");
    let (oa, node_a) = a.overlay("a", FlannelBackend::Vxlan).await;
    let (ob, node_b) = b.overlay("b", FlannelBackend::Vxlan).await;
    let nodes = [node_a.clone(), node_b.clone()];
    let out = oa.sync(&nodes).await.unwrap();
    assert!(out.failed.is_empty(), "{:?}", out.failed);
    assert_eq!(out.added.len(), 3);
    ob.sync(&nodes).await.unwrap();

    // The device, as flannel makes it.
    let link = a.out(&["ip", "-d", "link", "show", "flannel.1"]);
    for want in [
        "mtu 1450",
        "vxlan id 1",
        &format!("local {}", a.ns.ip()),
        "dstport 8472",
        "nolearning",
    ] {
        assert!(link.contains(want), "missing {want:?} in {link}");
    }
    assert!(link.contains(&mac_of(&node_a)), "{link}");
    let addr = a.out(&["ip", "-4", "addr", "show", "dev", "flannel.1"]);
    assert!(addr.contains("inet 10.42.1.0/32"), "{addr}");
    let features = a.out(&["ethtool", "-k", "flannel.1"]);
    assert!(features.contains("tx-checksumming: off"), "{features}");
    // The per-peer entries.
    let mac_b = mac_of(&node_b);
    let neigh = a.out(&["ip", "neigh", "show", "dev", "flannel.1"]);
    assert!(
        neigh.contains(&format!("10.42.2.0 lladdr {mac_b} PERMANENT")),
        "{neigh}"
    );
    let fdb = a.out(&["bridge", "fdb", "show", "dev", "flannel.1"]);
    assert!(
        fdb.contains(&format!("{mac_b} dst {} self permanent", b.ns.ip())),
        "{fdb}"
    );
    let route = a.out(&["ip", "route", "show", "10.42.2.0/24"]);
    assert_eq!(
        route.trim(),
        "10.42.2.0/24 via 10.42.2.0 dev flannel.1 onlink",
        "{route}"
    );
    // Packets cross, pod address to pod address.
    assert!(ping(&a, "10.42.1.1", "10.42.2.1"), "a → b over VXLAN");
    assert!(ping(&b, "10.42.2.1", "10.42.1.1"), "b → a over VXLAN");

    // A restarted agent changes nothing.
    let index_before = a.out(&["cat", "/sys/class/net/flannel.1/ifindex"]);
    let (oa2, node_a2) = a.overlay("a", FlannelBackend::Vxlan).await;
    assert_eq!(mac_of(&node_a2), mac_of(&node_a));
    let out = oa2.sync(&nodes).await.unwrap();
    assert!(out.added.is_empty() && out.removed.is_empty(), "{out:?}");
    assert_eq!(
        a.out(&["cat", "/sys/class/net/flannel.1/ifindex"]),
        index_before
    );

    // A deleted device comes back, with its MAC, and traffic with it.
    sh(&a.ns, &["ip", "link", "del", "flannel.1"]);
    oa2.sync(&nodes).await.unwrap();
    assert!(a
        .out(&["ip", "link", "show", "flannel.1"])
        .contains(&mac_of(&node_a)));
    assert!(ping(&a, "10.42.1.1", "10.42.2.1"), "a → b after repair");

    // A node that goes loses its entries.
    oa2.sync(&[node_a.clone()]).await.unwrap();
    assert_eq!(a.out(&["ip", "route", "show", "10.42.2.0/24"]).trim(), "");
    assert!(!a
        .out(&["ip", "neigh", "show", "dev", "flannel.1"])
        .contains("10.42.2.0"));
    assert!(!a
        .out(&["bridge", "fdb", "show", "dev", "flannel.1"])
        .contains(&mac_b));

    // Uninstall leaves the stand-in bridge and the underlay alone.
    let removed = rk3s::overlay::uninstall(
        a.config("a", FlannelBackend::Vxlan).host_netns,
        "10.42.0.0/16".parse().unwrap(),
    )
    .await
    .unwrap();
    assert!(removed.device);
    assert!(!a.out(&["ip", "link", "show"]).contains("flannel.1"));
    assert!(a.out(&["ip", "-4", "addr"]).contains("10.42.1.1/24"));
    assert!(a
        .out(&["ip", "-4", "addr"])
        .contains(&a.ns.ip().to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_gw_routes_via_the_node_ip() {
    if !require_e2e("host_gw_routes_via_the_node_ip") {
        return;
    }
    let net = Network::new("ovh").expect("network");
    let a = Member::new(&net, "a", "10.42.1.0/24", "10.42.1.1/24");
    let b = Member::new(&net, "b", "10.42.2.0/24", "10.42.2.1/24");
    let (oa, node_a) = a.overlay("a", FlannelBackend::HostGw).await;
    let (ob, node_b) = b.overlay("b", FlannelBackend::HostGw).await;
    assert_eq!(
        node_a.metadata.annotations.as_ref().unwrap()["flannel.alpha.coreos.com/backend-type"],
        "host-gw"
    );
    let nodes = [node_a, node_b];
    oa.sync(&nodes).await.unwrap();
    ob.sync(&nodes).await.unwrap();
    let route = a.out(&["ip", "route", "show", "10.42.2.0/24"]);
    assert_eq!(
        route.trim(),
        format!("10.42.2.0/24 via {} dev eth0", b.ns.ip()),
        "{route}"
    );
    assert!(!a.out(&["ip", "link", "show"]).contains("flannel.1"));
    assert!(ping(&a, "10.42.1.1", "10.42.2.1"), "a → b via host-gw");
    assert!(ping(&b, "10.42.2.1", "10.42.1.1"), "b → a via host-gw");
}
