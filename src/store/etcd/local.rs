//! A throw-away single-member etcd on loopback, for tests and benchmarks.
//!
//! Runs the `etcd` binary found on `PATH` (Debian's `etcd-server`) with its
//! data in a fresh directory under the temp dir and its client and peer ports
//! picked free on 127.0.0.1; [`Drop`] kills it and removes the directory.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A running etcd; killed and wiped on drop.
pub struct LocalEtcd {
    child: Child,
    dir: PathBuf,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl LocalEtcd {
    /// Whether an `etcd` binary is available (tests skip without one).
    pub fn available() -> bool {
        Command::new("etcd")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Starts etcd and waits until it reports healthy.
    pub fn start() -> std::io::Result<LocalEtcd> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!("rk3s-etcd-{}-{n}-{nanos}", std::process::id());
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir)?;
        let (client, peer) = (free_port()?, free_port()?);
        let endpoint = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.join("etcd.log"))?;
        let child = Command::new("etcd")
            .args(["--name", "default", "--data-dir"])
            .arg(dir.join("data"))
            .args(["--listen-client-urls", &endpoint])
            .args(["--advertise-client-urls", &endpoint])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("default={peer_url}")])
            .args(["--initial-cluster-token", &name])
            .args(["--log-level", "warn", "--logger", "zap"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let etcd = LocalEtcd {
            child,
            dir,
            endpoint,
        };
        etcd.wait_healthy(client, Duration::from_secs(30))?;
        Ok(etcd)
    }

    /// The etcd process id (for RSS figures).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_healthy(&self, port: u16, within: Duration) -> std::io::Result<()> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if health(port).unwrap_or(false) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default();
        Err(std::io::Error::other(format!(
            "etcd did not become healthy within {within:?}: {log}"
        )))
    }
}

/// `GET /health` over plain HTTP/1.0.
fn health(port: u16) -> std::io::Result<bool> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body.contains("\"health\":\"true\""))
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
