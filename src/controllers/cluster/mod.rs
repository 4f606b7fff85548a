//! The Service→EndpointSlice/Endpoints, namespace, garbage-collector, node-lifecycle, pod-CIDR, ServiceAccount and root-CA controllers.
//!
//! Not implemented yet (issue 6): [`run`] waits for shutdown.

pub mod events;

use super::Context;

/// Runs these controllers until `ctx.shutdown`.
pub async fn run(ctx: Context) {
    ctx.shutdown.cancelled().await;
}
