//! The scheduler: binds pending pods to nodes through the `binding`
//! subresource, as kube-scheduler does.
//!
//! Shape: one loop owns an in-memory cache of nodes and pods fed by two
//! watches (`cache`), a queue of pods to schedule with per-pod back-off, and
//! a bounded set of in-flight bind requests. Each pass builds a [`NodeInfo`]
//! per node once and schedules every queued pod against it, adding each
//! choice to that view at once ("assuming" it, as kube-scheduler does), so
//! a thousand pods are decided without waiting for their binds.
//!
//! Filters and scores are pure (`filter`, `score`, `resources`). A pod that
//! fits nowhere gets `PodScheduled=False`/`Unschedulable` and a
//! `FailedScheduling` event, and is retried after its back-off once nodes or
//! pods change (or after a minute regardless). Only pods whose
//! `schedulerName` is `default-scheduler` (or empty) are touched.
//!
//! Restart-safe: everything is derived from the watches; a bind that raced
//! another writer answers 409 and the watch settles it. PARTIAL: no
//! preemption, no pod affinity (anti-affinity only), no scheduling gates,
//! no leader election (one server). Volumes: `volumes` (kube's
//! VolumeBinding: unbound claims, volume node affinity, WaitForFirstConsumer).

pub mod filter;
pub mod resources;
pub mod score;
pub mod volumes;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use serde_json::json;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

use crate::k8s::events::{object_ref, EventRecorder, EventType};
use tokio_util::sync::CancellationToken;
use filter::{NodeInfo, PodInfo};

pub const SCHEDULER_NAME: &str = "default-scheduler";
const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// An unschedulable pod is retried at least this often even if nothing changed.
const UNSCHEDULABLE_RETRY: Duration = Duration::from_secs(60);
const MAX_BINDS_IN_FLIGHT: usize = 32;
/// How long a bind waits for its claims to be bound (kube: 600 s).
const VOLUME_BIND_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs the scheduler, as an API client through `client`, until `shutdown`.
pub async fn run(client: kube::Client, shutdown: CancellationToken) {
    let mut s = Scheduler::new(client);
    s.run(shutdown).await;
}

struct Backoff {
    attempts: u32,
    until: Instant,
    unschedulable: bool,
    /// The cluster generation of the failed attempt.
    generation: u64,
    last_attempt: Instant,
    last_message: String,
}

enum BindOutcome {
    Bound,
    /// Someone else bound it, or it is gone: the watch will say.
    Settled,
    Failed(String),
}

struct Scheduler {
    client: kube::Client,
    recorder: Arc<EventRecorder>,
    nodes: BTreeMap<String, Arc<Node>>,
    /// Node fingerprints, to tell a meaningful change from a heartbeat.
    node_prints: HashMap<String, String>,
    pods: HashMap<String, Arc<PodInfo>>,
    /// Pods decided but whose bind is in flight: key → node.
    assumed: HashMap<String, String>,
    active: VecDeque<String>,
    queued: HashSet<String>,
    backoff: HashMap<String, Backoff>,
    /// Bumped when nodes or bound pods change in a way that may let a pod fit.
    generation: u64,
    binds: Arc<Semaphore>,
    nodes_synced: bool,
    pods_synced: bool,
    node_buffer: Option<BTreeMap<String, Arc<Node>>>,
    pod_buffer: Option<HashMap<String, Arc<PodInfo>>>,
    /// Claims, volumes and classes, for `volumes`.
    volumes: volumes::VolumeState,
}

fn is_pending(p: &Pod) -> bool {
    let spec = p.spec.as_ref();
    let unbound = spec
        .and_then(|s| s.node_name.as_deref())
        .is_none_or(str::is_empty);
    let ours = spec
        .and_then(|s| s.scheduler_name.as_deref())
        .is_none_or(|n| n.is_empty() || n == SCHEDULER_NAME);
    unbound && ours && p.metadata.deletion_timestamp.is_none() && !is_finished(p)
}

fn is_finished(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn bound_node(p: &Pod) -> Option<&str> {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

fn node_print(n: &Node) -> String {
    let conds: Vec<(String, String)> = n
        .status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .map(|c| (c.type_.clone(), c.status.clone()))
        .collect();
    json!({"labels": n.metadata.labels, "spec": n.spec,
           "alloc": n.status.as_ref().map(|s| &s.allocatable), "conds": conds})
    .to_string()
}

impl Scheduler {
    fn new(client: kube::Client) -> Self {
        Scheduler {
            recorder: Arc::new(EventRecorder::new(client.clone(), SCHEDULER_NAME)),
            client,
            nodes: BTreeMap::new(),
            node_prints: HashMap::new(),
            pods: HashMap::new(),
            assumed: HashMap::new(),
            active: VecDeque::new(),
            queued: HashSet::new(),
            backoff: HashMap::new(),
            generation: 0,
            binds: Arc::new(Semaphore::new(MAX_BINDS_IN_FLIGHT)),
            nodes_synced: false,
            pods_synced: false,
            node_buffer: None,
            pod_buffer: None,
            volumes: volumes::VolumeState::default(),
        }
    }

    async fn run(&mut self, shutdown: CancellationToken) {
        let nodes = watcher::watcher(Api::<Node>::all(self.client.clone()), Default::default())
            .default_backoff()
            .boxed();
        let pods = watcher::watcher(Api::<Pod>::all(self.client.clone()), Default::default())
            .default_backoff()
            .boxed();
        let (mut nodes, mut pods) = (nodes, pods);
        let mut claims = watcher::watcher(Api::<PersistentVolumeClaim>::all(self.client.clone()), Default::default())
            .default_backoff()
            .boxed();
        let mut pvs = watcher::watcher(Api::<PersistentVolume>::all(self.client.clone()), Default::default())
            .default_backoff()
            .boxed();
        let mut classes = watcher::watcher(Api::<StorageClass>::all(self.client.clone()), Default::default())
            .default_backoff()
            .boxed();
        let (tx, mut rx) = mpsc::unbounded_channel::<(String, BindOutcome)>();
        loop {
            if self.nodes_synced && self.pods_synced {
                self.schedule_pass(&tx).await;
            }
            let wake = self
                .backoff
                .values()
                .map(|b| b.until)
                .min()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(5))
                .max(Instant::now() + Duration::from_millis(50));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                ev = nodes.next() => self.on_node(ev),
                ev = pods.next() => self.on_pod(ev),
                Some(Ok(ev)) = claims.next() => self.on_volume_event(ev, |st| &mut st.claims, |c| crate::storage::binding::claim_key(c)),
                Some(Ok(ev)) = pvs.next() => self.on_volume_event(ev, |st| &mut st.volumes, |v| v.metadata.name.clone().unwrap_or_default()),
                Some(Ok(ev)) = classes.next() => self.on_volume_event(ev, |st| &mut st.classes, |c| c.metadata.name.clone().unwrap_or_default()),
                Some((key, outcome)) = rx.recv() => self.on_bound(key, outcome),
                _ = tokio::time::sleep_until(wake) => {}
            }
            // Take whatever else is ready before the next pass.
            for _ in 0..2000 {
                let mut any = false;
                if let Some(ev) = pods.next().now_or_never() {
                    self.on_pod(ev);
                    any = true;
                }
                if let Some(ev) = nodes.next().now_or_never() {
                    self.on_node(ev);
                    any = true;
                }
                while let Ok((key, outcome)) = rx.try_recv() {
                    self.on_bound(key, outcome);
                    any = true;
                }
                if !any {
                    break;
                }
            }
            self.release_backoffs();
        }
    }

    fn on_node(&mut self, ev: Option<Result<Event<Node>, watcher::Error>>) {
        let ev = match ev {
            Some(Ok(ev)) => ev,
            Some(Err(e)) => {
                tracing::debug!("scheduler node watch: {e}");
                return;
            }
            None => return,
        };
        match ev {
            Event::Init => self.node_buffer = Some(BTreeMap::new()),
            Event::InitApply(n) => {
                if let Some(b) = self.node_buffer.as_mut() {
                    b.insert(n.metadata.name.clone().unwrap_or_default(), Arc::new(n));
                }
            }
            Event::InitDone => {
                if let Some(b) = self.node_buffer.take() {
                    self.nodes = b;
                    self.node_prints = self
                        .nodes
                        .iter()
                        .map(|(k, n)| (k.clone(), node_print(n)))
                        .collect();
                }
                self.nodes_synced = true;
                self.generation += 1;
            }
            Event::Apply(n) => {
                let name = n.metadata.name.clone().unwrap_or_default();
                let print = node_print(&n);
                if self.node_prints.get(&name) != Some(&print) {
                    self.generation += 1;
                    self.node_prints.insert(name.clone(), print);
                }
                self.nodes.insert(name, Arc::new(n));
            }
            Event::Delete(n) => {
                let name = n.metadata.name.clone().unwrap_or_default();
                self.nodes.remove(&name);
                self.node_prints.remove(&name);
                self.generation += 1;
            }
        }
    }

    /// A claim, volume or class changed: keep the map and let unschedulable
    /// pods try again.
    fn on_volume_event<K, M>(
        &mut self,
        ev: Event<K>,
        map: impl Fn(&mut volumes::VolumeState) -> &mut M,
        key: impl Fn(&K) -> String,
    ) where
        M: volumes::ObjMap<K>,
    {
        let m = map(&mut self.volumes);
        match ev {
            Event::Init => m.begin_init(),
            Event::InitApply(o) | Event::Apply(o) => m.put(key(&o), Arc::new(o)),
            Event::InitDone => {}
            Event::Delete(o) => m.drop_key(&key(&o)),
        }
        self.generation += 1;
    }

    fn on_pod(&mut self, ev: Option<Result<Event<Pod>, watcher::Error>>) {
        let ev = match ev {
            Some(Ok(ev)) => ev,
            Some(Err(e)) => {
                tracing::debug!("scheduler pod watch: {e}");
                return;
            }
            None => return,
        };
        match ev {
            Event::Init => self.pod_buffer = Some(HashMap::new()),
            Event::InitApply(p) => {
                let info = Arc::new(PodInfo::new(Arc::new(p)));
                if let Some(b) = self.pod_buffer.as_mut() {
                    b.insert(info.key.clone(), info);
                }
            }
            Event::InitDone => {
                if let Some(b) = self.pod_buffer.take() {
                    self.pods = b;
                    let keys: Vec<String> = self.pods.keys().cloned().collect();
                    for k in keys {
                        self.consider(&k);
                    }
                    self.backoff.retain(|k, _| self.pods.contains_key(k));
                }
                self.pods_synced = true;
                self.generation += 1;
            }
            Event::Apply(p) => {
                let info = Arc::new(PodInfo::new(Arc::new(p)));
                let key = info.key.clone();
                let before = self.pods.insert(key.clone(), info.clone());
                let was_bound = before.as_ref().and_then(|b| bound_node(&b.pod)).is_some();
                let freed =
                    before.as_ref().is_some_and(|b| !is_finished(&b.pod)) && is_finished(&info.pod);
                if bound_node(&info.pod).is_some() {
                    self.assumed.remove(&key);
                    self.backoff.remove(&key);
                }
                if was_bound != bound_node(&info.pod).is_some() || freed {
                    self.generation += 1;
                }
                self.consider(&key);
            }
            Event::Delete(p) => {
                let key = format!(
                    "{}/{}",
                    p.metadata.namespace.as_deref().unwrap_or(""),
                    p.metadata.name.as_deref().unwrap_or("")
                );
                self.pods.remove(&key);
                self.assumed.remove(&key);
                self.backoff.remove(&key);
                self.generation += 1;
            }
        }
    }

    /// Queues `key` if it is pending, not assumed and not backing off.
    fn consider(&mut self, key: &str) {
        let Some(p) = self.pods.get(key) else { return };
        if !is_pending(&p.pod) || self.assumed.contains_key(key) || self.backoff.contains_key(key) {
            return;
        }
        if self.queued.insert(key.to_string()) {
            self.active.push_back(key.to_string());
        }
    }

    fn release_backoffs(&mut self) {
        let now = Instant::now();
        let generation = self.generation;
        let ready: Vec<String> = self
            .backoff
            .iter()
            .filter(|(_, b)| {
                now >= b.until
                    && (!b.unschedulable
                        || b.generation != generation
                        || now.duration_since(b.last_attempt) >= UNSCHEDULABLE_RETRY)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in ready {
            if let Some(b) = self.backoff.get_mut(&k) {
                // Keep the attempt count; push `until` so it is not released twice.
                b.until = now + Duration::from_secs(3600);
            }
            if self.queued.insert(k.clone()) {
                self.active.push_back(k);
            }
        }
    }

    /// Node views with every bound and assumed pod.
    fn node_infos(&self) -> Vec<NodeInfo> {
        let mut infos: Vec<NodeInfo> = self
            .nodes
            .values()
            .map(|n| NodeInfo::new(n.clone()))
            .collect();
        let index: HashMap<String, usize> = infos
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect();
        for (key, p) in &self.pods {
            if is_finished(&p.pod) {
                continue;
            }
            let node = bound_node(&p.pod).or_else(|| self.assumed.get(key).map(String::as_str));
            if let Some(i) = node.and_then(|n| index.get(n)) {
                infos[*i].add_pod(p.clone());
            }
        }
        infos
    }

    async fn schedule_pass(&mut self, tx: &mpsc::UnboundedSender<(String, BindOutcome)>) {
        if self.active.is_empty() {
            return;
        }
        let mut infos = self.node_infos();
        while let Some(key) = self.active.pop_front() {
            self.queued.remove(&key);
            let Some(pod) = self.pods.get(&key).cloned() else {
                continue;
            };
            if !is_pending(&pod.pod) || self.assumed.contains_key(&key) {
                continue;
            }
            let needs = match volumes::pre_filter(&pod.pod, &self.volumes) {
                Ok(needs) => needs,
                Err(why) => {
                    let d = filter::Diagnosis { total_nodes: infos.len(), pre_filter: Some(why), ..Default::default() };
                    self.unschedulable(key, pod, d.message());
                    continue;
                }
            };
            let (mut ok, mut diagnosis) = filter::feasible(&pod, &infos);
            if !needs.is_empty() {
                ok.retain(|&i| match volumes::filter(&needs, &self.volumes, &infos[i]) {
                    Ok(()) => true,
                    Err(why) => {
                        *diagnosis.reasons.entry(why).or_default() += 1;
                        false
                    }
                });
            }
            match score::pick(&pod, &infos, &ok) {
                Some(i) => {
                    let node = infos[i].name.clone();
                    let actions = volumes::plan(&needs, &self.volumes, &infos[i]);
                    infos[i].add_pod(pod.clone());
                    self.assumed.insert(key.clone(), node.clone());
                    self.spawn_bind(pod, node, actions, tx.clone()).await;
                }
                None => self.unschedulable(key, pod, diagnosis.message()),
            }
        }
    }

    async fn spawn_bind(
        &self,
        pod: Arc<PodInfo>,
        node: String,
        actions: Vec<volumes::Action>,
        tx: mpsc::UnboundedSender<(String, BindOutcome)>,
    ) {
        let permit = self
            .binds
            .clone()
            .acquire_owned()
            .await
            .expect("the bind semaphore is never closed");
        let client = self.client.clone();
        let recorder = self.recorder.clone();
        tokio::spawn(async move {
            let outcome = match volumes::pre_bind(&client, &actions, VOLUME_BIND_TIMEOUT).await {
                Ok(()) => bind(&client, &pod, &node).await,
                Err(why) => BindOutcome::Failed(why),
            };
            drop(permit);
            if matches!(outcome, BindOutcome::Bound) {
                let msg = format!("Successfully assigned {} to {node}", pod.key);
                recorder
                    .record(
                        &object_ref(pod.pod.as_ref()),
                        EventType::Normal,
                        "Scheduled",
                        &msg,
                    )
                    .await;
            }
            let _ = tx.send((pod.key.clone(), outcome));
        });
    }

    fn on_bound(&mut self, key: String, outcome: BindOutcome) {
        match outcome {
            BindOutcome::Bound => {
                // The watch's update clears the assumption; until then the pod
                // counts on its node.
            }
            BindOutcome::Settled => {
                // Someone else decided; look again after a back-off unless the
                // watch shows it bound (or gone) first.
                self.assumed.remove(&key);
                self.back_off(&key, false, String::new());
            }
            BindOutcome::Failed(why) => {
                tracing::debug!(pod = %key, "failed to bind: {why}");
                self.assumed.remove(&key);
                self.back_off(&key, false, why);
            }
        }
    }

    fn back_off(&mut self, key: &str, unschedulable: bool, message: String) {
        let now = Instant::now();
        let generation = self.generation;
        let b = self.backoff.entry(key.to_string()).or_insert(Backoff {
            attempts: 0,
            until: now,
            unschedulable,
            generation,
            last_attempt: now,
            last_message: String::new(),
        });
        b.attempts += 1;
        let delay = INITIAL_BACKOFF
            .saturating_mul(1u32 << (b.attempts - 1).min(10))
            .min(MAX_BACKOFF);
        b.until = now + delay;
        b.unschedulable = unschedulable;
        b.generation = generation;
        b.last_attempt = now;
        b.last_message = message;
    }

    fn unschedulable(&mut self, key: String, pod: Arc<PodInfo>, message: String) {
        let changed = self
            .backoff
            .get(&key)
            .is_none_or(|b| b.last_message != message);
        self.back_off(&key, true, message.clone());
        let client = self.client.clone();
        let recorder = self.recorder.clone();
        tokio::spawn(async move {
            recorder
                .record(
                    &object_ref(pod.pod.as_ref()),
                    EventType::Warning,
                    "FailedScheduling",
                    &message,
                )
                .await;
            let current = pod
                .pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"))
                .and_then(|c| c.message.clone());
            if changed || current.as_deref() != Some(message.as_str()) {
                if let Err(e) = mark_unschedulable(&client, &pod, &message).await {
                    tracing::debug!(pod = %pod.key, "failed to set PodScheduled=False: {e}");
                }
            }
        });
    }
}

async fn bind(client: &kube::Client, pod: &PodInfo, node: &str) -> BindOutcome {
    let name = pod.pod.metadata.name.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
    let body = json!({"apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": name, "namespace": pod.namespace, "uid": pod.pod.metadata.uid},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
    match api
        .create_subresource::<_, serde_json::Value>("binding", &name, &PostParams::default(), &body)
        .await
    {
        Ok(_) => BindOutcome::Bound,
        Err(kube::Error::Api(s))
            if s.code == 404
                || (s.code == 409
                    && (s.message.contains("already assigned")
                        || s.message.contains("being deleted"))) =>
        {
            BindOutcome::Settled
        }
        Err(e) => BindOutcome::Failed(e.to_string()),
    }
}

async fn mark_unschedulable(
    client: &kube::Client,
    pod: &PodInfo,
    message: &str,
) -> Result<(), kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let patch = json!({"status": {"conditions": [{"type": "PodScheduled", "status": "False",
        "reason": "Unschedulable", "message": message, "lastProbeTime": null,
        "lastTransitionTime": now}]}});
    let name = pod.pod.metadata.name.clone().unwrap_or_default();
    api.patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .map(|_| ())
}
