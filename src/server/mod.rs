//! `rk3s server`: the control plane of one node.
//!
//! [`run`] creates the data-dir layout, opens the datastore ([`datastore`]:
//! SQLite under `<data-dir>/server/db/` with Leases and Events kept in memory,
//! or an external etcd with `--datastore-endpoint`), serves the Kubernetes API on
//! `--bind-address:--https-listen-port`, writes the admin kubeconfig to
//! `--write-kubeconfig`, reports READY to systemd, and drains on shutdown.
//!
//! The PKI under `<data-dir>/server/tls/` is created on the first start and
//! reused after; the serving certificate carries the SANs of issue 5 and the
//! admin kubeconfig holds the admin client certificate and the server CA.
//! The API's pluggable parts are put together in [`assemble`].
//!
//! Several servers may share one etcd (issue 21): the controllers and the
//! scheduler run under leader election ([`election`]), the cluster's CAs and
//! keys come from the datastore, sealed with the token ([`bootstrap`]), and
//! the Service allocators use CAS in the datastore (`apiserver::ipalloc`).
//!
//! Partial: authentication and RBAC (issue 5) are not enforced yet; the
//! controllers, scheduler and built-in agent come with issues 6 and 7
//! (`--disable-agent` changes nothing yet).

pub mod assemble;
pub mod bootstrap;
pub mod datastore;
pub mod election;
pub mod encryption;
pub mod habits;
pub mod join;
pub mod metrics;
pub mod migrate;
pub mod snapshot;

use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use std::sync::Arc;
use std::time::Duration;

use crate::apiserver::{builtin, ApiServer};
use crate::config::ServerConfig;
use crate::process;

/// Keys that change all the time on a healthy cluster and matter little
/// after a restart: kept in memory by the store so an idle cluster barely
/// writes to its SD card.
pub const VOLATILE_PREFIXES: &[&str] =
    &["/registry/leases.coordination.k8s.io/", "/registry/events/"];

/// How long in-flight requests and watches get to finish after a signal.
const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// How long controllers and the built-in agent get after the API stopped.
const CONTROL_PLANE_GRACE: Duration = Duration::from_secs(5);

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("failed to create directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to open the store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("failed to start the API server: {0}")]
    Api(#[from] crate::apiserver::ApiError),
    #[error("failed to set up the PKI: {0}")]
    Pki(#[from] crate::pki::PkiError),
    #[error("{0}")]
    Habits(String),
    #[error("{0}")]
    Bootstrap(#[from] bootstrap::BootstrapError),
    #[error("failed to write the kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Runs the server until `shutdown` is cancelled.
pub async fn run(config: ServerConfig, shutdown: CancellationToken) -> Result<(), ServerError> {
    create_layout(&config.data_dir)?;
    if let Some(path) = &config.habits.cluster_reset_restore_path {
        return habits::cluster_reset_restore(&config, path);
    }
    tracing::info!(
        data_dir = %config.data_dir.display(),
        listen = %format!("{}:{}", config.bind_address, config.https_listen_port),
        cluster_cidr = %config.cluster_cidr,
        service_cidr = %config.service_cidr,
        cluster_dns = %config.cluster_dns,
        node_name = %config.node.node_name,
        "starting rk3s server"
    );
    tracing::debug!(config = ?config, "resolved configuration");
    let (data_dir, chosen) = (config.data_dir.clone(), config.datastore.clone());
    let node = config.node.node_name.clone();
    let store = tokio::task::spawn_blocking(move || datastore::open(&data_dir, &chosen, &node))
        .await
        .expect("the store opener does not panic")?;
    let registry = Arc::new(builtin::builtin_registry());
    // Several servers on one etcd share the cluster's CAs and keys through
    // the datastore, sealed with the token (`bootstrap`).
    let shared_secret = match &config.datastore {
        crate::config::Datastore::Etcd(_) => Some(token_secret(&config)?),
        crate::config::Datastore::Sqlite => None,
    };
    let server_dir = config.data_dir.join("server");
    if let Some(secret) = &shared_secret {
        if let Some(first) = &config.join_server {
            tracing::info!(server = %first, "joining the cluster through the shared datastore");
        }
        bootstrap::download(store.as_ref(), secret, &server_dir)?;
    }
    let pki = Arc::new(load_pki(&config)?);
    load_server_token(&config, &pki)?;
    let encrypting = habits::wrap_store(store.clone(), &config)?;
    if let Some(secret) = &shared_secret {
        bootstrap::publish(store.as_ref(), secret, &server_dir)?;
    }
    let parts = assemble::Parts {
        store: encrypting.clone(),
        registry: registry.clone(),
        pki: pki.clone(),
        settings: assemble::ClusterSettings::from_config(&config),
        server_dir: config.data_dir.join("server"),
        tunnels: Arc::new(crate::tunnel::TunnelRegistry::new(Default::default())),
    };
    let bind = std::net::SocketAddr::new(config.bind_address, config.https_listen_port);
    let opts = assemble::serve_options(bind, DRAIN_GRACE, &parts)?;
    let components = opts.components.clone();
    // The API stops after the elected components released their Leases
    // (through this API), so a standby server leads at once.
    let api_stop = CancellationToken::new();
    let server = ApiServer::bind(opts, parts.store.clone(), registry, api_stop.clone()).await?;
    let port = server
        .local_addr()
        .map(|a| a.port())
        .unwrap_or(config.https_listen_port);
    write_admin_kubeconfig(
        &pki,
        &config.write_kubeconfig,
        config.write_kubeconfig_mode,
        port,
    )?;
    tracing::info!(kubeconfig = %config.write_kubeconfig.display(), port, "API server serving");
    let url = format!("https://127.0.0.1:{port}");
    let api = tokio::spawn(server.run());
    let storage = crate::controllers::storage::StorageOptions {
        local_storage: !config.disable.contains(&crate::config::Component::LocalStorage),
        local_storage_path: config.default_local_storage_path.clone(),
    };
    // On a shared datastore every server runs the controllers and the
    // scheduler under leader election: one leads, the others stand by
    // (`election`). SQLite has one server, which runs them unelected.
    let election = match config.datastore {
        crate::config::Datastore::Etcd(_) => Some(election::identity(&config.node.node_name)),
        crate::config::Datastore::Sqlite => None,
    };
    let elected = start_control_plane(&pki, &url, &parts.settings, &config.disable, storage, &components, election.as_deref(), &shutdown).await;
    tokio::spawn(stop_api_after_release(shutdown.clone(), elected, api_stop));
    let mut control_plane = Vec::new();
    // This server in the `kubernetes` endpoints for as long as it runs.
    let me = crate::apiserver::ipalloc::apiserver_leases::ServerEndpoint { ip: parts.settings.advertise_address, port };
    control_plane.push(tokio::spawn(crate::apiserver::ipalloc::apiserver_leases::run(parts.store.clone(), me, shutdown.clone())));
    control_plane.push(start_ingress_class(pki.clone(), &url, !config.disable.contains(&crate::config::Component::Ingress), &shutdown));
    control_plane.extend(habits::start_background(encrypting, &config, &shutdown));
    control_plane.push(habits::start_deployer(pki.clone(), &url, &config.data_dir, &shutdown));
    if config.disable_agent {
        tracing::info!("--disable-agent: this server runs no pods");
    } else {
        control_plane.push(start_builtin_agent(&config, &pki, &url, &parts.settings, &shutdown)?);
    }
    process::notify_ready();
    let _ = api.await;
    // Controllers and the kubelet stop on the same signal; bound the wait
    // (containers keep running either way: fail static).
    let all = futures::future::join_all(control_plane.iter_mut());
    if tokio::time::timeout(CONTROL_PLANE_GRACE, all).await.is_err() {
        tracing::warn!("controllers or the built-in agent did not stop within {CONTROL_PLANE_GRACE:?}; stopping them");
        for task in &control_plane {
            task.abort();
        }
    }
    tracing::info!("rk3s server stopped");
    Ok(())
}

/// How long the elected components get, after a signal, to stop and release
/// their Leases before the API stops anyway (their workload grace is 5 s).
const RELEASE_GRACE: Duration = Duration::from_secs(8);

/// On `shutdown`, waits (bounded) for the elections to stop their workloads
/// and release their Leases, then stops the API.
async fn stop_api_after_release(
    shutdown: CancellationToken,
    elected: Vec<tokio::task::JoinHandle<()>>,
    api_stop: CancellationToken,
) {
    shutdown.cancelled().await;
    if tokio::time::timeout(RELEASE_GRACE, futures::future::join_all(elected)).await.is_err() {
        tracing::warn!("the leader elections did not finish within {RELEASE_GRACE:?}; stopping the API");
    }
    api_stop.cancel();
}

/// Starts the controllers and the scheduler as API clients of the server at
/// `url`, each with its own control-plane certificate. A client that cannot
/// be built is logged and that part is not started (the API keeps serving).
/// With an `identity`, each runs only while this server holds its leader
/// Lease ([`election`]); without, each runs from the start.
async fn start_control_plane(
    pki: &Arc<crate::pki::Pki>,
    url: &str,
    settings: &assemble::ClusterSettings,
    disabled: &std::collections::BTreeSet<crate::config::Component>,
    storage: crate::controllers::storage::StorageOptions,
    components: &crate::apiserver::componentstatus::Components,
    identity: Option<&str>,
    shutdown: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    use crate::apiserver::componentstatus::{CONTROLLER_MANAGER, SCHEDULER};
    use crate::config::Component;
    use crate::controllers::{in_process_client, Context, ControllerOptions};
    use crate::pki::ClientRole;
    let mut options = ControllerOptions::new(settings.clone());
    options.servicelb = !disabled.contains(&Component::ServiceLb);
    options.ingress_holds_web_ports = !disabled.contains(&Component::Ingress);
    options.storage = storage;
    options.root_ca_pem = String::from_utf8_lossy(pki.ca_bundle_pem()).into_owned();
    let options = Arc::new(options);
    let mut tasks = Vec::new();
    match in_process_client(pki, ClientRole::ControllerManager, url).await {
        Ok(client) => {
            let alive = components.register(CONTROLLER_MANAGER);
            let pki = pki.clone();
            let controllers = client.clone();
            let start = move |token: CancellationToken| {
                let ctx = Context { client: controllers.clone(), options: options.clone(), shutdown: token };
                let signer: Arc<dyn crate::controllers::cluster::csrsigning::CsrSigner> = pki.clone();
                let csr = tokio::spawn(crate::controllers::cluster::csrsigning::run(ctx.clone(), signer));
                tokio::spawn(async move {
                    crate::controllers::run(ctx).await;
                    let _ = csr.await;
                })
            };
            tasks.push(tokio::spawn(run_elected(election::CONTROLLER_MANAGER_LEASE, identity, client, start, alive, shutdown.clone())));
        }
        Err(e) => tracing::error!("controllers not started: {e}"),
    }
    match in_process_client(pki, ClientRole::Scheduler, url).await {
        Ok(client) => {
            let alive = components.register(SCHEDULER);
            let scheduler = client.clone();
            let start = move |token: CancellationToken| tokio::spawn(crate::scheduler::run(scheduler.clone(), token));
            tasks.push(tokio::spawn(run_elected(election::SCHEDULER_LEASE, identity, client, start, alive, shutdown.clone())));
        }
        Err(e) => tracing::error!("scheduler not started: {e}"),
    }
    tasks
}

/// Runs one component's workload: under the Lease `lease` when this server
/// has an election `identity`, else at once ([`election::run_alone`]).
/// `alive` marks the component running (for `kubectl get cs`) while this
/// server takes part, leading or standing by, as kube's health check says.
fn run_elected<F>(
    lease: &'static str,
    identity: Option<&str>,
    client: kube::Client,
    start: F,
    alive: impl Send + 'static,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + 'static
where
    F: FnMut(CancellationToken) -> tokio::task::JoinHandle<()> + Send + 'static,
{
    let identity = identity.map(str::to_owned);
    async move {
        let _alive = alive;
        match identity {
            Some(identity) => {
                let cfg = election::ElectionConfig::new(lease, &identity);
                let leases = election::KubeLeases::new(client, &cfg.namespace, &cfg.name);
                election::run(cfg, leases, start, shutdown).await
            }
            None => election::run_alone(lease, start, shutdown).await,
        }
    }
}

/// Creates the default IngressClass `rk3s` (or, with `--disable traefik`,
/// deletes it), retrying until the API answers; its presence is what turns
/// every node's ingress on.
fn start_ingress_class(
    pki: Arc<crate::pki::Pki>,
    url: &str,
    enabled: bool,
    shutdown: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let (url, shutdown) = (url.to_string(), shutdown.clone());
    tokio::spawn(async move {
        use crate::pki::ClientRole;
        for _ in 0..30 {
            let result = match crate::controllers::in_process_client(&pki, ClientRole::Supervisor, &url).await {
                Ok(client) => crate::ingress::class::ensure(client, enabled).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match result {
                Ok(()) => return,
                Err(e) => tracing::warn!("{e} (retrying)"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
            }
        }
    })
}

/// The server's own node: kubelet credentials straight from the PKI (no
/// join), then the kubelet and its tunnel, as `rk3s agent` runs them. A
/// kubelet failure is logged; the control plane keeps serving.
fn start_builtin_agent(
    config: &ServerConfig,
    pki: &crate::pki::Pki,
    url: &str,
    settings: &assemble::ClusterSettings,
    shutdown: &CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, ServerError> {
    let agent_dir = config.data_dir.join("agent");
    let node_ips: Vec<std::net::IpAddr> = config.node.node_ip.into_iter().collect();
    let creds = join::builtin_node_credentials(pki, &config.node.node_name, &node_ips, &agent_dir, url)?;
    let mut opts = crate::agent::kubelet::KubeletOptions::new(config.node.clone(), creds, agent_dir);
    opts.cluster_dns = settings.cluster_dns;
    opts.cluster_domain = settings.cluster_domain.clone();
    opts.flannel_backend = config.flannel_backend;
    opts.node_services = true;
    if let ipnet::IpNet::V4(cidr) = settings.cluster_cidr {
        opts.cluster_cidr = cidr;
    }
    // Tunnels to every server; to this one through the local URL.
    let port = url.rsplit(':').next().unwrap_or("6443");
    let upstream = crate::agent::servers::Upstream {
        alias: Some((format!("{}", std::net::SocketAddr::new(settings.advertise_address, port.parse().unwrap_or(6443))), format!("127.0.0.1:{port}"))),
        ..Default::default()
    };
    let shutdown = shutdown.clone();
    Ok(tokio::spawn(async move {
        if let Err(e) = crate::agent::node_runner::run_with(opts, upstream, shutdown).await {
            tracing::error!("the built-in agent stopped: {e}");
        }
    }))
}

/// Loads (or on the first start creates) the PKI under `<data-dir>/server/tls`.
pub fn load_pki(config: &ServerConfig) -> Result<crate::pki::Pki, ServerError> {
    let mut opts = crate::pki::PkiOptions::new(config.node.node_name.clone());
    opts.node_ips = config
        .node
        .node_ip
        .into_iter()
        .chain(config.advertise_address)
        .collect();
    opts.tls_sans = config.tls_san.clone();
    opts.service_cidrs = vec![config.service_cidr];
    opts.cluster_domain = config.cluster_domain.clone();
    Ok(crate::pki::Pki::load_or_create(
        &config.data_dir.join("server/tls"),
        &opts,
    )?)
}

/// Decides the join token (`--token`, `--token-file`, the stored one, or a new one) and writes
/// it to `<data-dir>/server/token` and `node-token` (0600), where `server::join` reads it.
pub fn load_server_token(
    config: &ServerConfig,
    pki: &crate::pki::Pki,
) -> Result<crate::pki::JoinToken, ServerError> {
    let given = match (&config.token, &config.token_file) {
        (Some(token), _) => Some(token.expose().to_string()),
        (None, Some(path)) => {
            Some(
                std::fs::read_to_string(path).map_err(|e| crate::pki::PkiError::Io {
                    action: "read the token file",
                    path: path.clone(),
                    source: e,
                })?,
            )
        }
        (None, None) => None,
    };
    let server_dir = config.data_dir.join("server");
    let token = crate::pki::load_or_create_server_token(
        &server_dir,
        given.as_deref(),
        pki.ca_bundle_pem(),
    )?;
    tracing::info!(
        path = %server_dir.join("token").display(),
        "join token written: agents join with `--token` set to this file's contents"
    );
    Ok(token)
}

/// The token's secret (the bootstrap passphrase): from `--token`/`--token-file`,
/// else the stored token, else a new one, stored so `load_server_token` keeps it.
fn token_secret(config: &ServerConfig) -> Result<String, ServerError> {
    let io = |action: &'static str, path: &Path, e: std::io::Error| crate::pki::PkiError::Io {
        action,
        path: path.to_path_buf(),
        source: e,
    };
    let text = match (&config.token, &config.token_file) {
        (Some(token), _) => token.expose().to_string(),
        (None, Some(path)) => std::fs::read_to_string(path).map_err(|e| io("read the token file", path, e))?,
        (None, None) => {
            let path = config.data_dir.join("server/token");
            match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let secret = crate::pki::token::random_secret();
                    crate::pki::files::write_atomic(&path, format!("{secret}\n").as_bytes(), 0o600)?;
                    secret
                }
                Err(e) => return Err(io("read the token", &path, e).into()),
            }
        }
    };
    Ok(crate::pki::JoinToken::parse(&text)?.password)
}

/// Writes the admin kubeconfig (k3s's `k3s.yaml`) for
/// `https://127.0.0.1:<port>`: the server CA and the admin client certificate,
/// atomically, with `--write-kubeconfig-mode`.
pub fn write_admin_kubeconfig(
    pki: &crate::pki::Pki,
    path: &Path,
    mode: u32,
    port: u16,
) -> Result<(), ServerError> {
    let admin = pki.admin();
    crate::pki::write_admin_kubeconfig(
        path,
        &format!("https://127.0.0.1:{port}"),
        pki.ca_bundle_pem(),
        admin.cert_pem.as_bytes(),
        admin.key_pem.as_bytes(),
        mode,
    )?;
    Ok(())
}

pub fn create_layout(data_dir: &Path) -> Result<(), ServerError> {
    use std::os::unix::fs::DirBuilderExt;
    for (sub, mode) in [
        ("server/db", 0o700),
        ("server/tls", 0o700),
        ("server/manifests", 0o700),
        ("agent", 0o755),
    ] {
        let path = data_dir.join(sub);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(&path)
            .map_err(|source| ServerError::CreateDir { path, source })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn layout_is_created_with_private_tls_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        create_layout(dir.path()).unwrap();
        create_layout(dir.path()).unwrap();
        for sub in ["server/db", "server/tls", "agent"] {
            assert!(dir.path().join(sub).is_dir(), "{sub}");
        }
        let mode = std::fs::metadata(dir.path().join("server/tls"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn layout_error_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let err = create_layout(&file).unwrap_err().to_string();
        assert!(
            err.contains("failed to create directory") && err.contains("file/server/db"),
            "{err}"
        );
    }
}
