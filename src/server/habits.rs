//! Wiring of the k3s conveniences into `rk3s server` (issue 23): the
//! manifests deployer (`crate::addons`), scheduled datastore snapshots
//! (`snapshot`) and secrets encryption (`encryption`). Each is started
//! here so `server::run` gains one line per part.

use std::path::Path;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

/// Starts the manifests deployer on `<data-dir>/server/manifests` with the
/// supervisor's client certificate.
pub fn start_deployer(
    pki: Arc<crate::pki::Pki>,
    url: &str,
    data_dir: &Path,
    shutdown: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let (url, shutdown) = (url.to_string(), shutdown.clone());
    let dir = data_dir.join("server/manifests");
    tokio::spawn(async move {
        use crate::pki::ClientRole;
        match crate::controllers::in_process_client(&pki, ClientRole::Supervisor, &url).await {
            Ok(client) => crate::addons::Deployer::new(client, &dir).run(shutdown).await,
            Err(e) => tracing::error!("the manifests deployer did not start: {e}"),
        }
    })
}

/// Wraps the opened store in the secrets-encryption decorator (always: with
/// no key file it passes values through, and `rk3s secrets-encrypt enable`
/// can turn it on live).
pub fn wrap_store(
    store: Arc<dyn crate::store::Store>,
    config: &crate::config::ServerConfig,
) -> Result<Arc<super::encryption::transformer::EncryptingStore>, super::ServerError> {
    use super::encryption;
    let dir = encryption::cred_dir(&config.data_dir);
    let keys = encryption::startup_keys(&dir, config.habits.secrets_encryption)
        .map_err(|e| super::ServerError::Habits(e.to_string()))?;
    Ok(Arc::new(encryption::transformer::EncryptingStore::new(
        store,
        encryption::SECRETS_PREFIX,
        keys,
    )))
}

/// Starts the key-file watcher (re-encryption) and the snapshot schedule.
pub fn start_background(
    encrypting: Arc<super::encryption::transformer::EncryptingStore>,
    config: &crate::config::ServerConfig,
    shutdown: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    use super::{encryption, snapshot};
    let dir = encryption::cred_dir(&config.data_dir);
    let opts = snapshot::schedule::ScheduleOptions {
        cron: config.habits.snapshot_schedule_cron.clone(),
        retention: config.habits.snapshot_retention,
        paths: snapshot::Paths::new(&config.data_dir, config.habits.snapshot_dir.as_deref()),
        node_name: config.node.node_name.clone(),
    };
    vec![
        tokio::spawn(encryption::run(encrypting, dir, shutdown.clone())),
        tokio::spawn(snapshot::schedule::run(opts, shutdown.clone())),
    ]
}

/// `rk3s server --cluster-reset --cluster-reset-restore-path FILE`: restores
/// the snapshot (a path, or a name in `--snapshot-dir`) and returns; the
/// server then exits, as k3s does, and is started again without the flags.
pub fn cluster_reset_restore(config: &crate::config::ServerConfig, which: &Path) -> Result<(), super::ServerError> {
    use super::snapshot;
    let paths = snapshot::Paths::new(&config.data_dir, config.habits.snapshot_dir.as_deref());
    let err = |e: snapshot::SnapshotError| super::ServerError::Habits(e.to_string());
    let file = snapshot::find(&paths, &which.to_string_lossy()).map_err(err)?;
    let revision = snapshot::restore(&paths, &file).map_err(err)?;
    tracing::info!(
        snapshot = %file.display(),
        revision,
        "datastore restored; start the server again without --cluster-reset"
    );
    Ok(())
}
