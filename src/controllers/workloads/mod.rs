//! The Deployment, ReplicaSet, ReplicationController, DaemonSet, StatefulSet, Job and CronJob controllers.
//!
//! Not implemented yet (issue 6): [`run`] waits for shutdown.

use super::Context;

/// Runs these controllers until `ctx.shutdown`.
pub async fn run(ctx: Context) {
    ctx.shutdown.cancelled().await;
}
