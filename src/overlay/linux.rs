//! [`OverlayOps`] against the Linux kernel: rtnetlink for links,
//! addresses, neighbours, FDB entries and routes (one socket opened in the
//! host namespace with [`crate::hostnet::netlink::open_handle`]), and the
//! `SIOCETHTOOL` ioctl for transmit checksum offload (what `ethtool -K
//! DEV tx off` does), issued on a socket created inside the namespace.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use async_trait::async_trait;
use futures::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, LinkUnspec, LinkVxlan, RouteMessageBuilder};

use super::ops::{Fdb, LinkState, Mac, Neighbour, OverlayOps, Route, Uplink, VxlanSpec};
use super::OverlayError;
use crate::hostnet::{netlink, netns};

/// The real kernel, in one namespace.
pub struct LinuxOverlayOps {
    netns: Option<PathBuf>,
    handle: Handle,
}

impl LinuxOverlayOps {
    /// Connects to netlink in `netns` (the process's namespace when `None`).
    pub async fn connect(netns: Option<PathBuf>) -> Result<Self, OverlayError> {
        let handle = netlink::open_handle(netns.clone())
            .await
            .map_err(|e| OverlayError::io("open a netlink socket", e))?;
        Ok(Self { netns, handle })
    }
}

fn nl(action: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> OverlayError {
    let action = action.into();
    move |e| OverlayError::Netlink {
        action,
        errno: netlink::errno(&e),
        message: e.to_string(),
    }
}

fn mac_of(bytes: &[u8]) -> Option<Mac> {
    <[u8; 6]>::try_from(bytes).ok().map(Mac)
}

async fn all_links(h: &Handle) -> Result<Vec<LinkMessage>, OverlayError> {
    h.link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(nl("list links"))
}

fn link_name(m: &LinkMessage) -> Option<&str> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

fn link_mtu(m: &LinkMessage) -> u32 {
    m.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Mtu(v) => Some(*v),
            _ => None,
        })
        .unwrap_or(1500)
}

async fn ipv4_addresses(
    h: &Handle,
    index: Option<u32>,
) -> Result<Vec<(u32, Ipv4Net)>, OverlayError> {
    let mut req = h.address().get();
    if let Some(i) = index {
        req = req.set_link_index_filter(i);
    }
    let msgs: Vec<AddressMessage> = req
        .execute()
        .try_collect()
        .await
        .map_err(nl("list addresses"))?;
    let mut out = Vec::new();
    for m in msgs
        .iter()
        .filter(|m| m.header.family == AddressFamily::Inet)
    {
        for a in &m.attributes {
            if let AddressAttribute::Local(IpAddr::V4(ip))
            | AddressAttribute::Address(IpAddr::V4(ip)) = a
            {
                if let Ok(net) = Ipv4Net::new(*ip, m.header.prefix_len) {
                    if !out.contains(&(m.header.index, net)) {
                        out.push((m.header.index, net));
                    }
                }
            }
        }
    }
    Ok(out)
}

#[async_trait]
impl OverlayOps for LinuxOverlayOps {
    async fn uplink(&self, iface: Option<&str>, ip: Ipv4Addr) -> Result<Uplink, OverlayError> {
        let links = all_links(&self.handle).await?;
        let found = match iface {
            Some(name) => links
                .iter()
                .find(|l| link_name(l) == Some(name))
                .ok_or_else(|| {
                    OverlayError::Uplink(format!("--flannel-iface {name}: no such interface"))
                })?,
            None => {
                let addrs = ipv4_addresses(&self.handle, None).await?;
                let index = addrs.iter().find(|(_, n)| n.addr() == ip).map(|(i, _)| *i).ok_or_else(|| {
                    OverlayError::Uplink(format!(
                        "no interface has the node IP {ip}; set --node-ip to one of this machine's addresses or name the interface with --flannel-iface"
                    ))
                })?;
                links
                    .iter()
                    .find(|l| l.header.index == index)
                    .ok_or_else(|| {
                        OverlayError::Uplink(format!("the interface holding {ip} vanished"))
                    })?
            }
        };
        Ok(Uplink {
            name: link_name(found).unwrap_or_default().to_string(),
            index: found.header.index,
            mtu: link_mtu(found),
        })
    }

    async fn link(&self, name: &str) -> Result<Option<LinkState>, OverlayError> {
        let mut stream = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        let m = match stream.try_next().await {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(None),
            Err(e) if netlink::errno(&e) == Some(libc::ENODEV) => return Ok(None),
            Err(e) => return Err(nl(format!("look up link {name}"))(e)),
        };
        let mut state = LinkState {
            index: m.header.index,
            mac: Mac([0; 6]),
            mtu: link_mtu(&m),
            up: m.header.flags.contains(LinkFlags::Up),
            vni: None,
            port: None,
            local: None,
            learning: None,
            addresses: Vec::new(),
        };
        let mut vxlan = false;
        for a in &m.attributes {
            match a {
                LinkAttribute::Address(b) => state.mac = mac_of(b).unwrap_or(Mac([0; 6])),
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        match i {
                            LinkInfo::Kind(InfoKind::Vxlan) => vxlan = true,
                            LinkInfo::Data(InfoData::Vxlan(data)) => {
                                for d in data {
                                    match d {
                                        InfoVxlan::Id(v) => state.vni = Some(*v),
                                        InfoVxlan::Port(p) => state.port = Some(*p),
                                        InfoVxlan::Local(ip) => state.local = Some(*ip),
                                        InfoVxlan::Learning(l) => state.learning = Some(*l),
                                        _ => {}
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        if !vxlan {
            state.vni = None;
            state.port = None;
            state.local = None;
            state.learning = None;
        }
        state.addresses = ipv4_addresses(&self.handle, Some(state.index))
            .await?
            .into_iter()
            .map(|(_, n)| n)
            .collect();
        Ok(Some(state))
    }

    async fn create_vxlan(&self, spec: &VxlanSpec) -> Result<(), OverlayError> {
        let msg = LinkVxlan::new(&spec.name, spec.vni)
            .dev(spec.uplink)
            .port(spec.port)
            .local(spec.local)
            .learning(false)
            .mtu(spec.mtu)
            .address(spec.mac.0.to_vec())
            .build();
        match self.handle.link().add(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) if netlink::errno(&e) == Some(libc::EOPNOTSUPP) => {
                Err(OverlayError::VxlanUnsupported {
                    device: spec.name.clone(),
                    detail: e.to_string(),
                })
            }
            Err(e) => Err(nl(format!("create the VXLAN device {}", spec.name))(e)),
        }
    }

    async fn delete_link(&self, index: u32) -> Result<bool, OverlayError> {
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(true),
            Err(e) if netlink::errno(&e) == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(nl(format!("delete link #{index}"))(e)),
        }
    }

    async fn set_link_up(&self, index: u32, mtu: u32) -> Result<(), OverlayError> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).mtu(mtu).up().build())
            .execute()
            .await
            .map_err(nl(format!("set link #{index} up with MTU {mtu}")))
    }

    async fn add_address(&self, index: u32, address: Ipv4Net) -> Result<(), OverlayError> {
        self.handle
            .address()
            .add(index, IpAddr::V4(address.addr()), address.prefix_len())
            .replace()
            .execute()
            .await
            .map_err(nl(format!("add {address} to link #{index}")))
    }

    async fn del_address(&self, index: u32, address: Ipv4Net) -> Result<(), OverlayError> {
        let msgs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(IpAddr::V4(address.addr()))
            .execute()
            .try_collect()
            .await
            .map_err(nl(format!("find {address} on link #{index}")))?;
        for m in msgs {
            self.handle
                .address()
                .del(m)
                .execute()
                .await
                .map_err(nl(format!("remove {address} from link #{index}")))?;
        }
        Ok(())
    }

    async fn tx_checksum(&self, name: &str) -> Result<bool, OverlayError> {
        let n = name.to_string();
        let v = netns::run_in(self.netns.clone(), move || ethtool(&n, ETHTOOL_GTXCSUM, 0))
            .await
            .map_err(|e| OverlayError::io(format!("read the checksum offload of {name}"), e))?;
        Ok(v != 0)
    }

    async fn disable_tx_checksum(&self, name: &str) -> Result<(), OverlayError> {
        let n = name.to_string();
        netns::run_in(self.netns.clone(), move || {
            ethtool(&n, ETHTOOL_STXCSUM, 0).map(|_| ())
        })
        .await
        .map_err(|e| OverlayError::io(format!("turn transmit checksum offload off on {name}"), e))
    }

    async fn neighbours(&self, index: u32) -> Result<Vec<Neighbour>, OverlayError> {
        let msgs = self.neighbour_dump(AddressFamily::Inet).await?;
        Ok(msgs
            .iter()
            .filter(|m| m.header.ifindex == index && m.header.state == NeighbourState::Permanent)
            .filter_map(|m| {
                let (ip, mac) = neighbour_parts(m);
                Some(Neighbour { ip: ip?, mac: mac? })
            })
            .collect())
    }

    async fn add_neighbour(&self, index: u32, n: Neighbour) -> Result<(), OverlayError> {
        self.handle
            .neighbours()
            .add(index, IpAddr::V4(n.ip))
            .link_layer_address(&n.mac.0)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(nl(format!("add neighbour {} lladdr {}", n.ip, n.mac)))
    }

    async fn del_neighbour(&self, index: u32, n: Neighbour) -> Result<(), OverlayError> {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.ifindex = index;
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                n.ip,
            )));
        self.handle
            .neighbours()
            .del(m)
            .execute()
            .await
            .map_err(nl(format!("delete neighbour {}", n.ip)))
    }

    async fn fdb(&self, index: u32) -> Result<Vec<Fdb>, OverlayError> {
        let msgs = self.neighbour_dump(AddressFamily::Bridge).await?;
        Ok(msgs
            .iter()
            .filter(|m| m.header.ifindex == index && m.header.state == NeighbourState::Permanent)
            .filter_map(|m| {
                let (dst, mac) = neighbour_parts(m);
                Some(Fdb {
                    mac: mac?,
                    dst: dst?,
                })
            })
            .collect())
    }

    async fn add_fdb(&self, index: u32, f: Fdb) -> Result<(), OverlayError> {
        self.handle
            .neighbours()
            .add_bridge(index, &f.mac.0)
            .destination(IpAddr::V4(f.dst))
            .flags(NeighbourFlags::Own)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(nl(format!("add FDB entry {} dst {}", f.mac, f.dst)))
    }

    async fn del_fdb(&self, index: u32, f: Fdb) -> Result<(), OverlayError> {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Bridge;
        m.header.ifindex = index;
        m.header.flags = NeighbourFlags::Own;
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(f.mac.0.to_vec()));
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                f.dst,
            )));
        self.handle
            .neighbours()
            .del(m)
            .execute()
            .await
            .map_err(nl(format!("delete FDB entry {} dst {}", f.mac, f.dst)))
    }

    async fn routes(&self, within: Ipv4Net) -> Result<Vec<Route>, OverlayError> {
        let filter = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let msgs: Vec<RouteMessage> = self
            .handle
            .route()
            .get(filter)
            .execute()
            .try_collect()
            .await
            .map_err(nl("list routes"))?;
        Ok(msgs.iter().filter_map(|m| parse_route(m, within)).collect())
    }

    async fn add_route(&self, r: Route) -> Result<(), OverlayError> {
        self.handle
            .route()
            .add(route_message(r, RouteProtocol::Boot))
            .replace()
            .execute()
            .await
            .map_err(nl(format!("add route {} via {}", r.dst, r.gateway)))
    }

    async fn del_route(&self, r: Route) -> Result<(), OverlayError> {
        self.handle
            .route()
            .del(route_message(r, RouteProtocol::Unspec))
            .execute()
            .await
            .map_err(nl(format!("delete route {} via {}", r.dst, r.gateway)))
    }
}

impl LinuxOverlayOps {
    async fn neighbour_dump(
        &self,
        family: AddressFamily,
    ) -> Result<Vec<NeighbourMessage>, OverlayError> {
        self.handle
            .neighbours()
            .get()
            .set_address_family(family)
            .execute()
            .try_collect()
            .await
            .map_err(nl("list neighbours"))
    }
}

fn neighbour_parts(m: &NeighbourMessage) -> (Option<Ipv4Addr>, Option<Mac>) {
    let mut ip = None;
    let mut mac = None;
    for a in &m.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v)) => ip = Some(*v),
            // FDB (AF_BRIDGE) dumps carry the VTEP address undecoded.
            NeighbourAttribute::Destination(NeighbourAddress::Other(b)) if b.len() == 4 => {
                ip = Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
            }
            NeighbourAttribute::LinkLayerAddress(b) => mac = mac_of(b),
            _ => {}
        }
    }
    (ip, mac)
}

/// A route as flannel adds it: protocol `boot` (what `ip route add`
/// gives, printed as nothing), so `ip route` shows the same line as on a
/// flannel node. Deletions say `Unspec`, which matches any protocol.
fn route_message(r: Route, protocol: RouteProtocol) -> RouteMessage {
    let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
        .protocol(protocol)
        .destination_prefix(r.dst.addr(), r.dst.prefix_len())
        .gateway(r.gateway)
        .output_interface(r.link);
    if r.onlink {
        b = b.onlink();
    }
    b.build()
}

/// A main-table IPv4 route with a gateway and an output link, inside `within`.
fn parse_route(m: &RouteMessage, within: Ipv4Net) -> Option<Route> {
    let mut table = u32::from(m.header.table);
    let (mut dst, mut gw, mut oif) = (Ipv4Addr::UNSPECIFIED, None, None);
    for a in &m.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(RouteAddress::Inet(v)) => dst = *v,
            RouteAttribute::Gateway(RouteAddress::Inet(v)) => gw = Some(*v),
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    if m.header.address_family != AddressFamily::Inet
        || table != u32::from(RouteHeader::RT_TABLE_MAIN)
    {
        return None;
    }
    let dst = Ipv4Net::new(dst, m.header.destination_prefix_length).ok()?;
    if !within.contains(&dst) {
        return None;
    }
    Some(Route {
        dst,
        gateway: gw?,
        link: oif?,
        onlink: m.header.flags.contains(RouteFlags::Onlink),
    })
}

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GTXCSUM: u32 = 0x16;
const ETHTOOL_STXCSUM: u32 = 0x17;

#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// `struct ifreq` with the `ifr_data` member of its union, padded to the
/// union's full size.
#[repr(C)]
struct IfReqData {
    name: [u8; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

/// One `SIOCETHTOOL` get/set of a `struct ethtool_value`, on the calling
/// thread's namespace; returns the value's data.
fn ethtool(name: &str, cmd: u32, data: u32) -> std::io::Result<u32> {
    if name.len() >= libc::IFNAMSIZ {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    let mut value = EthtoolValue { cmd, data };
    let mut req = IfReqData {
        name: [0; libc::IFNAMSIZ],
        data: &mut value as *mut EthtoolValue as *mut libc::c_void,
        _pad: [0; 16],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: a plain datagram socket, closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `req` and `value` outlive the call; the kernel reads `cmd`
    // and reads or writes `data` through `ifr_data`.
    let rc = unsafe { libc::ioctl(fd, SIOCETHTOOL as _, &mut req as *mut IfReqData) };
    let err = std::io::Error::last_os_error();
    // SAFETY: closing the socket opened above.
    unsafe { libc::close(fd) };
    if rc < 0 {
        return Err(err);
    }
    Ok(value.data)
}

impl std::fmt::Debug for LinuxOverlayOps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinuxOverlayOps")
            .field("netns", &self.netns)
            .finish_non_exhaustive()
    }
}
