//! The controllers that turn stored objects into a working cluster (k3s's
//! kube-controller-manager), run inside the server as API clients: each is
//! a kube-runtime `Controller` over a `kube::Client` with the
//! `system:kube-controller-manager` certificate, so they see exactly what
//! kubectl sees and never touch the store.
//!
//! Map: `workloads` (Deployment, ReplicaSet, ReplicationController,
//! DaemonSet, StatefulSet, Job, CronJob) and `cluster` (Service endpoints,
//! namespaces, garbage collection, node lifecycle, pod CIDRs,
//! ServiceAccounts and `kube-root-ca.crt`) and `storage` (PersistentVolume
//! binding, claim and volume protection, the local-path provisioner). The scheduler is `crate::scheduler`.
//!
//! Architecture invariant: a controller's `reconcile` is level-triggered and
//! idempotent: it reads the world, compares with the desired state, writes
//! the difference and returns the next `Action`; errors back off.

pub mod cluster;
pub mod storage;
pub mod workloads;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::ClusterSettings;

/// Timings and ranges the controllers use; tests shorten the timings.
#[derive(Clone, Debug)]
pub struct ControllerOptions {
    pub settings: ClusterSettings,
    /// Pod CIDR prefix length per node (k3s: /24).
    pub node_cidr_mask: u8,
    /// A node whose Lease is older than this is NotReady/Unknown (40 s).
    pub node_monitor_grace: Duration,
    /// How often node health is checked (5 s).
    pub node_monitor_period: Duration,
    /// The default `tolerationSeconds` for the not-ready/unreachable taints (300 s).
    pub default_toleration_seconds: i64,
    /// The CronJob controller's clock period (10 s in kube).
    pub cronjob_period: Duration,
    /// The cluster CA bundle (PEM) published as `kube-root-ca.crt` in every
    /// namespace (`Pki::ca_bundle_pem`); empty publishes nothing.
    pub root_ca_pem: String,
    /// How often the garbage collector re-checks every object of its
    /// watch-fed graph (10 min; deletions are handled as they happen).
    pub gc_period: Duration,
    /// ServiceLB runs (`--disable servicelb` turns it off).
    pub servicelb: bool,
    /// The built-in ingress holds TCP 80/443 on every node, so ServiceLB
    /// treats a LoadBalancer on those ports as a conflict.
    pub ingress_holds_web_ports: bool,
    /// The storage controllers' settings (local-path on or off, its path).
    pub storage: storage::StorageOptions,
}

impl ControllerOptions {
    pub fn new(settings: ClusterSettings) -> Self {
        ControllerOptions {
            settings,
            node_cidr_mask: 24,
            node_monitor_grace: Duration::from_secs(40),
            node_monitor_period: Duration::from_secs(5),
            default_toleration_seconds: 300,
            cronjob_period: Duration::from_secs(10),
            root_ca_pem: String::new(),
            gc_period: Duration::from_secs(600),
            servicelb: true,
            ingress_holds_web_ports: true,
            storage: storage::StorageOptions {
                local_storage: true,
                local_storage_path: std::path::PathBuf::from("/var/lib/rk3s/storage"),
            },
        }
    }
}

/// What every controller gets.
#[derive(Clone)]
pub struct Context {
    pub client: kube::Client,
    pub options: Arc<ControllerOptions>,
    pub shutdown: CancellationToken,
}

/// Runs every controller until `shutdown`.
pub async fn run(ctx: Context) {
    tokio::join!(
        workloads::run(ctx.clone()),
        cluster::run(ctx.clone()),
        storage::run(ctx.clone())
    );
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("failed to build the in-process API client: {0}")]
    Build(String),
}

/// A `kube::Client` for `https://127.0.0.1:<port>` with one of the PKI's
/// control-plane certificates, verified against the server CA.
///
/// It speaks HTTP/2 only (kube-rs's own client is HTTP/1.1), so every
/// request and watch of the client shares one connection: the garbage
/// collector's watch per kind and the controllers' informers are streams
/// of that connection, not a socket pair each in the server's own process.
/// (No upgrades go through it: exec, attach and port-forward are the
/// kubelet's, reached through the tunnel.)
pub async fn in_process_client(
    pki: &crate::pki::Pki,
    role: crate::pki::ClientRole,
    url: &str,
) -> Result<kube::Client, ClientError> {
    use kube::client::ConfigExt;
    let build = |e: &dyn std::fmt::Display| ClientError::Build(e.to_string());
    let leaf = pki.client(role);
    let yaml = crate::pki::Kubeconfig::new(url)
        .ca_data(pki.ca_bundle_pem())
        .client_cert_data(leaf.cert_pem.as_bytes(), leaf.key_pem.as_bytes())
        .to_yaml()
        .map_err(|e| build(&e))?;
    let kc = kube::config::Kubeconfig::from_yaml(&yaml).map_err(|e| build(&e))?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| build(&e))?;
    let mut tls = config.rustls_client_config().map_err(|e| build(&e))?;
    // kube's config offers `http/1.1`; the connector sets `h2` alone.
    tls.alpn_protocols.clear();
    let mut tcp = hyper_util::client::legacy::connect::HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http2()
        .wrap_connector(tcp);
    let http = hyper_util::client::legacy::Client::builder(
        hyper_util::rt::TokioExecutor::new(),
    )
    .http2_only(true)
    .build(https);
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .service(http);
    Ok(kube::Client::new(service, config.default_namespace))
}
