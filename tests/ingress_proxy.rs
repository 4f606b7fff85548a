//! The ingress proxy in process, on loopback: real listeners, real
//! backends (axum), a service cache fed by hand. Routing, forwarded
//! headers, retries past a refused endpoint, 503/404 pages, a streamed
//! upload, a websocket echo, and HTTPS with a certificate chosen by SNI.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::routing::{get, post};
use futures::{SinkExt, StreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use rk3s::ingress::proxy::Proxy;
use rk3s::ingress::table::RouteTable;
use rk3s::ingress::{listener, tls};
use rk3s::svccache::{ServiceCache, Snapshot};
use serde_json::json;
use tokio_util::sync::CancellationToken;

async fn backend(name: &'static str) -> SocketAddr {
    let app = axum::Router::new()
        .route(
            "/",
            get(move |headers: axum::http::HeaderMap| async move {
                let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
                format!("hello from {name} xff={} proto={} host={}", h("x-forwarded-for"), h("x-forwarded-proto"), h("x-forwarded-host"))
            }),
        )
        .route(
            "/upload",
            post(|body: axum::body::Body| async move {
                let mut stream = body.into_data_stream();
                let mut n = 0usize;
                while let Some(chunk) = stream.next().await {
                    n += chunk.unwrap().len();
                }
                format!("{n}")
            }),
        )
        .route(
            "/ws",
            get(|ws: WebSocketUpgrade| async move {
                ws.on_upgrade(|mut socket| async move {
                    while let Some(Ok(msg)) = socket.recv().await {
                        if let Message::Text(t) = msg {
                            let _ = socket.send(Message::Text(format!("echo: {t}").into())).await;
                        }
                    }
                })
            }),
        );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    addr
}

fn service(name: &str, port: i32) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"ports": [{"name": "http", "port": port, "targetPort": 8080}]}
    }))
    .unwrap()
}

fn slice(name: &str, endpoints: &[SocketAddr]) -> EndpointSlice {
    // One slice per port number (the test backends listen on different ports).
    let port = endpoints[0].port();
    serde_json::from_value(json!({
        "metadata": {"name": format!("{name}-{port}"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port}],
        "endpoints": endpoints.iter().map(|e| json!({"addresses": [e.ip().to_string()], "conditions": {"ready": true}})).collect::<Vec<_>>(),
    }))
    .unwrap()
}

fn ingress() -> Ingress {
    serde_json::from_value(json!({
        "metadata": {"name": "hello", "namespace": "default", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {
            "tls": [{"hosts": ["hello.local"], "secretName": "hello-tls"}],
            "rules": [
                {"host": "hello.local", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "hello", "port": {"number": 80}}}}]}},
                {"host": "empty.local", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "empty", "port": {"name": "http"}}}}]}},
            ]
        }
    }))
    .unwrap()
}

struct Setup {
    http: SocketAddr,
    https: SocketAddr,
    ca_pem: String,
    _stop: tokio_util::sync::DropGuard,
}

async fn setup() -> Setup {
    let good = backend("pod-a").await;
    // A port with nothing listening: connections are refused.
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (tx, cache) = ServiceCache::manual();
    tx.send_replace(Arc::new(Snapshot::from_objects(
        vec![service("hello", 80), service("empty", 80)],
        vec![slice("hello", &[good]), slice("hello", &[refused])],
    )));
    let proxy = Arc::new(Proxy::new(cache, None));
    let ing = ingress();
    proxy.set_table(RouteTable::build([&ing]));
    let cert = rcgen::generate_simple_self_signed(vec!["hello.local".to_string()]).unwrap();
    let key = tls::certified_key_from_pem(cert.cert.pem().as_bytes(), cert.signing_key.serialize_pem().as_bytes()).unwrap();
    let mut secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "hello-tls", "namespace": "default"}, "type": "kubernetes.io/tls"
    }))
    .unwrap();
    secret.data = Some(
        [
            ("tls.crt".into(), k8s_openapi::ByteString(cert.cert.pem().into_bytes())),
            ("tls.key".into(), k8s_openapi::ByteString(cert.signing_key.serialize_pem().into_bytes())),
        ]
        .into(),
    );
    drop(key);
    let lookup = |_: &str, _: &str| Some(secret.clone());
    let certs = tls::CertTable::build(&[&ing], &lookup, Arc::new(tls::default_certificate().unwrap()));
    let resolver = Arc::new(tls::SniResolver::new(certs));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls::server_config(resolver).unwrap()));
    let stop = CancellationToken::new();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let https = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (http_addr, https_addr) = (http.local_addr().unwrap(), https.local_addr().unwrap());
    tokio::spawn(listener::serve(http, proxy.clone(), None, stop.clone()));
    tokio::spawn(listener::serve(https, proxy, Some(acceptor), stop.clone()));
    Setup { http: http_addr, https: https_addr, ca_pem: cert.cert.pem(), _stop: stop.drop_guard() }
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().no_proxy().build().unwrap()
}

#[tokio::test]
async fn routes_by_host_retries_refused_endpoints_and_names_what_is_missing() {
    let s = setup().await;
    let c = client();
    let url = format!("http://{}/", s.http);
    // Several requests: the rotating start hits the refused endpoint too,
    // and every one is retried onto the live endpoint.
    for _ in 0..4 {
        let r = c.get(&url).header("host", "hello.local").send().await.unwrap();
        assert_eq!(r.status(), 200);
        let body = r.text().await.unwrap();
        assert!(body.starts_with("hello from pod-a xff=127.0.0.1 proto=http host=hello.local"), "{body}");
    }
    let r = c.get(&url).header("host", "empty.local").send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("service default/empty has no ready endpoints"));
    let r = c.get(&url).header("host", "nobody.local").send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("nobody.local"));
}

#[tokio::test]
async fn uploads_stream_through() {
    let s = setup().await;
    let chunks: Vec<Result<hyper::body::Frame<bytes::Bytes>, std::io::Error>> =
        (0..64).map(|_| Ok(hyper::body::Frame::data(bytes::Bytes::from(vec![7u8; 64 * 1024])))).collect();
    let body = reqwest::Body::wrap(http_body_util::StreamBody::new(futures::stream::iter(chunks)));
    let r = client()
        .post(format!("http://{}/upload", s.http))
        .header("host", "hello.local")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), (64 * 64 * 1024).to_string());
}

#[tokio::test]
async fn websockets_are_upgraded_end_to_end() {
    let s = setup().await;
    let stream = tokio::net::TcpStream::connect(s.http).await.unwrap();
    let req = http::Request::builder()
        .uri("ws://hello.local/ws")
        .header("host", "hello.local")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", tokio_tungstenite::tungstenite::handshake::client::generate_key())
        .body(())
        .unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async(req, stream).await.unwrap();
    assert_eq!(resp.status(), 101);
    ws.send(tokio_tungstenite::tungstenite::Message::Text("ping".into())).await.unwrap();
    let reply = ws.next().await.unwrap().unwrap();
    assert_eq!(reply.into_text().unwrap().as_str(), "echo: ping");
}

#[tokio::test]
async fn https_uses_the_secret_for_its_host_over_http2() {
    let s = setup().await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = reqwest::Certificate::from_pem(s.ca_pem.as_bytes()).unwrap();
    let c = reqwest::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .resolve("hello.local", s.https)
        .build()
        .unwrap();
    let r = c.get(format!("https://hello.local:{}/", s.https.port())).send().await.unwrap();
    assert_eq!(r.version(), http::Version::HTTP_2, "ALPN offers h2");
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(body.contains("proto=https") && body.contains("host=hello.local"), "{body}");
}
