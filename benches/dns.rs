//! Cluster DNS throughput and latency, beside Debian's dnsmasq in the same
//! run: queries per second and p99 for cluster names and for cached
//! upstream names, and the memory 1,000 Services cost.
//!
//! rk3s's server runs in-process on 127.0.0.1 (the same `Resolver`, cache
//! and hickory-server loops the agent runs); dnsmasq answers the same names
//! from a hosts file on another loopback port and is also the upstream
//! rk3s forwards to. The load: `CLIENTS` concurrent UDP clients, one
//! question in flight each, for `SECONDS` per scenario.
//!
//! `cargo bench --bench dns` (needs `dnsmasq` on PATH; without it the
//! dnsmasq columns are skipped).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rk3s::dns::forward::{Forwarder, NetUpstream};
use rk3s::dns::hosts::HostTable;
use rk3s::dns::server::{self, Resolver, Tables};
use rk3s::dns::zone::{ServiceEntry, Zone};
use tokio_util::sync::CancellationToken;

const SERVICES: usize = 1000;
const CLIENTS: usize = 16;
const SECONDS: u64 = 3;
const UPSTREAM_NAMES: usize = 200;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn service(i: usize) -> Service {
    let ip = format!("10.43.{}.{}", 1 + i / 250, 1 + i % 250);
    Service {
        metadata: ObjectMeta {
            name: Some(format!("svc-{i}")),
            namespace: Some(format!("ns-{}", i % 20)),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some(ip.clone()),
            cluster_ips: Some(vec![ip]),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

fn cluster_name(i: usize) -> String {
    format!("svc-{i}.ns-{}.svc.cluster.local.", i % 20)
}

fn cluster_ip(i: usize) -> String {
    format!("10.43.{}.{}", 1 + i / 250, 1 + i % 250)
}

fn upstream_name(i: usize) -> String {
    format!("host-{i}.bench.test.")
}

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// dnsmasq in the foreground on 127.0.0.1:`port`, answering from a hosts
/// file only; killed on drop.
struct Dnsmasq {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Dnsmasq {
    fn start(port: u16) -> Option<Dnsmasq> {
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("hosts");
        let mut text = String::new();
        for i in 0..SERVICES {
            text.push_str(&format!(
                "{} {}\n",
                cluster_ip(i),
                cluster_name(i).trim_end_matches('.')
            ));
        }
        for i in 0..UPSTREAM_NAMES {
            text.push_str(&format!(
                "192.0.2.{} {}\n",
                1 + i % 250,
                upstream_name(i).trim_end_matches('.')
            ));
        }
        std::fs::write(&hosts, text).unwrap();
        let child = Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                "--user=root",
                "--pid-file=",
                "--cache-size=10000",
                "--local-ttl=30",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--addn-hosts={}", hosts.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        Some(Dnsmasq { child, _dir: dir })
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn one(sock: &tokio::net::UdpSocket, name: &Name, id: u16) -> Option<Duration> {
    let mut q = Message::new();
    q.set_id(id).set_recursion_desired(true);
    q.add_query(Query::query(name.clone(), RecordType::A));
    let bytes = q.to_vec().ok()?;
    let start = Instant::now();
    sock.send(&bytes).await.ok()?;
    let mut buf = [0u8; 1500];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(1), sock.recv(&mut buf))
            .await
            .ok()?
            .ok()?;
        let m = Message::from_vec(&buf[..n]).ok()?;
        if m.id() == id {
            return (!m.answers().is_empty()).then(|| start.elapsed());
        }
    }
}

/// Runs the load against `server`; (queries/s, p99, failures).
async fn load(server: SocketAddr, names: Arc<Vec<Name>>) -> (f64, Duration, usize) {
    let deadline = Instant::now() + Duration::from_secs(SECONDS);
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let names = names.clone();
        tasks.push(tokio::spawn(async move {
            let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            sock.connect(server).await.unwrap();
            let (mut lat, mut fails, mut i) = (Vec::new(), 0usize, c);
            while Instant::now() < deadline {
                match one(&sock, &names[i % names.len()], i as u16).await {
                    Some(d) => lat.push(d),
                    None => fails += 1,
                }
                i += CLIENTS;
            }
            (lat, fails)
        }));
    }
    let started = Instant::now();
    let mut all = Vec::new();
    let mut fails = 0;
    for t in tasks {
        let (l, f) = t.await.unwrap();
        all.extend(l);
        fails += f;
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort();
    let p99 = all
        .get(all.len().saturating_sub(1) * 99 / 100)
        .copied()
        .unwrap_or_default();
    (all.len() as f64 / secs, p99, fails)
}

fn names(f: impl Fn(usize) -> String, n: usize) -> Arc<Vec<Name>> {
    Arc::new((0..n).map(|i| Name::from_str(&f(i)).unwrap()).collect())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo test --all-targets` runs bench targets without `--bench`:
    // figures only mean something from `cargo bench --bench dns`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("dns bench: skipped outside `cargo bench --bench dns`");
        return;
    }
    let dnsmasq_port = free_port();
    let dnsmasq = Dnsmasq::start(dnsmasq_port);
    if dnsmasq.is_none() {
        println!("dnsmasq not found: its columns are skipped (apt-get install dnsmasq-base)");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Memory: the tables for 1,000 Services, measured as RSS growth.
    let before = rss_kib();
    let services: Vec<Service> = (0..SERVICES).map(service).collect();
    let zone = Zone::build(
        "cluster.local",
        IpAddr::V4(Ipv4Addr::new(10, 43, 0, 10)),
        1,
        services.iter().map(|s| ServiceEntry {
            service: s,
            slices: &[],
        }),
    );
    let after = rss_kib();
    let tables = Tables {
        zone,
        hosts: HostTable::default(),
        upstreams: vec![SocketAddr::from(([127, 0, 0, 1], dnsmasq_port))],
        stub_zones: Vec::new(),
    };
    let (_tx, rx) = tokio::sync::watch::channel(true);
    let resolver = Arc::new(Resolver::new(
        tables,
        rx,
        Forwarder::new(Arc::new(NetUpstream::default())),
    ));
    let (udp, tcp) = server::bind(None, IpAddr::V4(Ipv4Addr::LOCALHOST), 0)
        .await
        .unwrap();
    let ours = udp.local_addr().unwrap();
    let stop = CancellationToken::new();
    let serving = tokio::spawn(server::serve(resolver.clone(), udp, tcp, stop.clone()));

    let cluster = names(cluster_name, SERVICES);
    let upstream = names(upstream_name, UPSTREAM_NAMES);
    if dnsmasq.is_some() {
        // Warm rk3s's forward cache.
        for n in upstream.iter() {
            let _ = resolver.answer(n, RecordType::A, DNSClass::IN).await;
        }
    }
    println!("cluster DNS benchmark: {CLIENTS} concurrent UDP clients, {SECONDS} s per row, {SERVICES} Services");
    println!(
        "{:<34} {:>12} {:>10} {:>8}",
        "scenario", "queries/s", "p99", "failed"
    );
    let mut rows = Vec::new();
    let row = |label: &str, (qps, p99, fails): (f64, Duration, usize)| {
        println!(
            "{label:<34} {qps:>12.0} {:>8.0}µs {fails:>8}",
            p99.as_secs_f64() * 1e6
        );
        qps
    };
    let ours_cluster = row("rk3s, cluster names", load(ours, cluster.clone()).await);
    rows.push(ours_cluster);
    let dnsmasq_addr = SocketAddr::from(([127, 0, 0, 1], dnsmasq_port));
    if dnsmasq.is_some() {
        let ours_up = row(
            "rk3s, cached upstream names",
            load(ours, upstream.clone()).await,
        );
        let theirs_cluster = row(
            "dnsmasq, the same cluster names",
            load(dnsmasq_addr, cluster).await,
        );
        let theirs_up = row(
            "dnsmasq, the same upstream names",
            load(dnsmasq_addr, upstream).await,
        );
        println!(
            "ratio rk3s/dnsmasq queries/s: cluster names {:.2}, cached upstream names {:.2}",
            ours_cluster / theirs_cluster,
            ours_up / theirs_up
        );
    }
    println!(
        "memory: the zone for {SERVICES} Services grew RSS by {} KiB; bench process RSS {} KiB (forward cache: {} answers)",
        after.saturating_sub(before),
        rss_kib(),
        resolver.forwarder().cached()
    );
    stop.cancel();
    let _ = serving.await;
}
