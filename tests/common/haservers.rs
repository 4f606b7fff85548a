//! Two in-process API servers sharing one datastore and one PKI: a real
//! multi-server setup without etcd (the `ha` work brings the join of a
//! second `rk3s server` process). One SQLite store object is shared by both
//! servers (so they see each other's volatile Leases as two servers on etcd
//! do); the first listens on 127.0.0.1:P, the second on 127.0.0.2:P (same
//! port, as servers of one cluster share it; both addresses are loopback,
//! and the serving certificate carries 127.0.0.2 through `tls_sans`). Each
//! runs what `rk3s server` runs to list itself in `default/kubernetes`
//! (`apiserver_leases::run`) and has its own tunnel registry: each is a
//! `TestServer` started on the shared parts (`TestServer::start_shared`).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use rk3s::store::Store;
use tokio_util::sync::CancellationToken;

use super::apiserver::{kube_client_for, make_store, write_node_kubeconfig, Shared, TestServer};
use super::kubectl::Kubectl;

pub struct HaServers {
    pub dir: tempfile::TempDir,
    pub pki: Arc<rk3s::pki::Pki>,
    pub servers: Vec<TestServer>,
}

impl HaServers {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = make_store(dir.path(), |_| {});
        let mut pki_options = rk3s::pki::PkiOptions::new("test-server");
        pki_options.tls_sans = vec!["127.0.0.2".into()];
        let pki = Arc::new(
            rk3s::pki::Pki::load_or_create(&dir.path().join("server/tls"), &pki_options).expect("PKI"),
        );
        let shared = |name: &str, store: Arc<dyn Store>, bind: SocketAddr| Shared {
            data_dir: dir.path().to_path_buf(),
            name: name.into(),
            store,
            pki: pki.clone(),
            bind,
        };
        let first = TestServer::start_shared(shared("a", store.clone(), "127.0.0.1:0".parse().unwrap()));
        let second_addr = SocketAddr::new("127.0.0.2".parse().unwrap(), first.addr().port());
        let second = TestServer::start_shared(shared("b", store, second_addr));
        HaServers { dir, pki, servers: vec![first, second] }
    }

    /// A kubeconfig for `system:node:<node>` pointing at `url`.
    pub fn node_kubeconfig(&self, node: &str, url: &str, path: &Path) {
        write_node_kubeconfig(&self.pki, node, url, path);
    }
}

/// The agent's API side, as `rk3s agent` runs it (its load balancer on a
/// free local port, the node kubeconfig pointed at it, one tunnel per
/// server serving `api`, the server watch, and the kubelet's own node-lease
/// loop through the balancer), on its own runtime until dropped.
pub struct HaAgent {
    shutdown: CancellationToken,
    pub balancer: Arc<rk3s::agent::loadbalancer::Balancer>,
    pub lb_url: String,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for HaAgent {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl HaAgent {
    pub fn start(
        ha: &HaServers,
        node: &str,
        seed: &str,
        state_dir: &Path,
        api: rk3s::agent::kubelet_api::KubeletApi,
    ) -> Self {
        use rk3s::agent::loadbalancer::{proxy, Balancer, STATE_FILE};
        let balancer = Arc::new(Balancer::new(seed, Some(state_dir.join(STATE_FILE))));
        let shutdown = CancellationToken::new();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let listener = rt.block_on(proxy::bind(0)).expect("bind the balancer");
        let lb_url = format!("https://{}", listener.local_addr().unwrap());
        let kubeconfig = state_dir.join("kubelet.kubeconfig");
        ha.node_kubeconfig(node, &lb_url, &kubeconfig);
        let (b, token, node, seed) = (balancer.clone(), shutdown.clone(), node.to_string(), seed.to_string());
        let thread = std::thread::spawn(move || {
            rt.block_on(async move {
                tokio::spawn(proxy::serve(listener, b.clone(), Arc::new(proxy::TcpDialer), token.clone()));
                let handler = rk3s::agent::kubelet_api::tunnel_handler(rk3s::agent::kubelet_api::router_with(api));
                let upstream = rk3s::agent::servers::Upstream { balancer: Some(b), seeds: vec![seed], alias: None };
                let _tunnels = rk3s::agent::servers::start(&kubeconfig, handler, upstream, None, &token)
                    .expect("start the tunnels");
                let client = kube_client_for(&kubeconfig).await;
                rk3s::agent::kubelet::lease::run(client, node, None, token).await;
            });
        });
        HaAgent { shutdown, balancer, lb_url, thread: Some(thread) }
    }
}

/// The `kubernetes` Endpoints' addresses as `ip:port`, sorted.
pub fn kubernetes_endpoints(kubectl: &Kubectl) -> Vec<String> {
    let out = kubectl.run(&[
        "get", "endpoints", "kubernetes", "-o",
        "jsonpath={range .subsets[*]}{range .addresses[*]}{.ip}{\" \"}{end}{\"/\"}{.ports[0].port}{\"\\n\"}{end}",
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut v = Vec::new();
    for line in text.lines() {
        let Some((ips, port)) = line.split_once('/') else { continue };
        for ip in ips.split_whitespace() {
            if ip.parse::<IpAddr>().is_ok() {
                v.push(format!("{ip}:{port}"));
            }
        }
    }
    v.sort();
    v
}
