//! The cluster DNS address on the node: a dummy link (`rk3s-dns`) in the
//! host namespace holding 10.43.0.10/32, so packets from pods to that
//! address are delivered locally (as NodeLocal DNSCache does with its
//! `nodelocaldns` link). The link survives an agent restart: pods keep a
//! local destination, and the new process adopts the link as it finds it.
//!
//! Kernels built without the dummy driver (some VM and container kernels)
//! refuse the link with EOPNOTSUPP; the address then goes on `lo`, which
//! delivers it locally the same way.

use std::net::IpAddr;
use std::path::PathBuf;

use async_trait::async_trait;
use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::{Handle, LinkDummy, LinkUnspec};

use crate::hostnet::netlink::{self, errno};

/// The link's name.
pub const LINK: &str = "rk3s-dns";

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("failed to {action}: {source}")]
    Netlink {
        action: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("failed to open a netlink socket: {0}")]
    Open(#[source] std::io::Error),
}

/// The netlink operations cluster DNS needs.
#[async_trait]
pub trait LinkOps: Send + Sync + 'static {
    /// Creates `link` (dummy) if missing, puts `ip` (host prefix) on it and
    /// brings it up. Idempotent.
    async fn ensure_address(&self, link: &str, ip: IpAddr) -> Result<(), LinkError>;
    /// Deletes `link` if present, and `ip` from `lo` (the fallback).
    async fn remove(&self, link: &str, ip: IpAddr) -> Result<(), LinkError>;
}

/// [`LinkOps`] over rtnetlink.
pub struct NetlinkOps {
    handle: Handle,
}

impl NetlinkOps {
    /// A netlink connection in `netns` (the process's namespace when `None`).
    pub async fn connect(netns: Option<PathBuf>) -> Result<Self, LinkError> {
        let handle = netlink::open_handle(netns).await.map_err(LinkError::Open)?;
        Ok(NetlinkOps { handle })
    }

    async fn index(&self, link: &str) -> Result<Option<u32>, LinkError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(link.to_string())
            .execute();
        match links.try_next().await {
            Ok(l) => Ok(l.map(|l| l.header.index)),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(source) => Err(LinkError::Netlink {
                action: format!("look up link {link}"),
                source,
            }),
        }
    }
}

fn nl(action: String) -> impl FnOnce(rtnetlink::Error) -> LinkError {
    move |source| LinkError::Netlink { action, source }
}

#[async_trait]
impl LinkOps for NetlinkOps {
    async fn ensure_address(&self, link: &str, ip: IpAddr) -> Result<(), LinkError> {
        let (index, link) = match self.index(link).await? {
            Some(i) => (i, link),
            None => {
                match self
                    .handle
                    .link()
                    .add(LinkDummy::new(link).build())
                    .execute()
                    .await
                {
                    Ok(()) => {}
                    Err(e) if errno(&e) == Some(libc::EEXIST) => {}
                    Err(e) if errno(&e) == Some(libc::EOPNOTSUPP) => {
                        tracing::info!(
                            "this kernel has no dummy links: the cluster DNS address goes on lo"
                        );
                    }
                    Err(e) => return Err(nl(format!("create dummy link {link}"))(e)),
                }
                match self.index(link).await? {
                    Some(i) => (i, link),
                    None => (self.require("lo").await?, "lo"),
                }
            }
        };
        self.add_address(index, link, ip).await
    }

    async fn remove(&self, link: &str, ip: IpAddr) -> Result<(), LinkError> {
        if let Some(index) = self.index(link).await? {
            match self.handle.link().del(index).execute().await {
                Ok(()) => {}
                Err(e) if errno(&e) == Some(libc::ENODEV) => {}
                Err(e) => return Err(nl(format!("delete link {link}"))(e)),
            }
        }
        let lo = self.require("lo").await?;
        if self.has_address(lo, "lo", ip).await? {
            let messages: Vec<_> = self.addresses(lo, "lo").await?;
            for m in messages.into_iter().filter(|m| holds(m, ip)) {
                match self.handle.address().del(m).execute().await {
                    Ok(()) => {}
                    Err(e) if errno(&e) == Some(libc::EADDRNOTAVAIL) => {}
                    Err(e) => return Err(nl(format!("remove {ip} from lo"))(e)),
                }
            }
        }
        Ok(())
    }
}

fn holds(m: &AddressMessage, ip: IpAddr) -> bool {
    m.attributes
        .iter()
        .any(|a| matches!(a, AddressAttribute::Address(a) | AddressAttribute::Local(a) if *a == ip))
}

impl NetlinkOps {
    async fn require(&self, link: &str) -> Result<u32, LinkError> {
        self.index(link).await?.ok_or_else(|| LinkError::Netlink {
            action: format!("find link {link}"),
            source: rtnetlink::Error::RequestFailed,
        })
    }

    async fn addresses(&self, index: u32, link: &str) -> Result<Vec<AddressMessage>, LinkError> {
        self.handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(nl(format!("list the addresses of {link}")))
    }

    async fn has_address(&self, index: u32, link: &str, ip: IpAddr) -> Result<bool, LinkError> {
        Ok(self
            .addresses(index, link)
            .await?
            .iter()
            .any(|m| holds(m, ip)))
    }

    async fn add_address(&self, index: u32, link: &str, ip: IpAddr) -> Result<(), LinkError> {
        if !self.has_address(index, link, ip).await? {
            let prefix = if ip.is_ipv4() { 32 } else { 128 };
            self.handle
                .address()
                .add(index, ip, prefix)
                .replace()
                .execute()
                .await
                .map_err(nl(format!("add {ip} to {link}")))?;
        }
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(nl(format!("bring {link} up")))
    }
}

/// Records every call, for unit tests.
#[cfg(test)]
#[derive(Default)]
pub struct FakeLinkOps {
    pub calls: std::sync::Mutex<Vec<String>>,
}

#[cfg(test)]
#[async_trait]
impl LinkOps for FakeLinkOps {
    async fn ensure_address(&self, link: &str, ip: IpAddr) -> Result<(), LinkError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("ensure {link} {ip}"));
        Ok(())
    }

    async fn remove(&self, link: &str, ip: IpAddr) -> Result<(), LinkError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("remove {link} {ip}"));
        Ok(())
    }
}
