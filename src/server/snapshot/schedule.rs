//! Scheduled snapshots: `--snapshot-schedule-cron` (k3s's default
//! `0 */12 * * *`, in UTC), keeping the newest `--snapshot-retention` (5)
//! scheduled snapshots of this node in `--snapshot-dir`.
//!
//! The loop sleeps until the schedule's next time, takes the snapshot on a
//! blocking thread (the server keeps serving: `VACUUM INTO` reads one
//! consistent state beside the writers), then prunes. A failure is logged
//! and the next time is tried; nothing is retried in a tight loop.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use tokio_util::sync::CancellationToken;

use super::{prune, save, Paths, SCHEDULED_NAME};
use crate::controllers::workloads::cron::{self, Schedule};

/// What the server passes from its configuration.
#[derive(Debug, Clone)]
pub struct ScheduleOptions {
    /// `None`: scheduled snapshots are off (`--snapshot-schedule-cron ""`).
    pub cron: Option<String>,
    pub retention: usize,
    pub paths: Paths,
    pub node_name: String,
}

/// Parses a cron expression as `--snapshot-schedule-cron` takes it.
pub fn parse(expr: &str) -> Result<Schedule, String> {
    Schedule::parse(expr).map_err(|e| e.to_string())
}

/// Runs until `shutdown`.
pub async fn run(opts: ScheduleOptions, shutdown: CancellationToken) {
    let Some(expr) = opts.cron.clone() else { return };
    let schedule = match parse(&expr) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("scheduled snapshots are off: {e}");
            return;
        }
    };
    let tz = cron::zone(None).expect("UTC exists");
    tracing::info!(schedule = %expr, retention = opts.retention, dir = %opts.paths.snapshot_dir.display(), "scheduled datastore snapshots");
    loop {
        let now = Timestamp::now();
        let Some(next) = schedule.next_after(now, &tz) else { return };
        let wait = Duration::from_secs(next.as_second().saturating_sub(now.as_second()).max(1) as u64);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let o = opts.clone();
        let result = tokio::task::spawn_blocking(move || {
            let info = save(&o.paths, SCHEDULED_NAME, &o.node_name)?;
            let pruned = prune(&o.paths, &o.node_name, o.retention)?;
            Ok::<_, super::SnapshotError>((info, pruned))
        })
        .await;
        match result {
            Ok(Ok((info, pruned))) => {
                tracing::info!(snapshot = %info.path.display(), size = info.size, pruned = ?pruned, "saved scheduled snapshot")
            }
            Ok(Err(e)) => tracing::error!("failed to take a scheduled snapshot: {e}"),
            Err(e) => tracing::error!("the scheduled snapshot task failed: {e}"),
        }
    }
}
