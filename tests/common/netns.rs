//! Network-namespace "nodes" on a Linux bridge: a small local network for
//! multi-node tests, with no traffic leaving the host.
//!
//! A [`Network`] is a bridge in the host namespace holding `10.254.N.1/24`,
//! with N chosen free under a host-wide file lock (10.42/10.43 are rk3s's pod
//! and service ranges, so they stay unused here). Each [`Node`] is a named
//! netns (`ip netns add`) whose `eth0` is one end of a veth pair enslaved to
//! the bridge, with `10.254.N.M/24`, loopback up and a default route via the
//! bridge address, which is also how nodes reach the host.
//!
//! Invariants: interface names are ≤ 15 bytes and unique on the host (pid
//! plus a per-process counter); dropping a `Node` kills every process in its
//! namespace, then deletes the namespace and veth; dropping a `Network`
//! deletes the bridge and releases its subnet.
//!
//! Partial: IPv4 only.

use std::io;
use std::net::Ipv4Addr;
use std::os::unix::io::AsRawFd;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::privilege::{self, tool, CommandError};

/// Serialises subnet choice between test processes (flock) and threads.
const LOCK_FILE: &str = "/tmp/rk3s-e2e-netns.lock";
static LOCAL_LOCK: Mutex<()> = Mutex::new(());
static NEXT: AtomicU32 = AtomicU32::new(0);

/// A failure to build the test network.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("failed to lock {LOCK_FILE}: {0}")]
    Lock(#[source] io::Error),
    #[error("failed to find a free 10.254.N.0/24 subnet: all 256 are in use on this host")]
    NoSubnet,
    #[error("failed to add node {0}: its /24 has no free address left")]
    NoAddress(String),
    #[error(transparent)]
    Command(#[from] CommandError),
}

/// A bridge with a private /24; nodes join it with [`Network::add_node`].
pub struct Network {
    bridge: String,
    prefix: String,
    subnet: u8,
    next_host: AtomicU32,
}

impl Network {
    /// Creates the bridge; `prefix` (a few letters) names its namespaces.
    pub fn new(prefix: &str) -> Result<Self, NetnsError> {
        let tag = unique_tag();
        let bridge = format!("rkb{tag}");
        let _guard = LOCAL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let _flock = FileLock::acquire()?;
        let subnet = free_subnet()?;
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        let network = Self {
            bridge,
            prefix: prefix
                .chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .take(8)
                .collect(),
            subnet,
            next_host: AtomicU32::new(2),
        };
        ip(&[
            "addr",
            "add",
            &format!("{}/24", network.gateway()),
            "dev",
            &network.bridge,
        ])?;
        ip(&["link", "set", &network.bridge, "up"])?;
        Ok(network)
    }

    /// The bridge's address: the nodes' default gateway, and the host as
    /// seen from the nodes.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 254, self.subnet, 1)
    }

    /// The subnet in CIDR notation.
    pub fn cidr(&self) -> String {
        format!("10.254.{}.0/24", self.subnet)
    }

    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// Creates a node (netns + veth) named after `name`, with the next address.
    pub fn add_node(&self, name: &str) -> Result<Node, NetnsError> {
        let host = self.next_host.fetch_add(1, Ordering::Relaxed);
        if host > 254 {
            return Err(NetnsError::NoAddress(name.to_string()));
        }
        let tag = unique_tag();
        let clean: String = name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        let netns = format!("rk3s-{}-{tag}-{clean}", self.prefix);
        let veth = format!("rkv{tag}");
        let node = Node {
            netns,
            veth,
            ip: Ipv4Addr::new(10, 254, self.subnet, host as u8),
            gateway: self.gateway(),
        };
        // From here on `node`'s Drop undoes whatever part succeeded.
        ip(&["netns", "add", &node.netns])?;
        ip(&[
            "link",
            "add",
            &node.veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &node.netns,
        ])?;
        ip(&["link", "set", &node.veth, "master", &self.bridge])?;
        ip(&["link", "set", &node.veth, "up"])?;
        let inside = |args: &[&str]| {
            let mut all = vec!["-n", node.netns.as_str()];
            all.extend_from_slice(args);
            ip(&all)
        };
        inside(&["link", "set", "lo", "up"])?;
        inside(&["addr", "add", &format!("{}/24", node.ip), "dev", "eth0"])?;
        inside(&["link", "set", "eth0", "up"])?;
        inside(&["route", "add", "default", "via", &node.gateway.to_string()])?;
        Ok(node)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        if let Err(e) = ip(&["link", "del", &self.bridge]) {
            eprintln!("netns harness: {e}");
        }
    }
}

/// A network namespace on a [`Network`]; see the module docs.
pub struct Node {
    netns: String,
    veth: String,
    ip: Ipv4Addr,
    gateway: Ipv4Addr,
}

impl Node {
    /// The namespace name (under `/run/netns`).
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// The node's address on the bridge.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The bridge address: the node's default route and the host's address.
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// `ip netns exec NS program`, to add arguments to.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(tool("ip"));
        cmd.args(["netns", "exec", &self.netns, program]);
        cmd
    }

    /// Runs `argv` in the namespace to completion, whatever its exit status.
    pub fn exec(&self, argv: &[&str]) -> Output {
        let mut cmd = self.command(argv[0]);
        cmd.args(&argv[1..]);
        privilege::output(&mut cmd).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Node::exec`] but killed after `timeout`.
    pub fn exec_within(&self, argv: &[&str], timeout: Duration) -> Result<Output, CommandError> {
        let mut cmd = self.command(argv[0]);
        cmd.args(&argv[1..]);
        privilege::output_within(&mut cmd, timeout)
    }

    /// Starts `argv` in the namespace (stdin closed, output inherited); it
    /// is killed when the node is dropped, if still running.
    pub fn spawn(&self, argv: &[&str]) -> io::Result<Child> {
        let mut cmd = self.command(argv[0]);
        cmd.args(&argv[1..]).stdin(Stdio::null()).spawn()
    }

    /// Pids of every process in the namespace.
    pub fn pids(&self) -> Vec<u32> {
        let mut cmd = Command::new(tool("ip"));
        cmd.args(["netns", "pids", &self.netns]);
        match privilege::output_within(&mut cmd, Duration::from_secs(10)) {
            Ok(o) => String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // A live process keeps the namespace (and its veth) alive after
        // `ip netns del`, so empty it first.
        for _ in 0..50 {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Err(e) = ip(&["netns", "del", &self.netns]) {
            eprintln!("netns harness: {e}");
        }
        // Usually gone with the namespace already (asynchronously, so
        // "Cannot find device" here is no failure).
        if link_exists(&self.veth) {
            if let Err(e) = ip(&["link", "del", &self.veth]) {
                if link_exists(&self.veth) {
                    eprintln!("netns harness: {e}");
                }
            }
        }
    }
}

/// `ip ARGS`, failing unless it succeeds.
pub fn ip(args: &[&str]) -> Result<Output, CommandError> {
    let mut cmd = Command::new(tool("ip"));
    cmd.args(args);
    privilege::run(&mut cmd)
}

fn link_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

/// pid and counter in base 36: at most 5 + 2 bytes for realistic values,
/// so `rkb`/`rkv` plus the tag stays within IFNAMSIZ.
fn unique_tag() -> String {
    format!(
        "{}{}",
        base36(std::process::id()),
        base36(NEXT.fetch_add(1, Ordering::Relaxed))
    )
}

fn base36(mut n: u32) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ascii digits")
}

/// A 10.254.N.0/24 with no address on any host interface. Callers hold
/// both locks until their bridge has its address.
fn free_subnet() -> Result<u8, NetnsError> {
    let out = ip(&["-o", "-4", "addr", "show"])?;
    let used = String::from_utf8_lossy(&out.stdout).into_owned();
    // Start away from 0 and spread by pid, so a leaked bridge from an
    // earlier run rarely meets the first choice.
    let start = (std::process::id() % 250) as u16 + 1;
    (0..256u16)
        .map(|i| ((start + i) % 256) as u8)
        .find(|n| !used.contains(&format!(" 10.254.{n}.")))
        .ok_or(NetnsError::NoSubnet)
}

/// An exclusive flock on [`LOCK_FILE`], released on drop.
struct FileLock(std::fs::File);

impl FileLock {
    fn acquire() -> Result<Self, NetnsError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK_FILE)
            .map_err(NetnsError::Lock)?;
        // SAFETY: the fd is valid for the lifetime of `file`.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(NetnsError::Lock(io::Error::last_os_error()));
        }
        Ok(Self(file))
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // SAFETY: as above; closing the file would also release the lock.
        unsafe {
            libc::flock(self.0.as_raw_fd(), libc::LOCK_UN);
        }
    }
}
