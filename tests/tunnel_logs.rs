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
use rk3s::agent::kubelet_api::{self, KubeletApiOptions};
use rk3s::pki::{AgentCert, Pki, PkiOptions};
use rk3s::tunnel::{self, ClientOptions};
use tokio_util::sync::CancellationToken;

/// A tunnel client for `node` running on its own runtime until dropped.
struct Agent {
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn client_tls(server: &TestServer, cert: AgentCert) -> Arc<rustls::ClientConfig> {
    let pki = Pki::load_or_create(
        &server.data_dir().join("server/tls"),
        &PkiOptions::new("test-server"),
    )
    .unwrap();
    let key = rk3s::pki::generate_key_and_csr("agent").unwrap();
    let chain = pki.sign_agent_csr(&cert, key.csr_pem.as_bytes()).unwrap();
    Arc::new(
        rk3s::pki::client_tls_config(
            pki.ca_bundle_pem(),
            Some((chain.as_bytes(), key.key_pem.as_bytes())),
        )
        .unwrap(),
    )
}

fn start_agent(server: &TestServer, node: &str, log_root: &Path) -> Agent {
    let tls = client_tls(
        server,
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
            tls: client_tls(&server, cert),
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
