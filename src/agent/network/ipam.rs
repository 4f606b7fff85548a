//! Pod IP allocation from the node's pod CIDR, persisted like the CNI
//! `host-local` plugin so that it survives agent restarts and crashes.
//!
//! Layout under `<state_dir>/ips/`:
//! - one file per reserved address, named by the address (`10.42.0.5`),
//!   holding the owner (the pod uid);
//! - `last_reserved_ip.0`: the address handed out last, so allocation goes
//!   round-robin through the range instead of reusing a just-freed address
//!   (a stale peer may still hold it in a conntrack entry or an ARP cache);
//! - `lock`: an advisory `flock` taken for every operation, so two agent
//!   processes (say, an old one shutting down) never interleave.
//!
//! Invariants: creating the address file with `O_EXCL` *is* the
//! reservation, so no address is ever handed out twice; the network
//! address, the gateway (the first host address, the bridge's) and the
//! broadcast address are never handed out; an owner holds at most one
//! address. A file left empty by a crash between create and write has no
//! owner: [`IpAllocator::reservations`] reports it with an empty owner and
//! the caller (recovery) releases it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ipnet::Ipv4Net;

use super::NetworkError;

const LAST_RESERVED: &str = "last_reserved_ip.0";
const LOCK: &str = "lock";

/// A persistent allocator of pod addresses within one subnet.
#[derive(Debug)]
pub struct IpAllocator {
    dir: PathBuf,
    subnet: Ipv4Net,
    /// Serialises threads of this process; the flock serialises processes.
    local: Mutex<()>,
}

impl IpAllocator {
    /// Opens (creating if needed) the allocator stored in `<state_dir>/ips`
    /// for `subnet`, which must leave at least one address after the
    /// network, gateway and broadcast addresses (prefix ≤ 30).
    pub fn open(state_dir: &Path, subnet: Ipv4Net) -> Result<Self, NetworkError> {
        let subnet = subnet.trunc();
        if subnet.prefix_len() > 30 {
            return Err(NetworkError::Config(format!(
                "pod CIDR {subnet} is too small: it needs a prefix of /30 or shorter to leave room for pods"
            )));
        }
        let dir = state_dir.join("ips");
        fs::create_dir_all(&dir).map_err(|e| {
            NetworkError::io(
                format!("create the IP allocator directory {}", dir.display()),
                e,
            )
        })?;
        Ok(Self {
            dir,
            subnet,
            local: Mutex::new(()),
        })
    }

    /// The subnet addresses come from.
    pub fn subnet(&self) -> Ipv4Net {
        self.subnet
    }

    /// The gateway address: the subnet's first host address.
    pub fn gateway(&self) -> Ipv4Addr {
        gateway_of(self.subnet)
    }

    /// Reserves an address for `owner`, or returns the one it already holds.
    pub fn reserve(&self, owner: &str) -> Result<Ipv4Addr, NetworkError> {
        let _lock = self.lock()?;
        if let Some(ip) = self.find_owner(owner)? {
            return Ok(ip);
        }
        let (first, last) = range(self.subnet);
        let start = match self.read_last_reserved().map(u32::from) {
            Some(ip) if ip >= first && ip < last => ip + 1,
            _ => first,
        };
        let size = last - first + 1;
        for offset in 0..size {
            let candidate = Ipv4Addr::from(first + (start - first + offset) % size);
            let path = self.dir.join(candidate.to_string());
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    let written = file
                        .write_all(owner.as_bytes())
                        .and_then(|()| file.sync_all());
                    if let Err(e) = written {
                        let _ = fs::remove_file(&path);
                        return Err(NetworkError::io(
                            format!("write the reservation {}", path.display()),
                            e,
                        ));
                    }
                    // Only a hint for the next search: losing it is harmless.
                    if let Err(e) = fs::write(self.dir.join(LAST_RESERVED), candidate.to_string()) {
                        tracing::warn!(error = %e, "failed to record the last reserved pod IP");
                    }
                    return Ok(candidate);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(NetworkError::io(
                        format!("create the reservation {}", path.display()),
                        e,
                    ))
                }
            }
        }
        Err(NetworkError::Exhausted {
            subnet: self.subnet,
            size,
        })
    }

    /// Releases the address `owner` holds; returns it, or `None` if it held
    /// none (releasing twice is fine).
    pub fn release(&self, owner: &str) -> Result<Option<Ipv4Addr>, NetworkError> {
        let _lock = self.lock()?;
        let Some(ip) = self.find_owner(owner)? else {
            return Ok(None);
        };
        self.remove(ip)?;
        Ok(Some(ip))
    }

    /// Releases `ip` whoever holds it (recovery of ownerless or foreign
    /// entries); true if it was reserved.
    pub fn release_ip(&self, ip: Ipv4Addr) -> Result<bool, NetworkError> {
        let _lock = self.lock()?;
        self.remove(ip)
    }

    /// The address `owner` holds, if any.
    pub fn get(&self, owner: &str) -> Result<Option<Ipv4Addr>, NetworkError> {
        let _lock = self.lock()?;
        self.find_owner(owner)
    }

    /// Every reservation as `(address, owner)`, sorted by address. Entries
    /// outside the subnet (left from an earlier pod CIDR) are included; an
    /// empty owner means a crash interrupted the reservation.
    pub fn reservations(&self) -> Result<Vec<(Ipv4Addr, String)>, NetworkError> {
        let _lock = self.lock()?;
        self.scan()
    }

    fn scan(&self) -> Result<Vec<(Ipv4Addr, String)>, NetworkError> {
        let read_err = |e| {
            NetworkError::io(
                format!("read the IP allocator directory {}", self.dir.display()),
                e,
            )
        };
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(read_err)? {
            let entry = entry.map_err(read_err)?;
            let Some(ip) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            let owner = match fs::read_to_string(entry.path()) {
                Ok(s) => s.trim().to_string(),
                // Released concurrently by another process between readdir and read.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(read_err(e)),
            };
            out.push((ip, owner));
        }
        out.sort();
        Ok(out)
    }

    fn find_owner(&self, owner: &str) -> Result<Option<Ipv4Addr>, NetworkError> {
        Ok(self
            .scan()?
            .into_iter()
            .find(|(_, o)| o == owner)
            .map(|(ip, _)| ip))
    }

    fn remove(&self, ip: Ipv4Addr) -> Result<bool, NetworkError> {
        let path = self.dir.join(ip.to_string());
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(NetworkError::io(
                format!("remove the reservation {}", path.display()),
                e,
            )),
        }
    }

    fn read_last_reserved(&self) -> Option<Ipv4Addr> {
        fs::read_to_string(self.dir.join(LAST_RESERVED))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn lock(&self) -> Result<LockGuard<'_>, NetworkError> {
        let local = self.local.lock().unwrap_or_else(|e| e.into_inner());
        let path = self.dir.join(LOCK);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| {
                NetworkError::io(format!("open the IP allocator lock {}", path.display()), e)
            })?;
        // SAFETY: flock on a valid, owned descriptor; released when `file` closes.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(NetworkError::io(
                format!("lock the IP allocator {}", path.display()),
                io::Error::last_os_error(),
            ));
        }
        Ok(LockGuard {
            _file: file,
            _local: local,
        })
    }
}

/// Holds both locks; dropping closes the file, which releases the flock.
struct LockGuard<'a> {
    _file: File,
    _local: std::sync::MutexGuard<'a, ()>,
}

/// The subnet's first host address, which the bridge holds.
pub fn gateway_of(subnet: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()) + 1)
}

/// The allocatable range as integers: after the gateway, before broadcast.
fn range(subnet: Ipv4Net) -> (u32, u32) {
    let network = u32::from(subnet.network());
    let broadcast = u32::from(subnet.broadcast());
    (network + 2, broadcast - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Arc;

    fn alloc(dir: &Path, cidr: &str) -> IpAllocator {
        IpAllocator::open(dir, cidr.parse().unwrap()).unwrap()
    }

    #[test]
    fn first_address_skips_network_and_gateway() {
        let tmp = tempfile::tempdir().unwrap();
        let a = alloc(tmp.path(), "10.42.0.0/24");
        assert_eq!(a.gateway(), Ipv4Addr::new(10, 42, 0, 1));
        assert_eq!(a.reserve("pod-a").unwrap(), Ipv4Addr::new(10, 42, 0, 2));
        assert_eq!(a.reserve("pod-b").unwrap(), Ipv4Addr::new(10, 42, 0, 3));
        let stored = fs::read_to_string(tmp.path().join("ips/10.42.0.2")).unwrap();
        assert_eq!(stored, "pod-a");
    }

    #[test]
    fn reserving_twice_for_one_owner_returns_the_same_address() {
        let tmp = tempfile::tempdir().unwrap();
        let a = alloc(tmp.path(), "10.42.0.0/24");
        let ip = a.reserve("pod-a").unwrap();
        assert_eq!(a.reserve("pod-a").unwrap(), ip);
        assert_eq!(a.reservations().unwrap().len(), 1);
    }

    #[test]
    fn released_address_is_not_reused_immediately() {
        let tmp = tempfile::tempdir().unwrap();
        let a = alloc(tmp.path(), "10.42.0.0/24");
        let first = a.reserve("pod-a").unwrap();
        assert_eq!(a.release("pod-a").unwrap(), Some(first));
        let next = a.reserve("pod-b").unwrap();
        assert_ne!(next, first);
        assert_eq!(next, Ipv4Addr::new(10, 42, 0, 3));
        assert_eq!(
            a.release("pod-a").unwrap(),
            None,
            "second release is a no-op"
        );
    }

    #[test]
    fn wraps_around_and_exhausts_without_handing_out_broadcast() {
        let tmp = tempfile::tempdir().unwrap();
        // /29: .0 network, .1 gateway, .2-.6 pods, .7 broadcast.
        let a = alloc(tmp.path(), "10.42.0.0/29");
        let got: Vec<_> = (0..5)
            .map(|i| a.reserve(&format!("p{i}")).unwrap())
            .collect();
        assert_eq!(got.first(), Some(&Ipv4Addr::new(10, 42, 0, 2)));
        assert_eq!(got.last(), Some(&Ipv4Addr::new(10, 42, 0, 6)));
        let err = a.reserve("p5").unwrap_err();
        assert!(
            matches!(err, NetworkError::Exhausted { size: 5, .. }),
            "{err}"
        );
        // Free one in the middle: the search wraps past the end to find it.
        a.release("p2").unwrap();
        assert_eq!(a.reserve("p5").unwrap(), Ipv4Addr::new(10, 42, 0, 4));
    }

    #[test]
    fn state_survives_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let ip = alloc(tmp.path(), "10.42.0.0/24").reserve("pod-a").unwrap();
        let again = alloc(tmp.path(), "10.42.0.0/24");
        assert_eq!(again.get("pod-a").unwrap(), Some(ip));
        let other = again.reserve("pod-b").unwrap();
        assert_ne!(other, ip);
        assert_eq!(
            other,
            Ipv4Addr::new(10, 42, 0, 3),
            "round robin continues after a restart"
        );
    }

    #[test]
    fn empty_file_from_a_crash_is_reported_ownerless_and_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        let a = alloc(tmp.path(), "10.42.0.0/24");
        fs::write(tmp.path().join("ips/10.42.0.2"), "").unwrap();
        assert_eq!(a.reserve("pod-a").unwrap(), Ipv4Addr::new(10, 42, 0, 3));
        let res = a.reservations().unwrap();
        assert_eq!(res[0], (Ipv4Addr::new(10, 42, 0, 2), String::new()));
        assert!(a.release_ip(Ipv4Addr::new(10, 42, 0, 2)).unwrap());
        assert!(!a.release_ip(Ipv4Addr::new(10, 42, 0, 2)).unwrap());
    }

    #[test]
    fn tiny_subnets_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let err = IpAllocator::open(tmp.path(), "10.42.0.0/31".parse().unwrap()).unwrap_err();
        assert!(err.to_string().contains("too small"), "{err}");
    }

    #[test]
    fn concurrent_reservations_get_distinct_addresses() {
        let tmp = tempfile::tempdir().unwrap();
        // Two allocators on one directory stand for two processes.
        let a = Arc::new(alloc(tmp.path(), "10.42.0.0/24"));
        let b = Arc::new(alloc(tmp.path(), "10.42.0.0/24"));
        let handles: Vec<_> = (0..40)
            .map(|i| {
                let al = if i % 2 == 0 { a.clone() } else { b.clone() };
                std::thread::spawn(move || al.reserve(&format!("pod-{i}")).unwrap())
            })
            .collect();
        let ips: HashSet<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(ips.len(), 40);
        assert_eq!(a.reservations().unwrap().len(), 40);
    }
}
