//! Figures for the scheduler: how long 1,000 pods (created directly, no
//! controller) take to be bound across 10 simulated nodes, and the RSS of
//! the process after, which holds the API server, the store, the cluster
//! controllers and the scheduler as `rk3s server` would (plus the simulated
//! nodes and the bench's own client, so it is an upper bound). Two runs:
//! pods bound while they are created, and a backlog created with the
//! scheduler stopped, timed from its start (scheduling throughput alone).
//!
//! `cargo bench --bench scheduler` (add `--profile dev` for a quick,
//! unoptimised run). Env: `RK3S_BENCH_PODS` (default 1000),
//! `RK3S_BENCH_NODES` (default 10).

#[path = "../tests/common/mod.rs"]
#[allow(dead_code)]
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|r| r.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("scheduler bench: skipped outside `cargo bench --bench scheduler`");
        return;
    }
    let pods = env_num("RK3S_BENCH_PODS", 1000);
    let node_count = env_num("RK3S_BENCH_NODES", 10);
    let mut h = common::simnodes::ClusterHarness::start(|o| o.gc_period = Duration::from_secs(5));
    let _nodes = h.nodes(node_count);
    let rss_idle = rss_kib();
    // Live: pods bound while they are being created.
    let (created, bound, per_node) =
        h.rt.block_on(create_and_wait(h.client.clone(), "live", pods, true));
    // Backlog: pods created with the scheduler stopped, then bound at once:
    // the scheduler's own throughput, creation time excluded.
    // Free the nodes (110 pods each) before the backlog.
    h.rt.block_on(async {
        let api: Api<Pod> = Api::namespaced(h.client.clone(), "default");
        api.delete_collection(
            &kube::api::DeleteParams::default().grace_period(0),
            &ListParams::default().labels("app=live"),
        )
        .await
        .expect("failed to delete the live pods");
    });
    h.stop_controllers();
    h.rt.block_on(create_and_wait(h.client.clone(), "backlog", pods, false));
    let start = Instant::now();
    h.start_controllers();
    let (_, _, backlog_per_node) =
        h.rt.block_on(create_and_wait(h.client.clone(), "backlog", 0, true));
    let backlog = start.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let rss_after = rss_kib();
    println!("scheduler bench: {pods} pods on {node_count} simulated nodes");
    println!(
        "  created in            {:>8.2} s ({:.0} pods/s)",
        created.as_secs_f64(),
        pods as f64 / created.as_secs_f64()
    );
    println!(
        "  all bound after       {:>8.2} s ({:.0} pods/s end to end)",
        bound.as_secs_f64(),
        pods as f64 / bound.as_secs_f64()
    );
    let min = per_node.values().min().copied().unwrap_or(0);
    let max = per_node.values().max().copied().unwrap_or(0);
    println!("  pods per node         min {min}, max {max}");
    println!(
        "  backlog of {pods} bound {:>8.2} s after the scheduler started ({:.0} pods/s; per node min {}, max {})",
        backlog.as_secs_f64(),
        pods as f64 / backlog.as_secs_f64(),
        backlog_per_node.values().min().copied().unwrap_or(0),
        backlog_per_node.values().max().copied().unwrap_or(0)
    );
    println!(
        "  process RSS           {} MiB idle with nodes, {} MiB after",
        rss_idle / 1024,
        rss_after / 1024
    );
}

/// Creates `count` pods labelled `app=<label>` (16 at a time) and, with
/// `wait`, waits until every pod with that label is bound; returns the
/// creation time, the time until all were bound, and pods per node.
async fn create_and_wait(
    client: kube::Client,
    label: &str,
    count: usize,
    wait: bool,
) -> (Duration, Duration, BTreeMap<String, usize>) {
    let api: Api<Pod> = Api::namespaced(client, "default");
    let start = Instant::now();
    futures::stream::iter(0..count)
        .map(|i| {
            let api = api.clone();
            async move {
                let pod: Pod = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("{label}-{i}"), "labels": {"app": label}},
                    "spec": {"containers": [{"name": "c", "image": "x",
                        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}))
                .unwrap();
                api.create(&PostParams::default(), &pod)
                    .await
                    .expect("failed to create a pod");
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let created = start.elapsed();
    if !wait {
        return (created, created, BTreeMap::new());
    }
    loop {
        let list = api
            .list(&ListParams::default().labels(&format!("app={label}")))
            .await
            .expect("list");
        let mut per_node = BTreeMap::<String, usize>::new();
        for p in &list.items {
            if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
                *per_node.entry(n).or_default() += 1;
            }
        }
        if per_node.values().sum::<usize>() == list.items.len() {
            return (created, start.elapsed(), per_node);
        }
        let bound: usize = per_node.values().sum();
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "only {bound} of {} pods were bound in 10 minutes",
            list.items.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
