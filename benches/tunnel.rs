//! Figures for the node tunnel: the throughput of a large transfer through
//! `kubectl port-forward` (API server → tunnel → agent → pod) beside the
//! same transfer straight to the pod's port (a socket made in the pod's
//! network namespace, no tunnel), as a ratio; and the latency of
//! `kubectl exec POD -- true` against a real containerd.
//!
//! `sudo cargo bench --bench tunnel` (root: network namespaces and
//! containerd). Env: `RK3S_BENCH_MB` (default 256), `RK3S_BENCH_EXECS`
//! (default 20).

#[path = "../tests/common/mod.rs"]
#[allow(dead_code)]
mod common;

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::apiserver::TestServer;
use common::kubelet_tunnel::{running_web_pod, NetnsHttpd};
use rk3s::agent::kubelet_api::exec::ContainerdExec;
use rk3s::agent::kubelet_api::portforward::{NetnsPortForward, PortForwardBackend};
use rk3s::agent::kubelet_api::{self, KubeletApi};
use rk3s::agent::runtime::{ContainerRuntime, ContainerSpec, ContainerdRuntime};
use rk3s::pki::AgentCert;
use rk3s::tunnel::{self, ClientOptions};
use tokio_util::sync::CancellationToken;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn fetch(mut s: impl Read + Write, path: &str) -> usize {
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0;
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return total,
            Ok(n) => total += n,
        }
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("tunnel bench: skipped outside `cargo bench --bench tunnel`");
        return;
    }
    if unsafe { libc::geteuid() } != 0 {
        println!("tunnel bench: skipped (needs root for network namespaces and containerd)");
        return;
    }
    let mb = env_num("RK3S_BENCH_MB", 256) as usize;
    let server = TestServer::start();
    let kubectl = server.kubectl();
    let uid = running_web_pod(&kubectl);

    // The "pod": busybox httpd on 127.0.0.1:8080 in netns rk3s-<uid>.
    let _httpd = NetnsHttpd::start(&format!("rk3s-{uid}"), &[("big", &vec![7u8; mb << 20])]);

    let containerd = common::containerd::Containerd::start().expect("containerd");
    common::nodekit::import_busybox(&containerd);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let runtime = Arc::new(
        rt.block_on(ContainerdRuntime::connect(containerd.socket(), &containerd.scratch().join("stdio")))
            .unwrap(),
    );
    let mut spec = ContainerSpec::new(
        &uid,
        "web",
        "default",
        "app",
        common::image::DEFAULT_REFERENCE,
    );
    spec.command = vec!["sleep".into(), "3600".into()];
    let id = rt.block_on(runtime.create_container(&spec)).unwrap();
    rt.block_on(runtime.start(&id)).unwrap();

    let tls = common::apiserver::signed_client_tls(
        &server.pki(),
        AgentCert::KubeletClient {
            node_name: "node1".into(),
        },
    );
    let forward = Arc::new(NetnsPortForward {
        netns_dir: "/var/run/netns".into(),
    });
    let api = KubeletApi {
        liveness: None,
        log_root: std::env::temp_dir(),
        exec: Some(Arc::new(ContainerdExec {
            runtime: runtime.clone(),
            fifo_root: containerd.scratch().join("exec"),
        })),
        port_forward: Some(forward.clone()),
    };
    let shutdown = CancellationToken::new();
    rt.spawn(tunnel::run_client(
        ClientOptions {
            server: server.url().parse().unwrap(),
            tls,
            handler: kubelet_api::tunnel_handler(kubelet_api::router_with(api)),
            session: Default::default(),
        },
        shutdown.clone(),
    ));

    // Straight to the pod.
    std::thread::sleep(Duration::from_millis(300));
    let direct = {
        let tcp = rt
            .block_on(forward.connect("default", "web", &uid, 8080))
            .unwrap()
            .into_std()
            .unwrap();
        tcp.set_nonblocking(false).unwrap();
        let t = Instant::now();
        let n = fetch(tcp, "/big");
        n as f64 / t.elapsed().as_secs_f64() / 1e6
    };

    // Through kubectl port-forward.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut pf = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(server.kubeconfig())
        .args(["port-forward", "pod/web", &format!("{port}:8080")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let forwarded = loop {
        if let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let t = Instant::now();
            let n = fetch(s, "/big");
            if n > mb << 20 {
                break n as f64 / t.elapsed().as_secs_f64() / 1e6;
            }
        }
        assert!(Instant::now() < deadline, "port-forward never worked");
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = pf.kill();

    // kubectl exec latency (after one warm-up).
    let runs = env_num("RK3S_BENCH_EXECS", 20) as usize;
    let mut times = Vec::new();
    for i in 0..=runs {
        let t = Instant::now();
        let o = kubectl.run(&["exec", "web", "--", "true"]);
        assert!(
            o.status.success(),
            "exec failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        if i > 0 {
            times.push(t.elapsed());
        }
    }
    times.sort();
    println!("tunnel bench ({mb} MiB transfer, {runs} execs)");
    println!("  direct to the pod port:        {direct:8.1} MB/s");
    println!(
        "  through kubectl port-forward:  {forwarded:8.1} MB/s  (ratio {:.2})",
        forwarded / direct
    );
    println!(
        "  kubectl exec POD -- true:      p50 {:?}  p90 {:?}  (includes kubectl's own start-up)",
        times[times.len() / 2],
        times[times.len() * 9 / 10]
    );
    shutdown.cancel();
    let _ = rt.block_on(runtime.remove(&id));
}
