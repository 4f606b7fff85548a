//! A kubelet API served through a real tunnel client, as an agent serves
//! it, for tests that drive the API server's streaming and proxy paths
//! without a whole agent, and a pod to exec in ([`WebPod`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rk3s::agent::kubelet_api::exec::ContainerdExec;
use rk3s::agent::kubelet_api::{self, KubeletApi};
use rk3s::agent::runtime::{ContainerId, ContainerRuntime, ContainerSpec, ContainerdRuntime};
use rk3s::pki::AgentCert;
use rk3s::tunnel::{self, ClientOptions};
use tokio_util::sync::CancellationToken;

use super::apiserver::TestServer;
use super::containerd::Containerd;
use super::image::DEFAULT_REFERENCE;
use super::kubectl::Kubectl;

/// Connects `api` to `server` as node `node`'s tunnel, on `rt`, until
/// `shutdown` is cancelled.
pub fn spawn(
    rt: &tokio::runtime::Runtime,
    server: &TestServer,
    node: &str,
    api: KubeletApi,
    shutdown: &CancellationToken,
) {
    rt.spawn(tunnel::run_client(
        ClientOptions {
            server: server.url().parse().unwrap(),
            tls: super::apiserver::signed_client_tls(
                &server.pki(),
                AgentCert::KubeletClient {
                    node_name: node.into(),
                },
            ),
            handler: kubelet_api::tunnel_handler(kubelet_api::router_with(api)),
            session: Default::default(),
        },
        shutdown.clone(),
    ));
}

/// A kubelet API that only connects to pods, inside the network namespaces
/// under `/var/run/netns` (`rk3s-<uid>`), for port-forward and the proxies.
pub fn pod_dialer() -> KubeletApi {
    KubeletApi {
        liveness: None,
        log_root: std::env::temp_dir(),
        exec: None,
        port_forward: Some(Arc::new(
            kubelet_api::portforward::NetnsPortForward {
                netns_dir: "/var/run/netns".into(),
            },
        )),
    }
}

/// The pod `web` of node `node1`: one container `app`, busybox.
pub const WEB_POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  nodeName: node1\n  containers:\n  - name: app\n    image: busybox\n";

/// Applies [`WEB_POD`] and marks it Running (no kubelet runs it); its uid.
pub fn running_web_pod(kubectl: &Kubectl) -> String {
    kubectl.run_with_stdin(&["apply", "-f", "-"], WEB_POD);
    kubectl.mark_running("web");
    kubectl.run_ok(&["get", "pod", "web", "-o", "jsonpath={.metadata.uid}"])
}

/// The pod `web` of node `node1` as its kubelet would run it: the object
/// applied through kubectl, its container `app` (busybox `sleep 3600`)
/// running in a private containerd, and a kubelet API that execs in it.
/// The caller stops and removes the container (`id`) when done.
pub struct WebPod {
    pub runtime: Arc<ContainerdRuntime>,
    pub id: ContainerId,
    pub api: KubeletApi,
}

impl WebPod {
    pub fn start(rt: &tokio::runtime::Runtime, containerd: &Containerd, kubectl: &Kubectl) -> Self {
        kubectl.run_with_stdin(&["apply", "-f", "-"], WEB_POD);
        let runtime = Arc::new(
            rt.block_on(ContainerdRuntime::connect(containerd.socket(), &containerd.scratch().join("stdio")))
                .expect("connect")
                // The logger containerd spawns for a task's output.
                .with_log_binary(std::path::Path::new(env!("CARGO_BIN_EXE_rk3s"))),
        );
        let mut spec = ContainerSpec::new("uid-1", "web", "default", "app", DEFAULT_REFERENCE);
        spec.command = vec!["sleep".into(), "3600".into()];
        let id = rt
            .block_on(runtime.create_container(&spec))
            .expect("create");
        rt.block_on(runtime.start(&id)).expect("start");
        let api = KubeletApi {
            liveness: None,
            log_root: containerd.scratch().join("pods"),
            exec: Some(Arc::new(ContainerdExec {
                runtime: runtime.clone(),
                fifo_root: containerd.scratch().join("exec"),
            })),
            port_forward: None,
        };
        WebPod { runtime, id, api }
    }
}

/// `kubectl exec web -- echo <what>` until it works (the tunnel may still
/// be connecting), within 30 s; its output.
pub fn exec_until_it_works(kubectl: &Kubectl, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = kubectl.run(&["exec", "web", "--", "echo", what]);
        if o.status.success() {
            return String::from_utf8_lossy(&o.stdout).into_owned();
        }
        assert!(
            Instant::now() < deadline,
            "exec never worked: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A stand-in for a pod's network, where [`pod_dialer`] dials: the
/// namespace `name` (`rk3s-<uid>`) with `lo` up and busybox httpd on
/// 127.0.0.1:8080 serving `files` (path, content). Dropping it stops httpd
/// and deletes the namespace.
pub struct NetnsHttpd {
    name: String,
    child: std::process::Child,
    _root: tempfile::TempDir,
}

impl NetnsHttpd {
    pub fn start(name: &str, files: &[(&str, &[u8])]) -> Self {
        let ip = |args: &[&str]| {
            let s = std::process::Command::new("ip")
                .args(args)
                .status()
                .expect("run ip");
            assert!(s.success(), "ip {args:?}");
        };
        ip(&["netns", "add", name]);
        ip(&["-n", name, "link", "set", "lo", "up"]);
        let root = tempfile::tempdir().unwrap();
        for (path, content) in files {
            std::fs::write(root.path().join(path), content).unwrap();
        }
        let child = std::process::Command::new(super::privilege::tool("nsenter"))
            .arg(format!("--net=/var/run/netns/{name}"))
            .args([super::privilege::BUSYBOX, "httpd", "-f", "-p", "127.0.0.1:8080", "-h"])
            .arg(root.path())
            .spawn()
            .expect("start httpd");
        NetnsHttpd {
            name: name.to_string(),
            child,
            _root: root,
        }
    }
}

impl Drop for NetnsHttpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
