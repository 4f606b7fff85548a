//! The node tunnel end to end: an agent-side tunnel client (with a node
//! certificate signed by the test server's PKI) serves the kubelet API's
//! logs, and the real kubectl reads them through the API server, which
//! never connects to the agent.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::apiserver::TestServer;
use common::kubelet_tunnel::running_web_pod;
use rk3s::agent::kubelet_api::{self, KubeletApiOptions};
use rk3s::pki::{AgentCert, Pki, PkiOptions};
use rk3s::tunnel::{self, ClientOptions};
use tokio_util::sync::CancellationToken;

/// A tunnel client for `node` running on its own runtime until dropped.
struct Agent {
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Agent {
    /// Runs the tunnel client `opts` on a runtime of its own.
    fn spawn(opts: ClientOptions) -> Agent {
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let thread = std::thread::spawn(move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap()
                .block_on(tunnel::run_client(opts, token));
        });
        Agent {
            shutdown,
            thread: Some(thread),
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start_agent(server: &TestServer, node: &str, log_root: &Path) -> Agent {
    let tls = common::apiserver::signed_client_tls(
        &server.pki(),
        AgentCert::KubeletClient {
            node_name: node.into(),
        },
    );
    let router = kubelet_api::router(KubeletApiOptions {
        log_root: log_root.to_path_buf(),
    });
    let opts = ClientOptions {
        server: server.url().parse().unwrap(),
        tls,
        handler: kubelet_api::tunnel_handler(router),
        session: Default::default(),
    };
    Agent::spawn(opts)
}

fn cri(line: &str) -> String {
    format!(
        "{} stdout F {line}\n",
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
    )
}

fn pod_yaml(name: &str, node: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: {node}\n  containers:\n  - name: app\n    image: busybox\n"
    )
}

fn log_file(root: &Path, pod: &str, uid: &str, restart: u32) -> PathBuf {
    let dir = root.join(format!("default_{pod}_{uid}/app"));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{restart}.log"))
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn kubectl_logs_reach_the_agent_through_its_tunnel() {
    let server = TestServer::start();
    let kubectl = server.kubectl();
    let logs = tempfile::tempdir().unwrap();
    kubectl.run_with_stdin(&["apply", "-f", "-"], &pod_yaml("web", "node1"));
    let uid = kubectl.run_ok(&["get", "pod", "web", "-o", "jsonpath={.metadata.uid}"]);
    std::fs::write(log_file(logs.path(), "web", &uid, 0), cri("first run")).unwrap();
    let current = log_file(logs.path(), "web", &uid, 1);
    std::fs::write(
        &current,
        format!("{}{}{}", cri("one"), cri("two"), cri("three")),
    )
    .unwrap();

    // Before the agent connects: a clear 503 naming the node, not a hang.
    let out = kubectl.run(&["logs", "web"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("node1") && err.contains("no live tunnel"),
        "{err}"
    );

    let _agent = start_agent(&server, "node1", logs.path());
    let text = wait_for("logs through the tunnel", || {
        let o = kubectl.run(&["logs", "web"]);
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
    });
    assert_eq!(text, "one\ntwo\nthree\n");
    assert_eq!(kubectl.run_ok(&["logs", "web", "--tail=1"]), "three\n");
    assert_eq!(
        kubectl.run_ok(&["logs", "web", "--previous"]),
        "first run\n"
    );
    let stamped = kubectl.run_ok(&["logs", "web", "--timestamps", "--tail=1"]);
    assert!(
        stamped.ends_with(" three\n") && stamped.starts_with("20"),
        "{stamped}"
    );

    // -f: new lines arrive while it runs.
    let mut follow = kubectl.spawn(&["logs", "-f", "web"]);
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    for want in ["one", "two", "three"] {
        assert_eq!(lines.next().unwrap().unwrap(), want);
    }
    std::fs::OpenOptions::new()
        .append(true)
        .open(&current)
        .unwrap()
        .write_all(cri("four").as_bytes())
        .unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "four");
    let _ = follow.kill();
    let _ = follow.wait();

    // attach: the output written from now on (kubectl wants a Running pod).
    kubectl.mark_running("web");
    let mut attach = kubectl.spawn(&["attach", "web"]);
    let mut attached = BufReader::new(attach.stdout.take().unwrap()).lines();
    // Attach shows only what is written after it connects: keep writing.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ticker = {
        let (done, current) = (done.clone(), current.clone());
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&current)
                    .unwrap();
                f.write_all(cri("tick").as_bytes()).unwrap();
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };
    assert_eq!(attached.next().unwrap().unwrap(), "tick");
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    ticker.join().unwrap();
    let _ = attach.kill();
    let _ = attach.wait();
    let out = kubectl.run(&["attach", "-i", "web"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not available on this node"),
        "{out:?}"
    );

    // A pod on a node without a tunnel, and an unscheduled pod.
    kubectl.run_with_stdin(&["apply", "-f", "-"], &pod_yaml("elsewhere", "node2"));
    let out = kubectl.run(&["logs", "elsewhere"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("node node2"),
        "{:?}",
        out
    );
    kubectl.run_with_stdin(&["apply", "-f", "-"], "apiVersion: v1\nkind: Pod\nmetadata:\n  name: pending\nspec:\n  containers:\n  - name: app\n    image: busybox\n");
    let out = kubectl.run(&["logs", "pending"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pod pending does not have a host assigned"),
        "{:?}",
        out
    );
}

#[test]
fn only_node_certificates_may_open_a_tunnel() {
    let server = TestServer::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let router = kubelet_api::router(KubeletApiOptions {
        log_root: std::env::temp_dir(),
    });
    let attempt = |cert: AgentCert| {
        let opts = ClientOptions {
            server: server.url().parse().unwrap(),
            tls: common::apiserver::signed_client_tls(&server.pki(), cert),
            handler: kubelet_api::tunnel_handler(router.clone()),
            session: Default::default(),
        };
        rt.block_on(tunnel::client::connect(&opts))
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let err = attempt(AgentCert::KubeProxy).unwrap_err();
    assert!(err.contains("403"), "{err}");
    assert!(attempt(AgentCert::KubeletClient {
        node_name: "node1".into()
    })
    .is_ok());
}

/// A real `rk3s server` process on a fixed port and data dir.
struct ServerProcess {
    child: std::process::Child,
}

impl ServerProcess {
    fn start(data: &Path, kubeconfig: &Path, port: u16) -> Self {
        let child = common::loopback::server_command(data, kubeconfig, port, &[])
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start rk3s server");
        ServerProcess { child }
    }

    fn stop(mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_agent_reconnects_after_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (data, kubeconfig) = (dir.path().join("data"), dir.path().join("rk3s.yaml"));
    let port = common::loopback::free_port();
    let server = ServerProcess::start(&data, &kubeconfig, port);
    wait_for("the kubeconfig", || kubeconfig.is_file().then_some(()));
    let kubectl = common::kubectl::Kubectl::new(&kubeconfig);
    wait_for("the API", || {
        kubectl.run(&["get", "ns"]).status.success().then_some(())
    });
    kubectl.run_with_stdin(&["apply", "-f", "-"], &pod_yaml("web", "node1"));
    let uid = kubectl.run_ok(&["get", "pod", "web", "-o", "jsonpath={.metadata.uid}"]);
    let logs = tempfile::tempdir().unwrap();
    std::fs::write(log_file(logs.path(), "web", &uid, 0), cri("still here")).unwrap();

    // The node's certificate, from the server's own PKI files.
    let pki = Pki::load_or_create(&data.join("server/tls"), &PkiOptions::new("t1")).unwrap();
    let tls = common::apiserver::signed_client_tls(
        &pki,
        AgentCert::KubeletClient {
            node_name: "node1".into(),
        },
    );
    let opts = ClientOptions {
        server: format!("https://127.0.0.1:{port}").parse().unwrap(),
        tls,
        handler: kubelet_api::tunnel_handler(kubelet_api::router(KubeletApiOptions {
            log_root: logs.path().to_path_buf(),
        })),
        session: tunnel::SessionOptions {
            ping_interval: Duration::from_secs(1),
            dead_after: Duration::from_secs(3),
        },
    };
    let agent = Agent::spawn(opts);
    let logs_ok = || {
        let o = kubectl.run(&["logs", "web"]);
        (o.status.success() && o.stdout == b"still here\n").then_some(())
    };
    wait_for("logs before the restart", logs_ok);

    server.stop();
    let restarted = Instant::now();
    let _server = ServerProcess::start(&data, &kubeconfig, port);
    wait_for("logs after the restart", logs_ok);
    eprintln!(
        "kubectl logs worked again {:?} after the server restarted",
        restarted.elapsed()
    );
    drop(agent);
}

#[test]
fn rbac_guards_the_streaming_subresources() {
    let server = TestServer::start();
    let kubectl = server.kubectl();
    let uid = running_web_pod(&kubectl);
    let logs = tempfile::tempdir().unwrap();
    std::fs::write(
        log_file(logs.path(), "web", &uid, 0),
        cri("visible to viewers"),
    )
    .unwrap();
    let _agent = start_agent(&server, "node1", logs.path());

    // A ServiceAccount bound to `view`: it may read logs (pods/log) but
    // not exec, attach or port-forward.
    kubectl.run_ok(&["create", "serviceaccount", "viewer"]);
    kubectl.run_ok(&[
        "create",
        "rolebinding",
        "viewer",
        "--clusterrole=view",
        "--serviceaccount=default:viewer",
    ]);
    let token = kubectl.run_ok(&["create", "token", "viewer"]);
    let pki = Pki::load_or_create(
        &server.data_dir().join("server/tls"),
        &PkiOptions::new("test-server"),
    )
    .unwrap();
    let path = server.data_dir().join("viewer.kubeconfig");
    rk3s::pki::Kubeconfig::new(server.url())
        .ca_data(pki.ca_bundle_pem())
        .token(token.trim())
        .write(&path, 0o600)
        .unwrap();
    let viewer = common::kubectl::Kubectl::new(&path);
    let text = wait_for("logs as a viewer", || {
        let o = viewer.run(&["logs", "web"]);
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
    });
    assert_eq!(text, "visible to viewers\n");
    for (args, sub) in [
        (vec!["exec", "web", "--", "true"], "pods/exec"),
        (vec!["attach", "web"], "pods/attach"),
    ] {
        let o = viewer.run(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains("forbidden") && err.contains(sub),
            "{args:?}: {err}"
        );
    }
    // `auth can-i` answers "no" with exit status 1.
    let o = viewer.run(&["auth", "can-i", "create", "pods/exec"]);
    assert_eq!(
        (o.status.code(), String::from_utf8_lossy(&o.stdout).trim()),
        (Some(1), "no")
    );
}
