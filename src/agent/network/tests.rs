//! Unit tests of [`PodNetwork`] over the recording fakes.

use std::collections::HashSet;

use super::fake::{FakeFirewall, FakeNetOps, NetCall};
use super::*;

const UID_A: &str = "0f4c1a6e-8f1e-4a3b-9d6a-1b2c3d4e5f60";
const UID_B: &str = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";

struct Env {
    _tmp: tempfile::TempDir,
    config: NetworkConfig,
    ops: Arc<FakeNetOps>,
    fw: Arc<FakeFirewall>,
    net: PodNetwork,
}

fn env() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = NetworkConfig::new("10.42.7.0/24".parse().unwrap(), tmp.path().join("state"));
    config.netns_dir = tmp.path().join("netns");
    let ops = Arc::new(FakeNetOps::new());
    let fw = Arc::new(FakeFirewall::new());
    let net = PodNetwork::with_ops(config.clone(), ops.clone(), fw.clone()).unwrap();
    Env {
        _tmp: tmp,
        config,
        ops,
        fw,
        net,
    }
}

impl Env {
    /// A second instance on the same state, as after an agent restart.
    fn restarted(&self) -> PodNetwork {
        PodNetwork::with_ops(self.config.clone(), self.ops.clone(), self.fw.clone()).unwrap()
    }
}

#[tokio::test]
async fn ensure_host_sets_forwarding_bridge_and_rules() {
    let e = env();
    e.net.ensure_host().await.unwrap();
    e.net.ensure_host().await.unwrap();
    let bridge = NetCall::EnsureBridge {
        name: "cni0".into(),
        address: "10.42.7.1/24".parse().unwrap(),
        mtu: VXLAN_MTU,
    };
    assert_eq!(
        e.ops.calls(),
        [
            NetCall::EnableIpForwarding,
            bridge.clone(),
            NetCall::EnableIpForwarding,
            bridge
        ]
    );
    let applied = e.fw.applied();
    assert_eq!(applied.len(), 2);
    assert_eq!(
        applied[0],
        nft::ruleset(e.config.pod_cidr, e.config.cluster_cidr)
    );
    assert!(applied[0].contains("ip saddr 10.42.0.0/16 ip daddr != 224.0.0.0/4 masquerade"));
}

#[tokio::test]
async fn setup_runs_the_steps_in_order_and_returns_the_pod_info() {
    let e = env();
    e.net.ensure_host().await.unwrap();
    e.ops.clear_calls();
    let info = e.net.setup_pod(UID_A, "default/web").await.unwrap();
    let netns = e.config.netns_dir.join(format!("rk3s-{UID_A}"));
    let veth = host_veth_name(UID_A);
    let peer = peer_temp_name(UID_A);
    assert_eq!(
        info,
        PodNetInfo {
            netns_path: netns.clone(),
            ip: "10.42.7.2".parse().unwrap(),
            gateway: "10.42.7.1".parse().unwrap(),
            veth_host_name: veth.clone(),
        }
    );
    assert!(veth.starts_with("veth") && veth.len() == 15, "{veth}");
    let calls = e.ops.calls();
    // The first deletions clear leftovers of an earlier attempt (none here).
    assert_eq!(
        calls,
        [
            NetCall::DeleteLink(veth.clone()),
            NetCall::DeleteLink(peer.clone()),
            NetCall::DeleteNetns(netns.clone()),
            NetCall::CreateNetns(netns.clone()),
            NetCall::CreateVeth {
                host: veth.clone(),
                peer: peer.clone(),
                mtu: 1450
            },
            NetCall::AttachToBridge {
                link: veth.clone(),
                bridge: "cni0".into()
            },
            NetCall::MoveToNetns {
                link: peer.clone(),
                netns: netns.clone()
            },
            NetCall::ConfigurePodInterface {
                netns: netns.clone(),
                iface: PodInterface {
                    current_name: peer,
                    name: "eth0".into(),
                    address: "10.42.7.2/24".parse().unwrap(),
                    gateway: "10.42.7.1".parse().unwrap(),
                    mtu: 1450,
                },
            },
        ]
    );
    assert!(e.ops.host_links().contains(&veth));
    assert_eq!(e.ops.namespaces(), [netns]);
}

#[tokio::test]
async fn setup_twice_returns_the_same_network_without_rebuilding() {
    let e = env();
    e.net.ensure_host().await.unwrap();
    let first = e.net.setup_pod(UID_A, "default/web").await.unwrap();
    e.ops.clear_calls();
    let again = e.net.setup_pod(UID_A, "default/web").await.unwrap();
    assert_eq!(first, again);
    assert!(e.ops.calls().is_empty(), "{:?}", e.ops.calls());
}

#[tokio::test]
async fn failed_setup_undoes_everything_and_frees_the_address() {
    let e = env();
    e.net.ensure_host().await.unwrap();
    e.ops.fail_once("configure_pod_interface");
    let err = e.net.setup_pod(UID_A, "default/web").await.unwrap_err();
    assert!(err.to_string().contains("injected"), "{err}");
    assert_eq!(e.ops.host_links(), ["cni0"]);
    assert!(e.ops.namespaces().is_empty());
    assert_eq!(e.net.ipam.get(UID_A).unwrap(), None);
    // A retry works.
    let info = e.net.setup_pod(UID_A, "default/web").await.unwrap();
    assert_eq!(e.ops.namespaces(), [info.netns_path]);
}

#[tokio::test]
async fn teardown_removes_links_namespace_and_address_and_is_idempotent() {
    let e = env();
    e.net.ensure_host().await.unwrap();
    let info = e.net.setup_pod(UID_A, "default/web").await.unwrap();
    e.ops.clear_calls();
    e.net.teardown_pod(UID_A).await.unwrap();
    assert_eq!(
        e.ops.calls(),
        [
            NetCall::DeleteLink(info.veth_host_name.clone()),
            NetCall::DeleteLink(peer_temp_name(UID_A)),
            NetCall::DeleteNetns(info.netns_path.clone()),
        ]
    );
    assert_eq!(e.ops.host_links(), ["cni0"]);
    assert!(e.ops.namespaces().is_empty());
    assert!(e.net.ipam.reservations().unwrap().is_empty());
    e.net.teardown_pod(UID_A).await.unwrap();
    e.net.teardown_pod(UID_B).await.unwrap();
}

#[tokio::test]
async fn recover_keeps_live_pods_and_frees_the_rest() {
    let e = env();
    e.net.ensure_host().await.unwrap();
    let a = e.net.setup_pod(UID_A, "default/a").await.unwrap();
    let b = e.net.setup_pod(UID_B, "default/b").await.unwrap();
    // While the agent was down, B's namespace vanished and a crash left an
    // ownerless reservation and a namespace without an address.
    e.ops.remove_netns_externally(&b.netns_path);
    std::fs::write(e.config.state_dir.join("ips/10.42.7.200"), "").unwrap();
    let orphan_uid = "11111111-2222-4333-8444-555555555555";
    let orphan = e.net.netns_path(orphan_uid);
    e.ops.create_netns(&orphan).await.unwrap();
    e.ops
        .create_veth(&host_veth_name(orphan_uid), "rkpOrphan", 1500)
        .await
        .unwrap();
    // Someone else's namespace with our prefix is left alone.
    let foreign = e.config.netns_dir.join("rk3s-t-host-1");
    e.ops.create_netns(&foreign).await.unwrap();
    // So is another agent's pod on this machine: its veth is not ours.
    let neighbour = e.net.netns_path("99999999-2222-4333-8444-555555555555");
    e.ops.create_netns(&neighbour).await.unwrap();

    let net = e.restarted();
    let rec = net.recover().await.unwrap();
    assert_eq!(rec.live, [(UID_A.to_string(), a.clone())]);
    let mut released = rec.released.clone();
    released.sort();
    assert_eq!(
        released,
        [
            (b.ip, UID_B.to_string()),
            ("10.42.7.200".parse().unwrap(), String::new())
        ]
    );
    assert_eq!(rec.removed_namespaces, [orphan]);
    assert!(!e.ops.host_links().contains(&b.veth_host_name));
    assert_eq!(
        e.ops.namespaces().len(),
        3,
        "A's, the foreign one and the neighbour's stay"
    );

    // The live pod keeps its address; a new pod never gets it.
    let c = net.setup_pod(UID_B, "default/b2").await.unwrap();
    assert_ne!(c.ip, a.ip);
    assert_eq!(net.ipam.get(UID_A).unwrap(), Some(a.ip));
}

#[tokio::test]
async fn concurrent_setups_get_distinct_addresses() {
    let e = env();
    e.net.ensure_host().await.unwrap();
    let net = Arc::new(e.restarted());
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let net = net.clone();
            tokio::spawn(async move {
                let uid = format!("00000000-0000-4000-8000-{i:012}");
                net.setup_pod(&uid, "default/p").await.unwrap().ip
            })
        })
        .collect();
    let mut ips = HashSet::new();
    for t in tasks {
        ips.insert(t.await.unwrap());
    }
    assert_eq!(ips.len(), 10);
}

#[tokio::test]
async fn bad_input_is_refused_with_a_clear_message() {
    let e = env();
    let err = e.net.setup_pod("../etc", "default/x").await.unwrap_err();
    assert!(
        err.to_string().contains("only letters, digits and '-'"),
        "{err}"
    );
    assert!(e.ops.calls().is_empty());

    let mut config = e.config.clone();
    config.pod_cidr = "10.99.0.0/24".parse().unwrap();
    let err = PodNetwork::with_ops(config, e.ops.clone(), e.fw.clone()).unwrap_err();
    assert!(
        err.to_string().contains("not inside the cluster CIDR"),
        "{err}"
    );

    let mut config = e.config.clone();
    config.service_cidr = "10.42.128.0/20".parse().unwrap();
    assert!(config
        .validate()
        .unwrap_err()
        .to_string()
        .contains("overlaps"));
}

#[tokio::test]
async fn a_bridge_with_a_foreign_address_is_an_error_that_says_what_to_do() {
    let e = env();
    e.ops
        .ensure_bridge("cni0", "10.42.9.1/24".parse().unwrap(), 1450)
        .await
        .unwrap();
    let err = e.net.ensure_host().await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("ip link del cni0") && msg.contains("10.42.9.1/24"),
        "{msg}"
    );
}

#[test]
fn names_fit_the_kernel_limit_and_differ_per_pod() {
    assert_eq!(host_veth_name(UID_A).len(), 15);
    assert!(peer_temp_name(UID_A).len() <= 15);
    assert_ne!(host_veth_name(UID_A), host_veth_name(UID_B));
    assert!(looks_like_pod_uid(UID_A));
    assert!(!looks_like_pod_uid("t-host-1"));
}
