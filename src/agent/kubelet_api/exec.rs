//! `/exec/{ns}/{pod}/{container}`: `kubectl exec` over a websocket with
//! the `v5.channel.k8s.io` (or `v4.channel.k8s.io`) protocol, which
//! kubectl 1.30+ speaks first. Each binary message is `[channel][data]`:
//! 0 stdin, 1 stdout, 2 stderr, 3 the error channel (one `Status` at the
//! end, carrying a non-zero exit code), 4 terminal resize (`{"Width",
//! "Height"}`), and with v5, 255 `[channel]` closes that channel (stdin).
//!
//! Partial: the SPDY/3.1 fallback older clients use for exec is not
//! served (they get 400 and say the upgrade failed).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{HeaderMap, StatusCode};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::KubeletApi;
use crate::agent::runtime::exec::ExecOptions;

pub const V5: &str = "v5.channel.k8s.io";
pub const V4: &str = "v4.channel.k8s.io";

/// A started exec's streams.
pub struct ExecStreams {
    pub stdin: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    pub stdout: Option<Box<dyn AsyncRead + Send + Unpin>>,
    pub stderr: Option<Box<dyn AsyncRead + Send + Unpin>>,
}

/// Controls a started exec.
#[async_trait]
pub trait ExecControl: Send + Sync {
    async fn resize(&self, width: u16, height: u16);
    /// Called after stdin's writer was dropped.
    async fn close_stdin(&self);
    async fn wait(&self) -> Result<i32, String>;
    async fn cleanup(&self);
}

/// Runs commands in a pod's container (containerd in production).
#[async_trait]
pub trait ExecBackend: Send + Sync {
    async fn exec(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        opts: ExecOptions,
    ) -> Result<(ExecStreams, Box<dyn ExecControl>), String>;
}

/// Parses kubelet's exec query (`command` repeats).
pub fn exec_options(query: &str) -> ExecOptions {
    let mut o = ExecOptions::default();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        let on = super::query_bool(&v);
        match k.as_ref() {
            "command" => o.command.push(v.into_owned()),
            "stdin" => o.stdin = on,
            "stdout" => o.stdout = on,
            "stderr" => o.stderr = on,
            "tty" => o.tty = on,
            _ => {}
        }
    }
    o
}

/// The first protocol the client offers that we speak.
fn negotiate(headers: &HeaderMap) -> Option<&'static str> {
    let offered = headers.get_all(http::header::SEC_WEBSOCKET_PROTOCOL);
    offered
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find_map(|p| [V5, V4].into_iter().find(|ours| *ours == p))
}

/// The error-channel `Status` for an exit code, worded as the kubelet words it.
pub fn exit_status(command: &[String], code: i32) -> serde_json::Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("command terminated with non-zero exit code: error executing command [{}], exit code {code}", command.join(" ")),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

/// A Close with 1000: client-go turns anything else (even "no status")
/// into an error on every stream, including the exit status just sent.
fn normal_close() -> Message {
    Message::Close(Some(axum::extract::ws::CloseFrame {
        code: axum::extract::ws::close_code::NORMAL,
        reason: "".into(),
    }))
}

fn failure(message: &str) -> serde_json::Value {
    json!({"metadata": {}, "status": "Failure", "message": message, "reason": "InternalError", "code": 500})
}

pub(super) async fn handler(
    State(api): State<Arc<KubeletApi>>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let (Ok(ws), Some(protocol)) = (ws, negotiate(&headers)) else {
        return (
            StatusCode::BAD_REQUEST,
            "exec needs a websocket upgrade with v5.channel.k8s.io or v4.channel.k8s.io (SPDY is not supported by rk3s)\n",
        )
            .into_response();
    };
    let Some(backend) = api.exec.clone() else {
        return (
            StatusCode::NOT_IMPLEMENTED,
            "exec is not available on this node\n",
        )
            .into_response();
    };
    let opts = exec_options(query.as_deref().unwrap_or(""));
    ws.protocols([protocol])
        .on_upgrade(move |socket| async move {
            run(socket, backend, ns, pod, container, opts, protocol == V5).await
        })
}

async fn pump(mut from: Box<dyn AsyncRead + Send + Unpin>, channel: u8, tx: mpsc::Sender<Message>) {
    let mut buf = vec![0u8; 32 * 1024];
    buf[0] = channel;
    loop {
        match from.read(&mut buf[1..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx
                    .send(Message::Binary(Bytes::copy_from_slice(&buf[..=n])))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

async fn run(
    socket: WebSocket,
    backend: Arc<dyn ExecBackend>,
    ns: String,
    pod: String,
    container: String,
    opts: ExecOptions,
    v5: bool,
) {
    let (mut sink, mut source) = socket.split();
    let command = opts.command.clone();
    let (streams, control) = match backend.exec(&ns, &pod, &container, opts).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(%pod, %container, "exec failed: {e}");
            let mut msg = vec![3u8];
            msg.extend_from_slice(failure(&e).to_string().as_bytes());
            let _ = sink.send(Message::Binary(msg.into())).await;
            let _ = sink.send(normal_close()).await;
            return;
        }
    };
    let (tx, mut rx) = mpsc::channel::<Message>(16);
    let mut outputs = Vec::new();
    if let Some(out) = streams.stdout {
        outputs.push(tokio::spawn(pump(out, 1, tx.clone())));
    }
    if let Some(err) = streams.stderr {
        outputs.push(tokio::spawn(pump(err, 2, tx.clone())));
    }
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.send(m).await.is_err() {
                break;
            }
        }
        sink
    });
    let control: Arc<dyn ExecControl> = Arc::from(control);
    let ctl = control.clone();
    let mut stdin = streams.stdin;
    let input = tokio::spawn(async move {
        while let Some(Ok(msg)) = source.next().await {
            let data = match msg {
                Message::Binary(b) => b,
                Message::Close(_) => break,
                _ => continue,
            };
            match (data.first(), &data[1.min(data.len())..]) {
                (Some(0), rest) => {
                    if let Some(w) = stdin.as_mut() {
                        if w.write_all(rest).await.is_err() {
                            stdin = None;
                        }
                    }
                }
                (Some(4), rest) => {
                    if let Ok(size) = serde_json::from_slice::<serde_json::Value>(rest) {
                        let w = size["Width"].as_u64().unwrap_or(80) as u16;
                        let h = size["Height"].as_u64().unwrap_or(24) as u16;
                        ctl.resize(w, h).await;
                    }
                }
                (Some(255), [0, ..]) if v5 => {
                    if let Some(mut w) = stdin.take() {
                        let _ = w.shutdown().await;
                    }
                    ctl.close_stdin().await;
                }
                _ => {}
            }
        }
        // The client went: stdin ends too.
        if let Some(mut w) = stdin.take() {
            let _ = w.shutdown().await;
            ctl.close_stdin().await;
        }
    });
    let code = control.wait().await;
    tracing::debug!(%pod, %container, ?code, "exec finished");
    // Drain what the process wrote before it exited (bounded, in case a
    // child it left behind keeps the pipe open).
    for o in outputs {
        let _ = tokio::time::timeout(Duration::from_secs(2), o).await;
    }
    let status = match code {
        Ok(c) => exit_status(&command, c),
        Err(e) => failure(&e),
    };
    let mut msg = vec![3u8];
    msg.extend_from_slice(status.to_string().as_bytes());
    let _ = tx.send(Message::Binary(msg.into())).await;
    let _ = tx.send(normal_close()).await;
    drop(tx);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    input.abort();
    control.cleanup().await;
}

/// The containerd backend: the pod's running container by its labels.
pub struct ContainerdExec {
    pub runtime: Arc<crate::agent::runtime::ContainerdRuntime>,
    /// Where exec FIFOs are made (`/run/rk3s/exec`).
    pub fifo_root: std::path::PathBuf,
}

struct ContainerdControl {
    process: Arc<crate::agent::runtime::exec::ExecProcess>,
}

#[async_trait]
impl ExecControl for ContainerdControl {
    async fn resize(&self, width: u16, height: u16) {
        self.process.resize(width, height).await;
    }
    async fn close_stdin(&self) {
        self.process.close_stdin().await;
    }
    async fn wait(&self) -> Result<i32, String> {
        self.process.wait().await.map_err(|e| e.to_string())
    }
    async fn cleanup(&self) {
        self.process.cleanup().await;
    }
}

#[async_trait]
impl ExecBackend for ContainerdExec {
    async fn exec(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        opts: ExecOptions,
    ) -> Result<(ExecStreams, Box<dyn ExecControl>), String> {
        use crate::agent::runtime::{labels, ContainerRuntime, ContainerState};
        let selector = [
            (labels::POD_NAMESPACE, namespace),
            (labels::POD_NAME, pod),
            (labels::CONTAINER_NAME, container),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let mut candidates = self
            .runtime
            .list(&selector)
            .await
            .map_err(|e| e.to_string())?;
        candidates.sort_by_key(|c| {
            std::cmp::Reverse(
                c.label(labels::RESTART_COUNT)
                    .and_then(|n| n.parse::<u32>().ok())
                    .unwrap_or(0),
            )
        });
        let mut running = None;
        for c in candidates {
            if matches!(
                self.runtime.status(&c.id).await.map(|s| s.state),
                Ok(ContainerState::Running)
            ) {
                running = Some(c.id);
                break;
            }
        }
        let id = running.ok_or_else(|| {
            format!("container {container} is not running in pod {namespace}/{pod}")
        })?;
        let (process, io) = self
            .runtime
            .exec(&id, &opts, &self.fifo_root)
            .await
            .map_err(|e| e.to_string())?;
        let streams = ExecStreams {
            stdin: io
                .stdin
                .map(|s| Box::new(s) as Box<dyn AsyncWrite + Send + Unpin>),
            stdout: io
                .stdout
                .map(|s| Box::new(s) as Box<dyn AsyncRead + Send + Unpin>),
            stderr: io
                .stderr
                .map(|s| Box::new(s) as Box<dyn AsyncRead + Send + Unpin>),
        };
        Ok((
            streams,
            Box::new(ContainerdControl {
                process: Arc::new(process),
            }),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_status_follow_the_kubelet() {
        let o = exec_options(
            "command=sh&command=-c&command=exit+3&stdin=true&stdout=true&tty=false&container=x",
        );
        assert_eq!(o.command, vec!["sh", "-c", "exit 3"]);
        assert!(o.stdin && o.stdout && !o.stderr && !o.tty);
        let s = exit_status(&o.command, 3);
        assert_eq!(s["details"]["causes"][0]["message"], "3");
        assert_eq!(s["message"], "command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3");
        assert_eq!(
            exit_status(&o.command, 0),
            json!({"metadata": {}, "status": "Success"})
        );
        let mut h = HeaderMap::new();
        h.insert(
            http::header::SEC_WEBSOCKET_PROTOCOL,
            "v4.channel.k8s.io, v5.channel.k8s.io".parse().unwrap(),
        );
        assert_eq!(negotiate(&h), Some(V4));
        h.insert(
            http::header::SEC_WEBSOCKET_PROTOCOL,
            "base64.channel.k8s.io".parse().unwrap(),
        );
        assert_eq!(negotiate(&h), None);
    }
}
