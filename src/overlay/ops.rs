//! The kernel boundary of the overlay: the VXLAN link, its addresses and
//! offload features, neighbours, FDB entries and routes. [`super::linux`]
//! implements it over rtnetlink (and one ethtool ioctl), [`super::fake`]
//! records calls over a small model for unit tests.
//!
//! The operations are primitives: every decision (what to create, what is
//! stale, in which order, what to roll back) lives in [`super::device`] and
//! [`super::peers`], where the fake can check it.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use async_trait::async_trait;
use ipnet::Ipv4Net;

use super::OverlayError;

/// An Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// A random, locally administered, unicast address (as the kernel gives
    /// a new VXLAN device).
    pub fn random() -> Self {
        let mut b: [u8; 6] = rand::random();
        b[0] = (b[0] & 0xfe) | 0x02;
        Mac(b)
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<_> = s.trim().split(':').collect();
        if parts.len() != 6 {
            return Err(format!(
                "{s:?} is not a MAC address (six hex bytes with ':')"
            ));
        }
        let mut b = [0u8; 6];
        for (i, p) in parts.iter().enumerate() {
            if p.len() != 2 {
                return Err(format!("{s:?} is not a MAC address"));
            }
            b[i] = u8::from_str_radix(p, 16).map_err(|_| format!("{s:?} is not a MAC address"))?;
        }
        Ok(Mac(b))
    }
}

/// The underlay interface: where the node IP lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uplink {
    pub name: String,
    pub index: u32,
    pub mtu: u32,
}

/// What a VXLAN device should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSpec {
    pub name: String,
    pub vni: u32,
    pub port: u16,
    /// The source address of encapsulated packets (the node IP).
    pub local: Ipv4Addr,
    /// The underlay device index.
    pub uplink: u32,
    pub mtu: u32,
    pub mac: Mac,
}

/// A link as the kernel reports it. The VXLAN fields are `None` when the
/// link is not a VXLAN device (someone else's link with our name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    pub index: u32,
    pub mac: Mac,
    pub mtu: u32,
    pub up: bool,
    pub vni: Option<u32>,
    pub port: Option<u16>,
    pub local: Option<Ipv4Addr>,
    pub learning: Option<bool>,
    pub addresses: Vec<Ipv4Net>,
}

/// A permanent neighbour entry on the VXLAN device: remote VTEP address
/// (the remote subnet's `.0`) to its MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Neighbour {
    pub ip: Ipv4Addr,
    pub mac: Mac,
}

/// A permanent FDB entry on the VXLAN device (`NTF_SELF`): remote VTEP MAC
/// to the remote node's public IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fdb {
    pub mac: Mac,
    pub dst: Ipv4Addr,
}

/// A route in the main table: `dst via gateway dev link [onlink]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    pub dst: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub link: u32,
    pub onlink: bool,
}

/// See the module docs. Every method works in the overlay's host namespace.
#[async_trait]
pub trait OverlayOps: Send + Sync {
    /// The underlay: the interface named `iface`, or the one holding `ip`.
    async fn uplink(&self, iface: Option<&str>, ip: Ipv4Addr) -> Result<Uplink, OverlayError>;
    /// The link called `name`, if any.
    async fn link(&self, name: &str) -> Result<Option<LinkState>, OverlayError>;
    /// Creates a VXLAN device (learning off); [`OverlayError::VxlanUnsupported`]
    /// when the kernel has no vxlan support.
    async fn create_vxlan(&self, spec: &VxlanSpec) -> Result<(), OverlayError>;
    /// Deletes link `index`; false when it was already gone.
    async fn delete_link(&self, index: u32) -> Result<bool, OverlayError>;
    /// Sets the MTU and brings the link up.
    async fn set_link_up(&self, index: u32, mtu: u32) -> Result<(), OverlayError>;
    async fn add_address(&self, index: u32, address: Ipv4Net) -> Result<(), OverlayError>;
    async fn del_address(&self, index: u32, address: Ipv4Net) -> Result<(), OverlayError>;
    /// Whether transmit checksum offload is on for link `name`.
    async fn tx_checksum(&self, name: &str) -> Result<bool, OverlayError>;
    /// Turns transmit checksum offload off (`ethtool -K NAME tx off`).
    async fn disable_tx_checksum(&self, name: &str) -> Result<(), OverlayError>;
    /// The permanent IPv4 neighbours on link `index`.
    async fn neighbours(&self, index: u32) -> Result<Vec<Neighbour>, OverlayError>;
    async fn add_neighbour(&self, index: u32, n: Neighbour) -> Result<(), OverlayError>;
    async fn del_neighbour(&self, index: u32, n: Neighbour) -> Result<(), OverlayError>;
    /// The permanent FDB entries with a destination on link `index`.
    async fn fdb(&self, index: u32) -> Result<Vec<Fdb>, OverlayError>;
    async fn add_fdb(&self, index: u32, f: Fdb) -> Result<(), OverlayError>;
    async fn del_fdb(&self, index: u32, f: Fdb) -> Result<(), OverlayError>;
    /// Main-table IPv4 routes with a gateway whose destination lies inside
    /// `within`.
    async fn routes(&self, within: Ipv4Net) -> Result<Vec<Route>, OverlayError>;
    async fn add_route(&self, r: Route) -> Result<(), OverlayError>;
    async fn del_route(&self, r: Route) -> Result<(), OverlayError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_round_trip_and_random_ones_are_local_unicast() {
        let m: Mac = "0A:1b:2c:3d:4e:5f".parse().unwrap();
        assert_eq!(m.to_string(), "0a:1b:2c:3d:4e:5f");
        assert!("0a:1b:2c".parse::<Mac>().is_err());
        assert!("zz:1b:2c:3d:4e:5f".parse::<Mac>().is_err());
        let r = Mac::random();
        assert_eq!(r.0[0] & 0x03, 0x02);
    }
}
