//! The stream protocol of `kubectl exec` and `kubectl attach`
//! (`*.channel.k8s.io`), over either transport the kubelet serves:
//!
//! - a websocket, where each message is `[channel][data]`: binary with
//!   `v5.channel.k8s.io`, `v4.channel.k8s.io`, `channel.k8s.io` (or no
//!   subprotocol at all), and text `'0'+channel` then base64 with the
//!   `base64.` variants that browser clients use; with v5, `[255][channel]`
//!   closes a channel. Stdin may arrive in text or binary frames, as
//!   kube's wsstream reads both. The lowest writable channel gets an empty
//!   message first, as the kubelet sends, to say the session is open;
//! - SPDY/3.1 after a plain `Upgrade: SPDY/3.1` with
//!   `X-Stream-Protocol-Version` v5, v4, v3, v2 or `channel.k8s.io`
//!   (kubectl before 1.30, and client-go's fallback), where the client
//!   opens one SPDY stream per channel, named by its `streamType` header,
//!   and a FIN closes it.
//!
//! Both become one [`Channels`] value: numbered channels (0 stdin, 1
//! stdout, 2 stderr, 3 error, 4 resize) in and out, so exec and attach are
//! written once over every transport. The protocol version decides only
//! what the error channel carries at the end ([`Protocol::status_bytes`]):
//! a `metav1.Status` from v4 on, the failure's message as plain text (and
//! nothing on success) before.
//!
//! Client preference decides: the first offered protocol rk3s serves wins,
//! as kube's handshake picks it.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{HeaderMap, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use super::spdy::{self, Frame, HeaderReader, HeaderWriter};

pub const V5: &str = "v5.channel.k8s.io";
pub const V4: &str = "v4.channel.k8s.io";
const V3: &str = "v3.channel.k8s.io";
const V2: &str = "v2.channel.k8s.io";
/// The original protocol (v1).
const V1: &str = "channel.k8s.io";

/// A negotiated `*.channel.k8s.io` protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Protocol {
    /// 1 (`channel.k8s.io`) to 5.
    pub version: u8,
    /// Text frames with a base64 body (websocket only).
    pub base64: bool,
}

impl Protocol {
    /// A websocket subprotocol the kubelet serves (`""`: none offered).
    pub fn websocket(name: &str) -> Option<Protocol> {
        let (base64, version) = match name {
            "" | V1 => (false, 1),
            "base64.channel.k8s.io" => (true, 1),
            V4 => (false, 4),
            "v4.base64.channel.k8s.io" => (true, 4),
            V5 => (false, 5),
            "v5.base64.channel.k8s.io" => (true, 5),
            _ => return None,
        };
        Some(Protocol { version, base64 })
    }

    /// An `X-Stream-Protocol-Version` the kubelet serves over SPDY.
    pub fn spdy(name: &str) -> Option<Protocol> {
        let version = match name {
            V5 => 5,
            V4 => 4,
            V3 => 3,
            V2 => 2,
            V1 => 1,
            _ => return None,
        };
        Some(Protocol {
            version,
            base64: false,
        })
    }

    /// What the error channel carries for the session's final `status`:
    /// from v4 the Status itself; before, a failure's message as text and
    /// nothing on success (kubelet's v1 status writer).
    pub fn status_bytes(&self, status: &serde_json::Value) -> Option<Vec<u8>> {
        if self.version >= 4 {
            return Some(status.to_string().into_bytes());
        }
        if status["status"] == "Success" {
            return None;
        }
        Some(status["message"].as_str().unwrap_or("").as_bytes().to_vec())
    }
}

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;

/// How long the client has to open its SPDY streams (the kubelet's
/// stream-creation timeout).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// What the client sends.
#[derive(Debug, PartialEq)]
pub enum Inbound {
    Data(u8, Bytes),
    /// The client closed this channel (stdin's EOF).
    Closed(u8),
}

enum Outbound {
    Data(u8, Bytes),
    /// The error channel's final Status, then the end of the session.
    Finish(serde_json::Value),
}

/// Sends on a session's channels; cheap to clone.
#[derive(Clone)]
pub struct ChannelSender(mpsc::Sender<Outbound>);

impl ChannelSender {
    /// Sends `data` on `channel`; false once the client is gone.
    pub async fn send(&self, channel: u8, data: Bytes) -> bool {
        self.0.send(Outbound::Data(channel, data)).await.is_ok()
    }

    /// Ends the session with `status` (a `metav1.Status`) on the error
    /// channel, after everything sent before it.
    pub async fn finish(&self, status: &serde_json::Value) {
        let _ = self
            .0
            .send(Outbound::Finish(status.clone()))
            .await;
    }
}

/// One exec or attach session.
pub struct Channels {
    pub sender: ChannelSender,
    pub inbound: mpsc::Receiver<Inbound>,
    pub done: Done,
}

/// The transport's writer: done once it wrote the final Status and closed.
pub struct Done(tokio::task::JoinHandle<()>);

impl Done {
    /// Waits (bounded) until the final Status is flushed.
    pub async fn wait(self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.0).await;
    }
}

impl Channels {
    /// Waits until the transport has flushed the final Status.
    pub async fn closed(self) {
        drop(self.sender);
        self.done.wait().await;
    }
}

/// Which channels the client opens: kubelet's rules (no stderr with a
/// TTY; a resize channel only with one).
#[derive(Clone, Copy, Debug, Default)]
pub struct Expect {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl Expect {
    pub fn from_query(query: &str) -> Self {
        let mut e = Expect::default();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            let on = super::query_bool(&v);
            match k.as_ref() {
                "stdin" => e.stdin = on,
                "stdout" => e.stdout = on,
                "stderr" => e.stderr = on,
                "tty" => e.tty = on,
                _ => {}
            }
        }
        if e.tty {
            e.stderr = false;
        }
        e
    }

    fn channels(&self) -> Vec<u8> {
        let mut c = vec![ERROR];
        for (on, ch) in [
            (self.stdin, STDIN),
            (self.stdout, STDOUT),
            (self.stderr, STDERR),
            (self.tty, RESIZE),
        ] {
            if on {
                c.push(ch);
            }
        }
        c
    }
}

fn offered<'a>(headers: &'a HeaderMap, name: &str) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// Answers an exec or attach request in whichever transport it asks for,
/// then runs `session` over it. `what` names the operation in errors.
pub async fn accept<F, Fut>(req: Request, what: &str, expect: Expect, session: F) -> Response
where
    F: FnOnce(Channels) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let headers = req.headers().clone();
    let is_websocket = offered(&headers, "upgrade").any(|u| u.eq_ignore_ascii_case("websocket"));
    if is_websocket {
        let mut names = offered(&headers, "sec-websocket-protocol").peekable();
        let chosen = if names.peek().is_none() {
            Some(("", Protocol::websocket("").expect("the default is served")))
        } else {
            names.find_map(|p| Protocol::websocket(p).map(|proto| (p, proto)))
        };
        let Some((name, protocol)) = chosen else {
            return (
                StatusCode::BAD_REQUEST,
                format!("{what}: none of the offered websocket protocols is served; rk3s serves {V5}, {V4}, {V1} and their base64 variants\n"),
            )
                .into_response();
        };
        let name = name.to_string();
        let (mut parts, _) = req.into_parts();
        return match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(ws) => {
                let ws = if name.is_empty() { ws } else { ws.protocols([name]) };
                ws.on_upgrade(move |socket| session(websocket(socket, protocol, expect)))
                    .into_response()
            }
            Err(e) => e.into_response(),
        };
    }
    let spdy = offered(&headers, "upgrade").any(|u| u.eq_ignore_ascii_case("SPDY/3.1"));
    if spdy {
        // v5 over SPDY is v4 (closing stdin is a FIN either way).
        let Some((version, protocol)) = offered(&headers, "x-stream-protocol-version")
            .find_map(|p| Protocol::spdy(p).map(|proto| (p.to_string(), proto)))
        else {
            return (
                StatusCode::BAD_REQUEST,
                format!("{what} over SPDY needs X-Stream-Protocol-Version {V5}, {V4}, {V3}, {V2} or {V1}\n"),
            )
                .into_response();
        };
        return spdy_upgrade(req, &version, move |io| async move {
            match spdy_session(io, expect, protocol).await {
                Ok(channels) => session(channels).await,
                Err(e) => tracing::debug!("SPDY stream session not started: {e}"),
            }
        });
    }
    (
        StatusCode::BAD_REQUEST,
        format!("{what} needs a websocket upgrade or an SPDY/3.1 upgrade\n"),
    )
        .into_response()
}

/// Answers `req` with `101 Switching Protocols` to SPDY/3.1 (stream protocol
/// `version`) and hands the upgraded connection to `serve`.
pub fn spdy_upgrade<F, Fut>(mut req: Request, version: &str, serve: F) -> Response
where
    F: FnOnce(TokioIo<hyper::upgrade::Upgraded>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(io) = upgrade.await {
            serve(TokioIo::new(io)).await;
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::CONNECTION, "Upgrade")
        .header(http::header::UPGRADE, "SPDY/3.1")
        .header("X-Stream-Protocol-Version", version)
        .body(axum::body::Body::empty())
        .expect("valid response")
}

/// The websocket transport.
pub fn websocket(socket: WebSocket, protocol: Protocol, expect: Expect) -> Channels {
    let (mut sink, mut source) = socket.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Outbound>(16);
    let (in_tx, in_rx) = mpsc::channel::<Inbound>(16);
    let reader = tokio::spawn(async move {
        while let Some(Ok(msg)) = source.next().await {
            let data = match msg {
                Message::Binary(b) => b,
                // kube's wsstream reads text and binary frames alike; some
                // clients (the Python client's `write_stdin` of a str) send
                // stdin as text frames.
                Message::Text(t) => Bytes::copy_from_slice(t.as_str().as_bytes()),
                Message::Close(_) => break,
                _ => continue,
            };
            let Some(event) = decode_inbound(&data, protocol) else {
                continue;
            };
            if in_tx.send(event).await.is_err() {
                break;
            }
        }
    });
    let done = tokio::spawn(async move {
        // The kubelet's "session is open" signal.
        let first = if expect.stdout {
            STDOUT
        } else if expect.stderr {
            STDERR
        } else {
            ERROR
        };
        if sink.send(encode(protocol, first, &[])).await.is_err() {
            reader.abort();
            return;
        }
        while let Some(out) = out_rx.recv().await {
            let (frame, last) = match out {
                Outbound::Data(ch, data) => (Some(encode(protocol, ch, &data)), false),
                Outbound::Finish(status) => (
                    protocol
                        .status_bytes(&status)
                        .map(|b| encode(protocol, ERROR, &b)),
                    true,
                ),
            };
            if let Some(frame) = frame {
                if sink.send(frame).await.is_err() {
                    break;
                }
            }
            if last {
                // 1000: client-go turns any other close (even none) into
                // an error on every stream, including the Status just sent.
                let _ = sink
                    .send(Message::Close(Some(axum::extract::ws::CloseFrame {
                        code: axum::extract::ws::close_code::NORMAL,
                        reason: "".into(),
                    })))
                    .await;
                break;
            }
        }
        reader.abort();
    });
    Channels {
        sender: ChannelSender(out_tx),
        inbound: in_rx,
        done: Done(done),
    }
}

/// One websocket message from the client as a channel event.
pub(super) fn decode_inbound(data: &[u8], protocol: Protocol) -> Option<Inbound> {
    let (&first, rest) = data.split_first()?;
    if protocol.version >= 5 && first == 255 {
        // A close signal: `[255][channel]` (base64: the channel as a digit).
        let ch = *rest.first()?;
        return Some(Inbound::Closed(if protocol.base64 { ch.wrapping_sub(b'0') } else { ch }));
    }
    if !protocol.base64 {
        return Some(Inbound::Data(first, Bytes::copy_from_slice(rest)));
    }
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.decode(rest).ok()?;
    Some(Inbound::Data(first.wrapping_sub(b'0'), Bytes::from(body)))
}

/// One message to the client on `channel`.
pub(super) fn encode(protocol: Protocol, channel: u8, data: &[u8]) -> Message {
    if protocol.base64 {
        use base64::Engine as _;
        let mut text = String::with_capacity(1 + data.len() * 4 / 3 + 4);
        text.push((b'0' + channel) as char);
        base64::engine::general_purpose::STANDARD.encode_string(data, &mut text);
        Message::Text(text.into())
    } else {
        Message::Binary(framed(channel, data).into())
    }
}

fn framed(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(data.len() + 1);
    m.push(channel);
    m.extend_from_slice(data);
    m
}

fn channel_of(stream_type: &str) -> Option<u8> {
    Some(match stream_type {
        "stdin" => STDIN,
        "stdout" => STDOUT,
        "stderr" => STDERR,
        "error" => ERROR,
        "resize" => RESIZE,
        _ => return None,
    })
}

/// The SPDY transport: waits (bounded) until the client opened every
/// stream `expect` says it will, then carries the channels.
pub async fn spdy_session(
    io: impl AsyncRead + AsyncWrite + Send + 'static,
    expect: Expect,
    protocol: Protocol,
) -> Result<Channels, String> {
    let (mut rd, wr) = tokio::io::split(io);
    let (frames_tx, writer) = spdy::frame_writer(wr);
    let mut state = SpdyState::default();
    let wanted = expect.channels();
    // Made before the streams are all open: stdin may come early.
    let (in_tx, in_rx) = mpsc::channel::<Inbound>(64);
    let opened = tokio::time::timeout(STREAM_CREATION_TIMEOUT, async {
        while !wanted.iter().all(|c| state.streams.contains_key(c)) {
            match spdy::read_frame(&mut rd).await {
                Ok(Some(frame)) => {
                    if let Step::End = state.on_frame(frame, &frames_tx, &in_tx).await {
                        return Err("the client ended the session".to_string());
                    }
                }
                Ok(None) => return Err("the client closed the connection".to_string()),
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    })
    .await;
    match opened {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Err(format!(
                "timed out waiting for the client to open its streams ({} of {})",
                state.streams.len(),
                wanted.len()
            ))
        }
    }
    let (out_tx, mut out_rx) = mpsc::channel::<Outbound>(16);
    let streams = state.streams.clone();
    let control = frames_tx.clone();
    let reader = tokio::spawn(async move {
        while let Ok(Some(frame)) = spdy::read_frame(&mut rd).await {
            if let Step::End = state.on_frame(frame, &control, &in_tx).await {
                break;
            }
        }
    });
    let done = tokio::spawn(async move {
        while let Some(out) = out_rx.recv().await {
            match out {
                Outbound::Data(ch, data) => {
                    let Some(&id) = streams.get(&ch) else {
                        continue;
                    };
                    if frames_tx.send(spdy::data(id, 0, &data)).await.is_err() {
                        break;
                    }
                }
                Outbound::Finish(status) => {
                    if let (Some(&id), Some(bytes)) =
                        (streams.get(&ERROR), protocol.status_bytes(&status))
                    {
                        let _ = frames_tx.send(spdy::data(id, 0, &bytes)).await;
                    }
                    // FIN on every stream we write: client-go waits for
                    // stdout and stderr to end before it reads the Status.
                    for ch in [ERROR, STDOUT, STDERR] {
                        if let Some(&id) = streams.get(&ch) {
                            let _ = frames_tx.send(spdy::data(id, spdy::FLAG_FIN, &[])).await;
                        }
                    }
                    let _ = frames_tx
                        .send(spdy::control(spdy::GOAWAY, 0, &[0; 8]))
                        .await;
                    break;
                }
            }
        }
        // The reader holds a sender for its replies: stop it first, or the
        // writer would wait for it forever.
        reader.abort();
        let _ = reader.await;
        drop(frames_tx);
        let _ = writer.await;
    });
    Ok(Channels {
        sender: ChannelSender(out_tx),
        inbound: in_rx,
        done: Done(done),
    })
}

enum Step {
    Go,
    End,
}

#[derive(Default)]
struct SpdyState {
    headers_in: HeaderReader,
    headers_out: HeaderWriter,
    /// Channel → SPDY stream id.
    streams: HashMap<u8, u32>,
    /// SPDY stream id → channel.
    channels: HashMap<u32, u8>,
}

impl SpdyState {
    async fn on_frame(
        &mut self,
        frame: Frame,
        out: &mpsc::Sender<Vec<u8>>,
        inbound: &mpsc::Sender<Inbound>,
    ) -> Step {
        match frame {
            Frame::Control {
                kind: spdy::SYN_STREAM,
                payload,
                ..
            } => {
                let (id, headers, reply) = match spdy::answer_syn_stream(
                    &payload,
                    &mut self.headers_in,
                    &mut self.headers_out,
                ) {
                    Ok(answer) => answer,
                    Err(None) => return Step::End,
                    Err(Some(reset)) => {
                        let _ = out.send(reset).await;
                        return Step::Go;
                    }
                };
                let Some(channel) = headers.get("streamtype").and_then(|t| channel_of(t)) else {
                    let _ = out.send(spdy::reset(id, spdy::RST_PROTOCOL_ERROR)).await;
                    return Step::Go;
                };
                let _ = out.send(reply).await;
                self.streams.insert(channel, id);
                self.channels.insert(id, channel);
            }
            Frame::Data {
                stream,
                flags,
                data,
            } => {
                if !data.is_empty() {
                    let _ = out.send(spdy::window_update(stream, data.len())).await;
                }
                let Some(&channel) = self.channels.get(&stream) else {
                    return Step::Go;
                };
                let tx = inbound;
                if !data.is_empty() && tx.send(Inbound::Data(channel, data.into())).await.is_err() {
                    return Step::End;
                }
                if flags & spdy::FLAG_FIN != 0 && tx.send(Inbound::Closed(channel)).await.is_err() {
                    return Step::End;
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
                kind: spdy::GOAWAY, ..
            } => return Step::End,
            Frame::Control { .. } => {}
        }
        Step::Go
    }
}

/// Splits a resize channel's bytes into terminal sizes: websocket clients
/// send one JSON object a message, SPDY clients a stream of them.
pub fn terminal_sizes(data: &[u8]) -> Vec<(u16, u16)> {
    serde_json::Deserializer::from_slice(data)
        .into_iter::<serde_json::Value>()
        .filter_map(Result::ok)
        .map(|size| {
            (
                size["Width"].as_u64().unwrap_or(80) as u16,
                size["Height"].as_u64().unwrap_or(24) as u16,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::kubelet_api::spdy::Headers;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn syn_stream(w: &mut HeaderWriter, id: u32, kind: &str) -> Vec<u8> {
        let mut p = id.to_be_bytes().to_vec();
        p.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        let h: Headers = [("streamtype".to_string(), kind.to_string())].into();
        p.extend_from_slice(&w.write(&h));
        spdy::control(spdy::SYN_STREAM, 0, &p)
    }

    #[test]
    fn expected_streams_follow_the_kubelet() {
        let e = Expect::from_query("command=sh&stdin=true&stdout=true&stderr=true&tty=true");
        assert_eq!(e.channels(), vec![ERROR, STDIN, STDOUT, RESIZE]);
        let e = Expect::from_query("stdout=1&stderr=1");
        assert_eq!(e.channels(), vec![ERROR, STDOUT, STDERR]);
    }

    #[test]
    fn protocols_are_kubelets_and_pre_v4_errors_are_plain_text() {
        let v4 = Protocol::websocket(V4).unwrap();
        assert_eq!((v4.version, v4.base64), (4, false));
        let b64 = Protocol::websocket("base64.channel.k8s.io").unwrap();
        assert_eq!((b64.version, b64.base64), (1, true));
        assert_eq!(Protocol::websocket("").unwrap().version, 1);
        assert!(Protocol::websocket(V3).is_none(), "v3 is SPDY-only");
        assert_eq!(Protocol::spdy(V2).unwrap().version, 2);
        assert!(Protocol::spdy("v9.channel.k8s.io").is_none());
        let failed = serde_json::json!({"status": "Failure", "message": "command terminated with non-zero exit code: exit code 3"});
        let ok = serde_json::json!({"metadata": {}, "status": "Success"});
        assert_eq!(
            v4.status_bytes(&ok).unwrap(),
            br#"{"metadata":{},"status":"Success"}"#.to_vec()
        );
        assert_eq!(b64.status_bytes(&ok), None);
        assert_eq!(
            b64.status_bytes(&failed).unwrap(),
            b"command terminated with non-zero exit code: exit code 3".to_vec()
        );
    }

    #[test]
    fn base64_frames_carry_the_channel_as_a_digit() {
        let b64 = Protocol::websocket("v5.base64.channel.k8s.io").unwrap();
        // wsstream's own example: "foo\n" on stdin.
        assert_eq!(
            decode_inbound(b"0Zm9vCg==", b64),
            Some(Inbound::Data(STDIN, Bytes::from_static(b"foo\n")))
        );
        assert_eq!(decode_inbound(&[255, b'0'], b64), Some(Inbound::Closed(STDIN)));
        assert_eq!(decode_inbound(b"0%%%", b64), None, "bad base64 is dropped");
        match encode(b64, STDOUT, b"\n") {
            Message::Text(t) => assert_eq!(t.as_str(), "1Cg=="),
            other => panic!("expected a text frame, got {other:?}"),
        }
        let bin = Protocol::websocket(V5).unwrap();
        assert_eq!(decode_inbound(&[255, 0], bin), Some(Inbound::Closed(STDIN)));
        assert_eq!(
            decode_inbound(&[0, b'h', b'i'], bin),
            Some(Inbound::Data(STDIN, Bytes::from_static(b"hi")))
        );
        let v4 = Protocol::websocket(V4).unwrap();
        assert_eq!(
            decode_inbound(&[255, 0], v4),
            Some(Inbound::Data(255, Bytes::from_static(&[0]))),
            "before v5, 255 is no close signal"
        );
        match encode(bin, STDERR, b"x") {
            Message::Binary(b) => assert_eq!(&b[..], &[2, b'x']),
            other => panic!("expected a binary frame, got {other:?}"),
        }
    }

    #[test]
    fn resize_streams_split_into_sizes() {
        assert_eq!(
            terminal_sizes(br#"{"Width":100,"Height":30}{"Width":120,"Height":40}"#),
            vec![(100, 30), (120, 40)]
        );
    }

    #[tokio::test]
    async fn spdy_streams_become_channels_and_the_status_ends_them() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let (mut crd, mut cwr) = tokio::io::split(client);
        let mut w = HeaderWriter::default();
        let mut opening = Vec::new();
        for (id, kind) in [(1, "error"), (3, "stdin"), (5, "stdout")] {
            opening.extend(syn_stream(&mut w, id, kind));
        }
        opening.extend(spdy::data(3, 0, b"hello"));
        opening.extend(spdy::data(3, spdy::FLAG_FIN, &[]));
        cwr.write_all(&opening).await.unwrap();
        let expect = Expect::from_query("stdin=true&stdout=true");
        let mut ch = spdy_session(server, expect, Protocol::spdy(V4).unwrap())
            .await
            .unwrap();
        assert_eq!(
            ch.inbound.recv().await,
            Some(Inbound::Data(STDIN, Bytes::from_static(b"hello")))
        );
        assert_eq!(ch.inbound.recv().await, Some(Inbound::Closed(STDIN)));
        assert!(ch.sender.send(STDOUT, Bytes::from_static(b"out")).await);
        ch.sender
            .finish(&serde_json::json!({"status": "Success"}))
            .await;
        ch.closed().await;
        let mut all = Vec::new();
        crd.read_to_end(&mut all).await.unwrap();
        let mut r = &all[..];
        let mut data = Vec::new();
        while let Some(f) = spdy::read_frame(&mut r).await.unwrap() {
            if let Frame::Data {
                stream,
                flags,
                data: d,
            } = f
            {
                data.push((stream, flags, String::from_utf8(d).unwrap()));
            }
        }
        assert_eq!(
            data,
            vec![
                (5, 0, "out".to_string()),
                (1, 0, r#"{"status":"Success"}"#.to_string()),
                (1, spdy::FLAG_FIN, String::new()),
                (5, spdy::FLAG_FIN, String::new()),
            ]
        );
    }
}
