//! The agent side of the tunnel: dial `wss://<server>/v1-rk3s/connect`
//! with the node's client certificate, hand every stream the server opens
//! to the handler, and reconnect with jittered exponential back-off (1 s
//! doubling to 30 s) whenever the server restarts or the link drops.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use rand::Rng;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::sessions::CONNECT_PATH;
use super::session::{AcceptHandler, Role, Session, SessionOptions};
use super::TunnelError;

#[derive(Clone)]
pub struct ClientOptions {
    /// `https://host:port` of the server.
    pub server: http::Uri,
    /// Trusts the cluster CA and presents the node's client certificate.
    pub tls: Arc<rustls::ClientConfig>,
    /// Serves each stream the server opens (by target name).
    pub handler: AcceptHandler,
    pub session: SessionOptions,
}

/// Where the connection loop is.
enum State {
    Connecting { attempt: u32 },
    Connected { session: Session },
    Backoff { attempt: u32, reason: String },
}

const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The delay before reconnect attempt `attempt` (0-based): exponential,
/// capped, with jitter in [50 %, 100 %] so agents don't reconnect in step.
pub fn backoff(attempt: u32) -> Duration {
    let base = BACKOFF_START
        .saturating_mul(1u32 << attempt.min(5))
        .min(BACKOFF_MAX);
    base.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
}

/// Keeps the tunnel up until `shutdown`.
pub async fn run(opts: ClientOptions, shutdown: CancellationToken) {
    run_observed(opts, None, shutdown).await
}

/// What the connection loop reports as it goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TunnelEvent {
    /// Connected; `result` of the attempt is "success".
    Connected,
    /// An attempt failed (`"error"` or `"timeout"`).
    Failed(&'static str),
    /// The connected tunnel closed.
    Closed,
}

/// Receives [`TunnelEvent`]s (metrics, the agent's load balancer health).
pub type Observer = Arc<dyn Fn(TunnelEvent) + Send + Sync>;

/// [`run`], counting into `metrics`: `rk3s_tunnel_connected` (1 while the
/// tunnel is up) and `rk3s_tunnel_connects_total{result}`.
pub async fn run_observed(
    opts: ClientOptions,
    metrics: Option<Arc<crate::metrics::prom::Registry>>,
    shutdown: CancellationToken,
) {
    let observer: Observer = Arc::new(move |event| {
        let Some(m) = &metrics else { return };
        let connected = event == TunnelEvent::Connected;
        m.set("rk3s_tunnel_connected", "1 while the tunnel to the server is up.", &[], f64::from(u8::from(connected)));
        let result = match event {
            TunnelEvent::Connected => "success",
            TunnelEvent::Failed(r) => r,
            TunnelEvent::Closed => return,
        };
        m.inc("rk3s_tunnel_connects_total", "Tunnel connection attempts, by result.", &[("result", result)], 1.0);
    });
    run_reporting(opts, observer, shutdown).await
}

/// [`run`], telling `observer` every connect, failure and close.
pub async fn run_reporting(opts: ClientOptions, observer: Observer, shutdown: CancellationToken) {
    let note = |connected: bool, result: Option<&'static str>| {
        observer(match (connected, result) {
            (true, _) => TunnelEvent::Connected,
            (false, Some(r)) => TunnelEvent::Failed(r),
            (false, None) => TunnelEvent::Closed,
        })
    };
    note(false, None);
    let mut state = State::Connecting { attempt: 0 };
    loop {
        state = match state {
            State::Connecting { attempt } => {
                let connect = tokio::time::timeout(Duration::from_secs(15), connect(&opts));
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = connect => match r {
                        Ok(Ok(session)) => {
                            tracing::info!(server = %opts.server, "tunnel to the server connected");
                            note(true, Some("success"));
                            State::Connected { session }
                        }
                        Ok(Err(e)) => {
                            note(false, Some("error"));
                            State::Backoff { attempt, reason: e.to_string() }
                        }
                        Err(_) => {
                            note(false, Some("timeout"));
                            State::Backoff { attempt, reason: "timed out".into() }
                        }
                    },
                }
            }
            State::Connected { session } => {
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        session.close();
                        return;
                    }
                    _ = session.closed() => {
                        note(false, None);
                        State::Backoff { attempt: 0, reason: "the tunnel closed".into() }
                    }
                }
            }
            State::Backoff { attempt, reason } => {
                let delay = backoff(attempt);
                tracing::warn!(server = %opts.server, "tunnel down ({reason}); reconnecting in {delay:.1?}");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => State::Connecting { attempt: attempt.saturating_add(1) },
                }
            }
        };
    }
}

/// One connection attempt: TCP, TLS (HTTP/1.1 for the upgrade), websocket.
pub async fn connect(opts: &ClientOptions) -> Result<Session, TunnelError> {
    let fail = |reason: String| TunnelError::Connect {
        server: opts.server.to_string(),
        reason,
    };
    let host = opts
        .server
        .host()
        .ok_or_else(|| fail("the server URL has no host".into()))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = opts.server.port_u16().unwrap_or(6443);
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| fail(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let mut tls = (*opts.tls).clone();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name =
        rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| fail(e.to_string()))?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
        .map_err(|e| fail(format!("TLS: {e}")))?;
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let request = format!("wss://{authority}{CONNECT_PATH}")
        .into_client_request()
        .map_err(|e| fail(e.to_string()))?;
    let (ws, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .map_err(|e| fail(format!("websocket: {e}")))?;
    let (sink, source) = ws.split();
    let (in_tx, in_rx) = mpsc::channel::<Bytes>(64);
    let (session, out_rx) = Session::start(
        in_rx,
        Role::Acceptor,
        Some(opts.handler.clone()),
        opts.session.clone(),
    );
    tokio::spawn(super::session::carry(
        session.clone(),
        out_rx,
        in_tx,
        sink,
        source,
        Message::Binary,
        |m| match m {
            Message::Binary(b) => super::session::Carried::Frame(b),
            Message::Close(_) => super::session::Carried::Close,
            _ => super::session::Carried::Other,
        },
    ));
    Ok(session)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        for attempt in 0..10 {
            let d = backoff(attempt);
            let base = BACKOFF_START
                .saturating_mul(1u32 << attempt.min(5))
                .min(BACKOFF_MAX);
            assert!(d >= base.mul_f64(0.5) && d <= base, "{attempt}: {d:?}");
        }
        assert!(backoff(20) <= BACKOFF_MAX);
    }
}
