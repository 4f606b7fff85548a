//! The agent's tunnels: one per API server (k3s keeps exactly one
//! remotedialer tunnel per apiserver the same way), so every server reaches
//! every kubelet through a tunnel of its own and none forwards to another.
//!
//! [`TunnelPool::set_servers`] starts a tunnel client (`client::run_reporting`)
//! for each new `host:port` and stops those no longer listed. Each tunnel's
//! events go to the pool's observer with the server's address (the agent's
//! load balancer uses them as health checks) and into the metrics:
//! `rk3s_tunnel_connected` is the number of servers this node has a live
//! tunnel to (1 on a one-server cluster, as before), and
//! `rk3s_tunnel_connects_total{result}` counts attempts.
//!
//! Invariant: at most one tunnel per server address; a server holds one
//! session per node, so two tunnels from one node to one server would
//! replace each other endlessly.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use super::client::{run_reporting, ClientOptions, TunnelEvent};

/// Told `(server address, event)` for every tunnel.
pub type PoolObserver = Arc<dyn Fn(&str, TunnelEvent) + Send + Sync>;

struct Entry {
    stop: CancellationToken,
}

pub struct TunnelPool {
    /// The options every tunnel shares (`server` is replaced per tunnel).
    template: ClientOptions,
    observer: Option<PoolObserver>,
    metrics: Option<Arc<crate::metrics::prom::Registry>>,
    tunnels: Mutex<BTreeMap<String, Entry>>,
    connected: Arc<Mutex<BTreeSet<String>>>,
    shutdown: CancellationToken,
}

impl TunnelPool {
    pub fn new(
        template: ClientOptions,
        observer: Option<PoolObserver>,
        metrics: Option<Arc<crate::metrics::prom::Registry>>,
        shutdown: CancellationToken,
    ) -> Self {
        if let Some(m) = &metrics {
            m.set(CONNECTED, CONNECTED_HELP, &[], 0.0);
        }
        TunnelPool {
            template,
            observer,
            metrics,
            tunnels: Mutex::new(BTreeMap::new()),
            connected: Arc::new(Mutex::new(BTreeSet::new())),
            shutdown,
        }
    }

    /// Keeps exactly one tunnel to each of `addresses` (`host:port`). An
    /// empty list is ignored: a node with no tunnel can't be reached at all.
    pub fn set_servers(&self, addresses: &[String]) {
        if addresses.is_empty() {
            return;
        }
        let mut tunnels = self.tunnels.lock().expect("pool lock");
        tunnels.retain(|addr, entry| {
            let keep = addresses.contains(addr);
            if !keep {
                tracing::info!(server = %addr, "closing the tunnel to a server that left");
                entry.stop.cancel();
                // A stopped client reports nothing more.
                let count = {
                    let mut set = self.connected.lock().expect("pool lock");
                    set.remove(addr);
                    set.len()
                };
                if let Some(m) = &self.metrics {
                    m.set(CONNECTED, CONNECTED_HELP, &[], count as f64);
                }
            }
            keep
        });
        for addr in addresses {
            if tunnels.contains_key(addr) {
                continue;
            }
            let server: http::Uri = match format!("https://{addr}").parse() {
                Ok(u) => u,
                Err(e) => {
                    tracing::warn!(server = %addr, "not opening a tunnel to an unparsable address: {e}");
                    continue;
                }
            };
            let stop = self.shutdown.child_token();
            let mut opts = self.template.clone();
            opts.server = server;
            tokio::spawn(run_reporting(opts, self.observer_for(addr), stop.clone()));
            tunnels.insert(addr.clone(), Entry { stop });
        }
    }

    /// The servers with a tunnel (connected or trying).
    pub fn servers(&self) -> Vec<String> {
        self.tunnels.lock().expect("pool lock").keys().cloned().collect()
    }

    /// The servers with a live tunnel.
    pub fn connected(&self) -> Vec<String> {
        self.connected.lock().expect("pool lock").iter().cloned().collect()
    }

    fn observer_for(&self, addr: &str) -> super::client::Observer {
        let (addr, observer, metrics) = (addr.to_string(), self.observer.clone(), self.metrics.clone());
        let connected = self.connected.clone();
        Arc::new(move |event| {
            let count = {
                let mut set = connected.lock().expect("pool lock");
                if event == TunnelEvent::Connected {
                    set.insert(addr.clone());
                } else {
                    set.remove(&addr);
                }
                set.len()
            };
            if let Some(m) = &metrics {
                m.set(CONNECTED, CONNECTED_HELP, &[], count as f64);
                let result = match event {
                    TunnelEvent::Connected => Some("success"),
                    TunnelEvent::Failed(r) => Some(r),
                    TunnelEvent::Closed => None,
                };
                if let Some(r) = result {
                    m.inc("rk3s_tunnel_connects_total", "Tunnel connection attempts, by result.", &[("result", r)], 1.0);
                }
            }
            if let Some(o) = &observer {
                o(&addr, event);
            }
        })
    }
}

const CONNECTED: &str = "rk3s_tunnel_connected";
const CONNECTED_HELP: &str = "The number of API servers this node has a live tunnel to.";

impl Drop for TunnelPool {
    fn drop(&mut self) {
        for entry in self.tunnels.lock().expect("pool lock").values() {
            entry.stop.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> ClientOptions {
        let roots = rustls::RootCertStore::empty();
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        ClientOptions {
            server: "https://127.0.0.1:1".parse().unwrap(),
            tls: Arc::new(tls),
            handler: Arc::new(|_target: String, _stream| {}),
            session: Default::default(),
        }
    }

    #[tokio::test]
    async fn one_tunnel_per_listed_server_added_and_removed_with_the_list() {
        // Closed loopback ports: the clients fail and back off, nothing leaves the machine.
        let pool = TunnelPool::new(template(), None, None, CancellationToken::new());
        let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        pool.set_servers(&list(&["127.0.0.1:1", "127.0.0.2:1"]));
        assert_eq!(pool.servers(), ["127.0.0.1:1", "127.0.0.2:1"]);
        pool.set_servers(&list(&["127.0.0.2:1", "127.0.0.3:1", "127.0.0.3:1"]));
        assert_eq!(pool.servers(), ["127.0.0.2:1", "127.0.0.3:1"]);
        // An empty list (a transient read) keeps the tunnels.
        pool.set_servers(&[]);
        assert_eq!(pool.servers().len(), 2);
        assert!(pool.connected().is_empty());
    }
}
