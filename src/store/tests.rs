//! Unit tests of the SQLite store (file-backed in a temp dir, and in memory).

use std::time::Duration;

use super::*;

fn open(dir: &std::path::Path) -> SqliteStore {
    SqliteStore::open(dir, opts()).unwrap()
}

fn opts() -> StoreOptions {
    StoreOptions {
        volatile_prefixes: vec!["/registry/leases/".into()],
        ..Default::default()
    }
}

fn list(
    s: &SqliteStore,
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

fn drain(rx: &mut WatchReceiver) -> Vec<Result<WatchEvent>> {
    let mut out = Vec::new();
    while let Ok(ev) = rx.try_recv() {
        out.push(ev);
    }
    out
}

#[test]
fn crud_and_cas() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let a = s.create("/a", b"1").unwrap();
    assert_eq!((a.create_revision, a.mod_revision), (1, 1));
    assert_eq!(
        s.create("/a", b"x"),
        Err(StoreError::AlreadyExists { key: "/a".into() })
    );
    assert_eq!(s.get("/a").unwrap().unwrap().value, b"1");
    assert_eq!(s.get("/nope").unwrap(), None);
    let b = s.update("/a", b"2", 1).unwrap();
    assert_eq!((b.create_revision, b.mod_revision), (1, 2));
    assert_eq!(
        s.update("/a", b"3", 1),
        Err(StoreError::Conflict {
            key: "/a".into(),
            expected: 1,
            actual: 2
        })
    );
    assert_eq!(
        s.update("/zz", b"3", 1),
        Err(StoreError::NotFound { key: "/zz".into() })
    );
    assert!(matches!(
        s.delete("/a", Some(1)),
        Err(StoreError::Conflict { .. })
    ));
    let d = s.delete("/a", Some(2)).unwrap();
    assert_eq!((d.value.as_slice(), d.mod_revision), (&b"2"[..], 3));
    assert_eq!(s.get("/a").unwrap(), None);
    assert_eq!(
        s.delete("/a", None),
        Err(StoreError::NotFound { key: "/a".into() })
    );
    assert_eq!(s.current_revision(), 3);
    // A failed write consumes no revision; a re-create starts a new lifetime.
    let again = s.create("/a", b"new").unwrap();
    assert_eq!((again.create_revision, again.mod_revision), (4, 4));
}

#[test]
fn list_paging_and_snapshots() {
    let s = SqliteStore::open_in_memory(opts()).unwrap();
    for i in 0..10 {
        s.create(&format!("/p/{i}"), format!("v{i}").as_bytes())
            .unwrap();
    }
    s.create("/q/x", b"other").unwrap();
    let page = list(&s, "/p/", None, Some(4), None).unwrap();
    assert_eq!(keys(&page), ["/p/0", "/p/1", "/p/2", "/p/3"]);
    assert_eq!((page.remaining, page.revision), (6, 11));
    // Changes after the first page do not show in later pages read at its revision.
    s.update("/p/5", b"changed", 6).unwrap();
    s.delete("/p/6", None).unwrap();
    s.create("/p/55", b"late").unwrap();
    let next = list(&s, "/p/", Some("/p/3"), Some(4), Some(page.revision)).unwrap();
    assert_eq!(keys(&next), ["/p/4", "/p/5", "/p/6", "/p/7"]);
    assert_eq!(next.records[1].value, b"v5");
    assert_eq!(next.remaining, 2);
    let latest = list(&s, "/p/", Some("/p/3"), None, None).unwrap();
    assert_eq!(
        keys(&latest),
        ["/p/4", "/p/5", "/p/55", "/p/7", "/p/8", "/p/9"]
    );
    assert_eq!((latest.remaining, latest.revision), (0, 14));
    assert!(matches!(
        list(&s, "/p/", None, None, Some(99)),
        Err(StoreError::FutureRevision {
            requested: 99,
            current: 14
        })
    ));
    s.compact(12).unwrap();
    assert_eq!(s.compacted_revision(), 12);
    assert!(matches!(
        list(&s, "/p/", None, None, Some(11)),
        Err(StoreError::Compacted { .. })
    ));
    let at12 = list(&s, "/p/", None, None, Some(12)).unwrap();
    assert_eq!(
        at12.records.iter().find(|r| r.key == "/p/5").unwrap().value,
        b"changed"
    );
    assert!(at12.records.iter().any(|r| r.key == "/p/6"));
}

#[tokio::test]
async fn watch_history_then_live_without_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.create("/w/a", b"1").unwrap();
    s.create("/x/b", b"1").unwrap();
    s.update("/w/a", b"2", 1).unwrap();
    let mut rx = s.watch("/w/", 1).unwrap();
    s.delete("/w/a", None).unwrap();
    s.create("/w/c", b"c").unwrap();
    let evs: Vec<WatchEvent> = drain(&mut rx).into_iter().map(|e| e.unwrap()).collect();
    let revs: Vec<_> = evs.iter().map(|e| (e.kind, e.revision)).collect();
    assert_eq!(
        revs,
        [
            (EventKind::Updated, 3),
            (EventKind::Deleted, 4),
            (EventKind::Created, 5)
        ]
    );
    assert_eq!(evs[0].prev.as_ref().unwrap().value, b"1");
    let del = &evs[1];
    assert_eq!(
        (del.record.value.as_slice(), del.record.mod_revision),
        (&b"2"[..], 4)
    );
    assert_eq!(del.prev.as_ref().unwrap().mod_revision, 3);
    assert!(matches!(
        s.watch("/w/", 99),
        Err(StoreError::FutureRevision { .. })
    ));
    s.compact(4).unwrap();
    assert!(matches!(
        s.watch("/w/", 3),
        Err(StoreError::Compacted {
            requested: 3,
            compacted: 4
        })
    ));
    // Resuming at the compaction point still replays what follows, with its prev value.
    let mut rx = s.watch("/w/", 4).unwrap();
    let evs = drain(&mut rx);
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].as_ref().unwrap().revision, 5);
}

#[tokio::test]
async fn history_replay_matches_live_events() {
    let s = SqliteStore::open_in_memory(opts()).unwrap();
    let mut live = s.watch("", 0).unwrap();
    let mut rev = s.create("/k", b"0").unwrap().mod_revision;
    for i in 1..50 {
        rev = s
            .update("/k", format!("{i}").as_bytes(), rev)
            .unwrap()
            .mod_revision;
        s.create(&format!("/registry/leases/n{i}"), b"l").unwrap();
    }
    s.delete("/k", None).unwrap();
    let replay = s.watch("", 0).unwrap();
    let (a, b) = (drain(&mut live), drain(&mut { replay }));
    assert_eq!(a.len(), 100);
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        let (x, y) = (x.as_ref().unwrap(), y.as_ref().unwrap());
        assert_eq!(
            (x.kind, x.revision, &x.record, &x.prev),
            (y.kind, y.revision, &y.record, &y.prev)
        );
    }
}

#[tokio::test]
async fn slow_watcher_gets_compacted_and_writers_go_on() {
    let s = SqliteStore::open_in_memory(StoreOptions {
        watch_buffer: 4,
        ..opts()
    })
    .unwrap();
    let mut rx = s.watch("/", 0).unwrap();
    for i in 0..10 {
        s.create(&format!("/k{i}"), b"v").unwrap();
    }
    let evs = drain(&mut rx);
    assert_eq!(evs.len(), 4);
    assert!(evs[..3].iter().all(|e| e.is_ok()));
    assert!(matches!(evs[3], Err(StoreError::Compacted { .. })));
    assert!(rx.recv().await.is_none(), "an overflowed watch ends");
}

#[test]
fn volatile_keys_share_revisions_and_stay_monotonic_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let last;
    {
        let s = SqliteStore::open(
            dir.path(),
            StoreOptions {
                reserve_step: 100,
                ..opts()
            },
        )
        .unwrap();
        s.create("/registry/pods/a", b"p").unwrap();
        let l = s.create("/registry/leases/n1", b"1").unwrap();
        assert_eq!(l.mod_revision, 2);
        let mut r = l.mod_revision;
        for i in 0..250 {
            r = s
                .update("/registry/leases/n1", format!("{i}").as_bytes(), r)
                .unwrap()
                .mod_revision;
        }
        let mut rx = s.watch("/registry/", 0).unwrap();
        assert_eq!(drain(&mut rx).len(), 252);
        let all = list(&s, "/registry/", None, None, None).unwrap();
        assert_eq!(keys(&all), ["/registry/leases/n1", "/registry/pods/a"]);
        let first = list(&s, "/registry/", None, Some(1), None).unwrap();
        assert_eq!(
            (keys(&first), first.remaining),
            (vec!["/registry/leases/n1"], 1)
        );
        let dynamic: std::sync::Arc<dyn Store> =
            std::sync::Arc::new(SqliteStore::open_in_memory(opts()).unwrap());
        assert_eq!(dynamic.current_revision(), 0);
        let old = list(&s, "/registry/leases/", None, None, Some(10)).unwrap();
        assert_eq!(old.records[0].mod_revision, 10);
        last = s.current_revision();
        assert_eq!(last, 252);
    }
    let s = SqliteStore::open(dir.path(), opts()).unwrap();
    assert_eq!(
        s.get("/registry/leases/n1").unwrap(),
        None,
        "volatile keys do not survive a restart"
    );
    assert!(s.get("/registry/pods/a").unwrap().is_some());
    assert!(s.current_revision() >= last);
    let next = s.create("/registry/leases/n1", b"again").unwrap();
    assert!(next.mod_revision > last);
    // Volatile history before the restart is gone: resuming there must relist.
    assert!(matches!(
        s.watch("/registry/leases/", 5),
        Err(StoreError::Compacted { .. })
    ));
    assert!(s.watch("/registry/pods/", 0).is_ok());
}

#[test]
fn count_based_compaction_bounds_history() {
    let s = SqliteStore::open_in_memory(StoreOptions {
        history_max_revisions: 100,
        ..opts()
    })
    .unwrap();
    let mut r = s.create("/k", b"0").unwrap().mod_revision;
    for i in 0..500 {
        r = s
            .update("/k", format!("{i}").as_bytes(), r)
            .unwrap()
            .mod_revision;
    }
    let c = s.compacted_revision();
    assert!(c >= 501 - 110 && c <= 501 - 100, "compacted at {c}");
    assert!(matches!(
        s.watch("/", c - 1),
        Err(StoreError::Compacted { .. })
    ));
    let mut rx = s.watch("/", c).unwrap();
    assert_eq!(drain(&mut rx).len() as i64, 501 - c);
    assert_eq!(s.get("/k").unwrap().unwrap().value, b"499");
}

#[test]
fn compaction_is_batched_by_a_tenth_of_the_cap() {
    let s = SqliteStore::open_in_memory(StoreOptions {
        history_max_revisions: 100,
        ..opts()
    })
    .unwrap();
    let mut r = s.create("/k", b"0").unwrap().mod_revision;
    let mut compactions = std::collections::BTreeSet::new();
    for i in 0..300 {
        r = s
            .update("/k", format!("{i}").as_bytes(), r)
            .unwrap()
            .mod_revision;
        compactions.insert(s.compacted_revision());
        // History never exceeds the cap plus its slack.
        assert!(r - s.compacted_revision() <= 110, "at {r}");
    }
    // 301 revisions, one compaction per 10 once the cap is reached: about 20, not 200.
    assert!(compactions.len() <= 22, "{} compactions", compactions.len());
}

#[test]
fn churn_keeps_the_file_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(
        dir.path(),
        StoreOptions {
            history_max_revisions: 200,
            ..opts()
        },
    )
    .unwrap();
    let value = vec![b'x'; 3000];
    let cycle = |i: usize| {
        let key = format!("/registry/pods/default/p{}", i % 64);
        let r = s.create(&key, &value).unwrap().mod_revision;
        let r = s.update(&key, &value, r).unwrap().mod_revision;
        s.delete(&key, Some(r)).unwrap();
    };
    (0..1000).for_each(cycle);
    let middle = s.disk_size();
    (1000..4000).for_each(cycle);
    let end = s.disk_size();
    // 200 revisions of 3 kB values are well under 2 MB of pages; the WAL is
    // capped at 256 pages plus what one compaction writes.
    assert!(end <= middle.max(1 << 20) * 2, "middle {middle}, end {end}");
    assert!(end < 4 << 20, "end {end}");
}

#[test]
fn idle_store_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.create("/a", b"1").unwrap();
    s.checkpoint().unwrap();
    let before = std::fs::metadata(s.db_path().unwrap())
        .unwrap()
        .modified()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    for _ in 0..100 {
        s.get("/a").unwrap();
        list(&s, "/", None, None, None).unwrap();
    }
    let after = std::fs::metadata(s.db_path().unwrap())
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(before, after);
    assert_eq!(
        s.disk_size(),
        std::fs::metadata(s.db_path().unwrap()).unwrap().len()
    );
}

#[test]
fn second_open_of_the_same_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _s = open(dir.path());
    assert!(matches!(
        SqliteStore::open(dir.path(), opts()),
        Err(StoreError::Backend(_))
    ));
}

#[test]
fn prefix_end_bounds() {
    assert_eq!(schema::prefix_end("/a/").as_deref(), Some("/a0"));
    assert_eq!(schema::prefix_end(""), None);
}

/// Lease renewals alone never compact durable history, and the volatile
/// ring stays bounded in memory: an old volatile revision is refused, a
/// durable one still readable.
#[test]
fn volatile_churn_compacts_nothing_durable_and_bounds_the_ring() {
    let s = SqliteStore::open_in_memory(StoreOptions {
        history_max_revisions: 100,
        ..opts()
    })
    .unwrap();
    let p = s.create("/registry/pods/a", b"1").unwrap().mod_revision;
    s.update("/registry/pods/a", b"2", p).unwrap();
    let mut r = s.create("/registry/leases/n1", b"0").unwrap().mod_revision;
    for i in 0..1000 {
        r = s
            .update("/registry/leases/n1", format!("{i}").as_bytes(), r)
            .unwrap()
            .mod_revision;
    }
    assert_eq!(s.compacted_revision(), 0, "no durable compaction");
    let old = list(&s, "/registry/pods/", None, None, Some(p)).unwrap();
    assert_eq!(old.records[0].value, b"1", "durable history kept");
    // The ring keeps the newest 100 to 110 volatile changes.
    assert!(s.watch("/registry/leases/", r - 90).is_ok());
    assert!(matches!(
        s.watch("/registry/leases/", r - 200),
        Err(StoreError::Compacted { .. })
    ));
    assert!(matches!(
        list(&s, "/registry/leases/", None, None, Some(r - 200)),
        Err(StoreError::Compacted { .. })
    ));
    let mut rx = s.watch("/registry/leases/", r - 90).unwrap();
    assert_eq!(drain(&mut rx).len(), 90);
    // A durable prefix is still readable from before the ring's floor.
    assert!(s.watch("/registry/pods/", p).is_ok());
}

/// The count cap counts durable writes only: interleaved Lease renewals do
/// not make durable history shorter than the cap.
#[test]
fn the_count_cap_counts_durable_writes() {
    let s = SqliteStore::open_in_memory(StoreOptions {
        history_max_revisions: 100,
        ..opts()
    })
    .unwrap();
    let mut k = s.create("/k", b"0").unwrap().mod_revision;
    let mut l = s.create("/registry/leases/n1", b"0").unwrap().mod_revision;
    let mut durable = vec![k];
    for i in 0..300 {
        k = s.update("/k", format!("{i}").as_bytes(), k).unwrap().mod_revision;
        durable.push(k);
        for _ in 0..3 {
            l = s.update("/registry/leases/n1", b"x", l).unwrap().mod_revision;
        }
    }
    let c = s.compacted_revision();
    let kept = durable.iter().filter(|r| **r > c).count();
    assert!((100..=110).contains(&kept), "{kept} durable revisions kept after {c}");
}

/// Once the revision block is reserved, a file-backed store renewing a
/// Lease thousands of times writes nothing to disk.
#[test]
fn lease_renewals_write_nothing_to_disk() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(
        dir.path(),
        StoreOptions {
            history_max_revisions: 100,
            history_window: Duration::from_millis(1),
            ..opts()
        },
    )
    .unwrap();
    // Enough durable history for a compaction to be due, if anything ran one.
    let mut k = s.create("/k", b"0").unwrap().mod_revision;
    for i in 0..50 {
        k = s.update("/k", format!("{i}").as_bytes(), k).unwrap().mod_revision;
    }
    let mut l = s.create("/registry/leases/n1", b"0").unwrap().mod_revision;
    s.checkpoint().unwrap();
    let db = s.db_path().unwrap().to_path_buf();
    let wal = std::path::PathBuf::from(format!("{}-wal", db.display()));
    let stat = |p: &std::path::Path| std::fs::metadata(p).map(|m| (m.len(), m.modified().unwrap())).ok();
    let before = (stat(&db), stat(&wal));
    let compacted = s.compacted_revision();
    std::thread::sleep(Duration::from_millis(20));
    for i in 0..3000 {
        l = s
            .update("/registry/leases/n1", format!("{i}").as_bytes(), l)
            .unwrap()
            .mod_revision;
    }
    assert_eq!((stat(&db), stat(&wal)), before);
    assert_eq!(s.compacted_revision(), compacted, "no compaction from renewals");
    assert!(s.current_revision() > 3000);
}
