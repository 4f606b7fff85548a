//! The API server's Prometheus metrics, served on `/metrics` (authorized as
//! kube authorizes it: a non-resource `get` on `/metrics`, which RBAC gives
//! the `system:monitoring` group and cluster admins).
//!
//! - [`record`], a middleware around every route: `apiserver_request_total`
//!   (verb, group, version, resource, subresource, scope, component, code,
//!   with kube's verbs: LIST, WATCH, GET, POST, PUT, PATCH, APPLY, DELETE,
//!   DELETECOLLECTION, CONNECT) and `apiserver_request_duration_seconds`
//!   (without WATCH and CONNECT, which last as long as the client wants);
//!   open watches as `apiserver_longrunning_requests{verb="WATCH"}`, counted
//!   down when the response stream is dropped.
//! - [`CountingStore`], a `Store` decorator `ApiServer::bind` puts in front
//!   of the store: `rk3s_store_writes_total{operation,resource}` and, at
//!   each scrape, `rk3s_store_revision` and `rk3s_store_compacted_revision`.
//!   The database file's size (`apiserver_storage_size_bytes`) comes from
//!   `server::assemble`, which knows where the file is.
//!
//! Labels come from the registry: a path naming no served resource counts
//! with an empty resource, so clients cannot grow the series without bound.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use super::context::AppState;
use super::registry::Registry as Kinds;
use crate::metrics::prom::{self, Registry};
use crate::store::{ListOptions, ListPage, Record, Result, Revision, Store, WatchReceiver};

/// What one request is, in `apiserver_request_total`'s labels.
#[derive(Debug, Default, PartialEq, Eq)]
struct RequestInfo {
    verb: &'static str,
    group: String,
    version: String,
    resource: String,
    subresource: String,
    scope: &'static str,
}

impl RequestInfo {
    /// kube's long-running check: watches, connects and (followed) logs.
    fn long_running(&self) -> bool {
        matches!(self.verb, "WATCH" | "CONNECT") || self.subresource == "log"
    }
}

/// Classifies a request as kube-apiserver's request-info resolver does.
fn classify(kinds: &Kinds, method: &http::Method, path: &str, query: &str, apply: bool) -> RequestInfo {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, mut rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest.to_vec()),
        ["apis", g, v, rest @ ..] => (*g, *v, rest.to_vec()),
        _ => {
            return RequestInfo {
                verb: non_resource_verb(method),
                ..Default::default()
            }
        }
    };
    let legacy_watch = rest.first() == Some(&"watch");
    if legacy_watch {
        rest.remove(0);
    }
    let (resource, name, sub, namespaced) = match rest.as_slice() {
        ["namespaces", _, plural, tail @ ..] => (*plural, tail.first().copied(), tail.get(1).copied(), true),
        [plural, tail @ ..] => (*plural, tail.first().copied(), tail.get(1).copied(), false),
        [] => ("", None, None, false),
    };
    let known = kinds.lookup(group, version, resource).is_some();
    let watch = legacy_watch || form_urlencoded::parse(query.as_bytes()).any(|(k, v)| k == "watch" && (v == "true" || v == "1"));
    let connect = matches!(sub, Some("exec" | "attach" | "portforward" | "proxy"));
    let verb = match *method {
        _ if connect => "CONNECT",
        http::Method::GET | http::Method::HEAD if watch => "WATCH",
        http::Method::GET | http::Method::HEAD if name.is_none() => "LIST",
        http::Method::GET | http::Method::HEAD => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH if apply => "APPLY",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE if name.is_none() => "DELETECOLLECTION",
        http::Method::DELETE => "DELETE",
        _ => "OTHER",
    };
    RequestInfo {
        verb,
        group: if known { group.to_string() } else { String::new() },
        version: if known { version.to_string() } else { String::new() },
        resource: if known { resource.to_string() } else { String::new() },
        subresource: if known { sub.unwrap_or_default().to_string() } else { String::new() },
        scope: match (name.is_some(), namespaced) {
            (true, _) => "resource",
            (false, true) => "namespace",
            (false, false) => "cluster",
        },
    }
}

fn non_resource_verb(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET | http::Method::HEAD => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        _ => "OTHER",
    }
}

/// Counts and times every request (the layer over the whole router).
pub async fn record(State(state): State<Arc<AppState>>, req: Request, next: axum::middleware::Next) -> Response {
    let apply = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/apply-patch"));
    let info = classify(&state.registry, req.method(), req.uri().path(), req.uri().query().unwrap_or(""), apply);
    let started = Instant::now();
    let telemetry = state.telemetry.clone();
    let watch_labels = [
        ("verb", info.verb),
        ("group", info.group.as_str()),
        ("version", info.version.as_str()),
        ("resource", info.resource.as_str()),
        ("scope", info.scope),
    ];
    let response = next.run(req).await;
    let code = response.status().as_u16().to_string();
    let labels = [
        ("verb", info.verb),
        ("group", info.group.as_str()),
        ("version", info.version.as_str()),
        ("resource", info.resource.as_str()),
        ("subresource", info.subresource.as_str()),
        ("scope", info.scope),
        ("component", "apiserver"),
        ("code", code.as_str()),
    ];
    telemetry.inc("apiserver_request_total", "Counter of apiserver requests broken out for each verb, group, version, resource, scope, component, and HTTP response code.", &labels, 1.0);
    if info.long_running() {
        if info.verb == "WATCH" && response.status().is_success() {
            return watch_guarded(response, telemetry, &watch_labels);
        }
        return response;
    }
    telemetry.observe(
        "apiserver_request_duration_seconds",
        "Response latency distribution in seconds for each verb, group, version, resource, subresource, scope and component.",
        &labels[..7],
        started.elapsed().as_secs_f64(),
        prom::DURATION_BUCKETS,
    );
    response
}

const LONGRUNNING: &str = "apiserver_longrunning_requests";
const LONGRUNNING_HELP: &str = "Gauge of all active long-running apiserver requests broken out by verb, group, version, resource and scope.";

/// Counts a watch as open until its response stream is dropped.
fn watch_guarded(response: Response, telemetry: Arc<Registry>, labels: &[(&str, &str)]) -> Response {
    struct Open {
        telemetry: Arc<Registry>,
        labels: Vec<(String, String)>,
    }
    impl Drop for Open {
        fn drop(&mut self) {
            let l: Vec<(&str, &str)> = self.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            self.telemetry.add(LONGRUNNING, LONGRUNNING_HELP, &l, -1.0);
        }
    }
    telemetry.add(LONGRUNNING, LONGRUNNING_HELP, labels, 1.0);
    let open = Open {
        telemetry,
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    };
    let (parts, body) = response.into_parts();
    let stream = body.into_data_stream().map(move |chunk| {
        let _ = &open;
        chunk
    });
    Response::from_parts(parts, Body::from_stream(stream))
}

/// `GET /metrics` (after `authorize_non_resource`).
pub async fn serve(State(state): State<Arc<AppState>>) -> Response {
    ([(http::header::CONTENT_TYPE, prom::CONTENT_TYPE)], state.telemetry.render()).into_response()
}

/// A `Store` that counts successful writes by resource.
pub struct CountingStore {
    inner: Arc<dyn Store>,
    telemetry: Arc<Registry>,
}

impl CountingStore {
    pub fn new(inner: Arc<dyn Store>, telemetry: Arc<Registry>) -> Self {
        let revisions = inner.clone();
        telemetry.on_render(Arc::new(move |r: &Registry| {
            r.set("rk3s_store_revision", "The store's current revision.", &[], revisions.current_revision() as f64);
            r.set("rk3s_store_compacted_revision", "The revision the store's history is compacted to.", &[], revisions.compacted_revision() as f64);
        }));
        CountingStore { inner, telemetry }
    }

    fn count<T>(&self, operation: &str, key: &str, r: Result<T>) -> Result<T> {
        if r.is_ok() {
            // `/registry/<resource>/…`: the resource, never the object.
            let resource = key.trim_start_matches("/registry/").split('/').next().unwrap_or_default();
            self.telemetry.inc(
                "rk3s_store_writes_total",
                "Writes committed to the store, by operation and resource.",
                &[("operation", operation), ("resource", resource)],
                1.0,
            );
        }
        r
    }
}

impl Store for CountingStore {
    fn current_revision(&self) -> Revision {
        self.inner.current_revision()
    }
    fn compacted_revision(&self) -> Revision {
        self.inner.compacted_revision()
    }
    fn get(&self, key: &str) -> Result<Option<Record>> {
        self.inner.get(key)
    }
    fn list(&self, opts: &ListOptions) -> Result<ListPage> {
        self.inner.list(opts)
    }
    fn create(&self, key: &str, value: &[u8]) -> Result<Record> {
        self.count("create", key, self.inner.create(key, value))
    }
    fn update(&self, key: &str, value: &[u8], expected: Revision) -> Result<Record> {
        self.count("update", key, self.inner.update(key, value, expected))
    }
    fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Record> {
        self.count("delete", key, self.inner.delete(key, expected))
    }
    fn watch(&self, prefix: &str, after: Revision) -> Result<WatchReceiver> {
        self.inner.watch(prefix, after)
    }
    fn compact(&self, revision: Revision) -> Result<()> {
        self.inner.compact(revision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds() -> Kinds {
        super::super::builtin::builtin_registry()
    }

    #[test]
    fn requests_are_classified_with_kubes_verbs() {
        let k = kinds();
        let get = http::Method::GET;
        let c = |m: &http::Method, p: &str, q: &str| {
            let i = classify(&k, m, p, q, false);
            (i.verb, i.resource, i.subresource, i.scope)
        };
        assert_eq!(c(&get, "/api/v1/pods", ""), ("LIST", "pods".into(), "".into(), "cluster"));
        assert_eq!(c(&get, "/api/v1/namespaces/default/pods", "watch=true"), ("WATCH", "pods".into(), "".into(), "namespace"));
        assert_eq!(c(&get, "/api/v1/watch/namespaces/default/pods", ""), ("WATCH", "pods".into(), "".into(), "namespace"));
        assert_eq!(c(&get, "/api/v1/namespaces/default/pods/web", ""), ("GET", "pods".into(), "".into(), "resource"));
        assert_eq!(c(&get, "/api/v1/namespaces/default/pods/web/log", ""), ("GET", "pods".into(), "log".into(), "resource"));
        assert_eq!(c(&get, "/api/v1/namespaces/kube-system", ""), ("GET", "namespaces".into(), "".into(), "resource"));
        assert_eq!(c(&http::Method::DELETE, "/apis/apps/v1/namespaces/x/deployments", ""), ("DELETECOLLECTION", "deployments".into(), "".into(), "namespace"));
        assert_eq!(classify(&k, &http::Method::PATCH, "/apis/apps/v1/namespaces/x/deployments/d", "", true).verb, "APPLY");
        // Unknown resources do not become label values.
        assert_eq!(c(&get, "/apis/made.up/v1/things", ""), ("LIST", "".into(), "".into(), "cluster"));
        assert_eq!(c(&get, "/metrics", ""), ("GET", "".into(), "".into(), ""));
    }

    #[test]
    fn store_writes_are_counted_by_resource() {
        let telemetry = Arc::new(Registry::new());
        let store = CountingStore::new(Arc::new(super::super::testing::MemoryStore::new()), telemetry.clone());
        let rec = store.create("/registry/pods/default/a", b"{}").unwrap();
        store.update("/registry/pods/default/a", b"{\"a\":1}", rec.mod_revision).unwrap();
        assert!(store.create("/registry/pods/default/a", b"{}").is_err());
        store.create("/registry/configmaps/default/c", b"{}").unwrap();
        let v = |op, res| telemetry.value("rk3s_store_writes_total", &[("operation", op), ("resource", res)]);
        assert_eq!(v("create", "pods"), Some(1.0), "a failed create is not counted");
        assert_eq!(v("update", "pods"), Some(1.0));
        assert_eq!(v("create", "configmaps"), Some(1.0));
        let text = telemetry.render();
        assert!(text.contains(&format!("rk3s_store_revision {}", store.current_revision())), "{text}");
    }
}
