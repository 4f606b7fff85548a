//! The default ingress: an Ingress controller and reverse proxy that every
//! node runs on its ports 80 and 443 (k3s ships Traefik behind ServiceLB
//! for this; here it is built in, so a fresh cluster answers with nothing
//! to pull).
//!
//! Map:
//! - `class`: the IngressClass `rk3s` (made by the server, default), which
//!   Ingresses are served, and the on/off switch for every node;
//! - `table`: Ingress rules flattened into a routing table (host and path
//!   semantics and precedence of the Ingress API);
//! - `backends`: a Service reference to ready endpoint addresses, through
//!   the agent's shared [`crate::svccache`];
//! - `tls`: certificates from `kubernetes.io/tls` Secrets chosen by SNI, a
//!   generated default otherwise;
//! - `proxy`: one request routed and streamed to an endpoint (retries on a
//!   refused connect, upgrades, `X-Forwarded-*`, timeouts);
//! - `pages`: the 404/502/503/504 pages that say what is missing;
//! - `listener`: the HTTP and HTTPS listeners (HTTP/1.1 and HTTP/2);
//! - `controller`: watches, table rebuilds, listeners on/off, status.
//!
//! Invariants:
//! - Requests go from the node straight to a ready endpoint (no hop
//!   through a ClusterIP); the service proxy is not involved.
//! - A configuration change is a swap of immutable tables: it applies to
//!   the next request within a second and never drops an open connection.
//! - Only `kubernetes.io/tls` Secrets are watched (the field selector
//!   `type=kubernetes.io/tls`, evaluated by the API server), so no other
//!   Secret reaches the node through the ingress. RBAC cannot say as much:
//!   the role `rk3s:ingress` allows listing every Secret (see ARCHITECTURE).
//! - This module talks to the API only through `kube::Client`; it imports
//!   nothing from `agent`, `server`, `apiserver` or `store`.
//!
//! Partial: HTTP/1.1 to backends only (no h2c/gRPC to pods); websockets
//! over HTTP/2 (extended CONNECT) are not proxied; no per-Ingress
//! annotations (redirects, rewrites, auth); IPv4 endpoints first.

pub mod backends;
pub mod class;
pub mod controller;
pub mod listener;
pub mod pages;
pub mod proxy;
pub mod table;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::svccache::ServiceCache;

/// Where and how one node's ingress listens.
#[derive(Clone)]
pub struct IngressOptions {
    pub http: SocketAddr,
    pub https: SocketAddr,
    /// Served under [`proxy::RESERVED_PREFIX`] on both listeners (the dashboard).
    pub reserved: Option<axum::Router>,
}

impl IngressOptions {
    /// All addresses of the node, on the given ports.
    pub fn on_ports(http_port: u16, https_port: u16) -> Self {
        IngressOptions {
            http: SocketAddr::from(([0, 0, 0, 0], http_port)),
            https: SocketAddr::from(([0, 0, 0, 0], https_port)),
            reserved: None,
        }
    }
}

/// Starts the ingress of this node; it runs until `shutdown`.
pub fn spawn(
    client: kube::Client,
    services: ServiceCache,
    opts: IngressOptions,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let proxy = Arc::new(proxy::Proxy::new(services, opts.reserved.clone()));
    tokio::spawn(controller::run(client, proxy, opts, shutdown))
}
