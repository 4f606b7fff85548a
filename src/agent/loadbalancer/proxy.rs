//! The balancer's TCP side: accept on the local port, dial the best
//! candidate (the next one when a dial fails), then copy bytes both ways
//! until either side closes, the server is marked unhealthy or left the
//! list, or the agent stops.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::Balancer;

/// How long one dial may take before the next server is tried.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

pub trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}

/// Opens a connection to a server (`host:port`): TCP for real, in-memory
/// pipes in tests.
#[async_trait]
pub trait Dialer: Send + Sync {
    async fn dial(&self, addr: &str) -> std::io::Result<Box<dyn Conn>>;
}

pub struct TcpDialer;

#[async_trait]
impl Dialer for TcpDialer {
    async fn dial(&self, addr: &str) -> std::io::Result<Box<dyn Conn>> {
        let stream = TcpStream::connect(addr).await?;
        let _ = stream.set_nodelay(true);
        Ok(Box::new(stream))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadBalancerError {
    #[error("failed to listen on {addr} for the API server load balancer: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to point the node kubeconfig {path} at the load balancer: {reason}")]
    Kubeconfig { path: std::path::PathBuf, reason: String },
    #[error("failed to reach any API server ({tried}): {last}")]
    NoServer { tried: String, last: String },
}

/// Dials the candidates in order; the first that answers becomes current.
/// Returns the connection and the token that closes it when its server
/// goes away.
pub async fn dial_best(
    balancer: &Balancer,
    dialer: &dyn Dialer,
) -> Result<(String, Box<dyn Conn>, CancellationToken), LoadBalancerError> {
    let candidates = balancer.candidates();
    let mut last = String::from("no servers known");
    for addr in &candidates {
        match tokio::time::timeout(DIAL_TIMEOUT, dialer.dial(addr)).await {
            Ok(Ok(conn)) => {
                let token = balancer.connected(addr);
                return Ok((addr.clone(), conn, token));
            }
            Ok(Err(e)) => last = format!("{addr}: {e}"),
            Err(_) => last = format!("{addr}: timed out"),
        }
        tracing::warn!(server = %addr, "failed to dial the API server: {last}");
        balancer.dial_failed(addr);
    }
    Err(LoadBalancerError::NoServer { tried: candidates.join(", "), last })
}

/// Binds `127.0.0.1:port`; if that port is taken, an ephemeral one (with a
/// warning: another agent or a k3s on this machine holds it).
pub async fn bind(port: u16) -> Result<TcpListener, LoadBalancerError> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    match TcpListener::bind(addr).await {
        Ok(l) => Ok(l),
        Err(e) if port != 0 && e.kind() == std::io::ErrorKind::AddrInUse => {
            tracing::warn!("{addr} is in use ({e}); the API server load balancer takes a free port instead");
            let any = SocketAddr::from(([127, 0, 0, 1], 0));
            TcpListener::bind(any).await.map_err(|source| LoadBalancerError::Listen { addr: any, source })
        }
        Err(source) => Err(LoadBalancerError::Listen { addr, source }),
    }
}

/// Accepts and proxies until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    balancer: Arc<Balancer>,
    dialer: Arc<dyn Dialer>,
    shutdown: CancellationToken,
) {
    loop {
        let (client, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("the API server load balancer failed to accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = client.set_nodelay(true);
        let (balancer, dialer, shutdown) = (balancer.clone(), dialer.clone(), shutdown.clone());
        tokio::spawn(async move {
            proxy_one(Box::new(client), &balancer, dialer.as_ref(), &shutdown).await;
        });
    }
}

/// Carries one client connection to a server.
pub async fn proxy_one(
    mut client: Box<dyn Conn>,
    balancer: &Balancer,
    dialer: &dyn Dialer,
    shutdown: &CancellationToken,
) {
    let (addr, mut server, gone) = match dial_best(balancer, dialer).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("{e}");
            return;
        }
    };
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = gone.cancelled() => tracing::debug!(server = %addr, "closing a connection to an unhealthy API server"),
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
    }
}
