//! Pod networking on one node: the `cni0` bridge, one network namespace and
//! veth pair per pod, addresses from the node's pod CIDR, and masquerading
//! of traffic that leaves the cluster. Built to sit under a flannel-style
//! VXLAN overlay (`flannel.1`, VNI 1, UDP 8472, one /24 per node out of
//! 10.42.0.0/16), which will route other nodes' /24s via its device.
//!
//! rk3s runs no pause container: [`PodNetwork::setup_pod`] creates the
//! pod's namespace itself (bound at `<netns_dir>/rk3s-<pod uid>`), and the
//! runtime starts every container of the pod into that path.
//!
//! Layout, as k3s's flannel + bridge CNI make it:
//! - bridge `cni0` holds the pod CIDR's first address (`10.42.0.1/24`) and
//!   is every pod's default gateway; the host reaches pods through it;
//! - each pod has `eth0` (one end of a veth pair, MTU from the config) with
//!   an address from [`ipam::IpAllocator`], `lo` up, and a default route via
//!   the bridge; the host end, `veth<hash of uid>`, is a bridge port in
//!   hairpin mode;
//! - `net.ipv4.ip_forward=1` and the nftables table of [`nft`].
//!
//! Invariants:
//! - Names derive from the pod uid only, so teardown and recovery find
//!   everything without any other record.
//! - The allocator directory and the namespace files are the only state:
//!   [`PodNetwork::recover`] rebuilds the picture from them after a restart
//!   and frees what no longer has a namespace.
//! - Setup either completes or undoes itself (address released); teardown
//!   is idempotent; operations on one pod are serialised.
//! - Every kernel call goes through [`ops::NetOps`], every firewall change
//!   through [`nft::Firewall`]; both can work in a namespace other than the
//!   process's ([`NetworkConfig::host_netns`]), which is how the e2e tests
//!   run a whole "host" inside a private namespace.
//!
//! Partial: IPv4 only (other nodes' pod CIDRs are routed by
//! [`crate::overlay`]); no bandwidth shaping or hostPort mapping (`portmap`);
//! the forward accepts cannot override another table's drop policy (see
//! [`nft`]).

#[cfg(test)]
pub mod fake;
pub mod ipam;
pub mod linux;
pub mod nft;
pub mod ops;

use std::collections::HashMap;
use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use ipnet::Ipv4Net;
use sha2::{Digest, Sha256};

use self::ipam::IpAllocator;
use self::nft::Firewall;
use self::ops::{NetOps, PodInterface};

pub use self::linux::LinuxNetOps;
pub use self::nft::NftFirewall;

/// k3s's bridge name.
pub const DEFAULT_BRIDGE: &str = "cni0";
/// Where `ip netns` (and rk3s) keep namespace files.
pub const DEFAULT_NETNS_DIR: &str = "/var/run/netns";
/// Pod MTU under the VXLAN overlay: a 1500 uplink minus 50 bytes of
/// encapsulation, as flannel computes it.
pub const VXLAN_MTU: u32 = 1450;
/// Pod MTU without an overlay.
pub const PLAIN_MTU: u32 = 1500;
/// The pod-side interface name.
pub const POD_IFACE: &str = "eth0";
/// Prefix of the namespaces rk3s creates for pods.
pub const NETNS_PREFIX: &str = "rk3s-";

/// Why a pod-network operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("invalid pod network configuration: {0}")]
    Config(String),
    #[error("invalid pod uid {uid:?}: {reason}")]
    InvalidPodUid { uid: String, reason: &'static str },
    #[error("failed to {action}: {source}")]
    Io {
        action: String,
        #[source]
        source: io::Error,
    },
    #[error("failed to {action}: {source}")]
    Netlink {
        action: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("failed to find network interface {name} in {place}")]
    LinkNotFound { name: String, place: String },
    #[error("failed to set up bridge {bridge}: it already has address {found}, expected {expected}; delete it (`ip link del {bridge}`) so rk3s can recreate it")]
    BridgeAddressConflict {
        bridge: String,
        found: Ipv4Net,
        expected: Ipv4Net,
    },
    #[error(transparent)]
    Firewall(#[from] crate::hostnet::nft::NftError),
    #[error("failed to allocate a pod IP: all {size} addresses of {subnet} are in use")]
    Exhausted { subnet: Ipv4Net, size: u32 },
}

impl NetworkError {
    fn io(action: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            action: action.into(),
            source,
        }
    }
}

/// The node's pod-network settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// The bridge pods attach to ([`DEFAULT_BRIDGE`]).
    pub bridge: String,
    /// This node's share of the cluster CIDR (`node.spec.podCIDR`).
    pub pod_cidr: Ipv4Net,
    /// All pods of the cluster (`--cluster-cidr`).
    pub cluster_cidr: Ipv4Net,
    /// Service virtual IPs (`--service-cidr`); must not overlap pods.
    pub service_cidr: Ipv4Net,
    /// Pod interface MTU: [`VXLAN_MTU`] under the overlay, else [`PLAIN_MTU`].
    pub mtu: u32,
    /// Where the IP allocator keeps its files (`<state_dir>/ips`).
    pub state_dir: PathBuf,
    /// Where pod namespace files are bound ([`DEFAULT_NETNS_DIR`]).
    pub netns_dir: PathBuf,
    /// The namespace that plays "the host" (`None`: the process's own).
    pub host_netns: Option<PathBuf>,
}

impl NetworkConfig {
    /// The k3s defaults for a node with `pod_cidr` under a VXLAN overlay.
    pub fn new(pod_cidr: Ipv4Net, state_dir: PathBuf) -> Self {
        Self {
            bridge: DEFAULT_BRIDGE.to_string(),
            pod_cidr,
            cluster_cidr: "10.42.0.0/16".parse().expect("valid literal"),
            service_cidr: "10.43.0.0/16".parse().expect("valid literal"),
            mtu: VXLAN_MTU,
            state_dir,
            netns_dir: PathBuf::from(DEFAULT_NETNS_DIR),
            host_netns: None,
        }
    }

    /// Checks the settings fit together, saying what to fix.
    pub fn validate(&self) -> Result<(), NetworkError> {
        let bad = |m: String| Err(NetworkError::Config(m));
        if self.bridge.is_empty()
            || self.bridge.len() > 15
            || !self
                .bridge
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'/')
        {
            return bad(format!(
                "bridge name {:?} must be 1-15 printable characters without '/'",
                self.bridge
            ));
        }
        if !self.cluster_cidr.contains(&self.pod_cidr) {
            return bad(format!(
                "the node's pod CIDR {} is not inside the cluster CIDR {}",
                self.pod_cidr, self.cluster_cidr
            ));
        }
        if self.service_cidr.contains(&self.cluster_cidr.network())
            || self.cluster_cidr.contains(&self.service_cidr.network())
        {
            return bad(format!(
                "the service CIDR {} overlaps the cluster CIDR {}",
                self.service_cidr, self.cluster_cidr
            ));
        }
        if !(576..=9000).contains(&self.mtu) {
            return bad(format!("MTU {} is outside 576-9000", self.mtu));
        }
        Ok(())
    }
}

/// What the rest of the agent needs about a pod's network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNetInfo {
    /// The namespace file every container of the pod joins.
    pub netns_path: PathBuf,
    /// The pod IP (`status.podIP`).
    pub ip: Ipv4Addr,
    pub gateway: Ipv4Addr,
    /// The host end of the pod's veth pair.
    pub veth_host_name: String,
}

/// What [`PodNetwork::recover`] found after a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Pods whose namespace is alive, by uid.
    pub live: Vec<(String, PodNetInfo)>,
    /// Addresses freed because their pod's namespace is gone (or they lay
    /// outside the current pod CIDR, or a crash left them ownerless), with
    /// the former owner.
    pub released: Vec<(Ipv4Addr, String)>,
    /// Pod namespaces that had no address and were removed.
    pub removed_namespaces: Vec<PathBuf>,
}

/// The node's pod network. Cheap to share behind an `Arc`; every method
/// takes `&self` and may run concurrently for different pods.
pub struct PodNetwork {
    config: NetworkConfig,
    ops: Arc<dyn NetOps>,
    firewall: Arc<dyn Firewall>,
    ipam: IpAllocator,
    pod_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for PodNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodNetwork")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl PodNetwork {
    /// The real pod network: netlink and `nft` in `config.host_netns`.
    /// The netlink connection runs as a task on the calling tokio runtime,
    /// so the network must not outlive that runtime.
    pub async fn new(config: NetworkConfig) -> Result<Self, NetworkError> {
        let ops = LinuxNetOps::connect(config.host_netns.clone()).await?;
        let firewall = NftFirewall::new(config.host_netns.clone());
        Self::with_ops(config, Arc::new(ops), Arc::new(firewall))
    }

    /// A pod network over the given kernel and firewall seams.
    pub fn with_ops(
        config: NetworkConfig,
        ops: Arc<dyn NetOps>,
        firewall: Arc<dyn Firewall>,
    ) -> Result<Self, NetworkError> {
        config.validate()?;
        let ipam = IpAllocator::open(&config.state_dir, config.pod_cidr)?;
        Ok(Self {
            config,
            ops,
            firewall,
            ipam,
            pod_locks: Mutex::new(HashMap::new()),
        })
    }

    pub fn config(&self) -> &NetworkConfig {
        &self.config
    }

    /// The bridge address and every pod's gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        self.ipam.gateway()
    }

    /// Brings the host side into shape: forwarding on, bridge with the
    /// gateway address up, NAT/forward rules replaced. Idempotent; run at
    /// start and whenever the rules may have been flushed.
    pub async fn ensure_host(&self) -> Result<(), NetworkError> {
        self.ops.enable_ip_forwarding().await?;
        let bridge_addr = Ipv4Net::new(self.gateway(), self.config.pod_cidr.prefix_len())
            .expect("prefix from a valid net");
        self.ops
            .ensure_bridge(&self.config.bridge, bridge_addr, self.config.mtu)
            .await?;
        self.firewall
            .apply(&nft::ruleset(
                self.config.pod_cidr,
                self.config.cluster_cidr,
            ))
            .await?;
        Ok(())
    }

    /// Creates the pod's namespace and interface and gives it an address.
    /// `pod_ref` (`namespace/name`) is only for logs. Calling it again for
    /// a pod that is fully set up returns the same result; a half-built
    /// leftover is rebuilt; on failure nothing of the pod is left.
    pub async fn setup_pod(
        &self,
        pod_uid: &str,
        pod_ref: &str,
    ) -> Result<PodNetInfo, NetworkError> {
        validate_uid(pod_uid)?;
        let lock = self.pod_lock(pod_uid);
        let _guard = lock.lock().await;
        let ip = self.ipam.reserve(pod_uid)?;
        let info = self.info(pod_uid, ip);
        if self.is_complete(&info).await? {
            return Ok(info);
        }
        let built = async {
            self.remove_pod_pieces(pod_uid).await?;
            self.build(pod_uid, &info).await
        }
        .await;
        match built {
            Ok(()) => {
                tracing::info!(pod = pod_ref, uid = pod_uid, ip = %ip, netns = %info.netns_path.display(), "pod network set up");
                Ok(info)
            }
            Err(e) => {
                if let Err(undo) = self.remove_pod_pieces(pod_uid).await {
                    tracing::warn!(pod = pod_ref, error = %undo, "failed to undo a partial pod network setup");
                } else if let Err(undo) = self.ipam.release(pod_uid) {
                    tracing::warn!(pod = pod_ref, error = %undo, "failed to release the address of a failed setup");
                }
                Err(e)
            }
        }
    }

    /// Removes the pod's interface and namespace and frees its address.
    /// Idempotent: tearing down an unknown or half-built pod is fine.
    pub async fn teardown_pod(&self, pod_uid: &str) -> Result<(), NetworkError> {
        validate_uid(pod_uid)?;
        let lock = self.pod_lock(pod_uid);
        let _guard = lock.lock().await;
        self.remove_pod_pieces(pod_uid).await?;
        // Freed last, so the address is never reused while still on a link.
        if let Some(ip) = self.ipam.release(pod_uid)? {
            tracing::info!(uid = pod_uid, ip = %ip, "pod network torn down");
        }
        Ok(())
    }

    /// Rebuilds the picture after an agent restart from the allocator and
    /// the namespace files: pods whose namespace lives keep their address;
    /// addresses whose namespace is gone are freed (with any leftover
    /// veth); pod namespaces with no address but with their host veth on
    /// this node are removed (one without is another agent's, or a leftover
    /// nothing here can prove is ours, and stays). A pod whose
    /// address lies outside the current pod CIDR (the node's CIDR changed)
    /// loses its network too: its address cannot work on this bridge. Run
    /// it before any setup or teardown.
    pub async fn recover(&self) -> Result<Recovery, NetworkError> {
        let mut out = Recovery::default();
        let mut owners = std::collections::HashSet::new();
        for (ip, owner) in self.ipam.reservations()? {
            let valid_owner = validate_uid(&owner).is_ok();
            if valid_owner && self.in_range(ip) {
                let info = self.info(&owner, ip);
                if self.ops.netns_exists(&info.netns_path).await? {
                    owners.insert(owner.clone());
                    out.live.push((owner, info));
                    continue;
                }
            }
            if valid_owner {
                self.remove_pod_pieces(&owner).await?;
            }
            self.ipam.release_ip(ip)?;
            tracing::info!(ip = %ip, owner = %owner, "released the address of a pod whose network is gone");
            out.released.push((ip, owner));
        }
        for name in self.ops.list_netns(&self.config.netns_dir).await? {
            let Some(uid) = name.strip_prefix(NETNS_PREFIX) else {
                continue;
            };
            if owners.contains(uid) || !looks_like_pod_uid(uid) {
                continue;
            }
            // The namespace directory is host-wide: another agent on this
            // machine (the server's built-in one beside a test agent, say)
            // keeps its pods there too. Only a namespace whose host veth
            // sits in our namespace is provably ours to remove.
            if !self.ops.link_exists(&host_veth_name(uid)).await? {
                tracing::debug!(netns = %name, "left a pod namespace that belongs to no pod of this node");
                continue;
            }
            self.remove_pod_pieces(uid).await?;
            tracing::info!(netns = %name, "removed a pod namespace that had no address");
            out.removed_namespaces
                .push(self.config.netns_dir.join(&name));
        }
        Ok(out)
    }

    /// The namespace file of pod `pod_uid`.
    pub fn netns_path(&self, pod_uid: &str) -> PathBuf {
        self.config
            .netns_dir
            .join(format!("{NETNS_PREFIX}{pod_uid}"))
    }

    fn info(&self, pod_uid: &str, ip: Ipv4Addr) -> PodNetInfo {
        PodNetInfo {
            netns_path: self.netns_path(pod_uid),
            ip,
            gateway: self.gateway(),
            veth_host_name: host_veth_name(pod_uid),
        }
    }

    fn in_range(&self, ip: Ipv4Addr) -> bool {
        let net = self.config.pod_cidr.trunc();
        net.contains(&ip) && ip != net.network() && ip != net.broadcast() && ip != self.gateway()
    }

    async fn is_complete(&self, info: &PodNetInfo) -> Result<bool, NetworkError> {
        if !self.ops.netns_exists(&info.netns_path).await?
            || !self.ops.link_exists(&info.veth_host_name).await?
        {
            return Ok(false);
        }
        let want = Ipv4Net::new(info.ip, self.config.pod_cidr.prefix_len()).expect("valid prefix");
        Ok(self
            .ops
            .pod_addresses(&info.netns_path, POD_IFACE)
            .await?
            .contains(&want))
    }

    async fn build(&self, pod_uid: &str, info: &PodNetInfo) -> Result<(), NetworkError> {
        let peer = peer_temp_name(pod_uid);
        self.ops.create_netns(&info.netns_path).await?;
        self.ops
            .create_veth(&info.veth_host_name, &peer, self.config.mtu)
            .await?;
        self.ops
            .attach_to_bridge(&info.veth_host_name, &self.config.bridge)
            .await?;
        self.ops.move_to_netns(&peer, &info.netns_path).await?;
        let iface = PodInterface {
            current_name: peer,
            name: POD_IFACE.to_string(),
            address: Ipv4Net::new(info.ip, self.config.pod_cidr.prefix_len())
                .expect("valid prefix"),
            gateway: info.gateway,
            mtu: self.config.mtu,
        };
        self.ops
            .configure_pod_interface(&info.netns_path, &iface)
            .await
    }

    /// Deletes whatever exists of the pod's links and namespace.
    async fn remove_pod_pieces(&self, pod_uid: &str) -> Result<(), NetworkError> {
        self.ops.delete_link(&host_veth_name(pod_uid)).await?;
        // A setup interrupted before the move leaves the peer on the host.
        self.ops.delete_link(&peer_temp_name(pod_uid)).await?;
        self.ops.delete_netns(&self.netns_path(pod_uid)).await?;
        Ok(())
    }

    fn pod_lock(&self, pod_uid: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.pod_locks.lock().unwrap_or_else(|e| e.into_inner());
        // Drop locks nobody holds or waits for, so the map stays small.
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(pod_uid.to_string()).or_default().clone()
    }
}

/// The host end of the pod's veth: `veth` + 11 hex digits of the uid's
/// SHA-256 (15 bytes, the kernel's limit).
pub fn host_veth_name(pod_uid: &str) -> String {
    format!("veth{}", &uid_hash(pod_uid)[..11])
}

/// The pod end's name between creation and its rename to `eth0` inside the
/// namespace (it cannot be called `eth0` on the host).
fn peer_temp_name(pod_uid: &str) -> String {
    format!("rkp{}", &uid_hash(pod_uid)[..11])
}

fn uid_hash(pod_uid: &str) -> String {
    hex::encode(Sha256::digest(pod_uid.as_bytes()))
}

/// Pod uids become file names: keep them to what Kubernetes generates.
fn validate_uid(uid: &str) -> Result<(), NetworkError> {
    let reason = if uid.is_empty() {
        "it is empty"
    } else if uid.len() > 64 {
        "it is longer than 64 characters"
    } else if !uid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        "only letters, digits and '-' are allowed"
    } else {
        return Ok(());
    };
    Err(NetworkError::InvalidPodUid {
        uid: uid.to_string(),
        reason,
    })
}

/// Whether a namespace name's tail is a pod uid rk3s could have used (a
/// UUID or a kubelet-style hex hash), so recovery never removes someone
/// else's `rk3s-…` namespace.
fn looks_like_pod_uid(s: &str) -> bool {
    s.len() >= 32 && s.len() <= 36 && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

#[cfg(test)]
mod tests;
