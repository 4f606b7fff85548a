//! One node as a Pi owner runs it: the real `rk3s server` (API, controllers,
//! scheduler and the built-in agent, node `server`) in its own network
//! namespace on a private containerd holding the busybox test image, its
//! data dir on disk (not tmpfs, so its writes show in `/proc/<pid>/io`).
//! kubectl runs beside it. `--disable-agent` variants need no containerd.
//!
//! Invariants: `Drop` stops the server (SIGTERM, then SIGKILL), then the
//! containerd (which kills the pods), then the namespace; netns files and
//! log directories of the pods the test lists with [`OneNode::pod_uids`]
//! are removed.

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use super::containerd::Containerd;
use super::image::{BusyboxImage, DEFAULT_REFERENCE};
use super::netns::{Network, Node};
use super::privilege;
use super::twonode::Daemon;

pub struct OneNode {
    pub server: Daemon,
    pub ctrd: Option<Containerd>,
    pub node: Node,
    _net: Network,
    pub kubeconfig: PathBuf,
    pub dir: tempfile::TempDir,
    home: tempfile::TempDir,
}

impl OneNode {
    /// Starts the server (with `extra` flags, e.g. `--disable-agent`) and
    /// waits for the API. `rust_log` is the server's `RUST_LOG`.
    pub fn start(extra: &[&str], rust_log: &str) -> Self {
        let net = Network::new("q1").expect("network");
        let node = net.add_node("server").expect("server node");
        let with_agent = !extra.contains(&"--disable-agent");
        let ctrd = with_agent.then(|| {
            let c = Containerd::start_in_netns(node.netns()).expect("containerd");
            let tar = BusyboxImage::new(DEFAULT_REFERENCE)
                .write(c.scratch())
                .unwrap();
            c.import(&tar).expect("import busybox");
            c
        });
        // On disk, so the server's writes are counted as storage writes.
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let kubeconfig = dir.path().join("rk3s.yaml");
        let mut argv: Vec<String> = [
            "server",
            "--node-name",
            "server",
            "--node-ip",
            &node.ip().to_string(),
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
            "--run-dir",
            dir.path().join("run").to_str().unwrap(),
            "--write-kubeconfig",
            kubeconfig.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec();
        if let Some(c) = &ctrd {
            argv.push("--container-runtime-endpoint".into());
            argv.push(format!("unix://{}", c.socket().display()));
        }
        argv.extend(extra.iter().map(|s| s.to_string()));
        let server = Daemon::start(
            "server",
            node.netns(),
            argv,
            vec![("RUST_LOG".into(), rust_log.into())],
            dir.path().join("server.log"),
        );
        let one = OneNode {
            server,
            ctrd,
            node,
            _net: net,
            kubeconfig,
            dir,
            home: tempfile::tempdir().unwrap(),
        };
        one.wait_for("the API", 60, || {
            one.kubectl(&["get", "ns"]).status.success().then_some(())
        });
        one
    }

    /// Waits for the built-in agent's node `server` to be Ready and for the
    /// default ServiceAccount (pods are admitted only once it exists).
    pub fn wait_node_ready(&self) {
        self.wait_for("node Ready", 120, || {
            let o = self.kubectl(&[
                "get",
                "node",
                "server",
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ]);
            (String::from_utf8_lossy(&o.stdout) == "True").then_some(())
        });
        self.wait_for("the default ServiceAccount", 60, || {
            self.kubectl(&["get", "sa", "default"])
                .status
                .success()
                .then_some(())
        });
    }

    /// The server process's pid (nsenter execs rk3s).
    pub fn pid(&self) -> u32 {
        self.server.pid().expect("the server runs")
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        let mut c = std::process::Command::new(privilege::tool("nsenter"));
        c.arg(format!("--net=/var/run/netns/{}", self.node.netns()))
            .arg("/usr/bin/kubectl")
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.home.path())
            .env("KUBECACHEDIR", self.home.path().join("cache"));
        privilege::output_within(&mut c, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let o = self.kubectl(args);
        assert!(
            o.status.success(),
            "kubectl {args:?}: {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            self.server.log_tail(40)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    pub fn wait_for<T>(&self, what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(
                start.elapsed() < Duration::from_secs(secs),
                "timed out waiting for {what}\n{}",
                self.server.log_tail(60)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Every pod uid in the cluster (for cleanup of host-wide leftovers).
    /// Runs `f` with a kube-rs client of the admin kubeconfig inside the
    /// node's namespace (where the API is reachable), on a current-thread
    /// runtime of a thread of its own; what `f` returns.
    pub fn with_kube_client<T, F>(&self, f: impl FnOnce(kube::Client) -> F + Send + 'static) -> T
    where
        T: Send + 'static,
        F: std::future::Future<Output = T>,
    {
        let kubeconfig = self.kubeconfig.clone();
        super::twonode::in_netns(self.node.netns(), move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move { f(super::apiserver::kube_client_for(&kubeconfig).await).await })
        })
    }

    pub fn pod_uids(&self) -> Vec<String> {
        let out = self.kubectl(&[
            "get",
            "pods",
            "-A",
            "-o",
            "jsonpath={.items[*].metadata.uid}",
        ]);
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(String::from)
            .collect()
    }
}

impl Drop for OneNode {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("server log tail:\n{}", self.server.log_tail(80));
        }
        let uids = if self.ctrd.is_some() {
            self.pod_uids()
        } else {
            Vec::new()
        };
        self.server.stop();
        // The agent is fail-static: pods' namespaces and logs stay behind.
        for uid in uids {
            super::nodekit::forget_pod(&uid);
        }
    }
}

/// `/proc/<pid>` figures of a process.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcStats {
    pub write_bytes: u64,
    pub cpu_seconds: f64,
    pub rss_kib: u64,
    pub fds: usize,
    pub threads: u64,
}

impl ProcStats {
    pub fn read(pid: u32) -> Self {
        let field = |text: &str, name: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command's closing parenthesis: utime is the 12th, stime the 13th.
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        Self {
            write_bytes: field(&io, "write_bytes:"),
            cpu_seconds: (t(11) + t(12)) / ticks,
            rss_kib: field(&status, "VmRSS:"),
            fds: std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count()),
            threads: field(&status, "Threads:"),
        }
    }
}
