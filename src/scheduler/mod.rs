//! The scheduler: binds pending pods to nodes through the `binding`
//! subresource, as kube-scheduler does.
//!
//! Not implemented yet (issue 6): [`run`] waits for shutdown.

use crate::controllers::Context;

/// Runs the scheduler until `ctx.shutdown`.
pub async fn run(ctx: Context) {
    ctx.shutdown.cancelled().await;
}
