//! Removing what the overlay and pod network put into the host's network
//! stack, and nothing else; `rk3s uninstall-network` runs it, and the
//! uninstall/killall script is meant to call that.
//!
//! What goes, in this order:
//! 1. the main-table routes into the cluster CIDR that have a gateway
//!    (the overlay's on-link routes via `flannel.1` and host-gw's routes
//!    via peers' node IPs); a bridge's own subnet route has none and stays;
//! 2. the device `flannel.1`, only if it is a VXLAN device (the kernel
//!    drops its neighbours and FDB entries with it);
//! 3. the nftables table `ip rk3s` (the pod network's masquerade and
//!    forward rules); other tables, including the service proxy's
//!    `ip rk3s-proxy`, are not touched.
//!
//! Running it twice is harmless: the second run finds nothing.

use std::path::PathBuf;

use ipnet::Ipv4Net;

use super::linux::LinuxOverlayOps;
use super::ops::{OverlayOps, Route};
use super::{nft, OverlayError, VXLAN_DEVICE};
use crate::hostnet::nft::{Firewall, NftFirewall};

/// What [`uninstall`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Removed {
    pub routes: Vec<Route>,
    pub device: bool,
}

/// Removes the overlay's routes, device and the `ip rk3s` table from
/// `netns` (the process's namespace when `None`).
pub async fn uninstall(
    netns: Option<PathBuf>,
    cluster_cidr: Ipv4Net,
) -> Result<Removed, OverlayError> {
    let ops = LinuxOverlayOps::connect(netns.clone()).await?;
    let fw = NftFirewall::new(netns);
    uninstall_with(&ops, &fw, cluster_cidr).await
}

/// [`uninstall`] over the given seams.
pub async fn uninstall_with(
    ops: &dyn OverlayOps,
    firewall: &dyn Firewall,
    cluster_cidr: Ipv4Net,
) -> Result<Removed, OverlayError> {
    let mut out = Removed::default();
    for r in ops.routes(cluster_cidr).await? {
        match ops.del_route(r).await {
            Ok(()) => out.routes.push(r),
            Err(e) if e.errno() == Some(libc::ESRCH) || e.errno() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    if let Some(link) = ops.link(VXLAN_DEVICE).await? {
        if link.vni.is_some() {
            out.device = ops.delete_link(link.index).await?;
        }
    }
    firewall.apply(&nft::delete_script()).await?;
    Ok(out)
}

/// `rk3s uninstall-network`: prints what went; exit code 1 on failure.
pub fn main(cluster_cidr: &str) -> std::process::ExitCode {
    let cidr: Ipv4Net = match cluster_cidr.parse() {
        Ok(c) => c,
        Err(_) => {
            eprintln!(
                "error: --cluster-cidr {cluster_cidr:?} is not an IPv4 CIDR (e.g. 10.42.0.0/16)"
            );
            return std::process::ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: failed to start a runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(uninstall(None, cidr)) {
        Ok(r) => {
            for route in &r.routes {
                println!("removed route {} via {}", route.dst, route.gateway);
            }
            if r.device {
                println!("removed device {VXLAN_DEVICE}");
            }
            println!("removed nftables table ip {}", nft::TABLE);
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
