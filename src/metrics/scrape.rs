//! The server's side: fetch a node's [`Summary`] from its kubelet API, as
//! metrics-server scrapes kubelets, but on demand and through the node's
//! tunnel (the server never connects to an agent).
//!
//! Why scrape rather than have agents push: the agent already keeps the
//! two samples a rate needs, so a request costs one small HTTP exchange
//! per node over a tunnel that is open anyway; nothing is stored on the
//! server (no SD-card writes, no stale figures for a node that went away),
//! and a node that cannot be reached simply has no metrics, which is what
//! metrics-server answers too.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http_body_util::{BodyExt, Limited};
use hyper_util::rt::TokioIo;

use super::summary::Summary;

/// How long one node gets to answer.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// A summary larger than this is refused (a node runs ~110 pods at most).
const MAX_SUMMARY_BYTES: usize = 8 << 20;

/// Opens a byte stream to a node's kubelet API (the node's tunnel).
pub trait KubeletDialer: Send + Sync {
    fn dial(&self, node: &str) -> Result<tokio::io::DuplexStream, String>;
}

/// Where the API server gets a node's figures.
#[async_trait]
pub trait SummarySource: Send + Sync {
    async fn summary(&self, node: &str) -> Result<Summary, String>;
}

/// Asks each node's kubelet API for `/stats/summary`.
pub struct KubeletScraper {
    pub dialer: Arc<dyn KubeletDialer>,
}

#[async_trait]
impl SummarySource for KubeletScraper {
    async fn summary(&self, node: &str) -> Result<Summary, String> {
        let stream = self.dialer.dial(node)?;
        tokio::time::timeout(SCRAPE_TIMEOUT, fetch(stream))
            .await
            .map_err(|_| format!("the kubelet of node {node} did not answer within {SCRAPE_TIMEOUT:?}"))?
            .map_err(|e| format!("failed to get metrics from node {node}: {e}"))
    }
}

async fn fetch(stream: tokio::io::DuplexStream) -> Result<Summary, String> {
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, axum::body::Body>(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let request = http::Request::get(super::SUMMARY_PATH)
        .header(http::header::HOST, "kubelet")
        .body(axum::body::Body::empty())
        .map_err(|e| e.to_string())?;
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_SUMMARY_BYTES)
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if !status.is_success() {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
    }
    serde_json::from_slice(&body).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::summary::NodeStats;

    /// A kubelet API answering on an in-memory stream.
    struct Loopback(axum::Router);

    impl KubeletDialer for Loopback {
        fn dial(&self, node: &str) -> Result<tokio::io::DuplexStream, String> {
            if node != "n1" {
                return Err(format!("no tunnel to node {node}"));
            }
            let (a, b) = tokio::io::duplex(64 << 10);
            let service = hyper_util::service::TowerToHyperService::new(self.0.clone());
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(b), service));
            Ok(a)
        }
    }

    #[tokio::test]
    async fn fetches_a_summary_over_a_stream() {
        let summary = Summary {
            node: NodeStats { node_name: "n1".into(), ..Default::default() },
            pods: vec![],
        };
        let body = summary.clone();
        let router = axum::Router::new().route(
            crate::metrics::SUMMARY_PATH,
            axum::routing::get(move || async move { axum::Json(body) }),
        );
        let scraper = KubeletScraper { dialer: Arc::new(Loopback(router)) };
        assert_eq!(scraper.summary("n1").await.unwrap(), summary);
        assert_eq!(scraper.summary("n2").await.unwrap_err(), "no tunnel to node n2");
    }
}
