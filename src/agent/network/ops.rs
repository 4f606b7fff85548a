//! The kernel boundary of pod networking: links, addresses, routes,
//! network namespaces and the forwarding sysctl. [`NetOps`] is the seam;
//! [`super::linux::LinuxNetOps`] drives the kernel through rtnetlink and
//! [`super::fake::FakeNetOps`] records calls for unit tests.
//!
//! Every method works in the *host* namespace the implementation was built
//! for, except those taking a namespace path, which work inside it. All are
//! idempotent where the doc says so, because setup and teardown are retried
//! after crashes.

use std::net::Ipv4Addr;
use std::path::Path;

use async_trait::async_trait;
use ipnet::Ipv4Net;

use super::NetworkError;

/// How a pod-side interface is configured inside its namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInterface {
    /// The name it has when it arrives in the namespace (a temporary one:
    /// `eth0` may exist in the host namespace).
    pub current_name: String,
    /// Its final name (`eth0`).
    pub name: String,
    /// Its address with the pod CIDR's prefix length.
    pub address: Ipv4Net,
    /// The default route's next hop (the bridge address).
    pub gateway: Ipv4Addr,
    pub mtu: u32,
}

/// The kernel operations pod networking needs.
#[async_trait]
pub trait NetOps: Send + Sync {
    /// Creates bridge `name` if missing, makes sure it holds `address`
    /// (failing if it holds another IPv4 address), and brings it up.
    /// Idempotent.
    async fn ensure_bridge(
        &self,
        name: &str,
        address: Ipv4Net,
        mtu: u32,
    ) -> Result<(), NetworkError>;

    /// Sets `net.ipv4.ip_forward=1` in the host namespace. Idempotent.
    async fn enable_ip_forwarding(&self) -> Result<(), NetworkError>;

    /// Creates an empty network namespace bound at `path`.
    async fn create_netns(&self, path: &Path) -> Result<(), NetworkError>;

    /// Unmounts and removes the namespace file; true if it existed.
    async fn delete_netns(&self, path: &Path) -> Result<bool, NetworkError>;

    /// Whether `path` is a live (bound) namespace.
    async fn netns_exists(&self, path: &Path) -> Result<bool, NetworkError>;

    /// Entry names in the namespace directory.
    async fn list_netns(&self, dir: &Path) -> Result<Vec<String>, NetworkError>;

    /// Creates a veth pair `host`–`peer` with `mtu` in the host namespace.
    async fn create_veth(&self, host: &str, peer: &str, mtu: u32) -> Result<(), NetworkError>;

    /// Enslaves `link` to `bridge` (with hairpin mode, so a pod can reach
    /// itself through a service address) and brings it up.
    async fn attach_to_bridge(&self, link: &str, bridge: &str) -> Result<(), NetworkError>;

    /// Moves host link `link` into the namespace at `netns`.
    async fn move_to_netns(&self, link: &str, netns: &Path) -> Result<(), NetworkError>;

    /// Inside `netns`: brings `lo` up, renames and addresses the pod
    /// interface, brings it up and adds the default route.
    async fn configure_pod_interface(
        &self,
        netns: &Path,
        iface: &PodInterface,
    ) -> Result<(), NetworkError>;

    /// The IPv4 addresses of `link` inside `netns` (empty if the link is
    /// missing).
    async fn pod_addresses(&self, netns: &Path, link: &str) -> Result<Vec<Ipv4Net>, NetworkError>;

    /// Whether host link `name` exists.
    async fn link_exists(&self, name: &str) -> Result<bool, NetworkError>;

    /// Deletes host link `name` (a veth's peer goes with it); true if it
    /// existed.
    async fn delete_link(&self, name: &str) -> Result<bool, NetworkError>;
}
