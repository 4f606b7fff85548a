//! The server flags of the k3s conveniences (issue 23): scheduled datastore
//! snapshots and secrets encryption. Kept in one struct so `ServerConfig`
//! gains one field.

use std::path::PathBuf;

use super::values::parse_path;
use super::{ConfigError, Resolver};

/// k3s's `--etcd-snapshot-schedule-cron` default: twice a day.
pub const DEFAULT_SNAPSHOT_SCHEDULE_CRON: &str = "0 */12 * * *";
/// k3s's `--etcd-snapshot-retention` default.
pub const DEFAULT_SNAPSHOT_RETENTION: &str = "5";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HabitsConfig {
    /// `--snapshot-schedule-cron`; `None` when set to "" (scheduled snapshots off).
    pub snapshot_schedule_cron: Option<String>,
    /// `--snapshot-retention`: scheduled snapshots kept.
    pub snapshot_retention: usize,
    /// `--snapshot-dir` (None: `<data-dir>/server/db/snapshots`).
    pub snapshot_dir: Option<PathBuf>,
    /// `--secrets-encryption`.
    pub secrets_encryption: bool,
    /// `--cluster-reset --cluster-reset-restore-path FILE`: restore this
    /// snapshot, then exit (k3s's restore path).
    pub cluster_reset_restore_path: Option<PathBuf>,
}

/// `--cluster-reset` only makes sense here with a snapshot to restore (the
/// SQLite datastore has no members to reset), and the path only with it.
fn cluster_reset(r: &Resolver<'_>) -> Result<Option<PathBuf>, ConfigError> {
    let reset = r.flag("cluster-reset")?;
    let path = r.one("cluster-reset-restore-path", None, parse_path)?;
    match (reset, path) {
        (true, Some(p)) => Ok(Some(p)),
        (false, None) => Ok(None),
        (true, None) => Err(ConfigError::Inconsistent(
            "--cluster-reset needs --cluster-reset-restore-path: the SQLite datastore has no members to reset, \
             only a snapshot to restore"
                .into(),
        )),
        (false, Some(_)) => Err(ConfigError::Inconsistent(
            "--cluster-reset-restore-path is only read with --cluster-reset".into(),
        )),
    }
}

impl HabitsConfig {
    pub(super) fn resolve(r: &Resolver<'_>) -> Result<Self, ConfigError> {
        let cron = r.required("snapshot-schedule-cron", DEFAULT_SNAPSHOT_SCHEDULE_CRON, |s| {
            if s.is_empty() {
                return Ok(None);
            }
            // The full parse is the CronJob parser's, at server start (config sits
            // below the controllers); here the shape: five fields or a descriptor.
            if s.starts_with('@') || s.split_whitespace().count() == 5 {
                Ok(Some(s.to_string()))
            } else {
                Err("expected five cron fields (minute hour day-of-month month day-of-week) or a descriptor such as @daily".into())
            }
        })?;
        Ok(HabitsConfig {
            snapshot_schedule_cron: cron,
            snapshot_retention: r.required("snapshot-retention", DEFAULT_SNAPSHOT_RETENTION, |s| {
                s.parse::<usize>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| "expected a whole number of snapshots, at least 1".to_string())
            })?,
            snapshot_dir: r.one("snapshot-dir", None, parse_path)?,
            secrets_encryption: r.flag("secrets-encryption")?,
            cluster_reset_restore_path: cluster_reset(r)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{ServerConfig, Settings, Source};

    fn resolve(pairs: &[(&str, &str)]) -> Result<ServerConfig, String> {
        let mut s = Settings::new();
        s.set("node-name", vec!["n1".into()], Source::Flag);
        for (k, v) in pairs {
            s.set(k, vec![v.to_string()], Source::Flag);
        }
        ServerConfig::resolve(&s).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_k3s_and_bad_values_name_the_flag() {
        let c = resolve(&[]).unwrap().habits;
        assert_eq!(c.snapshot_schedule_cron.as_deref(), Some("0 */12 * * *"));
        assert_eq!(c.snapshot_retention, 5);
        assert!(c.snapshot_dir.is_none() && !c.secrets_encryption && c.cluster_reset_restore_path.is_none());
        assert_eq!(resolve(&[("snapshot-schedule-cron", "")]).unwrap().habits.snapshot_schedule_cron, None);
        assert!(resolve(&[("snapshot-schedule-cron", "every day")]).unwrap_err().contains("snapshot-schedule-cron"));
        assert!(resolve(&[("snapshot-retention", "0")]).unwrap_err().contains("at least 1"));
        assert!(resolve(&[("cluster-reset", "true")]).unwrap_err().contains("--cluster-reset-restore-path"));
        let c = resolve(&[("cluster-reset", "true"), ("cluster-reset-restore-path", "/b/s.tar.gz")]).unwrap();
        assert_eq!(c.habits.cluster_reset_restore_path.unwrap().to_str(), Some("/b/s.tar.gz"));
    }
}
