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

use std::path::PathBuf;

use super::containerd::Containerd;
use super::netns::{Network, Node};
use super::nodekit::{self, text, ServerShell};
use super::twonode::Daemon;

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
    shell: ServerShell,
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
        nodekit::import_busybox(&server_ctrd);
        let dir = tempfile::tempdir().unwrap();
        let (server, kubeconfig) = nodekit::start_server(&server_node, &server_ctrd, dir.path(), server_flags);
        let mut c = Cluster {
            agents: Vec::new(),
            server,
            _server_ctrd: server_ctrd,
            shell: ServerShell::new(server_node.netns(), &kubeconfig),
            server_node,
            net,
            pod_uids: Default::default(),
            kubeconfig,
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
        let token = nodekit::server_token(&c.dir.path().join("server-data"));
        {
            let node = c.net.add_node(name).expect("agent node");
            let ctrd = Containerd::start_in_netns(node.netns()).expect("containerd");
            nodekit::import_busybox(&ctrd);
            let (argv, envs) = nodekit::agent_command(
                name,
                &c.server_node,
                &token,
                &node,
                &ctrd,
                &c.dir.path().join(format!("{name}-data")),
                &c.dir.path().join(format!("{name}-password")),
            );
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

    pub fn track_pod(&self, pod: &str) {
        let uid = self.pod_field(pod, "{.metadata.uid}");
        assert!(!uid.is_empty(), "pod {pod} has no uid");
        self.pod_uids.borrow_mut().push(uid);
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

/// kubectl and commands beside the server: `cluster.kubectl(…)`,
/// `cluster.apply(…)`, `cluster.node_ready(…)`, `cluster.wait_for(…)`.
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
        for a in &mut self.agents {
            a.daemon.stop();
        }
        self.server.stop();
        for uid in self.pod_uids.borrow().iter() {
            nodekit::forget_pod(uid);
        }
    }
}
