//! Several servers on one etcd cluster, as users run them: a 3-member etcd
//! (Debian's `etcd-server`, three members with their own ports in one
//! network namespace), two `rk3s server --disable-agent` in their own
//! namespaces on that etcd with one token, and one `rk3s agent` (joined to
//! server 1) on a private containerd. kubectl talks to each server on its
//! node IP (its serving certificate carries it).
//!
//! What it checks (issue 21):
//! - both servers serve the same objects, and a watch through one sees a
//!   write through the other;
//! - `kill -9` of the server holding the controller lease: the other takes
//!   the controller and scheduler Leases, a Deployment scaled after the kill
//!   reaches its new size on the agent, and the agent's pods never stop;
//! - `kill -9` of one etcd member: reads and writes through both servers go on.
//!
//! - `kubectl logs` and `exec` reach the agent's pod through either server
//!   (the agent keeps a tunnel to every server), and through the survivor
//!   after the kill, whichever server died (the agent joined server 1; its
//!   load balancer moves to server 2 when server 1 is the one killed).
//!
//! Root-only: skips without root unless `RK3S_E2E=1`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::containerd::Containerd;
use common::image::{BusyboxImage, DEFAULT_REFERENCE};
use common::netns::{Network, Node};
use common::privilege::{self, require_e2e};
use common::twonode::{text, wait_line, Daemon};

const TOKEN: &str = "ha-e2e-shared-token";

/// One etcd member in the etcd namespace; SIGKILLed on drop.
struct EtcdMember {
    child: Option<Child>,
    client_url: String,
}

impl EtcdMember {
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for EtcdMember {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Starts three members on `node` (client ports 2379/2381/2383, peer ports
/// 2380/2382/2384) with data under `dir`.
fn start_etcd(node: &Node, dir: &Path) -> Vec<EtcdMember> {
    let ip = node.ip();
    let peer = |i: usize| format!("http://{ip}:{}", 2380 + 2 * i);
    let cluster: Vec<String> = (0..3).map(|i| format!("m{i}={}", peer(i))).collect();
    let cluster = cluster.join(",");
    let token = format!("rk3s-ha-{}", std::process::id());
    (0..3)
        .map(|i| {
            let client_url = format!("http://{ip}:{}", 2379 + 2 * i);
            let log = std::fs::File::create(dir.join(format!("etcd-m{i}.log"))).unwrap();
            let child = Command::new(privilege::tool("nsenter"))
                .arg(format!("--net=/var/run/netns/{}", node.netns()))
                .args(["etcd", "--name", &format!("m{i}"), "--data-dir"])
                .arg(dir.join(format!("etcd-m{i}")))
                .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer(i), "--initial-advertise-peer-urls", &peer(i)])
                .args(["--initial-cluster", &cluster, "--initial-cluster-token", &token])
                .args(["--initial-cluster-state", "new", "--log-level", "warn"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start etcd");
            EtcdMember { child: Some(child), client_url }
        })
        .collect()
}

/// An etcd member's `/health` (through curl in the etcd namespace).
fn etcd_healthy(node: &Node, url: &str) -> bool {
    let o = node.exec(&["curl", "-s", "-m", "2", &format!("{url}/health")]);
    text(&o.stdout).contains("\"health\":\"true\"")
}

/// The cluster; field order is drop order.
struct Ha {
    agent: Option<Daemon>,
    servers: Vec<Daemon>,
    etcd: Vec<EtcdMember>,
    agent_ctrd: Containerd,
    agent_node: Node,
    server_nodes: Vec<Node>,
    etcd_node: Node,
    _net: Network,
    pod_uids: std::cell::RefCell<Vec<String>>,
    home: tempfile::TempDir,
    dir: tempfile::TempDir,
}

impl Ha {
    fn start() -> Ha {
        let net = Network::new("ha").expect("network");
        let etcd_node = net.add_node("etcd").expect("etcd node");
        let server_nodes = vec![net.add_node("srv1").expect("node"), net.add_node("srv2").expect("node")];
        let agent_node = net.add_node("agent").expect("agent node");
        let agent_ctrd = Containerd::start_in_netns(agent_node.netns()).expect("containerd");
        let tar = BusyboxImage::new(DEFAULT_REFERENCE).write(agent_ctrd.scratch()).unwrap();
        agent_ctrd.import(&tar).expect("import busybox");
        let dir = tempfile::tempdir().unwrap();
        let etcd = start_etcd(&etcd_node, dir.path());
        let mut ha = Ha {
            agent: None,
            servers: Vec::new(),
            etcd,
            agent_ctrd,
            agent_node,
            server_nodes,
            etcd_node,
            _net: net,
            pod_uids: Default::default(),
            home: tempfile::tempdir().unwrap(),
            dir,
        };
        ha.wait_for("a healthy 3-member etcd", 60, || {
            ha.etcd.iter().all(|m| etcd_healthy(&ha.etcd_node, &m.client_url)).then_some(())
        });
        for i in 0..2 {
            let d = ha.server_daemon(i);
            ha.servers.push(d);
            ha.wait_for(&format!("server {}'s API", i + 1), 90, || {
                ha.kubectl(i, &["get", "ns", "default"]).status.success().then_some(())
            });
        }
        ha.agent = Some(ha.agent_daemon());
        ha.wait_for("node agent Ready", 120, || {
            let o = ha.kubectl(0, &["get", "node", "agent", "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"]);
            (text(&o.stdout) == "True").then_some(())
        });
        ha
    }

    fn endpoints(&self) -> String {
        self.etcd.iter().map(|m| m.client_url.clone()).collect::<Vec<_>>().join(",")
    }

    fn data(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("srv{}-data", i + 1))
    }

    fn kubeconfig(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("srv{}.yaml", i + 1))
    }

    fn server_url(&self, i: usize) -> String {
        format!("https://{}:6443", self.server_nodes[i].ip())
    }

    fn server_daemon(&self, i: usize) -> Daemon {
        let name = if i == 0 { "server1" } else { "server2" };
        let mut argv: Vec<String> = [
            "server",
            "--disable-agent",
            "--node-name",
            &format!("srv{}", i + 1),
            "--node-ip",
            &self.server_nodes[i].ip().to_string(),
            "--datastore-endpoint",
            &self.endpoints(),
            "--token",
            TOKEN,
            "--data-dir",
            self.data(i).to_str().unwrap(),
            "--write-kubeconfig",
            self.kubeconfig(i).to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec();
        if i > 0 {
            argv.extend(["--server".to_string(), self.server_url(0)]);
        }
        Daemon::start(name, self.server_nodes[i].netns(), argv, Vec::new(), self.dir.path().join(format!("{name}.log")))
    }

    fn agent_daemon(&self) -> Daemon {
        // The full `K10<ca-hash>::server:<secret>` form, as users copy it.
        let token = std::fs::read_to_string(self.data(0).join("server/token")).expect("read the server token");
        let argv = [
            "agent",
            "--server",
            &self.server_url(0),
            "--token",
            token.trim(),
            "--node-name",
            "agent",
            "--node-ip",
            &self.agent_node.ip().to_string(),
            "--container-runtime-endpoint",
            &format!("unix://{}", self.agent_ctrd.socket().display()),
            "--data-dir",
            self.dir.path().join("agent-data").to_str().unwrap(),
            "--run-dir",
            self.dir.path().join("agent-run").to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec();
        let envs = vec![(
            "RK3S_NODE_PASSWORD_FILE".to_string(),
            self.dir.path().join("agent-node-password").display().to_string(),
        )];
        Daemon::start("agent", self.agent_node.netns(), argv, envs, self.dir.path().join("agent.log"))
    }

    /// kubectl from the host to server `i` on its node IP, killed after 60 s.
    fn kubectl_cmd(&self, i: usize, args: &[&str]) -> Command {
        let mut c = Command::new("kubectl");
        c.arg("--kubeconfig")
            .arg(self.kubeconfig(i))
            .args(["--server", &self.server_url(i), "--request-timeout", "20s"])
            .args(args)
            .env("HOME", self.home.path())
            .env("KUBECACHEDIR", self.home.path().join(format!("cache{i}")));
        c
    }

    fn kubectl(&self, i: usize, args: &[&str]) -> Output {
        privilege::output_within(&mut self.kubectl_cmd(i, args), Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"))
    }

    fn kubectl_ok(&self, i: usize, args: &[&str]) -> String {
        let o = self.kubectl(i, args);
        assert!(o.status.success(), "kubectl (server {}) {args:?}: {}", i + 1, text(&o.stderr));
        text(&o.stdout)
    }

    fn apply(&self, i: usize, yaml: &str) {
        let mut child = self
            .kubectl_cmd(i, &["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(yaml.as_bytes()).unwrap();
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "apply: {}", text(&o.stderr));
    }

    /// The holder of `kube-system/<lease>`, as server `i` sees it.
    fn holder(&self, i: usize, lease: &str) -> String {
        text(&self.kubectl(i, &["get", "lease", "-n", "kube-system", lease, "-o", "jsonpath={.spec.holderIdentity}"]).stdout)
    }

    fn wait_for<T>(&self, what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out after {secs} s waiting for {what}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// name → (uid, first container's containerID) of the `web` pods.
    fn web_pods(&self, i: usize) -> Vec<(String, String, String)> {
        let out = self.kubectl_ok(
            i,
            &["get", "pods", "-l", "app=web", "-o",
              "jsonpath={range .items[*]}{.metadata.name} {.metadata.uid} {.status.phase} {.spec.nodeName} {.status.containerStatuses[0].containerID}{\"\\n\"}{end}"],
        );
        // Every pod seen is tracked for clean-up, running or not.
        for l in out.lines() {
            if let Some(uid) = l.split(' ').nth(1).filter(|u| !u.is_empty()) {
                if !self.pod_uids.borrow().iter().any(|k| k == uid) {
                    self.pod_uids.borrow_mut().push(uid.to_string());
                }
            }
        }
        out.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                (f.len() == 5 && f[2] == "Running" && f[3] == "agent" && !f[4].is_empty())
                    .then(|| (f[0].to_string(), f[1].to_string(), f[4].to_string()))
            })
            .collect()
    }

    fn diagnostics(&self) {
        for (i, s) in self.servers.iter().enumerate() {
            eprintln!("===== server {} log (tail) =====\n{}", i + 1, s.log_tail(60));
        }
        if let Some(a) = &self.agent {
            eprintln!("===== agent log (tail) =====\n{}", a.log_tail(60));
        }
    }
}

impl Drop for Ha {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.diagnostics();
        }
        if let Some(mut a) = self.agent.take() {
            a.stop();
        }
        for s in &mut self.servers {
            s.stop();
        }
        // The fail-static agent leaves its pods' namespaces and logs behind.
        for uid in self.pod_uids.borrow().iter() {
            let netns = format!("rk3s-{uid}");
            if Path::new("/var/run/netns").join(&netns).exists() {
                let _ = common::netns::ip(&["netns", "del", &netns]);
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

const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: docker.io/rk3s/busybox:test
        imagePullPolicy: Never
        command: ["sh", "-c", "echo web-started; while true; do sleep 1; done"]
"#;

#[test]
fn two_servers_on_a_three_member_etcd_survive_a_server_and_an_etcd_member() {
    if !require_e2e("two_servers_on_a_three_member_etcd_survive_a_server_and_an_etcd_member") {
        return;
    }
    let mut ha = Ha::start();

    // Both servers serve the same objects, with the same CA.
    assert_eq!(
        std::fs::read(ha.data(0).join("server/tls/server-ca.crt")).unwrap(),
        std::fs::read(ha.data(1).join("server/tls/server-ca.crt")).unwrap()
    );
    ha.kubectl_ok(0, &["create", "configmap", "from-one", "--from-literal=k=1"]);
    assert_eq!(ha.kubectl_ok(1, &["get", "configmap", "from-one", "-o", "jsonpath={.data.k}"]), "1");
    // A watch through server 2 sees a write through server 1.
    let mut watch = ha
        .kubectl_cmd(1, &["get", "configmaps", "--watch", "-o", "name", "--request-timeout", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let out = std::io::BufReader::new(watch.stdout.take().unwrap());
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in out.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    assert!(wait_line(&rx, 30, |l| l.contains("from-one")).is_some(), "the watch never listed");
    ha.kubectl_ok(0, &["create", "configmap", "watched", "--from-literal=k=2"]);
    let seen = wait_line(&rx, 30, |l| l.contains("watched"));
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(seen.is_some(), "a watch through server 2 missed a write through server 1");
    // ClusterIPs allocated through both servers never collide.
    for (i, name) in [(0, "svc-a"), (1, "svc-b"), (0, "svc-c"), (1, "svc-d")] {
        ha.kubectl_ok(i, &["create", "service", "clusterip", name, "--tcp=80:80"]);
    }
    let ips = ha.kubectl_ok(0, &["get", "services", "-o", "jsonpath={range .items[*]}{.spec.clusterIP}{\"\\n\"}{end}"]);
    let list: Vec<&str> = ips.lines().collect();
    let distinct: std::collections::BTreeSet<&&str> = list.iter().collect();
    assert_eq!(list.len(), distinct.len(), "duplicate ClusterIPs: {list:?}");

    // One server leads the controllers and the scheduler; a Deployment runs.
    let leader = ha.wait_for("a controller-manager leader", 60, || {
        let h = ha.holder(0, "kube-controller-manager");
        (!h.is_empty()).then_some(h)
    });
    ha.apply(0, WEB);
    let before = ha.wait_for("the web pod running on the agent", 120, || {
        let pods = ha.web_pods(0);
        (pods.len() == 1).then_some(pods)
    });

    // Before any kill: logs and exec reach the agent's pod through either
    // server (the agent keeps a tunnel to each server it finds in the
    // `kubernetes` Endpoints, not only to the one it joined).
    let name = before[0].0.clone();
    for i in 0..2 {
        let logs = ha.wait_for(&format!("logs through server {}", i + 1), 60, || {
            let o = ha.kubectl(i, &["logs", &name]);
            o.status.success().then(|| text(&o.stdout))
        });
        assert!(logs.contains("web-started"), "{logs}");
        let said = ha.kubectl_ok(i, &["exec", &name, "--", "echo", &format!("hello-through-srv{}", i + 1)]);
        assert!(said.contains(&format!("hello-through-srv{}", i + 1)), "{said}");
    }

    // kill -9 of the server leading the controllers, whichever it is (the
    // agent joined server 1: when server 1 dies, its load balancer moves to
    // server 2): the other server takes over and the controllers act.
    let (dead, live) = if leader.starts_with("srv1_") { (0, 1) } else { (1, 0) };
    let live_holder = format!("srv{}_", live + 1);
    let killed = Instant::now();
    ha.servers[dead].kill9();
    ha.kubectl_ok(live, &["scale", "deployment", "web", "--replicas=3"]);
    ha.wait_for("the surviving server to take both leases", 60, || {
        let cm = ha.holder(live, "kube-controller-manager");
        let sched = ha.holder(live, "kube-scheduler");
        (cm.starts_with(&live_holder) && sched.starts_with(&live_holder)).then_some(())
    });
    let took_over = killed.elapsed();
    let after = ha.wait_for("the Deployment at its new size", 120, || {
        let pods = ha.web_pods(live);
        (pods.len() == 3).then_some(pods)
    });
    println!(
        "leader failover: leases taken {:.1} s after kill -9, 3 pods running {:.1} s after",
        took_over.as_secs_f64(),
        killed.elapsed().as_secs_f64()
    );
    // The agent's pod never stopped: same pod, same container, no restart.
    for pod in &before {
        assert!(after.contains(pod), "pod {pod:?} was replaced or restarted: {after:?}");
        let restarts = ha.kubectl_ok(live, &["get", "pod", &pod.0, "-o", "jsonpath={.status.containerStatuses[0].restartCount}"]);
        assert_eq!(restarts, "0");
    }

    // kill -9 of one etcd member: reads and writes go on.
    ha.etcd[0].kill9();
    for n in 0..5 {
        ha.kubectl_ok(live, &["create", "configmap", &format!("after-etcd-{n}"), "--from-literal=k=v"]);
        assert_eq!(
            ha.kubectl_ok(live, &["get", "configmap", &format!("after-etcd-{n}"), "-o", "jsonpath={.data.k}"]),
            "v"
        );
    }
    ha.kubectl_ok(live, &["get", "pods", "-l", "app=web"]);

    // Through the surviving server, logs and exec reach the agent's pods
    // (for a dead server 1, through the tunnel the agent opened to server 2).
    let name = after[0].0.clone();
    let logs = ha.wait_for("logs through the surviving server", 60, || {
        let o = ha.kubectl(live, &["logs", &name]);
        o.status.success().then(|| text(&o.stdout))
    });
    assert!(logs.contains("web-started"), "{logs}");
    let said = ha.kubectl_ok(live, &["exec", &name, "--", "echo", "hello-through-the-survivor"]);
    assert!(said.contains("hello-through-the-survivor"), "{said}");

    // The dead server comes back (same token, same etcd, one member down)
    // and serves the objects written while it was gone.
    ha.servers[dead].spawn();
    ha.wait_for("the restarted server's API", 90, || {
        ha.kubectl(dead, &["get", "configmap", "after-etcd-4"]).status.success().then_some(())
    });
}
