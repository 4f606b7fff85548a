//! Unit tests of the filters and scores on hand-made nodes and pods.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::json;

use super::filter::{feasible, filter, NodeInfo, PodInfo};
use super::score::{pick, scores};

fn node(name: &str, extra: serde_json::Value) -> NodeInfo {
    let mut v = json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"},
                   "conditions": [{"type": "Ready", "status": "True"}]}});
    merge(&mut v, extra);
    NodeInfo::new(Arc::new(serde_json::from_value::<Node>(v).unwrap()))
}

fn pod(name: &str, extra: serde_json::Value) -> PodInfo {
    let mut v = json!({"metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "x"}]}});
    merge(&mut v, extra);
    PodInfo::new(Arc::new(serde_json::from_value::<Pod>(v).unwrap()))
}

fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
    match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

fn reason(p: &PodInfo, n: &NodeInfo) -> String {
    filter(p, n, std::slice::from_ref(n))
        .unwrap_err()
        .join(", ")
}

#[test]
fn unschedulable_not_ready_and_node_name() {
    let p = pod("p", json!({}));
    let cordoned = node("a", json!({"spec": {"unschedulable": true}}));
    assert_eq!(reason(&p, &cordoned), "node(s) were unschedulable");
    let not_ready = node(
        "a",
        json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}),
    );
    assert_eq!(
        reason(&p, &not_ready),
        "node(s) had untolerated taint {node.kubernetes.io/not-ready: }"
    );
    let named = pod("p", json!({"spec": {"nodeName": "b"}}));
    assert_eq!(
        reason(&named, &node("a", json!({}))),
        "node(s) didn't match the requested node name"
    );
    assert!(filter(&named, &node("b", json!({})), &[]).is_ok());
}

#[test]
fn taints_and_tolerations() {
    let tainted = node(
        "a",
        json!({"spec": {"taints": [
        {"key": "dedicated", "value": "db", "effect": "NoSchedule"},
        {"key": "soft", "effect": "PreferNoSchedule"}]}}),
    );
    assert_eq!(
        reason(&pod("p", json!({})), &tainted),
        "node(s) had untolerated taint {dedicated: db}"
    );
    let equal = pod(
        "p",
        json!({"spec": {"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]}}),
    );
    assert!(filter(&equal, &tainted, &[]).is_ok());
    let wrong_value = pod(
        "p",
        json!({"spec": {"tolerations": [{"key": "dedicated", "value": "web"}]}}),
    );
    assert!(filter(&wrong_value, &tainted, &[]).is_err());
    let exists_all = pod(
        "p",
        json!({"spec": {"tolerations": [{"operator": "Exists"}]}}),
    );
    assert!(filter(&exists_all, &tainted, &[]).is_ok());
    let no_exec = node(
        "a",
        json!({"spec": {"taints": [{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]}}),
    );
    let wrong_effect = pod(
        "p",
        json!({"spec": {"tolerations": [{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoSchedule"}]}}),
    );
    assert!(filter(&wrong_effect, &no_exec, &[]).is_err());
}

#[test]
fn node_selector_and_required_affinity() {
    let n = node(
        "a",
        json!({"metadata": {"labels": {"disk": "ssd", "rank": "5"}}}),
    );
    assert!(filter(
        &pod("p", json!({"spec": {"nodeSelector": {"disk": "ssd"}}})),
        &n,
        &[]
    )
    .is_ok());
    assert_eq!(
        reason(
            &pod("p", json!({"spec": {"nodeSelector": {"disk": "hdd"}}})),
            &n
        ),
        "node(s) didn't match Pod's node affinity/selector"
    );
    let aff = |terms: serde_json::Value| {
        pod(
            "p",
            json!({"spec": {"affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}}}),
        )
    };
    assert!(filter(&aff(json!([{"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd", "nvme"]}]}])), &n, &[]).is_ok());
    assert!(filter(
        &aff(json!([{"matchExpressions": [{"key": "rank", "operator": "Gt", "values": ["7"]}]}])),
        &n,
        &[]
    )
    .is_err());
    assert!(filter(
        &aff(json!([{"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]}])),
        &n,
        &[]
    )
    .is_ok());
    assert!(filter(
        &aff(
            json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["a"]}]}])
        ),
        &n,
        &[]
    )
    .is_ok());
    assert!(filter(
        &aff(json!([
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["b"]}]},
        {"matchExpressions": [{"key": "disk", "operator": "NotIn", "values": ["hdd"]}]}])),
        &n,
        &[]
    )
    .is_ok());
    assert!(filter(&aff(json!([{"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["a"]}]}])), &n, &[]).is_err());
}

#[test]
fn resources_count_bound_pods() {
    let mut n = node(
        "a",
        json!({"status": {"allocatable": {"cpu": "1", "memory": "1Gi", "pods": "2"}}}),
    );
    let big = pod(
        "big",
        json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "600m"}}}]}}),
    );
    assert!(filter(&big, &n, &[]).is_ok());
    n.add_pod(Arc::new(big.clone()));
    let again = pod(
        "again",
        json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "600m", "memory": "2Gi"}}}]}}),
    );
    assert_eq!(reason(&again, &n), "Insufficient cpu, Insufficient memory");
    n.add_pod(Arc::new(pod("small", json!({}))));
    assert_eq!(reason(&pod("third", json!({})), &n), "Too many pods");
}

#[test]
fn host_ports_conflict() {
    let mut n = node("a", json!({}));
    let web = |name: &str, port: i64| {
        pod(
            name,
            json!({"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": port}]}]}}),
        )
    };
    n.add_pod(Arc::new(web("one", 8080)));
    assert_eq!(
        reason(&web("two", 8080), &n),
        "node(s) didn't have free ports for the requested pod ports"
    );
    assert!(filter(&web("three", 8081), &n, &[]).is_ok());
}

#[test]
fn anti_affinity_on_hostname_both_ways() {
    let anti = json!({"metadata": {"labels": {"app": "db"}}, "spec": {"affinity": {"podAntiAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "kubernetes.io/hostname",
            "labelSelector": {"matchLabels": {"app": "db"}}}]}}}});
    let mut a = node("a", json!({}));
    let b = node("b", json!({}));
    a.add_pod(Arc::new(pod("db-0", anti.clone())));
    let nodes = vec![a, b];
    let db1 = pod("db-1", anti);
    assert_eq!(
        filter(&db1, &nodes[0], &nodes).unwrap_err(),
        vec!["node(s) didn't match pod anti-affinity rules".to_string()]
    );
    assert!(filter(&db1, &nodes[1], &nodes).is_ok());
    // A plain pod labelled app=db is refused by db-0's own anti-affinity.
    let plain = pod("plain", json!({"metadata": {"labels": {"app": "db"}}}));
    assert_eq!(
        filter(&plain, &nodes[0], &nodes).unwrap_err(),
        vec!["node(s) didn't satisfy existing pods anti-affinity rules".to_string()]
    );
    let other_ns = pod(
        "x",
        json!({"metadata": {"namespace": "other", "labels": {"app": "db"}}}),
    );
    assert!(filter(&other_ns, &nodes[0], &nodes).is_ok());
}

#[test]
fn failed_scheduling_message_is_kubes() {
    let tainted = node(
        "a",
        json!({"spec": {"taints": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]}}),
    );
    let small = || node("b", json!({"status": {"allocatable": {"cpu": "100m"}}}));
    let nodes = vec![tainted, small(), small()];
    let p = pod(
        "p",
        json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]}}),
    );
    let (ok, d) = feasible(&p, &nodes);
    assert!(ok.is_empty());
    assert_eq!(
        d.message(),
        "0/3 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, 2 Insufficient cpu. \
         preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod."
    );
    let (_, none) = feasible(&p, &[]);
    assert_eq!(none.message(), "no nodes available to schedule pods");
}

#[test]
fn scores_spread_one_owner_then_prefer_free_nodes() {
    let owned = |name: &str| {
        pod(
            name,
            json!({"metadata": {"ownerReferences": [
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u1", "controller": true}]}}),
        )
    };
    let mut a = node("a", json!({}));
    let mut b = node("b", json!({}));
    let c = node("c", json!({}));
    a.add_pod(Arc::new(owned("r0")));
    // b is busier with unrelated pods but has no replica: spreading wins.
    for i in 0..3 {
        b.add_pod(Arc::new(pod(&format!("x{i}"), json!({}))));
    }
    let nodes = vec![a, b, c];
    let s = scores(&owned("r1"), &nodes, &[0, 1, 2]);
    assert!(s[1] > s[0] && s[2] > s[1], "{s:?}");
    assert_eq!(pick(&owned("r1"), &nodes, &[0, 1, 2]), Some(2));
    assert_eq!(pick(&pod("lone", json!({})), &nodes, &[0, 1]), Some(0));
}
