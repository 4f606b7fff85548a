//! An in-process rk3s API server for tests: its own tokio runtime on a
//! background thread, 127.0.0.1 on a free port, a temp data dir with the
//! real PKI, the plug-ins `rk3s server` assembles (`server::assemble`), and
//! an admin kubeconfig verified against the server CA.
//!
//! The store is chosen in [`make_store`] (the real SQLite store, as `rk3s server` opens it).
//! Several servers of one cluster start the same way on a shared data dir,
//! store and PKI ([`TestServer::start_shared`], used by `haservers`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rk3s::apiserver::ipalloc::apiserver_leases::{self, ServerEndpoint};
use rk3s::apiserver::{ApiServer, ServeOptions};
use rk3s::store::Store;
use tokio_util::sync::CancellationToken;

use super::kubectl::Kubectl;

pub fn make_store(
    data_dir: &Path,
    tune: impl FnOnce(&mut rk3s::store::StoreOptions),
) -> Arc<dyn Store> {
    let mut options = rk3s::store::StoreOptions {
        volatile_prefixes: rk3s::server::VOLATILE_PREFIXES
            .iter()
            .map(|p| p.to_string())
            .collect(),
        ..Default::default()
    };
    tune(&mut options);
    Arc::new(
        rk3s::store::SqliteStore::open(&data_dir.join("server/db"), options)
            .expect("failed to open the SQLite store"),
    )
}

pub struct TestServer {
    /// The temp dir the server owns; `None` when it runs on a data dir
    /// shared with other servers (see [`Shared`]).
    dir: Option<tempfile::TempDir>,
    data_dir: PathBuf,
    url: String,
    addr: SocketAddr,
    kubeconfig: PathBuf,
    tunnels: Arc<rk3s::tunnel::TunnelRegistry>,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A server of a cluster of several: the store and PKI the servers share,
/// the data dir they live in, this server's own name (its `server-<name>`
/// dir and `admin-<name>.kubeconfig`) and its address. Like `rk3s server`,
/// it advertises that address and lists itself in `default/kubernetes`
/// (`apiserver_leases::run`).
pub struct Shared {
    pub data_dir: PathBuf,
    pub name: String,
    pub store: Arc<dyn Store>,
    pub pki: Arc<rk3s::pki::Pki>,
    pub bind: SocketAddr,
}

/// What one server is started with, alone or shared.
struct Launch {
    data_dir: PathBuf,
    server_dir: PathBuf,
    kubeconfig: PathBuf,
    store: Arc<dyn Store>,
    pki: Arc<rk3s::pki::Pki>,
    bind: SocketAddr,
    list_in_endpoints: bool,
}

impl TestServer {
    pub fn start() -> Self {
        Self::start_with(|_| {})
    }

    /// Starts with store options tuned by the test (e.g. a tiny history).
    pub fn start_with(tune: impl FnOnce(&mut rk3s::store::StoreOptions)) -> Self {
        Self::start_custom(tune, |_| {})
    }

    /// Starts with tuned store options and serve options adjusted by the
    /// test after assembly (e.g. another authorizer).
    pub fn start_custom(
        tune: impl FnOnce(&mut rk3s::store::StoreOptions),
        adjust: impl FnOnce(&mut ServeOptions) + Send + 'static,
    ) -> Self {
        let dir = tempfile::tempdir().expect("failed to make a temp dir");
        let store = make_store(dir.path(), tune);
        let pki = Arc::new(
            rk3s::pki::Pki::load_or_create(
                &dir.path().join("server/tls"),
                &rk3s::pki::PkiOptions::new("test-server"),
            )
            .expect("failed to create the PKI"),
        );
        let launch = Launch {
            data_dir: dir.path().to_path_buf(),
            server_dir: dir.path().join("server"),
            kubeconfig: dir.path().join("kubeconfig"),
            store,
            pki,
            bind: "127.0.0.1:0".parse().unwrap(),
            list_in_endpoints: false,
        };
        let mut server = Self::launch(launch, adjust);
        server.dir = Some(dir);
        server
    }

    /// Starts one server of several on `shared`'s store and PKI.
    pub fn start_shared(shared: Shared) -> Self {
        let launch = Launch {
            server_dir: shared.data_dir.join(format!("server-{}", shared.name)),
            kubeconfig: shared.data_dir.join(format!("admin-{}.kubeconfig", shared.name)),
            data_dir: shared.data_dir,
            store: shared.store,
            pki: shared.pki,
            bind: shared.bind,
            list_in_endpoints: true,
        };
        Self::launch(launch, |_| {})
    }

    fn launch(launch: Launch, adjust: impl FnOnce(&mut ServeOptions) + Send + 'static) -> Self {
        let Launch { data_dir, server_dir, kubeconfig, store, pki, bind, list_in_endpoints } = launch;
        let tunnels = Arc::new(rk3s::tunnel::TunnelRegistry::new(Default::default()));
        let mut settings = rk3s::server::assemble::ClusterSettings::defaults();
        settings.advertise_address = bind.ip();
        let parts = rk3s::server::assemble::Parts {
            store: store.clone(),
            registry: Arc::new(rk3s::apiserver::builtin::builtin_registry()),
            pki: pki.clone(),
            settings,
            server_dir,
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
                let mut opts = rk3s::server::assemble::serve_options(
                    bind,
                    Duration::from_secs(2),
                    &parts,
                )
                .expect("failed to assemble the serve options");
                adjust(&mut opts);
                let server =
                    ApiServer::bind(opts, store.clone(), parts.registry.clone(), token.clone())
                        .await
                        .expect("failed to bind the API server");
                let addr = server.local_addr().expect("local addr");
                tx.send(addr).expect("send addr");
                let leases = list_in_endpoints.then(|| {
                    let me = ServerEndpoint { ip: addr.ip(), port: addr.port() };
                    tokio::spawn(apiserver_leases::run(store, me, token))
                });
                server.run().await;
                if let Some(leases) = leases {
                    let _ = leases.await;
                }
            });
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the API server did not start");
        let url = format!("https://{addr}");
        let admin = pki.admin();
        rk3s::pki::Kubeconfig::new(url.clone())
            .ca_data(pki.ca_bundle_pem())
            .client_cert_data(admin.cert_pem.as_bytes(), admin.key_pem.as_bytes())
            .write(&kubeconfig, 0o600)
            .expect("failed to write the kubeconfig");
        TestServer {
            dir: None,
            data_dir,
            url,
            addr,
            kubeconfig,
            tunnels,
            shutdown,
            thread: Some(thread),
        }
    }

    /// Graceful stop (a server listed in `default/kubernetes` removes
    /// itself); dropping the server stops it too.
    pub fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The registry of the node tunnels connected to this server.
    pub fn tunnels(&self) -> &rk3s::tunnel::TunnelRegistry {
        &self.tunnels
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A kube-rs client with the admin kubeconfig (inside a tokio runtime).
    pub async fn kube_client(&self) -> kube::Client {
        kube_client_for(&self.kubeconfig).await
    }

    pub fn kubectl(&self) -> Kubectl {
        Kubectl::new(&self.kubeconfig)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl TestServer {
    /// The server's PKI, loaded from the files it uses.
    pub fn pki(&self) -> rk3s::pki::Pki {
        rk3s::pki::Pki::load_or_create(
            &self.data_dir().join("server/tls"),
            &rk3s::pki::PkiOptions::new("test-server"),
        )
        .expect("failed to load the test server's PKI")
    }

    /// A kubeconfig (under the data dir) for `system:node:<node>`, with a
    /// fresh kubelet client certificate signed by the server's CA.
    pub fn node_kubeconfig(&self, node: &str) -> std::path::PathBuf {
        let path = self.data_dir().join(format!("node-{node}.kubeconfig"));
        write_node_kubeconfig(&self.pki(), node, self.url(), &path);
        path
    }
}

/// A kube-rs client with the kubeconfig at `path` (inside a tokio runtime).
pub async fn kube_client_for(path: &Path) -> kube::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = kube::config::Kubeconfig::read_from(path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// Writes at `path` a kubeconfig for `system:node:<node>` pointing at
/// `url`, with a fresh kubelet client certificate signed by `pki`'s CA.
pub fn write_node_kubeconfig(pki: &rk3s::pki::Pki, node: &str, url: &str, path: &Path) {
    let key = rk3s::pki::generate_key_and_csr(node).expect("key and CSR");
    let chain = pki
        .sign_agent_csr(
            &rk3s::pki::AgentCert::KubeletClient {
                node_name: node.into(),
            },
            key.csr_pem.as_bytes(),
        )
        .expect("sign the kubelet client certificate");
    rk3s::pki::Kubeconfig::new(url.to_string())
        .ca_data(pki.ca_bundle_pem())
        .client_cert_data(chain.as_bytes(), key.key_pem.as_bytes())
        .write(path, 0o600)
        .expect("write the node kubeconfig");
}

/// A TLS client configuration trusting `pki`'s CA and presenting a fresh
/// certificate `cert` signed by it (a node's, for the tunnel).
pub fn signed_client_tls(
    pki: &rk3s::pki::Pki,
    cert: rk3s::pki::AgentCert,
) -> Arc<rustls::ClientConfig> {
    let key = rk3s::pki::generate_key_and_csr("test-client").expect("key and CSR");
    let chain = pki
        .sign_agent_csr(&cert, key.csr_pem.as_bytes())
        .expect("sign the CSR");
    Arc::new(
        rk3s::pki::client_tls_config(
            pki.ca_bundle_pem(),
            Some((chain.as_bytes(), key.key_pem.as_bytes())),
        )
        .expect("client TLS configuration"),
    )
}
