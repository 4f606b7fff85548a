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
        })
    }
}
