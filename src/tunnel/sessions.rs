//! The server side of the tunnel: the `/v1-rk3s/connect` websocket route
//! and the current session of every connected node.
//!
//! Only clients presenting a certificate the TLS layer verified against the
//! client CA, naming `system:node:<name>` in group `system:nodes`, may
//! connect, and a node is registered under its own name only: a node can
//! never receive another node's traffic. A reconnecting node replaces its
//! previous session (which is closed).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use futures::StreamExt;
use tokio::io::DuplexStream;
use tokio::sync::mpsc;

use super::session::{Role, Session, SessionOptions};
use super::TunnelError;
use crate::apiserver::auth::PeerCertificates;

/// The path agents connect to.
pub const CONNECT_PATH: &str = "/v1-rk3s/connect";

#[derive(Default)]
pub struct TunnelRegistry {
    sessions: Mutex<HashMap<String, Session>>,
    options: SessionOptions,
}

impl TunnelRegistry {
    pub fn new(options: SessionOptions) -> Self {
        TunnelRegistry {
            sessions: Mutex::new(HashMap::new()),
            options,
        }
    }

    /// The `/v1-rk3s/connect` route.
    pub fn routes(self: &Arc<Self>) -> Router {
        Router::new()
            .route(CONNECT_PATH, get(connect))
            .with_state(self.clone())
    }

    /// Opens a stream to `target` on `node`'s agent.
    pub fn dial(&self, node: &str, target: &str) -> Result<DuplexStream, TunnelError> {
        let session = self
            .sessions
            .lock()
            .expect("sessions lock")
            .get(node)
            .filter(|s| !s.is_closed())
            .cloned()
            .ok_or_else(|| TunnelError::NoTunnel {
                node: node.to_string(),
            })?;
        session.open(target)
    }

    /// The nodes with a live tunnel.
    pub fn connected(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .sessions
            .lock()
            .expect("sessions lock")
            .iter()
            .filter(|(_, s)| !s.is_closed())
            .map(|(n, _)| n.clone())
            .collect();
        v.sort();
        v
    }

    fn register(&self, node: &str, session: Session) {
        if let Some(old) = self
            .sessions
            .lock()
            .expect("sessions lock")
            .insert(node.to_string(), session)
        {
            old.close();
        }
    }

    fn unregister(&self, node: &str, session: &Session) {
        let mut sessions = self.sessions.lock().expect("sessions lock");
        if sessions.get(node).is_some_and(|s| s.same(session)) {
            sessions.remove(node);
        }
    }

    async fn serve(self: Arc<Self>, node: String, socket: WebSocket) {
        let (sink, stream) = socket.split();
        let (in_tx, in_rx) = mpsc::channel(64);
        let (session, out_rx) = Session::start(in_rx, Role::Dialer, None, self.options.clone());
        self.register(&node, session.clone());
        tracing::info!(node = %node, "node tunnel connected");
        super::session::carry(
            session.clone(),
            out_rx,
            in_tx,
            sink,
            stream,
            Message::Binary,
            |m| match m {
                Message::Binary(b) => super::session::Carried::Frame(b),
                Message::Close(_) => super::session::Carried::Close,
                _ => super::session::Carried::Other,
            },
        )
        .await;
        self.unregister(&node, &session);
        tracing::info!(node = %node, "node tunnel closed");
    }
}

impl crate::apiserver::streaming::NodeDialer for TunnelRegistry {
    fn dial(&self, node: &str) -> Result<DuplexStream, String> {
        TunnelRegistry::dial(self, node, super::KUBELET).map_err(|e| e.to_string())
    }
}

/// The node name in a verified client certificate, if it is a node's.
pub fn node_of(
    peer: Option<&PeerCertificates>,
) -> Result<String, (http::StatusCode, &'static str)> {
    let leaf = peer.and_then(|p| p.0.first()).ok_or((
        http::StatusCode::UNAUTHORIZED,
        "a node client certificate is required",
    ))?;
    let user = crate::pki::client_identity(leaf).ok_or((
        http::StatusCode::UNAUTHORIZED,
        "the client certificate names no user",
    ))?;
    match user.name.strip_prefix("system:node:") {
        Some(node) if !node.is_empty() && user.groups.iter().any(|g| g == "system:nodes") => {
            Ok(node.to_string())
        }
        _ => Err((
            http::StatusCode::FORBIDDEN,
            "only nodes (system:node:<name> in system:nodes) may open a tunnel",
        )),
    }
}

async fn connect(
    State(registry): State<Arc<TunnelRegistry>>,
    peer: Option<Extension<PeerCertificates>>,
    ws: WebSocketUpgrade,
) -> Response {
    match node_of(peer.as_ref().map(|e| &e.0)) {
        Ok(node) => ws
            .max_message_size(1 << 20)
            .on_upgrade(move |socket| registry.serve(node, socket))
            .into_response(),
        Err((code, why)) => (code, why).into_response(),
    }
}
