//! The join protocol's shared vocabulary, owned by neither side: the
//! headers an agent sends with its CSRs, the cluster configuration the
//! server answers `GET /v1-rk3s/config` with, and the credentials a node
//! ends up with. `server::join` (which serves the protocol and issues the
//! built-in agent's credentials) and `agent::join` (which joins) both use
//! this module and never each other.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::node_files::AgentFiles;

/// Header naming the node a certificate is for.
pub const NODE_NAME_HEADER: &str = "rk3s-Node-Name";
/// Header carrying the node password.
pub const NODE_PASSWORD_HEADER: &str = "rk3s-Node-Password";
/// Header listing the node's IPs (comma-separated), for the serving certificate.
pub const NODE_IP_HEADER: &str = "rk3s-Node-IP";

/// What a node needs to talk to the API server as `system:node:<name>`.
#[derive(Clone, Debug)]
pub struct NodeCredentials {
    pub node_name: String,
    /// A kubeconfig with the server URL, the server CA and the kubelet
    /// client certificate (CN `system:node:<name>`, O `system:nodes`).
    pub kubeconfig: PathBuf,
    /// The kubelet serving certificate and key (PEM files).
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
}

/// What agents learn of the server's configuration (`GET /v1-rk3s/config`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterConfig {
    #[serde(rename = "clusterCIDR")]
    pub cluster_cidr: String,
    #[serde(rename = "serviceCIDR")]
    pub service_cidr: String,
    #[serde(rename = "clusterDNS")]
    pub cluster_dns: IpAddr,
    pub cluster_domain: String,
    pub service_node_port_range: String,
    /// `--flannel-backend` (vxlan, host-gw, none); absent from older servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flannel_backend: Option<String>,
}

impl ClusterConfig {
    /// The configuration the last join stored in `agent_dir`, if any.
    pub fn load(agent_dir: &Path) -> Option<ClusterConfig> {
        AgentFiles::new(agent_dir).read_cluster_config()
    }
}
