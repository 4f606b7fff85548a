//! Backend-neutral tests of the [`Store`] contract, run against SQLite here and
//! against a real etcd in `etcd::tests`. Revisions are relative to the store's
//! starting revision (an empty etcd is at 1, an empty SQLite at 0).

use std::time::Duration;

use super::*;

fn list(
    s: &dyn Store,
    prefix: &str,
    after: Option<&str>,
    limit: Option<usize>,
    rev: Option<Revision>,
) -> Result<ListPage> {
    s.list(&ListOptions {
        prefix: prefix.into(),
        start_after: after.map(Into::into),
        limit,
        revision: rev,
    })
}

fn keys(p: &ListPage) -> Vec<&str> {
    p.records.iter().map(|r| r.key.as_str()).collect()
}

/// The next `n` events (waiting for each, as a backend may deliver asynchronously).
pub(crate) async fn recv_n(rx: &mut WatchReceiver, n: usize) -> Vec<Result<WatchEvent>> {
    let mut out = Vec::new();
    while out.len() < n {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(ev)) => out.push(ev),
            Ok(None) | Err(_) => break,
        }
    }
    out
}

/// Nothing more arrives for a short while.
async fn quiet(rx: &mut WatchReceiver) -> bool {
    tokio::time::timeout(Duration::from_millis(300), rx.recv())
        .await
        .is_err()
}

pub(crate) fn crud_and_cas(s: &dyn Store) {
    let b = s.current_revision();
    let a = s.create("/a", b"1").unwrap();
    assert_eq!((a.create_revision, a.mod_revision), (b + 1, b + 1));
    assert_eq!(
        s.create("/a", b"x"),
        Err(StoreError::AlreadyExists { key: "/a".into() })
    );
    assert_eq!(s.get("/a").unwrap().unwrap().value, b"1");
    assert_eq!(s.get("/nope").unwrap(), None);
    let u = s.update("/a", b"2", b + 1).unwrap();
    assert_eq!((u.create_revision, u.mod_revision), (b + 1, b + 2));
    assert_eq!(
        s.update("/a", b"3", b + 1),
        Err(StoreError::Conflict {
            key: "/a".into(),
            expected: b + 1,
            actual: b + 2
        })
    );
    assert_eq!(
        s.update("/zz", b"3", 0),
        Err(StoreError::NotFound { key: "/zz".into() })
    );
    assert!(matches!(
        s.delete("/a", Some(b + 1)),
        Err(StoreError::Conflict { .. })
    ));
    let d = s.delete("/a", Some(b + 2)).unwrap();
    assert_eq!((d.value.as_slice(), d.mod_revision), (&b"2"[..], b + 3));
    assert_eq!(s.get("/a").unwrap(), None);
    assert_eq!(
        s.delete("/a", None),
        Err(StoreError::NotFound { key: "/a".into() })
    );
    assert_eq!(s.current_revision(), b + 3);
    // A failed write consumes no revision; a re-create starts a new lifetime.
    let again = s.create("/a", b"new").unwrap();
    assert_eq!((again.create_revision, again.mod_revision), (b + 4, b + 4));
}

pub(crate) fn list_paging_and_snapshots(s: &dyn Store) {
    let b = s.current_revision();
    for i in 0..10 {
        s.create(&format!("/p/{i}"), format!("v{i}").as_bytes())
            .unwrap();
    }
    s.create("/q/x", b"other").unwrap();
    let page = list(s, "/p/", None, Some(4), None).unwrap();
    assert_eq!(keys(&page), ["/p/0", "/p/1", "/p/2", "/p/3"]);
    assert_eq!((page.remaining, page.revision), (6, b + 11));
    // Changes after the first page do not show in later pages read at its revision.
    s.update("/p/5", b"changed", b + 6).unwrap();
    s.delete("/p/6", None).unwrap();
    s.create("/p/55", b"late").unwrap();
    let next = list(s, "/p/", Some("/p/3"), Some(4), Some(page.revision)).unwrap();
    assert_eq!(keys(&next), ["/p/4", "/p/5", "/p/6", "/p/7"]);
    assert_eq!(next.records[1].value, b"v5");
    assert_eq!(next.remaining, 2);
    let latest = list(s, "/p/", Some("/p/3"), None, None).unwrap();
    assert_eq!(
        keys(&latest),
        ["/p/4", "/p/5", "/p/55", "/p/7", "/p/8", "/p/9"]
    );
    assert_eq!((latest.remaining, latest.revision), (0, b + 14));
    let everything = list(s, "", None, None, None).unwrap();
    assert_eq!(everything.records.len(), 11);
    assert!(matches!(
        list(s, "/p/", None, None, Some(b + 99)),
        Err(StoreError::FutureRevision { requested, current })
            if requested == b + 99 && current == b + 14
    ));
    s.compact(b + 12).unwrap();
    assert_eq!(s.compacted_revision(), b + 12);
    assert!(matches!(
        list(s, "/p/", None, None, Some(b + 11)),
        Err(StoreError::Compacted { .. })
    ));
    let at12 = list(s, "/p/", None, None, Some(b + 12)).unwrap();
    assert_eq!(
        at12.records.iter().find(|r| r.key == "/p/5").unwrap().value,
        b"changed"
    );
    assert!(at12.records.iter().any(|r| r.key == "/p/6"));
}

pub(crate) async fn watch_history_then_live_without_gaps(s: &dyn Store) {
    let b = s.current_revision();
    s.create("/w/a", b"1").unwrap();
    s.create("/x/b", b"1").unwrap();
    s.update("/w/a", b"2", b + 1).unwrap();
    let mut rx = s.watch("/w/", b + 1).unwrap();
    s.delete("/w/a", None).unwrap();
    s.create("/w/c", b"c").unwrap();
    let evs: Vec<WatchEvent> = recv_n(&mut rx, 3)
        .await
        .into_iter()
        .map(|e| e.unwrap())
        .collect();
    let revs: Vec<_> = evs.iter().map(|e| (e.kind, e.revision)).collect();
    assert_eq!(
        revs,
        [
            (EventKind::Updated, b + 3),
            (EventKind::Deleted, b + 4),
            (EventKind::Created, b + 5)
        ]
    );
    assert!(quiet(&mut rx).await, "no event outside the prefix or twice");
    assert_eq!(evs[0].prev.as_ref().unwrap().value, b"1");
    assert!(evs[2].prev.is_none());
    let del = &evs[1];
    assert_eq!(
        (del.record.value.as_slice(), del.record.mod_revision),
        (&b"2"[..], b + 4)
    );
    assert_eq!(del.record.create_revision, b + 1);
    assert_eq!(del.prev.as_ref().unwrap().mod_revision, b + 3);
    assert!(matches!(
        s.watch("/w/", b + 99),
        Err(StoreError::FutureRevision { .. })
    ));
    s.compact(b + 4).unwrap();
    assert!(matches!(
        s.watch("/w/", b + 3),
        Err(StoreError::Compacted { requested, compacted })
            if requested == b + 3 && compacted == b + 4
    ));
    // Resuming at the compaction point still replays what follows.
    let mut rx = s.watch("/w/", b + 4).unwrap();
    let evs = recv_n(&mut rx, 1).await;
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].as_ref().unwrap().revision, b + 5);
}

pub(crate) async fn history_replay_matches_live_events(s: &dyn Store) {
    let b = s.current_revision();
    let mut live = s.watch("", b).unwrap();
    let mut rev = s.create("/k", b"0").unwrap().mod_revision;
    for i in 1..50 {
        rev = s
            .update("/k", format!("{i}").as_bytes(), rev)
            .unwrap()
            .mod_revision;
        s.create(&format!("/registry/leases/n{i}"), b"l").unwrap();
    }
    s.delete("/k", None).unwrap();
    let mut replay = s.watch("", b).unwrap();
    let (x, y) = (recv_n(&mut live, 100).await, recv_n(&mut replay, 100).await);
    assert_eq!(x.len(), 100);
    assert_eq!(x.len(), y.len());
    for (x, y) in x.iter().zip(&y) {
        let (x, y) = (x.as_ref().unwrap(), y.as_ref().unwrap());
        assert_eq!(
            (x.kind, x.revision, &x.record, &x.prev),
            (y.kind, y.revision, &y.record, &y.prev)
        );
    }
}

/// Runs every conformance test on fresh stores from `open`.
pub(crate) async fn all(open: impl Fn() -> Box<dyn Store>) {
    crud_and_cas(open().as_ref());
    list_paging_and_snapshots(open().as_ref());
    watch_history_then_live_without_gaps(open().as_ref()).await;
    history_replay_matches_live_events(open().as_ref()).await;
}

#[tokio::test]
async fn sqlite_passes_the_conformance_tests() {
    all(|| Box::new(SqliteStore::open_in_memory(StoreOptions::default()).unwrap())).await;
}
