//! The kubelet: registers the Node, renews its Lease, and runs the pods
//! bound to it on containerd (`super::runtime`) with the pod network
//! (`super::network`).
//!
//! [`run`] is a sequence: containerd (our own, supervised by
//! [`super::containerd`], unless `--container-runtime-endpoint` names
//! another), the Node registered NotReady, the Lease loop, waiting for
//! `spec.podCIDR`, the pod network with [`PodNetwork::recover`], then a
//! watch of the pods with `spec.nodeName=<node>` feeding one
//! [`worker::PodWorker`] task per pod.
//!
//! Fail static: cancelling [`run`] stops only the agent's tasks; containers,
//! their log shims and pod networks stay. A new [`run`] adopts containers
//! by their labels and networks by the allocator files, and cleans up
//! pods deleted meanwhile once the first pod list is in.
//!
//! Map: `node` (Node object, status), `lease`, `worker` (per-pod sync),
//! `status` (pod status), `env`, `volumes`, `podfiles` (hosts,
//! resolv.conf), `probe`, `backoff`, `images`, `image_gc` (deletes
//! unused images when the image disk fills), `api` (the pod API seam).
//!
//! Partial: see `images`, `image_gc`, `worker` (no preStop or exec
//! probes), `volumes`.

pub mod api;
pub mod backoff;
pub mod container_spec;
pub mod env;
pub mod hooks;
pub mod image_gc;
pub mod images;
pub mod lease;
pub mod node;
pub mod podfiles;
pub mod probe;
use crate::quantity;
pub mod status;
pub mod volumes;
pub mod worker;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::containerd_supervisor::{self as supervisor, ContainerdPaths};
use super::network::{NetworkConfig, NetworkError, PodNetwork};
use super::runtime::{labels, ContainerRuntime, ContainerSummary, ContainerdRuntime, RuntimeError};
use super::NodeCredentials;
use crate::config::{AgentConfig, NodeConfig, DEFAULT_CONTAINER_RUNTIME_ENDPOINT};

/// Where CRI logs go by default (kubelet's layout).
pub const DEFAULT_LOG_ROOT: &str = "/var/log/pods";
const SYNC_PERIOD: Duration = Duration::from_secs(1);

/// Everything the kubelet runs from.
#[derive(Clone, Debug)]
pub struct KubeletOptions {
    pub node: NodeConfig,
    pub credentials: NodeCredentials,
    /// `<data-dir>/agent`.
    pub agent_dir: PathBuf,
    pub cluster_dns: IpAddr,
    pub cluster_domain: String,
    /// Root of the CRI log files ([`DEFAULT_LOG_ROOT`]).
    pub log_root: PathBuf,
    /// Where pod network namespaces are bound (`/var/run/netns`).
    pub netns_dir: PathBuf,
    /// The pod bridge ([`super::network::DEFAULT_BRIDGE`]).
    pub bridge: String,
    /// The program containerd runs as each container's log shim (default:
    /// this executable, see `runtime::cri_log`).
    pub log_shim: Option<PathBuf>,
    /// Image garbage collection thresholds (from `node.kubelet_args`).
    pub image_gc: image_gc::ImageGcPolicy,
    /// The directory whose filesystem image GC watches: containerd's root.
    /// `None`: rk3s's own containerd dir, or `/var/lib/containerd` with
    /// an external endpoint.
    pub image_fs: Option<PathBuf>,
    /// The overlay between nodes (`--flannel-backend`, the server's; an
    /// agent learns it at join). [`KubeletOptions::new`] says `None`, so
    /// in-process test kubelets never touch the host's links.
    pub flannel_backend: crate::overlay::FlannelBackend,
    /// All pods (`--cluster-cidr`, the server's).
    pub cluster_cidr: ipnet::Ipv4Net,
    /// Runs the node services that change the host's network: cluster DNS
    /// (an address on a host link), the service proxy (an nftables table)
    /// and the ingress (ports 80 and 443). The standalone agent and the
    /// server's built-in agent turn it on; [`KubeletOptions::new`] leaves
    /// it off, so in-process test kubelets never touch the host.
    pub node_services: bool,
    /// The agent's Prometheus registry (`/metrics` on the kubelet API):
    /// image pulls, the tunnel, the service proxy and the pod samples count
    /// into it.
    pub metrics: Arc<crate::metrics::prom::Registry>,
}

impl KubeletOptions {
    /// The node's run dir (`--run-dir`) and the paths below it.
    pub fn run_dir(&self) -> super::run_dir::RunDir {
        super::run_dir::RunDir::new(&self.node.run_dir)
    }

    /// For a standalone agent (k3s's defaults for DNS).
    pub fn for_agent(config: &AgentConfig, credentials: NodeCredentials) -> Self {
        let mut opts = Self::new(
            config.node.clone(),
            credentials,
            config.data_dir.join("agent"),
        );
        // The backend is the server's choice; an older server that does not
        // say gets k3s's default.
        opts.node_services = true;
        let cluster = crate::agent::join::ClusterConfig::load(&opts.agent_dir);
        opts.flannel_backend = cluster
            .as_ref()
            .and_then(|c| c.flannel_backend.as_deref())
            .and_then(|b| b.parse().ok())
            .unwrap_or(crate::overlay::FlannelBackend::Vxlan);
        if let Some(cluster) = cluster {
            if let Ok(cidr) = cluster.cluster_cidr.parse() {
                opts.cluster_cidr = cidr;
            }
            // The server's DNS address and domain, as the join stored them.
            opts.cluster_dns = cluster.cluster_dns;
            opts.cluster_domain = cluster.cluster_domain;
        }
        opts
    }

    pub fn new(node: NodeConfig, credentials: NodeCredentials, agent_dir: PathBuf) -> Self {
        let image_gc = image_gc::ImageGcPolicy {
            high_threshold_percent: node.kubelet_args.image_gc_high_threshold,
            low_threshold_percent: node.kubelet_args.image_gc_low_threshold,
            minimum_age: node.kubelet_args.minimum_image_ttl,
        };
        KubeletOptions {
            image_gc,
            image_fs: None,
            node,
            credentials,
            agent_dir,
            cluster_dns: IpAddr::from([10, 43, 0, 10]),
            cluster_domain: "cluster.local".into(),
            log_root: PathBuf::from(DEFAULT_LOG_ROOT),
            netns_dir: PathBuf::from(super::network::DEFAULT_NETNS_DIR),
            bridge: super::network::DEFAULT_BRIDGE.to_string(),
            log_shim: None,
            flannel_backend: crate::overlay::FlannelBackend::None,
            cluster_cidr: "10.42.0.0/16".parse().expect("valid literal"),
            node_services: false,
            metrics: Arc::new(crate::metrics::prom::Registry::new()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    #[error(transparent)]
    Containerd(#[from] supervisor::ContainerdError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error(transparent)]
    Overlay(#[from] crate::overlay::OverlayError),
    #[error(transparent)]
    Node(#[from] node::NodeError),
    #[error(transparent)]
    Registry(#[from] crate::agent::image_registry::RegistryError),
    #[error("failed to build an API client from {path}: {message}")]
    Client { path: PathBuf, message: String },
    #[error("failed to use node {node}'s spec.podCIDR {cidr:?}: {message}")]
    PodCidr {
        node: String,
        cidr: String,
        message: String,
    },
}

/// The containerd socket in `endpoint`, or `None` when rk3s runs its own
/// (the endpoint is unset: empty or the config layer's default).
pub fn external_socket(endpoint: &str) -> Option<PathBuf> {
    if endpoint.is_empty() || endpoint == DEFAULT_CONTAINER_RUNTIME_ENDPOINT {
        return None;
    }
    Some(PathBuf::from(
        endpoint.strip_prefix("unix://").unwrap_or(endpoint),
    ))
}

async fn client(path: &Path) -> Result<Client, KubeletError> {
    let err = |m: String| KubeletError::Client {
        path: path.to_path_buf(),
        message: m,
    };
    let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| err(e.to_string()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|e| err(e.to_string()))?;
    Client::try_from(cfg).map_err(|e| err(e.to_string()))
}

/// Runs the kubelet until `shutdown`.
pub async fn run(opts: KubeletOptions, shutdown: CancellationToken) -> Result<(), KubeletError> {
    let node_name = opts.node.node_name.clone();
    // A malformed registries.yaml stops the agent: pulls would silently
    // bypass the mirrors and credentials the operator set.
    let registries = crate::agent::image_registry::RegistriesConfig::load(&opts.node.private_registry)?;
    let (socket, containerd_root) = match external_socket(&opts.node.container_runtime_endpoint) {
        Some(s) => (s, PathBuf::from("/var/lib/containerd")),
        None => {
            let paths = ContainerdPaths::for_agent(&opts.agent_dir, &opts.run_dir());
            let socket = paths.socket.clone();
            let root = paths.dir.clone();
            supervisor::start(paths, shutdown.clone()).await?;
            (socket, root)
        }
    };
    let mut runtime = ContainerdRuntime::connect(&socket, &opts.run_dir().stdio_fifos()).await?;
    if let Some(shim) = &opts.log_shim {
        runtime = runtime.with_log_binary(shim);
    }
    let runtime: Arc<dyn ContainerRuntime> = Arc::new(runtime);
    let (rt_name, rt_version) = runtime.version().await?;
    let runtime_version = format!("{rt_name}://{rt_version}");
    let client = client(&opts.credentials.kubeconfig).await?;
    std::fs::create_dir_all(&opts.agent_dir).ok();
    // Node subsystems (modules of their own; the agent only wires them),
    // all fed by one Service cache. Cluster DNS for this node's pods
    // (crate::dns) is up before any pod starts.
    let services = crate::svccache::ServiceCache::start(client.clone(), shutdown.clone());
    if opts.node_services {
        let mut dns = crate::dns::DnsOptions::new(opts.cluster_dns, opts.cluster_domain.clone());
        dns.resolv_conf = opts.node.resolv_conf.clone();
        let (dns_client, dns_services, dns_stop) = (client.clone(), services.clone(), shutdown.clone());
        tokio::spawn(async move {
            if let Err(e) = crate::dns::run(dns_client, dns_services, dns, dns_stop).await {
                tracing::error!("cluster DNS stopped: {e}");
            }
        });
    }

    let facts = node::NodeFacts::gather(&opts.node, &opts.agent_dir, &runtime_version);
    let registered = node::register(&client, &opts.node, &facts, false).await?;
    let network_ready = Arc::new(AtomicBool::new(false));
    tokio::spawn(lease::run(
        client.clone(),
        node_name.clone(),
        registered.metadata.uid.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(status_loop(
        client.clone(),
        opts.clone(),
        runtime_version.clone(),
        network_ready.clone(),
        shutdown.clone(),
    ));
    // local-path: the directories of this node's volumes (crate::storage).
    tokio::spawn(crate::storage::local_path::NodeDirs::new(client.clone(), &node_name).run(shutdown.clone()));

    if opts.node_services {
        // The service proxy (`crate::proxy`) programs its own table; it needs
        // no pod network to start.
        tokio::spawn(crate::proxy::run(
            crate::proxy::ProxyConfig::for_node(&node_name, facts.internal_ip),
            services.clone(),
            Some(opts.metrics.clone()),
            shutdown.clone(),
        ));
        let mut ingress = crate::ingress::IngressOptions::on_ports(
            opts.node.ingress_http_port,
            opts.node.ingress_https_port,
        );
        match crate::dashboard::ApiAccess::from_kubeconfig(&opts.credentials.kubeconfig) {
            Ok(access) => ingress.reserved = Some(crate::dashboard::router(access)),
            Err(e) => tracing::warn!("the dashboard is off: {e}"),
        }
        crate::ingress::spawn(client.clone(), services, ingress, shutdown.clone());
    }

    let Some(cidr) = wait_for_pod_cidr(&client, &node_name, &shutdown).await else {
        return Ok(());
    };
    let pod_cidr = cidr
        .parse()
        .map_err(|e: ipnet::AddrParseError| KubeletError::PodCidr {
            node: node_name.clone(),
            cidr: cidr.clone(),
            message: e.to_string(),
        })?;
    let mut net_config = NetworkConfig::new(pod_cidr, opts.agent_dir.join("network"));
    net_config.netns_dir = opts.netns_dir.clone();
    net_config.bridge = opts.bridge.clone();
    let network = Arc::new(PodNetwork::new(net_config).await?);
    network.ensure_host().await?;
    let recovery = network.recover().await?;
    if opts.flannel_backend != crate::overlay::FlannelBackend::None {
        let overlay = overlay_config(&opts, pod_cidr, &facts)?;
        crate::overlay::start(overlay, client.clone(), shutdown.clone()).await?;
    }
    network_ready.store(true, Ordering::SeqCst);
    // Ready now, not at the next status tick.
    if let Err(e) = node::post_status(&client, &node_name, &facts, true).await {
        tracing::warn!(error = %e, "failed to post the node status");
    }
    tracing::info!(node = %node_name, pod_cidr = %cidr, pods = recovery.live.len(), "pod network ready");

    let mut images = images::ImageManager::new(runtime.clone(), opts.agent_dir.join("images"))
        .with_metrics(opts.metrics.clone());
    match crate::agent::image_registry::HttpRegistry::new() {
        Ok(registry) => images = images.with_registry(Arc::new(registry.with_config(registries))),
        Err(e) => tracing::warn!(error = %e, "image pulls from registries are disabled"),
    }
    let images = Arc::new(images);
    images.scan().await;
    tokio::spawn(images.clone().watch(shutdown.clone()));
    let image_fs = opts.image_fs.clone().unwrap_or(containerd_root);
    tokio::spawn(
        image_gc::ImageGc::new(
            runtime.clone(),
            Arc::new(image_gc::Statvfs::new(image_fs)),
            opts.image_gc,
        )
        .run(shutdown.clone()),
    );

    let ctx = Arc::new(worker::Context {
        runtime: runtime.clone(),
        network: network.clone(),
        api: Arc::new(api::KubePodApi::new(client.clone())),
        images,
        fs: Arc::new(crate::hostos::LinuxFsOps),
        node_name: node_name.clone(),
        host_ip: facts.internal_ip,
        cluster_dns: opts.cluster_dns,
        cluster_domain: opts.cluster_domain.clone(),
        resolv_conf: crate::dns::resolvconf::choose(opts.node.resolv_conf.as_deref()),
        pods_dir: opts.agent_dir.join("pods"),
        log_root: opts.log_root.clone(),
        node_cpu_millis: facts.cpus as i64 * 1000,
        node_memory_bytes: facts.memory_bytes as i64,
    });
    let mut existing: HashMap<String, Vec<ContainerSummary>> = HashMap::new();
    for c in runtime.list(&BTreeMap::new()).await? {
        if let Some(uid) = c.label(labels::POD_UID) {
            existing.entry(uid.to_string()).or_default().push(c);
        }
    }
    let live_nets: HashMap<String, super::network::PodNetInfo> =
        recovery.live.into_iter().collect();
    let mut sync = PodSync {
        ctx,
        existing,
        live_nets,
        workers: HashMap::new(),
        shutdown: shutdown.clone(),
    };
    sync.run(client, &node_name).await;
    Ok(())
}

fn overlay_config(
    opts: &KubeletOptions,
    pod_cidr: ipnet::Ipv4Net,
    facts: &node::NodeFacts,
) -> Result<crate::overlay::OverlayConfig, crate::overlay::OverlayError> {
    use crate::overlay::controller::ipv4;
    Ok(crate::overlay::OverlayConfig {
        node_name: opts.node.node_name.clone(),
        backend: opts.flannel_backend,
        pod_cidr,
        cluster_cidr: opts.cluster_cidr,
        node_ip: ipv4(facts.internal_ip, "the node IP")?,
        external_ip: opts.node.node_external_ip.map(|ip| ipv4(ip, "--node-external-ip")).transpose()?,
        iface: opts.node.flannel_iface.clone(),
        state_dir: opts.agent_dir.join("overlay"),
        host_netns: None,
    })
}

async fn status_loop(
    client: Client,
    opts: KubeletOptions,
    runtime_version: String,
    network_ready: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(node::STATUS_PERIOD) => {}
        }
        let facts = node::NodeFacts::gather(&opts.node, &opts.agent_dir, &runtime_version);
        if let Err(e) = node::post_status(
            &client,
            &opts.node.node_name,
            &facts,
            network_ready.load(Ordering::SeqCst),
        )
        .await
        {
            tracing::warn!(error = %e, "failed to post the node status");
        }
    }
}

async fn wait_for_pod_cidr(
    client: &Client,
    node: &str,
    shutdown: &CancellationToken,
) -> Option<String> {
    let api: Api<Node> = Api::all(client.clone());
    let mut logged = false;
    loop {
        match api.get_opt(node).await {
            Ok(Some(n)) => {
                if let Some(c) = n.spec.and_then(|s| s.pod_cidr).filter(|c| !c.is_empty()) {
                    return Some(c);
                }
            }
            Ok(None) => tracing::warn!(node, "the Node object is gone; waiting for it"),
            Err(e) => tracing::warn!(node, error = %e, "failed to read the Node"),
        }
        if !logged {
            tracing::info!(
                node,
                "waiting for the node's spec.podCIDR before configuring the pod network"
            );
            logged = true;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

struct WorkerHandle {
    pod: watch::Sender<Option<Pod>>,
}

/// The pod watch and the per-pod workers.
struct PodSync {
    ctx: Arc<worker::Context>,
    /// Containers found at start, by pod uid, until a worker adopts them.
    existing: HashMap<String, Vec<ContainerSummary>>,
    live_nets: HashMap<String, super::network::PodNetInfo>,
    workers: HashMap<String, WorkerHandle>,
    shutdown: CancellationToken,
}

impl PodSync {
    async fn run(&mut self, client: Client, node: &str) {
        let api: Api<Pod> = Api::all(client);
        let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
        let mut events = watcher::watcher(api, config).default_backoff().boxed();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
        let mut listed: HashSet<String> = HashSet::new();
        let mut cleaned_orphans = false;
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                Some(uid) = done_rx.recv() => { self.workers.remove(&uid); }
                ev = events.next() => match ev {
                    None => break,
                    Some(Err(e)) => tracing::warn!(error = %e, "pod watch failed; retrying"),
                    Some(Ok(Event::Init)) => listed.clear(),
                    Some(Ok(Event::InitApply(pod))) => {
                        if let Some(uid) = pod.metadata.uid.clone() { listed.insert(uid); }
                        self.dispatch(pod, &done_tx);
                    }
                    Some(Ok(Event::Apply(pod))) => self.dispatch(pod, &done_tx),
                    Some(Ok(Event::Delete(pod))) => {
                        if let Some(w) = pod.metadata.uid.as_ref().and_then(|u| self.workers.get(u)) {
                            let _ = w.pod.send(None);
                        }
                    }
                    Some(Ok(Event::InitDone)) => {
                        for (uid, w) in &self.workers {
                            if !listed.contains(uid) {
                                let _ = w.pod.send(None);
                            }
                        }
                        if !cleaned_orphans {
                            cleaned_orphans = true;
                            self.clean_orphans().await;
                        }
                    }
                }
            }
        }
        // Dropping the senders ends every worker without touching its pod.
        self.workers.clear();
    }

    fn dispatch(&mut self, pod: Pod, done: &mpsc::UnboundedSender<String>) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        if let Some(w) = self.workers.get(&uid) {
            let _ = w.pod.send(Some(pod));
            return;
        }
        let mut w = worker::PodWorker::new(self.ctx.clone(), &pod);
        if let Some(found) = self.existing.remove(&uid) {
            w.adopt(&found);
        }
        if let Some(info) = self.live_nets.remove(&uid) {
            w.adopt_network(IpAddr::V4(info.ip), info.netns_path);
        }
        let (tx, rx) = watch::channel(Some(pod));
        tokio::spawn(worker_loop(w, rx, self.shutdown.clone(), done.clone()));
        self.workers.insert(uid, WorkerHandle { pod: tx });
    }

    /// Pods whose containers or network outlived their object (deleted
    /// while the agent was down): stop and remove everything of theirs.
    async fn clean_orphans(&mut self) {
        let uids: HashSet<String> = self
            .existing
            .keys()
            .chain(self.live_nets.keys())
            .cloned()
            .collect();
        for uid in uids {
            if self.workers.contains_key(&uid) {
                continue;
            }
            tracing::info!(uid = %uid, "cleaning up a pod deleted while the agent was down");
            let pod = Pod {
                metadata: kube::api::ObjectMeta {
                    uid: Some(uid.clone()),
                    ..Default::default()
                },
                ..Default::default()
            };
            let mut w = worker::PodWorker::new(self.ctx.clone(), &pod);
            if let Some(found) = self.existing.remove(&uid) {
                w.adopt(&found);
            }
            self.live_nets.remove(&uid);
            w.terminate(Duration::from_secs(2)).await;
        }
    }
}

async fn worker_loop(
    mut w: worker::PodWorker,
    mut rx: watch::Receiver<Option<Pod>>,
    shutdown: CancellationToken,
    done: mpsc::UnboundedSender<String>,
) {
    w.follow(rx.clone());
    loop {
        let pod = rx.borrow_and_update().clone();
        if w.sync(pod.as_ref()).await == worker::Flow::Finished {
            let _ = done.send(w.uid().to_string());
            return;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = rx.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(SYNC_PERIOD) => {}
        }
    }
}

#[cfg(test)]
mod tests;
