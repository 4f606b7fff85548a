//! kube-rs, a second real client: its `watcher` is pushed past compaction,
//! gets 410 Gone, relists and carries on without losing any object.
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::apiserver::TestServer;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};

fn configmap(name: &str, value: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("v".to_string(), value.to_string())])),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_survives_compaction_with_a_relist() {
    // A tiny history and watch buffer, so that a watcher that stops reading
    // is overtaken by compaction quickly.
    let server = TestServer::start_with(|o| {
        o.history_max_revisions = 50;
        o.watch_buffer = 8;
        o.sync = rk3s::store::SyncMode::Normal;
    });
    let client = server.kube_client().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    for i in 0..5 {
        api.create(
            &PostParams::default(),
            &configmap(&format!("early-{i}"), "0"),
        )
        .await
        .unwrap();
    }

    let mut stream = watcher::watcher(api.clone(), watcher::Config::default()).boxed();
    let mut inits = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .unwrap()
        {
            Some(Ok(Event::Init)) => inits += 1,
            Some(Ok(Event::InitDone)) => break,
            Some(Ok(_)) => {}
            other => panic!("unexpected watcher item before InitDone: {other:?}"),
        }
    }

    // While the watcher is not read, write far more than its buffers and the
    // retained history hold (large values fill the socket buffers too).
    let big = "x".repeat(4096);
    for i in 0..1500 {
        let patch = serde_json::json!({"data": {"v": format!("{i}-{big}")}});
        api.patch("early-0", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }
    for i in 0..5 {
        api.create(
            &PostParams::default(),
            &configmap(&format!("late-{i}"), "1"),
        )
        .await
        .unwrap();
    }

    // Reading again: the watcher meets 410 Gone, relists, and its view ends
    // up with every object and the last value.
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut saw_error = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        let item = match tokio::time::timeout(Duration::from_secs(30), stream.next()).await {
            Ok(Some(item)) => item,
            Ok(None) | Err(_) => break,
        };
        match item {
            Ok(Event::Init) => inits += 1,
            Ok(Event::InitApply(cm)) | Ok(Event::Apply(cm)) => {
                let v = cm
                    .data
                    .as_ref()
                    .and_then(|d| d.get("v"))
                    .cloned()
                    .unwrap_or_default();
                seen.insert(cm.metadata.name.clone().unwrap(), v);
            }
            Ok(Event::Delete(cm)) => {
                seen.remove(&cm.metadata.name.clone().unwrap());
            }
            Ok(Event::InitDone) => {}
            Err(_) => saw_error = true,
        }
        let done = (0..5).all(|i| seen.contains_key(&format!("late-{i}")))
            && seen.get("early-0").is_some_and(|v| v.starts_with("1499-"));
        if done && inits >= 2 {
            break;
        }
    }
    assert!(
        saw_error || inits >= 2,
        "the watcher never saw the 410 or relisted"
    );
    assert!(
        inits >= 2,
        "the watcher did not relist after 410 Gone (inits: {inits})"
    );
    for name in (0..5)
        .map(|i| format!("early-{i}"))
        .chain((0..5).map(|i| format!("late-{i}")))
    {
        assert!(
            seen.contains_key(&name),
            "{name} missing from the watcher's view: {:?}",
            seen.keys()
        );
    }
    assert!(
        seen["early-0"].starts_with("1499-"),
        "the last write is missing"
    );
}
