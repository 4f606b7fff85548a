//! Figures for issue 20 (quiet and prompt on an SD card). Run by hand:
//!
//! - `cargo bench --bench quiet -- idle [MINUTES] [agent|no-agent]` (root, real containerd):
//!   the real `rk3s server` with its built-in agent and 10 running pods, in
//!   a network namespace; after a settling minute, the bytes the process
//!   wrote to storage (`/proc/<pid>/io` write_bytes), its CPU seconds and
//!   RSS over MINUTES (default 10) idle minutes, and the store revisions
//!   spent meanwhile; then the same with `--disable-agent`.
//! - `cargo bench --bench quiet -- deletion`: a Deployment with 3 pods on a
//!   simulated node, deleted in the background and in the foreground, 10
//!   times each: the median time from the owner's deletion to its last
//!   dependent's (and, in the foreground, its own).
//! - `cargo bench --bench quiet -- churn [CONFIGMAPS] [PODS]`: 20,000
//!   create/update/delete cycles of ConfigMaps and 2,000 of Pods on two
//!   simulated nodes against the in-process server and controllers; DB +
//!   WAL bytes, RSS, open fds and threads at the start, middle and end.
//!
//! Add `--profile dev` for a quick, unoptimised run. `RK3S_BINARY=/path`
//! makes `idle` run that `rk3s` (e.g. a release build) instead of the one
//! cargo built with the bench, so the harness can stay unoptimised while
//! the server measured is the release binary:
//! `RK3S_BINARY=target/release/rk3s cargo bench --profile dev --bench quiet -- idle`.

#[path = "../tests/common/mod.rs"]
#[allow(dead_code)]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::gcfixture::{create_deployment, delete_and_time, start_workloads};
use common::onenode::{OneNode, ProcStats};
use common::simnodes::ClusterHarness;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let num = |i: usize, d: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    match args.first().map(String::as_str) {
        Some("idle") => {
            let minutes = num(1, 10) as u64;
            // `agent` or `no-agent` runs one of the two (a long run fits in less time).
            let which = args.get(2).map(String::as_str).unwrap_or("both");
            if which != "no-agent" {
                idle(&[], minutes);
            }
            if which != "agent" {
                idle(&["--disable-agent"], minutes);
            }
        }
        Some("deletion") => deletion(),
        Some("churn") => churn(num(1, 20_000), num(2, 2_000)),
        _ => eprintln!("usage: cargo bench --bench quiet -- idle [MINUTES] [agent|no-agent] | deletion | churn [CONFIGMAPS] [PODS]"),
    }
}

/// Bytes of the SQLite files (database, WAL, shared memory) under `dir`.
fn db_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for e in walk(dir) {
        let name = e
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.contains(".db") || name.ends_with("-wal") || name.ends_with("-shm") {
            total += std::fs::metadata(&e).map_or(0, |m| m.len());
        }
    }
    total
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn revision(one: &OneNode) -> u64 {
    let o = one.kubectl(&["get", "--raw", "/api/v1/namespaces?limit=1"]);
    serde_json::from_slice::<serde_json::Value>(&o.stdout)
        .ok()
        .and_then(|v| v["metadata"]["resourceVersion"].as_str()?.parse().ok())
        .unwrap_or(0)
}

fn idle(extra: &[&str], minutes: u64) {
    let label = if extra.is_empty() {
        "with the built-in agent, 10 pods"
    } else {
        "--disable-agent"
    };
    let one = OneNode::start(extra, "info");
    println!("idle: {label}, binary {}", common::twonode::rk3s_binary());
    if extra.is_empty() {
        one.wait_node_ready();
        let yaml = format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: idle\nspec:\n  replicas: 10\n  selector:\n    matchLabels: {{app: idle}}\n  template:\n    metadata:\n      labels: {{app: idle}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: c\n        image: {}\n        imagePullPolicy: Never\n        command: [sleep, \"100000000\"]\n",
            common::image::DEFAULT_REFERENCE
        );
        let o = {
            let path = one.dir.path().join("idle.yaml");
            std::fs::write(&path, yaml).unwrap();
            one.kubectl(&["apply", "-f", path.to_str().unwrap()])
        };
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        one.wait_for("10 running pods", 300, || {
            let o = one.kubectl(&[
                "get",
                "pods",
                "-l",
                "app=idle",
                "-o",
                "jsonpath={.items[*].status.phase}",
            ]);
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            (text.split_whitespace().filter(|p| *p == "Running").count() == 10).then_some(())
        });
    }
    // Let start-up work (first statuses, endpoints, the image scan) finish.
    std::thread::sleep(Duration::from_secs(60));
    let data = one.dir.path().join("data");
    let pid = one.pid();
    let (a, rev_a, db_a) = (ProcStats::read(pid), revision(&one), db_bytes(&data));
    let log_from =
        std::fs::read_to_string(one.dir.path().join("server.log")).map_or(0, |t| t.len());
    let mut per_minute = Vec::new();
    let mut last = a.write_bytes;
    for _ in 0..minutes {
        std::thread::sleep(Duration::from_secs(60));
        let now = ProcStats::read(pid).write_bytes;
        per_minute.push((now - last).to_string());
        last = now;
    }
    let (b, rev_b, db_b) = (ProcStats::read(pid), revision(&one), db_bytes(&data));
    println!("idle {minutes} min, {label}:");
    println!(
        "  written by rk3s:  {} bytes ({:.0} B/min)",
        b.write_bytes - a.write_bytes,
        (b.write_bytes - a.write_bytes) as f64 / minutes as f64
    );
    println!(
        "  CPU:              {:.2} s ({:.2}% of a core)",
        b.cpu_seconds - a.cpu_seconds,
        100.0 * (b.cpu_seconds - a.cpu_seconds) / (minutes * 60) as f64
    );
    println!(
        "  RSS:              {} KiB (start {} KiB)",
        b.rss_kib, a.rss_kib
    );
    println!("  fds / threads:    {} / {}", b.fds, b.threads);
    println!(
        "  store revisions:  {} (Lease renewals are in memory, counted here)",
        rev_b.saturating_sub(rev_a)
    );
    println!("  DB + WAL bytes:   {db_a} -> {db_b}");
    println!("  bytes per minute: {}", per_minute.join(" "));
    let log = std::fs::read_to_string(one.dir.path().join("server.log")).unwrap_or_default();
    let idle_lines: Vec<&str> = log.get(log_from..).unwrap_or("").lines().collect();
    println!("  log lines while idle: {}", idle_lines.len());
    for l in idle_lines.iter().take(10) {
        println!("    {l}");
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn deletion() {
    let h = ClusterHarness::start(|o| o.gc_period = Duration::from_secs(600));
    let _nodes = h.nodes(1);
    let workloads = start_workloads(&h);
    let client = h.client.clone();
    h.rt.block_on(async {
        for policy in ["Background", "Foreground"] {
            let mut times = Vec::new();
            for i in 0..10 {
                let name = format!("{}-{i}", policy.to_lowercase());
                let before = create_deployment(&client, "default", &name, 3).await;
                // Let the controllers settle so only the deletion is timed.
                tokio::time::sleep(Duration::from_millis(500)).await;
                match delete_and_time(
                    &client,
                    "default",
                    &name,
                    policy,
                    &before,
                    Duration::from_secs(60),
                )
                .await
                {
                    Some(t) => times.push(t),
                    None => println!("  {policy} round {i}: dependents left after 60 s"),
                }
            }
            let all: Vec<String> = times
                .iter()
                .map(|t| format!("{:.0}", t.as_secs_f64() * 1000.0))
                .collect();
            println!(
                "deployment deletion, {policy}: median {:.0} ms over {} rounds (ms: {})",
                median(times.clone()).as_secs_f64() * 1000.0,
                times.len(),
                all.join(" ")
            );
        }
    });
    workloads.cancel();
}

fn self_stats(h: &ClusterHarness, phase: &str) {
    let s = ProcStats::read(std::process::id());
    println!(
        "  {phase:>6}: DB+WAL {} KiB, RSS {} KiB, fds {}, threads {}, controller tasks {}",
        db_bytes(h.server.data_dir()) / 1024,
        s.rss_kib,
        s.fds,
        s.threads,
        h.rt.metrics().num_alive_tasks()
    );
}

/// Runs `cycle(i)` for `i` in `0..n`, 16 at a time, printing the figures
/// after each half.
fn in_halves<F, Fut>(h: &ClusterHarness, n: usize, phase: &str, cycle: F)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use futures::StreamExt;
    const PARALLEL: usize = 16;
    h.rt.block_on(async {
        for half in [0..n / 2, n / 2..n] {
            futures::stream::iter(half)
                .map(&cycle)
                .buffer_unordered(PARALLEL)
                .collect::<Vec<_>>()
                .await;
            self_stats(h, phase);
        }
    });
}

fn churn(configmaps: usize, pods: usize) {
    let h = ClusterHarness::start(|_| {});
    let _nodes = h.nodes(2);
    let client = h.client.clone();
    let t0 = Instant::now();
    println!("churn: {configmaps} ConfigMap and {pods} Pod create/update/delete cycles");
    self_stats(&h, "start");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cm_cycle = |i: usize| {
        let cms = cms.clone();
        async move {
            let name = format!("churn-{}", i % 512);
            let cm: ConfigMap =
                serde_json::from_value(json!({"metadata": {"name": name}, "data": {"v": "0"}}))
                    .unwrap();
            let _ = cms.create(&PostParams::default(), &cm).await;
            let _ = cms
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"data": {"v": i.to_string()}})),
                )
                .await;
            let _ = cms.delete(&name, &DeleteParams::default()).await;
        }
    };
    in_halves(&h, configmaps, "cm", cm_cycle);
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod_cycle = |i: usize| {
        let api = pod_api.clone();
        async move {
            let name = format!("churn-pod-{}", i % 64);
            let pod: Pod = serde_json::from_value(json!({"metadata": {"name": name, "labels": {"churn": "x"}},
                "spec": {"nodeName": format!("node-{}", i % 2), "containers": [{"name": "c", "image": "x"}]}})).unwrap();
            let _ = api.create(&PostParams::default(), &pod).await;
            let _ = api
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"labels": {"v": i.to_string()}}})),
                )
                .await;
            let _ = api.delete(&name, &DeleteParams::default()).await;
            // The simulated node finishes the graceful deletion.
            for _ in 0..200 {
                if api.get_opt(&name).await.ok().flatten().is_none() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    in_halves(&h, pods, "pods", pod_cycle);
    // A quiet minute for compaction and the controllers to catch up.
    std::thread::sleep(Duration::from_secs(60));
    self_stats(&h, "end");
    println!("  took {:.0} s", t0.elapsed().as_secs_f64());
}
