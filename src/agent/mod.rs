//! `rk3s agent`: a worker node that joins a server, and the node half of
//! `rk3s server` (its built-in agent).
//!
//! [`run`] is the standalone agent: [`join::join`] turns `--server` and
//! `--token` into kubelet credentials (k3s's join flow), then
//! [`kubelet::run`] runs the node until shutdown. The server's built-in
//! agent gets its credentials straight from the PKI and calls
//! [`kubelet::run`] itself.
//!
//! Map: `join` (CA pinning, node password, kubelet certificates),
//! `node_runner` (what one node runs: the tunnel, the kubelet API served on
//! it, the kubelet), `kubelet` (registration, lease, pod sync),
//! `kubelet_api` (logs, exec, attach, port-forward for the API server),
//! `loadbalancer` (the standalone agent's local proxy to a live API server),
//! `run_dir` (the paths under `--run-dir`: containerd's state, FIFOs),
//! `servers` (learning every API server; one tunnel to each),
//! `runtime` (the containerd client), `containerd_supervisor` (starting and
//! watching the agent's own containerd), `image_registry` (pulls from OCI
//! registries), `network` (pod network on one node).

pub mod containerd_supervisor;
pub mod join;
pub mod kubelet;
pub mod kubelet_api;
pub mod loadbalancer;
pub mod metrics;
pub mod network;
pub mod image_registry;
pub mod node_runner;
pub mod run_dir;
pub mod runtime;
pub mod servers;

use tokio_util::sync::CancellationToken;

use crate::config::AgentConfig;
pub use crate::pki::join::NodeCredentials;

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Join(#[from] join::JoinError),
    #[error(transparent)]
    Kubelet(#[from] kubelet::KubeletError),
    #[error(transparent)]
    LoadBalancer(#[from] loadbalancer::proxy::LoadBalancerError),
}

/// Runs the standalone agent until `shutdown` is cancelled.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    tracing::debug!(config = ?config, "resolved configuration");
    let creds = match join::join(&config, &shutdown).await {
        Ok(c) => c,
        // A signal while still waiting for the server is a clean stop.
        Err(e @ join::JoinError::Cancelled { .. }) if shutdown.is_cancelled() => {
            tracing::info!("{e}");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let upstream = loadbalancer::start(&config, &creds, &shutdown).await?;
    let opts = kubelet::KubeletOptions::for_agent(&config, creds);
    node_runner::run_with(opts, upstream, shutdown).await
}
