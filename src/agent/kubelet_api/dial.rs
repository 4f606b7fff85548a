//! `/rk3s/podDial/{ns}/{pod}/{uid}/{addr}`: a raw TCP connection to a
//! pod, for the API server's `pods/proxy` and `services/proxy`.
//!
//! kube-apiserver dials pod IPs itself; rk3s's server never connects to a
//! node (pods may sit behind a node without inbound connectivity), so the
//! API server asks the pod's kubelet, through the tunnel, for a connection:
//! an HTTP/1.1 request with `Upgrade: rk3s-tcp`, answered by a 101 after
//! which the stream carries the pod connection's bytes. The HTTP the
//! client speaks (and TLS for `https:` targets) stays the API server's
//! business; this endpoint only connects.
//!
//! The socket is made inside the pod's network namespace (found by the
//! pod's uid), so the address must be one of the pod's own: a request
//! cannot reach the node's or another pod's services through it.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use hyper_util::rt::TokioIo;

use super::KubeletApi;

/// The upgrade token of a pod dial.
pub const UPGRADE: &str = "rk3s-tcp";

pub(super) async fn handler(
    State(api): State<Arc<KubeletApi>>,
    Path((ns, pod, uid, addr)): Path<(String, String, String, String)>,
    mut req: Request,
) -> Response {
    let Some(backend) = api.port_forward.clone() else {
        return (
            StatusCode::NOT_IMPLEMENTED,
            "connecting to pods is not available on this node\n",
        )
            .into_response();
    };
    let Ok(addr) = addr.parse::<SocketAddr>() else {
        return (
            StatusCode::BAD_REQUEST,
            format!("{addr:?} is not an IP address and port\n"),
        )
            .into_response();
    };
    let upgrade_asked = req
        .headers()
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(UPGRADE));
    if !upgrade_asked {
        return (
            StatusCode::BAD_REQUEST,
            format!("a pod dial needs `Upgrade: {UPGRADE}`\n"),
        )
            .into_response();
    }
    let tcp = match backend.connect_addr(&ns, &pod, &uid, addr).await {
        Ok(t) => t,
        Err(e) => {
            return (
                StatusCode::BAD_GATEWAY,
                format!("error dialing pod {ns}/{pod} at {addr}: {e}\n"),
            )
                .into_response()
        }
    };
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(io) => {
                let mut tcp = tcp;
                let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(io), &mut tcp).await;
            }
            Err(e) => tracing::debug!("pod dial upgrade failed: {e}"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::CONNECTION, "Upgrade")
        .header(http::header::UPGRADE, UPGRADE)
        .body(Body::empty())
        .expect("valid response")
}
