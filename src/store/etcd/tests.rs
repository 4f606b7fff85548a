//! The store contract against a real etcd (Debian's `etcd-server`), one
//! throw-away member per test; skipped when no `etcd` binary is installed.

use super::*;
use crate::store::conformance::{self, recv_n};
use crate::store::EventKind;

/// A fresh etcd and a store on it (the store drops first).
struct Fixture {
    store: EtcdStore,
    _etcd: LocalEtcd,
}

fn fixture() -> Option<Fixture> {
    if !LocalEtcd::available() {
        eprintln!("skipped: no etcd binary (apt-get install etcd-server)");
        return None;
    }
    let etcd = LocalEtcd::start().expect("start etcd");
    let store = EtcdStore::connect(options(&etcd)).expect("connect to etcd");
    Some(Fixture { store, _etcd: etcd })
}

fn options(etcd: &LocalEtcd) -> EtcdOptions {
    EtcdOptions {
        compact_interval: None,
        ttl_prefixes: vec!["/registry/events/".into()],
        ..EtcdOptions::new(vec![etcd.endpoint.clone()])
    }
}

#[test]
fn etcd_crud_and_cas() {
    let Some(f) = fixture() else { return };
    conformance::crud_and_cas(&f.store);
}

#[test]
fn etcd_list_paging_and_snapshots() {
    let Some(f) = fixture() else { return };
    conformance::list_paging_and_snapshots(&f.store);
}

#[tokio::test]
async fn etcd_watch_history_then_live_without_gaps() {
    let Some(f) = fixture() else { return };
    conformance::watch_history_then_live_without_gaps(&f.store).await;
}

#[tokio::test]
async fn etcd_history_replay_matches_live_events() {
    let Some(f) = fixture() else { return };
    conformance::history_replay_matches_live_events(&f.store).await;
}

/// Two servers on one etcd: CAS decides between them, and a watch through one
/// sees writes through the other.
#[tokio::test]
async fn two_stores_on_one_etcd_share_revisions_and_watches() {
    let Some(f) = fixture() else { return };
    let other = EtcdStore::connect(options(&f._etcd)).unwrap();
    let mut rx = f.store.watch("/registry/", f.store.current_revision()).unwrap();
    let a = other.create("/registry/configmaps/default/x", b"1").unwrap();
    assert_eq!(f.store.current_revision(), a.mod_revision);
    let won = f
        .store
        .update("/registry/configmaps/default/x", b"2", a.mod_revision)
        .unwrap();
    assert!(matches!(
        other.update("/registry/configmaps/default/x", b"3", a.mod_revision),
        Err(StoreError::Conflict { actual, .. }) if actual == won.mod_revision
    ));
    let evs = recv_n(&mut rx, 2).await;
    let kinds: Vec<_> = evs.iter().map(|e| e.as_ref().unwrap().kind).collect();
    assert_eq!(kinds, [EventKind::Created, EventKind::Updated]);
}

/// Compaction by another store (or by etcd itself) ends a running watch that
/// had not yet read past it with `Compacted`, as SQLite's overflow does.
#[tokio::test]
async fn a_watch_behind_a_compaction_ends_with_compacted() {
    let Some(f) = fixture() else { return };
    let s = &f.store;
    let b = s.current_revision();
    let mut r = s.create("/k", b"0").unwrap().mod_revision;
    for i in 0..20 {
        r = s.update("/k", format!("{i}").as_bytes(), r).unwrap().mod_revision;
    }
    s.compact(r).unwrap();
    assert!(matches!(
        s.watch("/", b),
        Err(StoreError::Compacted { .. })
    ));
    // etcd compacted by someone else (its own --auto-compaction): our mark
    // does not know, so the watch opens, and its stream ends with Compacted.
    for i in 0..5 {
        r = s.update("/k", format!("x{i}").as_bytes(), r).unwrap().mod_revision;
    }
    let behind = s.compacted_revision() + 1;
    s.run(move |sh| async move {
        sh.client.kv_client().compact(r, None).await.map_err(|e| ops::backend("compact", e))
    })
    .unwrap();
    let mut rx = s.watch("/", behind).unwrap();
    let evs = recv_n(&mut rx, 2).await;
    assert_eq!(evs.len(), 1, "one error, then the stream ends");
    assert!(matches!(
        &evs[0],
        Err(StoreError::Compacted { requested, compacted }) if *requested == behind && *compacted == r
    ));
}

/// Events carry an etcd lease (etcd deletes them after the TTL); other keys do not.
#[test]
fn events_get_an_etcd_lease() {
    let Some(f) = fixture() else { return };
    f.store.create("/registry/events/default/e1", b"e").unwrap();
    f.store.create("/registry/events/default/e2", b"e").unwrap();
    f.store.create("/registry/pods/default/p", b"p").unwrap();
    let leases = f
        .store
        .run(|s| async move {
            let mut kv = s.client.kv_client();
            let mut out = Vec::new();
            for k in ["/registry/events/default/e1", "/registry/events/default/e2", "/registry/pods/default/p"] {
                let r = kv.get(k, None).await.map_err(|e| ops::backend("get", e))?;
                out.push(r.kvs()[0].lease());
            }
            Ok(out)
        })
        .unwrap();
    assert!(leases[0] != 0, "an Event is written with a lease");
    assert_eq!(leases[0], leases[1], "Events written together share one lease");
    assert_eq!(leases[2], 0, "a Pod is not");
}

/// A store whose etcd went away fails its calls with a Backend error instead of hanging.
#[test]
fn calls_fail_cleanly_when_etcd_is_gone() {
    let Some(f) = fixture() else { return };
    let Fixture { store, _etcd } = f;
    drop(_etcd);
    assert!(matches!(store.get("/x"), Err(StoreError::Backend(_))));
}

/// A list larger than gRPC's default 4 MiB message comes back whole.
#[test]
fn a_list_larger_than_grpc_default_limits_is_served() {
    let Some(f) = fixture() else { return };
    let big = vec![b'v'; 1 << 20];
    for i in 0..6 {
        f.store.create(&format!("/registry/configmaps/big/c{i}"), &big).unwrap();
    }
    let all = f
        .store
        .list(&crate::store::ListOptions {
            prefix: "/registry/configmaps/".into(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(all.records.len(), 6);
    assert!(all.records.iter().all(|r| r.value.len() == 1 << 20));
}
