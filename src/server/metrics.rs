//! Wires `crate::metrics` into the API server: `metrics.k8s.io` served from
//! the nodes' summaries through their tunnels (unless `--disable
//! metrics-server`), and the database file's size on `/metrics`.

use std::sync::Arc;

use crate::apiserver::ServeOptions;
use crate::metrics::scrape::{KubeletDialer, KubeletScraper};

use super::assemble::Parts;

/// The node tunnels as the scraper's dialer.
struct Tunnels(Arc<crate::tunnel::TunnelRegistry>);

impl KubeletDialer for Tunnels {
    fn dial(&self, node: &str) -> Result<tokio::io::DuplexStream, String> {
        self.0.dial(node, crate::tunnel::KUBELET).map_err(|e| e.to_string())
    }
}

/// Adds the metrics API (when enabled) and the store's size gauge.
pub fn wire(opts: &mut ServeOptions, parts: &Parts) {
    if parts.settings.metrics_server {
        for def in crate::apiserver::metrics_api::defs() {
            parts.registry.insert(def);
        }
        opts.metrics = Some(Arc::new(KubeletScraper {
            dialer: Arc::new(Tunnels(parts.tunnels.clone())),
        }));
    }
    let db = parts.server_dir.join("db");
    opts.telemetry.on_render(Arc::new(move |r| {
        // The database, its WAL and shared memory: what the store occupies.
        let bytes: u64 = std::fs::read_dir(&db)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum();
        r.set(
            "apiserver_storage_size_bytes",
            "Size of the storage database file physically allocated in bytes.",
            &[("storage_cluster_id", "sqlite")],
            bytes as f64,
        );
    }));
}
