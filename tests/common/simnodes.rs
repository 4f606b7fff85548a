//! Simulated nodes, and a test server running the cluster controllers and
//! the scheduler in-process, so scheduling, endpoints and node lifecycle
//! are tested with no container runtime.
//!
//! A [`SimNode`] registers a Ready Node with capacity, renews its Lease in
//! `kube-node-lease`, re-posts Ready=True if the node lifecycle controller
//! marked it Unknown, marks the pods bound to it Running and Ready through
//! `pods/status` (with a pod IP from its pod CIDR-like range), and finishes
//! the graceful deletion of its pods as a kubelet does. [`SimNode::stop`]
//! stops all of that, as a node that lost power.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::ResourceExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::apiserver::TestServer;

/// A TestServer plus a tokio runtime running the cluster controllers and
/// the scheduler, and clients for tests.
pub struct ClusterHarness {
    pub server: TestServer,
    pub rt: tokio::runtime::Runtime,
    pub client: kube::Client,
    shutdown: CancellationToken,
    options: Arc<rk3s::controllers::ControllerOptions>,
    /// The controller-manager and scheduler clients.
    clients: (kube::Client, kube::Client),
}

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn now_micro() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

impl ClusterHarness {
    /// Starts the server, then the controllers and scheduler with options
    /// adjusted by `tune` (e.g. shorter node grace and tolerations).
    pub fn start(tune: impl FnOnce(&mut rk3s::controllers::ControllerOptions)) -> Self {
        let server = TestServer::start();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let pki = rk3s::pki::Pki::load_or_create(
            &server.data_dir().join("server/tls"),
            &rk3s::pki::PkiOptions::new("test-server"),
        )
        .expect("failed to load the PKI");
        let mut options = rk3s::controllers::ControllerOptions::new(
            rk3s::server::assemble::ClusterSettings::defaults(),
        );
        options.root_ca_pem = String::from_utf8_lossy(pki.ca_bundle_pem()).into_owned();
        options.gc_period = Duration::from_secs(1);
        tune(&mut options);
        let options = Arc::new(options);
        let url = server.url().to_string();
        let (cm, sched, admin) = rt.block_on(async {
            use rk3s::pki::ClientRole;
            let c = |role| rk3s::controllers::in_process_client(&pki, role, &url);
            (
                c(ClientRole::ControllerManager).await.expect("client"),
                c(ClientRole::Scheduler).await.expect("client"),
                c(ClientRole::Admin).await.expect("client"),
            )
        });
        let mut h = ClusterHarness {
            server,
            rt,
            client: admin,
            shutdown: CancellationToken::new(),
            options,
            clients: (cm, sched),
        };
        h.start_controllers();
        h
    }

    /// Starts the cluster controllers and the scheduler (again).
    pub fn start_controllers(&mut self) {
        self.shutdown = CancellationToken::new();
        let ctx = |client: &kube::Client| rk3s::controllers::Context {
            client: client.clone(),
            options: self.options.clone(),
            shutdown: self.shutdown.clone(),
        };
        self.rt
            .spawn(rk3s::controllers::cluster::run(ctx(&self.clients.0)));
        self.rt.spawn(rk3s::scheduler::run(
            self.clients.1.clone(),
            self.shutdown.clone(),
        ));
    }

    /// Stops them, as a server restart would; the API keeps serving.
    pub fn stop_controllers(&self) {
        self.shutdown.cancel();
    }

    pub fn kubectl(&self) -> super::kubectl::Kubectl {
        self.server.kubectl()
    }

    /// Starts `n` simulated nodes `node-0` … with 4 CPUs and 8 GiB each.
    pub fn nodes(&self, n: usize) -> Vec<SimNode> {
        (0..n)
            .map(|i| self.node(&format!("node-{i}"), i as u8, "4", "8Gi"))
            .collect()
    }

    pub fn node(&self, name: &str, index: u8, cpu: &str, memory: &str) -> SimNode {
        let node = SimNode {
            name: name.to_string(),
            stop: CancellationToken::new(),
        };
        self.rt
            .block_on(register(&self.client, name, index, cpu, memory));
        self.rt.spawn(run_node(
            self.client.clone(),
            name.to_string(),
            index,
            node.stop.clone(),
        ));
        node
    }
}

impl Drop for ClusterHarness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub struct SimNode {
    pub name: String,
    stop: CancellationToken,
}

impl SimNode {
    /// Stops renewing the Lease and tending pods.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

impl Drop for SimNode {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn ready_conditions() -> serde_json::Value {
    let t = now();
    json!([
        {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory",
         "message": "kubelet has sufficient memory available", "lastHeartbeatTime": t, "lastTransitionTime": t},
        {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure",
         "message": "kubelet has no disk pressure", "lastHeartbeatTime": t, "lastTransitionTime": t},
        {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID",
         "message": "kubelet has sufficient PID available", "lastHeartbeatTime": t, "lastTransitionTime": t},
        {"type": "Ready", "status": "True", "reason": "KubeletReady",
         "message": "kubelet is posting ready status", "lastHeartbeatTime": t, "lastTransitionTime": t}])
}

async fn register(client: &kube::Client, name: &str, index: u8, cpu: &str, memory: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    let status = json!({"capacity": {"cpu": cpu, "memory": memory, "pods": "110"},
        "allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
        "conditions": ready_conditions(),
        "addresses": [{"type": "InternalIP", "address": format!("192.168.77.{}", index + 10)},
                      {"type": "Hostname", "address": name}],
        "nodeInfo": {"kubeletVersion": "v1.32.0+rk3s", "operatingSystem": "linux", "architecture": "amd64",
                     "containerRuntimeVersion": "sim://1", "kernelVersion": "6", "osImage": "sim",
                     "kubeProxyVersion": "", "machineID": "", "systemUUID": "", "bootID": ""}});
    let node: Node = serde_json::from_value(json!({"metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}},
        "status": status.clone()}))
    .unwrap();
    // A node that registers again (after `stop`) keeps its Node object.
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("failed to register the node: {e}"),
    }
    nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": status})),
        )
        .await
        .expect("failed to post the node status");
}

async fn renew(client: &kube::Client, name: &str) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let body = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now_micro()}});
    let patch = PatchParams::default();
    if leases
        .patch(name, &patch, &Patch::Merge(&json!({"spec": body["spec"]})))
        .await
        .is_err()
    {
        let lease: Lease = serde_json::from_value(body).unwrap();
        let _ = leases.create(&PostParams::default(), &lease).await;
    }
    // Come back Ready if the node controller marked us Unknown.
    let nodes: Api<Node> = Api::all(client.clone());
    if let Ok(n) = nodes.get(name).await {
        let ready = n
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if !ready {
            let _ = nodes
                .patch_status(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(&json!({"status": {"conditions": ready_conditions()}})),
                )
                .await;
        }
    }
}

async fn tend_pod(client: &kube::Client, index: u8, seq: &mut u32, pod: &Pod) {
    let ns = pod.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    if pod.metadata.deletion_timestamp.is_some() {
        let _ = api
            .delete(&pod.name_any(), &DeleteParams::default().grace_period(0))
            .await;
        return;
    }
    if pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") {
        return;
    }
    *seq += 1;
    let ip = format!("10.42.{}.{}", index, (*seq % 250) + 2);
    let t = now();
    let containers: Vec<_> = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .map(|c| json!({"name": c.name, "image": c.image, "imageID": "", "ready": true, "restartCount": 0,
                        "started": true, "state": {"running": {"startedAt": t}}}))
        .collect();
    let patch = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "hostIP": format!("192.168.77.{}", index + 10), "startTime": t,
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": t},
            {"type": "Initialized", "status": "True", "lastTransitionTime": t},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": t},
            {"type": "Ready", "status": "True", "lastTransitionTime": t}],
        "containerStatuses": containers}});
    let _ = api
        .patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await;
}

async fn run_node(client: kube::Client, name: String, index: u8, stop: CancellationToken) {
    let pods: Api<Pod> = Api::all(client.clone());
    let mut events = watcher::watcher(
        pods,
        watcher::Config::default().fields(&format!("spec.nodeName={name}")),
    )
    .default_backoff()
    .boxed();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut seq = 0u32;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => renew(&client, &name).await,
            ev = events.next() => match ev {
                Some(Ok(Event::Apply(p) | Event::InitApply(p))) => {
                    tend_pod(&client, index, &mut seq, &p).await
                }
                Some(_) => {}
                None => return,
            },
        }
    }
}
