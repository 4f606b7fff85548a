//! The controller loop: watches Ingresses, IngressClasses, TLS Secrets and
//! Nodes; on every change (coalesced for [`SETTLE`]) rebuilds the routing
//! and certificate tables from scratch and swaps them into the proxy,
//! opens or closes the listeners as the class `rk3s` appears or goes, and
//! writes `status.loadBalancer.ingress` where it differs.
//!
//! Level-triggered: each pass derives everything from the watched state,
//! so a missed or repeated event only costs a pass.
//!
//! Invariants:
//! - A table swap never touches open connections; only the listeners'
//!   token closes them (the class was deleted, or shutdown).
//! - Every agent writes the same status (all Ready nodes' addresses,
//!   ExternalIP preferred, as ServiceLB reports them), and only when it
//!   differs, so agents converge instead of fighting.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Secret};
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Resource};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::class::{self, CLASS_NAME};
use super::listener;
use super::proxy::Proxy;
use super::table::RouteTable;
use super::tls::{self, CertTable, SniResolver};
use super::IngressOptions;

/// How long a burst of changes may take before the tables are rebuilt
/// (well under the one second a change may take to apply).
const SETTLE: Duration = Duration::from_millis(100);
/// How often a failed bind is retried.
const BIND_RETRY: Duration = Duration::from_secs(10);

/// Spawns a reflector for `api` and returns its store; every event bumps `changed`.
fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    changed: watch::Sender<u64>,
    shutdown: CancellationToken,
) -> Store<K>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, writer) = reflector::store::<K>();
    let kind = K::kind(&Default::default()).to_string();
    let stream = reflector::reflector(writer, watcher::watcher(api, config).default_backoff());
    tokio::spawn(async move {
        tokio::pin!(stream);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                next = stream.next() => match next {
                    Some(Ok(_)) => { changed.send_modify(|n| *n += 1); }
                    Some(Err(e)) => tracing::warn!(%kind, "ingress watch failed (retrying): {e}"),
                    None => break,
                },
            }
        }
    });
    reader
}

/// The addresses the ingress answers on, for `status.loadBalancer`.
pub fn node_addresses(nodes: &[Arc<Node>]) -> Vec<String> {
    let mut out = BTreeSet::new();
    for node in nodes {
        let Some(status) = &node.status else { continue };
        let ready = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if !ready {
            continue;
        }
        let addrs = status.addresses.iter().flatten();
        let pick = |t: &str| addrs.clone().find(|a| a.type_ == t).map(|a| a.address.clone());
        if let Some(ip) = pick("ExternalIP").or_else(|| pick("InternalIP")) {
            out.insert(ip);
        }
    }
    out.into_iter().collect()
}

fn status_ips(ing: &Ingress) -> Vec<String> {
    ing.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|l| l.iter().filter_map(|i| i.ip.clone()).collect())
        .unwrap_or_default()
}

struct Listening {
    stop: CancellationToken,
}

pub async fn run(
    client: Client,
    proxy: Arc<Proxy>,
    opts: IngressOptions,
    shutdown: CancellationToken,
) {
    let default_cert = match tls::default_certificate() {
        Ok(c) => Arc::new(c),
        Err(e) => {
            tracing::error!("the ingress will not start: {e}");
            return;
        }
    };
    let resolver = Arc::new(SniResolver::new(CertTable::only_default(default_cert.clone())));
    let tls_config = match tls::server_config(resolver.clone()) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            tracing::error!("the ingress will not start: {e}");
            return;
        }
    };
    let (changed, mut rx) = watch::channel(0u64);
    let ingresses = reflect(Api::<Ingress>::all(client.clone()), Default::default(), changed.clone(), shutdown.clone());
    let classes = reflect(Api::<IngressClass>::all(client.clone()), Default::default(), changed.clone(), shutdown.clone());
    let secrets = reflect(
        Api::<Secret>::all(client.clone()),
        watcher::Config::default().fields("type=kubernetes.io/tls"),
        changed.clone(),
        shutdown.clone(),
    );
    let nodes = reflect(Api::<Node>::all(client.clone()), Default::default(), changed.clone(), shutdown.clone());
    let mut listening: Option<Listening> = None;
    let mut last_skipped = Vec::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            r = rx.changed() => if r.is_err() { break },
            // A bind that failed is retried without waiting for a change.
            _ = tokio::time::sleep(BIND_RETRY), if listening.is_none() => {}
        }
        tokio::time::sleep(SETTLE).await;
        rx.borrow_and_update();
        // Before the first list of classes, do nothing (not even close).
        if futures::FutureExt::now_or_never(classes.wait_until_ready()).is_none() {
            continue;
        }
        let all_classes = classes.state();
        let class_refs: Vec<&IngressClass> = all_classes.iter().map(|c| c.as_ref()).collect();
        let enabled = class_refs.iter().any(|c| c.metadata.name.as_deref() == Some(CLASS_NAME));
        match (enabled, &listening) {
            (true, None) => listening = bind(&opts, &proxy, &tls_config, &shutdown).await,
            (false, Some(l)) => {
                tracing::info!("IngressClass {CLASS_NAME} is gone (--disable traefik?): the ingress stops listening");
                l.stop.cancel();
                listening = None;
            }
            _ => {}
        }
        let all = ingresses.state();
        let served: Vec<&Ingress> = all
            .iter()
            .map(|i| i.as_ref())
            .filter(|i| class::serves(i, &class_refs))
            .collect();
        let table = RouteTable::build(served.iter().copied());
        let lookup = |ns: &str, name: &str| {
            secrets
                .get(&reflector::ObjectRef::new(name).within(ns))
                .map(|s| (*s).clone())
        };
        let certs = CertTable::build(&served, &lookup, default_cert.clone());
        let skipped: Vec<String> = table.skipped.iter().chain(certs.skipped.iter()).cloned().collect();
        if skipped != last_skipped {
            for s in &skipped {
                tracing::warn!("ingress: skipped {s}");
            }
            last_skipped = skipped;
        }
        proxy.set_table(table);
        resolver.swap(certs);
        if enabled {
            let ips = node_addresses(&nodes.state());
            write_status(&client, &served, &ips).await;
        }
    }
    if let Some(l) = listening {
        l.stop.cancel();
    }
}

async fn bind(
    opts: &IngressOptions,
    proxy: &Arc<Proxy>,
    tls_config: &Arc<rustls::ServerConfig>,
    shutdown: &CancellationToken,
) -> Option<Listening> {
    let http = match tokio::net::TcpListener::bind(opts.http).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("the ingress failed to listen on {} (is another ingress running? --disable traefik turns rk3s's off): {e}", opts.http);
            return None;
        }
    };
    let https = match tokio::net::TcpListener::bind(opts.https).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("the ingress failed to listen on {}: {e}", opts.https);
            return None;
        }
    };
    tracing::info!(http = %opts.http, https = %opts.https, "ingress listening");
    let stop = shutdown.child_token();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls_config.clone());
    tokio::spawn(listener::serve(http, proxy.clone(), None, stop.clone()));
    tokio::spawn(listener::serve(https, proxy.clone(), Some(acceptor), stop.clone()));
    Some(Listening { stop })
}

async fn write_status(client: &Client, served: &[&Ingress], ips: &[String]) {
    for ing in served {
        if status_ips(ing) == ips {
            continue;
        }
        let (Some(ns), Some(name)) = (ing.metadata.namespace.as_deref(), ing.metadata.name.as_deref()) else {
            continue;
        };
        let list: Vec<_> = ips.iter().map(|ip| serde_json::json!({"ip": ip})).collect();
        let patch = serde_json::json!({"status": {"loadBalancer": {"ingress": list}}});
        let api: Api<Ingress> = Api::namespaced(client.clone(), ns);
        if let Err(e) = api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            tracing::warn!("failed to update the status of ingress {ns}/{name}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_lists_ready_nodes_external_ip_first() {
        let node = |name: &str, ready: &str, addrs: serde_json::Value| -> Arc<Node> {
            Arc::new(
                serde_json::from_value(json!({
                    "metadata": {"name": name},
                    "status": {"conditions": [{"type": "Ready", "status": ready}], "addresses": addrs}
                }))
                .unwrap(),
            )
        };
        let nodes = vec![
            node("a", "True", json!([{"type": "InternalIP", "address": "10.0.0.2"}])),
            node("b", "True", json!([{"type": "InternalIP", "address": "10.0.0.3"},
                                     {"type": "ExternalIP", "address": "203.0.113.3"}])),
            node("c", "False", json!([{"type": "InternalIP", "address": "10.0.0.4"}])),
        ];
        assert_eq!(node_addresses(&nodes), vec!["10.0.0.2".to_string(), "203.0.113.3".to_string()]);
    }
}
