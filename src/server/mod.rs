//! `rk3s server`: the control plane of one node.
//!
//! [`run`] creates the data-dir layout, opens the SQLite store under
//! `<data-dir>/server/db/` (Leases and Events kept in memory, see
//! `crate::store`), serves the Kubernetes API on
//! `--bind-address:--https-listen-port`, writes the admin kubeconfig to
//! `--write-kubeconfig`, reports READY to systemd, and drains on shutdown.
//!
//! Partial: the serving certificate is a self-signed one made at start and
//! the kubeconfig skips TLS verification; there is no authentication yet
//! (everyone is allowed). The PKI, x509 client certificates and RBAC land
//! with issue 5; the controllers, scheduler and built-in agent with issues 6
//! and 7 (`--disable-agent` changes nothing yet).

use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use std::sync::Arc;
use std::time::Duration;

use crate::apiserver::{builtin, ApiServer, ServeOptions};
use crate::config::ServerConfig;
use crate::process;
use crate::store::{SqliteStore, StoreOptions};

/// Keys that change all the time on a healthy cluster and matter little
/// after a restart: kept in memory by the store so an idle cluster barely
/// writes to its SD card.
pub const VOLATILE_PREFIXES: &[&str] = &["/registry/leases.coordination.k8s.io/", "/registry/events/"];

/// How long in-flight requests and watches get to finish after a signal.
const DRAIN_GRACE: Duration = Duration::from_secs(10);

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
    #[error("failed to write the kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Runs the server until `shutdown` is cancelled.
pub async fn run(config: ServerConfig, shutdown: CancellationToken) -> Result<(), ServerError> {
    create_layout(&config.data_dir)?;
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
    let store_dir = config.data_dir.join("server/db");
    let options = StoreOptions {
        volatile_prefixes: VOLATILE_PREFIXES.iter().map(|p| p.to_string()).collect(),
        ..StoreOptions::default()
    };
    let store = tokio::task::spawn_blocking(move || SqliteStore::open(&store_dir, options))
        .await
        .expect("the store opener does not panic")?;
    let registry = Arc::new(builtin::builtin_registry());
    let opts = ServeOptions {
        bind: std::net::SocketAddr::new(config.bind_address, config.https_listen_port),
        tls: None,
        grace: DRAIN_GRACE,
    };
    let server = ApiServer::bind(opts, Arc::new(store), registry, shutdown.clone()).await?;
    let port = server.local_addr().map(|a| a.port()).unwrap_or(config.https_listen_port);
    write_kubeconfig(&config.write_kubeconfig, config.write_kubeconfig_mode, port)?;
    tracing::info!(kubeconfig = %config.write_kubeconfig.display(), port, "API server serving");
    process::notify_ready();
    server.run().await;
    tracing::info!("rk3s server stopped");
    Ok(())
}

/// Writes the admin kubeconfig for `https://127.0.0.1:<port>`, atomically and
/// with the requested mode. Partial until the PKI lands: it skips TLS
/// verification, and its bearer token (random per start, so that kubectl has
/// a credential and never prompts) is not checked by the server yet.
pub fn write_kubeconfig(path: &Path, mode: u32, port: u16) -> Result<(), ServerError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |source| ServerError::Kubeconfig { path: path.to_path_buf(), source };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(fail)?;
    }
    let token = uuid::Uuid::new_v4().simple().to_string();
    let body = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: default\n  cluster:\n    server: https://127.0.0.1:{port}\n    insecure-skip-tls-verify: true\ncontexts:\n- name: default\n  context:\n    cluster: default\n    user: default\ncurrent-context: default\npreferences: {{}}\nusers:\n- name: default\n  user:\n    token: {token}\n"
    );
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(fail)?;
    f.write_all(body.as_bytes()).and_then(|_| f.sync_all()).map_err(fail)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)?;
    Ok(())
}

pub fn create_layout(data_dir: &Path) -> Result<(), ServerError> {
    use std::os::unix::fs::DirBuilderExt;
    for (sub, mode) in [
        ("server/db", 0o700),
        ("server/tls", 0o700),
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
