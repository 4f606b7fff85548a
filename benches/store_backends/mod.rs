//! The same load on both backends, each in a child process of its own (so
//! that each RSS figure is that backend's alone), printed side by side.
//!
//! The parent re-executes this bench with `--only sqlite` or `--only etcd`;
//! the child prints one `FIGURES k=v ...` line. The etcd figures are the
//! rk3s client process plus the etcd server (a private single member on
//! loopback started by `LocalEtcd`, fsync on as in production).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rk3s::store::etcd::LocalEtcd;
use rk3s::store::{EtcdOptions, EtcdStore, ListOptions, SqliteStore, Store, StoreOptions};

use super::{pct, proc_field};

const N: usize = 10_000;
const WATCHED: usize = 1_000;

/// How long after each of `count` updates returned its watcher received it:
/// pods `p00000`.. (which must exist) updated to `value` one by one, 200 µs
/// apart, under one watch of `/registry/pods/`.
pub fn watch_delivery(store: &dyn Store, value: &[u8], count: usize) -> Vec<Duration> {
    let mut rx = store.watch("/registry/pods/", store.current_revision()).unwrap();
    let receiver = std::thread::spawn(move || {
        let mut seen = Vec::new();
        while let Some(Ok(ev)) = rx.blocking_recv() {
            seen.push((ev.revision, Instant::now()));
            if seen.len() == count {
                break;
            }
        }
        seen
    });
    let mut returned = std::collections::HashMap::new();
    for i in 0..count {
        let key = format!("/registry/pods/default/p{i:05}");
        let cur = store.get(&key).unwrap().unwrap();
        let r = store.update(&key, value, cur.mod_revision).unwrap();
        returned.insert(r.mod_revision, Instant::now());
        std::thread::sleep(Duration::from_micros(200));
    }
    let seen = receiver.join().unwrap();
    seen.iter()
        .map(|(r, at)| at.saturating_duration_since(returned[r]))
        .collect()
}

/// Runs in the child: the load on one backend, one line of figures.
pub fn child(backend: &str) {
    let value = vec![b'x'; 512];
    let dir = tempfile::tempdir().unwrap();
    let (store, etcd): (Box<dyn Store>, Option<LocalEtcd>) = match backend {
        "sqlite" => (
            Box::new(SqliteStore::open(dir.path(), StoreOptions::default()).unwrap()),
            None,
        ),
        _ => {
            let etcd = LocalEtcd::start().expect("start etcd");
            let store = EtcdStore::connect(EtcdOptions {
                compact_interval: None,
                ..EtcdOptions::new(vec![etcd.endpoint.clone()])
            })
            .unwrap();
            (Box::new(store), Some(etcd))
        }
    };
    let mut f = BTreeMap::new();
    let t = Instant::now();
    for i in 0..N {
        store
            .create(&format!("/registry/pods/default/p{i:05}"), &value)
            .unwrap();
    }
    f.insert("creates_per_s", format!("{:.0}", N as f64 / t.elapsed().as_secs_f64()));
    let mut gets = Vec::with_capacity(N);
    for i in 0..N {
        let key = format!("/registry/pods/default/p{:05}", (i * 7919) % N);
        let t = Instant::now();
        store.get(&key).unwrap().unwrap();
        gets.push(t.elapsed());
    }
    f.insert("get_p50_us", us(pct(&mut gets, 0.5)));
    f.insert("get_p99_us", us(pct(&mut gets, 0.99)));
    let t = Instant::now();
    let all = store
        .list(&ListOptions {
            prefix: "/registry/pods/".into(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(all.records.len(), N);
    f.insert("list_10k_ms", format!("{}", t.elapsed().as_millis()));

    // Watch delivery: from a write returning to the watcher receiving it.
    let mut lat = watch_delivery(&*store, &value, WATCHED);
    f.insert("watch_p50_us", us(pct(&mut lat, 0.5)));
    f.insert("watch_p99_us", us(pct(&mut lat, 0.99)));
    let own = proc_field("/proc/self/status", "VmRSS:");
    let server = etcd
        .as_ref()
        .map(|e| proc_field(&format!("/proc/{}/status", e.pid()), "VmRSS:"))
        .unwrap_or(0);
    f.insert("rss_rk3s_kb", own.to_string());
    f.insert("rss_etcd_kb", server.to_string());
    f.insert("rss_total_kb", (own + server).to_string());
    let line: Vec<String> = f.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("FIGURES {}", line.join(" "));
    drop(store);
    drop(etcd);
}

fn us(d: Duration) -> String {
    format!("{}", d.as_micros())
}

/// Runs in the parent: both children, then the table.
pub fn side_by_side() {
    let exe = std::env::current_exe().unwrap();
    let mut cols = Vec::new();
    for backend in ["sqlite", "etcd"] {
        if backend == "etcd" && !LocalEtcd::available() {
            println!("etcd backend skipped: no etcd binary (apt-get install -y etcd-server)");
            continue;
        }
        let out = std::process::Command::new(&exe)
            .args(["--bench", "--only", backend])
            .output()
            .expect("run the bench child");
        let text = String::from_utf8_lossy(&out.stdout);
        let Some(line) = text.lines().find_map(|l| l.strip_prefix("FIGURES ")) else {
            println!(
                "{backend} backend failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            continue;
        };
        let figures: BTreeMap<String, String> = line
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        cols.push((backend, figures));
    }
    println!("== both backends, same load: {N} creates of 512-byte values, {WATCHED} watched updates ==");
    let rows = [
        ("creates/s (sequential)", "creates_per_s"),
        ("get p50 (µs)", "get_p50_us"),
        ("get p99 (µs)", "get_p99_us"),
        ("list 10k (ms)", "list_10k_ms"),
        ("watch delivery p50 (µs)", "watch_p50_us"),
        ("watch delivery p99 (µs)", "watch_p99_us"),
        ("RSS rk3s process (kB)", "rss_rk3s_kb"),
        ("RSS etcd server (kB)", "rss_etcd_kb"),
        ("RSS total (kB)", "rss_total_kb"),
    ];
    print!("{:<26}", "");
    for (b, _) in &cols {
        print!("{b:>12}");
    }
    println!();
    for (label, key) in rows {
        print!("{label:<26}");
        for (_, f) in &cols {
            print!("{:>12}", f.get(key).map(String::as_str).unwrap_or("-"));
        }
        println!();
    }
}
