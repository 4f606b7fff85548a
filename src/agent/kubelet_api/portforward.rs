//! `/portForward/{ns}/{pod}/{uid}`: `kubectl port-forward`, speaking
//! `portforward.k8s.io` over SPDY/3.1, either inside a websocket
//! (`SPDY/3.1+portforward.k8s.io`, kubectl 1.31+'s first choice) or after a
//! plain `Upgrade: SPDY/3.1` (its fallback).
//!
//! kubectl opens two streams per forwarded connection, `error` and `data`,
//! paired by their `requestID` header and naming the `port`. When both
//! exist, the agent connects to that port on the pod's loopback (inside its
//! network namespace, as kubelet does) and copies bytes both ways; a
//! connection failure is written to the error stream in kubelet's words.
//!
//! A websocket without that subprotocol gets the kubelet's channel framing
//! instead ([`super::portforward_channels`]), as the Python and JavaScript
//! clients speak it.
//!
//! Partial: one slow pod connection applies back-pressure to the whole
//! session's reader (client-go's spdystream has no per-stream flow control
//! to lean on).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::spdy::{self, Frame, HeaderReader, HeaderWriter};
use super::KubeletApi;

pub const WS_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
pub const SPDY_PROTOCOL: &str = "portforward.k8s.io";

/// Connects to a port on a pod's loopback.
#[async_trait]
pub trait PortForwardBackend: Send + Sync {
    async fn connect(
        &self,
        namespace: &str,
        pod: &str,
        uid: &str,
        port: u16,
    ) -> Result<TcpStream, String>;

    /// Connects to `addr` from inside the pod's network namespace (the
    /// pod's own IP for `pods/proxy` and `services/proxy`). The default
    /// goes to the port on the pod's loopback.
    async fn connect_addr(
        &self,
        namespace: &str,
        pod: &str,
        uid: &str,
        addr: std::net::SocketAddr,
    ) -> Result<TcpStream, String> {
        self.connect(namespace, pod, uid, addr.port()).await
    }
}

/// The real backend: a socket made inside the pod's network namespace
/// (`<netns_dir>/rk3s-<uid>`), connected to 127.0.0.1:<port>.
pub struct NetnsPortForward {
    pub netns_dir: PathBuf,
}

#[async_trait]
impl PortForwardBackend for NetnsPortForward {
    async fn connect(
        &self,
        _ns: &str,
        _pod: &str,
        uid: &str,
        port: u16,
    ) -> Result<TcpStream, String> {
        let path = self.netns_dir.join(format!("rk3s-{uid}"));
        connect_in(path, std::net::SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .map_err(|e| format!("failed to connect to port {port} in the pod network namespace: {e}"))
    }

    async fn connect_addr(
        &self,
        _ns: &str,
        _pod: &str,
        uid: &str,
        addr: std::net::SocketAddr,
    ) -> Result<TcpStream, String> {
        let path = self.netns_dir.join(format!("rk3s-{uid}"));
        connect_in(path, addr)
            .await
            .map_err(|e| format!("failed to connect to {addr} in the pod network namespace: {e}"))
    }
}

/// A TCP connection made inside the network namespace at `netns`: the
/// socket is created on a thread in that namespace and stays there
/// (`hostnet::netns::run_in`).
async fn connect_in(netns: PathBuf, addr: std::net::SocketAddr) -> Result<TcpStream, String> {
    let std = crate::hostnet::netns::run_in(Some(netns), move || {
        std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5))
    })
    .await
    .map_err(|e| e.to_string())?;
    std.set_nonblocking(true).map_err(|e| e.to_string())?;
    TcpStream::from_std(std).map_err(|e| e.to_string())
}

pub(super) async fn handler(
    State(api): State<Arc<KubeletApi>>,
    Path((ns, pod, uid)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    let Some(backend) = api.port_forward.clone() else {
        return (
            StatusCode::NOT_IMPLEMENTED,
            "port-forward is not available on this node\n",
        )
            .into_response();
    };
    let offered = |headers: &http::HeaderMap, name: http::header::HeaderName, want: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim().eq_ignore_ascii_case(want))
    };
    let websocket = offered(
        req.headers(),
        http::header::SEC_WEBSOCKET_PROTOCOL,
        WS_PROTOCOL,
    );
    let spdy_upgrade = offered(req.headers(), http::header::UPGRADE, "SPDY/3.1");
    let plain_websocket = offered(req.headers(), http::header::UPGRADE, "websocket");
    if plain_websocket && !websocket {
        return channel_websocket(req, backend, (ns, pod, uid)).await;
    }
    let target = Target { ns, pod, uid };
    if websocket {
        let (mut parts, _) = req.into_parts();
        return match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(ws) => ws
                .protocols([WS_PROTOCOL])
                .on_upgrade(move |socket| serve_websocket(socket, backend, target))
                .into_response(),
            Err(e) => e.into_response(),
        };
    }
    if spdy_upgrade {
        return super::channels::spdy_upgrade(req, SPDY_PROTOCOL, move |io| {
            serve(io, backend, target)
        });
    }
    (
        StatusCode::BAD_REQUEST,
        "port-forward needs a websocket (SPDY/3.1+portforward.k8s.io) or SPDY/3.1 upgrade\n",
    )
        .into_response()
}

/// The kubelet's websocket channel framing
/// ([`super::portforward_channels`]), for clients other than kubectl.
async fn channel_websocket(
    req: Request,
    backend: Arc<dyn PortForwardBackend>,
    target: (String, String, String),
) -> Response {
    use super::portforward_channels as pfc;
    let names: Vec<String> = req
        .headers()
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .collect();
    let chosen = if names.is_empty() {
        pfc::protocol("").map(|p| (String::new(), p))
    } else {
        names
            .iter()
            .find_map(|n| pfc::protocol(n).map(|p| (n.clone(), p)))
    };
    let Some((name, protocol)) = chosen else {
        return (
            StatusCode::BAD_REQUEST,
            format!("port-forward: none of the offered websocket protocols {names:?} is served; rk3s serves {WS_PROTOCOL}, v4.channel.k8s.io and v4.base64.channel.k8s.io\n"),
        )
            .into_response();
    };
    let ports = match pfc::ports(req.uri().query().unwrap_or("")) {
        Ok(p) => p,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let (mut parts, _) = req.into_parts();
    match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(ws) => {
            let ws = if name.is_empty() { ws } else { ws.protocols([name]) };
            ws.on_upgrade(move |socket| pfc::serve(socket, protocol, ports, backend, target))
                .into_response()
        }
        Err(e) => e.into_response(),
    }
}

#[derive(Clone)]
struct Target {
    ns: String,
    pod: String,
    uid: String,
}

/// SPDY bytes carried in websocket binary messages, as a byte stream.
async fn serve_websocket(socket: WebSocket, backend: Arc<dyn PortForwardBackend>, target: Target) {
    let (local, remote) = tokio::io::duplex(256 * 1024);
    let (mut rd, mut wr) = tokio::io::split(local);
    let (mut sink, mut source) = socket.split();
    tokio::spawn(async move {
        while let Some(Ok(msg)) = source.next().await {
            match msg {
                Message::Binary(b) => {
                    if wr.write_all(&b).await.is_err() {
                        break;
                    }
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = wr.shutdown().await;
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink
                        .send(Message::Binary(Bytes::copy_from_slice(&buf[..n])))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        let _ = sink
            .send(Message::Close(Some(axum::extract::ws::CloseFrame {
                code: axum::extract::ws::close_code::NORMAL,
                reason: "".into(),
            })))
            .await;
    });
    serve(remote, backend, target).await;
}

#[derive(Default)]
struct Pair {
    port: u16,
    error: Option<u32>,
    data: Option<u32>,
}

/// One SPDY session: answers every stream, pairs them, forwards.
async fn serve(
    io: impl AsyncRead + AsyncWrite + Send + 'static,
    backend: Arc<dyn PortForwardBackend>,
    target: Target,
) {
    let (mut rd, wr) = tokio::io::split(io);
    let (out, writer) = spdy::frame_writer(wr);
    let mut headers_in = HeaderReader::default();
    let mut headers_out = HeaderWriter::default();
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut inbound: HashMap<u32, mpsc::Sender<Option<Vec<u8>>>> = HashMap::new();
    let mut waiting: HashMap<u32, mpsc::Receiver<Option<Vec<u8>>>> = HashMap::new();
    loop {
        let frame = match spdy::read_frame(&mut rd).await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!("port-forward session ended: {e}");
                break;
            }
        };
        match frame {
            Frame::Control {
                kind: spdy::SYN_STREAM,
                payload,
                ..
            } => {
                let (id, headers, reply) =
                    match spdy::answer_syn_stream(&payload, &mut headers_in, &mut headers_out) {
                        Ok(answer) => answer,
                        Err(None) => break,
                        Err(Some(reset)) => {
                            let _ = out.send(reset).await;
                            continue;
                        }
                    };
                let _ = out.send(reply).await;
                let kind = headers.get("streamtype").cloned().unwrap_or_default();
                let port: u16 = headers
                    .get("port")
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0);
                let request = headers
                    .get("requestid")
                    .cloned()
                    .unwrap_or_else(|| port.to_string());
                let pair = pairs.entry(request.clone()).or_default();
                pair.port = port;
                match kind.as_str() {
                    "error" => pair.error = Some(id),
                    "data" => {
                        pair.data = Some(id);
                        let (tx, rx) = mpsc::channel(64);
                        inbound.insert(id, tx);
                        waiting.insert(id, rx);
                    }
                    _ => {}
                }
                if let (Some(error), Some(data)) = (pair.error, pair.data) {
                    let port = pair.port;
                    pairs.remove(&request);
                    let rx = waiting
                        .remove(&data)
                        .expect("registered with the data stream");
                    tokio::spawn(forward(
                        backend.clone(),
                        target.clone(),
                        port,
                        error,
                        data,
                        rx,
                        out.clone(),
                    ));
                }
            }
            Frame::Data {
                stream,
                flags,
                data,
            } => {
                if !data.is_empty() {
                    let _ = out.send(spdy::window_update(stream, data.len())).await;
                }
                if let Some(tx) = inbound.get(&stream) {
                    if !data.is_empty() && tx.send(Some(data)).await.is_err() {
                        inbound.remove(&stream);
                    }
                }
                if flags & spdy::FLAG_FIN != 0 {
                    if let Some(tx) = inbound.remove(&stream) {
                        let _ = tx.send(None).await;
                    }
                }
            }
            Frame::Control {
                kind: spdy::PING,
                payload,
                ..
            } => {
                let _ = out.send(spdy::control(spdy::PING, 0, &payload)).await;
            }
            Frame::Control {
                kind: spdy::RST_STREAM,
                payload,
                ..
            } => {
                if let Ok(id) = spdy::u32_at(&payload, 0) {
                    inbound.remove(&(id & 0x7fff_ffff));
                }
            }
            Frame::Control {
                kind: spdy::GOAWAY, ..
            } => break,
            Frame::Control { .. } => {}
        }
    }
    drop(inbound);
    drop(out);
    let _ = writer.await;
}

/// One forwarded connection.
async fn forward(
    backend: Arc<dyn PortForwardBackend>,
    target: Target,
    port: u16,
    error_stream: u32,
    data_stream: u32,
    from_client: mpsc::Receiver<Option<Vec<u8>>>,
    out: mpsc::Sender<Vec<u8>>,
) {
    let tcp = match backend
        .connect(&target.ns, &target.pod, &target.uid, port)
        .await
    {
        Ok(t) => t,
        Err(e) => {
            let msg = format!(
                "error forwarding port {port} to pod {}, uid {}: {e}",
                target.pod, target.uid
            );
            let _ = out
                .send(spdy::data(error_stream, spdy::FLAG_FIN, msg.as_bytes()))
                .await;
            let _ = out.send(spdy::data(data_stream, spdy::FLAG_FIN, &[])).await;
            return;
        }
    };
    super::pump::pump(
        tcp,
        tokio_stream::StreamExt::map_while(
            tokio_stream::wrappers::ReceiverStream::new(from_client),
            |chunk| chunk,
        ),
        &out,
        |b| spdy::data(data_stream, 0, b),
        Some(spdy::data(data_stream, spdy::FLAG_FIN, &[])),
        super::pump::Ending::BothSides,
    )
    .await;
    let _ = out
        .send(spdy::data(error_stream, spdy::FLAG_FIN, &[]))
        .await;
}
