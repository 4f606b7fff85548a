//! A cluster of one `rk3s server` (with its built-in agent, node `server`)
//! and N `rk3s agent`s (nodes `agent1`…`agentN`), each in its own network
//! namespace with its own containerd, on one [`super::netns`] bridge: the
//! multi-node setup of [`super::twonode`], grown to any number of agents,
//! with server flags of the test's choice (e.g. `--flannel-backend`).
//!
//! Every node's containerd has the busybox test image. kubectl runs in the
//! server's namespace.
//!
//! Invariants: `Drop` stops every agent and the server (SIGTERM, then
//! SIGKILL), then the containerds kill the pods, then the namespaces go;
//! the pods' netns files and log dirs (host-wide, left by the fail-static
//! agents on purpose) are removed for pods registered with
//! [`Cluster::track_pod`]. On a panic, every log's tail and the nodes and
//! pods are printed first.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::containerd::Containerd;
use super::image::{BusyboxImage, DEFAULT_REFERENCE};
use super::netns::{Network, Node};
use super::privilege;
use super::twonode::{text, Daemon};

/// One agent: its process, containerd and namespace (dropped in that order).
pub struct Agent {
    pub daemon: Daemon,
    pub ctrd: Containerd,
    pub node: Node,
    pub name: &'static str,
}

/// See the module docs. Field order is drop order.
pub struct Cluster {
    pub agents: Vec<Agent>,
    server: Daemon,
    _server_ctrd: Containerd,
    pub server_node: Node,
    pub net: Network,
    pod_uids: std::cell::RefCell<Vec<String>>,
    pub kubeconfig: PathBuf,
    home: tempfile::TempDir,
    pub dir: tempfile::TempDir,
}

const AGENT_NAMES: [&str; 4] = ["agent1", "agent2", "agent3", "agent4"];

impl Cluster {
    /// Starts the server with `server_flags` added, waits for the API, then
    /// starts `agents` agents (at most 4); returns once every node is Ready.
    pub fn start(agents: usize, server_flags: &[&str]) -> Self {
        assert!(agents <= AGENT_NAMES.len());
        let net = Network::new("mn").expect("network");
        let server_node = net.add_node("server").expect("server node");
        let server_ctrd = Containerd::start_in_netns(server_node.netns()).expect("containerd");
        let tar = BusyboxImage::new(DEFAULT_REFERENCE)
            .write(server_ctrd.scratch())
            .unwrap();
        server_ctrd.import(&tar).expect("import busybox");
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("rk3s.yaml");
        let server_data = dir.path().join("server-data");
        let mut argv: Vec<String> = [
            "server",
            "--node-name",
            "server",
            "--node-ip",
            &server_node.ip().to_string(),
            "--container-runtime-endpoint",
            &format!("unix://{}", server_ctrd.socket().display()),
            "--data-dir",
            server_data.to_str().unwrap(),
            "--write-kubeconfig",
            kubeconfig.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec();
        argv.extend(server_flags.iter().map(|s| s.to_string()));
        let server = Daemon::start(
            "server",
            server_node.netns(),
            argv,
            Vec::new(),
            dir.path().join("server.log"),
        );
        let mut c = Cluster {
            agents: Vec::new(),
            server,
            _server_ctrd: server_ctrd,
            server_node,
            net,
            pod_uids: Default::default(),
            kubeconfig,
            home: tempfile::tempdir().unwrap(),
            dir,
        };
        c.wait_for("the API", 90, || {
            c.kubectl(&["get", "ns"]).status.success().then_some(())
        });
        for _ in 0..agents {
            c.add_agent();
        }
        for name in c.node_names() {
            c.wait_for(&format!("node {name} Ready"), 120, || {
                c.node_ready(&name).then_some(())
            });
        }
        c
    }

    /// Starts the next agent (`agent<N+1>`) without waiting for it; returns its name.
    pub fn add_agent(&mut self) -> &'static str {
        let c = self;
        let name = AGENT_NAMES[c.agents.len()];
        let token = std::fs::read_to_string(c.dir.path().join("server-data/server/token"))
            .expect("read the server token");
        {
            let node = c.net.add_node(name).expect("agent node");
            let ctrd = Containerd::start_in_netns(node.netns()).expect("containerd");
            let tar = BusyboxImage::new(DEFAULT_REFERENCE)
                .write(ctrd.scratch())
                .unwrap();
            ctrd.import(&tar).expect("import busybox");
            let argv = [
                "agent",
                "--server",
                &format!("https://{}:6443", c.server_node.ip()),
                "--token",
                token.trim(),
                "--node-name",
                name,
                "--node-ip",
                &node.ip().to_string(),
                "--container-runtime-endpoint",
                &format!("unix://{}", ctrd.socket().display()),
                "--data-dir",
                c.dir.path().join(format!("{name}-data")).to_str().unwrap(),
            ]
            .map(String::from)
            .to_vec();
            let envs = vec![(
                "RK3S_NODE_PASSWORD_FILE".to_string(),
                c.dir
                    .path()
                    .join(format!("{name}-password"))
                    .display()
                    .to_string(),
            )];
            let daemon = Daemon::start(
                name,
                node.netns(),
                argv,
                envs,
                c.dir.path().join(format!("{name}.log")),
            );
            c.agents.push(Agent {
                daemon,
                ctrd,
                node,
                name,
            });
        }
        name
    }

    /// `server`, then the agents' names.
    pub fn node_names(&self) -> Vec<String> {
        std::iter::once("server".to_string())
            .chain(self.agents.iter().map(|a| a.name.to_string()))
            .collect()
    }

    /// The namespace node of `name`.
    pub fn node(&self, name: &str) -> &Node {
        if name == "server" {
            return &self.server_node;
        }
        &self
            .agents
            .iter()
            .find(|a| a.name == name)
            .expect("known node")
            .node
    }

    pub fn agent_mut(&mut self, name: &str) -> &mut Agent {
        self.agents
            .iter_mut()
            .find(|a| a.name == name)
            .expect("known agent")
    }

    pub fn node_ready(&self, name: &str) -> bool {
        let o = self.kubectl(&[
            "get",
            "node",
            name,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        text(&o.stdout) == "True"
    }

    pub fn kubectl_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(privilege::tool("nsenter"));
        c.arg(format!("--net=/var/run/netns/{}", self.server_node.netns()))
            .arg("/usr/bin/kubectl")
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.home.path())
            .env("KUBECACHEDIR", self.home.path().join("cache"));
        c
    }

    /// kubectl beside the server, killed after 60 s.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        privilege::output_within(&mut self.kubectl_cmd(args), Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let o = self.kubectl(args);
        assert!(
            o.status.success(),
            "kubectl {args:?} failed ({}): {}",
            o.status,
            text(&o.stderr)
        );
        text(&o.stdout)
    }

    pub fn apply(&self, yaml: &str) {
        let mut child = self
            .kubectl_cmd(&["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kubectl");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(yaml.as_bytes())
            .unwrap();
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "apply: {}", text(&o.stderr));
    }

    pub fn pod_field(&self, pod: &str, jsonpath: &str) -> String {
        text(
            &self
                .kubectl(&["get", "pod", pod, "-o", &format!("jsonpath={jsonpath}")])
                .stdout,
        )
    }

    pub fn track_pod(&self, pod: &str) {
        let uid = self.pod_field(pod, "{.metadata.uid}");
        assert!(!uid.is_empty(), "pod {pod} has no uid");
        self.pod_uids.borrow_mut().push(uid);
    }

    /// Polls `f` every 500 ms for up to `secs`.
    pub fn wait_for<T>(&self, what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {secs} s waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    pub fn diagnostics(&self) {
        eprintln!(
            "===== server log (tail) =====\n{}",
            self.server.log_tail(60)
        );
        for a in &self.agents {
            eprintln!(
                "===== {} log (tail) =====\n{}",
                a.name,
                a.daemon.log_tail(60)
            );
        }
        let o = self.kubectl(&["get", "nodes,pods", "-o", "wide"]);
        eprintln!(
            "===== kubectl get nodes,pods =====\n{}{}",
            text(&o.stdout),
            text(&o.stderr)
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.diagnostics();
        }
        for a in &mut self.agents {
            a.daemon.stop();
        }
        self.server.stop();
        for uid in self.pod_uids.borrow().iter() {
            let netns = format!("rk3s-{uid}");
            if Path::new("/var/run/netns").join(&netns).exists() {
                let _ = super::netns::ip(&["netns", "del", &netns]);
            }
            if let Ok(dirs) = std::fs::read_dir("/var/log/pods") {
                for d in dirs.flatten() {
                    if d.file_name().to_string_lossy().ends_with(uid.as_str()) {
                        let _ = std::fs::remove_dir_all(d.path());
                    }
                }
            }
        }
    }
}
