//! Per-remote-node kernel entries, reconciled level-triggered: the wanted
//! set is computed from the peers, the present set read from the kernel,
//! and only the difference is applied.
//!
//! Order, as flannel's: a peer's entries are added neighbour, FDB, route
//! (the route last, so no packet is routed to the device before it can be
//! encapsulated); stale entries are removed route, FDB, neighbour, before
//! anything is added (a changed MAC or IP thus removes the old entries
//! first). A failure while adding a peer's entries deletes the ones this
//! pass added for it, and the pass goes on with the other peers; the next
//! pass retries.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::ops::{Fdb, Mac, Neighbour, OverlayOps, Route};
use super::OverlayError;

/// A remote node as the overlay sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub node: String,
    /// Its pod subnet (`spec.podCIDR`).
    pub subnet: Ipv4Net,
    /// Where its overlay traffic goes (its `public-ip` annotation).
    pub public_ip: Ipv4Addr,
    /// Its VXLAN device's MAC (vxlan only).
    pub vtep_mac: Option<Mac>,
}

/// How peers are reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Through the VXLAN device with this index.
    Vxlan { device: u32 },
    /// Directly through the uplink with this index.
    HostGw { uplink: u32 },
}

/// Which routes are the overlay's: inside the cluster CIDR, not this
/// node's own subnet, and through the VXLAN device or the uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope {
    pub cluster_cidr: Ipv4Net,
    pub own_subnet: Ipv4Net,
    /// Devices whose cluster routes the overlay owns (VXLAN device, uplink).
    pub links: [Option<u32>; 2],
}

/// One kernel entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Entry {
    Neighbour(Neighbour),
    Fdb(Fdb),
    Route(Route),
}

/// What a pass did.
#[derive(Debug, Default)]
pub struct SyncOutcome {
    pub added: Vec<Entry>,
    pub removed: Vec<Entry>,
    /// Peers whose entries could not be set up (rolled back), with why.
    pub failed: Vec<(String, OverlayError)>,
    /// Peers skipped because an earlier peer claims the same subnet.
    pub conflicts: Vec<String>,
}

/// The entries `peer` needs, in the order they are added.
pub fn wanted(peer: &Peer, target: Target) -> Vec<Entry> {
    match target {
        Target::Vxlan { device } => {
            let Some(mac) = peer.vtep_mac else {
                return Vec::new();
            };
            let vtep = peer.subnet.network();
            vec![
                Entry::Neighbour(Neighbour { ip: vtep, mac }),
                Entry::Fdb(Fdb {
                    mac,
                    dst: peer.public_ip,
                }),
                Entry::Route(Route {
                    dst: peer.subnet,
                    gateway: vtep,
                    link: device,
                    onlink: true,
                }),
            ]
        }
        Target::HostGw { uplink } => vec![Entry::Route(Route {
            dst: peer.subnet,
            gateway: peer.public_ip,
            link: uplink,
            onlink: false,
        })],
    }
}

/// The overlay's entries the kernel holds now.
pub async fn present(
    ops: &dyn OverlayOps,
    target: Target,
    scope: &Scope,
) -> Result<BTreeSet<Entry>, OverlayError> {
    let mut out = BTreeSet::new();
    if let Target::Vxlan { device } = target {
        out.extend(
            ops.neighbours(device)
                .await?
                .into_iter()
                .map(Entry::Neighbour),
        );
        out.extend(ops.fdb(device).await?.into_iter().map(Entry::Fdb));
    }
    for r in ops.routes(scope.cluster_cidr).await? {
        let ours = scope.links.contains(&Some(r.link))
            && r.dst != scope.own_subnet.trunc()
            && scope.cluster_cidr.contains(&r.dst);
        if ours {
            out.insert(Entry::Route(r));
        }
    }
    Ok(out)
}

/// Brings the kernel to exactly the entries `peers` need; see the module
/// docs for the order and the rollback. Peers are taken in name order;
/// one whose subnet an earlier peer (or this node) already has is skipped.
pub async fn sync(
    ops: &dyn OverlayOps,
    target: Target,
    scope: &Scope,
    peers: &[Peer],
) -> Result<SyncOutcome, OverlayError> {
    let mut out = SyncOutcome::default();
    let mut sorted: Vec<&Peer> = peers.iter().collect();
    sorted.sort_by(|a, b| a.node.cmp(&b.node));
    let mut subnets = BTreeSet::from([scope.own_subnet.trunc()]);
    let mut plan: Vec<(&Peer, Vec<Entry>)> = Vec::new();
    for p in sorted {
        if !subnets.insert(p.subnet.trunc()) || !scope.cluster_cidr.contains(&p.subnet) {
            out.conflicts.push(p.node.clone());
            continue;
        }
        plan.push((p, wanted(p, target)));
    }
    let want: BTreeSet<Entry> = plan.iter().flat_map(|(_, e)| e.iter().copied()).collect();
    let have = present(ops, target, scope).await?;

    // Stale first, in reverse dependency order: routes, FDB, neighbours.
    let mut stale: Vec<Entry> = have.difference(&want).copied().collect();
    stale.sort_by_key(|e| match e {
        Entry::Route(_) => 0,
        Entry::Fdb(_) => 1,
        Entry::Neighbour(_) => 2,
    });
    for e in stale {
        remove(ops, target, e).await?;
        out.removed.push(e);
    }

    for (peer, entries) in plan {
        let mut added = Vec::new();
        let mut failure = None;
        for e in entries {
            if have.contains(&e) {
                continue;
            }
            match add(ops, target, e).await {
                Ok(()) => added.push(e),
                Err(err) => {
                    failure = Some(err);
                    break;
                }
            }
        }
        match failure {
            None => out.added.extend(added),
            Some(err) => {
                for e in added.into_iter().rev() {
                    if let Err(undo) = remove(ops, target, e).await {
                        tracing::warn!(node = %peer.node, error = %undo, "failed to roll back an overlay entry");
                    }
                }
                out.failed.push((peer.node.clone(), err));
            }
        }
    }
    Ok(out)
}

fn device(target: Target) -> u32 {
    match target {
        Target::Vxlan { device } => device,
        Target::HostGw { uplink } => uplink,
    }
}

async fn add(ops: &dyn OverlayOps, target: Target, e: Entry) -> Result<(), OverlayError> {
    match e {
        Entry::Neighbour(n) => ops.add_neighbour(device(target), n).await,
        Entry::Fdb(f) => ops.add_fdb(device(target), f).await,
        Entry::Route(r) => ops.add_route(r).await,
    }
}

async fn remove(ops: &dyn OverlayOps, target: Target, e: Entry) -> Result<(), OverlayError> {
    let gone = |r: Result<(), OverlayError>| match r {
        // Already gone is what we wanted.
        Err(e)
            if matches!(
                e.errno(),
                Some(libc::ENOENT) | Some(libc::ESRCH) | Some(libc::ENODEV)
            ) =>
        {
            Ok(())
        }
        other => other,
    };
    match e {
        Entry::Neighbour(n) => gone(ops.del_neighbour(device(target), n).await),
        Entry::Fdb(f) => gone(ops.del_fdb(device(target), f).await),
        Entry::Route(r) => gone(ops.del_route(r).await),
    }
}
