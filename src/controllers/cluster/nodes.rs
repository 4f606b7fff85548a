//! Node controllers: lifecycle (kube's node-lifecycle controller with its
//! taint-based eviction) and pod CIDRs (kube's node-ipam range allocator).
//!
//! Lifecycle: every `node_monitor_period` each node's Lease in
//! `kube-node-lease` is checked; the time a renewal was last *observed*
//! (this process's clock, as kube does, so skewed node clocks don't matter)
//! older than `node_monitor_grace` makes the node's conditions Unknown
//! ("Kubelet stopped posting node status."), its pods NotReady, and adds the
//! `node.kubernetes.io/unreachable` NoSchedule and NoExecute taints (a node
//! reporting Ready=False gets the `not-ready` ones). Pods on a node with a
//! NoExecute taint they do not tolerate are deleted at once; those that
//! tolerate it for `tolerationSeconds` are deleted when that has passed since
//! the taint's `timeAdded`. A node that comes back (Lease renewed and
//! Ready=True posted) loses the taints. After a restart, every node gets a
//! fresh grace period.
//!
//! Pod CIDRs: a node without `spec.podCIDR` gets the lowest free
//! `/node_cidr_mask` subnet of the cluster CIDR; subnets are derived from the
//! nodes that exist (so a deleted node frees its own) plus what this process
//! handed out and may not have seen back yet; never two nodes on one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;
use serde_json::json;
use tokio::time::Instant;

use super::super::Context;
use crate::k8s::events::{object_ref, EventRecorder, EventType};
use super::{Error, Result};
use crate::cidr;
use crate::k8s::lease::SeenChanging;
use crate::k8s::scheduling::tolerates;

pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
const UNKNOWN_MESSAGE: &str = "Kubelet stopped posting node status.";

/// The lifecycle taints a node should carry for its Ready status.
pub fn wanted_taints(ready: &str) -> Vec<(&'static str, &'static str)> {
    let key = match ready {
        "True" => return vec![],
        "False" => NOT_READY,
        _ => UNREACHABLE,
    };
    vec![(key, "NoSchedule"), (key, "NoExecute")]
}

/// `current` with the lifecycle taints replaced by `wanted` (keeping the
/// `timeAdded` of those already there); `None` when nothing changes.
pub fn merge_taints(current: &[Taint], wanted: &[(&str, &str)], now: &str) -> Option<Vec<Taint>> {
    let ours = |t: &Taint| t.key == UNREACHABLE || t.key == NOT_READY;
    let mut out: Vec<Taint> = current.iter().filter(|t| !ours(t)).cloned().collect();
    for (key, effect) in wanted {
        match current
            .iter()
            .find(|t| t.key == *key && t.effect == *effect)
        {
            Some(t) => out.push(t.clone()),
            None => out.push(
                serde_json::from_value(json!({"key": key, "effect": effect,
                    "timeAdded": if *effect == "NoExecute" { json!(now) } else { json!(null) }}))
                .expect("a taint"),
            ),
        }
    }
    let same = out.len() == current.len() && out.iter().all(|t| current.contains(t));
    (!same).then_some(out)
}

/// When `pod` must be evicted from a node with `taints`: `Some(0)` now,
/// `Some(s)` s seconds after the taint was added, `None` never.
pub fn eviction_delay(pod: &Pod, taints: &[Taint]) -> Option<i64> {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    let mut delay: Option<i64> = None;
    for taint in taints.iter().filter(|t| t.effect == "NoExecute") {
        let matching: Vec<_> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if matching.is_empty() {
            return Some(0);
        }
        // Tolerated forever unless every matching toleration is bounded.
        if matching.iter().all(|t| t.toleration_seconds.is_some()) {
            let s = matching
                .iter()
                .filter_map(|t| t.toleration_seconds)
                .min()
                .unwrap_or(0)
                .max(0);
            delay = Some(delay.map_or(s, |d: i64| d.min(s)));
        }
    }
    delay
}

fn ready_status(n: &Node) -> String {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.clone())
        .unwrap_or_else(|| "Unknown".into())
}

fn now_text() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

struct Lifecycle {
    ctx: Context,
    recorder: EventRecorder,
    /// Node → its last renewTime seen and when this process saw it change
    /// (kube's rule: the node's own clock is never trusted).
    observed: HashMap<String, SeenChanging<String>>,
}

impl Lifecycle {
    async fn check(&mut self, nodes: &Store<Node>, leases: &Store<Lease>) {
        let names: HashSet<String> = nodes.state().iter().map(|n| n.name_any()).collect();
        self.observed.retain(|k, _| names.contains(k));
        for node in nodes.state() {
            if let Err(e) = self.check_node(&node, leases).await {
                tracing::debug!(node = %node.name_any(), "node lifecycle: {e}");
            }
        }
    }

    async fn check_node(&mut self, node: &Node, leases: &Store<Lease>) -> Result<()> {
        let name = node.name_any();
        let renew = leases
            .state()
            .into_iter()
            .find(|l| l.name_any() == name && l.namespace().as_deref() == Some("kube-node-lease"))
            .and_then(|l| l.spec.as_ref().and_then(|s| s.renew_time.clone()))
            .map(|t| t.0.to_string())
            .or_else(|| {
                node.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
                    .and_then(|c| c.last_heartbeat_time.clone())
                    .map(|t| t.0.to_string())
            })
            .unwrap_or_default();
        // tokio's clock (paused in tests), as a std instant.
        let now = Instant::now().into_std();
        let healthy = self
            .observed
            .entry(name.clone())
            .and_modify(|seen| seen.observe(renew.clone(), now))
            .or_insert_with(|| SeenChanging::new(renew, now))
            .live(self.ctx.options.node_monitor_grace, now);
        let api: Api<Node> = Api::all(self.ctx.client.clone());
        let mut ready = ready_status(node);
        if !healthy && ready != "Unknown" {
            self.mark_unknown(node).await?;
            ready = "Unknown".into();
        }
        let current = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let wanted = if healthy || ready == "Unknown" {
            wanted_taints(&ready)
        } else {
            vec![]
        };
        let taints = match merge_taints(&current, &wanted, &now_text()) {
            Some(t) => {
                let patch = json!({"metadata": {"resourceVersion": node.resource_version()},
                                   "spec": {"taints": if t.is_empty() { json!(null) } else { json!(t) }}});
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                t
            }
            None => current,
        };
        if taints.iter().any(|t| t.effect == "NoExecute") {
            self.evict(node, &taints).await?;
        }
        Ok(())
    }

    async fn mark_unknown(&self, node: &Node) -> Result<()> {
        let name = node.name_any();
        let now = now_text();
        let conds: Vec<_> = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|c| {
                json!({"type": c.type_, "status": "Unknown", "reason": "NodeStatusUnknown",
                       "message": UNKNOWN_MESSAGE, "lastHeartbeatTime": c.last_heartbeat_time,
                       "lastTransitionTime": now})
            })
            .collect();
        let conds = if conds.is_empty() {
            vec![
                json!({"type": "Ready", "status": "Unknown", "reason": "NodeStatusNeverUpdated",
                        "message": UNKNOWN_MESSAGE, "lastTransitionTime": now}),
            ]
        } else {
            conds
        };
        let api: Api<Node> = Api::all(self.ctx.client.clone());
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Strategic(&json!({"status": {"conditions": conds}})),
        )
        .await?;
        self.recorder
            .record(
                &object_ref(node),
                EventType::Normal,
                "NodeNotReady",
                &format!("Node {name} status is now: NodeNotReady"),
            )
            .await;
        // Pods on the node are no longer known to be ready.
        let pods: Api<Pod> = Api::all(self.ctx.client.clone());
        let lp = ListParams::default().fields(&format!("spec.nodeName={name}"));
        for p in pods.list(&lp).await?.items {
            let ready_true = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            if !ready_true {
                continue;
            }
            let api: Api<Pod> =
                Api::namespaced(self.ctx.client.clone(), &p.namespace().unwrap_or_default());
            let patch = json!({"status": {"conditions": [{"type": "Ready", "status": "False",
                "lastTransitionTime": now, "lastProbeTime": null}]}});
            let _ = api
                .patch_status(
                    &p.name_any(),
                    &PatchParams::default(),
                    &Patch::Strategic(&patch),
                )
                .await;
        }
        Ok(())
    }

    async fn evict(&self, node: &Node, taints: &[Taint]) -> Result<()> {
        let name = node.name_any();
        let pods: Api<Pod> = Api::all(self.ctx.client.clone());
        let lp = ListParams::default().fields(&format!("spec.nodeName={name}"));
        let now = chrono::Utc::now();
        for p in pods.list(&lp).await?.items {
            if p.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let Some(delay) = eviction_delay(&p, taints) else {
                continue;
            };
            let since = taints
                .iter()
                .filter(|t| t.effect == "NoExecute")
                .filter_map(|t| t.time_added.as_ref())
                .filter_map(|t| chrono::DateTime::parse_from_rfc3339(&t.0.to_string()).ok())
                .map(|d| d.with_timezone(&chrono::Utc))
                .min();
            let due = match since {
                Some(added) => added + chrono::Duration::seconds(delay) <= now,
                None => true,
            };
            if !due {
                continue;
            }
            let ns = p.namespace().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &ns);
            match api.delete(&p.name_any(), &DeleteParams::default()).await {
                Ok(_) => {
                    self.recorder
                        .record(
                            &object_ref(&p),
                            EventType::Normal,
                            "TaintManagerEviction",
                            &format!("Marking for deletion Pod {ns}/{}", p.name_any()),
                        )
                        .await;
                }
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

fn spawn_reflector<K>(api: Api<K>, shutdown: tokio_util::sync::CancellationToken) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store::<K>();
    let stream = reflector::reflector(writer, watcher::watcher(api, watcher::Config::default()))
        .default_backoff()
        .touched_objects();
    tokio::spawn(async move {
        let mut s = std::pin::pin!(stream);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                next = s.next() => if next.is_none() { return },
            }
        }
    });
    reader
}

/// Runs the node lifecycle controller until shutdown.
pub async fn run_lifecycle(ctx: Context) {
    let nodes = spawn_reflector(Api::<Node>::all(ctx.client.clone()), ctx.shutdown.clone());
    let leases = spawn_reflector(
        Api::<Lease>::namespaced(ctx.client.clone(), "kube-node-lease"),
        ctx.shutdown.clone(),
    );
    let mut l = Lifecycle {
        recorder: EventRecorder::new(ctx.client.clone(), "node-controller"),
        ctx: ctx.clone(),
        observed: HashMap::new(),
    };
    tokio::select! {
        _ = ctx.shutdown.cancelled() => return,
        _ = async { let _ = nodes.wait_until_ready().await; let _ = leases.wait_until_ready().await; } => {}
    }
    loop {
        l.check(&nodes, &leases).await;
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tokio::time::sleep(ctx.options.node_monitor_period) => {}
        }
    }
}

/// The lowest free subnet index given those `taken`.
pub fn next_free_subnet(
    net: &ipnet::IpNet,
    mask: u8,
    taken: &HashSet<u128>,
) -> Option<ipnet::IpNet> {
    let count = cidr::subnet_count(net, mask).min(1 << 20);
    (0..count)
        .find(|i| !taken.contains(i))
        .and_then(|i| cidr::nth_subnet(net, mask, i))
}

struct CidrCtx {
    ctx: Context,
    nodes: Store<Node>,
    /// What this process assigned: node → subnet index.
    assigned: Mutex<BTreeMap<String, u128>>,
}

async fn reconcile_cidr(node: Arc<Node>, c: Arc<CidrCtx>) -> Result<Action> {
    let net = c.ctx.options.settings.cluster_cidr;
    let mask = c.ctx.options.node_cidr_mask;
    if node
        .spec
        .as_ref()
        .and_then(|s| s.pod_cidr.as_ref())
        .is_some()
    {
        return Ok(Action::await_change());
    }
    let chosen = {
        let mut assigned = c.assigned.lock().unwrap_or_else(|e| e.into_inner());
        let live: HashSet<String> = c.nodes.state().iter().map(|n| n.name_any()).collect();
        assigned.retain(|k, _| live.contains(k) || *k == node.name_any());
        let mut taken: HashSet<u128> = assigned.values().copied().collect();
        for n in c.nodes.state() {
            for s in n.spec.iter().flat_map(|s| s.pod_cidrs.iter().flatten()) {
                if let Some(i) = s
                    .parse()
                    .ok()
                    .and_then(|s: ipnet::IpNet| cidr::subnet_index(&net, &s))
                {
                    taken.insert(i);
                }
            }
        }
        if let Some(i) = assigned.get(&node.name_any()) {
            cidr::nth_subnet(&net, mask, *i)
        } else {
            let s = next_free_subnet(&net, mask, &taken);
            if let Some(s) = s {
                if let Some(i) = cidr::subnet_index(&net, &s) {
                    assigned.insert(node.name_any(), i);
                }
            }
            s
        }
    };
    let Some(subnet) = chosen else {
        tracing::warn!(node = %node.name_any(), "no pod CIDR left in {net}");
        return Ok(Action::requeue(Duration::from_secs(60)));
    };
    let api: Api<Node> = Api::all(c.ctx.client.clone());
    let patch = json!({"spec": {"podCIDR": subnet.to_string(), "podCIDRs": [subnet.to_string()]}});
    api.patch(
        &node.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(Action::await_change())
}

fn cidr_error(_n: Arc<Node>, e: &Error, _c: Arc<CidrCtx>) -> Action {
    tracing::debug!("pod cidrs: {e}");
    Action::requeue(Duration::from_secs(3))
}

/// Runs the pod-CIDR allocator until shutdown.
pub async fn run_pod_cidrs(ctx: Context) {
    let controller = Controller::new(
        Api::<Node>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .with_config(kube::runtime::controller::Config::default().concurrency(1));
    let c = Arc::new(CidrCtx {
        nodes: controller.store(),
        ctx: ctx.clone(),
        assigned: Mutex::new(BTreeMap::new()),
    });
    controller
        .graceful_shutdown_on(ctx.shutdown.clone().cancelled_owned())
        .run(reconcile_cidr, cidr_error, c)
        .for_each(|_| async {})
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            ..Default::default()
        }
    }

    #[test]
    fn lifecycle_taints_follow_readiness() {
        let other = taint("dedicated", "NoSchedule");
        let t = merge_taints(
            &[other.clone()],
            &wanted_taints("Unknown"),
            "2024-01-01T00:00:00Z",
        )
        .unwrap();
        assert_eq!(t.len(), 3);
        assert!(t
            .iter()
            .any(|t| t.key == UNREACHABLE && t.effect == "NoExecute" && t.time_added.is_some()));
        assert!(merge_taints(&t, &wanted_taints("Unknown"), "later").is_none());
        let back = merge_taints(&t, &wanted_taints("True"), "later").unwrap();
        assert_eq!(back, vec![other]);
        assert_eq!(wanted_taints("False")[0].0, NOT_READY);
    }

    #[test]
    fn eviction_waits_for_toleration_seconds() {
        let pod = |tol: serde_json::Value| -> Pod {
            serde_json::from_value(
                json!({"metadata": {"name": "p"}, "spec": {"containers": [], "tolerations": tol}}),
            )
            .unwrap()
        };
        let taints = vec![
            taint(UNREACHABLE, "NoSchedule"),
            taint(UNREACHABLE, "NoExecute"),
        ];
        assert_eq!(eviction_delay(&pod(json!([])), &taints), Some(0));
        let bounded = pod(
            json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}]),
        );
        assert_eq!(eviction_delay(&bounded, &taints), Some(30));
        let forever =
            pod(json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}]));
        assert_eq!(eviction_delay(&forever, &taints), None);
    }

    #[test]
    fn pod_cidrs_take_the_lowest_free_subnet() {
        let net: ipnet::IpNet = "10.42.0.0/16".parse().unwrap();
        let taken: HashSet<u128> = [0, 1, 3].into();
        assert_eq!(
            next_free_subnet(&net, 24, &taken).unwrap().to_string(),
            "10.42.2.0/24"
        );
        let full: HashSet<u128> = (0..256).collect();
        assert!(next_free_subnet(&net, 24, &full).is_none());
    }
}
