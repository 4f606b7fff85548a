//! The service proxy: every agent turns Services and EndpointSlices (from
//! the shared [`crate::svccache`]) into one nftables table of its own,
//! `ip rk3s-proxy`, in the design of kube-proxy's nftables mode.
//!
//! Map: `model` (Service + slices → ports with chosen endpoints), `rules`
//! (the table's skeleton and each Service's chains, sets, endpoint maps
//! and map elements), `sync` (full replace at start, then transactions
//! that carry only what changed), `elements` (element changes over
//! netlink), `drift` (the periodic check that someone else did not change
//! the table under us).
//!
//! Why the `nft` binary for rules rather than netlink from Rust:
//! kube-proxy's nftables mode drives `nft` too; a text transaction is
//! readable in logs and reproducible by hand (`nft list table ip
//! rk3s-proxy`); the binary is one small Debian package (`nftables`,
//! already on Raspberry Pi OS Bookworm) and `nft -f` applies a whole
//! script atomically. Encoding every expression the rules use ourselves
//! would be a large, version-sensitive body of code. Elements are the
//! exception: their encoding is small and stable (a key, a value, a flag),
//! and an endpoint change is nothing but elements, so `elements` writes
//! them in one nfnetlink batch, with no fork and no listing, whatever the
//! table holds. `rk3s check-config` checks for `nft` and the kernel
//! modules.
//!
//! Invariants:
//! - the proxy only ever touches table `ip rk3s-proxy`; every script and
//!   every element batch it applies names that table and no other;
//! - every change is at most one `nft -f` transaction followed by one
//!   netlink element batch, each atomic; an endpoint change is one batch
//!   alone: the kernel sees the old endpoints or the new ones, never a
//!   half;
//! - at start the table is replaced in one transaction (declare, delete,
//!   redefine), so an agent restart never leaves a moment without rules,
//!   and while the agent is down the last rules keep working (fail
//!   static); shutdown leaves the table; only [`uninstall`] removes it;
//! - after the first sync, a transaction's size is proportional to the
//!   Services that changed, not to how many exist, and an endpoint change
//!   adds no rule and no jump (data maps and plain sets only) and needs
//!   no `nft`, so neither `nft` nor the kernel's jump-graph validation
//!   runs (see [`sync`]); what still grows is nf_tables' own walk of the
//!   table's chains at commit and of its sets to find one by name (~0.3
//!   µs per Service); which Services to recompute comes from the service
//!   cache's change log (a walk of all of them only when it cannot tell);
//! - every [`drift::RESYNC_PERIOD`] (30 s, kube-proxy's `syncPeriod`
//!   default) one netlink read of nf_tables' generation tells whether
//!   anyone but us committed since our last write; if not, nothing is
//!   written and `nft` does not run (an idle node stays idle); if so, the
//!   table is replaced from the current snapshot.
//!
//! Partial: IPv4 only (IPv6 `loadBalancerSourceRanges` ignored); no drop of traffic
//! to unallocated ClusterIPs (the agent does not know the service CIDR);
//! affinity state is lost when the table is replaced at start (or by the
//! periodic check, which cannot tell a commit to another table in the
//! namespace from one to ours); endpoint changes of `sessionAffinity:
//! ClientIP` Services still rewrite chains.

pub mod drift;
pub mod elements;
pub mod model;
pub mod rules;
pub mod sync;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod changed_tests;
#[cfg(test)]
mod drift_tests;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnet::Ipv4Net;
use tokio_util::sync::CancellationToken;

pub use rules::{NodeView, TABLE};
pub use elements::NetlinkElements;
pub use sync::{SyncError, SyncStats, Syncer};

use crate::hostnet::nft::{Firewall, NftError, NftFirewall};
use crate::svccache::ServiceCache;

/// A change burst is gathered this long before it is applied.
const COALESCE: Duration = Duration::from_millis(20);
/// After a failed transaction, the next try (a full replace) waits this long.
const RETRY: Duration = Duration::from_secs(1);

/// What the agent gives the proxy.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    pub node_name: String,
    /// The node's addresses NodePorts answer on (InternalIP, ExternalIP).
    pub node_ips: Vec<Ipv4Addr>,
    pub cluster_cidr: Ipv4Net,
    /// The network namespace whose nftables to program (`None`: ours).
    pub host_netns: Option<PathBuf>,
}

impl ProxyConfig {
    /// For a node with address `node_ip` in k3s's default pod network,
    /// programming the agent's own namespace.
    pub fn for_node(node_name: &str, node_ip: std::net::IpAddr) -> Self {
        let node_ips = match node_ip {
            std::net::IpAddr::V4(ip) if !ip.is_loopback() => vec![ip],
            _ => Vec::new(),
        };
        ProxyConfig {
            node_name: node_name.to_string(),
            node_ips,
            cluster_cidr: crate::config::DEFAULT_CLUSTER_CIDR
                .parse()
                .expect("the default cluster CIDR is valid"),
            host_netns: None,
        }
    }

    pub fn node_view(&self) -> NodeView {
        NodeView {
            node_name: self.node_name.clone(),
            node_ips: self.node_ips.clone(),
            cluster_cidr: self.cluster_cidr,
        }
    }
}

/// Runs the proxy with the `nft` binary until `shutdown`; the table stays.
pub async fn run(
    config: ProxyConfig,
    cache: ServiceCache,
    metrics: Option<Arc<crate::metrics::prom::Registry>>,
    shutdown: CancellationToken,
) {
    let firewall: Arc<dyn Firewall> = Arc::new(NftFirewall::new(config.host_netns.clone()));
    let elements = Arc::new(NetlinkElements::new(config.host_netns.clone()));
    let syncer = Syncer::new(firewall, elements.clone(), config.node_view()).with_probe(elements);
    run_with(syncer, cache, metrics, drift::RESYNC_PERIOD, shutdown).await
}

/// Buckets of `rk3s_proxy_sync_duration_seconds`.
const SYNC_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// The proxy loop over any [`Firewall`]: wait for the first full list
/// (so a restart never programs an empty table over working rules), then
/// apply every change as it comes, and every `resync` check that nobody
/// else changed the table ([`Syncer::check`]: one netlink round trip when
/// nothing did).
pub async fn run_with(
    mut syncer: Syncer,
    cache: ServiceCache,
    metrics: Option<Arc<crate::metrics::prom::Registry>>,
    resync: Duration,
    shutdown: CancellationToken,
) {
    tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = cache.ready() => {}
    }
    let mut changes = cache.changes();
    let mut next_check = tokio::time::Instant::now() + resync;
    'sync: loop {
        let snap = cache.snapshot();
        changes.mark_unchanged();
        let started = std::time::Instant::now();
        let result = syncer.sync(&snap).await;
        if let Some(m) = &metrics {
            let (outcome, kind) = match &result {
                Ok(s) if s.unchanged() => ("unchanged", "none"),
                Ok(s) => ("success", if s.full { "full" } else { "partial" }),
                Err(_) => ("error", "none"),
            };
            m.inc("rk3s_proxy_syncs_total", "Service proxy rule syncs, by result and kind.", &[("result", outcome), ("kind", kind)], 1.0);
            m.observe(
                "rk3s_proxy_sync_duration_seconds",
                "Time to compute and apply one rule sync.",
                &[],
                started.elapsed().as_secs_f64(),
                SYNC_BUCKETS,
            );
            m.set("rk3s_proxy_services", "Services in the proxy's view.", &[], snap.services.len() as f64);
        }
        match result {
            Ok(stats) if !stats.unchanged() => tracing::debug!(
                full = stats.full,
                services = stats.services_changed,
                bytes = stats.script_bytes,
                elements = stats.element_ops,
                took_ms = started.elapsed().as_millis() as u64,
                "service proxy: rules synced"
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!("service proxy: {e}; replacing the whole table shortly");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(RETRY) => continue,
                }
            }
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = changes.changed() => if r.is_err() { return } else { break },
                _ = tokio::time::sleep_until(next_check) => {}
            }
            next_check = tokio::time::Instant::now() + resync;
            // Not marked unchanged: a change the check does not cover
            // still wakes the loop (and then finds nothing to do).
            let snap = cache.snapshot();
            let result = syncer.check(&snap).await;
            let outcome = match &result {
                Ok(None) => "clean",
                Ok(Some(_)) => "repaired",
                Err(_) => "error",
            };
            if let Some(m) = &metrics {
                m.inc("rk3s_proxy_resyncs_total", "Periodic checks of the proxy's table, by result.", &[("result", outcome)], 1.0);
            }
            match result {
                Ok(None) => {}
                Ok(Some(stats)) => tracing::info!(
                    bytes = stats.script_bytes,
                    "service proxy: nf_tables changed under us; table {TABLE} replaced"
                ),
                Err(e) => {
                    tracing::warn!("service proxy: periodic check: {e}; trying again shortly");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(RETRY) => continue 'sync,
                    }
                }
            }
        }
        tokio::time::sleep(COALESCE).await;
    }
}

/// Removes the proxy's table (the uninstall path); absent is fine.
pub async fn uninstall(firewall: &dyn Firewall) -> Result<(), NftError> {
    firewall.apply(&sync::uninstall_script()).await
}
