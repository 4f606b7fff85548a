//! Figures for the kubelet, printed, never asserted: `kubectl create` of a
//! one-container pod to Running (image present) beside `ctr run -d` of the
//! same image on the same containerd, as a ratio; and the kubelet's memory
//! with 0 and with 30 pods.
//!
//! `cargo bench --bench kubelet` as root (skips otherwise). The API server
//! and the kubelet run in this process (as in `tests/e2e_kubelet.rs`), so
//! "agent RSS" is this process's RSS delta: after the kubelet started minus
//! before, then with 30 pods. The 30-pod delta also includes what the
//! in-process API server holds for 30 more pods. Env: `RK3S_BENCH_RUNS`
//! (default 10).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::apiserver::TestServer;
use common::containerd::Containerd;
use common::image::DEFAULT_REFERENCE;
use common::nodekit::import_busybox;
use common::kubeletopts::in_process_kubelet;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use rk3s::agent::kubelet;
use rk3s::agent::runtime::cri_log;
use tokio_util::sync::CancellationToken;

const NODE: &str = "bench-node";
const POD_CIDR: &str = "10.42.214.0/24";
const BRIDGE: &str = "rk3sb0";

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn pod_yaml(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  nodeName: {NODE}\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: c\n    image: {DEFAULT_REFERENCE}\n    imagePullPolicy: IfNotPresent\n    command: [\"sleep\", \"3600\"]\n"
    )
}

async fn wait_running(api: &Api<Pod>, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(p) = api.get(name).await {
            if p.status.and_then(|s| s.phase).as_deref() == Some("Running") {
                return;
            }
        }
        assert!(Instant::now() < deadline, "pod {name} did not run");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // containerd's shim runs this binary as the CRI logger.
    if cri_log::is_log_shim_invocation(&args) {
        if let Err(e) = cri_log::run_log_shim(&args[1..]) {
            eprintln!("log shim: {e}");
            std::process::exit(1);
        }
        return;
    }
    // `cargo test --all-targets` runs benches without `--bench`: figures only
    // mean something from `cargo bench --bench kubelet`.
    if !args.iter().any(|a| a == "--bench") {
        println!("kubelet bench: skipped outside `cargo bench --bench kubelet`");
        return;
    }
    if !common::privilege::is_root() {
        println!("bench kubelet: skipped (needs root for containerd and pod networks)");
        return;
    }
    let runs: usize = std::env::var("RK3S_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(bench(runs));
}

async fn bench(runs: usize) {
    let server = TestServer::start();
    let containerd = Containerd::start().expect("start containerd");
    import_busybox(&containerd);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut opts = in_process_kubelet(&server, &containerd, dir.path(), NODE);
    opts.log_root = dir.path().join("logs");
    opts.bridge = BRIDGE.into();
    let kubectl = server.kubectl();
    let admin = server.kube_client().await;
    let pods: Api<Pod> = Api::namespaced(admin, "default");

    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = rss_kib();
    let token = CancellationToken::new();
    let task = tokio::spawn(kubelet::run(opts, token.clone()));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !kubectl.run(&["get", "node", NODE]).status.success() {
        assert!(Instant::now() < deadline, "the node did not register");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    kubectl.run_ok(&[
        "patch",
        "node",
        NODE,
        "--type",
        "merge",
        "-p",
        &format!("{{\"spec\":{{\"podCIDR\":\"{POD_CIDR}\"}}}}"),
    ]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_idle = rss_kib();

    let mut ours = Vec::new();
    let mut ctr = Vec::new();
    for i in 0..runs {
        let name = format!("bench-{i}");
        let t0 = Instant::now();
        let out = kubectl.run_with_stdin(&["create", "-f", "-"], &pod_yaml(&name));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        wait_running(&pods, &name).await;
        ours.push(t0.elapsed());
        kubectl.run_ok(&["delete", "pod", &name, "--wait=false"]);

        let cid = common::containerd::unique_id("bench");
        let t0 = Instant::now();
        containerd
            .ctr_run_sleeping(DEFAULT_REFERENCE, &cid)
            .expect("ctr run -d");
        ctr.push(t0.elapsed());
        let _ = containerd.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", &cid]);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = containerd.ctr_ok(&["tasks", "delete", "-f", &cid]);
        let _ = containerd.ctr_ok(&["containers", "delete", &cid]);
    }
    let (m_ours, m_ctr) = (median(&mut ours), median(&mut ctr));
    println!(
        "bench kubelet create→Running over {runs} runs: kubectl create + kubelet median {m_ours:?} (min {:?}); `ctr run -d` median {m_ctr:?} (min {:?}); ratio {:.2}",
        ours[0],
        ctr[0],
        m_ours.as_secs_f64() / m_ctr.as_secs_f64()
    );

    for i in 0..30 {
        let out = kubectl.run_with_stdin(&["create", "-f", "-"], &pod_yaml(&format!("many-{i}")));
        assert!(out.status.success());
    }
    for i in 0..30 {
        wait_running(&pods, &format!("many-{i}")).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_30 = rss_kib();
    println!(
        "bench kubelet RSS (this process: in-process API server + kubelet): before kubelet {rss_before} KiB; kubelet with 0 pods +{} KiB; with 30 pods +{} KiB (includes the API server's share of 30 pods)",
        rss_idle.saturating_sub(rss_before),
        rss_30.saturating_sub(rss_before)
    );

    let _ = kubectl.run(&["delete", "pods", "--all", "--wait=false"]);
    let deadline = Instant::now() + Duration::from_secs(90);
    while !kubectl
        .run_ok(&["get", "pods", "-o", "name"])
        .trim()
        .is_empty()
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    token.cancel();
    let _ = task.await;
    let _ = std::process::Command::new("ip")
        .args(["link", "del", BRIDGE])
        .status();
    let _ = std::process::Command::new("nft")
        .args(["delete", "table", "ip", "rk3s"])
        .status();
}
