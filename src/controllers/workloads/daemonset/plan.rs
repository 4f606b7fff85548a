//! The DaemonSet controller's decisions, as a pure function of what it
//! observed: the DaemonSet, the nodes, the pods it owns, its update revision's
//! hash and the clock. [`plan`] returns the pods to delete, the nodes to
//! create a pod on, the revisions still in use, the status to write and when
//! to look again; `super::apply` carries it out. No API call happens here, so
//! the decisions are unit-tested without a server.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::eligible::{should_run, target_node};
use crate::controllers::workloads::common::*;
use crate::controllers::workloads::history;
use crate::controllers::workloads::rollout::scaled_value;

/// What one pass observed.
pub struct Observed<'a> {
    pub ds: &'a DaemonSet,
    pub nodes: &'a [Node],
    /// The pods the DaemonSet owns (after claiming).
    pub pods: Vec<Pod>,
    /// The hash of the update revision (the pods' `controller-revision-hash`).
    pub hash: &'a str,
    /// `status.collisionCount` after syncing the revisions.
    pub collision_count: Option<i32>,
    pub now: Timestamp,
}

/// What one pass does, in this order.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonPlan {
    /// Pods to delete, by name.
    pub delete: Vec<String>,
    /// Nodes to create a daemon pod on.
    pub create: Vec<String>,
    /// Revision hashes the remaining pods carry (kept by history truncation).
    pub in_use: Vec<String>,
    /// The status, counted from what existed before this pass acts.
    pub status: DaemonSetStatus,
    pub requeue: Duration,
}

fn created(p: &Pod) -> (i64, String) {
    (
        p.metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second())
            .unwrap_or(0),
        p.name_any(),
    )
}

/// Decides one pass. Fails only on an invalid `maxUnavailable`, before
/// anything is done.
pub fn plan(o: Observed<'_>) -> Result<DaemonPlan> {
    let ds = o.ds;
    let spec = ds.spec.clone().unwrap_or_default();
    let old = ds.status.clone().unwrap_or_default();
    let nodes = o.nodes;
    let mut by_node: BTreeMap<String, Vec<Pod>> = BTreeMap::new();
    let mut to_delete: Vec<Pod> = Vec::new();
    for p in o
        .pods
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        if pod_phase(&p) == "Failed" {
            to_delete.push(p);
            continue;
        }
        match target_node(&p) {
            Some(n) => by_node.entry(n).or_default().push(p),
            None => to_delete.push(p),
        }
    }
    for pods in by_node.values_mut() {
        pods.sort_by_key(created);
    }
    let min_ready = or_default(spec.min_ready_seconds, 0);
    let now = o.now;
    let is_updated = |p: &Pod| p.labels().get(history::HASH_LABEL).map(String::as_str) == Some(o.hash);

    let mut st = DaemonSetStatus {
        observed_generation: ds.metadata.generation,
        collision_count: o.collision_count,
        conditions: old.conditions.clone(),
        ..Default::default()
    };
    let (mut available, mut updated) = (0, 0);
    let mut to_create: Vec<String> = Vec::new();
    let node_names: Vec<String> = nodes.iter().map(|n| n.name_any()).collect();
    for node in nodes {
        let nname = node.name_any();
        let pods = by_node.get(&nname).cloned().unwrap_or_default();
        if should_run(node, &spec.template) {
            st.desired_number_scheduled += 1;
            if pods.is_empty() {
                to_create.push(nname);
                continue;
            }
            st.current_number_scheduled += 1;
            let p = &pods[0];
            if is_ready(p) {
                st.number_ready += 1;
                if is_available(p, min_ready, now) {
                    available += 1;
                }
            }
            if is_updated(p) {
                updated += 1;
            }
            to_delete.extend(pods.into_iter().skip(1));
        } else if !pods.is_empty() {
            st.number_misscheduled += 1;
            to_delete.extend(pods);
        }
    }
    // Pods for nodes that no longer exist.
    for (n, pods) in &by_node {
        if !node_names.contains(n) {
            to_delete.extend(pods.iter().cloned());
        }
    }
    let opt = |n: i32| (n != 0).then_some(n);
    st.number_available = opt(available);
    st.updated_number_scheduled = opt(updated);
    st.number_unavailable = opt(st.desired_number_scheduled - available);

    // Rolling update: old pods go within maxUnavailable, unavailable ones first.
    let rolling = spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.type_.as_deref())
        != Some("OnDelete");
    if rolling {
        let max_unavailable = spec
            .update_strategy
            .as_ref()
            .and_then(|u| u.rolling_update.as_ref())
            .and_then(|r| r.max_unavailable.clone())
            .unwrap_or(IntOrString::Int(1));
        let max_unavailable = scaled_value(&max_unavailable, st.desired_number_scheduled, true)
            .map_err(|message| Error::Invalid {
                field: "spec.updateStrategy.rollingUpdate.maxUnavailable".into(),
                message,
            })?
            .max(1);
        let mut unavailable = to_create.len() as i32;
        let mut replace = Vec::new();
        let mut candidates = Vec::new();
        for node in nodes.iter().filter(|n| should_run(n, &spec.template)) {
            let Some(pods) = by_node.get(&node.name_any()) else {
                continue;
            };
            let p = &pods[0];
            if is_updated(p) {
                if !is_available(p, min_ready, now) {
                    unavailable += 1;
                }
            } else if !is_available(p, min_ready, now) {
                replace.push(p.clone());
            } else if unavailable < max_unavailable {
                candidates.push(p.clone());
            }
        }
        let room = (max_unavailable - unavailable).max(0) as usize;
        to_delete.extend(replace);
        to_delete.extend(candidates.into_iter().take(room));
    }
    let in_use: Vec<String> = by_node
        .values()
        .flatten()
        .filter_map(|p| p.labels().get(history::HASH_LABEL).cloned())
        .collect();
    let requeue = if st.number_ready > available {
        Duration::from_secs(min_ready.max(1) as u64)
    } else {
        Duration::from_secs(300)
    };
    Ok(DaemonPlan {
        delete: to_delete.iter().map(|p| p.name_any()).collect(),
        create: to_create,
        in_use,
        status: st,
        requeue,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NEW: &str = "new";
    const OLD: &str = "old";

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn ds(strategy: serde_json::Value) -> DaemonSet {
        serde_json::from_value(json!({
            "metadata": {"name": "agent", "namespace": "default", "generation": 2},
            "spec": {
                "selector": {"matchLabels": {"app": "agent"}},
                "template": {"metadata": {"labels": {"app": "agent"}},
                    "spec": {"containers": [{"name": "c", "image": "i"}]}},
                "updateStrategy": strategy
            }
        }))
        .unwrap()
    }

    fn node(name: &str) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
    }

    fn tainted(name: &str) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name},
            "spec": {"taints": [{"key": "dedicated", "effect": "NoSchedule"}]}}))
        .unwrap()
    }

    /// A daemon pod bound to `node`, of revision `rev`, ready since t=0 or not.
    fn pod(name: &str, node: &str, rev: &str, ready: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default",
                "creationTimestamp": "2026-01-01T00:00:00Z",
                "labels": {"app": "agent", "controller-revision-hash": rev}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready",
                "status": if ready { "True" } else { "False" },
                "lastTransitionTime": "1970-01-01T00:00:00Z"}]}
        }))
        .unwrap()
    }

    fn run(ds: &DaemonSet, nodes: &[Node], pods: Vec<Pod>) -> DaemonPlan {
        plan(Observed {
            ds,
            nodes,
            pods,
            hash: NEW,
            collision_count: None,
            now: at(1000),
        })
        .unwrap()
    }

    #[test]
    fn creates_a_pod_on_each_eligible_node_without_one() {
        let d = ds(json!({}));
        let p = run(&d, &[node("a"), node("b"), tainted("c")], vec![pod("x", "a", NEW, true)]);
        assert_eq!(p.create, vec!["b".to_string()]);
        assert!(p.delete.is_empty());
        assert_eq!(p.status.desired_number_scheduled, 2);
        assert_eq!(p.status.current_number_scheduled, 1);
        assert_eq!(p.status.number_ready, 1);
        assert_eq!(p.status.number_available, Some(1));
        assert_eq!(p.status.number_unavailable, Some(1));
        assert_eq!(p.status.observed_generation, Some(2));
        assert_eq!(p.in_use, vec![NEW.to_string()]);
    }

    #[test]
    fn deletes_extra_failed_misscheduled_and_orphaned_pods() {
        let d = ds(json!({}));
        let mut failed = pod("f", "a", NEW, false);
        failed.status.as_mut().unwrap().phase = Some("Failed".into());
        let mut second = pod("y", "a", NEW, true);
        second.metadata.creation_timestamp =
            serde_json::from_value(json!("2026-01-02T00:00:00Z")).unwrap();
        let pods = vec![
            failed,
            second,
            pod("x", "a", NEW, true),
            pod("m", "c", NEW, true),
            pod("gone", "z", NEW, true),
        ];
        let p = run(&d, &[node("a"), tainted("c")], pods);
        assert_eq!(p.delete, ["f", "y", "m", "gone"].map(String::from).to_vec());
        assert!(p.create.is_empty());
        assert_eq!(p.status.number_misscheduled, 1);
    }

    #[test]
    fn a_rolling_update_replaces_unavailable_pods_first_within_max_unavailable() {
        let d = ds(json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}));
        let nodes = [node("a"), node("b"), node("c")];
        let pods = vec![pod("pa", "a", OLD, true), pod("pb", "b", OLD, false), pod("pc", "c", OLD, true)];
        let p = run(&d, &nodes, pods);
        // The unavailable old pod goes at once; available old ones within maxUnavailable.
        assert_eq!(p.delete, vec!["pb".to_string(), "pa".to_string()]);
        let pods = vec![pod("pa", "a", OLD, true), pod("pb", "b", NEW, true), pod("pc", "c", OLD, true)];
        let p = run(&d, &nodes, pods);
        assert_eq!(p.delete, vec!["pa".to_string()], "one available old pod at a time");
        assert_eq!(p.status.updated_number_scheduled, Some(1));
        let p = run(&d, &nodes, vec![pod("pa", "a", OLD, true), pod("pc", "c", OLD, true)]);
        assert!(p.delete.is_empty(), "the missing pod already uses up maxUnavailable");
        assert_eq!(p.create, vec!["b".to_string()]);
    }

    #[test]
    fn on_delete_waits_for_the_user() {
        let d = ds(json!({"type": "OnDelete"}));
        let p = run(&d, &[node("a")], vec![pod("pa", "a", OLD, false)]);
        assert!(p.delete.is_empty());
        assert_eq!(p.in_use, vec![OLD.to_string()]);
    }

    #[test]
    fn an_invalid_max_unavailable_fails_before_acting() {
        let d = ds(json!({"rollingUpdate": {"maxUnavailable": "lots"}}));
        let r = plan(Observed {
            ds: &d,
            nodes: &[node("a")],
            pods: vec![],
            hash: NEW,
            collision_count: None,
            now: at(1000),
        });
        assert!(matches!(r, Err(Error::Invalid { .. })));
    }

    #[test]
    fn a_ready_pod_not_yet_available_brings_the_next_look_forward() {
        let mut d = ds(json!({}));
        d.spec.as_mut().unwrap().min_ready_seconds = Some(5000);
        let p = run(&d, &[node("a")], vec![pod("pa", "a", NEW, true)]);
        assert_eq!(p.status.number_available, None);
        assert_eq!(p.requeue, Duration::from_secs(5000));
        assert_eq!(run(&ds(json!({})), &[node("a")], vec![]).requeue, Duration::from_secs(300));
    }
}
