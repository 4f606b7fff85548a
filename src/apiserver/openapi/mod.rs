//! OpenAPI v3 as kube-apiserver serves it: `/openapi/v3` (an index of
//! group-versions, each with a content hash) and `/openapi/v3/<gv>` (an
//! OpenAPI 3.0 document with the paths and `components.schemas` of that
//! group-version). kubectl needs it for `apply` (its field-validation probe)
//! and `explain`.
//!
//! Schemas come from k8s-openapi's schemars output (Kubernetes 1.33 types,
//! with descriptions), post-processed with the GVK and patch extensions from
//! [`crate::apiserver::strategic::meta`]. Kinds without a known type (CRDs)
//! get a permissive schema.
//!
//! Invariants: documents are generated once per group-version and cached
//! as serialized bytes keyed by a fingerprint of that group-version's
//! registry entries, so a CRD change regenerates only its own document.
//! `/openapi/v2` ([`v2`]) is derived from these documents.
//! Partial: no watch paths, only the tagged lists of the metadata table
//! carry list extensions.

mod kinds;
mod paths;
pub mod v2;
mod v2_proto;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha512};

use crate::apiserver::registry::{Registry, ResourceDef};

pub use kinds::{builtin_kinds, BuiltinKind};

/// `api/v1` or `apis/<group>/<version>`: the index key of a group-version.
pub fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// Group-versions in the registry, in first-seen order.
fn group_versions(registry: &Registry) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for d in registry.all() {
        if !out.iter().any(|(g, v)| *g == d.group && *v == d.version) {
            out.push((d.group.clone(), d.version.clone()));
        }
    }
    out
}

/// The schema name of a kind: k8s-openapi's for built-ins, reversed-group
/// naming for the rest.
fn schema_name_of(def: &ResourceDef) -> String {
    match kinds::find(&def.group, &def.version, &def.kind) {
        Some(k) => (k.schema_name)(),
        None => kinds::custom_schema_name(&def.group, &def.version, &def.kind),
    }
}

/// The OpenAPI 3.0 document of one group-version, or `None` if the
/// registry serves nothing there.
pub fn group_version_doc(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let defs: Vec<Arc<ResourceDef>> = registry
        .all()
        .into_iter()
        .filter(|d| d.group == group && d.version == version)
        .collect();
    if defs.is_empty() {
        return None;
    }
    let mut gen = kinds::generator();
    kinds::register_common(&mut gen);
    let mut custom = Vec::new();
    for d in &defs {
        match kinds::find(&d.group, &d.version, &d.kind) {
            Some(k) => (k.register)(&mut gen),
            None => custom.push(d.clone()),
        }
        for sub in &d.subresources {
            let extra = match sub.as_str() {
                "scale" => kinds::find("autoscaling", "v1", "Scale"),
                "binding" => kinds::find("", "v1", "Binding"),
                "eviction" => kinds::find("policy", "v1", "Eviction"),
                "token" => kinds::find("authentication.k8s.io", "v1", "TokenRequest"),
                _ => None,
            };
            if let Some(k) = extra {
                (k.register)(&mut gen);
            }
        }
    }
    use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta_v1;
    if !custom.is_empty() {
        gen.subschema_for::<meta_v1::ObjectMeta>();
    }
    let mut schemas = kinds::finish(gen);
    schemas.insert(
        "io.k8s.apimachinery.pkg.apis.meta.v1.Patch".into(),
        json!({"description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body.", "type": "object"}),
    );
    for d in &custom {
        let from_crd = registry
            .custom(&d.group, &d.version, &d.plural)
            .and_then(|crd| crate::apiserver::crd::openapi_schema(&crd, d));
        schemas.insert(
            kinds::custom_schema_name(&d.group, &d.version, &d.kind),
            from_crd.unwrap_or_else(|| kinds::custom_schema(&d.group, &d.version, &d.kind)),
        );
    }
    let mut paths = Map::new();
    let api_prefix = if group.is_empty() {
        format!("/api/{version}/")
    } else {
        format!("/apis/{group}/{version}/")
    };
    paths.insert(api_prefix, json!({"get": {
        "tags": [format!("{}_{version}", if group.is_empty() { "core" } else { group })],
        "description": "get available resources",
        "operationId": "getAPIResources",
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList"}}}}}
    }}));
    schemas.insert(
        "io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList".into(),
        json!({"description": "APIResourceList is a list of APIResource.", "type": "object"}),
    );
    for d in &defs {
        let schema = schema_name_of(d);
        let list = format!("{schema}List");
        if !schemas.contains_key(&list) {
            schemas.insert(
                list.clone(),
                kinds::list_schema(&d.group, &d.version, &d.kind, &schema),
            );
        }
        paths::add_resource_paths(&mut paths, d, &schema, &list);
    }
    let schemas: BTreeMap<String, Value> = schemas.into_iter().collect();
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {"BearerToken": {"type": "apiKey", "description": "Bearer Token authentication", "name": "authorization", "in": "header"}}},
        "security": [{"BearerToken": []}]
    }))
}

/// The schemas of every built-in kind and what they reference, and each
/// kind's schema name (the strategic merge code navigates these).
pub fn all_builtin_schemas() -> (Map<String, Value>, Vec<(&'static BuiltinKind, String)>) {
    let mut gen = kinds::generator();
    let roots = builtin_kinds()
        .iter()
        .map(|k| {
            (k.register)(&mut gen);
            (k, (k.schema_name)())
        })
        .collect();
    (kinds::finish(gen), roots)
}

/// The document hash: 32 upper-case hex digits like kube's (here the first
/// 128 bits of SHA-512; clients only compare it).
fn content_hash(bytes: &[u8]) -> String {
    let digest = Sha512::digest(bytes);
    hex::encode_upper(&digest[..16])
}

/// A serialized document and its hash.
#[derive(Clone)]
struct Cached {
    fingerprint: String,
    bytes: Bytes,
    hash: String,
}

/// Per group-version cache of serialized documents.
#[derive(Default)]
pub struct DocCache {
    docs: Mutex<HashMap<String, Cached>>,
}

/// What identifies a group-version's content: its registry entries.
fn fingerprint(registry: &Registry, group: &str, version: &str) -> String {
    registry
        .all()
        .iter()
        .filter(|d| d.group == group && d.version == version)
        .map(|d| {
            // A CRD's schema changes with its uid or generation.
            let crd = registry
                .custom(&d.group, &d.version, &d.plural)
                .map(|c| format!("{}/{}", c["metadata"]["uid"], c["metadata"]["generation"]));
            format!(
                "{}|{}|{}|{}|{:?}|{:?}|{:?};",
                d.kind,
                d.plural,
                d.namespaced,
                d.subresources.join(","),
                d.verbs,
                d.short_names,
                crd
            )
        })
        .collect()
}

impl DocCache {
    /// The cached (or freshly generated) document of a group-version.
    fn get(&self, registry: &Registry, group: &str, version: &str) -> Option<Cached> {
        let key = gv_path(group, version);
        let fp = fingerprint(registry, group, version);
        if let Some(c) = self.docs.lock().expect("openapi cache").get(&key) {
            if c.fingerprint == fp {
                return Some(c.clone());
            }
        }
        let doc = group_version_doc(registry, group, version)?;
        let bytes = Bytes::from(serde_json::to_vec(&doc).expect("serializing a JSON value"));
        let cached = Cached {
            fingerprint: fp,
            hash: content_hash(&bytes),
            bytes,
        };
        self.docs
            .lock()
            .expect("openapi cache")
            .insert(key, cached.clone());
        Some(cached)
    }
}

fn global_cache() -> &'static DocCache {
    static CACHE: OnceLock<DocCache> = OnceLock::new();
    CACHE.get_or_init(DocCache::default)
}

/// The `/openapi/v3` index: every group-version with its document's hash.
pub fn index(registry: &Registry) -> Value {
    let mut paths = Map::new();
    for (g, v) in group_versions(registry) {
        if let Some(c) = global_cache().get(registry, &g, &v) {
            let p = gv_path(&g, &v);
            paths.insert(
                p.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", c.hash)}),
            );
        }
    }
    json!({"paths": paths})
}

/// The routes `/openapi/v3`, `/openapi/v3/{gv}` and `/openapi/v2`.
pub fn router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/openapi/v3", get(serve_index))
        .route("/openapi/v3/{*gv}", get(serve_doc))
        .route("/openapi/v2", get(v2::serve))
        .with_state(registry)
}

fn json_response(
    status: StatusCode,
    body: Bytes,
    extra: &[(header::HeaderName, String)],
) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for (name, value) in extra {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name.clone(), v);
        }
    }
    resp
}

async fn serve_index(State(registry): State<Arc<Registry>>) -> Response {
    let body = serde_json::to_vec(&index(&registry)).expect("serializing a JSON value");
    json_response(
        StatusCode::OK,
        body.into(),
        &[(header::CACHE_CONTROL, "no-cache, private".into())],
    )
}

async fn serve_doc(
    State(registry): State<Arc<Registry>>,
    Path(gv): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let parts: Vec<&str> = gv.trim_matches('/').split('/').collect();
    let (group, version) = match parts.as_slice() {
        ["api", v] => ("", *v),
        ["apis", g, v] => (*g, *v),
        _ => return not_found(),
    };
    let Some(doc) = global_cache().get(&registry, group, version) else {
        return not_found();
    };
    let etag = format!("\"{}\"", doc.hash);
    if let Some(h) = q.get("hash") {
        if *h != doc.hash {
            // kube redirects a stale hash to the current one.
            let location = format!("/openapi/v3/{}?hash={}", gv_path(group, version), doc.hash);
            return (
                StatusCode::MOVED_PERMANENTLY,
                [(header::LOCATION, location)],
            )
                .into_response();
        }
    }
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        == Some(etag.as_str())
    {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    let cache = if q.contains_key("hash") {
        "public, immutable"
    } else {
        "no-cache, private"
    };
    json_response(
        StatusCode::OK,
        doc.bytes,
        &[(header::ETAG, etag), (header::CACHE_CONTROL, cache.into())],
    )
}

fn not_found() -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "the server could not find the requested resource", "reason": "NotFound", "details": {}, "code": 404});
    json_response(
        StatusCode::NOT_FOUND,
        serde_json::to_vec(&body)
            .expect("serializing a JSON value")
            .into(),
        &[],
    )
}

#[cfg(test)]
mod tests;
