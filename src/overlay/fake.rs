//! A recording fake of [`OverlayOps`] for unit tests: a small model of the
//! kernel (links, neighbours, FDB, routes, checksum offload), every
//! mutating call recorded in order, and one-shot failures by operation
//! name. Deleting a link drops its neighbours, FDB entries and routes, as
//! the kernel does.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Mutex;

use async_trait::async_trait;
use ipnet::Ipv4Net;

use super::ops::{Fdb, LinkState, Neighbour, OverlayOps, Route, Uplink, VxlanSpec};
use super::OverlayError;

/// One mutating call the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    CreateVxlan(VxlanSpec),
    DeleteLink(u32),
    SetLinkUp { index: u32, mtu: u32 },
    AddAddress(u32, Ipv4Net),
    DelAddress(u32, Ipv4Net),
    DisableTxChecksum(String),
    AddNeighbour(u32, Neighbour),
    DelNeighbour(u32, Neighbour),
    AddFdb(u32, Fdb),
    DelFdb(u32, Fdb),
    AddRoute(Route),
    DelRoute(Route),
}

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    links: BTreeMap<String, LinkState>,
    tx_csum: BTreeMap<String, bool>,
    neighbours: BTreeSet<(u32, Neighbour)>,
    fdb: BTreeSet<(u32, Fdb)>,
    routes: BTreeSet<Route>,
    next_index: u32,
    fail_once: BTreeSet<&'static str>,
    /// What `create_vxlan` fails with, every time (a kernel without vxlan).
    no_vxlan: bool,
}

/// See the module docs. The uplink is `eth0`, index 2, MTU 1500.
pub struct FakeOverlayOps {
    state: Mutex<State>,
}

impl Default for FakeOverlayOps {
    fn default() -> Self {
        let state = State {
            next_index: 10,
            ..Default::default()
        };
        Self {
            state: Mutex::new(state),
        }
    }
}

pub const UPLINK_INDEX: u32 = 2;

impl FakeOverlayOps {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// Makes the next call of operation `op` (e.g. "add_fdb") fail.
    pub fn fail_once(&self, op: &'static str) {
        self.lock().fail_once.insert(op);
    }

    /// Behaves like a kernel without the vxlan module.
    pub fn without_vxlan(&self) {
        self.lock().no_vxlan = true;
    }

    /// Adds a link as someone else (or an earlier run) left it.
    pub fn put_link(&self, name: &str, link: LinkState, tx_csum: bool) {
        let mut s = self.lock();
        s.next_index = s.next_index.max(link.index + 1);
        s.tx_csum.insert(name.to_string(), tx_csum);
        s.links.insert(name.to_string(), link);
    }

    pub fn link_state(&self, name: &str) -> Option<LinkState> {
        self.lock().links.get(name).cloned()
    }

    /// Removes a link behind the overlay's back (`ip link del`).
    pub fn vanish(&self, name: &str) {
        let mut s = self.lock();
        if let Some(l) = s.links.remove(name) {
            drop_link_entries(&mut s, l.index);
        }
    }

    pub fn put_neighbour(&self, index: u32, n: Neighbour) {
        self.lock().neighbours.insert((index, n));
    }
    pub fn put_fdb(&self, index: u32, f: Fdb) {
        self.lock().fdb.insert((index, f));
    }
    pub fn put_route(&self, r: Route) {
        self.lock().routes.insert(r);
    }
    pub fn neighbours_now(&self) -> Vec<(u32, Neighbour)> {
        self.lock().neighbours.iter().copied().collect()
    }
    pub fn fdb_now(&self) -> Vec<(u32, Fdb)> {
        self.lock().fdb.iter().copied().collect()
    }
    pub fn routes_now(&self) -> Vec<Route> {
        self.lock().routes.iter().copied().collect()
    }
    pub fn tx_csum_now(&self, name: &str) -> Option<bool> {
        self.lock().tx_csum.get(name).copied()
    }

    /// Records `call`, failing it if it was told to.
    fn record(
        &self,
        op: &'static str,
        call: Call,
    ) -> Result<std::sync::MutexGuard<'_, State>, OverlayError> {
        let mut s = self.lock();
        s.calls.push(call);
        if s.fail_once.remove(op) {
            return Err(OverlayError::Netlink {
                action: format!("{op} (injected)"),
                message: "injected failure".into(),
                errno: Some(libc::EIO),
            });
        }
        Ok(s)
    }
}

fn drop_link_entries(s: &mut State, index: u32) {
    s.neighbours.retain(|(i, _)| *i != index);
    s.fdb.retain(|(i, _)| *i != index);
    s.routes.retain(|r| r.link != index);
}

fn not_found(what: String) -> OverlayError {
    OverlayError::Netlink {
        action: what,
        message: "no such entry".into(),
        errno: Some(libc::ENOENT),
    }
}

#[async_trait]
impl OverlayOps for FakeOverlayOps {
    async fn uplink(&self, iface: Option<&str>, _ip: Ipv4Addr) -> Result<Uplink, OverlayError> {
        Ok(Uplink {
            name: iface.unwrap_or("eth0").to_string(),
            index: UPLINK_INDEX,
            mtu: 1500,
        })
    }

    async fn link(&self, name: &str) -> Result<Option<LinkState>, OverlayError> {
        Ok(self.lock().links.get(name).cloned())
    }

    async fn create_vxlan(&self, spec: &VxlanSpec) -> Result<(), OverlayError> {
        let mut s = self.record("create_vxlan", Call::CreateVxlan(spec.clone()))?;
        if s.no_vxlan {
            return Err(OverlayError::VxlanUnsupported {
                device: spec.name.clone(),
                detail: "Operation not supported".into(),
            });
        }
        let index = s.next_index;
        s.next_index += 1;
        s.tx_csum.insert(spec.name.clone(), true);
        s.links.insert(
            spec.name.clone(),
            LinkState {
                index,
                mac: spec.mac,
                mtu: 1500,
                up: false,
                vni: Some(spec.vni),
                port: Some(spec.port),
                local: Some(spec.local),
                learning: Some(false),
                addresses: Vec::new(),
            },
        );
        Ok(())
    }

    async fn delete_link(&self, index: u32) -> Result<bool, OverlayError> {
        let mut s = self.record("delete_link", Call::DeleteLink(index))?;
        let name = s
            .links
            .iter()
            .find(|(_, l)| l.index == index)
            .map(|(n, _)| n.clone());
        let Some(name) = name else { return Ok(false) };
        s.links.remove(&name);
        drop_link_entries(&mut s, index);
        Ok(true)
    }

    async fn set_link_up(&self, index: u32, mtu: u32) -> Result<(), OverlayError> {
        let mut s = self.record("set_link_up", Call::SetLinkUp { index, mtu })?;
        for l in s.links.values_mut().filter(|l| l.index == index) {
            l.mtu = mtu;
            l.up = true;
        }
        Ok(())
    }

    async fn add_address(&self, index: u32, address: Ipv4Net) -> Result<(), OverlayError> {
        let mut s = self.record("add_address", Call::AddAddress(index, address))?;
        for l in s.links.values_mut().filter(|l| l.index == index) {
            l.addresses.push(address);
        }
        Ok(())
    }

    async fn del_address(&self, index: u32, address: Ipv4Net) -> Result<(), OverlayError> {
        let mut s = self.record("del_address", Call::DelAddress(index, address))?;
        for l in s.links.values_mut().filter(|l| l.index == index) {
            l.addresses.retain(|a| *a != address);
        }
        Ok(())
    }

    async fn tx_checksum(&self, name: &str) -> Result<bool, OverlayError> {
        Ok(self.lock().tx_csum.get(name).copied().unwrap_or(false))
    }

    async fn disable_tx_checksum(&self, name: &str) -> Result<(), OverlayError> {
        let mut s = self.record("disable_tx_checksum", Call::DisableTxChecksum(name.into()))?;
        s.tx_csum.insert(name.to_string(), false);
        Ok(())
    }

    async fn neighbours(&self, index: u32) -> Result<Vec<Neighbour>, OverlayError> {
        let s = self.lock();
        Ok(s.neighbours
            .iter()
            .filter(|(i, _)| *i == index)
            .map(|(_, n)| *n)
            .collect())
    }

    async fn add_neighbour(&self, index: u32, n: Neighbour) -> Result<(), OverlayError> {
        let mut s = self.record("add_neighbour", Call::AddNeighbour(index, n))?;
        s.neighbours.insert((index, n));
        Ok(())
    }

    async fn del_neighbour(&self, index: u32, n: Neighbour) -> Result<(), OverlayError> {
        let mut s = self.record("del_neighbour", Call::DelNeighbour(index, n))?;
        if !s.neighbours.remove(&(index, n)) {
            return Err(not_found(format!("delete neighbour {}", n.ip)));
        }
        Ok(())
    }

    async fn fdb(&self, index: u32) -> Result<Vec<Fdb>, OverlayError> {
        let s = self.lock();
        Ok(s.fdb
            .iter()
            .filter(|(i, _)| *i == index)
            .map(|(_, f)| *f)
            .collect())
    }

    async fn add_fdb(&self, index: u32, f: Fdb) -> Result<(), OverlayError> {
        let mut s = self.record("add_fdb", Call::AddFdb(index, f))?;
        s.fdb.insert((index, f));
        Ok(())
    }

    async fn del_fdb(&self, index: u32, f: Fdb) -> Result<(), OverlayError> {
        let mut s = self.record("del_fdb", Call::DelFdb(index, f))?;
        if !s.fdb.remove(&(index, f)) {
            return Err(not_found(format!("delete FDB entry {}", f.mac)));
        }
        Ok(())
    }

    async fn routes(&self, within: Ipv4Net) -> Result<Vec<Route>, OverlayError> {
        let s = self.lock();
        Ok(s.routes
            .iter()
            .filter(|r| within.contains(&r.dst))
            .copied()
            .collect())
    }

    async fn add_route(&self, r: Route) -> Result<(), OverlayError> {
        let mut s = self.record("add_route", Call::AddRoute(r))?;
        s.routes.insert(r);
        Ok(())
    }

    async fn del_route(&self, r: Route) -> Result<(), OverlayError> {
        let mut s = self.record("del_route", Call::DelRoute(r))?;
        if !s.routes.remove(&r) {
            return Err(not_found(format!("delete route {}", r.dst)));
        }
        Ok(())
    }
}
