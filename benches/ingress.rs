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
///
/// nginx runs as one process (`master_process off; daemon off;`) in a
/// process group of its own, with the kernel told to kill it if the bench
/// dies (`PR_SET_PDEATHSIG`): a master with workers would leave its
/// workers running when the master alone is killed, which is how an
/// earlier version of this bench leaked an nginx worker. One process
/// serves exactly as one worker of `worker_processes 1` does; the master
/// only supervises. Drop kills the whole group and reaps it.
struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: signalling a process group we created; no memory involved.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Nginx {
    /// Processes whose command line names this nginx's directory.
    fn survivors(dir: &std::path::Path) -> Vec<u32> {
        let needle = dir.display().to_string();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains(&needle))
                    .unwrap_or(false)
            })
            .collect()
    }
}

fn nginx(backend: SocketAddr) -> Option<(Nginx, SocketAddr)> {
    use std::os::unix::process::CommandExt;
    let bin = ["/usr/sbin/nginx", "/usr/bin/nginx"].into_iter().find(|p| std::path::Path::new(p).exists())?;
    let dir = tempfile::Builder::new().prefix("rk3s-bench-nginx-").tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let d = dir.path().display();
    // `keepalive_requests` (default 1000) closes a client connection after
    // that many requests; the load generator's keep-alive connections make
    // far more, so nginx's would all have been closed a fraction of a
    // second into the run and every later request failed (the ~1.5 M
    // "errors" of the first version). The rk3s ingress has no such limit,
    // so nginx gets none either. The upstream keeps idle connections to
    // the backend (`keepalive`, HTTP/1.1, no `Connection: close`), as the
    // ingress pools its own.
    let conf = format!(
        "master_process off; daemon off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;\n\
         events {{ worker_connections 4096; }}\n\
         http {{ access_log off; keepalive_requests 1000000000; keepalive_timeout 75s;\n\
           client_body_temp_path {d}/b; proxy_temp_path {d}/p; fastcgi_temp_path {d}/f; uwsgi_temp_path {d}/u; scgi_temp_path {d}/s;\n\
           upstream backend {{ server {backend}; keepalive 64; keepalive_requests 1000000000; }}\n\
           server {{ listen 127.0.0.1:{port} backlog=4096; location / {{ proxy_pass http://backend; proxy_http_version 1.1;\n\
             proxy_set_header Connection \"\"; proxy_set_header Host $host; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; }} }} }}\n"
    );
    std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
    let mut cmd = Command::new(bin);
    cmd.args(["-p", &d.to_string(), "-c", &format!("{d}/nginx.conf")])
        .process_group(0);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().ok()?;
    let nginx = Nginx { child, dir };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    for _ in 0..50 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return Some((nginx, addr));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// One request; `Err` for a failed exchange or a status other than 200.
async fn one_request(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
) -> Result<(), ()> {
    let req = http::Request::get("/").header("host", "bench.local").body(Empty::new()).unwrap();
    let resp = sender.send_request(req).await.map_err(|_| ())?;
    let ok = resp.status() == 200;
    let body = resp.into_body().collect().await.map_err(|_| ())?;
    if ok && !body.to_bytes().is_empty() {
        Ok(())
    } else {
        Err(())
    }
}

async fn connect(
    addr: SocketAddr,
) -> Option<hyper::client::conn::http1::SendRequest<Empty<Bytes>>> {
    let s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.set_nodelay(true).ok()?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await.ok()?;
    tokio::spawn(conn);
    Some(sender)
}

/// What one load run measured.
struct Run {
    rps: f64,
    p99: Duration,
    ok: usize,
    errors: usize,
    /// Keep-alive connections the server closed, replaced by new ones.
    reconnects: usize,
}

impl Run {
    fn print(&self, who: &str, mode: &str) {
        println!(
            "{who:<13} {mode:<28} {:>9.0} req/s  p99 {:>7.2} ms  ok {:>8}  errors {:>6}  reconnects {}",
            self.rps,
            self.p99.as_secs_f64() * 1e3,
            self.ok,
            self.errors,
            self.reconnects
        );
    }
}

async fn load(addr: SocketAddr, keep_alive: bool) -> Run {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let (mut errors, mut reconnects) = (0, 0);
            let mut sender = None;
            while start.elapsed() < DURATION {
                let t = Instant::now();
                if sender.as_ref().is_some_and(|s: &hyper::client::conn::http1::SendRequest<_>| s.is_closed()) {
                    reconnects += 1;
                    sender = None;
                }
                if sender.is_none() {
                    sender = connect(addr).await;
                }
                let ok = match &mut sender {
                    Some(s) => one_request(s).await.is_ok(),
                    None => false,
                };
                if ok { lat.push(t.elapsed()) } else { errors += 1; sender = None }
                if !keep_alive {
                    sender = None;
                }
            }
            (lat, errors, reconnects)
        }));
    }
    let mut all = Vec::new();
    let (mut errors, mut reconnects) = (0, 0);
    for t in tasks {
        let (l, e, r) = t.await.unwrap();
        all.extend(l);
        errors += e;
        reconnects += r;
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort();
    let p99 = all.get(all.len() * 99 / 100).copied().unwrap_or_default();
    Run { rps: all.len() as f64 / elapsed, p99, ok: all.len(), errors, reconnects }
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
        let ours = load_rt.block_on(load(ingress_addr, keep_alive));
        ours.print("rk3s ingress", mode);
        if let Some((_, addr)) = &nginx {
            // Let the first run's TIME_WAIT sockets age a little.
            std::thread::sleep(Duration::from_secs(1));
            let theirs = load_rt.block_on(load(*addr, keep_alive));
            theirs.print("nginx", mode);
            if ours.errors > 0 || theirs.errors > 0 {
                println!("ratio rk3s/nginx ({mode}): not printed: a side answered errors, so the two did not serve the same requests");
            } else {
                println!(
                    "ratio rk3s/nginx ({mode}): {:.2} x req/s, {:.2} x p99",
                    ours.rps / theirs.rps,
                    ours.p99.as_secs_f64() / theirs.p99.as_secs_f64()
                );
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    if nginx.is_none() {
        println!("nginx not found: install nginx-light for the comparison");
    }
    if let Some((n, _)) = nginx {
        let dir = n.dir.path().to_path_buf();
        drop(n);
        let left = Nginx::survivors(&dir);
        println!("nginx processes left after the bench: {}", if left.is_empty() { "none".to_string() } else { format!("{left:?}") });
    }
    println!("RSS after the runs: {} KiB", rss_kib());
    stop.cancel();
    let _ = proxy_thread.join();
}
