//! `/attach/{ns}/{pod}/{container}`: `kubectl attach` over the v5 (or v4)
//! websocket protocol. The container's output is streamed from its CRI log
//! as it is written (containers run under the log shim, so their stdout
//! and stderr are the log), on the stdout channel.
//!
//! Partial: containers are started without an open stdin, so attaching
//! stdin (`kubectl attach -i`) is refused with a Status saying so, and a
//! TTY container's output is not a terminal stream.

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{HeaderMap, StatusCode};
use serde_json::json;

use super::exec::{V4, V5};
use super::{logs, query_bool, KubeletApi};

pub(super) async fn handler(
    State(api): State<Arc<KubeletApi>>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let offered: Vec<String> = headers
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_string()))
        .collect();
    let protocol = offered.iter().find_map(|p| [V5, V4].into_iter().find(|ours| ours == p));
    let (Ok(ws), Some(protocol)) = (ws, protocol) else {
        return (StatusCode::BAD_REQUEST, "attach needs a websocket upgrade with v5.channel.k8s.io or v4.channel.k8s.io\n")
            .into_response();
    };
    let stdin = form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes())
        .any(|(k, v)| k == "stdin" && query_bool(&v));
    ws.protocols([protocol]).on_upgrade(move |socket| run(socket, api, ns, pod, container, stdin))
}

fn status_message(status: serde_json::Value) -> Message {
    let mut m = vec![3u8];
    m.extend_from_slice(status.to_string().as_bytes());
    Message::Binary(m.into())
}

fn normal_close() -> Message {
    Message::Close(Some(axum::extract::ws::CloseFrame { code: axum::extract::ws::close_code::NORMAL, reason: "".into() }))
}

async fn run(socket: WebSocket, api: Arc<KubeletApi>, ns: String, pod: String, container: String, stdin: bool) {
    let (mut sink, mut source) = socket.split();
    let fail = |message: String| json!({"metadata": {}, "status": "Failure", "message": message, "reason": "BadRequest", "code": 400});
    if stdin {
        let _ = sink
            .send(status_message(fail(format!(
                "attaching to the stdin of container {container} is not supported by rk3s: containers run without an open stdin; use kubectl exec -i"
            ))))
            .await;
        let _ = sink.send(normal_close()).await;
        return;
    }
    let opts = logs::LogOptions { follow: true, tail_lines: Some(0), ..Default::default() };
    let (path, restart) = match logs::select_file(&api.log_root, &ns, &pod, &container, &opts) {
        Ok(f) => f,
        Err(logs::LogError::NotFound(m) | logs::LogError::BadRequest(m)) => {
            let _ = sink.send(status_message(fail(m))).await;
            let _ = sink.send(normal_close()).await;
            return;
        }
    };
    let mut output = logs::stream(path, restart, opts);
    loop {
        tokio::select! {
            chunk = output.recv() => match chunk {
                Some(bytes) => {
                    let mut m = Vec::with_capacity(bytes.len() + 1);
                    m.push(1u8);
                    m.extend_from_slice(&bytes);
                    if sink.send(Message::Binary(Bytes::from(m))).await.is_err() {
                        return;
                    }
                }
                None => break,
            },
            msg = source.next() => match msg {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                _ => {}
            },
        }
    }
    let _ = sink.send(status_message(json!({"metadata": {}, "status": "Success"}))).await;
    let _ = sink.send(normal_close()).await;
}
