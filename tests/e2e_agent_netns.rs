//! Issue 8's "done when", as a user runs it: the real `rk3s server` in one
//! network namespace and the real `rk3s agent` in another, each on its own
//! containerd, with a firewall in the agent's namespace that drops every new
//! inbound connection. The agent dials out to the server's 6443 and
//! everything kubectl does with its pod (logs, exec, attach, port-forward,
//! the Python client's exec) travels through that tunnel; RBAC still
//! applies; a server restart is survived by the agent and its pods.
//!
//! The server keeps its built-in agent (node `server`, own containerd), as
//! k3s does by default: that puts two rk3s agents on one machine, which is
//! how this test checks that agents do not trample each other's host-wide
//! state (`/var/log/pods`, `/var/run/netns`, `/run/rk3s/exec`).
//!
//! Root-only: skips without root unless `RK3S_E2E=1`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::containerd::Containerd;
use common::image::{BusyboxImage, DEFAULT_REFERENCE};
use common::netns::{Network, Node};
use common::privilege::{self, require_e2e, BUSYBOX};
use sha2::{Digest, Sha256};

const RK3S: &str = env!("CARGO_BIN_EXE_rk3s");
/// Size of the file the pod serves for the parallel port-forward transfers.
const BIG_BYTES: usize = 8 << 20;

/// An `rk3s` process (server or agent) started with `nsenter --net`, its
/// output in a log file; SIGTERM then SIGKILL on stop or drop.
struct Daemon {
    name: &'static str,
    argv: Vec<String>,
    envs: Vec<(String, String)>,
    netns: String,
    log: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    fn start(
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

    fn spawn(&mut self) {
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
            .arg(RK3S)
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

    fn stop(&mut self) {
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

    fn log_tail(&self, lines: usize) -> String {
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
struct Cluster {
    agent: Daemon,
    server: Daemon,
    agent_ctrd: Containerd,
    _server_ctrd: Containerd,
    agent_node: Node,
    server_node: Node,
    _net: Network,
    /// Pod uids created by the test: their netns files and log dirs are
    /// host-wide and removed on drop.
    pod_uids: std::cell::RefCell<Vec<String>>,
    kubeconfig: PathBuf,
    home: tempfile::TempDir,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Self {
        let net = Network::new("an").expect("network");
        let server_node = net.add_node("server").expect("server node");
        let agent_node = net.add_node("agent").expect("agent node");
        let server_ctrd = Containerd::start_in_netns(server_node.netns()).expect("containerd");
        let agent_ctrd = Containerd::start_in_netns(agent_node.netns()).expect("containerd");
        let tar = BusyboxImage::new(DEFAULT_REFERENCE)
            .write(agent_ctrd.scratch())
            .unwrap();
        agent_ctrd.import(&tar).expect("import busybox");

        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("rk3s.yaml");
        let server_data = dir.path().join("server-data");
        let sock = |c: &Containerd| format!("unix://{}", c.socket().display());
        let server = Daemon::start(
            "server",
            server_node.netns(),
            [
                "server",
                "--node-name",
                "server",
                "--node-ip",
                &server_node.ip().to_string(),
                "--container-runtime-endpoint",
                &sock(&server_ctrd),
                "--data-dir",
                server_data.to_str().unwrap(),
                "--write-kubeconfig",
                kubeconfig.to_str().unwrap(),
            ]
            .map(String::from)
            .to_vec(),
            Vec::new(),
            dir.path().join("server.log"),
        );
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
            agent_node,
            server_node,
            _net: net,
            pod_uids: Default::default(),
            kubeconfig,
            home: tempfile::tempdir().unwrap(),
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
    fn start_agent(&mut self) {
        let token = std::fs::read_to_string(self.dir.path().join("server-data/server/token"))
            .expect("read the server token");
        let argv = [
            "agent",
            "--server",
            &format!("https://{}:6443", self.server_node.ip()),
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
        ]
        .map(String::from)
        .to_vec();
        // Never the host's /etc/rk3s/node/password.
        let envs = vec![(
            "RK3S_NODE_PASSWORD_FILE".to_string(),
            self.dir
                .path()
                .join("agent-node-password")
                .display()
                .to_string(),
        )];
        self.agent = Daemon::start(
            "agent",
            self.agent_node.netns(),
            argv,
            envs,
            self.dir.path().join("agent.log"),
        );
    }

    fn restart_server(&mut self) {
        self.server.stop();
        self.server.spawn();
    }

    /// Drops every new inbound connection in the agent's namespace
    /// (loopback aside: the agent's own processes may talk to themselves).
    fn firewall_agent(&self) {
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

    /// A command run in the server's namespace, with kubectl's environment
    /// (kubeconfig, private HOME and cache).
    fn in_server(&self, program: &str) -> Command {
        let mut c = Command::new(privilege::tool("nsenter"));
        c.arg(format!("--net=/var/run/netns/{}", self.server_node.netns()))
            .arg(program)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.home.path())
            .env("KUBECACHEDIR", self.home.path().join("cache"));
        c
    }

    fn kubectl_cmd(&self, args: &[&str]) -> Command {
        let mut c = self.in_server("/usr/bin/kubectl");
        c.args(args);
        c
    }

    /// kubectl beside the server, killed after 60 s.
    fn kubectl(&self, args: &[&str]) -> Output {
        privilege::output_within(&mut self.kubectl_cmd(args), Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn kubectl_ok(&self, args: &[&str]) -> String {
        let o = self.kubectl(args);
        assert!(
            o.status.success(),
            "kubectl {args:?} failed ({}): {}",
            o.status,
            text(&o.stderr)
        );
        text(&o.stdout)
    }

    fn kubectl_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = self
            .kubectl_cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kubectl");
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }

    /// A long-running kubectl whose stdout lines arrive on the receiver.
    fn kubectl_lines(&self, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
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

    fn apply(&self, yaml: &str) {
        let o = self.kubectl_stdin(&["apply", "-f", "-"], yaml.as_bytes());
        assert!(o.status.success(), "apply: {}", text(&o.stderr));
    }

    fn pod_field(&self, pod: &str, jsonpath: &str) -> String {
        text(
            &self
                .kubectl(&["get", "pod", pod, "-o", &format!("jsonpath={jsonpath}")])
                .stdout,
        )
    }

    fn track_pod(&self, pod: &str) {
        let uid = self.pod_field(pod, "{.metadata.uid}");
        assert!(!uid.is_empty(), "pod {pod} has no uid");
        self.pod_uids.borrow_mut().push(uid);
    }

    /// Polls `f` every 500 ms for up to `secs`, dumping diagnostics on timeout.
    fn wait_for<T>(&self, what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
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

    fn diagnostics(&self) {
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

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `f` on a thread inside network namespace `netns`.
fn in_netns<T: Send + 'static>(netns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
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

/// An HTTP/1.0 GET to 127.0.0.1:`port` (in the caller's namespace): the body.
fn http_get(port: u16, path: &str) -> std::io::Result<Vec<u8>> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n")?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let body = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .ok_or_else(|| std::io::Error::other(format!("no HTTP header in {out:?}")))?;
    Ok(out.split_off(body))
}

fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// The highest `line N` in `out`.
fn last_line_number(out: &str) -> Option<u64> {
    out.lines()
        .filter_map(|l| l.strip_prefix("line ")?.trim().parse().ok())
        .max()
}

fn wait_line(
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

fn kill(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

const WEB_POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  nodeName: agent
  containers:
  - name: app
    image: docker.io/rk3s/busybox:test
    command:
    - sh
    - -c
    - |
      mkdir -p /srv
      echo hello from the agent > /srv/index.html
      head -c 8388608 /dev/urandom > /srv/big
      httpd -p 80 -h /srv
      i=0
      while true; do echo line $i; i=$((i+1)); sleep 1; done
"#;

/// Fails once, then runs: `logs --previous` has the first run's output.
const ONCE_POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: once
spec:
  nodeName: agent
  containers:
  - name: app
    image: docker.io/rk3s/busybox:test
    command:
    - sh
    - -c
    - if [ -e /data/ran ]; then echo second run; exec sleep 3600; fi; touch /data/ran; echo first run; exit 1
    volumeMounts:
    - name: data
      mountPath: /data
  volumes:
  - name: data
    emptyDir: {}
"#;

#[test]
fn kubectl_reaches_a_firewalled_agents_pods_only_through_its_tunnel() {
    if !require_e2e("kubectl_reaches_a_firewalled_agents_pods_only_through_its_tunnel") {
        return;
    }
    privilege::require_tools(
        "e2e_agent_netns",
        &[("script", "bsdutils"), ("kubectl", "kubectl")],
    );
    let mut c = Cluster::start();

    // The firewall: a listener in the agent's namespace is reachable from
    // the server's before the rule and not after it.
    let agent_ip = c.agent_node.ip().to_string();
    let probe = |c: &Cluster, port: &str| {
        let o = c.server_node.exec_within(
            &[BUSYBOX, "nc", "-w", "2", &agent_ip, port],
            Duration::from_secs(10),
        );
        o.map(|o| o.status.success()).unwrap_or(false)
    };
    let mut listener = c
        .agent_node
        .spawn(&[BUSYBOX, "nc", "-ll", "-p", "7777", "-e", "true"])
        .unwrap();
    c.wait_for("the probe listener", 10, || probe(&c, "7777").then_some(()));
    c.firewall_agent();
    assert!(
        !probe(&c, "7777"),
        "the agent's namespace still accepts connections"
    );
    assert!(
        !probe(&c, "10250"),
        "the agent's namespace accepts kubelet connections"
    );
    kill_child(&mut listener);

    c.start_agent();
    c.wait_for("node agent Ready", 90, || {
        let o = c.kubectl(&[
            "get",
            "node",
            "agent",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        (text(&o.stdout) == "True").then_some(())
    });
    c.apply(WEB_POD);
    c.apply(ONCE_POD);
    c.track_pod("web");
    c.track_pod("once");
    c.wait_for("web Running", 90, || {
        (c.pod_field("web", "{.status.phase}") == "Running").then_some(())
    });

    // logs, and logs -f with a line that arrives while following.
    let seen = c.wait_for("web's first lines", 30, || {
        let o = c.kubectl(&["logs", "web"]);
        last_line_number(&text(&o.stdout))
    });
    let (follow, rx) = c.kubectl_lines(&["logs", "-f", "web"]);
    let newer = wait_line(&rx, 20, |l| {
        last_line_number(l).is_some_and(|n| n > seen + 1)
    });
    kill(follow);
    assert!(newer.is_some(), "logs -f got no new line after line {seen}");

    // exec: output, stdin, exit code, a terminal.
    // `hostname`, not `cat /etc/hostname`: the kubelet does not write that
    // file yet (see the report of this test's commit).
    let hostname = c.kubectl_ok(&["exec", "web", "--", "hostname"]);
    assert_eq!(hostname.trim(), "web");
    let o = c.kubectl_stdin(&["exec", "-i", "web", "--", "cat"], b"first\nsecond\n");
    assert_eq!(text(&o.stdout), "first\nsecond\n", "{}", text(&o.stderr));
    let o = c.kubectl(&["exec", "web", "--", "sh", "-c", "echo oops >&2; exit 3"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("oops"));
    let o = privilege::output_within(
        c.in_server("script").args([
            "-qec",
            "kubectl exec -it web -- sh -c 'tty; echo ok'",
            "/dev/null",
        ]),
        Duration::from_secs(60),
    )
    .unwrap();
    let tty = text(&o.stdout);
    assert!(
        tty.contains("/dev/pts/") && tty.contains("ok"),
        "exec -it: {tty}"
    );

    // attach: the running container's output.
    let (attach, rx) = c.kubectl_lines(&["attach", "web"]);
    let line = wait_line(&rx, 20, |l| l.starts_with("line "));
    kill(attach);
    assert!(line.is_some(), "kubectl attach showed no output");

    // logs --previous after a restart.
    c.wait_for("once restarted", 90, || {
        let restarts: u32 = c
            .pod_field("once", "{.status.containerStatuses[0].restartCount}")
            .parse()
            .unwrap_or(0);
        let running = !c
            .pod_field("once", "{.status.containerStatuses[0].state.running}")
            .is_empty();
        (restarts >= 1 && running).then_some(())
    });
    assert_eq!(c.kubectl_ok(&["logs", "--previous", "once"]), "first run\n");
    c.wait_for("once's second run log", 20, || {
        (text(&c.kubectl(&["logs", "once"]).stdout) == "second run\n").then_some(())
    });

    port_forward(&c);

    // The Kubernetes Python client's websocket exec.
    let script = format!(
        "from kubernetes import config, client\nfrom kubernetes.stream import stream\n\
         config.load_kube_config(config_file='{}')\n\
         out = stream(client.CoreV1Api().connect_get_namespaced_pod_exec, 'web', 'default',\n\
         command=['sh', '-c', 'echo from-python; hostname'], stderr=True, stdin=False, stdout=True, tty=False)\n\
         print(out, end='')\n",
        c.kubeconfig.display()
    );
    let o = privilege::output_within(
        c.in_server("/usr/bin/python3").args(["-c", &script]),
        Duration::from_secs(60),
    )
    .unwrap();
    assert_eq!(text(&o.stdout), "from-python\nweb\n", "{}", text(&o.stderr));

    forbidden_exec(&c);

    // Restart the server: the agent reconnects by itself, its pod lives on.
    let status =
        "{.status.containerStatuses[0].containerID} {.status.containerStatuses[0].restartCount}";
    let before = c.pod_field("web", status);
    let tasks_before = running_tasks(&c.agent_ctrd);
    let restarted = Instant::now();
    c.restart_server();
    let seen = c.wait_for("kubectl logs after the server restart", 30, || {
        let o = c.kubectl(&["logs", "--tail=3", "web"]);
        o.status
            .success()
            .then(|| last_line_number(&text(&o.stdout)))
            .flatten()
    });
    eprintln!(
        "kubectl logs worked again {:.1} s after the server restart began",
        restarted.elapsed().as_secs_f64()
    );
    let o = c.kubectl_ok(&["exec", "web", "--", "hostname"]);
    assert_eq!(o.trim(), "web");
    assert_eq!(
        c.pod_field("web", status),
        before,
        "the pod's container changed"
    );
    assert_eq!(
        running_tasks(&c.agent_ctrd),
        tasks_before,
        "the agent's containers changed"
    );
    c.wait_for("web still logging", 20, || {
        let o = c.kubectl(&["logs", "--tail=2", "web"]);
        last_line_number(&text(&o.stdout))
            .filter(|n| *n > seen)
            .map(|_| ())
    });
    // The server's built-in agent restarted too: the agent's pod network
    // (a host-wide /var/run/netns file) must have survived it.
    let uid = c.pod_field("web", "{.metadata.uid}");
    assert!(
        Path::new(&format!("/var/run/netns/rk3s-{uid}")).exists(),
        "the agent pod's network namespace file vanished with the server restart"
    );
    port_forward(&c);
}

fn kill_child(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// `kubectl port-forward` beside the server: one request, then two parallel
/// large transfers, checked byte for byte against the pod's own checksum.
fn port_forward(c: &Cluster) {
    let want = c.kubectl_ok(&["exec", "web", "--", "sha256sum", "/srv/big"]);
    let want = want.split_whitespace().next().unwrap().to_string();
    let port = 20000 + (std::process::id() % 20000) as u16;
    let (mut pf, rx) = c.kubectl_lines(&["port-forward", "pod/web", &format!("{port}:80")]);
    let ready = wait_line(&rx, 30, |l| l.contains("Forwarding from"));
    if ready.is_none() {
        kill_child(&mut pf);
        panic!("kubectl port-forward never started forwarding");
    }
    let ns = c.server_node.netns().to_string();
    let result = in_netns(&ns, move || -> Result<(), String> {
        let page = http_get(port, "/index.html").map_err(|e| e.to_string())?;
        if page != b"hello from the agent\n" {
            return Err(format!("index.html: {:?}", text(&page)));
        }
        let parallel: Vec<_> = (0..2)
            .map(|_| std::thread::spawn(move || http_get(port, "/big")))
            .collect();
        for t in parallel {
            let body = t.join().unwrap().map_err(|e| e.to_string())?;
            if body.len() != BIG_BYTES || sha256_hex(&body) != want {
                return Err(format!(
                    "a parallel transfer got {} bytes, checksum differs",
                    body.len()
                ));
            }
        }
        Ok(())
    });
    kill_child(&mut pf);
    result.unwrap_or_else(|e| panic!("port-forward: {e}"));
}

/// A ServiceAccount bound to `view` reads logs but gets 403 on `pods/exec`.
fn forbidden_exec(c: &Cluster) {
    c.kubectl_ok(&["create", "serviceaccount", "viewer"]);
    c.kubectl_ok(&[
        "create",
        "rolebinding",
        "viewer",
        "--clusterrole=view",
        "--serviceaccount=default:viewer",
    ]);
    let token = c.kubectl_ok(&["create", "token", "viewer"]);
    let server = format!("https://{}:6443", c.server_node.ip());
    let ca = c.dir.path().join("server-data/server/tls/server-ca.crt");
    let as_viewer = |args: &[&str]| {
        let mut all = vec![
            "--kubeconfig=/dev/null",
            "--server",
            &server,
            "--certificate-authority",
            ca.to_str().unwrap(),
            "--token",
            token.trim(),
        ];
        all.extend_from_slice(args);
        c.kubectl(&all)
    };
    let o = as_viewer(&["logs", "--tail=1", "web"]);
    assert!(
        o.status.success(),
        "a viewer reads logs: {}",
        text(&o.stderr)
    );
    let o = as_viewer(&["exec", "web", "--", "true"]);
    let err = text(&o.stderr);
    assert!(
        !o.status.success() && err.contains("forbidden") && err.contains("pods/exec"),
        "exec as a viewer: {err}"
    );
    let o = as_viewer(&["auth", "can-i", "create", "pods/exec"]);
    assert_eq!(
        (o.status.code(), text(&o.stdout).trim().to_string()),
        (Some(1), "no".into())
    );
}

/// `ctr tasks ls` of the agent's containerd: (container id, status), sorted.
fn running_tasks(ctrd: &Containerd) -> Vec<String> {
    let out = text(&ctrd.ctr(&["tasks", "ls"]).stdout);
    let mut tasks: Vec<String> = out
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<_> = l.split_whitespace().collect();
            format!("{} {}", f.first().unwrap_or(&""), f.get(2).unwrap_or(&""))
        })
        .collect();
    tasks.sort();
    tasks
}
