//! A single node as a Pi owner runs it (the real `rk3s server` with its
//! built-in agent, in a network namespace, on a private containerd):
//!
//! - a pod deleted right after it is bound never has a container started
//!   and is gone (DELETED on a watch) long before its 30 s grace period
//!   (busybox `sleep` as PID 1 ignores SIGTERM, so a started container
//!   would hold it that long);
//! - the server's output, not a terminal here, has no ANSI escape codes.
//!
//! Root-only: skips without root unless `RK3S_E2E=1`.

mod common;

use std::time::{Duration, Instant};

use common::onenode::OneNode;
use common::privilege::require_e2e;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams, WatchEvent, WatchParams};

#[test]
fn a_pod_deleted_right_after_creation_never_starts_and_goes_at_once() {
    if !require_e2e("e2e_quiet") {
        return;
    }
    let one = OneNode::start(&[], "info");
    one.wait_node_ready();
    let (gone_after, uid) = one.with_kube_client(|client| async move {
        let pods: Api<Pod> = Api::namespaced(client, "default");
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "brief"},
            "spec": {"containers": [{"name": "c", "image": common::image::DEFAULT_REFERENCE,
                                     "imagePullPolicy": "Never",
                                     "command": ["sleep", "3600"]}]}}))
        .unwrap();
        // Watch first, so the 100 ms start at the creation itself.
        let rv = pods
            .list(&kube::api::ListParams::default().limit(1))
            .await
            .unwrap()
            .metadata
            .resource_version
            .unwrap();
        let mut events = pods
            .watch(&WatchParams::default().fields("metadata.name=brief"), &rv)
            .await
            .unwrap()
            .boxed();
        let created = pods.create(&PostParams::default(), &pod).await.unwrap();
        let created_at = Instant::now();
        let uid = created.metadata.uid.clone().unwrap();
        // Delete as soon as it is bound (the agent has it), at most 100 ms in.
        let bound = async {
            while let Some(Ok(ev)) = events.next().await {
                if let WatchEvent::Added(p) | WatchEvent::Modified(p) = ev {
                    if p.spec.and_then(|s| s.node_name).is_some() {
                        return;
                    }
                }
            }
        };
        let budget = Duration::from_millis(100).saturating_sub(created_at.elapsed());
        let _ = tokio::time::timeout(budget, bound).await;
        let deleted_at = Instant::now();
        pods.delete("brief", &DeleteParams::default())
            .await
            .unwrap();
        eprintln!(
            "deleted {:?} after creation",
            deleted_at.duration_since(created_at)
        );
        let gone = tokio::time::timeout(Duration::from_secs(25), async {
            while let Some(ev) = events.next().await {
                if let Ok(WatchEvent::Deleted(_)) = ev {
                    return;
                }
            }
            panic!("the watch ended before DELETED");
        })
        .await;
        assert!(
            gone.is_ok(),
            "no DELETED within 25 s: the grace period was waited out"
        );
        (deleted_at.elapsed(), uid)
    });
    eprintln!("DELETED seen {gone_after:?} after the delete");
    // Give a late start (if any) time to show in the log.
    std::thread::sleep(Duration::from_secs(2));
    let log = std::fs::read_to_string(one.dir.path().join("server.log")).unwrap();
    let started: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("started container") && l.contains("default/brief"))
        .collect();
    assert!(started.is_empty(), "a container was started: {started:?}");
    if let Some(c) = &one.ctrd {
        let list = c.ctr_ok(&["containers", "ls"]).unwrap();
        assert!(
            !list.contains(&uid),
            "a container of the pod is left: {list}"
        );
    }
    assert!(
        !log.contains('\u{1b}'),
        "escape codes in the server's output to a file"
    );
    // One line per event: every line starts with a timestamp.
    for l in log.lines().filter(|l| !l.is_empty()) {
        assert!(
            l.as_bytes()[0].is_ascii_digit(),
            "a log line that is not an event of its own: {l:?}"
        );
    }
}
