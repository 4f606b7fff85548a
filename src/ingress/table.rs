//! The routing table: every served Ingress's rules, flattened and ordered
//! once per configuration change so that a request is routed by a scan of
//! one host's few routes.
//!
//! Semantics (the Ingress API's, networking.k8s.io/v1):
//! - hosts are matched case-insensitively without the port; `*.example.com`
//!   matches exactly one more DNS label (`a.example.com`, not
//!   `example.com` nor `a.b.example.com`); a rule without a host matches
//!   any host;
//! - an exact host is tried before a wildcard host, and both before the
//!   host-less rules; a host whose paths all miss falls through to the next
//!   group (as Traefik's routers do), then to a `defaultBackend`;
//! - `Exact` matches the path string exactly; `Prefix` matches by path
//!   element (`/foo` matches `/foo` and `/foo/bar`, not `/foobar`), a
//!   trailing `/` in the rule being ignored; `ImplementationSpecific` is
//!   `Prefix` here;
//! - within a group the longest path wins, then `Exact` over `Prefix`;
//!   between equal rules of different Ingresses the oldest Ingress wins
//!   (creation time, then namespace/name), as ingress-nginx orders them.
//!
//! Invariant: building never fails: an unusable rule (no backend, a
//! resource backend) is skipped and reported in [`RouteTable::skipped`].

use std::collections::HashMap;

use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};

/// A Service port as an Ingress names it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PortRef {
    Number(i32),
    Name(String),
}

impl std::fmt::Display for PortRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(n) => f.write_str(n),
        }
    }
}

/// The Service a route sends to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceRef {
    pub namespace: String,
    pub name: String,
    pub port: PortRef,
}

impl std::fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.name, self.port)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostMatch {
    Any,
    Exact(String),
    /// The suffix after the `*`, with its leading dot (`.example.com`).
    Wildcard(String),
}

impl HostMatch {
    fn parse(host: Option<&str>) -> HostMatch {
        match host.map(|h| h.trim().to_ascii_lowercase()) {
            None => HostMatch::Any,
            Some(h) if h.is_empty() => HostMatch::Any,
            Some(h) => match h.strip_prefix('*') {
                Some(suffix) => HostMatch::Wildcard(suffix.to_string()),
                None => HostMatch::Exact(h),
            },
        }
    }

    pub fn display(&self) -> String {
        match self {
            HostMatch::Any => "*".into(),
            HostMatch::Exact(h) => h.clone(),
            HostMatch::Wildcard(s) => format!("*{s}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathKind {
    Exact,
    Prefix,
}

/// One routing rule: host, path, backend, and who declared it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// `namespace/name` of the Ingress.
    pub ingress: String,
    pub host: HostMatch,
    pub kind: PathKind,
    /// The path as written (`/` when the rule has none).
    pub path: String,
    pub backend: ServiceRef,
    /// Whether the Ingress lists this host (or all hosts) under `spec.tls`.
    pub tls: bool,
    /// Ordering key between Ingresses: creation time (RFC 3339), then name.
    order: (String, String),
}

impl Route {
    fn matches_path(&self, path: &str) -> bool {
        match self.kind {
            PathKind::Exact => path == self.path,
            PathKind::Prefix => prefix_matches(&self.path, path),
        }
    }

    /// The length the spec compares for "longest path wins".
    fn weight(&self) -> usize {
        match self.kind {
            PathKind::Exact => self.path.len(),
            PathKind::Prefix => self.path.trim_end_matches('/').len(),
        }
    }
}

/// `Prefix` matching by path element.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// What [`RouteTable::route`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target<'a> {
    Route(&'a Route),
    /// No rule matched; the oldest served Ingress's `defaultBackend`.
    Default { ingress: &'a str, backend: &'a ServiceRef },
    None,
}

#[derive(Default, Debug)]
pub struct RouteTable {
    exact: HashMap<String, Vec<Route>>,
    wildcard: HashMap<String, Vec<Route>>,
    any: Vec<Route>,
    default_backend: Option<(String, ServiceRef)>,
    /// Rules that could not be served, with the reason (for logs and the dashboard).
    pub skipped: Vec<String>,
}

fn service_ref(namespace: &str, backend: &IngressBackend) -> Result<ServiceRef, String> {
    let svc = backend
        .service
        .as_ref()
        .ok_or("only service backends are supported (not resource backends)")?;
    let port = svc.port.as_ref().ok_or("the backend names no service port")?;
    let port = match (&port.name, port.number) {
        (Some(n), _) if !n.is_empty() => PortRef::Name(n.clone()),
        (_, Some(n)) => PortRef::Number(n),
        _ => return Err("the backend names no service port".into()),
    };
    Ok(ServiceRef {
        namespace: namespace.to_string(),
        name: svc.name.clone(),
        port,
    })
}

fn ingress_order(ing: &Ingress) -> (String, String) {
    let created = ing
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.to_string())
        .unwrap_or_default();
    (created, ingress_key(ing))
}

pub fn ingress_key(ing: &Ingress) -> String {
    format!(
        "{}/{}",
        ing.metadata.namespace.as_deref().unwrap_or("default"),
        ing.metadata.name.as_deref().unwrap_or("")
    )
}

/// Whether `host` is covered by the Ingress's `spec.tls` hosts.
fn tls_covers(ing: &Ingress, host: &HostMatch) -> bool {
    let Some(spec) = &ing.spec else { return false };
    spec.tls.iter().flatten().any(|t| match &t.hosts {
        None => true,
        Some(hosts) if hosts.is_empty() => true,
        Some(hosts) => hosts
            .iter()
            .any(|h| HostMatch::parse(Some(h)) == *host || *host == HostMatch::Any),
    })
}

impl RouteTable {
    /// Builds the table from the Ingresses this controller serves.
    pub fn build<'a>(ingresses: impl IntoIterator<Item = &'a Ingress>) -> RouteTable {
        let mut table = RouteTable::default();
        let mut defaults = Vec::new();
        for ing in ingresses {
            let key = ingress_key(ing);
            let ns = ing.metadata.namespace.as_deref().unwrap_or("default");
            let order = ingress_order(ing);
            let Some(spec) = &ing.spec else { continue };
            if let Some(backend) = &spec.default_backend {
                match service_ref(ns, backend) {
                    Ok(b) => defaults.push((order.clone(), key.clone(), b)),
                    Err(e) => table.skipped.push(format!("{key}: defaultBackend: {e}")),
                }
            }
            for rule in spec.rules.iter().flatten() {
                let host = HostMatch::parse(rule.host.as_deref());
                let tls = tls_covers(ing, &host);
                let Some(http) = &rule.http else { continue };
                for p in &http.paths {
                    let backend = match service_ref(ns, &p.backend) {
                        Ok(b) => b,
                        Err(e) => {
                            table.skipped.push(format!("{key}: host {}: {e}", host.display()));
                            continue;
                        }
                    };
                    let kind = match p.path_type.as_str() {
                        "Exact" => PathKind::Exact,
                        _ => PathKind::Prefix,
                    };
                    let route = Route {
                        ingress: key.clone(),
                        host: host.clone(),
                        kind,
                        path: p.path.clone().filter(|s| !s.is_empty()).unwrap_or("/".into()),
                        backend,
                        tls,
                        order: order.clone(),
                    };
                    match &host {
                        HostMatch::Any => table.any.push(route),
                        HostMatch::Exact(h) => table.exact.entry(h.clone()).or_default().push(route),
                        HostMatch::Wildcard(s) => {
                            table.wildcard.entry(s.clone()).or_default().push(route)
                        }
                    }
                }
            }
        }
        defaults.sort();
        table.default_backend = defaults.into_iter().next().map(|(_, k, b)| (k, b));
        let sort = |routes: &mut Vec<Route>| {
            routes.sort_by(|a, b| {
                b.weight()
                    .cmp(&a.weight())
                    .then((a.kind == PathKind::Prefix).cmp(&(b.kind == PathKind::Prefix)))
                    .then_with(|| a.order.cmp(&b.order))
            })
        };
        table.exact.values_mut().for_each(sort);
        table.wildcard.values_mut().for_each(sort);
        sort(&mut table.any);
        table
    }

    /// Routes a request by its `Host` (or `:authority`) and path.
    pub fn route(&self, host: &str, path: &str) -> Target<'_> {
        let host = normalize_host(host);
        fn first<'t>(routes: Option<&'t Vec<Route>>, path: &str) -> Option<&'t Route> {
            routes.and_then(|r| r.iter().find(|r| r.matches_path(path)))
        }
        if let Some(r) = first(self.exact.get(&host), path) {
            return Target::Route(r);
        }
        if let Some(dot) = host.find('.') {
            if dot > 0 {
                if let Some(r) = first(self.wildcard.get(&host[dot..]), path) {
                    return Target::Route(r);
                }
            }
        }
        if let Some(r) = first(Some(&self.any), path) {
            return Target::Route(r);
        }
        match &self.default_backend {
            Some((ingress, backend)) => Target::Default { ingress, backend },
            None => Target::None,
        }
    }

    /// Every route, in no particular order (for the dashboard and status).
    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.exact
            .values()
            .chain(self.wildcard.values())
            .flatten()
            .chain(self.any.iter())
    }

    pub fn default_backend(&self) -> Option<(&str, &ServiceRef)> {
        self.default_backend.as_ref().map(|(i, b)| (i.as_str(), b))
    }
}

/// Lowercase, without a `:port` (IPv6 literals keep their brackets).
pub fn normalize_host(host: &str) -> String {
    let host = host.trim();
    let bare = if host.starts_with('[') {
        host.split_inclusive(']').next().unwrap_or(host)
    } else {
        host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
    };
    bare.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ingress(name: &str, created: &str, spec: serde_json::Value) -> Ingress {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "creationTimestamp": created},
            "spec": spec,
        }))
        .unwrap()
    }

    fn backend(svc: &str, port: serde_json::Value) -> serde_json::Value {
        json!({"service": {"name": svc, "port": port}})
    }

    fn rule(host: Option<&str>, paths: &[(&str, &str, &str)]) -> serde_json::Value {
        let paths: Vec<_> = paths
            .iter()
            .map(|(p, t, s)| json!({"path": p, "pathType": t, "backend": backend(s, json!({"number": 80}))}))
            .collect();
        let mut r = json!({"http": {"paths": paths}});
        if let Some(h) = host {
            r["host"] = json!(h);
        }
        r
    }

    fn svc(t: Target<'_>) -> String {
        match t {
            Target::Route(r) => r.backend.name.clone(),
            Target::Default { backend, .. } => format!("default:{}", backend.name),
            Target::None => "none".into(),
        }
    }

    #[test]
    fn prefix_matches_by_path_element() {
        assert!(prefix_matches("/", "/anything"));
        assert!(prefix_matches("/foo", "/foo"));
        assert!(prefix_matches("/foo", "/foo/"));
        assert!(prefix_matches("/foo", "/foo/bar"));
        assert!(!prefix_matches("/foo", "/foobar"));
        assert!(prefix_matches("/foo/", "/foo"), "a trailing slash in the rule is ignored");
        assert!(prefix_matches("/aaa/bbb", "/aaa/bbb/ccc"));
        assert!(!prefix_matches("/aaa/bbb", "/aaa/bbbxyz"));
        assert!(!prefix_matches("/aaa/bbb", "/aaa"));
    }

    #[test]
    fn exact_paths_match_only_themselves() {
        let t = RouteTable::build(&[ingress(
            "a",
            "2026-01-01T00:00:00Z",
            json!({"rules": [rule(Some("h"), &[("/foo", "Exact", "exact")])]}),
        )]);
        assert_eq!(svc(t.route("h", "/foo")), "exact");
        assert_eq!(svc(t.route("h", "/foo/")), "none");
        assert_eq!(svc(t.route("h", "/foo/bar")), "none");
    }

    #[test]
    fn longest_path_wins_then_exact_over_prefix() {
        let t = RouteTable::build(&[ingress(
            "a",
            "2026-01-01T00:00:00Z",
            json!({"rules": [rule(Some("h"), &[
                ("/", "Prefix", "root"),
                ("/api", "Prefix", "api-prefix"),
                ("/api", "Exact", "api-exact"),
                ("/api/v1", "ImplementationSpecific", "v1"),
            ])]}),
        )]);
        assert_eq!(svc(t.route("h", "/api")), "api-exact");
        assert_eq!(svc(t.route("h", "/api/x")), "api-prefix");
        assert_eq!(svc(t.route("h", "/api/v1/pods")), "v1");
        assert_eq!(svc(t.route("h", "/apix")), "root");
        assert_eq!(svc(t.route("h", "/")), "root");
    }

    #[test]
    fn hosts_exact_then_wildcard_then_any_then_default() {
        let t = RouteTable::build(&[ingress(
            "a",
            "2026-01-01T00:00:00Z",
            json!({
                "defaultBackend": backend("fallback", json!({"name": "http"})),
                "rules": [
                    rule(Some("foo.example.com"), &[("/only", "Prefix", "exact-host")]),
                    rule(Some("*.example.com"), &[("/", "Prefix", "wild")]),
                    rule(None, &[("/any", "Prefix", "any")]),
                ]
            }),
        )]);
        assert_eq!(svc(t.route("FOO.example.com:8080", "/only/x")), "exact-host");
        // The exact host's paths miss: fall through to the wildcard.
        assert_eq!(svc(t.route("foo.example.com", "/other")), "wild");
        assert_eq!(svc(t.route("bar.example.com", "/")), "wild");
        // A wildcard is one label only.
        assert_eq!(svc(t.route("a.b.example.com", "/any")), "any");
        assert_eq!(svc(t.route("example.com", "/x")), "default:fallback");
        assert_eq!(svc(t.route("other", "/any/1")), "any");
        match t.route("other", "/") {
            Target::Default { backend, .. } => {
                assert_eq!(backend.port, PortRef::Name("http".into()))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_oldest_ingress_wins_a_conflict() {
        let newer = ingress(
            "newer",
            "2026-02-01T00:00:00Z",
            json!({"rules": [rule(Some("h"), &[("/", "Prefix", "new")])],
                   "defaultBackend": backend("new-default", json!({"number": 1}))}),
        );
        let older = ingress(
            "older",
            "2026-01-01T00:00:00Z",
            json!({"rules": [rule(Some("h"), &[("/", "Prefix", "old")])],
                   "defaultBackend": backend("old-default", json!({"number": 1}))}),
        );
        let t = RouteTable::build([&newer, &older]);
        assert_eq!(svc(t.route("h", "/")), "old");
        assert_eq!(svc(t.route("x", "/")), "default:old-default");
        let r = match t.route("h", "/") {
            Target::Route(r) => r,
            o => panic!("{o:?}"),
        };
        assert_eq!(r.ingress, "default/older");
    }

    #[test]
    fn unusable_backends_are_skipped_and_reported() {
        let t = RouteTable::build(&[ingress(
            "a",
            "2026-01-01T00:00:00Z",
            json!({"rules": [{"host": "h", "http": {"paths": [
                {"path": "/r", "pathType": "Prefix", "backend": {"resource": {"kind": "Bucket", "name": "b"}}},
                {"path": "/", "pathType": "Prefix", "backend": backend("ok", json!({"number": 80}))},
            ]}}]}),
        )]);
        assert_eq!(svc(t.route("h", "/r")), "ok");
        assert_eq!(t.skipped.len(), 1);
        assert!(t.skipped[0].contains("resource backends"), "{:?}", t.skipped);
    }

    #[test]
    fn tls_flags_follow_spec_tls_hosts() {
        let t = RouteTable::build(&[ingress(
            "a",
            "2026-01-01T00:00:00Z",
            json!({"tls": [{"hosts": ["secure.local"], "secretName": "s"}],
                   "rules": [rule(Some("secure.local"), &[("/", "Prefix", "s")]),
                             rule(Some("plain.local"), &[("/", "Prefix", "p")])]}),
        )]);
        let tls = |h: &str| match t.route(h, "/") {
            Target::Route(r) => r.tls,
            o => panic!("{o:?}"),
        };
        assert!(tls("secure.local"));
        assert!(!tls("plain.local"));
    }

    #[test]
    fn hosts_are_normalized() {
        assert_eq!(normalize_host("Hello.Local:8443"), "hello.local");
        assert_eq!(normalize_host("hello.local."), "hello.local");
        assert_eq!(normalize_host("[::1]:80"), "[::1]");
        assert_eq!(normalize_host("10.0.0.1"), "10.0.0.1");
    }
}
