//! `rk3s server`: the control plane of a cluster.
//!
//! Status: **the API server is not wired in yet.** It lands with issue 3
//! (`apiserver` and `store`, written separately); the PKI, join endpoints
//! and controllers come after it. Today [`run`] only prepares the data
//! directory layout, logs the resolved configuration, tells systemd it is
//! ready and waits for shutdown. It serves nothing.
//!
//! Data directory layout (same shape as k3s's `/var/lib/rancher/k3s`):
//! - `<data-dir>/server/db`: the datastore (SQLite)
//! - `<data-dir>/server/tls`: the cluster CAs and serving certificates (0700)
//! - `<data-dir>/agent`: the embedded agent's state

use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use crate::config::ServerConfig;
use crate::process;

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("failed to create directory {path}: {source}")]
    CreateDir {
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
    tracing::warn!("the API server is not wired in yet (issue 3): this server serves nothing");
    process::notify_ready();
    shutdown.cancelled().await;
    tracing::info!("rk3s server stopped");
    Ok(())
}

/// Creates the data directory layout; existing directories are kept as they are.
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
