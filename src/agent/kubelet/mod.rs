//! The kubelet: registers the Node, renews its Lease, and runs the pods
//! bound to it on containerd (`super::runtime`) with the pod network
//! (`super::network`).
//!
//! Not implemented yet (issue 7): [`run`] fails with a clear error.

use std::net::IpAddr;
use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

use super::NodeCredentials;
use crate::config::{AgentConfig, NodeConfig};

/// Everything the kubelet runs from.
#[derive(Clone, Debug)]
pub struct KubeletOptions {
    pub node: NodeConfig,
    pub credentials: NodeCredentials,
    /// `<data-dir>/agent`.
    pub agent_dir: PathBuf,
    pub cluster_dns: IpAddr,
    pub cluster_domain: String,
}

impl KubeletOptions {
    /// For a standalone agent (k3s's defaults for DNS).
    pub fn for_agent(config: &AgentConfig, credentials: NodeCredentials) -> Self {
        KubeletOptions {
            node: config.node.clone(),
            credentials,
            agent_dir: config.data_dir.join("agent"),
            cluster_dns: IpAddr::from([10, 43, 0, 10]),
            cluster_domain: "cluster.local".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    #[error("failed to run node {node}: the kubelet is not implemented yet (issue 7)")]
    NotImplemented { node: String },
}

/// Runs the kubelet until `shutdown`.
pub async fn run(opts: KubeletOptions, _shutdown: CancellationToken) -> Result<(), KubeletError> {
    Err(KubeletError::NotImplemented {
        node: opts.node.node_name,
    })
}
