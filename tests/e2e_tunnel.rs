//! `kubectl exec` end to end through the node tunnel, against a real
//! containerd: the API server proxies the v5 websocket to the agent's
//! kubelet API, which runs the command with containerd's Tasks.Exec.
//!
//! Root-only: skips without root unless `RK3S_E2E=1`.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::apiserver::TestServer;
use common::containerd::Containerd;
use common::image::{BusyboxImage, DEFAULT_REFERENCE};
use common::privilege::require_e2e;
use rk3s::agent::kubelet_api::exec::ContainerdExec;
use rk3s::agent::kubelet_api::{self, KubeletApi};
use rk3s::agent::runtime::{ContainerRuntime, ContainerSpec, ContainerdRuntime};
use rk3s::pki::{AgentCert, Pki, PkiOptions};
use rk3s::tunnel::{self, ClientOptions};
use tokio_util::sync::CancellationToken;

fn node_tls(server: &TestServer, node: &str) -> Arc<rustls::ClientConfig> {
    let pki = Pki::load_or_create(&server.data_dir().join("server/tls"), &PkiOptions::new("test-server")).unwrap();
    let key = rk3s::pki::generate_key_and_csr("agent").unwrap();
    let cert = AgentCert::KubeletClient { node_name: node.into() };
    let chain = pki.sign_agent_csr(&cert, key.csr_pem.as_bytes()).unwrap();
    Arc::new(rk3s::pki::client_tls_config(pki.ca_bundle_pem(), Some((chain.as_bytes(), key.key_pem.as_bytes()))).unwrap())
}

#[test]
fn kubectl_exec_runs_in_the_container_through_the_tunnel() {
    if !require_e2e("kubectl_exec_runs_in_the_container_through_the_tunnel") {
        return;
    }
    let _ = tracing_subscriber::fmt().with_env_filter("rk3s=debug").with_test_writer().try_init();
    let containerd = Containerd::start().expect("start containerd");
    let tar = BusyboxImage::new(DEFAULT_REFERENCE).write(containerd.scratch()).expect("build image");
    containerd.import(&tar).expect("import image");
    let server = TestServer::start();
    let kubectl = server.kubectl();
    kubectl.run_with_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  nodeName: node1\n  containers:\n  - name: app\n    image: busybox\n",
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let runtime = Arc::new(rt.block_on(ContainerdRuntime::connect(containerd.socket())).expect("connect"));
    let mut spec = ContainerSpec::new("uid-1", "web", "default", "app", DEFAULT_REFERENCE);
    spec.command = vec!["sleep".into(), "3600".into()];
    let id = rt.block_on(runtime.create_container(&spec)).expect("create");
    rt.block_on(runtime.start(&id)).expect("start");

    let api = KubeletApi {
        log_root: containerd.scratch().join("pods"),
        exec: Some(Arc::new(ContainerdExec { runtime: runtime.clone(), fifo_root: containerd.scratch().join("exec") })),
    };
    let shutdown = CancellationToken::new();
    rt.spawn(tunnel::run_client(
        ClientOptions {
            server: server.url().parse().unwrap(),
            tls: node_tls(&server, "node1"),
            handler: kubelet_api::tunnel_handler(kubelet_api::router_with(api)),
            session: Default::default(),
        },
        shutdown.clone(),
    ));

    let deadline = Instant::now() + Duration::from_secs(20);
    let hello = loop {
        let o = kubectl.run(&["exec", "web", "--", "echo", "hello"]);
        if o.status.success() {
            break String::from_utf8_lossy(&o.stdout).into_owned();
        }
        assert!(Instant::now() < deadline, "exec never worked: {}", String::from_utf8_lossy(&o.stderr));
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(hello, "hello\n");

    let o = kubectl.run_with_stdin(&["exec", "-i", "web", "--", "cat"], "input-line\nsecond\n");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "input-line\nsecond\n", "{o:?}");

    let o = kubectl.run(&["exec", "web", "--", "sh", "-c", "echo oops >&2; exit 3"]);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("oops"), "{o:?}");

    // -it under a pty (`script` gives kubectl a terminal).
    let kubeconfig = server.kubeconfig().display().to_string();
    let out = std::process::Command::new("script")
        .args(["-qec", &format!("kubectl --kubeconfig {kubeconfig} exec -it web -- tty"), "/dev/null"])
        .output()
        .expect("run script");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/dev/pts/"), "{text}");

    // A container that is not running: a clear error, not a hang.
    let o = kubectl.run(&["exec", "web", "-c", "missing", "--", "true"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("missing"), "{o:?}");

    shutdown.cancel();
    for c in rt.block_on(runtime.list(&BTreeMap::new())).unwrap() {
        let _ = rt.block_on(runtime.remove(&c.id));
    }
}
