//! Durability of the SQLite store: racing writers, `kill -9` in the middle of a
//! write load, compaction across a reopen, and a bounded file under churn.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

use rk3s::store::{ListOptions, SqliteStore, Store, StoreError, StoreOptions};

const CHILD_ENV: &str = "RK3S_STORE_CHILD";

fn all(s: &SqliteStore, prefix: &str) -> Vec<rk3s::store::Record> {
    s.list(&ListOptions {
        prefix: prefix.into(),
        ..Default::default()
    })
    .unwrap()
    .records
}

/// The writer half of `kill_9_loses_nothing_acknowledged`: it only runs when re-executed
/// by that test, creates then updates keys one after another, and prints an ack line
/// after each pair has returned.
#[test]
fn child_writer() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let s = SqliteStore::open(Path::new(&dir), StoreOptions::default()).unwrap();
    let mut out = std::io::stdout().lock();
    for i in 0.. {
        let key = format!("/k/{i:06}");
        let r = s.create(&key, format!("v{i}").as_bytes()).unwrap();
        s.update(&key, format!("u{i}").as_bytes(), r.mod_revision)
            .unwrap();
        writeln!(out, "ACK {i}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn kill_9_loses_nothing_acknowledged() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked: Option<usize> = None;
    for kill_after in [1usize, 37, 150, 400] {
        let mut child = Command::new(&exe)
            .args(["--exact", "child_writer", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = 0;
        while seen < kill_after {
            let line = lines.next().expect("the child stopped early").unwrap();
            if let Some(n) = line.strip_prefix("ACK ") {
                acked = Some(n.parse().unwrap());
                seen += 1;
            }
        }
        // SAFETY: kill(2) on the pid of our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        child.wait().unwrap();
        // Acks written before the kill but not yet read also count.
        for line in lines.map_while(|l| l.ok()) {
            if let Some(n) = line.strip_prefix("ACK ") {
                acked = Some(n.parse().unwrap());
            }
        }
        let last = acked.unwrap();
        let s = SqliteStore::open(dir.path(), StoreOptions::default()).unwrap();
        let records = all(&s, "/k/");
        // Every acknowledged pair is there, fully; at most the one in flight besides.
        for i in 0..=last {
            let r = s
                .get(&format!("/k/{i:06}"))
                .unwrap()
                .unwrap_or_else(|| panic!("acked key {i} lost"));
            assert_eq!(r.value, format!("u{i}").as_bytes());
        }
        assert!(
            records.len() == last + 1 || records.len() == last + 2,
            "{} keys after ack {last}",
            records.len()
        );
        if records.len() == last + 2 {
            let extra = &records[last + 1];
            assert_eq!(extra.key, format!("/k/{:06}", last + 1));
            let (v, u) = (format!("v{}", last + 1), format!("u{}", last + 1));
            assert!(extra.value == v.as_bytes() || extra.value == u.as_bytes());
        }
        // The next run continues after what is on disk.
        drop(s);
        let s = SqliteStore::open(dir.path(), StoreOptions::default()).unwrap();
        assert!(s.current_revision() >= 2 * (last as i64 + 1));
        for r in &records {
            s.delete(&r.key, None).unwrap();
        }
        acked = None;
    }
}

#[test]
fn racing_cas_updates_have_one_winner_per_round() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    const THREADS: usize = 6;
    const ROUNDS: i64 = 40;
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(SqliteStore::open(dir.path(), StoreOptions::default()).unwrap());
    s.create("/counter", b"0").unwrap();
    let barrier = Arc::new(Barrier::new(THREADS));
    let wins = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (s, barrier, wins) = (s.clone(), barrier.clone(), wins.clone());
            std::thread::spawn(move || {
                for round in 0..ROUNDS {
                    let base = s.get("/counter").unwrap().unwrap();
                    barrier.wait();
                    let n: i64 = String::from_utf8(base.value).unwrap().parse().unwrap();
                    assert_eq!(n, round);
                    match s.update(
                        "/counter",
                        (n + 1).to_string().as_bytes(),
                        base.mod_revision,
                    ) {
                        Ok(_) => {
                            wins.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(StoreError::Conflict { .. }) => {}
                        Err(e) => panic!("thread {t}: {e}"),
                    }
                    barrier.wait();
                    assert_eq!(
                        wins.load(Ordering::SeqCst) as i64,
                        round + 1,
                        "one winner per round"
                    );
                    barrier.wait();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let last = s.get("/counter").unwrap().unwrap();
    assert_eq!(last.value, ROUNDS.to_string().as_bytes());
    assert_eq!(last.mod_revision, 1 + ROUNDS);
    assert_eq!(s.current_revision(), 1 + ROUNDS);
}

#[test]
fn compaction_survives_reopen() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SqliteStore::open(dir.path(), StoreOptions::default()).unwrap();
        let mut r = s.create("/a", b"0").unwrap().mod_revision;
        for i in 1..20 {
            r = s
                .update("/a", i.to_string().as_bytes(), r)
                .unwrap()
                .mod_revision;
        }
        s.compact(15).unwrap();
    }
    let s = SqliteStore::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(s.compacted_revision(), 15);
    assert!(matches!(
        s.watch("/", 10),
        Err(StoreError::Compacted {
            requested: 10,
            compacted: 15
        })
    ));
    let at = s
        .list(&ListOptions {
            prefix: "/".into(),
            revision: Some(15),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(at.records[0].value, b"14");
    let mut rx = s.watch("/", 15).unwrap();
    let mut n = 0;
    while let Ok(ev) = rx.try_recv() {
        let ev = ev.unwrap();
        assert_eq!(ev.prev.unwrap().mod_revision, ev.revision - 1);
        n += 1;
    }
    assert_eq!(n, 5);
}

/// The 100k-object churn loop runs in `benches/store.rs`; the test runs
/// `RK3S_CHURN_N` (default 20000) create/delete pairs to keep debug builds quick.
#[test]
fn churn_leaves_a_small_file() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let n: usize = std::env::var("RK3S_CHURN_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path(), StoreOptions::default()).unwrap();
    let value = vec![b'x'; 512];
    for i in 0..n {
        let key = format!("/registry/pods/default/churn-{i}");
        s.create(&key, &value).unwrap();
        s.delete(&key, None).unwrap();
    }
    let size = s.disk_size();
    eprintln!("after {n} create/delete pairs: db+wal = {size} bytes");
    assert!(size < 5 << 20, "db+wal is {size} bytes after churn");
    assert!(all(&s, "/").is_empty());
}
