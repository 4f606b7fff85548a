//! A small two-node cluster as users run it: the real `rk3s server` in one
//! network namespace and the real `rk3s agent` in another, each on its own
//! private containerd ([`super::containerd`]), on a [`super::netns`]
//! bridge. kubectl runs beside the server (in its namespace), as a user's
//! would.
//!
//! The server keeps its built-in agent (node `server`): k3s's default, and
//! it puts two rk3s agents on one machine, so tests also catch agents that
//! trample each other's host-wide state (`/var/log/pods`, `/var/run/netns`;
//! each node gets its own `--run-dir`, see [`nodekit::run_dir`]).
//!
//! Processes start with `nsenter --net`, never `ip netns exec`: the latter
//! gives them a private mount namespace, where the pod namespaces the agent
//! binds under /var/run/netns would be invisible to containerd and runc.
//!
//! Invariants: `Drop` stops both processes (SIGTERM, then SIGKILL), then
//! the containerds kill the pods, then the namespaces go; the pods' netns
//! files and log directories (host-wide, and left behind on purpose by the
//! fail-static agent) are removed for every pod registered with
//! [`Cluster::track_pod`]. On a panic both logs' tails, the nodes and pods,
//! and the agent's containerd tasks are printed first.
//!
//! Partial: one agent; IPv4 only.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::containerd::Containerd;
use super::netns::{Network, Node};
use super::nodekit::{self, ServerShell};
use super::privilege;
pub use super::nodekit::text;

const RK3S: &str = env!("CARGO_BIN_EXE_rk3s");

/// The `rk3s` binary daemons run: `RK3S_BINARY` when set (e.g. a release
/// build for benchmark figures), else the one cargo built with the test.
pub fn rk3s_binary() -> String {
    std::env::var("RK3S_BINARY").unwrap_or_else(|_| RK3S.to_string())
}

/// An `rk3s` process (server or agent) started with `nsenter --net`, its
/// output in a log file; SIGTERM then SIGKILL on stop or drop.
pub struct Daemon {
    name: &'static str,
    argv: Vec<String>,
    envs: Vec<(String, String)>,
    netns: String,
    log: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    pub fn start(
        name: &'static str,
        netns: &str,
        argv: Vec<String>,
        envs: Vec<(String, String)>,
        log: PathBuf,
    ) -> Self {
        let mut d = Daemon {
            name,
            argv,
            envs,
            netns: netns.to_string(),
            log,
            child: None,
        };
        d.spawn();
        d
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the daemon log");
        // nsenter, not `ip netns exec`: the latter gives the process a
        // private mount namespace, where the pod namespaces it binds under
        // /var/run/netns would be invisible to containerd and runc.
        let mut cmd = Command::new(privilege::tool("nsenter"));
        cmd.arg(format!("--net=/var/run/netns/{}", self.netns))
            .arg(rk3s_binary())
            .args(&self.argv)
            .env("RK3S_CONFIG_FILE", "/dev/null")
            .env("RUST_LOG", "info,rk3s=debug")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        self.child = Some(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("start {}: {e}", self.name)),
        );
    }

    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // nsenter execs rk3s, so the child's pid is rk3s's.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{} ignored SIGTERM for 20 s: killing it", self.name);
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The running process's pid (nsenter execs rk3s, so it is rk3s's).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL, as a crash: no clean-up runs (pods and node state stay).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<_> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The two-namespace cluster. Field order is drop order: processes, then
/// the containerds (which kill the pods), then the namespaces.
pub struct Cluster {
    agent: Daemon,
    server: Daemon,
    pub agent_ctrd: Containerd,
    _server_ctrd: Containerd,
    pub agent_node: Node,
    pub server_node: Node,
    _net: Network,
    /// Pod uids created by the test: their netns files and log dirs are
    /// host-wide and removed on drop.
    pod_uids: std::cell::RefCell<Vec<String>>,
    pub kubeconfig: PathBuf,
    shell: ServerShell,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// As [`Cluster::start`], with `server_flags` appended to the
    /// server's command line (e.g. `--disable servicelb`).
    pub fn start_with(server_flags: &[&str]) -> Self {
        let net = Network::new("an").expect("network");
        let server_node = net.add_node("server").expect("server node");
        let agent_node = net.add_node("agent").expect("agent node");
        let server_ctrd = Containerd::start_in_netns(server_node.netns()).expect("containerd");
        let agent_ctrd = Containerd::start_in_netns(agent_node.netns()).expect("containerd");
        nodekit::import_busybox(&agent_ctrd);

        let dir = tempfile::tempdir().unwrap();
        let (server, kubeconfig) = nodekit::start_server(&server_node, &server_ctrd, dir.path(), server_flags);
        let placeholder_agent = Daemon {
            name: "agent",
            argv: Vec::new(),
            envs: Vec::new(),
            netns: agent_node.netns().to_string(),
            log: dir.path().join("agent.log"),
            child: None,
        };
        let cluster = Cluster {
            agent: placeholder_agent,
            server,
            agent_ctrd,
            _server_ctrd: server_ctrd,
            shell: ServerShell::new(server_node.netns(), &kubeconfig),
            agent_node,
            server_node,
            _net: net,
            pod_uids: Default::default(),
            kubeconfig,
            dir,
        };
        cluster.wait_for("the API", 60, || {
            cluster
                .kubectl(&["get", "ns"])
                .status
                .success()
                .then_some(())
        });
        cluster
    }

    /// Starts `rk3s agent` in the agent namespace, joining with the
    /// server's token as a user would (`--token $(cat …/server/token)`).
    pub fn start_agent(&mut self) {
        let (argv, envs) = nodekit::agent_command(
            "agent",
            &self.server_node,
            &nodekit::server_token(&self.dir.path().join("server-data")),
            &self.agent_node,
            &self.agent_ctrd,
            &self.dir.path().join("agent-data"),
            &self.dir.path().join("agent-node-password"),
        );
        self.agent = Daemon::start(
            "agent",
            self.agent_node.netns(),
            argv,
            envs,
            self.dir.path().join("agent.log"),
        );
    }

    /// One more namespace on the cluster's network (e.g. an upstream DNS
    /// server); drop it before the cluster.
    pub fn add_node(&self, name: &str) -> Node {
        self._net.add_node(name).expect("add a node namespace")
    }

    /// `kill -9` of the agent: no drain, no cleanup (fail-static tests);
    /// [`Cluster::respawn_agent`] starts it again with the same flags.
    pub fn kill9_agent(&mut self) {
        self.agent.kill9();
    }

    pub fn respawn_agent(&mut self) {
        self.agent.spawn();
    }

    pub fn restart_server(&mut self) {
        self.server.stop();
        self.server.spawn();
    }

    /// Stops the server (SIGTERM) without starting it again; see [`Cluster::spawn_server`].
    pub fn stop_server(&mut self) {
        self.server.stop();
    }

    /// Starts the server again with the same flags.
    pub fn spawn_server(&mut self) {
        self.server.spawn();
    }

    /// Stops the agent (SIGTERM) and starts it again with the same flags.
    pub fn restart_agent(&mut self) {
        self.agent.stop();
        self.agent.spawn();
    }

    /// Drops every new inbound connection in the agent's namespace
    /// (loopback aside: the agent's own processes may talk to themselves).
    pub fn firewall_agent(&self) {
        for rule in [
            "add table inet rk3stest",
            "add chain inet rk3stest input { type filter hook input priority -10 ; policy accept ; }",
            "add rule inet rk3stest input iifname lo accept",
            "add rule inet rk3stest input ct state new drop",
        ] {
            let mut argv = vec!["nft"];
            argv.extend(rule.split(' '));
            let o = self.agent_node.exec(&argv);
            assert!(o.status.success(), "nft {rule}: {}", text(&o.stderr));
        }
    }

    /// A long-running kubectl whose stdout lines arrive on the receiver.
    pub fn kubectl_lines(&self, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
        let mut child = self
            .kubectl_cmd(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start kubectl");
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        (child, rx)
    }

    /// [`Cluster::track_pod`] for a pod in namespace `ns`.
    pub fn track_pod_in(&self, ns: &str, pod: &str) {
        let o = self.kubectl(&[
            "get",
            "pod",
            "-n",
            ns,
            pod,
            "-o",
            "jsonpath={.metadata.uid}",
        ]);
        let uid = text(&o.stdout);
        assert!(!uid.is_empty(), "pod {ns}/{pod} has no uid");
        self.pod_uids.borrow_mut().push(uid);
    }

    pub fn track_pod(&self, pod: &str) {
        let uid = self.pod_field(pod, "{.metadata.uid}");
        assert!(!uid.is_empty(), "pod {pod} has no uid");
        self.pod_uids.borrow_mut().push(uid);
    }

    pub fn diagnostics(&self) {
        eprintln!(
            "===== server log (tail) =====\n{}",
            self.server.log_tail(80)
        );
        eprintln!("===== agent log (tail) =====\n{}", self.agent.log_tail(80));
        if self.server.child.is_some() {
            let o = self.kubectl(&["get", "nodes,pods", "-o", "wide"]);
            eprintln!(
                "===== kubectl get nodes,pods =====\n{}{}",
                text(&o.stdout),
                text(&o.stderr)
            );
        }
        eprintln!(
            "===== agent containerd =====\n{}",
            text(&self.agent_ctrd.ctr(&["tasks", "ls"]).stdout)
        );
    }
}

/// kubectl and commands beside the server: `cluster.kubectl(…)`,
/// `cluster.apply(…)`, `cluster.wait_for(…)`, `cluster.in_server(…)`.
impl std::ops::Deref for Cluster {
    type Target = ServerShell;
    fn deref(&self) -> &ServerShell {
        &self.shell
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.diagnostics();
        }
        self.agent.stop();
        self.server.stop();
        // The agent is fail-static: it leaves its pods' namespaces and logs
        // behind on purpose. They are host-wide, so remove ours.
        for uid in self.pod_uids.borrow().iter() {
            nodekit::forget_pod(uid);
        }
    }
}

/// Runs `f` on a thread inside network namespace `netns`.
pub fn in_netns<T: Send + 'static>(netns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    use std::os::fd::AsRawFd;
    let path = format!("/var/run/netns/{netns}");
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).expect("open the netns");
        // SAFETY: setns on this thread only, with a valid fd.
        assert_eq!(
            unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
            0,
            "setns"
        );
        f()
    })
    .join()
    .expect("netns thread")
}

pub fn wait_line(
    rx: &mpsc::Receiver<String>,
    secs: u64,
    mut ok: impl FnMut(&str) -> bool,
) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(l) if ok(&l) => return Some(l),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

pub fn kill(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}
