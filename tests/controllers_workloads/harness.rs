//! The harness: a `TestServer`, the workload controllers on an in-process
//! client (restartable), an accelerated clock, and the pod simulator.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use rk3s::controllers::workloads::common::Clock;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::common::apiserver::TestServer;
use crate::common::kubectl::Kubectl;

/// A clock that runs `factor` times faster than the wall clock.
pub struct FastClock {
    pub start: Timestamp,
    pub real: Instant,
    pub factor: u32,
}

impl Clock for FastClock {
    fn now(&self) -> Timestamp {
        let elapsed = self.real.elapsed() * self.factor;
        self.start.checked_add(elapsed).unwrap_or(self.start)
    }
    fn real(&self, d: Duration) -> Duration {
        d / self.factor
    }
}

pub struct Cluster {
    pub server: TestServer,
    pub rt: tokio::runtime::Runtime,
    pub client: kube::Client,
    pub shutdown: CancellationToken,
    /// The running controllers' own token and handle, so a test can restart them.
    pub controllers: std::sync::Mutex<(CancellationToken, tokio::task::JoinHandle<()>)>,
    pub clock: Arc<dyn Clock>,
    pub kubectl: Kubectl,
}

impl Cluster {
    pub fn start(nodes: &[&str]) -> Self {
        Self::start_with_clock(nodes, None)
    }

    pub fn start_with_clock(nodes: &[&str], clock: Option<Arc<dyn Clock>>) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let server = TestServer::start();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let pki = rk3s::pki::Pki::load_or_create(
            &server.data_dir().join("server/tls"),
            &rk3s::pki::PkiOptions::new("test-server"),
        )
        .expect("failed to load the PKI");
        let client = rt
            .block_on(rk3s::controllers::in_process_client(
                &pki,
                rk3s::pki::ClientRole::ControllerManager,
                server.url(),
            ))
            .expect("failed to build the controller client");
        let shutdown = CancellationToken::new();
        let clock =
            clock.unwrap_or_else(|| Arc::new(rk3s::controllers::workloads::common::SystemClock));
        let controllers = start_controllers(&rt, &client, &clock);
        rt.spawn(simulate(client.clone(), shutdown.clone()));
        let kubectl = server.kubectl();
        let c = Cluster {
            server,
            rt,
            client,
            shutdown,
            controllers: std::sync::Mutex::new(controllers),
            clock,
            kubectl,
        };
        for n in nodes {
            c.add_node(n);
        }
        c
    }

    pub fn add_node(&self, name: &str) {
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap();
        let api: Api<Node> = Api::all(self.client.clone());
        self.rt
            .block_on(api.create(&PostParams::default(), &node))
            .expect("failed to register a node");
    }

    pub fn pods(&self, selector: &str) -> Vec<Pod> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), "default");
        self.rt
            .block_on(api.list(&ListParams::default().labels(selector)))
            .expect("list pods")
            .items
    }

    pub fn get<K>(&self, name: &str) -> K
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), "default");
        self.rt.block_on(api.get(name)).expect("get")
    }

    pub fn list<K>(&self) -> Vec<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), "default");
        self.rt
            .block_on(api.list(&ListParams::default()))
            .expect("list")
            .items
    }

    pub fn apply(&self, yaml: &str) {
        let out = self.kubectl.run_with_stdin(&["apply", "-f", "-"], yaml);
        assert!(
            out.status.success(),
            "kubectl apply failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.controllers.lock().unwrap().0.cancel();
    }
}

impl Cluster {
    /// Stops the controllers, waits for them to return, and starts fresh ones.
    pub fn restart_controllers(&self) {
        let mut guard = self.controllers.lock().unwrap();
        guard.0.cancel();
        let handle = std::mem::replace(&mut guard.1, self.rt.spawn(async {}));
        self.rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(30), handle).await })
            .expect("the controllers did not stop on shutdown")
            .expect("the controllers panicked");
        *guard = start_controllers(&self.rt, &self.client, &self.clock);
    }
}

pub fn start_controllers(
    rt: &tokio::runtime::Runtime,
    client: &kube::Client,
    clock: &Arc<dyn Clock>,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let token = CancellationToken::new();
    let mut options = rk3s::controllers::ControllerOptions::new(
        rk3s::server::assemble::ClusterSettings::defaults(),
    );
    options.cronjob_period = Duration::from_millis(300);
    let ctx = rk3s::controllers::Context {
        client: client.clone(),
        options: Arc::new(options),
        shutdown: token.clone(),
    };
    let handle = rt.spawn(rk3s::controllers::workloads::run_with_clock(
        ctx,
        clock.clone(),
    ));
    (token, handle)
}

/// Polls `f` until it returns `Some`, panicking with `what` after `secs`.
pub fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn live(pods: Vec<Pod>) -> Vec<Pod> {
    pods.into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

pub fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

pub fn image(p: &Pod) -> String {
    p.spec.as_ref().unwrap().containers[0]
        .image
        .clone()
        .unwrap_or_default()
}

/// The pod simulator: binds, starts, readies and finishes pods; a pod
/// being deleted is removed at once, as a kubelet would after its grace period.
pub async fn simulate(client: kube::Client, shutdown: CancellationToken) {
    let pods: Api<Pod> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let mut next = 0usize;
    while !shutdown.is_cancelled() {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let (Ok(pl), Ok(nl)) = (
            pods.list(&ListParams::default()).await,
            nodes.list(&ListParams::default()).await,
        ) else {
            continue;
        };
        let node_names: Vec<String> = nl.items.iter().map(|n| n.name_any()).collect();
        for p in pl.items {
            let ns = p.namespace().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
            let name = p.name_any();
            if p.metadata.deletion_timestamp.is_some() {
                let _ = api
                    .delete(&name, &kube::api::DeleteParams::default().grace_period(0))
                    .await;
                continue;
            }
            let spec = p.spec.clone().unwrap_or_default();
            let Some(_node) = spec.node_name.clone() else {
                if node_names.is_empty() {
                    continue;
                }
                let pinned = rk3s::controllers::workloads::daemonset::target_node(&p);
                let node = pinned.unwrap_or_else(|| {
                    next += 1;
                    node_names[next % node_names.len()].clone()
                });
                let _ = api
                    .patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"spec": {"nodeName": node}})),
                    )
                    .await;
                continue;
            };
            let now = Timestamp::now().to_string();
            let outcome = p.labels().get("sim").cloned().unwrap_or_default();
            let status = match (phase(&p), outcome.as_str()) {
                (_, "hang") => continue,
                ("Pending", _) => json!({"phase": "Running", "startTime": now, "conditions": [
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                    {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                    {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                    {"type": "Ready", "status": "True", "lastTransitionTime": now}]}),
                ("Running", "succeed") => json!({"phase": "Succeeded", "conditions": [
                    {"type": "Ready", "status": "False", "lastTransitionTime": now}]}),
                ("Running", "fail") => json!({"phase": "Failed", "conditions": [
                    {"type": "Ready", "status": "False", "lastTransitionTime": now}]}),
                _ => continue,
            };
            let _ = api
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": status})),
                )
                .await;
        }
    }
}
