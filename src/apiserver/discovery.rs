//! PLACEHOLDER (the `apimeta` helper's version replaces this file at merge):
//! `/version` and legacy (non-aggregated) discovery, enough for kubectl.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::registry::{Registry, ResourceDef};
use super::status::ApiStatus;

fn resource_entry(d: &ResourceDef) -> Vec<Value> {
    let mut out = vec![json!({
        "name": d.plural, "singularName": d.singular, "namespaced": d.namespaced, "kind": d.kind,
        "verbs": d.verbs, "shortNames": d.short_names, "categories": d.categories,
    })];
    for s in &d.subresources {
        out.push(json!({"name": format!("{}/{}", d.plural, s), "singularName": "", "namespaced": d.namespaced,
                        "kind": d.kind, "verbs": ["get", "patch", "update"]}));
    }
    out
}

fn resource_list(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let defs: Vec<_> = reg
        .all()
        .into_iter()
        .filter(|d| d.group == group && d.version == version)
        .collect();
    if defs.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    let resources: Vec<Value> = defs.iter().flat_map(|d| resource_entry(d)).collect();
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

/// `/version`, `/api`, `/apis`, `/api/v1`, `/apis/{group}/{version}`.
pub fn routes(registry: Arc<Registry>) -> Router {
    Router::new()
        .route(
            "/version",
            get(|| async {
                Json(json!({
                    "major": "1", "minor": "32", "gitVersion": "v1.32.0+rk3s", "gitCommit": "", "gitTreeState": "clean",
                    "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.23", "compiler": "rustc",
                    "platform": format!("linux/{}", if cfg!(target_arch = "aarch64") { "arm64" } else { "amd64" }),
                }))
            }),
        )
        .route(
            "/api",
            get(|| async {
                Json(json!({"kind": "APIVersions", "versions": ["v1"],
                            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]}))
            }),
        )
        .route(
            "/apis",
            get(|State(reg): State<Arc<Registry>>| async move {
                let groups: BTreeSet<(String, String)> = reg
                    .all()
                    .iter()
                    .filter(|d| !d.group.is_empty())
                    .map(|d| (d.group.clone(), d.version.clone()))
                    .collect();
                let mut items: Vec<Value> = Vec::new();
                for (g, v) in groups {
                    let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
                    match items.iter_mut().find(|i| i["name"] == g.as_str()) {
                        Some(i) => i["versions"].as_array_mut().expect("versions").push(gv),
                        None => items.push(json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})),
                    }
                }
                Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": items}))
            }),
        )
        .route(
            "/api/v1",
            get(|State(reg): State<Arc<Registry>>| async move {
                resource_list(&reg, "", "v1").map(Json).ok_or_else(ApiStatus::route_not_found)
            }),
        )
        .route(
            "/apis/{group}/{version}",
            get(|State(reg): State<Arc<Registry>>, Path((g, v)): Path<(String, String)>| async move {
                resource_list(&reg, &g, &v).map(Json).ok_or_else(ApiStatus::route_not_found)
            }),
        )
        .with_state(registry)
}
