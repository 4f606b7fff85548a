//! The ingress proxy beside Debian's nginx as a reverse proxy to the same
//! backend, in the same run, on loopback: requests per second and p99
//! latency with keep-alive connections and with a new connection per
//! request, and the process's RSS with 100 Ingresses routed.
//!
//! Each proxy gets one worker thread (nginx `worker_processes 1`, rk3s a
//! current-thread runtime); the load generator and the backend have their
//! own threads. Figures are printed, never asserted. Without nginx on PATH
//! only the ingress is measured.

use std::net::SocketAddr;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use rk3s::ingress::proxy::Proxy;
use rk3s::ingress::table::RouteTable;
use rk3s::svccache::{ServiceCache, Snapshot};
use serde_json::json;

const CONNECTIONS: usize = 16;
const DURATION: Duration = Duration::from_secs(4);

fn runtime(threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .unwrap()
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn objects(n: usize, backend: SocketAddr) -> (Vec<Ingress>, Vec<Service>, Vec<EndpointSlice>) {
    let mut ings = Vec::new();
    let mut svcs = Vec::new();
    let mut slices = Vec::new();
    for i in 0..n {
        ings.push(serde_json::from_value(json!({
            "metadata": {"name": format!("app{i}"), "namespace": "default", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"rules": [{"host": if i == 0 { "bench.local".to_string() } else { format!("app{i}.local") },
                "http": {"paths": [
                    {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": format!("app{i}"), "port": {"number": 80}}}},
                    {"path": "/api", "pathType": "Prefix", "backend": {"service": {"name": format!("app{i}"), "port": {"number": 80}}}}]}}]}
        })).unwrap());
        svcs.push(serde_json::from_value(json!({
            "metadata": {"name": format!("app{i}"), "namespace": "default"},
            "spec": {"ports": [{"port": 80, "targetPort": backend.port()}]}
        })).unwrap());
        slices.push(serde_json::from_value(json!({
            "metadata": {"name": format!("app{i}-x"), "namespace": "default", "labels": {"kubernetes.io/service-name": format!("app{i}")}},
            "addressType": "IPv4", "ports": [{"port": backend.port()}],
            "endpoints": [{"addresses": [backend.ip().to_string()]}]
        })).unwrap());
    }
    (ings, svcs, slices)
}

async fn backend() -> SocketAddr {
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "hello from the backend\n" }));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    addr
}

/// nginx and the directory holding its config (kept until the bench ends).
struct Nginx(Child, #[allow(dead_code)] tempfile::TempDir);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nginx(backend: SocketAddr) -> Option<(Nginx, SocketAddr)> {
    let bin = ["/usr/sbin/nginx", "/usr/bin/nginx"].into_iter().find(|p| std::path::Path::new(p).exists())?;
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let d = dir.path().display();
    let conf = format!(
        "worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;\n\
         events {{ worker_connections 1024; }}\n\
         http {{ access_log off; client_body_temp_path {d}/b; proxy_temp_path {d}/p; fastcgi_temp_path {d}/f; uwsgi_temp_path {d}/u; scgi_temp_path {d}/s;\n\
           upstream backend {{ server {backend}; keepalive 32; }}\n\
           server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://backend; proxy_http_version 1.1;\n\
             proxy_set_header Connection \"\"; proxy_set_header Host $host; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; }} }} }}\n"
    );
    std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
    let child = Command::new(bin)
        .args(["-p", &d.to_string(), "-c", &format!("{d}/nginx.conf"), "-g", "daemon off;"])
        .spawn()
        .ok()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    for _ in 0..50 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return Some((Nginx(child, dir), addr));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

async fn one_request(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
) -> bool {
    let req = http::Request::get("/").header("host", "bench.local").body(Empty::new()).unwrap();
    match sender.send_request(req).await {
        Ok(resp) => {
            let ok = resp.status() == 200;
            ok && resp.into_body().collect().await.is_ok()
        }
        Err(_) => false,
    }
}

async fn connect(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await.unwrap();
    tokio::spawn(conn);
    sender
}

/// Returns (requests/s, p99 latency, errors).
async fn load(addr: SocketAddr, keep_alive: bool) -> (f64, Duration, usize) {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            let mut sender = if keep_alive { Some(connect(addr).await) } else { None };
            while start.elapsed() < DURATION {
                let t = Instant::now();
                let ok = match &mut sender {
                    Some(s) => one_request(s).await,
                    None => one_request(&mut connect(addr).await).await,
                };
                if ok { lat.push(t.elapsed()) } else { errors += 1 }
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        all.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort();
    let p99 = all.get(all.len() * 99 / 100).copied().unwrap_or_default();
    (all.len() as f64 / elapsed, p99, errors)
}

fn main() {
    // `cargo test --all-targets` runs bench targets without `--bench`:
    // figures only mean something from `cargo bench --bench ingress`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("ingress bench: skipped outside `cargo bench --bench ingress`");
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let backend_rt = runtime(1);
    let backend = backend_rt.block_on(backend());
    let rss_before = rss_kib();
    let proxy_rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (ings, svcs, slices) = objects(100, backend);
    let (tx, cache) = ServiceCache::manual();
    tx.send_replace(Arc::new(Snapshot::from_objects(svcs, slices)));
    let proxy = Arc::new(Proxy::new(cache, None));
    proxy.set_table(RouteTable::build(ings.iter()));
    let listener = proxy_rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let ingress_addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let p = proxy.clone();
    let s = stop.clone();
    let proxy_thread = std::thread::spawn(move || {
        proxy_rt.block_on(rk3s::ingress::listener::serve(listener, p, None, s));
    });
    println!("ingress bench: {CONNECTIONS} connections, {DURATION:?} per run, loopback, one proxy thread each");
    println!(
        "RSS with 100 Ingresses routed (bench process: proxy + tables + service cache + backend): {} KiB ({} KiB above the backend alone)",
        rss_kib(),
        rss_kib().saturating_sub(rss_before)
    );
    let nginx = nginx(backend);
    let load_rt = runtime(1);
    for keep_alive in [true, false] {
        let mode = if keep_alive { "keep-alive" } else { "new connection per request" };
        let (rps, p99, err) = load_rt.block_on(load(ingress_addr, keep_alive));
        println!("rk3s ingress  {mode:<28} {rps:>9.0} req/s  p99 {:>7.2} ms  errors {err}", p99.as_secs_f64() * 1e3);
        if let Some((_, addr)) = &nginx {
            let (nrps, np99, nerr) = load_rt.block_on(load(*addr, keep_alive));
            println!("nginx         {mode:<28} {nrps:>9.0} req/s  p99 {:>7.2} ms  errors {nerr}", np99.as_secs_f64() * 1e3);
            println!("ratio rk3s/nginx ({mode}): {:.2} x req/s, {:.2} x p99", rps / nrps, p99.as_secs_f64() / np99.as_secs_f64());
        }
    }
    if nginx.is_none() {
        println!("nginx not found: install nginx-light for the comparison");
    }
    println!("RSS after the runs: {} KiB", rss_kib());
    stop.cancel();
    let _ = proxy_thread.join();
}
