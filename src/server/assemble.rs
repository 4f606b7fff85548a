//! Assembles the API server's pluggable parts (authentication,
//! authorization, admission plug-ins, extra routes) from the store, the
//! registry and the PKI. `server::run` and the in-process test server both
//! call [`serve_options`], so tests exercise exactly what `rk3s server`
//! serves.
//!
//! Each feature adds its plug-in here, in one place, in order.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use ipnet::IpNet;

use crate::apiserver::admission::AdmissionChain;
use crate::apiserver::auth::{AllowAll, Authenticator, Authorizer};
use crate::apiserver::registry::Registry;
use crate::apiserver::ServeOptions;
use crate::config::{PortRange, ServerConfig};
use crate::pki::Pki;
use crate::store::Store;

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
        }
    }
}

/// Everything the plug-ins are built from.
#[derive(Clone)]
pub struct Parts {
    pub store: Arc<dyn Store>,
    pub registry: Arc<Registry>,
    pub pki: Arc<Pki>,
    pub settings: ClusterSettings,
    /// `<data-dir>/server`.
    pub server_dir: std::path::PathBuf,
}

/// Who is asking. PARTIAL until issue 5's authenticator lands: everyone is
/// `system:admin`.
pub fn authenticator(_parts: &Parts) -> Arc<dyn Authenticator> {
    Arc::new(AllowAll)
}

/// What they may do. PARTIAL until RBAC lands: everything.
pub fn authorizer(_parts: &Parts) -> Arc<dyn Authorizer> {
    Arc::new(AllowAll)
}

/// The admission chain: mutating plug-ins first, validating ones last.
pub fn admission_chain(parts: &Parts) -> AdmissionChain {
    let mut chain: AdmissionChain = Vec::new();
    chain.push(Arc::new(
        crate::apiserver::ipalloc::services::ServiceAllocator::new(
            parts.store.clone(),
            parts.settings.service_cidr,
            parts.settings.service_node_port_range,
        ),
    ));
    chain.push(Arc::new(
        crate::apiserver::ipalloc::tolerations::DefaultTolerationSeconds { seconds: 300 },
    ));
    chain
}

/// Routes outside the Kubernetes API (`/cacerts`, join, tunnel).
pub fn extra_routes(_parts: &Parts) -> Router {
    Router::new()
}

/// The serve options for `bind`, with the PKI's TLS and every plug-in.
pub fn serve_options(
    bind: SocketAddr,
    grace: Duration,
    parts: &Parts,
) -> Result<ServeOptions, crate::pki::PkiError> {
    if let Err(e) = crate::apiserver::ipalloc::bootstrap_kubernetes_service(
        parts.store.as_ref(),
        &parts.registry,
        &parts.settings,
    ) {
        tracing::warn!("{e}");
    }
    let mut opts = ServeOptions::new(bind);
    opts.grace = grace;
    opts.tls = Some(Arc::new(parts.pki.server_tls_config()?));
    opts.authenticator = authenticator(parts);
    opts.authorizer = authorizer(parts);
    opts.admission = admission_chain(parts);
    opts.extra_routes = extra_routes(parts);
    Ok(opts)
}
