//! An idle watch keeps up with the store: a BOOKMARK carries the store's
//! progress, not only the last event of its own kind, so the watchers of a
//! kind that never changes are not left on a revision that compaction
//! removes (on an idle node that meant a 410, a relist and a warning in the
//! log at every compaction, issue 20). Waits for two bookmark intervals
//! (about two minutes).
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::apiserver::TestServer;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, ObjectMeta, PostParams, WatchEvent, WatchParams};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookmarks_of_an_unchanged_kind_follow_the_store() {
    let server = TestServer::start();
    let client = server.kube_client().await;
    // Nothing is ever written under this namespace's prefix (kube-rs asks
    // for bookmarks by default).
    let idle: Api<ConfigMap> = Api::namespaced(client.clone(), "idle");
    let start = idle
        .list(&ListParams::default().limit(1))
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut events = idle
        .watch(&WatchParams::default().timeout(290), &start)
        .await
        .unwrap()
        .boxed();
    // The store moves on elsewhere.
    let busy: Api<ConfigMap> = Api::namespaced(client, "default");
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("elsewhere".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("k".to_string(), "v".to_string())])),
        ..Default::default()
    };
    let written: i64 = busy
        .create(&PostParams::default(), &cm)
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap()
        .parse()
        .unwrap();
    let began = Instant::now();
    let mut seen = Vec::new();
    while began.elapsed() < Duration::from_secs(150) {
        let next = tokio::time::timeout(Duration::from_secs(150), events.next()).await;
        match next {
            Ok(Some(Ok(WatchEvent::Bookmark(b)))) => {
                let rv: i64 = b.metadata.resource_version.parse().unwrap();
                seen.push(rv);
                if rv >= written {
                    return;
                }
            }
            Ok(Some(Ok(other))) => panic!("an event on a kind nobody wrote: {other:?}"),
            other => panic!("the watch ended or failed: {other:?} (bookmarks {seen:?})"),
        }
    }
    panic!(
        "no bookmark reached revision {written} (written elsewhere) in 150 s; \
         bookmarks carried {seen:?} (the watch started at {start})"
    );
}
