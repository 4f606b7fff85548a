//! How an agent learns every API server: it watches the `default/kubernetes`
//! EndpointSlice (which every server keeps listing itself in, see
//! `apiserver::ipalloc::apiserver_leases`) and hands the addresses to the
//! load balancer (where API connections go) and the tunnel pool (one tunnel
//! per server). Until the first list arrives, both use the seed (`--server`,
//! or the remembered list).
//!
//! The built-in agent of a server has no balancer (its clients use the local
//! server, as in k3s) but keeps tunnels to every server; its own server's
//! advertised address is replaced by the local URL ([`ServerWatch::alias`]),
//! so its own tunnel doesn't depend on the advertised address being
//! reachable from the host.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::Client;
use tokio_util::sync::CancellationToken;

use super::loadbalancer::Balancer;
use crate::tunnel::TunnelPool;

/// `host:port` of every endpoint of the `kubernetes` EndpointSlice (ready
/// or with no condition), in the slice's order.
pub fn addresses_of(slice: &EndpointSlice) -> Vec<String> {
    let Some(port) = slice
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("https") || p.name.is_none())
        .and_then(|p| p.port)
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for ep in &slice.endpoints {
        if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
            continue;
        }
        for ip in &ep.addresses {
            let addr = match ip.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V6(v6)) => format!("[{v6}]:{port}"),
                _ => format!("{ip}:{port}"),
            };
            if !out.contains(&addr) {
                out.push(addr);
            }
        }
    }
    out
}

/// Where a node's API connections and tunnels go.
#[derive(Default, Clone)]
pub struct Upstream {
    /// The standalone agent's load balancer, fed the server list.
    pub balancer: Option<Arc<Balancer>>,
    /// The servers to tunnel to until the first list (empty: the node
    /// kubeconfig's server).
    pub seeds: Vec<String>,
    /// See [`ServerWatch::alias`].
    pub alias: Option<(String, String)>,
}

/// Starts one tunnel per server (first the seeds) and the watch that keeps
/// them and the balancer current. Tunnel health feeds the balancer.
pub fn start(
    kubeconfig: &std::path::Path,
    handler: crate::tunnel::AcceptHandler,
    upstream: Upstream,
    metrics: Option<Arc<crate::metrics::prom::Registry>>,
    shutdown: &CancellationToken,
) -> Result<Arc<TunnelPool>, super::node_runner::NodeError> {
    let (server, tls) = super::node_runner::tunnel_tls(kubeconfig)?;
    let mut seeds = upstream.seeds.clone();
    if seeds.is_empty() {
        seeds.extend(super::loadbalancer::address_of(&server));
    }
    let template = crate::tunnel::ClientOptions { server, tls, handler, session: Default::default() };
    let observer: Option<crate::tunnel::pool::PoolObserver> = upstream.balancer.clone().map(|b| {
        Arc::new(move |addr: &str, event| {
            use super::loadbalancer::Health;
            b.set_health(addr, if event == crate::tunnel::TunnelEvent::Connected { Health::Up } else { Health::Down });
        }) as crate::tunnel::pool::PoolObserver
    });
    let tunnels = Arc::new(TunnelPool::new(template, observer, metrics, shutdown.clone()));
    let keep_loopback = seeds.iter().all(|s| is_loopback(s));
    let watch = ServerWatch { balancer: upstream.balancer, tunnels: tunnels.clone(), alias: upstream.alias, keep_loopback };
    // The remembered list (when the balancer has one) beats the bare seed.
    match &watch.balancer {
        Some(b) => watch.update(&b.servers()),
        None => watch.update(&seeds),
    }
    let (kubeconfig, shutdown) = (kubeconfig.to_path_buf(), shutdown.clone());
    tokio::spawn(async move {
        match client(&kubeconfig).await {
            Ok(client) => watch.run(client, shutdown).await,
            Err(e) => tracing::error!(
                "the agent will not learn other API servers (tunnels and failover stay with {seeds:?}): {e}"
            ),
        }
    });
    Ok(tunnels)
}

async fn client(path: &std::path::Path) -> Result<Client, String> {
    let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| e.to_string())?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    Client::try_from(cfg).map_err(|e| e.to_string())
}

/// Where the server list goes.
pub struct ServerWatch {
    pub balancer: Option<Arc<Balancer>>,
    pub tunnels: Arc<TunnelPool>,
    /// `(advertised, local)`: tunnel to `local` instead of `advertised`.
    pub alias: Option<(String, String)>,
    /// Whether loopback addresses in the list are usable: only when the
    /// seed is loopback too (a server advertising 127.0.0.1, its default
    /// without `--node-ip`, can't be reached from another machine).
    pub keep_loopback: bool,
}

/// Whether `addr` (`host:port`) is a loopback address.
pub fn is_loopback(addr: &str) -> bool {
    addr.parse::<std::net::SocketAddr>().is_ok_and(|a| a.ip().is_loopback())
        || addr.starts_with("localhost:")
}

/// What a server list becomes: the balancer's list (loopback addresses
/// dropped unless `keep_loopback`) and the tunnel targets (the same, with
/// `alias` applied).
pub fn plan(
    addresses: &[String],
    keep_loopback: bool,
    alias: Option<&(String, String)>,
) -> (Vec<String>, Vec<String>) {
    let kept: Vec<String> = addresses.iter().filter(|a| keep_loopback || !is_loopback(a)).cloned().collect();
    let mut tunnels: Vec<String> = Vec::new();
    for a in &kept {
        let target = match alias {
            Some((advertised, local)) if advertised == a => local.clone(),
            _ => a.clone(),
        };
        // One tunnel per server address, whatever names it twice.
        if !tunnels.contains(&target) {
            tunnels.push(target);
        }
    }
    (kept, tunnels)
}

impl ServerWatch {
    /// Applies a new server list (ignored when empty).
    pub fn update(&self, addresses: &[String]) {
        let (kept, tunnels) = plan(addresses, self.keep_loopback, self.alias.as_ref());
        if kept.len() < addresses.len() {
            tracing::debug!(?addresses, "ignoring loopback API server addresses (this agent's seed is not loopback)");
        }
        if kept.is_empty() {
            return;
        }
        if let Some(b) = &self.balancer {
            b.set_servers(&kept);
        }
        self.tunnels.set_servers(&tunnels);
    }

    /// Watches the `kubernetes` EndpointSlice until `shutdown`; watch errors
    /// are retried with kube-runtime's back-off, the last list staying.
    pub async fn run(self, client: Client, shutdown: CancellationToken) {
        let api: Api<EndpointSlice> = Api::namespaced(client, "default");
        let config = watcher::Config::default().labels("kubernetes.io/service-name=kubernetes");
        let mut events = watcher::watcher(api, config).default_backoff().boxed();
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return,
                e = events.next() => e,
            };
            match event {
                None => return,
                Some(Err(e)) => tracing::debug!("watching the API servers: {e}; retrying"),
                Some(Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)))
                    if s.metadata.name.as_deref() == Some("kubernetes") =>
                {
                    self.update(&addresses_of(&s));
                }
                Some(Ok(_)) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(json: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn loopback_servers_are_dropped_unless_the_seed_is_loopback_and_the_alias_applies_to_tunnels() {
        let list: Vec<String> = ["127.0.0.1:6443", "10.0.0.2:6443"].iter().map(|s| s.to_string()).collect();
        let (lb, tunnels) = plan(&list, false, None);
        assert_eq!((lb.as_slice(), tunnels.as_slice()), (&["10.0.0.2:6443".to_string()][..], &["10.0.0.2:6443".to_string()][..]));
        let alias = ("10.0.0.2:6443".to_string(), "127.0.0.1:6443".to_string());
        let (lb, tunnels) = plan(&list, true, Some(&alias));
        assert_eq!(lb, list);
        // The built-in agent's own server through the local URL: one tunnel, not two.
        assert_eq!(tunnels, ["127.0.0.1:6443"]);
    }

    #[test]
    fn loopback_addresses_are_recognised() {
        assert!(is_loopback("127.0.0.1:6443") && is_loopback("[::1]:6443") && is_loopback("localhost:6443"));
        assert!(!is_loopback("10.0.0.1:6443") && !is_loopback("server:6443"));
    }

    #[test]
    fn addresses_come_from_ready_endpoints_with_the_https_port() {
        let s = slice(serde_json::json!({
            "metadata": {"name": "kubernetes"}, "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.0.0.1"], "conditions": {"ready": true}},
                {"addresses": ["10.0.0.2"]},
                {"addresses": ["10.0.0.3"], "conditions": {"ready": false}}],
            "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]}));
        assert_eq!(addresses_of(&s), ["10.0.0.1:6443", "10.0.0.2:6443"]);
        let v6 = slice(serde_json::json!({
            "metadata": {"name": "kubernetes"}, "addressType": "IPv6",
            "endpoints": [{"addresses": ["fd00::1"]}],
            "ports": [{"name": "https", "port": 6443}]}));
        assert_eq!(addresses_of(&v6), ["[fd00::1]:6443"]);
        let no_port = slice(serde_json::json!({
            "metadata": {"name": "kubernetes"}, "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.1"]}]}));
        assert!(addresses_of(&no_port).is_empty());
    }
}
