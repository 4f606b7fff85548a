//! Garbage-collection fixtures shared by tests/gc_watch.rs and
//! benches/quiet.rs: a Deployment with its ReplicaSet and pods on a
//! [`ClusterHarness`] (plus the workload controllers), deleted with a
//! propagation policy, timed until its last dependent is gone.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::ResourceExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::simnodes::ClusterHarness;

/// Runs the workload controllers (Deployment → ReplicaSet → Pods) on the
/// harness's runtime until the token is cancelled (or dropped with a guard).
pub fn start_workloads(h: &ClusterHarness) -> CancellationToken {
    let shutdown = CancellationToken::new();
    let options = rk3s::controllers::ControllerOptions::new(
        rk3s::server::assemble::ClusterSettings::defaults(),
    );
    let ctx = rk3s::controllers::Context {
        client: h.client.clone(),
        options: std::sync::Arc::new(options),
        shutdown: shutdown.clone(),
    };
    h.rt.spawn(rk3s::controllers::workloads::run(ctx));
    shutdown
}

/// The uids of the objects a Deployment's deletion must take with it.
#[derive(Debug, Default)]
pub struct Dependents {
    pub replicasets: BTreeSet<String>,
    pub pods: BTreeSet<String>,
}

/// Creates Deployment `name` with `replicas` pods in `ns` and waits until
/// its ReplicaSet and every pod are Running; returns the dependents' uids.
pub async fn create_deployment(
    client: &kube::Client,
    ns: &str,
    name: &str,
    replicas: usize,
) -> Dependents {
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}))
    .expect("a deployment");
    deploys
        .create(&PostParams::default(), &d)
        .await
        .expect("failed to create the deployment");
    let start = Instant::now();
    loop {
        let deps = list_dependents(client, ns, name).await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        let running = pods
            .list(&ListParams::default().labels(&format!("app={name}")))
            .await
            .map(|l| {
                l.items
                    .iter()
                    .filter(|p| {
                        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                    })
                    .count()
            })
            .unwrap_or(0);
        if deps.replicasets.len() == 1 && deps.pods.len() == replicas && running == replicas {
            return deps;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "deployment {name} did not come up: {deps:?}, {running} running"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What still exists of a Deployment's dependents (found by label).
pub async fn list_dependents(client: &kube::Client, ns: &str, name: &str) -> Dependents {
    let lp = ListParams::default().labels(&format!("app={name}"));
    let rs: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let uids = |v: Vec<String>| v.into_iter().collect::<BTreeSet<_>>();
    Dependents {
        replicasets: uids(
            rs.list(&lp)
                .await
                .map(|l| l.items.iter().filter_map(|o| o.uid()).collect())
                .unwrap_or_default(),
        ),
        pods: uids(
            pods.list(&lp)
                .await
                .map(|l| l.items.iter().filter_map(|o| o.uid()).collect())
                .unwrap_or_default(),
        ),
    }
}

/// Deletes the Deployment with `policy` ("Background" or "Foreground") and
/// returns the time until it and every one of `before` are gone (polled
/// every 10 ms), or `None` after `timeout`.
pub async fn delete_and_time(
    client: &kube::Client,
    ns: &str,
    name: &str,
    policy: &str,
    before: &Dependents,
    timeout: Duration,
) -> Option<Duration> {
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let dp = match policy {
        "Foreground" => DeleteParams::foreground(),
        _ => DeleteParams::background(),
    };
    let start = Instant::now();
    deploys
        .delete(name, &dp)
        .await
        .expect("failed to delete the deployment");
    loop {
        let now = list_dependents(client, ns, name).await;
        let owner = deploys.get_opt(name).await.ok().flatten();
        let left = now.replicasets.intersection(&before.replicasets).count()
            + now.pods.intersection(&before.pods).count()
            + usize::from(owner.is_some());
        if left == 0 {
            return Some(start.elapsed());
        }
        if start.elapsed() > timeout {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
