//! Two in-process API servers sharing one datastore and one PKI: a real
//! multi-server setup without etcd (the `ha` work brings the join of a
//! second `rk3s server` process). One SQLite store object is shared by both
//! servers (so they see each other's volatile Leases as two servers on etcd
//! do); the first listens on 127.0.0.1:P, the second on 127.0.0.2:P (same
//! port, as servers of one cluster share it; both addresses are loopback,
//! and the serving certificate carries 127.0.0.2 through `tls_sans`). Each
//! runs what `rk3s server` runs to list itself in `default/kubernetes`
//! (`apiserver_leases::run`) and has its own tunnel registry.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rk3s::apiserver::ApiServer;
use rk3s::apiserver::ipalloc::apiserver_leases::{self, ServerEndpoint};
use rk3s::store::Store;
use rk3s::tunnel::TunnelRegistry;
use tokio_util::sync::CancellationToken;

use super::kubectl::Kubectl;

pub struct OneServer {
    pub url: String,
    pub addr: SocketAddr,
    pub tunnels: Arc<TunnelRegistry>,
    pub kubeconfig: PathBuf,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl OneServer {
    pub fn kubectl(&self) -> Kubectl {
        Kubectl::new(&self.kubeconfig)
    }

    /// Graceful stop (the server removes itself from the endpoints).
    pub fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for OneServer {
    fn drop(&mut self) {
        self.stop();
    }
}

pub struct HaServers {
    pub dir: tempfile::TempDir,
    pub pki: Arc<rk3s::pki::Pki>,
    pub servers: Vec<OneServer>,
}

impl HaServers {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let options = rk3s::store::StoreOptions {
            volatile_prefixes: rk3s::server::VOLATILE_PREFIXES.iter().map(|p| p.to_string()).collect(),
            ..Default::default()
        };
        let store: Arc<dyn Store> = Arc::new(
            rk3s::store::SqliteStore::open(&dir.path().join("server/db"), options).expect("SQLite store"),
        );
        let mut pki_options = rk3s::pki::PkiOptions::new("test-server");
        pki_options.tls_sans = vec!["127.0.0.2".into()];
        let pki = Arc::new(
            rk3s::pki::Pki::load_or_create(&dir.path().join("server/tls"), &pki_options).expect("PKI"),
        );
        let first = start_one(dir.path(), "a", store.clone(), pki.clone(), "127.0.0.1:0".parse().unwrap());
        let second_addr = SocketAddr::new("127.0.0.2".parse().unwrap(), first.addr.port());
        let second = start_one(dir.path(), "b", store, pki.clone(), second_addr);
        HaServers { dir, pki, servers: vec![first, second] }
    }

    /// A kubeconfig for `system:node:<node>` pointing at `url`.
    pub fn node_kubeconfig(&self, node: &str, url: &str, path: &Path) {
        let key = rk3s::pki::generate_key_and_csr(node).expect("key and CSR");
        let chain = self
            .pki
            .sign_agent_csr(&rk3s::pki::AgentCert::KubeletClient { node_name: node.into() }, key.csr_pem.as_bytes())
            .expect("sign the kubelet client certificate");
        rk3s::pki::Kubeconfig::new(url.to_string())
            .ca_data(self.pki.ca_bundle_pem())
            .client_cert_data(chain.as_bytes(), key.key_pem.as_bytes())
            .write(path, 0o600)
            .expect("write the node kubeconfig");
    }
}

fn start_one(
    dir: &Path,
    name: &str,
    store: Arc<dyn Store>,
    pki: Arc<rk3s::pki::Pki>,
    bind: SocketAddr,
) -> OneServer {
    let tunnels = Arc::new(TunnelRegistry::new(Default::default()));
    let mut settings = rk3s::server::assemble::ClusterSettings::defaults();
    settings.advertise_address = bind.ip();
    let parts = rk3s::server::assemble::Parts {
        store: store.clone(),
        registry: Arc::new(rk3s::apiserver::builtin::builtin_registry()),
        pki: pki.clone(),
        settings,
        server_dir: dir.join(format!("server-{name}")),
        tunnels: tunnels.clone(),
    };
    let shutdown = CancellationToken::new();
    let (tx, rx) = std::sync::mpsc::channel();
    let token = shutdown.clone();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let opts = rk3s::server::assemble::serve_options(bind, Duration::from_secs(2), &parts)
                .expect("serve options");
            let server = ApiServer::bind(opts, store.clone(), parts.registry.clone(), token.clone())
                .await
                .expect("bind the API server");
            let addr = server.local_addr().expect("local addr");
            tx.send(addr).expect("send addr");
            let me = ServerEndpoint { ip: addr.ip(), port: addr.port() };
            let leases = tokio::spawn(apiserver_leases::run(store, me, token));
            server.run().await;
            let _ = leases.await;
        });
    });
    let addr = rx.recv_timeout(Duration::from_secs(30)).expect("the API server did not start");
    let url = format!("https://{addr}");
    let kubeconfig = dir.join(format!("admin-{name}.kubeconfig"));
    let admin = pki.admin();
    rk3s::pki::Kubeconfig::new(url.clone())
        .ca_data(pki.ca_bundle_pem())
        .client_cert_data(admin.cert_pem.as_bytes(), admin.key_pem.as_bytes())
        .write(&kubeconfig, 0o600)
        .expect("write the kubeconfig");
    OneServer { url, addr, tunnels, kubeconfig, shutdown, thread: Some(thread) }
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
                let kc = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
                let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
                let client = kube::Client::try_from(cfg).unwrap();
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
