//! The agent's client-side load balancer for the API servers, k3s's
//! `k3s-agent-load-balancer`: a TCP proxy on `127.0.0.1:6444`
//! (`--lb-server-port`) that every API client on the node (the kubelet, the
//! service proxy, the overlay, DNS, ingress, storage: everything built from
//! the node kubeconfig) connects to, and that forwards each connection to a
//! live server.
//!
//! Why a TCP proxy rather than a choice inside the kube-rs client: one
//! address serves every client, including ones we don't build (kubectl on
//! the node with that kubeconfig); TLS passes through untouched, so the
//! server still sees the node's client certificate, and no client code
//! changes. The price: the servers' certificates must carry `127.0.0.1`
//! (rk3s's serving certificate always does), and failover is per
//! connection: a connection to a server that dies breaks, the client
//! reconnects, and the balancer sends the new connection elsewhere.
//!
//! Choosing ([`Balancer::candidates`]): the server the last connection
//! went to while it stays healthy (connections stick to one server, so a
//! client's watches see one server's view), then the other healthy ones in
//! list order, then the seed (`--server`), then the unhealthy ones as a last
//! resort. A server is unhealthy when a dial to it failed or its tunnel is
//! down (the tunnel is the health check, as in k3s); marking it unhealthy
//! closes every connection proxied to it, so clients stuck on a
//! half-dead server reconnect at once instead of waiting for TCP timeouts.
//!
//! The server list comes from the `kubernetes` EndpointSlice
//! (`agent::servers`) and is kept in
//! `<data-dir>/agent/etc/rk3s-agent-load-balancer.json`, so a restarting
//! agent reaches a server even when its seed is dead.
//!
//! Architecture invariant: the balancer never terminates TLS; the seed is
//! always a candidate, so a wrong server list can't lock the agent out.

pub mod proxy;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// The file the server list is remembered in, under `<data-dir>/agent`.
pub const STATE_FILE: &str = "etc/rk3s-agent-load-balancer.json";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Nothing known yet: tried like a healthy one.
    Unknown,
    Up,
    Down,
}

struct Server {
    health: Health,
    /// Cancelled (and replaced) when the server goes down or leaves the
    /// list: every connection proxied to it closes.
    conns: CancellationToken,
}

impl Server {
    fn new() -> Self {
        Server { health: Health::Unknown, conns: CancellationToken::new() }
    }
}

struct Inner {
    /// `host:port`, in the order the servers were listed.
    order: Vec<String>,
    servers: HashMap<String, Server>,
    current: Option<String>,
}

/// The server list, their health and the current choice.
pub struct Balancer {
    seed: String,
    state_file: Option<PathBuf>,
    inner: Mutex<Inner>,
}

#[derive(Serialize, Deserialize, Default, PartialEq, Debug)]
#[serde(rename_all = "camelCase")]
struct Saved {
    #[serde(rename = "serverURL")]
    server_url: String,
    server_addresses: Vec<String>,
}

/// `host:port` of an `https://host:port` URL (6443 when it has no port).
pub fn address_of(url: &http::Uri) -> Option<String> {
    let host = url.host()?;
    let port = url.port_u16().unwrap_or(6443);
    Some(if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

impl Balancer {
    /// A balancer seeded with `seed` (`host:port`), plus the servers
    /// remembered in `state_file` when they were learnt with the same seed.
    pub fn new(seed: &str, state_file: Option<PathBuf>) -> Self {
        let saved = state_file.as_deref().and_then(load).filter(|s| s.server_url == seed);
        let mut order = vec![seed.to_string()];
        if let Some(saved) = saved {
            order = saved.server_addresses;
            if !order.iter().any(|a| a == seed) {
                order.push(seed.to_string());
            }
        }
        let servers = order.iter().map(|a| (a.clone(), Server::new())).collect();
        Balancer {
            seed: seed.to_string(),
            state_file,
            inner: Mutex::new(Inner { order, servers, current: None }),
        }
    }

    pub fn seed(&self) -> &str {
        &self.seed
    }

    /// The known servers, in list order (the seed included).
    pub fn servers(&self) -> Vec<String> {
        self.inner.lock().expect("balancer lock").order.clone()
    }

    /// Replaces the server list with `addresses` (the seed stays, last, as
    /// k3s keeps it); servers that left have their connections closed. An
    /// empty list is ignored. Saves the list when it changed.
    pub fn set_servers(&self, addresses: &[String]) {
        if addresses.is_empty() {
            return;
        }
        let mut order: Vec<String> = Vec::new();
        for a in addresses.iter().chain(std::iter::once(&self.seed)) {
            if !order.contains(a) {
                order.push(a.clone());
            }
        }
        let mut inner = self.inner.lock().expect("balancer lock");
        if inner.order == order {
            return;
        }
        tracing::info!(servers = ?order, "API servers for this agent changed");
        inner.servers.retain(|a, s| {
            let keep = order.contains(a);
            if !keep {
                s.conns.cancel();
            }
            keep
        });
        for a in &order {
            inner.servers.entry(a.clone()).or_insert_with(Server::new);
        }
        if inner.current.as_ref().is_some_and(|c| !order.contains(c)) {
            inner.current = None;
        }
        inner.order = order.clone();
        drop(inner);
        self.save(&order);
    }

    /// Records `addr`'s health; going down closes its connections.
    pub fn set_health(&self, addr: &str, health: Health) {
        let mut inner = self.inner.lock().expect("balancer lock");
        let Some(server) = inner.servers.get_mut(addr) else { return };
        if server.health == health {
            return;
        }
        if health == Health::Down {
            tracing::info!(server = addr, "API server unhealthy; closing the connections to it");
            server.conns.cancel();
            server.conns = CancellationToken::new();
        }
        server.health = health;
        if health == Health::Down && inner.current.as_deref() == Some(addr) {
            inner.current = None;
        }
    }

    pub fn health(&self, addr: &str) -> Option<Health> {
        self.inner.lock().expect("balancer lock").servers.get(addr).map(|s| s.health)
    }

    /// The servers to try, best first (see the module docs).
    pub fn candidates(&self) -> Vec<String> {
        let inner = self.inner.lock().expect("balancer lock");
        let healthy = |a: &String| inner.servers.get(a).is_some_and(|s| s.health != Health::Down);
        let mut out: Vec<String> = Vec::new();
        if let Some(c) = inner.current.as_ref().filter(|c| healthy(c)) {
            out.push(c.clone());
        }
        for a in inner.order.iter().filter(|a| healthy(a)) {
            if !out.contains(a) {
                out.push(a.clone());
            }
        }
        if !out.contains(&self.seed) {
            out.push(self.seed.clone());
        }
        for a in &inner.order {
            if !out.contains(a) {
                out.push(a.clone());
            }
        }
        out
    }

    /// A dial to `addr` worked: it becomes the current server. Returns the
    /// token that closes connections to it.
    pub fn connected(&self, addr: &str) -> CancellationToken {
        let mut inner = self.inner.lock().expect("balancer lock");
        if inner.current.as_deref() != Some(addr) {
            tracing::info!(server = addr, "API connections now go to this server");
            inner.current = Some(addr.to_string());
        }
        let server = inner.servers.entry(addr.to_string()).or_insert_with(Server::new);
        if server.health == Health::Down {
            // It answered: the tunnel will say otherwise if it isn't so.
            server.health = Health::Unknown;
        }
        server.conns.clone()
    }

    /// A dial to `addr` failed.
    pub fn dial_failed(&self, addr: &str) {
        self.set_health(addr, Health::Down);
    }

    fn save(&self, order: &[String]) {
        let Some(path) = &self.state_file else { return };
        let saved = Saved {
            server_url: self.seed.clone(),
            server_addresses: order.to_vec(),
        };
        let write = || -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = path.with_extension("json.tmp");
            std::fs::write(&tmp, serde_json::to_vec_pretty(&saved).unwrap_or_default())?;
            std::fs::rename(&tmp, path)
        };
        if let Err(e) = write() {
            tracing::warn!(path = %path.display(), "failed to remember the API servers: {e}");
        }
    }
}

/// The standalone agent's balancer: seeded with `--server` and the
/// remembered list, listening on `127.0.0.1:--lb-server-port`, with the node
/// kubeconfig pointed at it (so every API client on the node goes through
/// it). Serves until `shutdown`.
pub async fn start(
    config: &crate::config::AgentConfig,
    creds: &crate::pki::join::NodeCredentials,
    shutdown: &CancellationToken,
) -> Result<super::servers::Upstream, proxy::LoadBalancerError> {
    let seed = address_of(&config.server).ok_or_else(|| proxy::LoadBalancerError::NoServer {
        tried: config.server.to_string(),
        last: "the server URL has no host".into(),
    })?;
    let agent_dir = config.data_dir.join("agent");
    let balancer = Arc::new(Balancer::new(&seed, Some(agent_dir.join(STATE_FILE))));
    let listener = proxy::bind(config.lb_server_port).await?;
    let local = listener.local_addr().map_err(|source| proxy::LoadBalancerError::Listen {
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], config.lb_server_port)),
        source,
    })?;
    let url = format!("https://{local}");
    crate::pki::node_files::AgentFiles::new(&agent_dir)
        .write_kubeconfig(&url)
        .map_err(|e| proxy::LoadBalancerError::Kubeconfig {
            path: creds.kubeconfig.clone(),
            reason: e.to_string(),
        })?;
    tracing::info!(%url, servers = ?balancer.servers(), "API server load balancer listening");
    tokio::spawn(proxy::serve(listener, balancer.clone(), Arc::new(proxy::TcpDialer), shutdown.clone()));
    Ok(super::servers::Upstream {
        balancer: Some(balancer),
        seeds: vec![seed],
        alias: None,
    })
}

fn load(path: &Path) -> Option<Saved> {
    let text = std::fs::read(path).ok()?;
    serde_json::from_slice(&text).ok()
}

#[cfg(test)]
mod tests;
