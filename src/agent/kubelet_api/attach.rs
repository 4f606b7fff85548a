//! `/attach/{ns}/{pod}/{container}`: `kubectl attach`, over a websocket or
//! SPDY/3.1 (see [`super::channels`]). The container's output is streamed from its CRI log
//! as it is written (containers run under the log shim, so their stdout
//! and stderr are the log), on the stdout channel.
//!
//! Partial: containers are started without an open stdin, so attaching
//! stdin (`kubectl attach -i`) is refused with a Status saying so, and a
//! TTY container's output is not a terminal stream.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::response::Response;
use bytes::Bytes;
use serde_json::json;

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
    if stdin {
        ch.sender
            .finish(&fail(format!(
                "attaching to the stdin of container {container} is not supported by rk3s: containers run without an open stdin; use kubectl exec -i"
            )))
            .await;
        ch.closed().await;
        return;
    }
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
    let mut output = logs::stream(path, restart, opts);
    let Channels {
        sender,
        mut inbound,
        done,
    } = ch;
    loop {
        tokio::select! {
            chunk = output.recv() => match chunk {
                Some(bytes) => {
                    if !sender.send(channels::STDOUT, Bytes::from(bytes)).await {
                        return;
                    }
                }
                None => break,
            },
            event = inbound.recv() => match event {
                None => return,
                Some(Inbound::Data(..) | Inbound::Closed(_)) => {}
            },
        }
    }
    sender
        .finish(&json!({"metadata": {}, "status": "Success"}))
        .await;
    drop(sender);
    done.wait().await;
}
