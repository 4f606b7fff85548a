//! Wiring of the k3s conveniences into `rk3s server` (issue 23): the
//! manifests deployer (`crate::addons`), scheduled datastore snapshots
//! (`snapshot`) and secrets encryption (`encryption`). Each is started
//! here so `server::run` gains one line per part.
//!
//! With several servers on one etcd (`--datastore-endpoint`), as k3s does:
//! - the manifests deployer runs on **every** server, each on its own
//!   `<data-dir>/server/manifests`, not under a leader Lease. k3s starts its
//!   deploy controller outside its leader-elected `k3s` Lease (its maintainers
//!   kept it so on purpose: a file dropped on any server is deployed, and the
//!   servers need not agree on who reads which directory). Servers do not
//!   fight: each applies a file at its start and again only when that file
//!   changes on its own disk, with the same field manager, so identical files
//!   converge and settle (tests/addons_deploy.rs checks it on two servers);
//! - scheduled snapshots run on the embedded SQLite only. They copy
//!   `state.db`; with etcd there is no such file and, as k3s with an external
//!   datastore, backups are the datastore's own (`etcdctl snapshot save`), so
//!   no schedule starts on any server and `--cluster-reset-restore-path` is
//!   refused.

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

/// Starts the key-file watcher (re-encryption) and, on SQLite, the snapshot
/// schedule ([`snapshot_schedule`]).
pub fn start_background(
    encrypting: Arc<super::encryption::transformer::EncryptingStore>,
    config: &crate::config::ServerConfig,
    shutdown: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    use super::{encryption, snapshot};
    let dir = encryption::cred_dir(&config.data_dir);
    let mut tasks = vec![tokio::spawn(encryption::run(encrypting, dir, shutdown.clone()))];
    match snapshot_schedule(config) {
        Some(opts) => tasks.push(tokio::spawn(snapshot::schedule::run(opts, shutdown.clone()))),
        None if config.habits.snapshot_schedule_cron.is_some() => tracing::info!(
            "scheduled snapshots are off: they copy the embedded SQLite datastore and this server uses etcd; \
             back etcd up with its own tooling (etcdctl snapshot save)"
        ),
        None => {}
    }
    tasks
}

/// The snapshot schedule this server runs: `None` on etcd, whose data is not
/// ours to copy (see the module docs), or when `--snapshot-schedule-cron ""`.
pub fn snapshot_schedule(config: &crate::config::ServerConfig) -> Option<super::snapshot::schedule::ScheduleOptions> {
    use super::snapshot;
    if config.datastore != crate::config::Datastore::Sqlite {
        return None;
    }
    let cron = config.habits.snapshot_schedule_cron.clone()?;
    Some(snapshot::schedule::ScheduleOptions {
        cron: Some(cron),
        retention: config.habits.snapshot_retention,
        paths: snapshot::Paths::new(&config.data_dir, config.habits.snapshot_dir.as_deref()),
        node_name: config.node.node_name.clone(),
    })
}

/// `rk3s server --cluster-reset --cluster-reset-restore-path FILE`: restores
/// the snapshot (a path, or a name in `--snapshot-dir`) and returns; the
/// server then exits, as k3s does, and is started again without the flags.
pub fn cluster_reset_restore(config: &crate::config::ServerConfig, which: &Path) -> Result<(), super::ServerError> {
    use super::snapshot;
    if let crate::config::Datastore::Etcd(etcd) = &config.datastore {
        return Err(super::ServerError::Habits(format!(
            "--cluster-reset-restore-path restores the embedded SQLite datastore, but this server uses etcd ({}): \
             restore etcd with its own tooling (etcdutl snapshot restore), then start the servers",
            etcd.urls.join(",")
        )));
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ServerConfig, Settings, Source};

    fn config(pairs: &[(&str, &str)]) -> ServerConfig {
        let mut s = Settings::new();
        s.set("node-name", vec!["pi-1".into()], Source::Flag);
        for (k, v) in pairs {
            s.set(k, vec![v.to_string()], Source::Flag);
        }
        ServerConfig::resolve(&s).expect("valid config")
    }

    #[test]
    fn snapshots_are_scheduled_on_sqlite_only() {
        let sqlite = snapshot_schedule(&config(&[])).expect("a schedule on SQLite");
        assert_eq!(sqlite.cron.as_deref(), Some("0 */12 * * *"));
        assert_eq!(sqlite.node_name, "pi-1");
        assert!(snapshot_schedule(&config(&[("snapshot-schedule-cron", "")])).is_none());
        let etcd = config(&[("datastore-endpoint", "http://10.0.0.1:2379")]);
        assert!(etcd.habits.snapshot_schedule_cron.is_some(), "the flag keeps its default");
        assert!(snapshot_schedule(&etcd).is_none(), "nothing of ours to copy on etcd");
    }

    #[test]
    fn cluster_reset_restore_is_refused_on_etcd() {
        let etcd = config(&[("datastore-endpoint", "http://10.0.0.1:2379")]);
        let err = cluster_reset_restore(&etcd, Path::new("whatever")).unwrap_err().to_string();
        assert!(err.contains("etcd") && err.contains("http://10.0.0.1:2379"), "{err}");
    }
}
