//! [`NetOps`] against the Linux kernel: rtnetlink for links, addresses and
//! routes; namespace files from [`crate::hostnet::netns`]; `/proc/sys` for sysctls.
//!
//! The host-side netlink socket is opened once, inside the host namespace
//! given at construction (the process's own when `None`): a netlink socket
//! stays bound to the namespace it was created in, so every later request
//! on it works there whatever thread sends it. Work inside a pod namespace
//! opens a short-lived socket in that namespace the same way.

use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use futures::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, LinkBridge, LinkBridgePort, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::hostnet::netlink::{self, errno};
use crate::hostnet::netns;
use super::ops::{NetOps, PodInterface};
use super::NetworkError;

/// The real kernel operations, bound to one host namespace.
pub struct LinuxNetOps {
    host_netns: Option<PathBuf>,
    handle: Handle,
}

impl LinuxNetOps {
    /// Connects to netlink in `host_netns` (a namespace file such as
    /// `/var/run/netns/x`), or in the process's namespace when `None`.
    /// Must be called inside a tokio runtime, which drives the connection.
    pub async fn connect(host_netns: Option<PathBuf>) -> Result<Self, NetworkError> {
        let handle = open_handle(host_netns.clone(), "the host network namespace").await?;
        Ok(Self { host_netns, handle })
    }
}

/// Opens a netlink connection inside `netns`; see [`crate::hostnet::netlink`].
async fn open_handle(netns: Option<PathBuf>, what: &str) -> Result<Handle, NetworkError> {
    netlink::open_handle(netns)
        .await
        .map_err(|e| NetworkError::io(format!("open a netlink socket in {what}"), e))
}

fn nl(action: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetworkError {
    let action = action.into();
    move |source| NetworkError::Netlink { action, source }
}

async fn link_index(handle: &Handle, name: &str) -> Result<Option<u32>, NetworkError> {
    let mut links = handle.link().get().match_name(name).execute();
    match links.try_next().await {
        Ok(link) => Ok(link.map(|l| l.header.index)),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(nl(format!("look up link {name}"))(e)),
    }
}

async fn require_link(handle: &Handle, name: &str, place: &str) -> Result<u32, NetworkError> {
    link_index(handle, name)
        .await?
        .ok_or_else(|| NetworkError::LinkNotFound {
            name: name.to_string(),
            place: place.to_string(),
        })
}

async fn ipv4_addresses(handle: &Handle, index: u32) -> Result<Vec<Ipv4Net>, NetworkError> {
    let messages: Vec<AddressMessage> = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(nl(format!("list the addresses of link #{index}")))?;
    let mut out = Vec::new();
    for m in messages {
        if m.header.family != AddressFamily::Inet {
            continue;
        }
        for attr in &m.attributes {
            if let AddressAttribute::Local(IpAddr::V4(ip))
            | AddressAttribute::Address(IpAddr::V4(ip)) = attr
            {
                if let Ok(net) = Ipv4Net::new(*ip, m.header.prefix_len) {
                    if !out.contains(&net) {
                        out.push(net);
                    }
                }
            }
        }
    }
    Ok(out)
}

#[async_trait]
impl NetOps for LinuxNetOps {
    async fn ensure_bridge(
        &self,
        name: &str,
        address: Ipv4Net,
        mtu: u32,
    ) -> Result<(), NetworkError> {
        let h = &self.handle;
        let index = match link_index(h, name).await? {
            Some(index) => index,
            None => {
                let created = h
                    .link()
                    .add(LinkBridge::new(name).mtu(mtu).build())
                    .execute()
                    .await;
                match created {
                    Ok(()) => {}
                    // Another caller won the race: fine, it is the same bridge.
                    Err(e) if errno(&e) == Some(libc::EEXIST) => {}
                    Err(e) => return Err(nl(format!("create bridge {name}"))(e)),
                }
                require_link(h, name, "the host namespace").await?
            }
        };
        let present = ipv4_addresses(h, index).await?;
        if let Some(other) = present.iter().find(|a| **a != address) {
            return Err(NetworkError::BridgeAddressConflict {
                bridge: name.to_string(),
                found: *other,
                expected: address,
            });
        }
        if present.is_empty() {
            h.address()
                .add(index, IpAddr::V4(address.addr()), address.prefix_len())
                .replace()
                .execute()
                .await
                .map_err(nl(format!("add {address} to bridge {name}")))?;
        }
        h.link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(nl(format!("bring bridge {name} up")))
    }

    async fn enable_ip_forwarding(&self) -> Result<(), NetworkError> {
        // /proc/sys/net resolves to the namespace of the thread that opens it.
        netns::run_in(self.host_netns.clone(), || {
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        })
        .await
        .map_err(|e| NetworkError::io("set net.ipv4.ip_forward=1", e))
    }

    async fn create_netns(&self, path: &Path) -> Result<(), NetworkError> {
        netns::create(path.to_path_buf()).await.map_err(|e| {
            NetworkError::io(format!("create network namespace {}", path.display()), e)
        })
    }

    async fn delete_netns(&self, path: &Path) -> Result<bool, NetworkError> {
        netns::delete(path.to_path_buf()).await.map_err(|e| {
            NetworkError::io(format!("delete network namespace {}", path.display()), e)
        })
    }

    async fn netns_exists(&self, path: &Path) -> Result<bool, NetworkError> {
        Ok(netns::is_netns(path))
    }

    async fn list_netns(&self, dir: &Path) -> Result<Vec<String>, NetworkError> {
        netns::list(dir).map_err(|e| {
            NetworkError::io(format!("list network namespaces in {}", dir.display()), e)
        })
    }

    async fn create_veth(&self, host: &str, peer: &str, mtu: u32) -> Result<(), NetworkError> {
        self.handle
            .link()
            .add(LinkVeth::new(host, peer).mtu(mtu).build())
            .execute()
            .await
            .map_err(nl(format!("create veth pair {host}/{peer}")))
    }

    async fn attach_to_bridge(&self, link: &str, bridge: &str) -> Result<(), NetworkError> {
        let h = &self.handle;
        let bridge_index = require_link(h, bridge, "the host namespace").await?;
        let index = require_link(h, link, "the host namespace").await?;
        h.link()
            .set(
                LinkUnspec::new_with_index(index)
                    .controller(bridge_index)
                    .build(),
            )
            .execute()
            .await
            .map_err(nl(format!("attach {link} to bridge {bridge}")))?;
        h.link()
            .set_port(LinkBridgePort::new(index).hairpin(true).build())
            .execute()
            .await
            .map_err(nl(format!("enable hairpin mode on {link}")))?;
        h.link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(nl(format!("bring {link} up")))
    }

    async fn move_to_netns(&self, link: &str, netns: &Path) -> Result<(), NetworkError> {
        let h = &self.handle;
        let index = require_link(h, link, "the host namespace").await?;
        let file = std::fs::File::open(netns).map_err(|e| {
            NetworkError::io(format!("open network namespace {}", netns.display()), e)
        })?;
        h.link()
            .set(
                LinkUnspec::new_with_index(index)
                    .setns_by_fd(file.as_raw_fd())
                    .build(),
            )
            .execute()
            .await
            .map_err(nl(format!("move {link} into {}", netns.display())))
    }

    async fn configure_pod_interface(
        &self,
        netns: &Path,
        iface: &PodInterface,
    ) -> Result<(), NetworkError> {
        let place = netns.display().to_string();
        let h = open_handle(Some(netns.to_path_buf()), &place).await?;
        let lo = require_link(&h, "lo", &place).await?;
        h.link()
            .set(LinkUnspec::new_with_index(lo).up().build())
            .execute()
            .await
            .map_err(nl(format!("bring lo up in {place}")))?;
        let index = require_link(&h, &iface.current_name, &place).await?;
        h.link()
            .set(
                LinkUnspec::new_with_index(index)
                    .name(iface.name.clone())
                    .mtu(iface.mtu)
                    .build(),
            )
            .execute()
            .await
            .map_err(nl(format!(
                "rename {} to {} in {place}",
                iface.current_name, iface.name
            )))?;
        h.address()
            .add(
                index,
                IpAddr::V4(iface.address.addr()),
                iface.address.prefix_len(),
            )
            .replace()
            .execute()
            .await
            .map_err(nl(format!(
                "add {} to {} in {place}",
                iface.address, iface.name
            )))?;
        h.link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(nl(format!("bring {} up in {place}", iface.name)))?;
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
            .gateway(iface.gateway)
            .output_interface(index)
            .build();
        h.route()
            .add(route)
            .replace()
            .execute()
            .await
            .map_err(nl(format!(
                "add the default route via {} in {place}",
                iface.gateway
            )))
    }

    async fn pod_addresses(&self, netns: &Path, link: &str) -> Result<Vec<Ipv4Net>, NetworkError> {
        let place = netns.display().to_string();
        let h = open_handle(Some(netns.to_path_buf()), &place).await?;
        match link_index(&h, link).await? {
            Some(index) => ipv4_addresses(&h, index).await,
            None => Ok(Vec::new()),
        }
    }

    async fn link_exists(&self, name: &str) -> Result<bool, NetworkError> {
        Ok(link_index(&self.handle, name).await?.is_some())
    }

    async fn delete_link(&self, name: &str) -> Result<bool, NetworkError> {
        let Some(index) = link_index(&self.handle, name).await? else {
            return Ok(false);
        };
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(true),
            // Gone meanwhile (its peer's namespace died, or a concurrent teardown).
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(nl(format!("delete link {name}"))(e)),
        }
    }
}

impl std::fmt::Debug for LinuxNetOps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinuxNetOps")
            .field("host_netns", &self.host_netns)
            .finish_non_exhaustive()
    }
}
