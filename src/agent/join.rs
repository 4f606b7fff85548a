//! The agent side of k3s's join flow: fetch `/cacerts`, check its hash
//! against the token, prove the token (and the node password) to get the
//! kubelet client and serving certificates, write the kubelet kubeconfig.
//!
//! Not implemented yet (issue 5): [`join`] fails with a clear error.

use tokio_util::sync::CancellationToken;

use super::NodeCredentials;
use crate::config::AgentConfig;

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("failed to join {server}: joining is not implemented yet (issue 5)")]
    NotImplemented { server: String },
}

/// Joins the cluster at `config.server` and returns the node's credentials.
pub async fn join(
    config: &AgentConfig,
    _shutdown: &CancellationToken,
) -> Result<NodeCredentials, JoinError> {
    Err(JoinError::NotImplemented {
        server: config.server.to_string(),
    })
}
