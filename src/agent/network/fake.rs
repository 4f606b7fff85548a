//! Recording fakes of [`NetOps`] and [`Firewall`] for unit tests: they keep
//! a small model of the kernel state (links per namespace, namespace
//! files, addresses), record every call in order, and can be told to fail
//! a given operation once.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use ipnet::Ipv4Net;

use super::ops::{NetOps, PodInterface};
use super::NetworkError;

/// One call the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetCall {
    EnsureBridge {
        name: String,
        address: Ipv4Net,
        mtu: u32,
    },
    EnableIpForwarding,
    CreateNetns(PathBuf),
    DeleteNetns(PathBuf),
    CreateVeth {
        host: String,
        peer: String,
        mtu: u32,
    },
    AttachToBridge {
        link: String,
        bridge: String,
    },
    MoveToNetns {
        link: String,
        netns: PathBuf,
    },
    ConfigurePodInterface {
        netns: PathBuf,
        iface: PodInterface,
    },
    DeleteLink(String),
}

/// Where a fake link lives: the host, or a namespace path.
type Place = Option<PathBuf>;

#[derive(Default)]
struct State {
    calls: Vec<NetCall>,
    /// (place, name) → addresses.
    links: BTreeMap<(Place, String), Vec<Ipv4Net>>,
    netns: BTreeSet<PathBuf>,
    /// Operation names (e.g. "configure_pod_interface") to fail once.
    fail_once: BTreeSet<&'static str>,
}

/// See the module docs.
#[derive(Default)]
pub struct FakeNetOps {
    state: Mutex<State>,
}

impl FakeNetOps {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<NetCall> {
        self.lock().calls.clone()
    }

    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// Makes the next call of operation `op` fail (names as the trait's).
    pub fn fail_once(&self, op: &'static str) {
        self.lock().fail_once.insert(op);
    }

    /// Host-namespace link names.
    pub fn host_links(&self) -> Vec<String> {
        self.lock()
            .links
            .keys()
            .filter(|(place, _)| place.is_none())
            .map(|(_, name)| name.clone())
            .collect()
    }

    /// Namespace files that exist.
    pub fn namespaces(&self) -> Vec<PathBuf> {
        self.lock().netns.iter().cloned().collect()
    }

    /// Simulates a namespace vanishing behind the agent's back (reboot,
    /// manual `ip netns del`): the file and its links are gone.
    pub fn remove_netns_externally(&self, path: &Path) {
        let mut s = self.lock();
        s.netns.remove(path);
        s.links
            .retain(|(place, _), _| place.as_deref() != Some(path));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn enter(
        &self,
        op: &'static str,
        call: Option<NetCall>,
    ) -> Result<std::sync::MutexGuard<'_, State>, NetworkError> {
        let mut s = self.lock();
        if let Some(call) = call {
            s.calls.push(call);
        }
        if s.fail_once.remove(op) {
            return Err(NetworkError::io(
                format!("{op} (injected)"),
                io::Error::other("injected failure"),
            ));
        }
        Ok(s)
    }
}

fn missing(name: &str, place: &Place) -> NetworkError {
    NetworkError::LinkNotFound {
        name: name.to_string(),
        place: place
            .as_ref()
            .map_or("the host namespace".to_string(), |p| {
                p.display().to_string()
            }),
    }
}

#[async_trait]
impl NetOps for FakeNetOps {
    async fn ensure_bridge(
        &self,
        name: &str,
        address: Ipv4Net,
        mtu: u32,
    ) -> Result<(), NetworkError> {
        let call = NetCall::EnsureBridge {
            name: name.into(),
            address,
            mtu,
        };
        let mut s = self.enter("ensure_bridge", Some(call))?;
        let addrs = s.links.entry((None, name.to_string())).or_default();
        if let Some(other) = addrs.iter().find(|a| **a != address) {
            return Err(NetworkError::BridgeAddressConflict {
                bridge: name.to_string(),
                found: *other,
                expected: address,
            });
        }
        if addrs.is_empty() {
            addrs.push(address);
        }
        Ok(())
    }

    async fn enable_ip_forwarding(&self) -> Result<(), NetworkError> {
        let _state = self.enter("enable_ip_forwarding", Some(NetCall::EnableIpForwarding))?;
        Ok(())
    }

    async fn create_netns(&self, path: &Path) -> Result<(), NetworkError> {
        let mut s = self.enter("create_netns", Some(NetCall::CreateNetns(path.into())))?;
        if !s.netns.insert(path.to_path_buf()) {
            return Err(NetworkError::io(
                format!("create network namespace {}", path.display()),
                io::Error::from(io::ErrorKind::AlreadyExists),
            ));
        }
        s.links
            .insert((Some(path.to_path_buf()), "lo".into()), Vec::new());
        Ok(())
    }

    async fn delete_netns(&self, path: &Path) -> Result<bool, NetworkError> {
        let mut s = self.enter("delete_netns", Some(NetCall::DeleteNetns(path.into())))?;
        let existed = s.netns.remove(path);
        // Deleting the file frees the namespace here (no process holds it),
        // and veths die with their namespace end.
        let inside: Vec<_> = s
            .links
            .keys()
            .filter(|(place, _)| place.as_deref() == Some(path))
            .cloned()
            .collect();
        for key in inside {
            s.links.remove(&key);
        }
        Ok(existed)
    }

    async fn netns_exists(&self, path: &Path) -> Result<bool, NetworkError> {
        Ok(self.enter("netns_exists", None)?.netns.contains(path))
    }

    async fn list_netns(&self, dir: &Path) -> Result<Vec<String>, NetworkError> {
        let s = self.enter("list_netns", None)?;
        Ok(s.netns
            .iter()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect())
    }

    async fn create_veth(&self, host: &str, peer: &str, mtu: u32) -> Result<(), NetworkError> {
        let call = NetCall::CreateVeth {
            host: host.into(),
            peer: peer.into(),
            mtu,
        };
        let mut s = self.enter("create_veth", Some(call))?;
        for name in [host, peer] {
            if s.links.contains_key(&(None, name.to_string())) {
                return Err(NetworkError::io(
                    format!("create veth pair {host}/{peer}"),
                    io::Error::from(io::ErrorKind::AlreadyExists),
                ));
            }
        }
        s.links.insert((None, host.into()), Vec::new());
        s.links.insert((None, peer.into()), Vec::new());
        Ok(())
    }

    async fn attach_to_bridge(&self, link: &str, bridge: &str) -> Result<(), NetworkError> {
        let call = NetCall::AttachToBridge {
            link: link.into(),
            bridge: bridge.into(),
        };
        let s = self.enter("attach_to_bridge", Some(call))?;
        for name in [link, bridge] {
            if !s.links.contains_key(&(None, name.to_string())) {
                return Err(missing(name, &None));
            }
        }
        Ok(())
    }

    async fn move_to_netns(&self, link: &str, netns: &Path) -> Result<(), NetworkError> {
        let call = NetCall::MoveToNetns {
            link: link.into(),
            netns: netns.into(),
        };
        let mut s = self.enter("move_to_netns", Some(call))?;
        if !s.netns.contains(netns) {
            return Err(NetworkError::io(
                format!("open network namespace {}", netns.display()),
                io::Error::from(io::ErrorKind::NotFound),
            ));
        }
        let addrs = s
            .links
            .remove(&(None, link.to_string()))
            .ok_or_else(|| missing(link, &None))?;
        s.links.insert((Some(netns.into()), link.into()), addrs);
        Ok(())
    }

    async fn configure_pod_interface(
        &self,
        netns: &Path,
        iface: &PodInterface,
    ) -> Result<(), NetworkError> {
        let call = NetCall::ConfigurePodInterface {
            netns: netns.into(),
            iface: iface.clone(),
        };
        let mut s = self.enter("configure_pod_interface", Some(call))?;
        let place = Some(netns.to_path_buf());
        s.links
            .remove(&(place.clone(), iface.current_name.clone()))
            .ok_or_else(|| missing(&iface.current_name, &place))?;
        s.links
            .insert((place, iface.name.clone()), vec![iface.address]);
        Ok(())
    }

    async fn pod_addresses(&self, netns: &Path, link: &str) -> Result<Vec<Ipv4Net>, NetworkError> {
        let s = self.enter("pod_addresses", None)?;
        Ok(s.links
            .get(&(Some(netns.to_path_buf()), link.to_string()))
            .cloned()
            .unwrap_or_default())
    }

    async fn link_exists(&self, name: &str) -> Result<bool, NetworkError> {
        Ok(self
            .enter("link_exists", None)?
            .links
            .contains_key(&(None, name.to_string())))
    }

    async fn delete_link(&self, name: &str) -> Result<bool, NetworkError> {
        let mut s = self.enter("delete_link", Some(NetCall::DeleteLink(name.into())))?;
        Ok(s.links.remove(&(None, name.to_string())).is_some())
    }
}

pub use crate::hostnet::nft::FakeFirewall;
