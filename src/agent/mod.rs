//! `rk3s agent`: a worker node that joins a server.
//!
//! Status: **not implemented yet.** Planned: fetch the cluster CA with the
//! token (k3s join flow), obtain kubelet credentials, then run the node
//! agent (kubelet-equivalent over containerd's CRI, pod networking, service
//! proxy) until shutdown. Today [`run`] returns [`AgentError::NotImplemented`]
//! so nobody mistakes a silent process for a working node.

pub mod network;
pub mod runtime;

use tokio_util::sync::CancellationToken;

use crate::config::AgentConfig;

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("the node agent is not implemented yet: `rk3s agent` cannot join {server} (planned: join flow, kubelet, pod networking)")]
    NotImplemented { server: String },
}

/// Runs the agent until `shutdown` is cancelled.
pub async fn run(config: AgentConfig, _shutdown: CancellationToken) -> Result<(), AgentError> {
    tracing::debug!(config = ?config, "resolved configuration");
    Err(AgentError::NotImplemented {
        server: config.server.to_string(),
    })
}
