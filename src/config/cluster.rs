//! The cluster-wide settings the API server's plug-ins, the controllers and
//! the join protocol need, derived once from the server's configuration.
//! They live here, below `apiserver`, `controllers` and `server`, so that
//! none of them imports another for them.

use std::net::IpAddr;

use ipnet::IpNet;

use super::{PortRange, ServerConfig};

/// The cluster-wide settings plug-ins and controllers need.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    pub cluster_cidr: IpNet,
    pub service_cidr: IpNet,
    pub service_node_port_range: PortRange,
    pub cluster_dns: IpAddr,
    pub cluster_domain: String,
    /// The address agents and in-cluster clients reach the API at
    /// (the `kubernetes` Service's endpoint).
    pub advertise_address: IpAddr,
    pub https_port: u16,
    /// `--flannel-backend`, told to agents at join (`/v1-rk3s/config`).
    pub flannel_backend: super::FlannelBackend,
    /// Whether agents serve cluster DNS (`--disable coredns` turns it off).
    pub node_local_dns: bool,
    /// Whether the API serves `metrics.k8s.io` (`--disable metrics-server`
    /// turns it off).
    pub metrics_server: bool,
}

impl ClusterSettings {
    pub fn from_config(config: &ServerConfig) -> Self {
        let advertise = config
            .advertise_address
            .or(config.node.node_ip)
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        ClusterSettings {
            cluster_cidr: config.cluster_cidr,
            service_cidr: config.service_cidr,
            service_node_port_range: config.service_node_port_range,
            cluster_dns: config.cluster_dns,
            cluster_domain: config.cluster_domain.clone(),
            advertise_address: advertise,
            https_port: config.https_listen_port,
            flannel_backend: config.flannel_backend,
            node_local_dns: !config.disable.contains(&super::Component::Dns),
            metrics_server: !config.disable.contains(&super::Component::MetricsServer),
        }
    }

    /// k3s's defaults on loopback (tests).
    pub fn defaults() -> Self {
        ClusterSettings {
            cluster_cidr: "10.42.0.0/16".parse().expect("valid"),
            service_cidr: "10.43.0.0/16".parse().expect("valid"),
            service_node_port_range: PortRange {
                first: 30000,
                last: 32767,
            },
            cluster_dns: IpAddr::from([10, 43, 0, 10]),
            cluster_domain: "cluster.local".into(),
            advertise_address: IpAddr::from([127, 0, 0, 1]),
            https_port: 6443,
            flannel_backend: super::FlannelBackend::Vxlan,
            node_local_dns: true,
            metrics_server: true,
        }
    }
}
