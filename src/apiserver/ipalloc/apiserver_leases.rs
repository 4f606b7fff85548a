//! Every live API server listed in `default/kubernetes`, as kube-apiserver's
//! lease endpoint reconciler keeps it (`--endpoint-reconciler-type=lease`).
//!
//! Each server holds a `coordination.k8s.io` Lease `kube-system/apiserver-<hash>`
//! (label `apiserver.kubernetes.io/identity=kube-apiserver`, kube 1.26+'s
//! identity-lease label), renewed every [`RENEW_PERIOD`] with a
//! [`LEASE_SECONDS`] duration; its address and port are in the annotation
//! [`ENDPOINT_ANNOTATION`] (a Lease has no field for them). At each renewal a
//! server lists the Leases, keeps the unexpired ones, and rewrites the
//! `kubernetes` Endpoints and EndpointSlice when, and only when, that set
//! differs from what they list. A server stopping gracefully deletes its Lease
//! and rewrites the set without itself; a dead one drops out when its Lease
//! expires (within [`LEASE_SECONDS`] plus one period), and whichever server sees
//! an expired Lease deletes it (compare-and-swap, so two servers never fight).
//!
//! Idle cost: on SQLite, Leases are volatile keys (memory only), so an idle
//! server renewing its Lease never writes to disk; the Endpoints are written
//! only when a server comes or goes. On etcd, the Lease renewal is one small
//! write every 10 s per server, as with kube-apiserver.
//!
//! Partial: the EndpointSlice holds one port list, so when servers use
//! different ports it lists them all with the port most of them use (ties:
//! the lowest); the Endpoints object groups addresses by port correctly.
//! Like kube, all servers are expected to share one port.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sha2::Digest;
use tokio_util::sync::CancellationToken;

use crate::apiserver::objects;
use crate::store::{ListOptions, Store, StoreError};

/// How often a server renews its Lease and re-checks the set.
pub const RENEW_PERIOD: Duration = Duration::from_secs(10);
/// How long a Lease counts as live after its last renewal.
pub const LEASE_SECONDS: i64 = 15;
/// The label kube-apiserver puts on its identity Leases.
pub const IDENTITY_LABEL: &str = "apiserver.kubernetes.io/identity";
/// Where a Lease carries `ip:port` of the server holding it.
pub const ENDPOINT_ANNOTATION: &str = "rk3s.io/apiserver-endpoint";

const LEASE_PREFIX: &str = "/registry/leases.coordination.k8s.io/kube-system/";
const ENDPOINTS_KEY: &str = "/registry/endpoints/default/kubernetes";
const SLICE_KEY: &str = "/registry/endpointslices.discovery.k8s.io/default/kubernetes";

/// One API server's address as agents dial it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerEndpoint {
    pub ip: IpAddr,
    pub port: u16,
}

impl std::fmt::Display for ServerEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", std::net::SocketAddr::new(self.ip, self.port))
    }
}

/// `apiserver-<16 hex of sha256(ip:port)>`: stable per endpoint, so a
/// restarting server takes its own Lease back rather than leaving a twin.
pub fn lease_name(me: ServerEndpoint) -> String {
    let digest = sha2::Sha256::digest(me.to_string().as_bytes());
    format!("apiserver-{}", &hex::encode(digest)[..16])
}

/// The Lease a server writes at each renewal.
pub fn build_lease(me: ServerEndpoint, holder: &str, now: DateTime<Utc>) -> Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": lease_name(me), "namespace": "kube-system",
                     "labels": {IDENTITY_LABEL: "kube-apiserver"},
                     "annotations": {ENDPOINT_ANNOTATION: me.to_string()}},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": LEASE_SECONDS,
                 "renewTime": micro_time(now)}})
}

fn micro_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// The endpoint of an API-server Lease, and whether it is live at `now`.
pub fn lease_endpoint(lease: &Value, now: DateTime<Utc>) -> Option<(ServerEndpoint, bool)> {
    let meta = &lease["metadata"];
    if meta["labels"][IDENTITY_LABEL] != "kube-apiserver" {
        return None;
    }
    let addr: std::net::SocketAddr = meta["annotations"][ENDPOINT_ANNOTATION].as_str()?.parse().ok()?;
    let renewed = lease["spec"]["renewTime"]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())?;
    let seconds = lease["spec"]["leaseDurationSeconds"].as_i64().unwrap_or(LEASE_SECONDS);
    // The holder's wall clock, as kube's apiserver-lease GC judges identity
    // Leases: a server just started can drop a dead peer at once (see
    // crate::k8s::lease for why the elector uses the other rule).
    let live = crate::k8s::lease::renewal_live(renewed.with_timezone(&Utc), seconds, now);
    Some((ServerEndpoint { ip: addr.ip(), port: addr.port() }, live))
}

/// The `kubernetes` Endpoints' `subsets`: one per port, addresses sorted.
pub fn endpoints_subsets(set: &BTreeSet<ServerEndpoint>) -> Value {
    let mut by_port: BTreeMap<u16, Vec<Value>> = BTreeMap::new();
    for ep in set {
        by_port.entry(ep.port).or_default().push(json!({"ip": ep.ip.to_string()}));
    }
    Value::Array(
        by_port
            .into_iter()
            .map(|(port, addresses)| {
                json!({"addresses": addresses,
                       "ports": [{"name": "https", "port": port, "protocol": "TCP"}]})
            })
            .collect(),
    )
}

/// The port most servers use (ties: the lowest).
pub fn common_port(set: &BTreeSet<ServerEndpoint>) -> Option<u16> {
    let mut count: BTreeMap<u16, usize> = BTreeMap::new();
    for ep in set {
        *count.entry(ep.port).or_default() += 1;
    }
    let best = count.values().copied().max()?;
    count.into_iter().find(|(_, n)| *n == best).map(|(p, _)| p)
}

/// The Endpoints object for `set` (the bootstrap creates it from this).
pub fn endpoints_object(set: &BTreeSet<ServerEndpoint>) -> Value {
    json!({"apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": endpoints_subsets(set)})
}

/// The EndpointSlice object for `set`.
pub fn endpoint_slice_object(set: &BTreeSet<ServerEndpoint>) -> Value {
    let family = if set.iter().next().is_some_and(|e| e.ip.is_ipv6()) { "IPv6" } else { "IPv4" };
    let port = common_port(set).unwrap_or(6443);
    let endpoints: Vec<Value> = set
        .iter()
        .map(|e| json!({"addresses": [e.ip.to_string()], "conditions": {"ready": true}}))
        .collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "kubernetes"}},
        "addressType": family,
        "endpoints": endpoints,
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}]})
}

/// Keeps one server's Lease and the `kubernetes` endpoints.
pub struct Reconciler {
    store: Arc<dyn Store>,
    me: ServerEndpoint,
    holder: String,
}

impl Reconciler {
    pub fn new(store: Arc<dyn Store>, me: ServerEndpoint) -> Self {
        Reconciler {
            store,
            me,
            holder: format!("apiserver-{}", uuid::Uuid::new_v4()),
        }
    }

    /// Renews this server's Lease, deletes expired ones, and rewrites the
    /// endpoints if the live set changed. Returns the live set.
    pub fn tick(&self, now: DateTime<Utc>) -> Result<BTreeSet<ServerEndpoint>, StoreError> {
        self.renew(now)?;
        let set = live_servers(self.store.as_ref(), self.me, now, true)?;
        sync_endpoints(self.store.as_ref(), &set)?;
        Ok(set)
    }

    /// Graceful stop: the Lease goes and the endpoints no longer list this
    /// server (unless it was the last one: an empty `kubernetes` Service
    /// helps nobody, and the next server to start rewrites it).
    pub fn remove_self(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        let key = format!("{LEASE_PREFIX}{}", lease_name(self.me));
        match self.store.delete(&key, None) {
            Ok(_) | Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        let set = live_servers(self.store.as_ref(), self.me, now, false)?;
        if set.is_empty() {
            return Ok(());
        }
        sync_endpoints(self.store.as_ref(), &set)
    }

    fn renew(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        let key = format!("{LEASE_PREFIX}{}", lease_name(self.me));
        let mut lease = build_lease(self.me, &self.holder, now);
        for _ in 0..5 {
            match self.store.get(&key)? {
                None => {
                    let m = objects::meta_mut(&mut lease);
                    m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
                    m.insert("creationTimestamp".into(), json!(objects::now_rfc3339()));
                    match self.store.create(&key, &objects::to_stored(&lease)) {
                        Err(StoreError::AlreadyExists { .. }) => continue,
                        other => return other.map(|_| ()),
                    }
                }
                Some(rec) => {
                    let mut cur: Value = serde_json::from_slice(&rec.value).unwrap_or_else(|_| lease.clone());
                    cur["spec"] = lease["spec"].clone();
                    cur["metadata"]["labels"] = lease["metadata"]["labels"].clone();
                    cur["metadata"]["annotations"] = lease["metadata"]["annotations"].clone();
                    match self.store.update(&key, &objects::to_stored(&cur), rec.mod_revision) {
                        Err(StoreError::Conflict { .. }) => continue,
                        other => return other.map(|_| ()),
                    }
                }
            }
        }
        Ok(())
    }
}

/// The live servers (with `me` if `with_me`, without it otherwise);
/// expired Leases are deleted.
pub fn live_servers(
    store: &dyn Store,
    me: ServerEndpoint,
    now: DateTime<Utc>,
    with_me: bool,
) -> Result<BTreeSet<ServerEndpoint>, StoreError> {
    let page = store.list(&ListOptions {
        prefix: LEASE_PREFIX.to_string(),
        ..Default::default()
    })?;
    let mut set = BTreeSet::new();
    for rec in page.records {
        let Ok(lease) = serde_json::from_slice::<Value>(&rec.value) else { continue };
        match lease_endpoint(&lease, now) {
            Some((ep, true)) => {
                set.insert(ep);
            }
            Some((ep, false)) => {
                tracing::info!(server = %ep, "API server lease expired; dropping it from the kubernetes endpoints");
                // Another server may have renewed or deleted it meanwhile: fine.
                let _ = store.delete(&rec.key, Some(rec.mod_revision));
            }
            None => {}
        }
    }
    if with_me {
        set.insert(me);
    } else {
        set.remove(&me);
    }
    Ok(set)
}

/// Rewrites the `kubernetes` Endpoints and EndpointSlice to list `set`, each
/// only if what it lists differs (idle servers write nothing).
pub fn sync_endpoints(store: &dyn Store, set: &BTreeSet<ServerEndpoint>) -> Result<(), StoreError> {
    rewrite_if_differs(store, ENDPOINTS_KEY, endpoints_object(set), &["subsets"])?;
    rewrite_if_differs(store, SLICE_KEY, endpoint_slice_object(set), &["endpoints", "ports"])
}

/// Creates `obj` at `key`, or rewrites `fields` of the stored object when
/// any differs (everything else users did to it is kept).
pub fn rewrite_if_differs(store: &dyn Store, key: &str, mut obj: Value, fields: &[&str]) -> Result<(), StoreError> {
    for _ in 0..5 {
        match store.get(key)? {
            None => {
                let m = objects::meta_mut(&mut obj);
                m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
                m.insert("creationTimestamp".into(), json!(objects::now_rfc3339()));
                match store.create(key, &objects::to_stored(&obj)) {
                    Err(StoreError::AlreadyExists { .. }) => continue,
                    other => return other.map(|_| ()),
                }
            }
            Some(rec) => {
                let mut cur: Value = serde_json::from_slice(&rec.value).unwrap_or(Value::Null);
                if !cur.is_object() || fields.iter().all(|f| cur.get(*f) == obj.get(*f)) {
                    return Ok(());
                }
                for f in fields {
                    cur[*f] = obj[*f].clone();
                }
                match store.update(key, &objects::to_stored(&cur), rec.mod_revision) {
                    Err(StoreError::Conflict { .. }) => continue,
                    other => return other.map(|_| ()),
                }
            }
        }
    }
    Ok(())
}

/// Renews every [`RENEW_PERIOD`] until `shutdown`, then removes this
/// server from the endpoints. Store calls run on the blocking pool.
pub async fn run(store: Arc<dyn Store>, me: ServerEndpoint, shutdown: CancellationToken) {
    let reconciler = Arc::new(Reconciler::new(store, me));
    tracing::info!(server = %me, lease = %lease_name(me), "listing this API server in the kubernetes endpoints");
    loop {
        let r = reconciler.clone();
        match tokio::task::spawn_blocking(move || r.tick(Utc::now())).await {
            Ok(Err(e)) => tracing::warn!("failed to keep this API server in the kubernetes endpoints: {e}"),
            Err(e) => tracing::warn!("the API server lease task failed: {e}"),
            Ok(Ok(_)) => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(RENEW_PERIOD) => {}
        }
    }
    let r = reconciler.clone();
    match tokio::task::spawn_blocking(move || r.remove_self(Utc::now())).await {
        Ok(Ok(())) => tracing::info!(server = %me, "removed this API server from the kubernetes endpoints"),
        Ok(Err(e)) => tracing::warn!("failed to remove this API server from the kubernetes endpoints: {e}"),
        Err(e) => tracing::warn!("the API server lease task failed: {e}"),
    }
}

#[cfg(test)]
#[path = "apiserver_leases_tests.rs"]
mod tests;
