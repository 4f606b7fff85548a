//! Figures for the SQLite store, then the same load on both backends (SQLite
//! and etcd through `EtcdStore`) side by side (see `store_backends`).
//!
//! `cargo bench --bench store`. Env: `RK3S_BENCH_IDLE_SECS` (default 60),
//! `RK3S_BENCH_CHURN` (default 100000 create/delete pairs).

use std::time::{Duration, Instant};

use rk3s::store::{ListOptions, SqliteStore, Store, StoreOptions};

#[path = "store_backends/mod.rs"]
mod backends;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p) as usize]
}

fn proc_field(file: &str, field: &str) -> u64 {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

fn main() {
    // `cargo test --all-targets` runs bench targets without `--bench`: the
    // figures only mean something from `cargo bench` (release build).
    if !std::env::args().any(|a| a == "--bench") {
        println!("store bench: skipped outside `cargo bench --bench store`");
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--only") {
        backends::child(&args[i + 1]);
        return;
    }
    let value = vec![b'x'; 512];
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), StoreOptions::default()).unwrap();
    println!("== rk3s store, in-process, SQLite WAL synchronous=FULL, 512-byte values ==");

    let n = 10_000;
    let t = Instant::now();
    for i in 0..n {
        store
            .create(&format!("/registry/pods/default/p{i:05}"), &value)
            .unwrap();
    }
    let creates_per_s = n as f64 / t.elapsed().as_secs_f64();
    println!("creates/s (sequential, one fsync each): {creates_per_s:.0}");

    let mut gets = Vec::with_capacity(n);
    for i in 0..n {
        let key = format!("/registry/pods/default/p{:05}", (i * 7919) % n);
        let t = Instant::now();
        store.get(&key).unwrap().unwrap();
        gets.push(t.elapsed());
    }
    let (get_p50, get_p99) = (pct(&mut gets, 0.5), pct(&mut gets, 0.99));
    println!("get p50 {get_p50:?}, p99 {get_p99:?}");

    let full = ListOptions {
        prefix: "/registry/pods/".into(),
        ..Default::default()
    };
    let t = Instant::now();
    let page = store.list(&full).unwrap();
    println!(
        "list of {} objects (all, latest): {:?}",
        page.records.len(),
        t.elapsed()
    );
    let paged = ListOptions {
        limit: Some(500),
        ..full.clone()
    };
    let t = Instant::now();
    let page = store.list(&paged).unwrap();
    println!(
        "list first page of 500 at 10k objects (with remaining={}): {:?}",
        page.remaining,
        t.elapsed()
    );
    let at = ListOptions {
        revision: Some(page.revision),
        start_after: Some(page.records[499].key.clone()),
        ..paged
    };
    let t = Instant::now();
    store.list(&at).unwrap();
    println!(
        "list next page of 500 at a past revision (history scan): {:?}",
        t.elapsed()
    );
    println!(
        "RSS at 10k objects: {} kB",
        proc_field("/proc/self/status", "VmRSS:")
    );

    // Watch delivery: time from a write returning to the watcher receiving its event.
    let mut lat = backends::watch_delivery(&store, &value, 1000);
    println!(
        "watch delivery after the write returned: p50 {:?}, p99 {:?}",
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99)
    );

    let idle = env_num("RK3S_BENCH_IDLE_SECS", 60);
    store.checkpoint().unwrap();
    let before = (
        proc_field("/proc/self/io", "write_bytes:"),
        store.disk_size(),
    );
    std::thread::sleep(Duration::from_secs(idle));
    let after = (
        proc_field("/proc/self/io", "write_bytes:"),
        store.disk_size(),
    );
    println!(
        "idle {idle} s with the store open: {} bytes written (/proc/self/io), db+wal {} -> {} bytes",
        after.0 - before.0,
        before.1,
        after.1
    );
    drop(store);

    let churn = env_num("RK3S_BENCH_CHURN", 100_000);
    let dir2 = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(
        dir2.path(),
        StoreOptions {
            sync: rk3s::store::SyncMode::Normal,
            ..Default::default()
        },
    )
    .unwrap();
    let t = Instant::now();
    for i in 0..churn {
        let key = format!("/registry/pods/default/churn-{i}");
        s.create(&key, &value).unwrap();
        s.delete(&key, None).unwrap();
    }
    println!(
        "churn: {churn} create/delete pairs (synchronous=NORMAL to save time) in {:?}; db+wal after: {} bytes",
        t.elapsed(),
        s.disk_size()
    );

    backends::side_by_side();
}
