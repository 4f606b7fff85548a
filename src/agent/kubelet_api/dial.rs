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
//!
//! `/rk3s/nodeDial/{addr}` is the same for `nodes/NAME:PORT/proxy` (kube
//! proxies those to the node's address on that port): the socket is made
//! in the agent's own network namespace, and only to an address the node
//! holds (one a socket can be bound to), so it reaches the node's own
//! services and nothing behind it.

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
    req: Request,
) -> Response {
    let Some(backend) = api.port_forward.clone() else {
        return (
            StatusCode::NOT_IMPLEMENTED,
            "connecting to pods is not available on this node\n",
        )
            .into_response();
    };
    let addr = match dial_target(&addr, &req) {
        Ok(a) => a,
        Err(refused) => return refused,
    };
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
    splice(req, tcp)
}

/// `/rk3s/nodeDial/{addr}`: a TCP connection to one of the node's own
/// addresses.
pub(super) async fn node_handler(Path(addr): Path<String>, req: Request) -> Response {
    let addr = match dial_target(&addr, &req) {
        Ok(a) => a,
        Err(refused) => return refused,
    };
    if !is_local(addr.ip()) {
        return (
            StatusCode::FORBIDDEN,
            format!("{} is not an address of this node\n", addr.ip()),
        )
            .into_response();
    }
    match tokio::net::TcpStream::connect(addr).await {
        Ok(tcp) => splice(req, tcp),
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            format!("error dialing the node at {addr}: {e}\n"),
        )
            .into_response(),
    }
}

/// Whether `ip` is one of this network namespace's own addresses: only a
/// local address can be bound.
pub fn is_local(ip: std::net::IpAddr) -> bool {
    !ip.is_unspecified() && std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// The address a dial names, if it is one and the request asks for the
/// upgrade; otherwise the 400 to answer.
fn dial_target(addr: &str, req: &Request) -> Result<SocketAddr, Response> {
    let bad = |m: String| (StatusCode::BAD_REQUEST, m).into_response();
    let addr = addr
        .parse::<SocketAddr>()
        .map_err(|_| bad(format!("{addr:?} is not an IP address and port\n")))?;
    let asked = req
        .headers()
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(UPGRADE));
    if !asked {
        return Err(bad(format!("a dial needs `Upgrade: {UPGRADE}`\n")));
    }
    Ok(addr)
}

/// Answers 101 and splices the upgraded request with `tcp`.
fn splice(mut req: Request, tcp: tokio::net::TcpStream) -> Response {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_nodes_own_addresses_are_local() {
        assert!(is_local("127.0.0.1".parse().unwrap()));
        assert!(!is_local("0.0.0.0".parse().unwrap()));
        // TEST-NET-3: documentation only, never configured.
        assert!(!is_local("203.0.113.77".parse().unwrap()));
    }
}
