//! The per-pod worker: level-triggered sync of one pod's network, files,
//! volumes and containers against its spec, and its status.
//!
//! Each [`PodWorker::sync`] looks at what the runtime reports and moves
//! every container one step: start it, notice its exit, restart it after
//! CrashLoopBackOff, run its probes. Containers are found again after an
//! agent restart through their labels ([`PodWorker::adopt`]), so nothing
//! is restarted: the worker picks up where the runtime is.
//!
//! Termination runs preStop hooks (exec through the runtime, httpGet to
//! the pod IP) within the grace period, then SIGTERM, then SIGKILL.
//!
//! Ephemeral containers (`ephemeral`) run once in the running pod, never
//! restarted, joining their target container's PID and IPC namespaces;
//! `shareProcessNamespace` pods share one PID namespace (`pid_namespace`).
//!
//! Partial: no postStart hooks, no sidecar (restartable init) containers.

mod ephemeral;
mod pid_namespace;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::Value;
use tokio::time::Instant;

use super::api::PodApi;
use super::backoff::Backoff;
use super::env::{self, EnvFacts};
use super::images::ImageManager;
use super::probe::{self, ProbeState};
use super::status::{self, CState, CView, PodView};
use super::{container_spec, podfiles, volumes};
use crate::agent::network::PodNetwork;
use crate::agent::runtime::{
    labels, ContainerId, ContainerRuntime, ContainerSpec, ContainerState, ContainerSummary,
};

/// Everything workers share.
pub struct Context {
    pub runtime: Arc<dyn ContainerRuntime>,
    pub network: Arc<PodNetwork>,
    pub api: Arc<dyn PodApi>,
    pub images: Arc<ImageManager>,
    /// Mounts and unmounts of volumes (the kernel, or a fake in unit tests).
    pub fs: Arc<dyn crate::hostos::FsOps>,
    pub node_name: String,
    pub host_ip: IpAddr,
    pub cluster_dns: IpAddr,
    pub cluster_domain: String,
    /// The node's resolver file (`--resolv-conf`, systemd-resolved aware),
    /// for pods whose dnsPolicy uses the node's resolvers.
    pub resolv_conf: PathBuf,
    /// `<agent>/pods`: per-pod files and volumes.
    pub pods_dir: PathBuf,
    /// `/var/log/pods` in production.
    pub log_root: PathBuf,
    pub node_cpu_millis: i64,
    pub node_memory_bytes: i64,
}

/// What the caller does after a sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// The pod is gone and cleaned up: the worker ends.
    Finished,
}

/// One container of the pod, as the worker tracks it.
#[derive(Debug, Clone)]
struct Slot {
    id: Option<ContainerId>,
    /// Exited containers kept (for re-adoption and lastState) until replaced.
    dead: Vec<ContainerId>,
    restart_count: u32,
    created_any: bool,
    image_id: String,
    state: CState,
    last: Option<CState>,
    backoff: Backoff,
    pull_backoff: Backoff,
    retry_at: Option<Instant>,
    pull_failed_at: Option<Instant>,
    started_mono: Option<Instant>,
    started_at: Option<DateTime<Utc>>,
    liveness: ProbeState,
    readiness: ProbeState,
    startup: ProbeState,
    /// Terminated for good (not restarted under the restart policy).
    done: bool,
}

impl Slot {
    fn new() -> Self {
        Self {
            id: None,
            dead: Vec::new(),
            restart_count: 0,
            created_any: false,
            image_id: String::new(),
            state: CState::waiting("ContainerCreating", None),
            last: None,
            backoff: Backoff::default(),
            pull_backoff: Backoff::default(),
            retry_at: None,
            pull_failed_at: None,
            started_mono: None,
            started_at: None,
            liveness: ProbeState::new(),
            readiness: ProbeState::new(),
            startup: ProbeState::new(),
            done: false,
        }
    }
}

pub struct PodWorker {
    ctx: Arc<Context>,
    uid: String,
    namespace: String,
    name: String,
    pod_ip: Option<IpAddr>,
    netns: Option<PathBuf>,
    slots: BTreeMap<String, Slot>,
    start_time: DateTime<Utc>,
    last_status: Option<Value>,
    last_volume_sync: Option<Instant>,
    mounts: BTreeMap<String, PathBuf>,
    problem: Option<String>,
    /// The latest pod object, for preStop hooks at termination.
    last_pod: Option<Pod>,
    /// The pod as the watch sees it now, read mid-sync so a deletion that
    /// arrives while an image is pulled stops the worker from starting
    /// anything (kubelet's pod worker goes straight to terminating).
    latest: Option<tokio::sync::watch::Receiver<Option<Pod>>>,
}

const PULL_ERROR_SHOWN: Duration = Duration::from_secs(4);
const VOLUME_RESYNC: Duration = Duration::from_secs(10);

fn restart_policy(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.clone())
        .unwrap_or_else(|| "Always".into())
}

impl PodWorker {
    /// Runs the app containers' preStop hooks ([`super::hooks`]).
    async fn run_pre_stop_hooks(&self, grace: Duration) {
        let Some(pod) = &self.last_pod else { return };
        let running: HashMap<String, ContainerId> = self
            .slots
            .iter()
            .filter_map(|(name, slot)| Some((name.clone(), slot.id.clone()?)))
            .collect();
        super::hooks::run_pre_stop(&self.ctx.runtime, pod, &running, self.pod_ip, grace).await;
    }

    pub fn new(ctx: Arc<Context>, pod: &Pod) -> Self {
        Self {
            ctx,
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            namespace: pod
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            name: pod.metadata.name.clone().unwrap_or_default(),
            pod_ip: None,
            netns: None,
            slots: BTreeMap::new(),
            start_time: pod
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .and_then(|t| DateTime::from_timestamp(t.0.as_second(), 0))
                .unwrap_or_else(Utc::now),
            last_status: None,
            last_volume_sync: None,
            mounts: BTreeMap::new(),
            problem: None,
            last_pod: None,
            latest: None,
        }
    }

    /// Lets the worker see deletions that arrive during a sync.
    pub fn follow(&mut self, latest: tokio::sync::watch::Receiver<Option<Pod>>) {
        self.latest = Some(latest);
    }

    /// Whether the pod was deleted (gone, or a deletionTimestamp set) since
    /// this sync began: nothing new is started then.
    fn deletion_requested(&self) -> bool {
        self.latest.as_ref().is_some_and(|rx| {
            rx.borrow()
                .as_ref()
                .is_none_or(|p| p.metadata.deletion_timestamp.is_some())
        })
    }

    pub fn uid(&self) -> &str {
        &self.uid
    }

    /// Takes over containers a previous agent created for this pod: per
    /// container name the newest (highest restart count) is current,
    /// older ones are kept as dead.
    pub fn adopt(&mut self, found: &[ContainerSummary]) {
        for c in found {
            let Some(name) = c.label(labels::CONTAINER_NAME) else {
                continue;
            };
            let restart = c.restart_count();
            let slot = self.slots.entry(name.to_string()).or_insert_with(Slot::new);
            match &slot.id {
                Some(_) if restart < slot.restart_count => slot.dead.push(c.id.clone()),
                _ => {
                    if let Some(old) = slot.id.replace(c.id.clone()) {
                        slot.dead.push(old);
                    }
                    slot.restart_count = restart;
                    slot.created_any = true;
                }
            }
        }
        if !found.is_empty() {
            tracing::info!(pod = %self.pod_ref(), containers = found.len(), "adopted the pod's running containers");
        }
    }

    /// Adopts the pod's network after an agent restart.
    pub fn adopt_network(&mut self, ip: IpAddr, netns: PathBuf) {
        self.pod_ip = Some(ip);
        self.netns = Some(netns);
    }

    fn pod_ref(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn pod_dir(&self) -> PathBuf {
        self.ctx.pods_dir.join(&self.uid)
    }

    /// One level-triggered pass. `pod` is the latest object, `None` once it
    /// is gone from the API server.
    pub async fn sync(&mut self, pod: Option<&Pod>) -> Flow {
        let Some(pod) = pod else {
            self.terminate(Duration::from_secs(2)).await;
            return Flow::Finished;
        };
        if pod.metadata.deletion_timestamp.is_some() {
            let grace = pod
                .metadata
                .deletion_grace_period_seconds
                .or_else(|| {
                    pod.spec
                        .as_ref()
                        .and_then(|s| s.termination_grace_period_seconds)
                })
                .unwrap_or(30)
                .max(0) as u64;
            self.terminate(Duration::from_secs(grace)).await;
            if let Err(e) = self
                .ctx
                .api
                .delete_pod(&self.namespace, &self.name, &self.uid)
                .await
            {
                tracing::warn!(pod = %self.pod_ref(), error = %e, "failed to finish deleting the pod; retrying");
                return Flow::Continue;
            }
            tracing::info!(pod = %self.pod_ref(), "pod stopped and deleted");
            return Flow::Finished;
        }
        self.problem = None;
        self.last_pod = Some(pod.clone());
        if self.deletion_requested() {
            // Already deleted again: the next sync terminates; start nothing.
            return Flow::Continue;
        }
        let ready_to_start = self.ensure_sandbox(pod).await;
        let mut init_done = true;
        let mut init_failed = false;
        if ready_to_start {
            (init_done, init_failed) = self.sync_init(pod).await;
            if init_done {
                self.sync_app(pod).await;
                self.sync_ephemeral(pod).await;
            }
        }
        self.post_status(pod, ready_to_start, init_done, init_failed)
            .await;
        Flow::Continue
    }

    /// Network, host files and volumes; false when something is missing.
    async fn ensure_sandbox(&mut self, pod: &Pod) -> bool {
        let host_network = pod.spec.as_ref().and_then(|s| s.host_network) == Some(true);
        if self.pod_ip.is_none() {
            if host_network {
                self.pod_ip = Some(self.ctx.host_ip);
            } else {
                match self.ctx.network.setup_pod(&self.uid, &self.pod_ref()).await {
                    Ok(info) => {
                        self.pod_ip = Some(IpAddr::V4(info.ip));
                        self.netns = Some(info.netns_path);
                    }
                    Err(e) => {
                        self.problem = Some(format!("failed to set up the pod network: {e}"));
                        tracing::warn!(pod = %self.pod_ref(), error = %e, "failed to set up the pod network");
                        return false;
                    }
                }
            }
        }
        let now = Instant::now();
        if self
            .last_volume_sync
            .is_none_or(|t| now - t >= VOLUME_RESYNC)
        {
            let spec = pod.spec.clone().unwrap_or_default();
            let hostname = spec.hostname.clone().unwrap_or_else(|| self.name.clone());
            let aliases: Vec<(String, Vec<String>)> = spec
                .host_aliases
                .iter()
                .flatten()
                .map(|a| (a.ip.clone(), a.hostnames.clone().unwrap_or_default()))
                .collect();
            let hosts = podfiles::hosts(
                &self.pod_ip.expect("set above").to_string(),
                &hostname,
                &aliases,
            );
            let resolv = podfiles::pod_resolv_conf(&podfiles::DnsInputs {
                namespace: &self.namespace,
                cluster_dns: self.ctx.cluster_dns,
                cluster_domain: &self.ctx.cluster_domain,
                dns_policy: spec.dns_policy.as_deref(),
                host_network: spec.host_network.unwrap_or(false),
                dns_config: spec.dns_config.as_ref(),
                host: &crate::dns::resolvconf::load(&self.ctx.resolv_conf),
            });
            if let Err(e) = podfiles::write(&self.pod_dir(), &hosts, &hostname, &resolv) {
                self.problem = Some(format!(
                    "failed to write the pod's hosts, hostname and resolv.conf: {e}"
                ));
                return false;
            }
            match volumes::sync(self.ctx.api.as_ref(), self.ctx.fs.as_ref(), pod, &self.pod_dir()).await {
                Ok(m) => {
                    self.mounts = m;
                    self.last_volume_sync = Some(now);
                }
                Err(e) => {
                    tracing::warn!(pod = %self.pod_ref(), error = %e, "failed to set up the pod's volumes");
                    self.problem = Some(format!("MountVolume.SetUp failed: {e}"));
                    return self.last_volume_sync.is_some();
                }
            }
        }
        true
    }

    /// Init containers in order; returns (all done, one failed for good).
    async fn sync_init(&mut self, pod: &Pod) -> (bool, bool) {
        let inits = pod
            .spec
            .as_ref()
            .and_then(|s| s.init_containers.clone())
            .unwrap_or_default();
        let policy = match restart_policy(pod).as_str() {
            "Never" => "Never",
            _ => "OnFailure",
        };
        for c in &inits {
            self.sync_container(pod, c, policy, false).await;
            let slot = &self.slots[&c.name];
            match &slot.state {
                CState::Terminated { exit_code: 0, .. } if slot.done => continue,
                CState::Terminated { .. } if slot.done => return (false, true),
                _ => return (false, false),
            }
        }
        (true, false)
    }

    async fn sync_app(&mut self, pod: &Pod) {
        let policy = restart_policy(pod);
        let containers = pod
            .spec
            .as_ref()
            .map(|s| s.containers.clone())
            .unwrap_or_default();
        for c in &containers {
            self.sync_container(pod, c, &policy, true).await;
        }
    }

    /// Moves one container a step towards its desired state.
    async fn sync_container(&mut self, pod: &Pod, c: &Container, policy: &str, probes: bool) {
        let now = Instant::now();
        let mut slot = self.slots.remove(&c.name).unwrap_or_else(Slot::new);
        if let Some(id) = slot.id.clone() {
            match self.ctx.runtime.status(&id).await {
                Ok(st) => match st.state {
                    ContainerState::Running => {
                        let started_at = st.started_at.unwrap_or_else(Utc::now);
                        slot.state = CState::Running { started_at };
                        slot.started_at = Some(started_at);
                        slot.started_mono.get_or_insert(now);
                        if probes {
                            self.run_probes(c, &mut slot, now).await;
                        }
                    }
                    ContainerState::Created if self.deletion_requested() => {}
                    ContainerState::Created => {
                        if let Err(e) = self.ctx.runtime.start(&id).await {
                            slot.state = CState::waiting("RunContainerError", Some(e.to_string()));
                        }
                    }
                    ContainerState::Exited {
                        code,
                        finished_at,
                        reason,
                    } => {
                        let term = CState::Terminated {
                            exit_code: code,
                            reason: reason.as_kubernetes(code).to_string(),
                            started_at: st.started_at.or(slot.started_at),
                            finished_at,
                            container_id: format!("containerd://{id}"),
                        };
                        let restart = match policy {
                            "Always" => true,
                            "OnFailure" => code != 0,
                            _ => false,
                        };
                        slot.started_mono = None;
                        slot.liveness = ProbeState::new();
                        slot.readiness = ProbeState::new();
                        slot.startup = ProbeState::new();
                        if restart {
                            let delay = slot
                                .backoff
                                .next(st.started_at.or(slot.started_at), finished_at);
                            slot.dead.push(id);
                            slot.id = None;
                            slot.last = Some(term);
                            slot.retry_at = Some(now + delay);
                            if !delay.is_zero() {
                                tracing::info!(pod = %self.pod_ref(), container = %c.name, delay = ?delay, "back-off restarting failed container");
                            }
                        } else {
                            slot.state = term;
                            slot.done = true;
                        }
                    }
                },
                Err(e) if e.is_not_found() => {
                    tracing::warn!(pod = %self.pod_ref(), container = %c.name, "container vanished from the runtime; recreating it");
                    slot.id = None;
                }
                Err(e) => {
                    tracing::warn!(pod = %self.pod_ref(), container = %c.name, error = %e, "failed to read container status");
                }
            }
        }
        if slot.id.is_none() && !slot.done {
            if slot.retry_at.is_some_and(|t| now < t) {
                if slot.last.is_some()
                    && !matches!(&slot.state, CState::Waiting { reason, .. } if reason == "ImagePullBackOff" || reason == "CreateContainerConfigError")
                {
                    slot.state = CState::waiting(
                        "CrashLoopBackOff",
                        Some(format!(
                            "back-off {} restarting failed container={} pod={}_{}({})",
                            super::backoff::fmt_delay(slot.backoff.current()),
                            c.name,
                            self.name,
                            self.namespace,
                            self.uid
                        )),
                    );
                } else if let CState::Waiting { reason, message } = &slot.state {
                    // ErrImagePull stays visible for a while, as a kubelet
                    // that syncs the pod again ~10 s later shows it.
                    let shown = slot
                        .pull_failed_at
                        .is_some_and(|t| now - t >= PULL_ERROR_SHOWN);
                    if reason == "ErrImagePull" && shown {
                        slot.state = CState::waiting(
                            "ImagePullBackOff",
                            message.clone().map(|m| {
                                format!(
                                    "Back-off pulling image \"{}\": {m}",
                                    c.image.clone().unwrap_or_default()
                                )
                            }),
                        );
                    }
                }
            } else {
                self.create_and_start(pod, c, &mut slot, now).await;
            }
        }
        self.slots.insert(c.name.clone(), slot);
    }

    async fn create_and_start(&mut self, pod: &Pod, c: &Container, slot: &mut Slot, now: Instant) {
        let image = c.image.clone().unwrap_or_default();
        let creds = super::images::pod_pull_credentials(self.ctx.api.as_ref(), pod, &image).await;
        let info = match self
            .ctx
            .images
            .ensure_with(&image, c.image_pull_policy.as_deref().unwrap_or(""), &creds)
            .await
        {
            Ok(info) => {
                slot.pull_backoff = Backoff::default();
                info
            }
            Err(e) => {
                let delay = slot
                    .pull_backoff
                    .next(None, None)
                    .max(super::backoff::INITIAL);
                slot.retry_at = Some(now + delay);
                slot.pull_failed_at = Some(now);
                slot.state = CState::waiting(e.reason, Some(e.message));
                return;
            }
        };
        let facts = EnvFacts {
            pod_ip: self.pod_ip.map(|i| i.to_string()),
            host_ip: self.ctx.host_ip.to_string(),
            node_cpu_millis: self.ctx.node_cpu_millis,
            node_memory_bytes: self.ctx.node_memory_bytes,
        };
        let env = match env::resolve(self.ctx.api.as_ref(), pod, c, &facts).await {
            Ok(env) => env,
            Err(e) => {
                slot.state = CState::waiting("CreateContainerConfigError", Some(e.0));
                slot.retry_at = Some(now + Duration::from_secs(2));
                return;
            }
        };
        let restart_count = if slot.created_any {
            slot.restart_count + 1
        } else {
            0
        };
        let mut spec = match self.container_spec(pod, c, &info.config, env, restart_count) {
            Ok(s) => s,
            Err(m) => {
                slot.state = CState::waiting("CreateContainerConfigError", Some(m));
                slot.retry_at = Some(now + Duration::from_secs(2));
                return;
            }
        };
        if let Err(m) = self.join_pid_namespace(pod, c, &mut spec).await {
            slot.state = CState::waiting("CreateContainerError", Some(m));
            slot.retry_at = Some(now + super::backoff::INITIAL);
            return;
        }
        if self.deletion_requested() {
            // Deleted while the image was pulled: start nothing; the next
            // sync (already signalled) terminates the pod at once.
            tracing::debug!(pod = %self.pod_ref(), container = %c.name, "pod deleted before its container started; not starting it");
            return;
        }
        // The previous run's container goes once its replacement exists.
        let id = match self.ctx.runtime.create_container(&spec).await {
            Ok(id) => id,
            Err(e) => {
                slot.state = CState::waiting("CreateContainerError", Some(e.to_string()));
                slot.retry_at = Some(now + super::backoff::INITIAL);
                return;
            }
        };
        slot.created_any = true;
        slot.restart_count = restart_count;
        slot.image_id = super::images::image_ref(&info);
        for old in std::mem::take(&mut slot.dead) {
            if let Err(e) = self.ctx.runtime.remove(&old).await {
                tracing::warn!(container = %old, error = %e, "failed to remove an exited container");
            }
        }
        slot.id = Some(id.clone());
        if self.deletion_requested() {
            return;
        }
        match self.ctx.runtime.start(&id).await {
            Ok(()) => {
                let started = Utc::now();
                slot.state = CState::Running {
                    started_at: started,
                };
                slot.started_at = Some(started);
                slot.started_mono = Some(now);
                slot.retry_at = None;
                tracing::info!(pod = %self.pod_ref(), container = %c.name, id = %id, restart = restart_count, "started container");
            }
            Err(e) => {
                slot.state = CState::waiting("RunContainerError", Some(e.to_string()));
            }
        }
    }

    fn container_spec(
        &self,
        pod: &Pod,
        c: &Container,
        image: &crate::agent::runtime::ImageConfig,
        env: Vec<(String, String)>,
        restart_count: u32,
    ) -> Result<ContainerSpec, String> {
        let pod_dir = self.pod_dir();
        let ctx = container_spec::PodContext {
            uid: &self.uid,
            name: &self.name,
            namespace: &self.namespace,
            log_root: &self.ctx.log_root,
            pod_dir: &pod_dir,
            netns: self.netns.as_deref(),
            mounts: &self.mounts,
        };
        container_spec::build(&ctx, pod, c, image, env, restart_count)
    }

    async fn run_probes(&mut self, c: &Container, slot: &mut Slot, now: Instant) {
        let (Some(ip), Some(started)) = (self.pod_ip, slot.started_mono) else {
            return;
        };
        let Some(id) = slot.id.clone() else { return };
        if let Some(p) = &c.startup_probe {
            if slot.startup.result != Some(true) {
                if slot.startup.due(p, started, now) {
                    let out = probe::run(p, c, ip, self.ctx.runtime.as_ref(), &id).await;
                    if slot.startup.record(p, out, now) == Some(false) {
                        tracing::info!(pod = %self.pod_ref(), container = %c.name, "startup probe failed; restarting the container");
                        self.kill_for_probe(&id, slot).await;
                    }
                }
                return;
            }
        }
        if let Some(p) = &c.liveness_probe {
            if slot.liveness.due(p, started, now) {
                let out = probe::run(p, c, ip, self.ctx.runtime.as_ref(), &id).await;
                if slot.liveness.record(p, out, now) == Some(false) {
                    tracing::info!(pod = %self.pod_ref(), container = %c.name, "liveness probe failed; restarting the container");
                    self.kill_for_probe(&id, slot).await;
                    return;
                }
            }
        }
        if let Some(p) = &c.readiness_probe {
            if slot.readiness.due(p, started, now) {
                let out = probe::run(p, c, ip, self.ctx.runtime.as_ref(), &id).await;
                slot.readiness.record(p, out, now);
            }
        }
    }

    async fn kill_for_probe(&self, id: &ContainerId, slot: &mut Slot) {
        let grace = Duration::from_secs(5);
        if let Err(e) = self.ctx.runtime.stop(id, grace).await {
            tracing::warn!(container = %id, error = %e, "failed to stop a container that failed its probe");
        }
        slot.liveness = ProbeState::new();
        slot.startup = ProbeState::new();
    }

    fn views(&self, containers: &[Container], app: bool) -> Vec<CView> {
        containers
            .iter()
            .map(|c| {
                let slot = self.slots.get(&c.name).cloned().unwrap_or_else(Slot::new);
                let running = matches!(slot.state, CState::Running { .. });
                let started =
                    running && (c.startup_probe.is_none() || slot.startup.result == Some(true));
                let ready = if app {
                    started && (c.readiness_probe.is_none() || slot.readiness.result == Some(true))
                } else {
                    matches!(slot.state, CState::Terminated { exit_code: 0, .. })
                };
                CView {
                    name: c.name.clone(),
                    image: c.image.clone().unwrap_or_default(),
                    image_id: slot.image_id.clone(),
                    container_id: slot
                        .id
                        .as_ref()
                        .or(slot.dead.last())
                        .map(|i| format!("containerd://{i}")),
                    state: slot.state.clone(),
                    last: slot.last.clone(),
                    restart_count: slot.restart_count,
                    ready,
                    started,
                }
            })
            .collect()
    }

    async fn post_status(&mut self, pod: &Pod, sandbox: bool, init_done: bool, init_failed: bool) {
        let spec = pod.spec.clone().unwrap_or_default();
        let init = self.views(spec.init_containers.as_deref().unwrap_or_default(), false);
        let app = self.views(&spec.containers, true);
        let phase = if init_failed {
            "Failed"
        } else if !init_done {
            "Pending"
        } else {
            status::phase(&app, &restart_policy(pod))
        };
        let mut status = status::build(&PodView {
            pod,
            phase,
            network_ready: sandbox,
            init_done,
            init: &init,
            app: &app,
            pod_ip: self.pod_ip.map(|i| i.to_string()),
            host_ip: self.ctx.host_ip.to_string(),
            start_time: self.start_time,
            message: self.problem.clone(),
        });
        self.add_ephemeral_statuses(pod, &mut status);
        if self.last_status.as_ref() == Some(&status) {
            return;
        }
        match self
            .ctx
            .api
            .patch_status(&self.namespace, &self.name, &status)
            .await
        {
            Ok(()) => self.last_status = Some(status),
            Err(e) => {
                tracing::warn!(pod = %self.pod_ref(), error = %e, "failed to update pod status")
            }
        }
    }

    /// Stops every container (SIGTERM, SIGKILL after `grace`), removes
    /// them, tears down the network, the pod's directory and its logs.
    pub async fn terminate(&mut self, grace: Duration) {
        let deadline = Instant::now() + grace;
        self.run_pre_stop_hooks(grace).await;
        let grace = deadline.saturating_duration_since(Instant::now());
        let ids: Vec<ContainerId> = self
            .slots
            .values()
            .flat_map(|s| s.id.iter().chain(s.dead.iter()).cloned())
            .collect();
        let stops = ids.iter().map(|id| self.ctx.runtime.stop(id, grace));
        for (id, r) in ids.iter().zip(futures::future::join_all(stops).await) {
            if let Err(e) = r {
                tracing::warn!(container = %id, error = %e, "failed to stop container");
            }
        }
        for id in &ids {
            if let Err(e) = self.ctx.runtime.remove(id).await {
                tracing::warn!(container = %id, error = %e, "failed to remove container");
            }
        }
        self.slots.clear();
        self.release_pid_namespace().await;
        if let Err(e) = self.ctx.network.teardown_pod(&self.uid).await {
            tracing::warn!(pod = %self.pod_ref(), error = %e, "failed to tear down the pod network");
        }
        volumes::remove_pod_dir(self.ctx.fs.as_ref(), &self.pod_dir());
        // Its logs go with it, as kubelet's container GC removes them.
        let logs = self
            .ctx
            .log_root
            .join(format!("{}_{}_{}", self.namespace, self.name, self.uid));
        if let Err(e) = std::fs::remove_dir_all(&logs) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(pod = %self.pod_ref(), error = %e, "failed to remove the pod's logs");
            }
        }
    }
}
