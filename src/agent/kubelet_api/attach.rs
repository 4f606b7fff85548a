//! `/attach/{ns}/{pod}/{container}`: `kubectl attach`, over a websocket or
//! SPDY/3.1 (see [`super::channels`]). The container's output is streamed from its CRI log
//! as it is written (containers run under the log shim, so their stdout
//! and stderr are the log), on the stdout channel.
//!
//! With `-i`, the client's stdin goes to the container's stdin FIFO (only
//! containers started with `stdin: true` have one). It stays open across
//! sessions (containerd's shim holds a writer); with `stdinOnce` the end
//! of the first session's stdin closes it (`Tasks.CloseIO`), as Kubernetes
//! specifies. With a terminal, resizes go to the task's pty.
//!
//! Partial: the output comes from the CRI log, so a terminal's output
//! reaches the client as the log records it (line-buffered, as kubelet's
//! log-based attach would), not byte for byte as typed.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::response::Response;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::channels::{self, Channels, Expect, Inbound};
use super::{logs, KubeletApi};

pub(super) async fn handler(
    State(api): State<Arc<KubeletApi>>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    let expect = Expect::from_query(req.uri().query().unwrap_or(""));
    channels::accept(req, "attach", expect, move |ch| {
        run(ch, api, ns, pod, container, expect.stdin)
    })
    .await
}

async fn run(
    ch: Channels,
    api: Arc<KubeletApi>,
    ns: String,
    pod: String,
    container: String,
    stdin: bool,
) {
    let fail = |message: String| json!({"metadata": {}, "status": "Failure", "message": message, "reason": "BadRequest", "code": 400});
    let attached = match (stdin, api.exec.as_ref()) {
        (false, _) => None,
        (true, None) => Some(Err(format!(
            "attaching to the stdin of container {container} is not available on this node"
        ))),
        (true, Some(backend)) => Some(backend.attach_stdin(&ns, &pod, &container).await),
    };
    let (mut input, once, control) = match attached {
        None => (None, false, None),
        Some(Ok(a)) => (Some(a.stdin), a.once, Some(a.control)),
        Some(Err(e)) => {
            ch.sender.finish(&fail(e)).await;
            ch.closed().await;
            return;
        }
    };
    let opts = logs::LogOptions {
        follow: true,
        tail_lines: Some(0),
        ..Default::default()
    };
    let (path, restart) = match logs::select_file(&api.log_root, &ns, &pod, &container, &opts) {
        Ok(f) => f,
        Err(logs::LogError::NotFound(m) | logs::LogError::BadRequest(m)) => {
            ch.sender.finish(&fail(m)).await;
            ch.closed().await;
            return;
        }
    };
    let mut output = logs::stream(path, restart, opts, None);
    let Channels {
        sender,
        mut inbound,
        done,
    } = ch;
    loop {
        tokio::select! {
            chunk = output.recv() => match chunk {
                Some(bytes) => {
                    if !sender.send(channels::STDOUT, bytes).await {
                        return;
                    }
                }
                None => break,
            },
            event = inbound.recv() => match event {
                // The client went: for stdinOnce, its stdin ends with it.
                None => {
                    if let (true, Some(c)) = (once && input.is_some(), control.as_ref()) {
                        c.close_stdin().await;
                    }
                    return;
                }
                Some(Inbound::Data(channels::STDIN, data)) => {
                    if let Some(w) = input.as_mut() {
                        if w.write_all(&data).await.is_err() {
                            input = None;
                        }
                    }
                }
                Some(Inbound::Closed(channels::STDIN)) => {
                    input = None;
                    if let (true, Some(c)) = (once, control.as_ref()) {
                        c.close_stdin().await;
                    }
                }
                Some(Inbound::Data(channels::RESIZE, data)) => {
                    if let Some(t) = control.as_ref() {
                        for (w, h) in channels::terminal_sizes(&data) {
                            t.resize(w, h).await;
                        }
                    }
                }
                Some(_) => {}
            },
        }
    }
    sender
        .finish(&json!({"metadata": {}, "status": "Success"}))
        .await;
    drop(sender);
    done.wait().await;
}
