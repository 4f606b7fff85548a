//! The kubelet API the API server reaches through the node's tunnel (never
//! on a TCP port by default): `/healthz` and `/containerLogs/...`.
//!
//! `/exec/...` runs commands through an [`exec::ExecBackend`] (containerd
//! in production) over the v5 websocket protocol.
//!
//! `/portForward/...` serves `kubectl port-forward` (SPDY/3.1, inside a
//! websocket or after an SPDY upgrade) through a
//! [`portforward::PortForwardBackend`] (the pod's network namespace).
//!
//! `/attach/...` streams a container's output (see [`attach`] for what is
//! partial).
//!
//! `/rk3s/podDial/...` connects the API server's `pods/proxy` and
//! `services/proxy` to a pod ([`dial`]); `nodes/proxy` reaches these routes
//! themselves, and `/rk3s/nodeDial/...` the node's other ports
//! (`nodes/NAME:PORT/proxy`).

pub mod attach;
pub mod channels;
pub mod dial;
pub mod exec;
pub mod logs;
pub mod portforward;
pub mod portforward_channels;
mod pump;
pub mod spdy;

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use futures::StreamExt;
use http::StatusCode;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;

use crate::tunnel::AcceptHandler;

/// A boolean query parameter as the kubelet reads it (Go's
/// `strconv.ParseBool`: `1 t T TRUE true True`); clients differ (the
/// Python client sends `True`).
pub fn query_bool(v: &str) -> bool {
    matches!(v, "1" | "t" | "T" | "TRUE" | "true" | "True")
}

/// What the kubelet API serves from.
#[derive(Clone, Debug)]
pub struct KubeletApiOptions {
    /// `/var/log/pods` in production.
    pub log_root: PathBuf,
}

/// The kubelet API's state.
pub struct KubeletApi {
    pub log_root: PathBuf,
    /// Runs `kubectl exec` commands; `None` answers 501.
    pub exec: Option<Arc<dyn exec::ExecBackend>>,
    /// Connects `kubectl port-forward` to pods; `None` answers 501.
    pub port_forward: Option<Arc<dyn portforward::PortForwardBackend>>,
    /// Tells a followed log when its container has stopped; `None`: a
    /// follow ends only on a restart, the pod's removal or the client.
    pub liveness: Option<Arc<dyn logs::ContainerLiveness>>,
}

/// The kubelet API without exec (logs only).
pub fn router(opts: KubeletApiOptions) -> Router {
    router_with(KubeletApi {
        log_root: opts.log_root,
        exec: None,
        port_forward: None,
        liveness: None,
    })
}

pub fn router_with(api: KubeletApi) -> Router {
    let state = Arc::new(api);
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/containerLogs/{ns}/{pod}/{container}", get(container_logs))
        .route("/exec/{ns}/{pod}/{container}", any(exec::handler))
        .route("/attach/{ns}/{pod}/{container}", any(attach::handler))
        .route("/portForward/{ns}/{pod}/{uid}", any(portforward::handler))
        .route("/rk3s/podDial/{ns}/{pod}/{uid}/{addr}", any(dial::handler))
        .route("/rk3s/nodeDial/{addr}", any(dial::node_handler))
        .with_state(state)
}

async fn container_logs(
    State(opts): State<Arc<KubeletApi>>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let options = match logs::LogOptions::from_query(query.as_deref().unwrap_or("")) {
        Ok(o) => o,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    match logs::select_file(&opts.log_root, &ns, &pod, &container, &options) {
        Ok((path, restart)) => {
            let watch = opts
                .liveness
                .clone()
                .map(|l| logs::Liveness::new(l, &ns, &pod, &container));
            let rx = logs::stream(path, restart, options, watch);
            let body = tokio_stream::wrappers::ReceiverStream::new(rx)
                .map(Ok::<_, std::convert::Infallible>);
            Response::builder()
                .header(http::header::CONTENT_TYPE, "text/plain")
                .body(Body::from_stream(body))
                .expect("valid response")
        }
        Err(logs::LogError::NotFound(m)) => (StatusCode::NOT_FOUND, m).into_response(),
        Err(logs::LogError::BadRequest(m)) => (StatusCode::BAD_REQUEST, m).into_response(),
    }
}

/// The tunnel handler of an agent: `kubelet` streams get HTTP/1.1 (with
/// upgrades) served by `router`; any other target is refused.
pub fn tunnel_handler(router: Router) -> AcceptHandler {
    Arc::new(move |target: String, stream: tokio::io::DuplexStream| {
        if target != crate::tunnel::KUBELET {
            tracing::warn!(%target, "refusing a tunnel stream to an unknown target");
            return;
        }
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!("kubelet API connection ended: {e}");
            }
        });
    })
}
