//! Figures for the service proxy:
//! - connections per second and p99 connect+first-byte latency through a
//!   ClusterIP (the proxy's DNAT) beside straight to the pod IP, as a ratio;
//! - the time to apply one endpoint change with 100 and with 1,000
//!   Services (5 endpoints each, so 5,000 at 1,000) present: the rule
//!   computation alone (discarding writers) and through the real kernel
//!   (`nft` for structure, the netlink element batch an endpoint change
//!   is). It should stay flat as the number of Services grows.
//!
//! `sudo cargo bench --bench proxy` (root for the namespaces and `nft`;
//! without root only the computation figures print). Env:
//! `RK3S_BENCH_CONNS` (default 2000), `RK3S_BENCH_CHANGES` (default 30).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::Event;
use rk3s::hostnet::netns;
use rk3s::hostnet::nft::{Firewall, NftError, NftFirewall};
use rk3s::proxy::drift::GenerationProbe;
use rk3s::proxy::elements::{ElementError, ElementOp, ElementWriter};
use rk3s::proxy::{NetlinkElements, NodeView, Syncer};
use rk3s::svccache::Index;
use serde_json::json;

/// A firewall that accepts every script and applies none: the cost of
/// building the scripts alone (the crate's recording fake is test-only).
struct DiscardFirewall;

#[async_trait::async_trait]
impl Firewall for DiscardFirewall {
    async fn apply(&self, _script: &str) -> Result<(), NftError> {
        Ok(())
    }
}

#[async_trait::async_trait]
impl ElementWriter for DiscardFirewall {
    async fn apply(&self, _table: &str, _ops: &[ElementOp]) -> Result<(), ElementError> {
        Ok(())
    }
}

/// The kernel's share of a change: times each element batch.
struct TimedElements {
    inner: NetlinkElements,
    times: std::sync::Mutex<Vec<Duration>>,
}

#[async_trait::async_trait]
impl ElementWriter for TimedElements {
    async fn apply(&self, table: &str, ops: &[ElementOp]) -> Result<(), ElementError> {
        let t = Instant::now();
        let r = self.inner.apply(table, ops).await;
        self.times.lock().unwrap().push(t.elapsed());
        r
    }
}

#[async_trait::async_trait]
impl GenerationProbe for TimedElements {
    async fn generation(&self) -> Result<u32, ElementError> {
        self.inner.generation().await
    }
}

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces joined by a veth pair: a node (10.42.0.1) and a pod
/// (10.42.0.5); removed on drop.
struct Pair {
    node: String,
    pod: String,
}

impl Pair {
    fn new() -> Self {
        let id = std::process::id();
        let pair = Pair {
            node: format!("rk3s-pxb-{id}-node"),
            pod: format!("rk3s-pxb-{id}-pod"),
        };
        ip(&["netns", "add", &pair.node]);
        ip(&["netns", "add", &pair.pod]);
        let (a, b) = (
            format!("pxb{}a", id % 100_000),
            format!("pxb{}b", id % 100_000),
        );
        ip(&[
            "link", "add", &a, "netns", &pair.node, "type", "veth", "peer", "name", &b, "netns",
            &pair.pod,
        ]);
        for (ns, dev, addr) in [
            (&pair.node, &a, "10.42.0.1/24"),
            (&pair.pod, &b, "10.42.0.5/24"),
        ] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        // ClusterIPs are routed like any address off the node (to the
        // pod link here); the DNAT then picks the real destination.
        ip(&["-n", &pair.node, "route", "add", "10.43.0.0/16", "dev", &a]);
        pair
    }

    fn path(ns: &str) -> PathBuf {
        PathBuf::from(format!("/var/run/netns/{ns}"))
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.node, &self.pod] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn service(i: usize) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": format!("svc{i}"), "namespace": "bench", "resourceVersion": "1"},
        "spec": {"clusterIP": format!("10.43.{}.{}", i / 250, i % 250 + 1),
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
    }))
    .unwrap()
}

fn slice(i: usize, version: usize, endpoints: usize) -> EndpointSlice {
    let eps: Vec<_> = (0..endpoints)
        .map(|e| {
            let n = i * 5 + e + version;
            json!({"addresses": [format!("10.42.{}.{}", n / 250 % 250, n % 250 + 1)],
                   "nodeName": "node", "conditions": {"ready": true}})
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": format!("svc{i}-1"), "namespace": "bench", "resourceVersion": version.to_string(),
                     "labels": {"kubernetes.io/service-name": format!("svc{i}")}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": eps,
    }))
    .unwrap()
}

fn node_view() -> NodeView {
    NodeView {
        node_name: "node".into(),
        node_ips: vec![Ipv4Addr::new(10, 42, 0, 1)],
        cluster_cidr: "10.42.0.0/16".parse().unwrap(),
    }
}

/// Full sync of `services` Services, then `changes` single-endpoint
/// changes to one Service; returns the full time and the change times.
async fn change_cost(
    firewall: Arc<dyn Firewall>,
    elements: Arc<dyn ElementWriter>,
    probe: Option<Arc<dyn GenerationProbe>>,
    services: usize,
    changes: usize,
) -> (Duration, Vec<Duration>, Vec<Duration>) {
    let mut index = Index::default();
    index.apply_service(Event::Init);
    index.apply_slice(Event::Init);
    for i in 0..services {
        index.apply_service(Event::InitApply(service(i)));
        index.apply_slice(Event::InitApply(slice(i, 1, 5)));
    }
    index.apply_service(Event::InitDone);
    index.apply_slice(Event::InitDone);
    let mut syncer = Syncer::new(firewall, elements, node_view());
    if let Some(p) = probe {
        syncer = syncer.with_probe(p);
    }
    let t = Instant::now();
    syncer.sync(&index.snapshot()).await.expect("full sync");
    let full = t.elapsed();
    let mut times = Vec::new();
    for c in 0..changes {
        // Alternate one Service between 5 and 4 endpoints.
        let target = services / 2;
        index.apply_slice(Event::Apply(slice(
            target,
            c + 2,
            if c % 2 == 0 { 4 } else { 5 },
        )));
        // The snapshot is the service cache's work (once per change for
        // every reader); the proxy's cost starts here.
        let snap = index.snapshot();
        let t = Instant::now();
        let stats = syncer.sync(&snap).await.expect("incremental sync");
        times.push(t.elapsed());
        assert!(!stats.full && stats.services_changed == 1);
    }
    // The periodic check on an idle node: one read of the generation.
    let snap = index.snapshot();
    let mut checks = Vec::new();
    for _ in 0..changes {
        let t = Instant::now();
        let repaired = syncer.check(&snap).await.expect("check");
        checks.push(t.elapsed());
        assert!(repaired.is_none(), "an idle check replaced the table");
    }
    (full, times, checks)
}

fn percentile(times: &mut [Duration], p: f64) -> Duration {
    times.sort();
    times[((times.len() as f64 * p).ceil() as usize).clamp(1, times.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Connect, read one byte, close: `n` times; (conns/s, p99).
fn connect_loop(addr: SocketAddr, n: usize) -> (f64, Duration) {
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
        let mut b = [0u8; 1];
        s.read_exact(&mut b).expect("first byte");
        lat.push(t.elapsed());
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    (rate, percentile(&mut lat, 0.99))
}

async fn datapath(conns: usize) {
    let pair = Pair::new();
    let node = Pair::path(&pair.node);
    let listener = netns::run_in(Some(Pair::path(&pair.pod)), || {
        TcpListener::bind("0.0.0.0:8080")
    })
    .await
    .expect("listen in the pod");
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let _ = s.write_all(b"x");
        }
    });
    let mut index = Index::default();
    index.apply_service(Event::Init);
    index.apply_slice(Event::Init);
    index.apply_service(Event::InitApply(service(0)));
    let one: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "svc0-1", "namespace": "bench", "labels": {"kubernetes.io/service-name": "svc0"}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["10.42.0.5"], "nodeName": "node", "conditions": {"ready": true}}],
    }))
    .unwrap();
    index.apply_slice(Event::InitApply(one));
    index.apply_service(Event::InitDone);
    index.apply_slice(Event::InitDone);
    let mut syncer = Syncer::new(
        Arc::new(NftFirewall::new(Some(node.clone()))),
        Arc::new(NetlinkElements::new(Some(node.clone()))),
        node_view(),
    );
    syncer.sync(&index.snapshot()).await.expect("rules");
    let direct: SocketAddr = "10.42.0.5:8080".parse().unwrap();
    let cluster: SocketAddr = "10.43.0.1:80".parse().unwrap();
    let (d, c) = netns::run_in(Some(node), move || {
        let _ = connect_loop(direct, 100); // warm-up
        Ok((connect_loop(direct, conns), connect_loop(cluster, conns)))
    })
    .await
    .expect("client in the node");
    println!("connections, {conns} each (connect + first byte + close, one at a time):");
    println!(
        "  straight to the pod IP : {:>8.0} conn/s   p99 {:>6.3} ms",
        d.0,
        ms(d.1)
    );
    println!(
        "  through the ClusterIP  : {:>8.0} conn/s   p99 {:>6.3} ms",
        c.0,
        ms(c.1)
    );
    println!(
        "  ratio ClusterIP/direct : {:>8.2} (rate)   {:.2} (p99)",
        c.0 / d.0,
        ms(c.1) / ms(d.1)
    );

    println!("one endpoint change, real nft in a namespace (median / p99 of the changes):");
    let changes = env_num("RK3S_BENCH_CHANGES", 30);
    for services in [100, 1000] {
        let fw = Arc::new(NftFirewall::new(Some(Pair::path(&pair.node))));
        let el = Arc::new(TimedElements {
            inner: NetlinkElements::new(Some(Pair::path(&pair.node))),
            times: Default::default(),
        });
        let probe: Arc<dyn GenerationProbe> = el.clone();
        let (full, mut t, mut checks) =
            change_cost(fw, el.clone(), Some(probe), services, changes).await;
        let mut batch = el.times.lock().unwrap().clone();
        println!(
            "  {services:>5} Services, {:>5} endpoints: change {:>6.2} ms / {:>6.2} ms, of which the netlink batch {:>5.2} ms / {:>5.2} ms   (first full replace {:>7.1} ms)",
            services * 5,
            ms(percentile(&mut t, 0.5)),
            ms(percentile(&mut t, 0.99)),
            ms(percentile(&mut batch, 0.5)),
            ms(percentile(&mut batch, 0.99)),
            ms(full)
        );
        println!(
            "  {services:>5} Services: idle periodic check (one generation read) {:>6.3} ms / {:>6.3} ms",
            ms(percentile(&mut checks, 0.5)),
            ms(percentile(&mut checks, 0.99)),
        );
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // `cargo test --all-targets` runs bench targets without `--bench`:
    // figures only mean something from `cargo bench --bench proxy`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("proxy bench: skipped outside `cargo bench --bench proxy`");
        return;
    }
    let changes = env_num("RK3S_BENCH_CHANGES", 30);
    println!("one endpoint change, rule computation only (recording firewall; median / p99):");
    for services in [100, 1000] {
        let (full, mut t, _) = change_cost(
            Arc::new(DiscardFirewall),
            Arc::new(DiscardFirewall),
            None,
            services,
            changes,
        )
        .await;
        println!(
            "  {services:>5} Services, {:>5} endpoints: change {:>6.3} ms / {:>6.3} ms   (first full {:>7.1} ms)",
            services * 5,
            ms(percentile(&mut t, 0.5)),
            ms(percentile(&mut t, 0.99)),
            ms(full)
        );
    }
    if !is_root() {
        println!("(not root: the datapath and real-nft figures need root; run with sudo)");
        return;
    }
    datapath(env_num("RK3S_BENCH_CONNS", 2000)).await;
}
