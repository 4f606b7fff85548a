//! `/exec/{ns}/{pod}/{container}`: `kubectl exec`, over a websocket
//! (`v5.channel.k8s.io`/`v4`, kubectl 1.30+) or SPDY/3.1 (`v4`, older
//! kubectl); [`super::channels`] makes both one set of numbered channels:
//! 0 stdin, 1 stdout, 2 stderr, 3 the error channel (one `Status` at the
//! end, carrying a non-zero exit code), 4 terminal resize (`{"Width",
//! "Height"}`), and closing stdin (a v5 close message, or a SPDY FIN).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::StatusCode;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::channels::{self, ChannelSender, Channels, Expect, Inbound};
use super::KubeletApi;
use crate::agent::runtime::exec::ExecOptions;

pub use super::channels::{V4, V5};

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

    /// Opens the stdin of the pod's running container (one started with
    /// `stdin: true`).
    async fn attach_stdin(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> Result<Attached, String>;
}

/// A running container's stdin, for `kubectl attach -i`.
pub struct Attached {
    pub stdin: Box<dyn AsyncWrite + Send + Unpin>,
    /// `stdinOnce`: stdin closes when this session's stdin ends.
    pub once: bool,
    pub control: Box<dyn AttachControl>,
}

/// Acts on an attached container's main process.
#[async_trait]
pub trait AttachControl: Send + Sync {
    /// Resizes its terminal (nothing without one).
    async fn resize(&self, width: u16, height: u16);
    /// Closes its stdin for good.
    async fn close_stdin(&self);
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

fn failure(message: &str) -> serde_json::Value {
    json!({"metadata": {}, "status": "Failure", "message": message, "reason": "InternalError", "code": 500})
}

pub(super) async fn handler(
    State(api): State<Arc<KubeletApi>>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    let Some(backend) = api.exec.clone() else {
        return (
            StatusCode::NOT_IMPLEMENTED,
            "exec is not available on this node\n",
        )
            .into_response();
    };
    let query = req.uri().query().unwrap_or("").to_string();
    let opts = exec_options(&query);
    channels::accept(req, "exec", Expect::from_query(&query), move |ch| {
        run(ch, backend, ns, pod, container, opts)
    })
    .await
}

/// Copies `from` to `channel` until it ends.
pub(super) async fn pump(
    mut from: Box<dyn AsyncRead + Send + Unpin>,
    channel: u8,
    tx: ChannelSender,
) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if !tx.send(channel, Bytes::copy_from_slice(&buf[..n])).await {
                    return;
                }
            }
        }
    }
}

/// Feeds the client's stdin and resizes to a process until the client
/// closes stdin or goes.
pub(super) async fn feed_input(
    mut inbound: tokio::sync::mpsc::Receiver<Inbound>,
    mut stdin: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    control: Arc<dyn ExecControl>,
) {
    while let Some(event) = inbound.recv().await {
        match event {
            Inbound::Data(channels::STDIN, data) => {
                if let Some(w) = stdin.as_mut() {
                    if w.write_all(&data).await.is_err() {
                        stdin = None;
                    }
                }
            }
            Inbound::Data(channels::RESIZE, data) => {
                for (w, h) in channels::terminal_sizes(&data) {
                    control.resize(w, h).await;
                }
            }
            Inbound::Closed(channels::STDIN) => {
                if let Some(mut w) = stdin.take() {
                    let _ = w.shutdown().await;
                }
                control.close_stdin().await;
            }
            _ => {}
        }
    }
    // The client went: stdin ends too.
    if let Some(mut w) = stdin.take() {
        let _ = w.shutdown().await;
        control.close_stdin().await;
    }
}

async fn run(
    ch: Channels,
    backend: Arc<dyn ExecBackend>,
    ns: String,
    pod: String,
    container: String,
    opts: ExecOptions,
) {
    let command = opts.command.clone();
    let (streams, control) = match backend.exec(&ns, &pod, &container, opts).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(%pod, %container, "exec failed: {e}");
            ch.sender.finish(&failure(&e)).await;
            ch.closed().await;
            return;
        }
    };
    let mut outputs = Vec::new();
    if let Some(out) = streams.stdout {
        outputs.push(tokio::spawn(pump(out, channels::STDOUT, ch.sender.clone())));
    }
    if let Some(err) = streams.stderr {
        outputs.push(tokio::spawn(pump(err, channels::STDERR, ch.sender.clone())));
    }
    let control: Arc<dyn ExecControl> = Arc::from(control);
    let Channels {
        sender,
        inbound,
        done,
    } = ch;
    let input = tokio::spawn(feed_input(inbound, streams.stdin, control.clone()));
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
    sender.finish(&status).await;
    drop(sender);
    done.wait().await;
    input.abort();
    control.cleanup().await;
}

/// The containerd backend: the pod's running container by its labels.
pub struct ContainerdExec {
    pub runtime: Arc<crate::agent::runtime::ContainerdRuntime>,
    /// Where exec FIFOs are made (the agent's `RunDir::exec_fifos`).
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

impl ContainerdExec {
    /// The pod's running container (its newest start) and its labels.
    async fn running(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> Result<
        (
            crate::agent::runtime::ContainerId,
            std::collections::BTreeMap<String, String>,
        ),
        String,
    > {
        use crate::agent::runtime::{labels, ContainerRuntime, ContainerState};
        let selector = labels::container_selector(namespace, pod, container);
        let mut candidates = self
            .runtime
            .list(&selector)
            .await
            .map_err(|e| e.to_string())?;
        candidates.sort_by_key(|c| std::cmp::Reverse(c.restart_count()));
        for c in candidates {
            if matches!(
                self.runtime.status(&c.id).await.map(|s| s.state),
                Ok(ContainerState::Running)
            ) {
                return Ok((c.id, c.labels));
            }
        }
        Err(format!(
            "container {container} is not running in pod {namespace}/{pod}"
        ))
    }
}

struct ContainerdAttach {
    runtime: Arc<crate::agent::runtime::ContainerdRuntime>,
    id: crate::agent::runtime::ContainerId,
    tty: bool,
}

#[async_trait]
impl AttachControl for ContainerdAttach {
    async fn resize(&self, width: u16, height: u16) {
        if self.tty {
            self.runtime.resize_terminal(&self.id, width, height).await;
        }
    }
    async fn close_stdin(&self) {
        self.runtime.close_stdin(&self.id).await;
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
        let (id, _) = self.running(namespace, pod, container).await?;
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

    async fn attach_stdin(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> Result<Attached, String> {
        use crate::agent::runtime::labels;
        let (id, container_labels) = self.running(namespace, pod, container).await?;
        if !container_labels.contains_key(labels::STDIN) {
            return Err(format!(
                "container {container} in pod {namespace}/{pod} was not started with stdin: true, so it has no stdin to attach to"
            ));
        }
        let fifo = self.runtime.stdin_fifo(&id);
        let stdin = tokio::net::unix::pipe::OpenOptions::new()
            .open_sender(&fifo)
            .map_err(|e| format!("failed to open the stdin of container {container}: {e}"))?;
        Ok(Attached {
            stdin: Box::new(stdin),
            once: container_labels
                .get(labels::STDIN)
                .is_some_and(|m| m == "once"),
            control: Box::new(ContainerdAttach {
                runtime: self.runtime.clone(),
                tty: container_labels
                    .get(labels::TTY)
                    .is_some_and(|t| t == "true"),
                id,
            }),
        })
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
    }
}
