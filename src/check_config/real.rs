//! The real [`Host`]: reads `/proc`, `/sys` and `/lib/modules`, looks up
//! `PATH`, and tries to bind ports, naming the holder of a busy port from
//! `/proc/net/*` and `/proc/<pid>/fd` when it can.

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;

use super::{Host, PortState, Proto};

/// The machine this process runs on.
pub struct RealHost;

impl Host for RealHost {
    fn read(&self, path: &str) -> Option<String> {
        std::fs::read_to_string(path).ok()
    }

    fn exists(&self, path: &str) -> bool {
        std::path::Path::new(path).exists()
    }

    fn which(&self, program: &str) -> Option<PathBuf> {
        crate::hostos::find_on_path(program, None)
    }

    fn probe_port(&self, proto: Proto, port: u16) -> PortState {
        let addr = SocketAddr::from(([0, 0, 0, 0], port));
        let result = match proto {
            Proto::Tcp => TcpListener::bind(addr).map(drop),
            Proto::Udp => UdpSocket::bind(addr).map(drop),
        };
        match result {
            Ok(()) => PortState::Free,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                PortState::InUse(port_owner(proto, port))
            }
            Err(e) => PortState::Unknown(e.to_string()),
        }
    }
}

/// The name of the process holding `port`, from `/proc/net/*` and `/proc/*/fd`.
fn port_owner(proto: Proto, port: u16) -> Option<String> {
    let tables: &[&str] = match proto {
        Proto::Tcp => &["/proc/net/tcp", "/proc/net/tcp6"],
        Proto::Udp => &["/proc/net/udp", "/proc/net/udp6"],
    };
    let mut inodes = HashSet::new();
    for table in tables {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let cols: Vec<_> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) = (cols.get(1), cols.get(3), cols.get(9))
            else {
                continue;
            };
            let listening = proto == Proto::Udp || *state == "0A";
            let local_port = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if listening && local_port == Some(port) {
                inodes.insert(format!("socket:[{inode}]"));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let pid = entry.file_name();
        if !pid.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            if inodes.contains(link.to_string_lossy().as_ref()) {
                let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
                let comm = comm.trim();
                return Some(if comm == "rk3s" {
                    comm.to_string()
                } else {
                    format!("{comm} (pid {})", pid.to_string_lossy())
                });
            }
        }
    }
    None
}
