//! The cluster housekeeping controllers (kube-controller-manager's
//! endpoints, endpointslice, namespace, garbage-collector, node-lifecycle,
//! node-ipam, serviceaccount and root-ca-cert-publisher), each in its file:
//!
//! - `endpoints`: Service → Endpoints and EndpointSlices;
//! - `gc`: ownerReferences with background, foreground and orphan deletion;
//! - `namespaces`: emptying Terminating namespaces with kube's conditions,
//!   and the `default` ServiceAccount and `kube-root-ca.crt` in every namespace;
//! - `nodes`: node lifecycle (Lease monitoring, `unreachable` taints,
//!   NoExecute evictions) and pod CIDRs;
//! - `servicelb`: k3s's ServiceLB: LoadBalancer status from eligible nodes.
//!
//! All are level-triggered: each pass reads the current state through the
//! API and writes the difference, so a restart neither loses nor repeats
//! work; errors requeue with a delay instead of spinning.

pub mod csrsigning;
pub mod endpoints;
pub mod gc;
pub mod namespaces;
pub mod nodes;
pub mod servicelb;

use super::Context;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to call the API: {0}")]
    Api(#[from] kube::Error),
    #[error("failed to encode an object: {0}")]
    Encode(String),
    #[error("failed to discover the API's resources: {0}")]
    Discovery(String),
    #[error("failed to write: another writer got there first; retrying")]
    Retry,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Runs these controllers until `ctx.shutdown`.
pub async fn run(ctx: Context) {
    tokio::join!(
        endpoints::run(ctx.clone()),
        gc::run(ctx.clone()),
        namespaces::run(ctx.clone()),
        nodes::run_lifecycle(ctx.clone()),
        nodes::run_pod_cidrs(ctx.clone()),
        servicelb::run(ctx.clone()),
    );
}
