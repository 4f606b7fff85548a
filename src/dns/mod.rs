//! Cluster DNS, served by every agent for the pods of its node, in place of
//! k3s's CoreDNS Deployment: no image, no pod, one process per node.
//!
//! Shape:
//! - [`zone`]: the cluster zone (the Kubernetes DNS specification's records)
//!   built from Services and EndpointSlices, pure and unit-tested;
//! - [`hosts`]: node names (k3s's `NodeHosts`) and `coredns-custom` entries;
//! - [`forward`]: everything else goes to the node's upstream resolvers
//!   ([`resolvconf`]), through a 30-second answer cache;
//! - [`server`]: the decision order and the hickory-server adapter (UDP and
//!   TCP on the cluster DNS address, port 53);
//! - [`link`]: the `rk3s-dns` dummy link holding the cluster DNS address;
//! - [`run`] (this file): the feed, a level-triggered loop that rebuilds the
//!   tables from the [`crate::svccache`] snapshot, the Nodes watch and the
//!   `coredns-custom` ConfigMap, and keeps the link as the cluster wants it.
//!
//! Invariants:
//! - The node answers the cluster DNS address only while the
//!   `kube-system/kube-dns` Service carries `rk3s.io/node-local: "true"`
//!   (the server creates it unless `--disable coredns`); once a full list
//!   shows it gone or without the annotation, the link is removed so a
//!   self-managed DNS behind that ClusterIP gets the traffic.
//! - Fail static: the link stays when the agent stops or crashes; on start
//!   the sockets bind at once (`IP_FREEBIND`), questions wait up to
//!   [`server::FIRST_SYNC_WAIT`] for the first full list, and nothing is
//!   removed before that list.
//! - The tables are rebuilt whole and swapped atomically; a question never
//!   sees half an update.
//! - This module talks to the API only through `kube::Client`.
//!
//! Partial: the sockets and upstream queries live in the process's network
//! namespace (the agent's host namespace); namespaces are not watched (see
//! [`zone`]); IPv6 cluster DNS addresses are bound but untested.

pub mod forward;
pub mod hosts;
pub mod link;
pub mod resolvconf;
pub mod server;
pub mod zone;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::svccache::{ObjKey, ServiceCache, Snapshot};

use self::hosts::{Custom, HostTable};
use self::link::LinkOps;
use self::server::{Resolver, Tables};
use self::zone::{ServiceEntry, Zone};

/// The annotation that tells the service proxy to leave a Service alone
/// and the node to answer its ClusterIP itself.
pub const NODE_LOCAL_ANNOTATION: &str = "rk3s.io/node-local";
/// The namespace and name of the DNS Service and of k3s's custom config.
pub const KUBE_SYSTEM: &str = "kube-system";
pub const KUBE_DNS_SERVICE: &str = "kube-dns";
pub const CUSTOM_CONFIGMAP: &str = "coredns-custom";
/// How often the ConfigMap and the resolver file are re-read.
const RELOAD_PERIOD: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("failed to listen on {addr} (cluster DNS): {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Link(#[from] link::LinkError),
}

/// What cluster DNS runs from.
#[derive(Clone, Debug)]
pub struct DnsOptions {
    /// `--cluster-dns`.
    pub cluster_dns: IpAddr,
    /// `--cluster-domain`.
    pub cluster_domain: String,
    /// `--resolv-conf`; `None`: the host's (systemd-resolved aware).
    pub resolv_conf: Option<PathBuf>,
    /// Where to make the sockets and the link (`None`: the process's).
    pub host_netns: Option<PathBuf>,
    /// The port to serve on (53; tests and the benchmark use others).
    pub port: u16,
}

impl DnsOptions {
    pub fn new(cluster_dns: IpAddr, cluster_domain: impl Into<String>) -> Self {
        DnsOptions {
            cluster_dns,
            cluster_domain: cluster_domain.into(),
            resolv_conf: None,
            host_netns: None,
            port: 53,
        }
    }
}

/// Whether the cluster wants node-local DNS: `None` until the first full
/// list (then nothing changes), else whether `kube-system/kube-dns` exists
/// with the annotation.
pub fn wanted(snapshot: &Snapshot) -> Option<bool> {
    if !snapshot.synced {
        return None;
    }
    let svc = snapshot.service(&ObjKey::new(KUBE_SYSTEM, KUBE_DNS_SERVICE));
    Some(svc.is_some_and(|s| {
        s.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(NODE_LOCAL_ANNOTATION))
            .is_some_and(|v| v == "true")
    }))
}

/// The inputs of one build of the tables.
pub struct Inputs<'a> {
    pub snapshot: &'a Snapshot,
    pub nodes: &'a BTreeMap<String, Vec<IpAddr>>,
    pub custom: &'a Custom,
    pub upstreams: Vec<SocketAddr>,
}

/// Builds the tables a question is answered from.
pub fn build_tables(opts: &DnsOptions, serial: u32, inputs: Inputs<'_>) -> Tables {
    let snap = inputs.snapshot;
    let zone = Zone::build(
        &opts.cluster_domain,
        opts.cluster_dns,
        serial,
        snap.services.iter().map(|(k, s)| ServiceEntry {
            service: s,
            slices: snap.slices(k),
        }),
    );
    let mut hosts = HostTable::default();
    for (name, ips) in inputs.nodes {
        for ip in ips {
            hosts.insert(name, *ip);
        }
    }
    for (ip, name) in &inputs.custom.hosts {
        hosts.insert(name, *ip);
    }
    let mut upstreams = inputs.custom.upstreams.clone().unwrap_or(inputs.upstreams);
    // A node whose resolver file names the cluster DNS address itself would
    // forward to itself forever (CoreDNS's `loop` plugin guards the same).
    upstreams.retain(|u| u.ip() != opts.cluster_dns);
    Tables {
        zone,
        hosts,
        upstreams,
        stub_zones: inputs.custom.zones.clone(),
    }
}

fn now_serial() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(1)
}

/// Brings the cluster DNS address to `want` (nothing before the first full
/// list) unless it is there already; the state now (unchanged on failure,
/// so the next pass retries).
pub async fn reconcile_link(
    links: &dyn LinkOps,
    ip: IpAddr,
    current: Option<bool>,
    want: Option<bool>,
) -> Option<bool> {
    let Some(want) = want else { return current };
    if current == Some(want) {
        return current;
    }
    let result = if want {
        links.ensure_address(link::LINK, ip).await
    } else {
        links.remove(link::LINK, ip).await
    };
    match result {
        Ok(()) => {
            tracing::info!(address = %ip, serving = want, "cluster DNS address updated");
            Some(want)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cluster DNS: failed to update the address; retrying");
            current
        }
    }
}

/// Watches Nodes into name → InternalIPs, publishing each change.
async fn watch_nodes(
    client: Client,
    tx: watch::Sender<BTreeMap<String, Vec<IpAddr>>>,
    shutdown: CancellationToken,
) {
    let mut events = watcher::watcher(Api::<Node>::all(client), watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut building: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    let ips = |n: &Node| -> Vec<IpAddr> {
        n.status
            .iter()
            .flat_map(|s| s.addresses.iter().flatten())
            .filter(|a| a.type_ == "InternalIP")
            .filter_map(|a| a.address.parse().ok())
            .collect()
    };
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            e = events.next() => e,
        };
        let Some(event) = event else { return };
        match event {
            Ok(Event::Init) => building.clear(),
            Ok(Event::InitApply(n)) => {
                building.insert(n.metadata.name.clone().unwrap_or_default(), ips(&n));
            }
            Ok(Event::InitDone) => {
                tx.send_replace(std::mem::take(&mut building));
            }
            Ok(Event::Apply(n)) => tx.send_modify(|m| {
                m.insert(n.metadata.name.clone().unwrap_or_default(), ips(&n));
            }),
            Ok(Event::Delete(n)) => tx.send_modify(|m| {
                m.remove(n.metadata.name.as_deref().unwrap_or_default());
            }),
            Err(e) => tracing::warn!(error = %e, "cluster DNS: the Nodes watch failed; retrying"),
        }
    }
}

/// Reads `kube-system/coredns-custom` (a missing ConfigMap is an empty one;
/// an unreadable one keeps the last good value).
async fn read_custom(api: &Api<ConfigMap>) -> Option<Custom> {
    match api.get_opt(CUSTOM_CONFIGMAP).await {
        Ok(Some(cm)) => {
            let c = hosts::parse_custom(cm.data.iter().flatten());
            for s in &c.skipped {
                tracing::warn!("coredns-custom: skipped {s}");
            }
            Some(c)
        }
        Ok(None) => Some(Custom::default()),
        Err(e) => {
            tracing::debug!(error = %e, "cluster DNS: failed to read coredns-custom");
            None
        }
    }
}

/// Runs cluster DNS until `shutdown`: binds at once, then keeps the tables
/// and the link in step with the cluster.
pub async fn run(
    client: Client,
    services: ServiceCache,
    opts: DnsOptions,
    shutdown: CancellationToken,
) -> Result<(), DnsError> {
    let links: Arc<dyn LinkOps> =
        Arc::new(link::NetlinkOps::connect(opts.host_netns.clone()).await?);
    run_with(
        client,
        services,
        opts,
        links,
        Arc::new(forward::NetUpstream::default()),
        shutdown,
    )
    .await
}

/// [`run`] with its seams given.
pub async fn run_with(
    client: Client,
    services: ServiceCache,
    opts: DnsOptions,
    links: Arc<dyn LinkOps>,
    upstream: Arc<dyn forward::Upstream>,
    shutdown: CancellationToken,
) -> Result<(), DnsError> {
    let addr = SocketAddr::new(opts.cluster_dns, opts.port);
    let (udp, tcp) = server::bind(opts.host_netns.clone(), opts.cluster_dns, opts.port)
        .await
        .map_err(|source| DnsError::Bind { addr, source })?;
    let resolv_path = resolvconf::choose(opts.resolv_conf.as_deref());
    let (synced_tx, synced_rx) = watch::channel(false);
    let empty = Inputs {
        snapshot: &Snapshot::default(),
        nodes: &BTreeMap::new(),
        custom: &Custom::default(),
        upstreams: resolvconf::load(&resolv_path).upstreams(),
    };
    let resolver = Arc::new(Resolver::new(
        build_tables(&opts, now_serial(), empty),
        synced_rx,
        forward::Forwarder::new(upstream),
    ));
    tokio::spawn(server::serve(resolver.clone(), udp, tcp, shutdown.clone()));
    tracing::info!(%addr, upstreams = %resolv_path.display(), "cluster DNS listening");

    let (nodes_tx, mut nodes_rx) = watch::channel(BTreeMap::new());
    tokio::spawn(watch_nodes(client.clone(), nodes_tx, shutdown.clone()));
    let cm_api: Api<ConfigMap> = Api::namespaced(client, KUBE_SYSTEM);
    let mut custom = Custom::default();
    let mut changes = services.changes();
    let mut reload = tokio::time::interval(RELOAD_PERIOD);
    let mut link_state: Option<bool> = None;
    let mut last_upstreams = Vec::new();
    let mut last_generation = None;
    loop {
        let snapshot = services.snapshot();
        let upstreams = resolvconf::load(&resolv_path).upstreams();
        let rebuild = last_generation != Some(snapshot.generation)
            || nodes_rx.has_changed().unwrap_or(false)
            || upstreams != last_upstreams
            || link_state.is_none();
        if rebuild {
            let nodes = nodes_rx.borrow_and_update().clone();
            let inputs = Inputs {
                snapshot: &snapshot,
                nodes: &nodes,
                custom: &custom,
                upstreams: upstreams.clone(),
            };
            resolver.publish(build_tables(&opts, now_serial(), inputs));
            last_generation = Some(snapshot.generation);
            last_upstreams = upstreams;
            if snapshot.synced {
                synced_tx.send_replace(true);
            }
        }
        link_state = reconcile_link(
            links.as_ref(),
            opts.cluster_dns,
            link_state,
            wanted(&snapshot),
        )
        .await;
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = changes.changed() => if r.is_err() { shutdown.cancelled().await; return Ok(()) },
            _ = nodes_rx.changed() => {}
            _ = reload.tick() => {
                if let Some(c) = read_custom(&cm_api).await {
                    if c != custom {
                        custom = c;
                        last_generation = None;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Service;
    use kube::api::ObjectMeta;

    fn kube_dns(annotated: bool) -> Service {
        let mut annotations = BTreeMap::new();
        if annotated {
            annotations.insert(NODE_LOCAL_ANNOTATION.to_string(), "true".to_string());
        }
        Service {
            metadata: ObjectMeta {
                name: Some(KUBE_DNS_SERVICE.into()),
                namespace: Some(KUBE_SYSTEM.into()),
                annotations: Some(annotations),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn snapshot(synced: bool, svc: Option<Service>) -> Snapshot {
        let mut s = Snapshot::from_objects(svc, []);
        s.synced = synced;
        s
    }

    #[test]
    fn node_local_dns_follows_the_annotated_kube_dns_service_after_a_full_list() {
        assert_eq!(
            wanted(&snapshot(false, None)),
            None,
            "nothing changes before the first list"
        );
        assert_eq!(wanted(&snapshot(true, Some(kube_dns(true)))), Some(true));
        assert_eq!(wanted(&snapshot(true, Some(kube_dns(false)))), Some(false));
        assert_eq!(wanted(&snapshot(true, None)), Some(false));
    }

    #[tokio::test]
    async fn the_address_follows_the_wanted_state_and_is_left_alone_before_the_first_list() {
        let fake = link::FakeLinkOps::default();
        let ip: IpAddr = "10.43.0.10".parse().unwrap();
        let mut state = reconcile_link(&fake, ip, None, None).await;
        assert_eq!(state, None);
        assert!(
            fake.calls.lock().unwrap().is_empty(),
            "a restarted agent keeps the address until it has listed"
        );
        for want in [true, true, false, false, true] {
            state = reconcile_link(&fake, ip, state, Some(want)).await;
            assert_eq!(state, Some(want));
        }
        assert_eq!(
            *fake.calls.lock().unwrap(),
            [
                "ensure rk3s-dns 10.43.0.10",
                "remove rk3s-dns 10.43.0.10",
                "ensure rk3s-dns 10.43.0.10"
            ]
        );
    }

    #[test]
    fn tables_take_nodes_custom_hosts_and_custom_upstreams() {
        let opts = DnsOptions::new("10.43.0.10".parse().unwrap(), "cluster.local");
        let nodes: BTreeMap<String, Vec<IpAddr>> =
            [("node-a".to_string(), vec!["192.168.1.5".parse().unwrap()])].into();
        let mut custom = Custom::default();
        custom
            .hosts
            .push(("10.0.0.9".parse().unwrap(), "db.lan".into()));
        let upstreams = vec!["192.168.1.1:53".parse().unwrap()];
        let t = build_tables(
            &opts,
            1,
            Inputs {
                snapshot: &snapshot(true, Some(kube_dns(true))),
                nodes: &nodes,
                custom: &custom,
                upstreams: upstreams.clone(),
            },
        );
        assert_eq!(t.hosts.len(), 2);
        assert_eq!(t.upstreams, upstreams);
        assert_eq!(t.zone.service_count(), 1);
        custom.upstreams = Some(vec!["9.9.9.9:53".parse().unwrap()]);
        let t = build_tables(
            &opts,
            1,
            Inputs {
                snapshot: &Snapshot::default(),
                nodes: &nodes,
                custom: &custom,
                upstreams,
            },
        );
        assert_eq!(
            t.upstreams,
            vec!["9.9.9.9:53".parse::<SocketAddr>().unwrap()]
        );
        custom.upstreams = Some(vec!["10.43.0.10:53".parse().unwrap()]);
        let t = build_tables(
            &opts,
            1,
            Inputs {
                snapshot: &Snapshot::default(),
                nodes: &nodes,
                custom: &custom,
                upstreams: Vec::new(),
            },
        );
        assert!(t.upstreams.is_empty(), "never forward to ourselves");
    }
}
