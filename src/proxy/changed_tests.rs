//! The sync's use of the service cache's change log: only the Services
//! it names are looked at, with the same result as a walk of all of them.

use std::sync::Arc;

use kube::runtime::watcher::Event;
use serde_json::json;

use super::elements::FakeElements;
use super::sync::Syncer;
use super::tests::{node, ready, service, slice, NODE};
use crate::hostnet::nft::FakeFirewall;
use crate::svccache::{Index, Snapshot};

/// 50 Services with one endpoint each, listed.
fn listed() -> Index {
    let mut index = Index::default();
    index.apply_service(Event::Init);
    index.apply_slice(Event::Init);
    for i in 0..50 {
        let name = format!("svc{i}");
        index.apply_service(Event::InitApply(service(&name, &format!("10.43.1.{i}"), json!({}))));
        index.apply_slice(Event::InitApply(slice(&name, "1", &[ready("10.42.0.5", NODE)])));
    }
    index.apply_service(Event::InitDone);
    index.apply_slice(Event::InitDone);
    index
}

fn syncer() -> (Arc<FakeFirewall>, Arc<FakeElements>, Syncer) {
    let fw = Arc::new(FakeFirewall::new());
    let el = Arc::new(FakeElements::default());
    let s = Syncer::new(fw.clone(), el.clone(), node());
    (fw, el, s)
}

/// A slice change, a Service removed, one added and one whose objects
/// changed without changing its rules.
fn change(index: &mut Index) {
    let mut two = slice("svc7", "1", &[ready("10.42.0.5", NODE), ready("10.42.0.6", NODE)]);
    two.metadata.resource_version = Some("2".into());
    index.apply_slice(Event::Apply(two));
    index.apply_service(Event::Delete(service("svc9", "10.43.1.9", json!({}))));
    index.apply_service(Event::Apply(service("svc60", "10.43.2.60", json!({}))));
    let mut same = service("svc3", "10.43.1.3", json!({}));
    same.metadata.resource_version = Some("2".into());
    index.apply_service(Event::Apply(same));
}

#[tokio::test]
async fn a_sync_looks_only_at_the_services_the_change_log_names() {
    let mut index = listed();
    let (fw, el, mut syncer) = syncer();
    assert!(syncer.sync(&index.snapshot()).await.unwrap().full);
    change(&mut index);
    let snap = index.snapshot();
    let stats = syncer.sync(&snap).await.unwrap();
    assert!(!stats.full);
    assert_eq!((stats.services_looked_at, stats.services_changed), (4, 3), "{stats:?}");

    // The same change through a walk of every Service (a syncer that
    // never saw this index's log) writes exactly the same.
    let mut walked = listed();
    let (wfw, wel, mut wsyncer) = syncer_after_full(&mut walked).await;
    change(&mut walked);
    let wstats = wsyncer.resync(&walked.snapshot()).await.unwrap();
    assert_eq!(wstats.services_looked_at, 50);
    assert_eq!(wstats.services_changed, stats.services_changed);
    assert_eq!(wfw.applied().last(), fw.applied().last());
    assert_eq!(wel.applied().last(), el.applied().last());

    // Nothing since: nothing looked at.
    let idle = syncer.sync(&snap).await.unwrap();
    assert!(idle.unchanged());
    assert_eq!(idle.services_looked_at, 0);
}

async fn syncer_after_full(index: &mut Index) -> (Arc<FakeFirewall>, Arc<FakeElements>, Syncer) {
    let (fw, el, mut s) = syncer();
    assert!(s.sync(&index.snapshot()).await.unwrap().full);
    (fw, el, s)
}

#[tokio::test]
async fn a_snapshot_the_log_cannot_explain_is_walked_whole() {
    let mut index = listed();
    let (_fw, _el, mut syncer) = syncer_after_full(&mut index).await;
    // A relist in between: every Service is looked at (none changed).
    index.apply_service(Event::Init);
    for i in 0..50 {
        index.apply_service(Event::InitApply(service(&format!("svc{i}"), &format!("10.43.1.{i}"), json!({}))));
    }
    index.apply_service(Event::InitDone);
    let stats = syncer.sync(&index.snapshot()).await.unwrap();
    assert_eq!((stats.full, stats.services_looked_at), (false, 50), "{stats:?}");
    assert!(stats.unchanged());
    // A snapshot from elsewhere (another index): walked whole, and what
    // it lacks goes.
    let other = Snapshot::from_objects(
        vec![service("svc1", "10.43.1.1", json!({}))],
        vec![slice("svc1", "1", &[ready("10.42.0.5", NODE)])],
    );
    let stats = syncer.sync(&other).await.unwrap();
    assert_eq!((stats.services_looked_at, stats.services_changed), (1, 49), "{stats:?}");
    // Back on the first index: its log cannot speak for the other one.
    change(&mut index);
    let stats = syncer.sync(&index.snapshot()).await.unwrap();
    assert_eq!(stats.services_looked_at, 50, "{stats:?}");
}
