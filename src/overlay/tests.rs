//! Reconcile tests over the recording fake: add, remove and change a node,
//! rollback on failure, restart re-sync without churn, device repair,
//! host-gw, uninstall.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;

use super::*;
use crate::hostnet::nft::FakeFirewall;
use crate::overlay::annotations::{test_node, BACKEND_DATA, BACKEND_TYPE, PUBLIC_IP};
use crate::overlay::fake::{Call, FakeOverlayOps, UPLINK_INDEX};
use crate::overlay::ops::{Fdb, LinkState, Neighbour, Route};
use crate::overlay::uninstall;

fn config(dir: &std::path::Path, backend: FlannelBackend) -> OverlayConfig {
    OverlayConfig {
        node_name: "pi1".into(),
        backend,
        pod_cidr: "10.42.0.0/24".parse().unwrap(),
        cluster_cidr: "10.42.0.0/16".parse().unwrap(),
        node_ip: "192.168.1.10".parse().unwrap(),
        external_ip: None,
        iface: None,
        state_dir: dir.to_path_buf(),
        host_netns: None,
    }
}

fn vxlan_node(name: &str, cidr: &str, ip: &str, mac: &str) -> Node {
    let data = format!(r#"{{"VNI":1,"VtepMAC":"{mac}"}}"#);
    test_node(
        name,
        Some(cidr),
        &[
            (BACKEND_TYPE, "vxlan"),
            (BACKEND_DATA, &data),
            (PUBLIC_IP, ip),
        ],
    )
}

fn hostgw_node(name: &str, cidr: &str, ip: &str) -> Node {
    test_node(
        name,
        Some(cidr),
        &[
            (BACKEND_TYPE, "host-gw"),
            (BACKEND_DATA, "null"),
            (PUBLIC_IP, ip),
        ],
    )
}

async fn prepared(
    fake: &Arc<FakeOverlayOps>,
    dir: &std::path::Path,
    backend: FlannelBackend,
) -> Overlay {
    let o = Overlay::new(config(dir, backend), fake.clone()).unwrap();
    o.prepare(None).await.unwrap();
    o
}

fn device_index(fake: &FakeOverlayOps) -> u32 {
    fake.link_state(VXLAN_DEVICE)
        .expect("flannel.1 exists")
        .index
}

fn n(ip: &str, mac: &str) -> Neighbour {
    Neighbour {
        ip: ip.parse().unwrap(),
        mac: mac.parse().unwrap(),
    }
}
fn f(mac: &str, dst: &str) -> Fdb {
    Fdb {
        mac: mac.parse().unwrap(),
        dst: dst.parse().unwrap(),
    }
}
fn onlink(dst: &str, gw: &str, dev: u32) -> Route {
    Route {
        dst: dst.parse().unwrap(),
        gateway: gw.parse().unwrap(),
        link: dev,
        onlink: true,
    }
}

const MAC2: &str = "aa:bb:cc:00:00:02";
const MAC3: &str = "aa:bb:cc:00:00:03";

#[tokio::test]
async fn prepare_creates_flannels_device_and_annotations() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeOverlayOps::new());
    let o = Overlay::new(config(dir.path(), FlannelBackend::Vxlan), fake.clone()).unwrap();
    let ann = o.prepare(None).await.unwrap();
    let calls = fake.calls();
    let Call::CreateVxlan(spec) = &calls[0] else {
        panic!("{calls:?}")
    };
    assert_eq!(
        (spec.name.as_str(), spec.vni, spec.port),
        ("flannel.1", 1, 8472)
    );
    assert_eq!(spec.local.to_string(), "192.168.1.10");
    assert_eq!(spec.uplink, UPLINK_INDEX);
    assert_eq!(spec.mtu, 1450);
    let link = fake.link_state(VXLAN_DEVICE).unwrap();
    assert_eq!(link.addresses, vec!["10.42.0.0/32".parse().unwrap()]);
    assert!(link.up);
    assert_eq!(
        fake.tx_csum_now(VXLAN_DEVICE),
        Some(false),
        "checksum offload must be off"
    );
    let data = &ann[BACKEND_DATA];
    assert_eq!(data, &format!(r#"{{"VNI":1,"VtepMAC":"{}"}}"#, link.mac));
    assert_eq!(ann[PUBLIC_IP], "192.168.1.10");
    // The MAC is saved for the next run.
    assert_eq!(device::load_mac(dir.path()), Some(link.mac));
}

#[tokio::test]
async fn the_vtep_mac_survives_a_restart_and_a_deleted_device() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeOverlayOps::new());
    let o = prepared(&fake, dir.path(), FlannelBackend::Vxlan).await;
    let mac = fake.link_state(VXLAN_DEVICE).unwrap().mac;
    // Someone deletes flannel.1: the next pass re-creates it with the same MAC.
    fake.vanish(VXLAN_DEVICE);
    o.sync(&[]).await.unwrap();
    assert_eq!(fake.link_state(VXLAN_DEVICE).unwrap().mac, mac);
    // A new agent (fresh fake kernel, e.g. after a reboot) reuses the state file.
    let fresh = Arc::new(FakeOverlayOps::new());
    prepared(&fresh, dir.path(), FlannelBackend::Vxlan).await;
    assert_eq!(fresh.link_state(VXLAN_DEVICE).unwrap().mac, mac);
    // Without a state file, the Node's own annotation gives it back.
    let other = tempfile::tempdir().unwrap();
    let own = vxlan_node("pi1", "10.42.0.0/24", "192.168.1.10", MAC2);
    let fresh = Arc::new(FakeOverlayOps::new());
    let o = Overlay::new(config(other.path(), FlannelBackend::Vxlan), fresh.clone()).unwrap();
    o.prepare(Some(&own)).await.unwrap();
    assert_eq!(
        fresh.link_state(VXLAN_DEVICE).unwrap().mac.to_string(),
        MAC2
    );
}

#[tokio::test]
async fn a_wrong_device_is_replaced_and_a_right_one_kept() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeOverlayOps::new());
    let mut wrong = LinkState {
        index: 5,
        mac: MAC3.parse().unwrap(),
        mtu: 1450,
        up: true,
        vni: Some(7),
        port: Some(8472),
        local: Some("192.168.1.10".parse().unwrap()),
        learning: Some(false),
        addresses: vec!["10.42.0.0/32".parse().unwrap()],
    };
    fake.put_link(VXLAN_DEVICE, wrong.clone(), false);
    prepared(&fake, dir.path(), FlannelBackend::Vxlan).await;
    assert!(
        fake.calls().contains(&Call::DeleteLink(5)),
        "{:?}",
        fake.calls()
    );
    // A right one (an earlier run's) is kept as is, MAC included.
    let fake = Arc::new(FakeOverlayOps::new());
    wrong.vni = Some(1);
    fake.put_link(VXLAN_DEVICE, wrong, false);
    let dir = tempfile::tempdir().unwrap();
    prepared(&fake, dir.path(), FlannelBackend::Vxlan).await;
    assert_eq!(fake.calls(), vec![], "a right device is left alone");
    assert_eq!(device::load_mac(dir.path()).unwrap().to_string(), MAC3);
}

#[tokio::test]
async fn a_new_node_gets_neighbour_fdb_and_route_in_flannels_order() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeOverlayOps::new());
    let o = prepared(&fake, dir.path(), FlannelBackend::Vxlan).await;
    let dev = device_index(&fake);
    fake.clear_calls();
    let nodes = [
        vxlan_node("pi1", "10.42.0.0/24", "192.168.1.10", MAC3), // ourselves: skipped
        vxlan_node("pi2", "10.42.1.0/24", "192.168.1.11", MAC2),
        test_node("pi9", None, &[]), // not ready yet: skipped
    ];
    let out = o.sync(&nodes).await.unwrap();
    assert!(out.failed.is_empty());
    assert_eq!(
        fake.calls(),
        vec![
            Call::AddNeighbour(dev, n("10.42.1.0", MAC2)),
            Call::AddFdb(dev, f(MAC2, "192.168.1.11")),
            Call::AddRoute(onlink("10.42.1.0/24", "10.42.1.0", dev)),
        ]
    );
    // A second pass with nothing changed does nothing.
    fake.clear_calls();
    o.sync(&nodes).await.unwrap();
    assert_eq!(fake.calls(), vec![]);
}

#[tokio::test]
async fn a_removed_node_loses_its_entries_in_reverse_order() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeOverlayOps::new());
    let o = prepared(&fake, dir.path(), FlannelBackend::Vxlan).await;
    let dev = device_index(&fake);
    let pi2 = vxlan_node("pi2", "10.42.1.0/24", "192.168.1.11", MAC2);
    let pi3 = vxlan_node("pi3", "10.42.2.0/24", "192.168.1.12", MAC3);
    o.sync(&[pi2.clone(), pi3]).await.unwrap();
    fake.clear_calls();
    o.sync(&[pi2]).await.unwrap();
    assert_eq!(
        fake.calls(),
        vec![
            Call::DelRoute(onlink("10.42.2.0/24", "10.42.2.0", dev)),
            Call::DelFdb(dev, f(MAC3, "192.168.1.12")),
            Call::DelNeighbour(dev, n("10.42.2.0", MAC3)),
        ]
    );
    assert_eq!(
        fake.routes_now(),
        vec![onlink("10.42.1.0/24", "10.42.1.0", dev)]
    );
}

#[tokio::test]
async fn a_changed_mac_or_ip_replaces_only_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeOverlayOps::new());
    let o = prepared(&fake, dir.path(), FlannelBackend::Vxlan).await;
    let dev = device_index(&fake);
    o.sync(&[vxlan_node("pi2", "10.42.1.0/24", "192.168.1.11", MAC2)])
        .await
        .unwrap();
    fake.clear_calls();
    // New IP: the FDB entry moves; neighbour and route stay.
    o.sync(&[vxlan_node("pi2", "10.42.1.0/24", "192.168.1.21", MAC2)])
        .await
        .unwrap();
    assert_eq!(
        fake.calls(),
        vec![
            Call::DelFdb(dev, f(MAC2, "192.168.1.11")),
            Call::AddFdb(dev, f(MAC2, "192.168.1.21")),
        ]
    );
    fake.clear_calls();
    // New MAC (the node's device was re-created): neighbour and FDB move.
    o.sync(&[vxlan_node("pi2", "10.42.1.0/24", "192.168.1.21", MAC3)])
        .await
        .unwrap();
    assert_eq!(
        fake.calls(),
        vec![
            Call::DelFdb(dev, f(MAC2, "192.168.1.21")),
            Call::DelNeighbour(dev, n("10.42.1.0", MAC2)),
            Call::AddNeighbour(dev, n("10.42.1.0", MAC3)),
            Call::AddFdb(dev, f(MAC3, "192.168.1.21")),
        ]
    );
}

#[tokio::test]
async fn a_failed_step_rolls_back_the_others_and_the_next_pass_retries() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeOverlayOps::new());
    let o = prepared(&fake, dir.path(), FlannelBackend::Vxlan).await;
    let dev = device_index(&fake);
    let nodes = [
        vxlan_node("pi2", "10.42.1.0/24", "192.168.1.11", MAC2),
        vxlan_node("pi3", "10.42.2.0/24", "192.168.1.12", MAC3),
    ];
    fake.clear_calls();
    fake.fail_once("add_route");
    let out = o.sync(&nodes).await.unwrap();
    assert_eq!(out.failed.len(), 1);
    assert_eq!(out.failed[0].0, "pi2");
    assert_eq!(
        &fake.calls()[..5],
        &[
            Call::AddNeighbour(dev, n("10.42.1.0", MAC2)),
            Call::AddFdb(dev, f(MAC2, "192.168.1.11")),
            Call::AddRoute(onlink("10.42.1.0/24", "10.42.1.0", dev)),
            Call::DelFdb(dev, f(MAC2, "192.168.1.11")),
            Call::DelNeighbour(dev, n("10.42.1.0", MAC2)),
        ]
    );
    // pi3 went ahead; nothing of pi2 is left half-done.
    assert_eq!(fake.neighbours_now(), vec![(dev, n("10.42.2.0", MAC3))]);
    assert_eq!(fake.fdb_now(), vec![(dev, f(MAC3, "192.168.1.12"))]);
    o.sync(&nodes).await.unwrap();
    assert_eq!(fake.routes_now().len(), 2);
    assert_eq!(fake.neighbours_now().len(), 2);
}

#[tokio::test]
async fn a_restarted_agent_adopts_everything_without_churn() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeOverlayOps::new());
    let nodes = [
        vxlan_node("pi2", "10.42.1.0/24", "192.168.1.11", MAC2),
        vxlan_node("pi3", "10.42.2.0/24", "192.168.1.12", MAC3),
    ];
    {
        let first = prepared(&fake, dir.path(), FlannelBackend::Vxlan).await;
        first.sync(&nodes).await.unwrap();
    }
    // Someone else's route inside the cluster CIDR on another link stays too.
    let foreign = Route {
        dst: "10.42.99.0/24".parse().unwrap(),
        gateway: "192.168.7.1".parse().unwrap(),
        link: 77,
        onlink: false,
    };
    fake.put_route(foreign);
    fake.clear_calls();
    let second = prepared(&fake, dir.path(), FlannelBackend::Vxlan).await;
    let out = second.sync(&nodes).await.unwrap();
    assert_eq!(
        fake.calls(),
        vec![],
        "a restart must not touch working entries"
    );
    assert!(out.added.is_empty() && out.removed.is_empty());
    assert!(fake.routes_now().contains(&foreign));
}

#[tokio::test]
async fn host_gw_routes_via_the_peers_node_ip_and_cleans_vxlan_leftovers() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeOverlayOps::new());
    let vx = prepared(&fake, dir.path(), FlannelBackend::Vxlan).await;
    let dev = device_index(&fake);
    vx.sync(&[vxlan_node("pi2", "10.42.1.0/24", "192.168.1.11", MAC2)])
        .await
        .unwrap();
    fake.clear_calls();
    let gw = prepared(&fake, dir.path(), FlannelBackend::HostGw).await;
    gw.sync(&[hostgw_node("pi2", "10.42.1.0/24", "192.168.1.11")])
        .await
        .unwrap();
    assert_eq!(
        fake.calls(),
        vec![
            Call::DelRoute(onlink("10.42.1.0/24", "10.42.1.0", dev)),
            Call::AddRoute(Route {
                dst: "10.42.1.0/24".parse().unwrap(),
                gateway: "192.168.1.11".parse().unwrap(),
                link: UPLINK_INDEX,
                onlink: false,
            }),
        ]
    );
}

#[tokio::test]
async fn two_nodes_claiming_one_subnet_do_not_fight() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeOverlayOps::new());
    let o = prepared(&fake, dir.path(), FlannelBackend::Vxlan).await;
    let out = o
        .sync(&[
            vxlan_node("pi2", "10.42.1.0/24", "192.168.1.11", MAC2),
            vxlan_node("pi3", "10.42.1.0/24", "192.168.1.12", MAC3),
            vxlan_node("pi4", "10.42.0.0/24", "192.168.1.13", MAC3), // our own subnet
        ])
        .await
        .unwrap();
    assert_eq!(out.conflicts, vec!["pi3".to_string(), "pi4".to_string()]);
    assert_eq!(fake.routes_now().len(), 1);
}

#[tokio::test]
async fn a_kernel_without_vxlan_gives_an_error_naming_the_package() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeOverlayOps::new());
    fake.without_vxlan();
    let o = Overlay::new(config(dir.path(), FlannelBackend::Vxlan), fake).unwrap();
    let msg = o.prepare(None).await.unwrap_err().to_string();
    assert!(msg.contains("modprobe vxlan"), "{msg}");
    assert!(msg.contains("linux-modules-extra-raspi"), "{msg}");
    assert!(msg.contains("Raspberry Pi OS"), "{msg}");
}

#[tokio::test]
async fn bad_settings_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), FlannelBackend::Vxlan);
    c.node_ip = "127.0.0.1".parse().unwrap();
    let err = Overlay::new(c, Arc::new(FakeOverlayOps::new()))
        .err()
        .unwrap();
    assert!(err.to_string().contains("--node-ip"), "{err}");
    let mut c = config(dir.path(), FlannelBackend::Vxlan);
    c.pod_cidr = "10.99.0.0/24".parse().unwrap();
    assert!(Overlay::new(c, Arc::new(FakeOverlayOps::new())).is_err());
}

#[tokio::test]
async fn external_ip_becomes_the_public_ip_and_the_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), FlannelBackend::Vxlan);
    c.external_ip = Some("203.0.113.5".parse().unwrap());
    let fake = Arc::new(FakeOverlayOps::new());
    let o = Overlay::new(c, fake.clone()).unwrap();
    let ann = o.prepare(None).await.unwrap();
    assert_eq!(ann[PUBLIC_IP], "203.0.113.5");
    assert_eq!(ann[annotations::PUBLIC_IP_OVERWRITE], "203.0.113.5");
    // VXLAN still leaves from the node IP.
    assert_eq!(
        fake.link_state(VXLAN_DEVICE)
            .unwrap()
            .local
            .unwrap()
            .to_string(),
        "192.168.1.10"
    );
}

#[tokio::test]
async fn uninstall_removes_exactly_the_overlays_entries_and_table() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeOverlayOps::new());
    let o = prepared(&fake, dir.path(), FlannelBackend::Vxlan).await;
    o.sync(&[vxlan_node("pi2", "10.42.1.0/24", "192.168.1.11", MAC2)])
        .await
        .unwrap();
    let outside = Route {
        dst: "192.168.50.0/24".parse().unwrap(),
        gateway: "192.168.1.1".parse().unwrap(),
        link: UPLINK_INDEX,
        onlink: false,
    };
    fake.put_route(outside);
    let fw = FakeFirewall::new();
    let removed = uninstall::uninstall_with(fake.as_ref(), &fw, "10.42.0.0/16".parse().unwrap())
        .await
        .unwrap();
    assert!(removed.device);
    assert_eq!(removed.routes.len(), 1);
    assert!(fake.link_state(VXLAN_DEVICE).is_none());
    assert!(fake.neighbours_now().is_empty() && fake.fdb_now().is_empty());
    assert_eq!(fake.routes_now(), vec![outside]);
    assert_eq!(
        fw.applied(),
        vec!["table ip rk3s\ndelete table ip rk3s\n".to_string()]
    );
    // Someone else's non-VXLAN link called flannel.1 is not ours to delete.
    fake.put_link(
        VXLAN_DEVICE,
        LinkState {
            index: 40,
            mac: MAC2.parse().unwrap(),
            mtu: 1500,
            up: true,
            vni: None,
            port: None,
            local: None,
            learning: None,
            addresses: vec![],
        },
        false,
    );
    let removed = uninstall::uninstall_with(fake.as_ref(), &fw, "10.42.0.0/16".parse().unwrap())
        .await
        .unwrap();
    assert!(!removed.device);
    assert!(fake.link_state(VXLAN_DEVICE).is_some());
}
