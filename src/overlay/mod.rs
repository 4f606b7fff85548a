//! The pod overlay: what connects the `cni0` bridges of different nodes,
//! wire-compatible with flannel (k3s's built-in CNI), so an rk3s node can
//! sit beside flannel nodes and tools reading flannel's state keep working.
//!
//! Backends ([`FlannelBackend`]):
//! - **vxlan** (default): device `flannel.1`, VNI 1, UDP 8472, learning
//!   off, local = node IP, MTU = uplink MTU − 50, address
//!   `<pod subnet>.0/32`, transmit checksum offload off; per remote node,
//!   in flannel's order, a permanent neighbour (remote `.0` → its VTEP
//!   MAC), a permanent FDB entry (VTEP MAC → its public IP) and an on-link
//!   route (`<subnet> via <subnet>.0 dev flannel.1 onlink`);
//! - **host-gw**: per remote node a route `<subnet> via <public IP> dev
//!   <uplink>` (the nodes must share a link);
//! - **none**: the overlay does nothing (the agent still gives pods the
//!   local bridge; connecting nodes is the user's business).
//!
//! The node publishes flannel's annotations on its own Node
//! ([`annotations`]) and learns the others from theirs plus their
//! `spec.podCIDR`, through a watch on Nodes ([`controller`]).
//!
//! Invariants:
//! - Level-triggered: every pass computes the wanted entries from the
//!   Nodes and diffs them against what the kernel holds
//!   ([`peers::sync`]); nothing is remembered between passes but the VTEP
//!   MAC. A restarted agent therefore re-adopts everything in place: an
//!   entry that is already right is never deleted or rewritten (fail
//!   static), so flows survive restarts.
//! - Ownership: rk3s owns the device `flannel.1` with every neighbour and
//!   FDB entry on it, and the main-table routes into the cluster CIDR that
//!   go through `flannel.1` or (host-gw) through the uplink with a gateway.
//!   Nothing else is touched, and [`uninstall`] removes exactly these plus
//!   the nftables table `ip rk3s`.
//! - A peer's entries are added in flannel's order and a failed step rolls
//!   back the ones that pass added; stale entries go in reverse order
//!   (route, FDB, neighbour) before new ones are added.
//! - The VTEP MAC survives restarts and device deletion: the live device's
//!   MAC, else the state file `<state_dir>/vtep-mac`, else the Node's own
//!   `backend-data` annotation, else a fresh random one (then saved).
//! - Every kernel call goes through [`ops::OverlayOps`] (fake:
//!   `fake::FakeOverlayOps`); the module talks to the API only through
//!   kube-rs.
//!
//! Partial: IPv4 only; wireguard-native and other flannel backends are
//! refused; no DirectRouting for vxlan; the device is repaired by the
//! periodic pass ([`controller::RESYNC_PERIOD`]), not on netlink events.

pub mod annotations;
pub mod controller;
pub mod device;
#[cfg(test)]
pub mod fake;
pub mod linux;
pub mod nft;
pub mod ops;
pub mod peers;
pub mod uninstall;

use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;

pub use crate::config::FlannelBackend;
pub use controller::start;
pub use uninstall::uninstall;

/// flannel's VXLAN device name for VNI 1.
pub const VXLAN_DEVICE: &str = "flannel.1";
/// flannel's default VNI.
pub const VNI: u32 = 1;
/// The Linux VXLAN port flannel uses (not IANA's 4789).
pub const VXLAN_PORT: u16 = 8472;
/// Bytes of VXLAN encapsulation: outer IPv4 (20) + UDP (8) + VXLAN (8) +
/// inner Ethernet (14).
pub const VXLAN_OVERHEAD: u32 = 50;

/// Why the overlay failed.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("invalid overlay configuration: {0}")]
    Config(String),
    #[error("failed to {action}: {message}")]
    Netlink {
        action: String,
        message: String,
        /// The kernel's errno (positive), when the kernel answered.
        errno: Option<i32>,
    },
    #[error("failed to {action}: {source}")]
    Io {
        action: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "failed to create the VXLAN device {device}: this kernel has no vxlan support ({detail}). \
         Load it with `sudo modprobe vxlan`. On Ubuntu for Raspberry Pi the module is in a separate \
         package: `sudo apt install linux-modules-extra-raspi` (then reboot). Raspberry Pi OS kernels \
         ship vxlan built in or as a module: `sudo apt full-upgrade` if it is missing. \
         Or choose another backend on the server: --flannel-backend host-gw"
    )]
    VxlanUnsupported { device: String, detail: String },
    #[error("failed to find the underlay interface: {0}")]
    Uplink(String),
    #[error(transparent)]
    Firewall(#[from] crate::hostnet::nft::NftError),
    #[error("failed to {action}: {source}")]
    Api {
        action: String,
        #[source]
        source: kube::Error,
    },
}

impl OverlayError {
    pub(crate) fn io(action: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            action: action.into(),
            source,
        }
    }

    /// The kernel's errno, for netlink errors.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Netlink { errno, .. } => *errno,
            _ => None,
        }
    }
}

/// The node's overlay settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayConfig {
    /// This node's Node name (its own entry is skipped, its annotations set).
    pub node_name: String,
    pub backend: FlannelBackend,
    /// This node's share of the cluster CIDR (`spec.podCIDR`).
    pub pod_cidr: Ipv4Net,
    /// All pods (`--cluster-cidr`): routes inside it are the overlay's.
    pub cluster_cidr: Ipv4Net,
    /// The underlay address (`--node-ip`, or detected): VXLAN source.
    pub node_ip: Ipv4Addr,
    /// `--node-external-ip`: published as `public-ip-overwrite` and as the
    /// public IP other nodes send to.
    pub external_ip: Option<Ipv4Addr>,
    /// `--flannel-iface`: the underlay interface (default: the one holding
    /// the node IP).
    pub iface: Option<String>,
    /// Where the VTEP MAC is kept (`<agent dir>/overlay`).
    pub state_dir: PathBuf,
    /// The namespace that plays "the host" (`None`: the process's own).
    pub host_netns: Option<PathBuf>,
}

impl OverlayConfig {
    /// The address other nodes send this node's overlay traffic to.
    pub fn public_ip(&self) -> Ipv4Addr {
        self.external_ip.unwrap_or(self.node_ip)
    }

    /// The VXLAN device's address: the pod subnet's network address, /32.
    pub fn vtep_address(&self) -> Ipv4Net {
        Ipv4Net::new(self.pod_cidr.network(), 32).expect("/32 is valid")
    }

    /// Checks the settings fit together, saying what to fix.
    pub fn validate(&self) -> Result<(), OverlayError> {
        if !self.cluster_cidr.contains(&self.pod_cidr) {
            return Err(OverlayError::Config(format!(
                "the node's pod CIDR {} is not inside the cluster CIDR {}",
                self.pod_cidr, self.cluster_cidr
            )));
        }
        if self.node_ip.is_loopback() || self.node_ip.is_unspecified() {
            return Err(OverlayError::Config(format!(
                "the node IP {} cannot carry traffic between nodes; set --node-ip (or --flannel-iface)",
                self.node_ip
            )));
        }
        Ok(())
    }
}
