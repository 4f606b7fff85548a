//! The reverse proxy: one request in, routed by the current table, sent
//! straight to a ready endpoint of the target Service over HTTP/1.1, the
//! response streamed back.
//!
//! - Endpoints are tried from a rotating start; a refused or timed-out
//!   connect moves on to the next endpoint (the request has not been sent
//!   yet, so any method may be retried); once sent, a failure is a 502.
//! - Backend connections are kept alive in a small per-endpoint pool and
//!   reused only when hyper reports them idle and open; a pooled
//!   connection that turns out closed before the request was written is
//!   replaced by a fresh one.
//! - Bodies are never collected: the client's body is the backend
//!   request's body and the backend's response body is the client's, frame
//!   by frame, so memory per request is bounded whatever the size.
//! - `Upgrade` requests (websockets, h2c, …) get the backend's 101, then
//!   both upgraded connections are spliced.
//!
//! Invariant: the table is read once per request (an `Arc` clone), so a
//! configuration change never affects a request or connection in flight.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use super::backends;
use crate::svccache::ServiceCache;
use super::pages;
use super::table::{normalize_host, RouteTable, ServiceRef, Target};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// Paths under this prefix are the ingress's own (the dashboard), on every host.
pub const RESERVED_PREFIX: &str = "/.rk3s/";

#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// Connecting to one endpoint.
    pub connect: Duration,
    /// From the request sent to the response headers.
    pub response_headers: Duration,
    /// How long an idle pooled backend connection is kept.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(3),
            response_headers: Duration::from_secs(60),
            idle: Duration::from_secs(30),
        }
    }
}

/// Idle keep-alive connections to backends, by endpoint.
#[derive(Default)]
struct Pool {
    idle: Mutex<HashMap<SocketAddr, Vec<(Instant, SendRequest<ProxyBody>)>>>,
}

const MAX_IDLE_PER_ENDPOINT: usize = 64;

impl Pool {
    fn take(&self, addr: SocketAddr, max_idle: Duration) -> Option<SendRequest<ProxyBody>> {
        let mut idle = self.idle.lock().expect("the lock is never poisoned");
        let list = idle.get_mut(&addr)?;
        while let Some((since, sender)) = list.pop() {
            if since.elapsed() < max_idle && sender.is_ready() && !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    fn put(&self, addr: SocketAddr, sender: SendRequest<ProxyBody>) {
        let mut idle = self.idle.lock().expect("the lock is never poisoned");
        let list = idle.entry(addr).or_default();
        if list.len() < MAX_IDLE_PER_ENDPOINT {
            list.push((Instant::now(), sender));
        }
    }
}

/// What every connection of both listeners shares.
pub struct Proxy {
    table: RwLock<Arc<RouteTable>>,
    services: ServiceCache,
    next: AtomicUsize,
    pool: Pool,
    pub timeouts: Timeouts,
    /// Serves [`RESERVED_PREFIX`] (the dashboard), when set.
    reserved: Option<axum::Router>,
}

/// How the client reached us, for `X-Forwarded-*`.
#[derive(Clone, Copy, Debug)]
pub struct ClientInfo {
    pub peer: SocketAddr,
    pub https: bool,
}

fn full(resp: Response<http_body_util::Full<Bytes>>) -> Response<ProxyBody> {
    resp.map(|b| b.map_err(|never| match never {}).boxed_unsync())
}

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

/// Removes hop-by-hop headers, including those `Connection` names.
fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        if !(keep_upgrade && n == header::UPGRADE) {
            headers.remove(n);
        }
    }
    for h in HOP_BY_HOP {
        headers.remove(h);
    }
    if !keep_upgrade {
        headers.remove(header::UPGRADE);
    }
}

/// Adds `X-Forwarded-For/-Proto/-Host` (appending to a client's chain).
pub fn add_forwarded(headers: &mut HeaderMap, client: ClientInfo, host: &str) {
    let ip = match client.peer.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    let chain = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.trim().is_empty() => format!("{prev}, {ip}"),
        _ => ip.to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&chain) {
        headers.insert("x-forwarded-for", v);
    }
    let proto = if client.https { "https" } else { "http" };
    headers.insert("x-forwarded-proto", HeaderValue::from_static(proto));
    if let Ok(v) = HeaderValue::from_str(host) {
        headers.insert("x-forwarded-host", v);
    }
    if let Ok(v) = HeaderValue::from_str(&ip.to_string()) {
        headers.insert("x-real-ip", v);
    }
}

fn is_upgrade(req: &Request<Incoming>) -> bool {
    req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")))
}

impl Proxy {
    pub fn new(services: ServiceCache, reserved: Option<axum::Router>) -> Self {
        Proxy {
            table: RwLock::new(Arc::new(RouteTable::default())),
            services,
            next: AtomicUsize::new(0),
            pool: Pool::default(),
            timeouts: Timeouts::default(),
            reserved,
        }
    }

    /// Swaps in a new table; requests already routed keep the old one.
    pub fn set_table(&self, table: RouteTable) {
        *self.table.write().expect("the lock is never poisoned") = Arc::new(table);
    }

    pub fn table(&self) -> Arc<RouteTable> {
        self.table.read().expect("the lock is never poisoned").clone()
    }

    /// Handles one request from a client.
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>, client: ClientInfo) -> Response<ProxyBody> {
        let host = req
            .uri()
            .authority()
            .map(|a| a.as_str().to_string())
            .or_else(|| {
                req.headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string)
            })
            .unwrap_or_default();
        let path = req.uri().path().to_string();
        if path.starts_with(RESERVED_PREFIX) {
            if let Some(router) = self.reserved.clone() {
                use tower::ServiceExt as _;
                let resp = router
                    .oneshot(req.map(axum::body::Body::new))
                    .await
                    .unwrap_or_else(|never| match never {});
                return resp.map(|b| b.map_err(BoxError::from).boxed_unsync());
            }
        }
        let table = self.table();
        let (ingress, target) = match table.route(&host, &path) {
            Target::Route(r) => (r.ingress.clone(), r.backend.clone()),
            Target::Default { ingress, backend } => (ingress.to_string(), backend.clone()),
            Target::None => return full(pages::no_route(&normalize_host(&host), &path)),
        };
        drop(table);
        let endpoints = match backends::resolve(&self.services.snapshot(), &target) {
            Ok(e) => e,
            Err(why) => return full(pages::unavailable(&ingress, &why.to_string())),
        };
        self.forward(req, client, &host, &target, &endpoints).await
    }

    async fn connect(&self, addr: SocketAddr) -> Result<SendRequest<ProxyBody>, String> {
        let stream = tokio::time::timeout(self.timeouts.connect, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| format!("connecting to {addr} timed out"))?
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake with {addr}: {e}"))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(%addr, "backend connection ended: {e}");
            }
        });
        Ok(sender)
    }

    async fn forward(
        self: &Arc<Self>,
        req: Request<Incoming>,
        client: ClientInfo,
        host: &str,
        target: &ServiceRef,
        endpoints: &[SocketAddr],
    ) -> Response<ProxyBody> {
        let service = format!("{}/{}", target.namespace, target.name);
        let upgrade = is_upgrade(&req);
        let (mut parts, body) = req.into_parts();
        let client_upgrade = if upgrade {
            Some(hyper::upgrade::on(Request::from_parts(parts.clone(), ())))
        } else {
            None
        };
        strip_hop_by_hop(&mut parts.headers, upgrade);
        if upgrade {
            parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        if !parts.headers.contains_key(header::HOST) {
            if let Ok(v) = HeaderValue::from_str(host) {
                parts.headers.insert(header::HOST, v);
            }
        }
        add_forwarded(&mut parts.headers, client, host);
        parts.uri = parts
            .uri
            .path_and_query()
            .map(|pq| Uri::from(pq.clone()))
            .unwrap_or_else(|| Uri::from_static("/"));
        parts.version = Version::HTTP_11;
        let mut outgoing = Some(Request::from_parts(parts, body.map_err(BoxError::from).boxed_unsync()));

        // Pick a connection: a pooled one, else the first endpoint that accepts.
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut last_error = String::from("no endpoint accepted a connection");
        let mut response = None;
        for i in 0..endpoints.len() {
            let addr = endpoints[(start + i) % endpoints.len()];
            let mut attempts = 0;
            loop {
                attempts += 1;
                let (mut sender, pooled) = match self.pool.take(addr, self.timeouts.idle) {
                    Some(s) if !upgrade => (s, true),
                    _ => match self.connect(addr).await {
                        Ok(s) => (s, false),
                        Err(e) => {
                            last_error = e;
                            break;
                        }
                    },
                };
                let sent = tokio::time::timeout(
                    self.timeouts.response_headers,
                    sender.try_send_request(outgoing.take().expect("the request is put back after every failed send")),
                )
                .await;
                match sent {
                    Err(_) => return full(pages::gateway_timeout(&service)),
                    Ok(Ok(resp)) => {
                        response = Some((addr, sender, resp));
                        break;
                    }
                    Ok(Err(mut e)) => match e.take_message() {
                        // Not written: safe to send again on a fresh connection.
                        Some(back) if pooled || attempts < 2 => {
                            outgoing = Some(back);
                            continue;
                        }
                        _ => {
                            return full(pages::bad_gateway(
                                &service,
                                &format!("{addr}: {}", e.error()),
                            ))
                        }
                    },
                }
            }
            if response.is_some() {
                break;
            }
        }
        let Some((addr, mut sender, mut resp)) = response else {
            return full(pages::bad_gateway(&service, &last_error));
        };
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_upgrade) = client_upgrade {
                let backend_upgrade = hyper::upgrade::on(&mut resp);
                tokio::spawn(async move {
                    match tokio::try_join!(client_upgrade, backend_upgrade) {
                        Ok((client, backend)) => {
                            let mut client = TokioIo::new(client);
                            let mut backend = TokioIo::new(backend);
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
                        }
                        Err(e) => tracing::debug!("upgrade through the ingress failed: {e}"),
                    }
                });
            }
        } else {
            // Back to the pool once the response body has been read.
            let me = self.clone();
            tokio::spawn(async move {
                if sender.ready().await.is_ok() {
                    me.pool.put(addr, sender);
                }
            });
        }
        let upgraded = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers, upgraded);
        if upgraded {
            parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        Response::from_parts(parts, body.map_err(BoxError::from).boxed_unsync())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_and_upgrade_stays_for_upgrades() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret, upgrade"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-app", HeaderValue::from_static("kept"));
        let mut plain = h.clone();
        strip_hop_by_hop(&mut plain, false);
        assert!(plain.get("x-secret").is_none() && plain.get(header::UPGRADE).is_none());
        assert!(plain.get(header::CONNECTION).is_none() && plain.get("keep-alive").is_none());
        assert_eq!(plain.get("x-app").unwrap(), "kept");
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get(header::UPGRADE).unwrap(), "websocket");
    }

    #[test]
    fn forwarded_headers_append_to_the_chain() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        let client = ClientInfo {
            peer: "[::ffff:192.0.2.1]:5555".parse().unwrap(),
            https: true,
        };
        add_forwarded(&mut h, client, "hello.local");
        assert_eq!(h.get("x-forwarded-for").unwrap(), "203.0.113.9, 192.0.2.1");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "https");
        assert_eq!(h.get("x-forwarded-host").unwrap(), "hello.local");
        let mut fresh = HeaderMap::new();
        add_forwarded(
            &mut fresh,
            ClientInfo { peer: "10.0.0.1:1".parse().unwrap(), https: false },
            "h",
        );
        assert_eq!(fresh.get("x-forwarded-for").unwrap(), "10.0.0.1");
        assert_eq!(fresh.get("x-forwarded-proto").unwrap(), "http");
    }
}
