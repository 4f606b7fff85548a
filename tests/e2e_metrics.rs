//! `kubectl top` end to end with a real containerd: a pod with one
//! container burning a core (`while :; do :; done`) and one holding 50 MiB
//! in its `/dev/shm` tmpfs; the agent's collector samples their cgroups,
//! serves `/stats/summary` on the tunnel, and the API server answers
//! `metrics.k8s.io` from it. The figures are compared with what the cgroup
//! files say, not with fixed numbers. Also the agent's `/metrics` through
//! `nodes/node1/proxy/metrics`.
//!
//! Root-only: skips without `RK3S_E2E=1`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::apiserver::TestServer;
use common::containerd::{unique_id, Containerd};
use common::image::{BusyboxImage, DEFAULT_REFERENCE};
use common::privilege::require_e2e;
use rk3s::agent::metrics::RuntimeLister;
use rk3s::agent::runtime::{ContainerRuntime, ContainerSpec, ContainerdRuntime};
use rk3s::metrics::cgroup::{self, CgroupLayout, RealHost};
use rk3s::metrics::collector::Collector;
use rk3s::pki::AgentCert;
use tokio_util::sync::CancellationToken;

/// kubectl's figures: `250m` → millicores, `51Mi` → MiB.
fn milli(cell: &str) -> f64 {
    cell.trim_end_matches('m').parse().unwrap_or_else(|_| panic!("cpu cell {cell}"))
}

fn mib(cell: &str) -> f64 {
    cell.trim_end_matches("Mi").parse().unwrap_or_else(|_| panic!("memory cell {cell}"))
}

/// Removes `/sys/fs/cgroup[/<controller>]/rk3s/pods/<uid>` (empty by then).
struct PodCgroups(String);

impl Drop for PodCgroups {
    fn drop(&mut self) {
        let mut dirs = vec![std::path::PathBuf::from(format!("/sys/fs/cgroup/rk3s/pods/{}", self.0))];
        for c in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
            dirs.push(c.path().join("rk3s/pods").join(&self.0));
        }
        for d in dirs {
            let _ = std::fs::remove_dir(d);
        }
    }
}

#[test]
fn kubectl_top_shows_what_the_cgroups_say() {
    if !require_e2e("kubectl_top_shows_what_the_cgroups_say") {
        return;
    }
    let uid = unique_id("metrics-uid");
    // Declared before containerd, so it runs after the harness removed the
    // containers: the pod-level cgroups runc leaves behind go too.
    let _cgroups = PodCgroups(uid.clone());
    let containerd = Containerd::start().expect("start containerd");
    let tar = BusyboxImage::new(DEFAULT_REFERENCE).write(containerd.scratch()).expect("build image");
    containerd.import(&tar).expect("import image");
    let server = TestServer::start();
    let kubectl = server.kubectl();
    kubectl.run_with_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: node1\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata:\n  name: busy\nspec:\n  nodeName: node1\n  containers:\n  - {name: burn, image: busybox}\n  - {name: hold, image: busybox}\n",
    );
    kubectl.run_ok(&[
        "patch", "node", "node1", "--subresource=status", "--type=merge", "-p",
        r#"{"status":{"allocatable":{"cpu":"2","memory":"4Gi"}}}"#,
    ]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let runtime = Arc::new(
        rt.block_on(ContainerdRuntime::connect(containerd.socket(), &containerd.scratch().join("stdio")))
            .expect("connect")
            .with_log_binary(std::path::Path::new(env!("CARGO_BIN_EXE_rk3s"))),
    );
    let mut cgroups = std::collections::BTreeMap::new();
    for (name, script) in [
        ("burn", "while :; do :; done"),
        ("hold", "dd if=/dev/zero of=/dev/shm/fill bs=1M count=50 2>/dev/null; sleep 3600"),
    ] {
        let mut spec = ContainerSpec::new(&uid, "busy", "default", name, DEFAULT_REFERENCE);
        spec.command = vec!["sh".into(), "-c".into(), script.into()];
        let id = rt.block_on(runtime.create_container(&spec)).expect("create");
        rt.block_on(runtime.start(&id)).expect("start");
        cgroups.insert(name, rk3s::agent::runtime::spec::cgroup_path(&uid, &id.0));
    }

    // The agent's side, as node_runner wires it, on node1's tunnel.
    let collector = Arc::new(Collector::new(
        "node1",
        Arc::new(RealHost::default()),
        Arc::new(RuntimeLister(runtime.clone())),
        Arc::new(rk3s::metrics::prom::Registry::new()),
    ));
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    rt.spawn(collector.clone().run(shutdown.clone()));
    rt.spawn(rk3s::tunnel::run_client(
        rk3s::tunnel::ClientOptions {
            server: server.url().parse().unwrap(),
            tls: common::apiserver::signed_client_tls(&server.pki(), AgentCert::KubeletClient { node_name: "node1".into() }),
            handler: rk3s::agent::kubelet_api::tunnel_handler(collector.routes()),
            session: Default::default(),
        },
        shutdown.clone(),
    ));

    // A rate needs two samples (one period apart); the hold container's
    // 50 MiB must be in place at the newer one.
    let host = RealHost::default();
    let layout = CgroupLayout::detect(&host);
    let deadline = Instant::now() + Duration::from_secs(90);
    let rows = loop {
        let o = kubectl.run(&["top", "pods", "busy", "--containers", "--no-headers"]);
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let rows: Vec<Vec<String>> = text.lines().map(|l| l.split_whitespace().map(String::from).collect()).collect();
        let held = rows.iter().any(|r| r.len() == 4 && r[1] == "hold" && mib(&r[3]) >= 50.0);
        if o.status.success() && rows.len() == 2 && held {
            break rows;
        }
        assert!(Instant::now() < deadline, "kubectl top pods never showed the pod: {text} {}", String::from_utf8_lossy(&o.stderr));
        std::thread::sleep(Duration::from_secs(1));
    };
    eprintln!("kubectl top pods --containers: {rows:?}");

    // CPU: compare with the burner's own cgroup over a window measured
    // here. A shared machine gives the loop less than a full core at times
    // (CI runs other tests beside it), so the figure is held to what the
    // cgroup says rather than to an exact number.
    let read = |name: &str| cgroup::read_cgroup(&host, layout, &cgroups[name]).expect("read the cgroup");
    let (t0, c0) = (Instant::now(), read("burn").cpu_ns);
    std::thread::sleep(Duration::from_secs(5));
    let (t1, c1) = (Instant::now(), read("burn").cpu_ns);
    let measured_milli = (c1 - c0) as f64 / t1.duration_since(t0).as_nanos() as f64 * 1000.0;
    let burn = rows.iter().find(|r| r[1] == "burn").unwrap();
    let reported_milli = milli(&burn[2]);
    eprintln!("burn: kubectl {reported_milli}m, cgroup {measured_milli:.0}m");
    // At most one core (one busy thread), clearly busy, and the rate the
    // cgroup itself shows (an idle machine gives ~1000m for both; a loaded
    // one less, for both alike).
    assert!(reported_milli > 50.0 && reported_milli <= 1100.0, "{burn:?}");
    let tolerance = (0.4 * measured_milli).max(150.0);
    assert!((reported_milli - measured_milli).abs() < tolerance, "kubectl {reported_milli}m, cgroup {measured_milli:.0}m");

    // Memory: the working set the cgroup files give now (the pod is idle).
    let hold = rows.iter().find(|r| r[1] == "hold").unwrap();
    let working_set = read("hold").working_set as f64 / (1024.0 * 1024.0);
    eprintln!("hold: kubectl {}, cgroup {working_set:.1}Mi", hold[3]);
    assert!((mib(&hold[3]) - working_set).abs() <= 2.0, "kubectl {}, cgroup {working_set:.1}Mi", hold[3]);

    // The node: real, non-zero figures.
    let nodes = kubectl.run_ok(&["top", "nodes", "--no-headers"]);
    let node: Vec<&str> = nodes.split_whitespace().collect();
    assert_eq!(node[0], "node1", "{nodes}");
    assert!(milli(node[1]) > 0.0 && node[3].ends_with("Mi") && mib(node[3]) > 50.0, "{nodes}");

    // The agent's Prometheus metrics, through the API server.
    let text = kubectl.run_ok(&["get", "--raw", "/api/v1/nodes/node1/proxy/metrics"]);
    assert!(text.contains("kubelet_running_pods 1\n"), "{text}");
    assert!(text.contains("kubelet_running_containers{container_state=\"running\"} 2\n"), "{text}");
}
