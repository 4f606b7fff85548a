//! The scheduler's filters, as kube-scheduler's default plug-ins in their
//! order (NodeUnschedulable, NodeName, TaintToleration, NodeAffinity,
//! NodePorts, NodeResourcesFit, InterPodAffinity), each answering with
//! kube's reason text, and the `0/N nodes are available: …` message.
//!
//! Pure functions over [`PodInfo`] and [`NodeInfo`]; no I/O. PARTIAL:
//! required pod *affinity* is not filtered (only anti-affinity), a
//! `namespaceSelector` other than `{}` (all namespaces) is read as the pod's
//! own namespace, and there is no preemption.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    Node, NodeSelectorTerm, Pod, PodAffinityTerm, Taint,
};

use super::resources::{self, Resources};
use crate::k8s::scheduling::{requirement_matches, tolerates, untolerated_taint};
use crate::k8s::selector;

/// One pod as the scheduler keeps it, with what it derives once.
#[derive(Clone, Debug)]
pub struct PodInfo {
    pub pod: Arc<Pod>,
    pub key: String,
    pub namespace: String,
    pub requests: Resources,
    pub nonzero_requests: Resources,
    /// `(hostIP, protocol, hostPort)`.
    pub host_ports: Vec<(String, String, i32)>,
    /// The controller owner's uid.
    pub owner: Option<String>,
}

impl PodInfo {
    pub fn new(pod: Arc<Pod>) -> Self {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let key = format!(
            "{namespace}/{}",
            pod.metadata.name.as_deref().unwrap_or_default()
        );
        let host_ports = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                p.host_port.filter(|hp| *hp > 0).map(|hp| {
                    (
                        p.host_ip.clone().unwrap_or_else(|| "0.0.0.0".into()),
                        p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        hp,
                    )
                })
            })
            .collect();
        let owner = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .map(|o| o.uid.clone());
        PodInfo {
            requests: resources::pod_requests(&pod, false),
            nonzero_requests: resources::pod_requests(&pod, true),
            pod,
            key,
            namespace,
            host_ports,
            owner,
        }
    }

    pub fn labels(&self) -> BTreeMap<String, String> {
        self.pod.metadata.labels.clone().unwrap_or_default()
    }

    fn anti_affinity_terms(&self) -> &[PodAffinityTerm] {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_deref()
            })
            .unwrap_or(&[])
    }
}

/// A node and the pods bound (or assumed) to it.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub node: Arc<Node>,
    pub name: String,
    pub allocatable: Resources,
    pub requested: Resources,
    pub nonzero_requested: Resources,
    pub host_ports: Vec<(String, String, i32)>,
    pub pods: Vec<Arc<PodInfo>>,
}

impl NodeInfo {
    pub fn new(node: Arc<Node>) -> Self {
        NodeInfo {
            name: node.metadata.name.clone().unwrap_or_default(),
            allocatable: resources::node_allocatable(&node),
            node,
            requested: Resources::new(),
            nonzero_requested: Resources::new(),
            host_ports: Vec::new(),
            pods: Vec::new(),
        }
    }

    pub fn add_pod(&mut self, p: Arc<PodInfo>) {
        for (k, v) in &p.requests {
            *self.requested.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &p.nonzero_requests {
            *self.nonzero_requested.entry(k.clone()).or_default() += v;
        }
        self.host_ports.extend(p.host_ports.iter().cloned());
        self.pods.push(p);
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.node
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(key))
            .map(String::as_str)
    }

    fn ready(&self) -> bool {
        self.node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .is_some_and(|c| c.status == "True")
    }
}

fn term_matches(term: &NodeSelectorTerm, node: &NodeInfo) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or(&[]);
    let fields = term.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs
        .iter()
        .all(|r| requirement_matches(r, node.label(&r.key)))
        && fields
            .iter()
            .all(|r| r.key == "metadata.name" && requirement_matches(r, Some(node.name.as_str())))
}

/// `nodeSelector` and required node affinity.
pub fn matches_node_affinity(pod: &Pod, node: &NodeInfo) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return true;
    };
    if let Some(sel) = &spec.node_selector {
        if !sel.iter().all(|(k, v)| node.label(k) == Some(v.as_str())) {
            return false;
        }
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    match required {
        Some(r) => r.node_selector_terms.iter().any(|t| term_matches(t, node)),
        None => true,
    }
}

/// Whether `term` (of a pod in `term_ns`) selects `other`.
fn affinity_term_selects(term: &PodAffinityTerm, term_ns: &str, other: &PodInfo) -> bool {
    let all_namespaces = term.namespace_selector.as_ref().is_some_and(selector::is_empty);
    let in_ns = all_namespaces
        || match term.namespaces.as_deref() {
            Some(list) if !list.is_empty() => list.iter().any(|n| *n == other.namespace),
            _ => other.namespace == term_ns,
        };
    in_ns && selector::selects(term.label_selector.as_ref(), &other.labels())
}

/// Nodes in the same topology domain as `node` for `key`.
fn same_domain<'a>(
    node: &'a NodeInfo,
    key: &str,
    all: &'a [NodeInfo],
) -> impl Iterator<Item = &'a NodeInfo> + 'a {
    let value = node.label(key).map(String::from);
    let key = key.to_string();
    let by_name = key == "kubernetes.io/hostname" && value.is_none();
    all.iter().filter(move |n| {
        if by_name {
            n.name == node.name
        } else {
            value.is_some() && n.label(&key) == value.as_deref()
        }
    })
}

/// One node's verdict: `Ok` or the reasons it was filtered out.
pub fn filter(pod: &PodInfo, node: &NodeInfo, all: &[NodeInfo]) -> Result<(), Vec<String>> {
    let fail = |r: String| Err(vec![r]);
    let spec = pod.pod.spec.clone().unwrap_or_default();
    let tolerations = spec.tolerations.clone().unwrap_or_default();
    let node_spec = node.node.spec.clone().unwrap_or_default();
    let unschedulable_taint = Taint {
        key: "node.kubernetes.io/unschedulable".into(),
        effect: "NoSchedule".into(),
        ..Default::default()
    };
    if node_spec.unschedulable == Some(true)
        && !tolerations
            .iter()
            .any(|t| tolerates(t, &unschedulable_taint))
    {
        return fail("node(s) were unschedulable".into());
    }
    if let Some(n) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        if n != node.name {
            return fail("node(s) didn't match the requested node name".into());
        }
    }
    let mut taints = node_spec.taints.clone().unwrap_or_default();
    if !node.ready()
        && !taints.iter().any(|t| {
            t.key.starts_with("node.kubernetes.io/not-ready")
                || t.key == "node.kubernetes.io/unreachable"
        })
    {
        taints.push(Taint {
            key: "node.kubernetes.io/not-ready".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        });
    }
    if let Some(t) = untolerated_taint(&taints, &tolerations) {
        return fail(format!(
            "node(s) had untolerated taint {{{}: {}}}",
            t.key,
            t.value.as_deref().unwrap_or("")
        ));
    }
    if !matches_node_affinity(&pod.pod, node) {
        return fail("node(s) didn't match Pod's node affinity/selector".into());
    }
    if host_ports_conflict(&pod.host_ports, &node.host_ports) {
        return fail("node(s) didn't have free ports for the requested pod ports".into());
    }
    let insufficient = insufficient_resources(pod, node);
    if !insufficient.is_empty() {
        return Err(insufficient);
    }
    for term in pod.anti_affinity_terms() {
        let hit = same_domain(node, &term.topology_key, all)
            .flat_map(|n| n.pods.iter())
            .any(|other| {
                other.key != pod.key && affinity_term_selects(term, &pod.namespace, other)
            });
        if hit {
            return fail("node(s) didn't match pod anti-affinity rules".into());
        }
    }
    for other_node in all {
        for other in &other_node.pods {
            for term in other.anti_affinity_terms() {
                let same =
                    same_domain(other_node, &term.topology_key, all).any(|n| n.name == node.name);
                if same
                    && other.key != pod.key
                    && affinity_term_selects(term, &other.namespace, pod)
                {
                    return fail("node(s) didn't satisfy existing pods anti-affinity rules".into());
                }
            }
        }
    }
    Ok(())
}

fn host_ports_conflict(want: &[(String, String, i32)], used: &[(String, String, i32)]) -> bool {
    want.iter().any(|(ip, proto, port)| {
        used.iter().any(|(uip, uproto, uport)| {
            uport == port && uproto == proto && (ip == uip || ip == "0.0.0.0" || uip == "0.0.0.0")
        })
    })
}

/// kube's NodeResourcesFit reasons: `Too many pods`, `Insufficient cpu`, ….
pub fn insufficient_resources(pod: &PodInfo, node: &NodeInfo) -> Vec<String> {
    let mut out = Vec::new();
    for (name, want) in &pod.requests {
        if *want == 0 {
            continue;
        }
        let alloc = node.allocatable.get(name).copied().unwrap_or(0);
        let used = node.requested.get(name).copied().unwrap_or(0);
        if used + want > alloc {
            out.push(if name == "pods" {
                "Too many pods".to_string()
            } else {
                format!("Insufficient {name}")
            });
        }
    }
    out
}

/// Why a pod fits no node: reason texts with their node counts, and how
/// many nodes failed only for lack of resources (where preemption could in
/// principle help: kube words those differently).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    pub total_nodes: usize,
    pub reasons: BTreeMap<String, usize>,
    pub resource_only_nodes: usize,
    /// A PreFilter's verdict for the whole pod (e.g. an unbound immediate
    /// claim): no node was looked at.
    pub pre_filter: Option<String>,
}

fn is_resource_reason(r: &str) -> bool {
    r.starts_with("Insufficient ") || r == "Too many pods"
}

impl Diagnosis {
    /// The FailedScheduling message, as kube-scheduler words it (we never
    /// preempt, and all pods share one priority, so no victims exist).
    pub fn message(&self) -> String {
        let total = self.total_nodes;
        if total == 0 {
            return "no nodes available to schedule pods".into();
        }
        if let Some(why) = &self.pre_filter {
            return format!(
                "0/{total} nodes are available: {why}. preemption: 0/{total} nodes are available: {total} Preemption is not helpful for scheduling."
            );
        }
        let mut parts: Vec<String> = self
            .reasons
            .iter()
            .map(|(r, n)| format!("{n} {r}"))
            .collect();
        parts.sort();
        let mut pre = Vec::new();
        if self.resource_only_nodes > 0 {
            pre.push(format!(
                "{} No preemption victims found for incoming pod",
                self.resource_only_nodes
            ));
        }
        let rest = total.saturating_sub(self.resource_only_nodes);
        if rest > 0 {
            pre.push(format!("{rest} Preemption is not helpful for scheduling"));
        }
        pre.sort();
        format!(
            "0/{total} nodes are available: {}. preemption: 0/{total} nodes are available: {}.",
            parts.join(", "),
            pre.join(", ")
        )
    }
}

/// The indexes of the nodes that pass every filter, and why the others did not.
pub fn feasible(pod: &PodInfo, nodes: &[NodeInfo]) -> (Vec<usize>, Diagnosis) {
    let mut ok = Vec::new();
    let mut d = Diagnosis {
        total_nodes: nodes.len(),
        ..Default::default()
    };
    for (i, n) in nodes.iter().enumerate() {
        match filter(pod, n, nodes) {
            Ok(()) => ok.push(i),
            Err(rs) => {
                let unique: HashSet<String> = rs.into_iter().collect();
                if unique.iter().all(|r| is_resource_reason(r)) {
                    d.resource_only_nodes += 1;
                }
                for r in unique {
                    *d.reasons.entry(r).or_default() += 1;
                }
            }
        }
    }
    (ok, d)
}
