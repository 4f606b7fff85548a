//! The stream protocol of `kubectl exec` and `kubectl attach`
//! (`*.channel.k8s.io`), over either transport kubectl speaks:
//!
//! - a websocket (`v5.channel.k8s.io` or `v4.channel.k8s.io`, kubectl
//!   1.30+), where each binary message is `[channel][data]` and, with v5,
//!   `[255][channel]` closes a channel;
//! - SPDY/3.1 after a plain `Upgrade: SPDY/3.1` with
//!   `X-Stream-Protocol-Version: v5.channel.k8s.io` or `v4` (kubectl before
//!   1.30, and client-go's fallback; over SPDY the two are the same), where the client opens one SPDY stream per
//!   channel, named by its `streamType` header, and a FIN closes it.
//!
//! Both become one [`Channels`] value: numbered channels (0 stdin, 1
//! stdout, 2 stderr, 3 error, 4 resize) in and out, so exec and attach are
//! written once over both transports.
//!
//! Partial: only v5 and v4 are served over SPDY (kubectl 1.27–1.29 offer
//! them first); v3/v2/v1 (an error channel of plain text) get 400.

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
    Finish(Bytes),
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
            .send(Outbound::Finish(Bytes::from(status.to_string())))
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
    let ws_protocol = offered(&headers, "sec-websocket-protocol")
        .find_map(|p| [V5, V4].into_iter().find(|ours| *ours == p));
    if let Some(protocol) = ws_protocol {
        let (mut parts, _) = req.into_parts();
        return match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(ws) => ws
                .protocols([protocol])
                .on_upgrade(move |socket| session(websocket(socket, protocol == V5)))
                .into_response(),
            Err(e) => e.into_response(),
        };
    }
    let spdy = offered(&headers, "upgrade").any(|u| u.eq_ignore_ascii_case("SPDY/3.1"));
    if spdy {
        // v5 over SPDY is v4 (closing stdin is a FIN either way).
        let Some(version) = offered(&headers, "x-stream-protocol-version")
            .find_map(|p| [V5, V4].into_iter().find(|ours| *ours == p))
        else {
            return (
                StatusCode::BAD_REQUEST,
                format!("{what} over SPDY needs X-Stream-Protocol-Version {V5} or {V4} (older protocols are not served by rk3s)\n"),
            )
                .into_response();
        };
        let mut req = req;
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(io) = upgrade.await else { return };
            match spdy_session(TokioIo::new(io), expect).await {
                Ok(channels) => session(channels).await,
                Err(e) => tracing::debug!("SPDY stream session not started: {e}"),
            }
        });
        return Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(http::header::CONNECTION, "Upgrade")
            .header(http::header::UPGRADE, "SPDY/3.1")
            .header("X-Stream-Protocol-Version", version)
            .body(axum::body::Body::empty())
            .expect("valid response");
    }
    (
        StatusCode::BAD_REQUEST,
        format!("{what} needs a websocket upgrade or an SPDY/3.1 upgrade, with {V5} or {V4}\n"),
    )
        .into_response()
}

/// The websocket transport.
pub fn websocket(socket: WebSocket, v5: bool) -> Channels {
    let (mut sink, mut source) = socket.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Outbound>(16);
    let (in_tx, in_rx) = mpsc::channel::<Inbound>(16);
    let reader = tokio::spawn(async move {
        while let Some(Ok(msg)) = source.next().await {
            let data = match msg {
                Message::Binary(b) => b,
                Message::Close(_) => break,
                _ => continue,
            };
            let event = match (data.first(), data.get(1)) {
                (Some(255), Some(&ch)) if v5 => Inbound::Closed(ch),
                (Some(&ch), _) => Inbound::Data(ch, data.slice(1..)),
                _ => continue,
            };
            if in_tx.send(event).await.is_err() {
                break;
            }
        }
    });
    let done = tokio::spawn(async move {
        while let Some(out) = out_rx.recv().await {
            let (frame, last) = match out {
                Outbound::Data(ch, data) => (framed(ch, &data), false),
                Outbound::Finish(status) => (framed(ERROR, &status), true),
            };
            if sink.send(Message::Binary(frame.into())).await.is_err() {
                break;
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
                    if let Some(&id) = streams.get(&ERROR) {
                        let _ = frames_tx.send(spdy::data(id, 0, &status)).await;
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
        let mut ch = spdy_session(server, expect).await.unwrap();
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
