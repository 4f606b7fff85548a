//! Rule generation and incremental sync over the recording firewall.

use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{json, Value};

use super::elements::{ElementError, ElementOp, ElementWriter, FakeElements};
use super::rules::{NodeView, TABLE};
use super::sync::Syncer;
use crate::hostnet::nft::{FakeFirewall, Firewall, NftError};
use crate::svccache::{Index, Snapshot};

pub(super) const NODE: &str = "node-a";

pub(super) fn node() -> NodeView {
    NodeView {
        node_name: NODE.into(),
        node_ips: vec!["192.168.1.10".parse().unwrap()],
        cluster_cidr: "10.42.0.0/16".parse().unwrap(),
    }
}

pub(super) fn service(name: &str, ip: &str, spec: Value) -> Service {
    let mut s = json!({
        "metadata": {"name": name, "namespace": "default", "resourceVersion": "1"},
        "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]},
    });
    merge(&mut s["spec"], spec);
    serde_json::from_value(s).unwrap()
}

fn merge(into: &mut Value, from: Value) {
    if let (Some(a), Value::Object(b)) = (into.as_object_mut(), from) {
        for (k, v) in b {
            a.insert(k, v);
        }
    }
}

/// A slice for Service `svc` with `(ip, node, ready, serving, terminating)`.
pub(super) fn slice(svc: &str, suffix: &str, eps: &[(&str, &str, bool, bool, bool)]) -> EndpointSlice {
    let endpoints: Vec<Value> = eps
        .iter()
        .map(|(ip, node, ready, serving, terminating)| {
            json!({"addresses": [ip], "nodeName": node,
                   "conditions": {"ready": ready, "serving": serving, "terminating": terminating}})
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": format!("{svc}-{suffix}"), "namespace": "default", "resourceVersion": "1",
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    }))
    .unwrap()
}

pub(super) fn ready(ip: &'static str, node: &'static str) -> (&'static str, &'static str, bool, bool, bool) {
    (ip, node, true, true, false)
}

async fn apply(
    services: Vec<Service>,
    slices: Vec<EndpointSlice>,
) -> (Arc<FakeFirewall>, Syncer, String) {
    let fw = Arc::new(FakeFirewall::new());
    let mut syncer = Syncer::new(fw.clone(), Arc::new(FakeElements::default()), node());
    resync(&mut syncer, services, slices).await;
    let script = fw.applied().last().cloned().unwrap();
    (fw, syncer, script)
}

/// Syncs `syncer` once more, to these objects.
async fn resync(syncer: &mut Syncer, services: Vec<Service>, slices: Vec<EndpointSlice>) {
    syncer
        .sync(&Snapshot::from_objects(services, slices))
        .await
        .unwrap();
}

fn lines_with<'a>(script: &'a str, needle: &str) -> Vec<&'a str> {
    script.lines().filter(|l| l.contains(needle)).collect()
}

#[tokio::test]
async fn the_first_sync_replaces_the_whole_table_in_one_script() {
    let svc = service("web", "10.43.0.20", json!({}));
    let sl = slice(
        "web",
        "1",
        &[ready("10.42.0.5", NODE), ready("10.42.1.5", "node-b")],
    );
    let (fw, _, script) = apply(vec![svc], vec![sl]).await;
    assert_eq!(fw.applied().len(), 1);
    let lines: Vec<&str> = script.lines().collect();
    assert_eq!(lines[0], "table ip rk3s-proxy");
    assert_eq!(lines[1], "delete table ip rk3s-proxy");
    assert!(script
        .contains("map service-ips { type ipv4_addr . inet_proto . inet_service : verdict; }"));
    assert!(script.contains("set nodeport-ips { type ipv4_addr; elements = { 192.168.1.10 }; }"));
    assert!(script.contains("meta mark & 0x4000 == 0 return"));
    assert!(script.contains("masquerade fully-random"));
    // The ClusterIP goes to the service chain, which DNATs through the
    // endpoint map: one slot range per endpoint.
    let element = lines_with(&script, "add element ip rk3s-proxy service-ips");
    assert_eq!(element.len(), 1, "{script}");
    assert!(
        element[0].contains("10.43.0.20 . tcp . 80 : goto svc-"),
        "{script}"
    );
    assert!(element[0].contains("default/web/tcp/http"));
    let pick = lines_with(&script, "meta l4proto tcp dnat ip to numgen random mod 1048576 map @epa-");
    assert_eq!(pick.len(), 1, "{script}");
    let map = lines_with(&script, "add map ip rk3s-proxy epa-");
    assert_eq!(map.len(), 1, "{script}");
    assert!(
        map[0].contains("typeof numgen random mod 1 : ip daddr . tcp dport; flags interval; elements = { 0-524287 : 10.42.0.5 . 8080, 524288-1048575 : 10.42.1.5 . 8080 }"),
        "{script}"
    );
    assert!(!script.contains(" vmap {"), "no verdict map per Service: {script}");
    // Hairpin: a pod reaching itself is masqueraded after the DNAT.
    assert!(script.contains("ct status dnat ip saddr . ip daddr @hairpin jump mark-for-masquerade"));
    assert!(
        script.contains("add element ip rk3s-proxy hairpin { 10.42.0.5 . 10.42.0.5, 10.42.1.5 . 10.42.1.5 }"),
        "{script}"
    );
    // Traffic from outside the pod network to the ClusterIP is masqueraded.
    assert!(script.contains(
        "ip daddr 10.43.0.20 tcp dport 80 ip saddr != 10.42.0.0/16 jump mark-for-masquerade"
    ));
    // A wrong port on the ClusterIP is rejected.
    assert!(script.contains("add element ip rk3s-proxy cluster-ips { 10.43.0.20 }"));
    assert!(script.contains("ip daddr @cluster-ips reject"));
}

#[tokio::test]
async fn every_script_names_only_the_proxy_table() {
    let svc = service(
        "web",
        "10.43.0.20",
        json!({"type": "NodePort", "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}),
    );
    let (fw, mut syncer, _) = apply(vec![svc.clone()], vec![]).await;
    resync(
        &mut syncer,
        vec![svc],
        vec![slice("web", "1", &[ready("10.42.0.5", NODE)])],
    )
    .await;
    for script in fw.applied() {
        for line in script.lines() {
            if line.starts_with("table") || line.contains(" ip ") && !line.starts_with('\t') {
                assert!(line.contains(&format!("ip {TABLE}")), "{line}");
            }
        }
    }
}

#[tokio::test]
async fn a_service_without_endpoints_is_rejected_and_comes_back_when_scaled_up() {
    let svc = service("web", "10.43.0.20", json!({}));
    let fw = Arc::new(FakeFirewall::new());
    let el = Arc::new(FakeElements::default());
    let mut syncer = Syncer::new(fw.clone(), el.clone(), node());
    resync(&mut syncer, vec![svc.clone()], vec![]).await;
    let script = fw.applied().last().cloned().unwrap();
    assert!(
        script.contains("add element ip rk3s-proxy no-endpoint-services { 10.43.0.20 . tcp . 80 }"),
        "{script}"
    );
    assert!(script.contains("ip daddr . meta l4proto . th dport @no-endpoint-services reject"));
    // The dispatch element is there from the start: endpoints never move it.
    assert!(script.contains("10.43.0.20 . tcp . 80 : goto svc-"), "{script}");
    resync(
        &mut syncer,
        vec![svc.clone()],
        vec![slice("web", "1", &[ready("10.42.0.5", NODE)])],
    )
    .await;
    // Scaled up: one element batch, no nft.
    assert_eq!(fw.applied().len(), 1);
    let up = el.applied().last().unwrap().clone();
    assert_eq!(up[0], "delete element no-endpoint-services { 10.43.0.20 . tcp . 80 }", "{up:?}");
    assert!(up.contains(&"add element hairpin { 10.42.0.5 . 10.42.0.5 }".to_string()), "{up:?}");
    let map: Vec<&String> = up.iter().filter(|l| l.contains(" epa-")).collect();
    assert_eq!(map.len(), 2, "{up:?}");
    assert!(map[0].starts_with("add element epa-") && map[0].ends_with("{ 0-1048575 : 10.42.0.5 . 8080 }"));
    assert!(map[1].ends_with("{ end 1048576 }"), "{up:?}");
    // Scale to zero again: rejected again, the map emptied.
    resync(&mut syncer, vec![svc], vec![slice("web", "1", &[])]).await;
    assert_eq!(fw.applied().len(), 1);
    let down = el.applied().last().unwrap().clone();
    assert!(down.contains(&"add element no-endpoint-services { 10.43.0.20 . tcp . 80 }".to_string()), "{down:?}");
    assert!(down.contains(&"delete element hairpin { 10.42.0.5 . 10.42.0.5 }".to_string()), "{down:?}");
    assert_eq!(down.iter().filter(|l| l.starts_with("delete element epa-")).count(), 2, "{down:?}");
    // Deletions come before additions.
    let last_delete = down.iter().rposition(|l| l.starts_with("delete")).unwrap();
    let first_add = down.iter().position(|l| l.starts_with("add")).unwrap();
    assert!(last_delete < first_add, "{down:?}");
}

#[tokio::test]
async fn an_endpoint_change_is_one_element_batch_for_that_service_only() {
    let mut index = Index::default();
    index.apply_service(kube::runtime::watcher::Event::Init);
    index.apply_slice(kube::runtime::watcher::Event::Init);
    for i in 0..50 {
        let name = format!("svc{i}");
        index.apply_service(kube::runtime::watcher::Event::InitApply(service(
            &name,
            &format!("10.43.1.{i}"),
            json!({}),
        )));
        index.apply_slice(kube::runtime::watcher::Event::InitApply(slice(
            &name,
            "1",
            &[ready("10.42.0.5", NODE)],
        )));
    }
    index.apply_service(kube::runtime::watcher::Event::InitDone);
    index.apply_slice(kube::runtime::watcher::Event::InitDone);
    let fw = Arc::new(FakeFirewall::new());
    let el = Arc::new(FakeElements::default());
    let mut syncer = Syncer::new(fw.clone(), el.clone(), node());
    let full = syncer.sync(&index.snapshot()).await.unwrap();
    assert!(full.full);
    let mut changed = slice(
        "svc7",
        "1",
        &[ready("10.42.0.5", NODE), ready("10.42.0.6", NODE)],
    );
    changed.metadata.resource_version = Some("2".into());
    index.apply_slice(kube::runtime::watcher::Event::Apply(changed));
    let stats = syncer.sync(&index.snapshot()).await.unwrap();
    assert!(!stats.full);
    assert_eq!(stats.services_changed, 1);
    // No nft at all: no rule, no jump, no listing.
    assert_eq!((stats.script_bytes, fw.applied().len()), (0, 1));
    let batch = el.applied().last().unwrap().clone();
    assert_eq!(stats.element_ops, batch.len());
    for op in &batch {
        assert!(
            op.contains("default/svc7/") || op.contains(" hairpin "),
            "only svc7 is touched: {op}"
        );
    }
    // One endpoint became two: the old range goes, two ranges come, each
    // written start then end in ascending order, as nft writes them.
    assert_eq!(
        batch.iter().filter(|l| l.contains("default/svc7/")).cloned().map(|l| l.split_once(" { ").unwrap().1.to_string()).collect::<Vec<_>>(),
        vec![
            "0-1048575 : 10.42.0.5 . 8080 }",
            "end 1048576 }",
            "0-524287 : 10.42.0.5 . 8080 }",
            "end 524288 }",
            "524288-1048575 : 10.42.0.6 . 8080 }",
            "end 1048576 }",
        ],
        "{batch:?}"
    );
    assert!(batch[1].starts_with("delete element epa-") && batch[2].starts_with("add element hairpin"), "{batch:?}");
    assert!(batch[0].starts_with("delete element epa-"), "{batch:?}");
    assert!(batch.contains(&"add element hairpin { 10.42.0.6 . 10.42.0.6 }".to_string()));
    // Nothing changed: nothing applied.
    let before = (fw.applied().len(), el.applied().len());
    let idle = syncer.sync(&index.snapshot()).await.unwrap();
    assert!(idle.unchanged());
    assert_eq!((fw.applied().len(), el.applied().len()), before);
}

/// `web` with ClientIP affinity and endpoints `eps` (ready on this node).
fn sticky_with(eps: &[&'static str], version: &str) -> (Service, EndpointSlice) {
    let (_, sl) = web_with(eps, version);
    let svc = service("web", "10.43.0.20", json!({"sessionAffinity": "ClientIP"}));
    (svc, sl)
}

/// `svc` with one port and endpoints `eps` (all ready on this node).
fn web_with(eps: &[&'static str], version: &str) -> (Service, EndpointSlice) {
    let svc = service("web", "10.43.0.20", json!({}));
    let ready_eps: Vec<_> = eps.iter().map(|ip| ready(ip, NODE)).collect();
    let mut sl = slice("web", "1", &ready_eps);
    sl.metadata.resource_version = Some(version.into());
    (svc, sl)
}

#[tokio::test]
async fn an_affinity_endpoint_chain_is_emptied_then_deleted_with_the_service() {
    let (svc, two) = sticky_with(&["10.42.0.5", "10.42.0.6"], "1");
    let (fw, mut syncer, _) = apply(vec![svc.clone()], vec![two]).await;
    let (_, one) = sticky_with(&["10.42.0.5"], "2");
    resync(&mut syncer, vec![svc.clone()], vec![one]).await;
    let shrink = fw.applied().last().unwrap().clone();
    // The chain of 10.42.0.6 is emptied, not deleted (no table listing).
    let flushed: Vec<&str> = lines_with(&shrink, "flush chain ip rk3s-proxy ep-");
    assert_eq!(flushed.len(), 1, "{shrink}");
    assert!(flushed[0].contains("10.42.0.6/8080"), "{shrink}");
    assert!(!shrink.contains("delete "), "{shrink}");
    assert!(shrink.contains("numgen random mod 1 vmap"), "{shrink}");
    // Back on the old address: its chain is declared and filled again.
    let (_, back) = sticky_with(&["10.42.0.5", "10.42.0.6"], "3");
    resync(&mut syncer, vec![svc], vec![back]).await;
    let up = fw.applied().last().unwrap().clone();
    assert!(up.contains("dnat to 10.42.0.6:8080"), "{up}");
    assert!(!up.contains("delete chain"), "{up}");
    // The Service goes: elements are deleted, and every chain with them.
    resync(&mut syncer, vec![], vec![]).await;
    let down = fw.applied().last().unwrap().clone();
    assert!(down.contains("delete element ip rk3s-proxy service-ips"), "{down}");
    let deleted = lines_with(&down, "delete chain ip rk3s-proxy ep-");
    assert_eq!(deleted.len(), 2, "{down}");
    assert_ne!(deleted[0], deleted[1], "{down}");
}

#[tokio::test]
async fn a_reused_emptied_chain_is_flushed_and_not_deleted_later() {
    let (svc, a) = sticky_with(&["10.42.0.5", "10.42.0.6"], "1");
    let (fw, mut syncer, _) = apply(vec![svc.clone()], vec![a]).await;
    for (eps, v) in [
        (&["10.42.0.5"][..], "2"),
        (&["10.42.0.5", "10.42.0.6"][..], "3"),
    ] {
        let (_, sl) = sticky_with(eps, v);
        resync(&mut syncer, vec![svc.clone()], vec![sl]).await;
    }
    resync(&mut syncer, vec![], vec![]).await;
    let scripts = fw.applied();
    let regrow = &scripts[2];
    assert!(
        lines_with(regrow, "flush chain ip rk3s-proxy ep-")
            .iter()
            .any(|l| l.contains("10.42.0.6/8080")),
        "{regrow}"
    );
    // Deleting the Service deletes both endpoint chains exactly once each.
    let down = &scripts[3];
    let deleted = lines_with(down, "delete chain ip rk3s-proxy ep-");
    assert_eq!(deleted.len(), 2, "{down}");
    assert_ne!(deleted[0], deleted[1], "{down}");
}

#[tokio::test]
async fn a_deleted_service_loses_its_chains_maps_and_elements() {
    let svc = service("web", "10.43.0.20", json!({}));
    let fw = Arc::new(FakeFirewall::new());
    let el = Arc::new(FakeElements::default());
    let mut syncer = Syncer::new(fw.clone(), el.clone(), node());
    let sl = slice("web", "1", &[ready("10.42.0.5", NODE)]);
    resync(&mut syncer, vec![svc], vec![sl]).await;
    resync(&mut syncer, vec![], vec![]).await;
    let script = fw.applied().last().unwrap().clone();
    assert!(
        script.contains("delete element ip rk3s-proxy service-ips { 10.43.0.20 . tcp . 80 }"),
        "{script}"
    );
    assert_eq!(lines_with(&script, "delete chain").len(), 1, "{script}");
    assert_eq!(lines_with(&script, "delete map ip rk3s-proxy epa-").len(), 1, "{script}");
    assert!(!script.contains("add "), "{script}");
    let batch = el.applied().last().unwrap().clone();
    assert_eq!(
        batch,
        vec![
            "delete element cluster-ips { 10.43.0.20 }".to_string(),
            "delete element hairpin { 10.42.0.5 . 10.42.0.5 }".to_string(),
        ]
    );
}

#[tokio::test]
async fn terminating_endpoints_serve_only_when_none_is_ready() {
    let svc = service("web", "10.43.0.20", json!({}));
    let eps = [
        ("10.42.0.5", NODE, false, true, true), // serving, terminating
        ("10.42.0.6", NODE, false, false, true), // terminating, not serving
    ];
    let (_, _, script) = apply(vec![svc.clone()], vec![slice("web", "1", &eps)]).await;
    assert!(script.contains("{ 0-1048575 : 10.42.0.5 . 8080 }"), "{script}");
    assert!(!script.contains("10.42.0.6"), "{script}");
    let with_ready = [eps[0], ready("10.42.0.7", NODE)];
    let (_, _, script) = apply(vec![svc], vec![slice("web", "1", &with_ready)]).await;
    assert!(script.contains("{ 0-1048575 : 10.42.0.7 . 8080 }"), "{script}");
    assert!(!script.contains("10.42.0.5"), "{script}");
}

#[tokio::test]
async fn node_ports_and_external_ips_go_through_the_external_chain_with_masquerade() {
    let svc = service(
        "web",
        "10.43.0.20",
        json!({"type": "LoadBalancer", "externalIPs": ["203.0.113.7"],
               "ports": [{"name": "http", "port": 80, "nodePort": 30080, "protocol": "TCP"}]}),
    );
    let mut svc_value = serde_json::to_value(&svc).unwrap();
    svc_value["status"] = json!({"loadBalancer": {"ingress": [{"ip": "192.168.1.10"}]}});
    let svc: Service = serde_json::from_value(svc_value).unwrap();
    let sl = slice(
        "web",
        "1",
        &[ready("10.42.0.5", NODE), ready("10.42.1.5", "node-b")],
    );
    let (_, _, script) = apply(vec![svc], vec![sl]).await;
    let nodeport = lines_with(&script, "add element ip rk3s-proxy service-nodeports");
    assert!(nodeport[0].contains("tcp . 30080 : goto ext-"), "{script}");
    let ips = lines_with(&script, "add element ip rk3s-proxy service-ips")[0];
    assert!(ips.contains("203.0.113.7 . tcp . 80 : goto ext-"), "{ips}");
    assert!(ips.contains("192.168.1.10 . tcp . 80 : goto ext-"), "{ips}");
    let ext: Vec<&str> = lines_with(&script, "add rule ip rk3s-proxy ext-");
    assert!(ext[0].ends_with("jump mark-for-masquerade"), "{script}");
    // External traffic shares the ClusterIP's map of all endpoints.
    assert!(ext[1].contains("dnat ip to numgen random mod 1048576 map @epa-"), "{script}");
    assert_eq!(lines_with(&script, "add map ip rk3s-proxy epa-").len(), 1, "{script}");
    assert!(!script.contains("add element ip rk3s-proxy no-endpoint"), "{script}");
}

#[tokio::test]
async fn external_traffic_policy_local_keeps_the_client_and_stays_on_the_node() {
    let spec = json!({"type": "NodePort", "externalTrafficPolicy": "Local",
                      "ports": [{"name": "http", "port": 80, "nodePort": 30080, "protocol": "TCP"}]});
    let svc = service("web", "10.43.0.20", spec);
    let sl = slice(
        "web",
        "1",
        &[ready("10.42.0.5", NODE), ready("10.42.1.5", "node-b")],
    );
    let (_, _, script) = apply(vec![svc.clone()], vec![sl]).await;
    let ext: Vec<&str> = lines_with(&script, "add rule ip rk3s-proxy ext-");
    // Pods and the node itself short-circuit to every endpoint; only they
    // are masqueraded; outside clients reach the local endpoint only.
    assert!(
        ext[0].contains("ip saddr 10.42.0.0/16 goto all-"),
        "{script}"
    );
    assert!(ext[1].contains("fib saddr type local jump mark-for-masquerade"));
    assert!(ext[2].contains("fib saddr type local goto all-"));
    assert!(ext[3].contains("map @epl-"), "{script}");
    assert!(ext[4].ends_with(" drop"), "{script}");
    let local = lines_with(&script, "add map ip rk3s-proxy epl-");
    assert!(local[0].ends_with("elements = { 0-1048575 : 10.42.0.5 . 8080 }; }"), "{script}");
    let all = lines_with(&script, "add rule ip rk3s-proxy all-");
    assert!(all[0].contains("map @epa-"), "{script}");
    assert!(!ext
        .iter()
        .any(|l| l.ends_with("ext-")
            || l.ends_with(" jump mark-for-masquerade") && !l.contains("fib")));
    // No local endpoint: the local map is empty, so outside traffic
    // misses it and is dropped on this node.
    let sl = slice("web", "1", &[ready("10.42.1.5", "node-b")]);
    let (_, _, script) = apply(vec![svc], vec![sl]).await;
    let ext: Vec<&str> = lines_with(&script, "add rule ip rk3s-proxy ext-");
    assert!(ext.last().unwrap().ends_with(" drop"), "{script}");
    let local = lines_with(&script, "add map ip rk3s-proxy epl-");
    assert!(!local[0].contains("elements"), "{script}");
    // ClusterIP traffic still reaches the remote endpoint.
    assert!(script.contains("10.43.0.20 . tcp . 80 : goto svc-"));
}

#[tokio::test]
async fn internal_traffic_policy_local_uses_local_endpoints_or_drops() {
    let svc = service(
        "web",
        "10.43.0.20",
        json!({"internalTrafficPolicy": "Local"}),
    );
    let both = slice(
        "web",
        "1",
        &[ready("10.42.0.5", NODE), ready("10.42.1.5", "node-b")],
    );
    let (_, _, script) = apply(vec![svc.clone()], vec![both]).await;
    let svc_rules = lines_with(&script, "add rule ip rk3s-proxy svc-");
    assert!(
        svc_rules.iter().any(|l| l.contains("map @epl-")),
        "{script}"
    );
    assert!(!script.contains("10.42.1.5"), "{script}");
    let remote = slice("web", "1", &[ready("10.42.1.5", "node-b")]);
    let (_, _, script) = apply(vec![svc], vec![remote]).await;
    assert!(
        script.contains("add element ip rk3s-proxy no-endpoint-drop { 10.43.0.20 . tcp . 80 }"),
        "{script}"
    );
    assert!(!script.contains("add element ip rk3s-proxy no-endpoint-services"), "{script}");
}

#[tokio::test]
async fn client_ip_affinity_records_clients_per_endpoint_with_the_timeout() {
    let svc = service(
        "web",
        "10.43.0.20",
        json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}),
    );
    let sl = slice(
        "web",
        "1",
        &[ready("10.42.0.5", NODE), ready("10.42.0.6", NODE)],
    );
    let (_, _, script) = apply(vec![svc], vec![sl]).await;
    let sets = lines_with(&script, "add set ip rk3s-proxy aff-");
    assert_eq!(sets.len(), 2, "{script}");
    assert!(sets[0].contains("flags dynamic,timeout; timeout 60s;"));
    assert_eq!(lines_with(&script, "update @aff-").len(), 2);
    let lookups: Vec<&str> = lines_with(&script, "add rule ip rk3s-proxy svc-")
        .into_iter()
        .filter(|l| l.contains("ip saddr @aff-"))
        .collect();
    assert_eq!(lookups.len(), 2, "{script}");
    // The look-ups come before the random pick.
    let svc_rules = lines_with(&script, "add rule ip rk3s-proxy svc-");
    assert!(svc_rules.last().unwrap().contains("numgen"));
}

#[tokio::test]
async fn dns_external_name_and_headless_services_get_no_rules() {
    let mut dns = service("kube-dns", "10.43.0.10", json!({}));
    dns.metadata.namespace = Some("kube-system".into());
    dns.metadata.annotations =
        Some([("rk3s.io/node-local".to_string(), "true".to_string())].into());
    let ext = service(
        "ext",
        "",
        json!({"type": "ExternalName", "externalName": "example.com"}),
    );
    let headless = service("headless", "None", json!({}));
    let slices = vec![slice("headless", "1", &[ready("10.42.0.5", NODE)])];
    let (_, _, script) = apply(vec![dns, ext, headless], slices).await;
    assert!(!script.contains("add element"), "{script}");
    assert!(!script.contains("add chain"), "{script}");
}

#[tokio::test]
async fn a_selectorless_service_uses_its_hand_written_slice() {
    let svc = service("manual", "10.43.0.30", json!({"selector": null}));
    let mut sl = slice("manual", "hand", &[("192.168.1.50", "", true, true, false)]);
    sl.endpoints[0].node_name = None;
    let (_, _, script) = apply(vec![svc], vec![sl]).await;
    assert!(script.contains("{ 0-1048575 : 192.168.1.50 . 8080 }"), "{script}");
}

#[tokio::test]
async fn two_services_claiming_one_external_ip_and_port_take_turns() {
    let a = service("a", "10.43.0.21", json!({"externalIPs": ["203.0.113.7"]}));
    let b = service("b", "10.43.0.22", json!({"externalIPs": ["203.0.113.7"]}));
    let slices = vec![
        slice("a", "1", &[ready("10.42.0.5", NODE)]),
        slice("b", "1", &[ready("10.42.0.6", NODE)]),
    ];
    let (fw, mut syncer, script) = apply(vec![a, b.clone()], slices.clone()).await;
    assert_eq!(
        script.matches("203.0.113.7 . tcp . 80").count(),
        1,
        "{script}"
    );
    resync(&mut syncer, vec![b], slices).await;
    let script = fw.applied().last().unwrap().clone();
    assert!(script.contains("delete element ip rk3s-proxy service-ips { 10.43.0.21 . tcp . 80, 203.0.113.7 . tcp . 80 }"), "{script}");
    let add = lines_with(&script, "add map ip rk3s-proxy service-ips")[0];
    assert!(
        add.contains("203.0.113.7 . tcp . 80 : goto ext-") && add.contains("default/b/"),
        "{script}"
    );
}

/// Fails the first incremental change (script or element batch), then
/// records.
#[derive(Default)]
struct FailOnce {
    failed: std::sync::atomic::AtomicBool,
    inner: FakeFirewall,
}

impl FailOnce {
    fn fail_once(&self) -> bool {
        !self.failed.swap(true, std::sync::atomic::Ordering::SeqCst)
    }
}

#[async_trait]
impl Firewall for FailOnce {
    async fn apply(&self, script: &str) -> Result<(), NftError> {
        let incremental = !script.contains("delete table");
        if incremental && self.fail_once() {
            return Err(NftError::Rejected {
                status: "1".into(),
                stderr: "busy".into(),
            });
        }
        self.inner.apply(script).await
    }
}

#[async_trait]
impl ElementWriter for FailOnce {
    async fn apply(&self, _table: &str, _ops: &[ElementOp]) -> Result<(), ElementError> {
        if self.fail_once() {
            return Err(ElementError::Io(std::io::Error::other("busy")));
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_failed_transaction_is_followed_by_a_full_replace() {
    let fw = Arc::new(FailOnce::default());
    let mut syncer = Syncer::new(fw.clone(), fw.clone(), node());
    let svc = service("web", "10.43.0.20", json!({}));
    // The first (full) sync passes: FailOnce only fails incremental changes.
    resync(&mut syncer, vec![svc.clone()], vec![]).await;
    let snap = Snapshot::from_objects(
        vec![svc],
        vec![slice("web", "1", &[ready("10.42.0.5", NODE)])],
    );
    // The endpoint arrives as an element batch, which fails.
    assert!(syncer.sync(&snap).await.is_err());
    let stats = syncer.sync(&snap).await.unwrap();
    assert!(stats.full);
    let last = fw.inner.applied().last().unwrap().clone();
    assert!(last.contains("delete table ip rk3s-proxy") && last.contains("{ 0-1048575 : 10.42.0.5 . 8080 }"));
}

#[test]
fn endpoint_maps_split_the_slots_in_equal_ranges() {
    use super::rules::{slot_ranges, SLOTS};
    assert!(slot_ranges(0).is_empty());
    assert_eq!(slot_ranges(1), vec![(0, SLOTS - 1)]);
    let r = slot_ranges(3);
    assert_eq!(r, vec![(0, 349_524), (349_525, 699_049), (699_050, SLOTS - 1)]);
    // Contiguous and complete for any count.
    for n in 1..40 {
        let r = slot_ranges(n);
        assert_eq!(r.len(), n);
        assert_eq!(r[0].0, 0);
        assert_eq!(r[n - 1].1, SLOTS - 1);
        for w in r.windows(2) {
            assert_eq!(w[0].1 + 1, w[1].0);
        }
        // Widths differ by less than n slots out of 2^20.
        let widths: Vec<u32> = r.iter().map(|(lo, hi)| hi - lo + 1).collect();
        assert!(widths.iter().max().unwrap() - widths.iter().min().unwrap() < n as u32);
    }
}

#[tokio::test]
async fn an_unused_map_is_reused_by_difference() {
    let svc = service("web", "10.43.0.20", json!({}));
    let fw = Arc::new(FakeFirewall::new());
    let el = Arc::new(FakeElements::default());
    let mut syncer = Syncer::new(fw.clone(), el.clone(), node());
    let one = slice("web", "1", &[ready("10.42.0.5", NODE)]);
    resync(&mut syncer, vec![svc.clone()], vec![one.clone()]).await;
    // internalTrafficPolicy: Local uses the local map; the map of all
    // endpoints is left unused (no listing to delete it), then reused.
    let local = service("web", "10.43.0.20", json!({"internalTrafficPolicy": "Local"}));
    resync(&mut syncer, vec![local], vec![one]).await;
    let away = fw.applied().last().unwrap().clone();
    assert!(away.contains("map @epl-"), "{away}");
    assert!(!away.contains("delete"), "{away}");
    let two = slice("web", "1", &[ready("10.42.0.5", NODE), ready("10.42.0.6", NODE)]);
    resync(&mut syncer, vec![svc], vec![two]).await;
    let script = fw.applied().last().unwrap().clone();
    // Declared without elements (it exists), filled by difference.
    let decl = lines_with(&script, "add map ip rk3s-proxy epa-");
    assert_eq!(decl.len(), 1, "{script}");
    assert!(!decl[0].contains("elements"), "{script}");
    let batch = el.applied().last().unwrap().clone();
    let epa: Vec<&String> = batch.iter().filter(|l| l.contains(" epa-")).collect();
    assert_eq!(epa.len(), 6, "{batch:?}");
    assert!(epa[0].starts_with("delete") && epa[0].ends_with("{ 0-1048575 : 10.42.0.5 . 8080 }"), "{batch:?}");
    assert!(epa.iter().any(|l| l.ends_with("{ 524288-1048575 : 10.42.0.6 . 8080 }")), "{batch:?}");
}

#[tokio::test]
async fn uninstall_removes_only_the_proxy_table() {
    let fw = FakeFirewall::new();
    super::uninstall(&fw).await.unwrap();
    assert_eq!(
        fw.applied(),
        vec!["table ip rk3s-proxy\ndelete table ip rk3s-proxy\n".to_string()]
    );
}

#[tokio::test]
async fn udp_and_sctp_ports_are_programmed_with_their_protocol() {
    let svc = service(
        "dns",
        "10.43.0.40",
        json!({"ports": [{"name": "d", "port": 53, "protocol": "UDP"}, {"name": "s", "port": 9, "protocol": "SCTP"}]}),
    );
    let sl: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "dns-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "dns"}},
        "addressType": "IPv4",
        "ports": [{"name": "d", "port": 5353, "protocol": "UDP"}, {"name": "s", "port": 99, "protocol": "SCTP"}],
        "endpoints": [{"addresses": ["10.42.0.5"], "conditions": {"ready": true}}],
    }))
    .unwrap();
    let (_, _, script) = apply(vec![svc], vec![sl]).await;
    assert!(
        script.contains("10.43.0.40 . udp . 53 : goto svc-"),
        "{script}"
    );
    assert!(
        script.contains("10.43.0.40 . sctp . 9 : goto svc-"),
        "{script}"
    );
    assert!(script.contains("meta l4proto udp dnat ip to numgen random mod 1048576 map @epa-"));
    assert!(script.contains("meta l4proto sctp dnat ip to numgen random mod 1048576 map @epa-"));
    assert!(script.contains("{ 0-1048575 : 10.42.0.5 . 5353 }"), "{script}");
    assert!(script.contains("{ 0-1048575 : 10.42.0.5 . 99 }"), "{script}");
}

#[tokio::test]
async fn load_balancer_source_ranges_drop_other_clients_of_the_lb_ips_only() {
    let mut svc = service(
        "web",
        "10.43.0.20",
        json!({"type": "LoadBalancer", "externalIPs": ["203.0.113.7"],
               "loadBalancerSourceRanges": ["192.168.1.0/24", " 10.1.2.3/8 "]}),
    );
    svc.status = serde_json::from_value(
        json!({"loadBalancer": {"ingress": [{"ip": "192.168.1.10"}]}}),
    )
    .unwrap();
    let (_, _, script) = apply(
        vec![svc],
        vec![slice("web", "1", &[ready("10.42.0.5", NODE)])],
    )
    .await;
    assert!(script.contains("ct state new jump firewall-check"), "{script}");
    let fw = lines_with(&script, "add element ip rk3s-proxy firewall-ips");
    assert_eq!(fw.len(), 1, "{script}");
    assert!(fw[0].contains("192.168.1.10 . tcp . 80 : goto fw-"), "{script}");
    // externalIPs are not LoadBalancer IPs: no firewall for them.
    assert!(!fw[0].contains("203.0.113.7"), "{script}");
    let rule = lines_with(&script, "add rule ip rk3s-proxy fw-");
    assert_eq!(rule.len(), 1, "{script}");
    assert!(
        rule[0].ends_with("ip saddr != { 192.168.1.0/24, 10.0.0.0/8 } drop"),
        "{script}"
    );
}
