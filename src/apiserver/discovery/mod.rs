//! API discovery: what kubectl reads before anything else.
//!
//! - Legacy discovery: `/api` (`APIVersions`), `/api/v1` and
//!   `/apis/<group>/<version>` (`APIResourceList`, subresources listed as
//!   `pods/status` entries), `/apis` (`APIGroupList`), `/apis/<group>`
//!   (`APIGroup`).
//! - Aggregated discovery (`apidiscovery.k8s.io/v2`, and `v2beta1` for
//!   kubectl ≤ 1.29) on `/api` (the core group, name "") and `/apis` (every
//!   other group), chosen from the Accept list in the client's order of
//!   preference and answered with the matching Content-Type, an `ETag`
//!   (`If-None-Match` gives 304), `Vary: Accept` and `Cache-Control: public`,
//!   as kube-apiserver does.
//!
//! Every response is built from `Registry::all()` per request, so kinds added
//! or removed at run time (CRDs) show up at once. Groups are ordered by
//! kube-apiserver's APIService priorities, versions by version priority then
//! Kubernetes version order, resources by name: the order kubectl's REST
//! mapper uses to resolve short names.
//!
//! `router` answers exactly `/api`, `/api/v1`, `/apis`, `/apis/{group}`,
//! `/apis/{group}/{version}` and `/version`; deeper paths are the REST
//! handlers'. Unknown groups and versions get kube's 404 `Status`.
//!
//! Partial: discovery is served as JSON only (kubectl never asks for
//! protobuf discovery); `/api`'s legacy `serverAddressByClientCIDRs` names the
//! configured advertise address, else the request's Host.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::routing::get;
use axum::Router;
use base64::Engine;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256, Sha512};

use crate::apiserver::builtin::{group_version_priority, storage_version, subresource_info};
use crate::apiserver::registry::{Registry, ResourceDef};
use crate::apiserver::version::version_body;

/// The Content-Type of aggregated discovery v2.
pub const AGGREGATED_V2: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
/// The Content-Type of aggregated discovery v2beta1.
pub const AGGREGATED_V2BETA1: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";

/// Which discovery document a request gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiscoveryFormat {
    Legacy,
    AggregatedV2,
    AggregatedV2Beta1,
}

impl DiscoveryFormat {
    fn content_type(self) -> &'static str {
        match self {
            DiscoveryFormat::Legacy => "application/json",
            DiscoveryFormat::AggregatedV2 => AGGREGATED_V2,
            DiscoveryFormat::AggregatedV2Beta1 => AGGREGATED_V2BETA1,
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            DiscoveryFormat::AggregatedV2Beta1 => "apidiscovery.k8s.io/v2beta1",
            _ => "apidiscovery.k8s.io/v2",
        }
    }
}

/// One media range of an Accept header: its type, parameters and q-value.
struct MediaRange {
    mime: String,
    params: BTreeMap<String, String>,
    q: f32,
}

fn parse_accept(accept: &str) -> Vec<MediaRange> {
    accept
        .split(',')
        .filter_map(|part| {
            let mut pieces = part.split(';');
            let mime = pieces.next()?.trim().to_ascii_lowercase();
            if mime.is_empty() {
                return None;
            }
            let mut params = BTreeMap::new();
            let mut q = 1.0;
            for p in pieces {
                let Some((k, v)) = p.split_once('=') else {
                    continue;
                };
                let k = k.trim().to_ascii_lowercase();
                let v = v.trim().trim_matches('"').to_string();
                if k == "q" {
                    q = v.parse().unwrap_or(0.0);
                } else {
                    params.insert(k, v);
                }
            }
            Some(MediaRange { mime, params, q })
        })
        .collect()
}

/// Pick the discovery format from an Accept header: the first acceptable
/// entry (highest q first, then header order) wins; anything that is not an
/// aggregated discovery type means the legacy documents.
pub fn negotiate(accept: Option<&str>) -> DiscoveryFormat {
    let mut ranges = parse_accept(accept.unwrap_or(""));
    // A stable sort keeps the client's order among equal q-values.
    ranges.sort_by(|a, b| b.q.partial_cmp(&a.q).unwrap_or(Ordering::Equal));
    for range in ranges.iter().filter(|r| r.q > 0.0) {
        let aggregated = range.mime == "application/json"
            && range.params.get("g").map(String::as_str) == Some("apidiscovery.k8s.io")
            && range.params.get("as").map(String::as_str) == Some("APIGroupDiscoveryList");
        if aggregated {
            match range.params.get("v").map(String::as_str) {
                Some("v2") => return DiscoveryFormat::AggregatedV2,
                Some("v2beta1") => return DiscoveryFormat::AggregatedV2Beta1,
                _ => continue,
            }
        }
        if range.params.is_empty() || range.mime != "application/json" {
            return DiscoveryFormat::Legacy;
        }
    }
    DiscoveryFormat::Legacy
}

/// `storageVersionHash`: base64 of the first 8 bytes of
/// sha256("<group>/<version>/<kind>") of the stored version.
pub fn storage_version_hash(group: &str, version: &str, kind: &str) -> String {
    let digest = Sha256::digest(format!("{group}/{version}/{kind}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(&digest[..8])
}

/// Kubernetes' version order: GA before beta before alpha, higher numbers
/// first; versions that do not look like Kubernetes versions last, by name.
pub fn compare_kube_versions(a: &str, b: &str) -> Ordering {
    fn parse(v: &str) -> Option<(u8, u64, u64)> {
        let rest = v.strip_prefix('v')?;
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let major: u64 = rest[..digits].parse().ok()?;
        let tail = &rest[digits..];
        if tail.is_empty() {
            return Some((2, major, 0));
        }
        let (stage, num) = if let Some(n) = tail.strip_prefix("beta") {
            (1, n)
        } else if let Some(n) = tail.strip_prefix("alpha") {
            (0, n)
        } else {
            return None;
        };
        Some((stage, major, num.parse().ok()?))
    }
    match (parse(a), parse(b)) {
        (Some(x), Some(y)) => y.cmp(&x),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

/// A version and its resources, sorted by name.
pub type VersionEntry = (String, Vec<Arc<ResourceDef>>);
/// A group and its versions, in preference order.
pub type GroupEntry = (String, Vec<VersionEntry>);

/// The registry's resources grouped: groups in priority order, each with its
/// versions in preference order, each with its resources sorted by name.
pub struct Catalog {
    pub groups: Vec<GroupEntry>,
}

impl Catalog {
    pub fn new(defs: &[Arc<ResourceDef>]) -> Self {
        let mut map: BTreeMap<String, BTreeMap<String, Vec<Arc<ResourceDef>>>> = BTreeMap::new();
        for def in defs {
            map.entry(def.group.clone())
                .or_default()
                .entry(def.version.clone())
                .or_default()
                .push(def.clone());
        }
        let mut groups: Vec<GroupEntry> = map
            .into_iter()
            .map(|(group, versions)| {
                let mut versions: Vec<VersionEntry> = versions
                    .into_iter()
                    .map(|(v, mut defs)| {
                        defs.sort_by(|a, b| a.plural.cmp(&b.plural));
                        (v, defs)
                    })
                    .collect();
                versions.sort_by(|(a, _), (b, _)| {
                    let pa = group_version_priority(&group, a).1;
                    let pb = group_version_priority(&group, b).1;
                    pb.cmp(&pa).then_with(|| compare_kube_versions(a, b))
                });
                (group, versions)
            })
            .collect();
        groups.sort_by(|(a, av), (b, bv)| {
            let pa = av
                .iter()
                .map(|(v, _)| group_version_priority(a, v).0)
                .max()
                .unwrap_or(0);
            let pb = bv
                .iter()
                .map(|(v, _)| group_version_priority(b, v).0)
                .max()
                .unwrap_or(0);
            pb.cmp(&pa).then_with(|| a.cmp(b))
        });
        Catalog { groups }
    }

    fn group(&self, name: &str) -> Option<&[VersionEntry]> {
        self.groups
            .iter()
            .find(|(g, _)| g == name)
            .map(|(_, v)| v.as_slice())
    }

    fn resources(&self, group: &str, version: &str) -> Option<&[Arc<ResourceDef>]> {
        self.group(group)?
            .iter()
            .find(|(v, _)| v == version)
            .map(|(_, defs)| defs.as_slice())
    }
}

fn group_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

/// `/api` in legacy form.
pub fn api_versions(catalog: &Catalog, server_address: &str) -> Value {
    let versions: Vec<&str> = catalog
        .group("")
        .unwrap_or(&[])
        .iter()
        .map(|(v, _)| v.as_str())
        .collect();
    json!({
        "kind": "APIVersions",
        "versions": versions,
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn api_group_entry(group: &str, versions: &[VersionEntry]) -> Value {
    let list: Vec<Value> = versions
        .iter()
        .map(|(v, _)| json!({"groupVersion": group_version(group, v), "version": v}))
        .collect();
    let preferred = list.first().cloned().unwrap_or_else(|| json!({}));
    json!({"name": group, "versions": list, "preferredVersion": preferred})
}

/// `/apis` in legacy form: every non-core group.
pub fn api_group_list(catalog: &Catalog) -> Value {
    let groups: Vec<Value> = catalog
        .groups
        .iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, versions)| api_group_entry(g, versions))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/<group>`, or `None` for an unknown group.
pub fn api_group(catalog: &Catalog, group: &str) -> Option<Value> {
    if group.is_empty() {
        return None;
    }
    let mut entry = api_group_entry(group, catalog.group(group)?);
    let obj = entry.as_object_mut()?;
    let mut out = Map::new();
    out.insert("kind".into(), json!("APIGroup"));
    out.insert("apiVersion".into(), json!("v1"));
    out.append(obj);
    Some(Value::Object(out))
}

fn legacy_resource(def: &ResourceDef) -> Vec<Value> {
    let mut out = Vec::new();
    let mut top = Map::new();
    top.insert("name".into(), json!(def.plural));
    top.insert("singularName".into(), json!(def.singular));
    top.insert("namespaced".into(), json!(def.namespaced));
    top.insert("kind".into(), json!(def.kind));
    top.insert("verbs".into(), json!(def.verbs));
    if !def.short_names.is_empty() {
        top.insert("shortNames".into(), json!(def.short_names));
    }
    if !def.categories.is_empty() {
        top.insert("categories".into(), json!(def.categories));
    }
    // Only stored kinds have a storage version; create-only reviews and
    // bindings are not stored.
    if def.verbs.iter().any(|v| v == "get") {
        let (g, v, k) = storage_version(def);
        top.insert(
            "storageVersionHash".into(),
            json!(storage_version_hash(&g, &v, &k)),
        );
    }
    out.push(Value::Object(top));
    let mut subs: Vec<&String> = def.subresources.iter().collect();
    subs.sort();
    for sub in subs {
        let info = subresource_info(def, sub);
        let mut entry = Map::new();
        entry.insert("name".into(), json!(format!("{}/{sub}", def.plural)));
        entry.insert("singularName".into(), json!(""));
        entry.insert("namespaced".into(), json!(def.namespaced));
        if !info.group.is_empty() || !info.version.is_empty() {
            entry.insert("group".into(), json!(info.group));
            entry.insert("version".into(), json!(info.version));
        }
        entry.insert("kind".into(), json!(info.kind));
        entry.insert("verbs".into(), json!(info.verbs));
        out.push(Value::Object(entry));
    }
    out
}

/// `/api/v1` or `/apis/<group>/<version>`, or `None` when not served.
pub fn api_resource_list(catalog: &Catalog, group: &str, version: &str) -> Option<Value> {
    let defs = catalog.resources(group, version)?;
    let resources: Vec<Value> = defs.iter().flat_map(|d| legacy_resource(d)).collect();
    let mut out = Map::new();
    out.insert("kind".into(), json!("APIResourceList"));
    if !group.is_empty() {
        out.insert("apiVersion".into(), json!("v1"));
    }
    out.insert("groupVersion".into(), json!(group_version(group, version)));
    out.insert("resources".into(), json!(resources));
    Some(Value::Object(out))
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "version": version, "kind": kind})
}

fn aggregated_resource(def: &ResourceDef) -> Value {
    let mut r = Map::new();
    r.insert("resource".into(), json!(def.plural));
    // kube-apiserver leaves group and version empty when they are the
    // resource's own.
    r.insert("responseKind".into(), gvk("", "", &def.kind));
    r.insert(
        "scope".into(),
        json!(if def.namespaced {
            "Namespaced"
        } else {
            "Cluster"
        }),
    );
    r.insert("singularResource".into(), json!(def.singular));
    r.insert("verbs".into(), json!(def.verbs));
    if !def.short_names.is_empty() {
        r.insert("shortNames".into(), json!(def.short_names));
    }
    if !def.categories.is_empty() {
        r.insert("categories".into(), json!(def.categories));
    }
    let mut subs: Vec<&String> = def.subresources.iter().collect();
    subs.sort();
    if !subs.is_empty() {
        let list: Vec<Value> = subs
            .into_iter()
            .map(|sub| {
                let info = subresource_info(def, sub);
                json!({"subresource": sub, "responseKind": gvk(info.group, info.version, &info.kind),
                       "verbs": info.verbs})
            })
            .collect();
        r.insert("subresources".into(), json!(list));
    }
    Value::Object(r)
}

/// Aggregated discovery: the core group alone for `/api` (`core == true`),
/// every other group for `/apis`.
pub fn aggregated_discovery(catalog: &Catalog, core: bool, format: DiscoveryFormat) -> Value {
    let items: Vec<Value> = catalog
        .groups
        .iter()
        .filter(|(g, _)| g.is_empty() == core)
        .map(|(group, versions)| {
            let mut metadata = Map::new();
            if !group.is_empty() {
                metadata.insert("name".into(), json!(group));
            }
            metadata.insert("creationTimestamp".into(), Value::Null);
            let versions: Vec<Value> = versions
                .iter()
                .map(|(v, defs)| {
                    let resources: Vec<Value> =
                        defs.iter().map(|d| aggregated_resource(d)).collect();
                    json!({"version": v, "resources": resources, "freshness": "Current"})
                })
                .collect();
            json!({"metadata": metadata, "versions": versions})
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": format.api_version(), "metadata": {}, "items": items})
}

/// The 404 kube answers for paths it does not serve.
pub fn not_found_status() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": "the server could not find the requested resource", "reason": "NotFound",
           "details": {}, "code": 404})
}

#[derive(Clone)]
struct DiscoveryState {
    registry: Arc<Registry>,
    server_address: Option<String>,
}

fn json_response(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

fn ok_json(value: &Value) -> Response<Body> {
    json_response(
        StatusCode::OK,
        "application/json",
        value.to_string().into_bytes(),
    )
}

fn not_found() -> Response<Body> {
    json_response(
        StatusCode::NOT_FOUND,
        "application/json",
        not_found_status().to_string().into_bytes(),
    )
}

/// Serve `/api` or `/apis`, negotiating aggregated against legacy discovery.
fn root(state: &DiscoveryState, headers: &HeaderMap, core: bool) -> Response<Body> {
    let catalog = Catalog::new(&state.registry.all());
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = negotiate(accept);
    let mut resp = match format {
        DiscoveryFormat::Legacy => {
            let body = if core {
                let address = state
                    .server_address
                    .clone()
                    .or_else(|| {
                        headers
                            .get(header::HOST)
                            .and_then(|h| h.to_str().ok())
                            .map(str::to_string)
                    })
                    .unwrap_or_else(|| "127.0.0.1:6443".to_string());
                api_versions(&catalog, &address)
            } else {
                api_group_list(&catalog)
            };
            ok_json(&body)
        }
        aggregated => {
            let body = aggregated_discovery(&catalog, core, aggregated)
                .to_string()
                .into_bytes();
            let etag = format!("\"{}\"", hex::encode_upper(Sha512::digest(&body)));
            let cached = headers
                .get(header::IF_NONE_MATCH)
                .and_then(|v| v.to_str().ok())
                == Some(etag.as_str());
            let mut resp = if cached {
                let mut r = Response::new(Body::empty());
                *r.status_mut() = StatusCode::NOT_MODIFIED;
                r
            } else {
                json_response(StatusCode::OK, aggregated.content_type(), body)
            };
            if let Ok(v) = HeaderValue::from_str(&etag) {
                resp.headers_mut().insert(header::ETAG, v);
            }
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("public"));
            resp
        }
    };
    resp.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept"));
    resp
}

async fn api_root(State(state): State<DiscoveryState>, headers: HeaderMap) -> Response<Body> {
    root(&state, &headers, true)
}

async fn apis_root(State(state): State<DiscoveryState>, headers: HeaderMap) -> Response<Body> {
    root(&state, &headers, false)
}

async fn core_v1(State(state): State<DiscoveryState>) -> Response<Body> {
    let catalog = Catalog::new(&state.registry.all());
    api_resource_list(&catalog, "", "v1").map_or_else(not_found, |v| ok_json(&v))
}

async fn group(State(state): State<DiscoveryState>, Path(group): Path<String>) -> Response<Body> {
    let catalog = Catalog::new(&state.registry.all());
    api_group(&catalog, &group).map_or_else(not_found, |v| ok_json(&v))
}

async fn group_version_handler(
    State(state): State<DiscoveryState>,
    Path((group, version)): Path<(String, String)>,
) -> Response<Body> {
    let catalog = Catalog::new(&state.registry.all());
    if group.is_empty() {
        return not_found();
    }
    api_resource_list(&catalog, &group, &version).map_or_else(not_found, |v| ok_json(&v))
}

async fn version_handler() -> Response<Body> {
    json_response(
        StatusCode::OK,
        "application/json",
        version_body().into_bytes(),
    )
}

/// The discovery and `/version` routes. `/api`'s legacy
/// `serverAddressByClientCIDRs` names the request's Host.
pub fn router(registry: Arc<Registry>) -> Router {
    router_with_address(registry, None)
}

/// As `router`, advertising `server_address` (`host:port`) in `/api`.
pub fn router_with_address(registry: Arc<Registry>, server_address: Option<String>) -> Router {
    let state = DiscoveryState {
        registry,
        server_address,
    };
    Router::new()
        .route("/api", get(api_root))
        .route("/api/v1", get(core_v1))
        .route("/apis", get(apis_root))
        .route("/apis/{group}", get(group))
        .route("/apis/{group}/{version}", get(group_version_handler))
        .route("/version", get(version_handler))
        .with_state(state)
}

#[cfg(test)]
mod tests;
