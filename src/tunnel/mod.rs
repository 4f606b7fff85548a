//! The websocket tunnel between each agent and the server, in the spirit
//! of k3s's remotedialer: the agent dials out to
//! `wss://<server>:6443/v1-rk3s/connect` with its node client certificate,
//! and the API server opens multiplexed streams through it to the agent's
//! kubelet API. Only the server's port needs to be reachable.
//!
//! - `frame`: the wire format (one frame per websocket message).
//! - `session`: streams, per-stream flow control, keep-alive, dead-peer
//!   detection.
//! - `sessions`: the server side: the `/v1-rk3s/connect` route (nodes
//!   only, each tied to its own name) and the current session per node.
//! - `client`: the agent side: connect, serve opened streams, reconnect
//!   with jittered back-off (an explicit state machine).
//! - `pool`: the agent keeps one tunnel to every API server, so each
//!   server reaches every kubelet through a tunnel of its own.
//!
//! Architecture invariant: the server never connects to an agent; every
//! byte to a kubelet goes through a tunnel that node's agent opened to
//! that very server (no forwarding between servers).

pub mod client;
pub mod frame;
pub mod pool;
pub mod sessions;
pub mod session;

pub use client::{run as run_client, run_observed as run_client_observed, ClientOptions, TunnelEvent};
pub use pool::TunnelPool;
pub use sessions::TunnelRegistry;
pub use session::{AcceptHandler, Role, Session, SessionOptions};

/// The target name of the agent's kubelet API.
pub const KUBELET: &str = "kubelet";

#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("failed to use the tunnel: it is closed")]
    Closed,
    #[error("failed to reach node {node}: it has no live tunnel to the server (is its agent running and connected?)")]
    NoTunnel { node: String },
    #[error("failed to connect the tunnel to {server}: {reason}")]
    Connect { server: String, reason: String },
}
