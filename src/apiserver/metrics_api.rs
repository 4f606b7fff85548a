//! `metrics.k8s.io/v1beta1`: `NodeMetrics` (`nodes`) and `PodMetrics`
//! (`pods`, namespaced), get and list, as metrics-server serves them for
//! `kubectl top`. Nothing is stored: each request reads the Nodes or Pods
//! it concerns (their labels select, as in metrics-server), asks every node
//! involved for its summary through a [`SummarySource`] (the node tunnels in
//! production, see `crate::metrics::scrape`), and shapes the answer with
//! `crate::metrics::summary`.
//!
//! The entries are in the registry only while metrics are enabled
//! (`--disable metrics-server` leaves the group out of discovery, as k3s
//! without its metrics-server APIService), so discovery, RBAC and routing
//! come from the registry like any kind's.
//!
//! A node that cannot be reached or has no rate yet is left out (metrics-
//! server does the same); a `get` of such an object is a 404, worded as
//! metrics-server words it. Partial: no watch; the Table for pods has no
//! CPU/Memory cells (kubectl top reads JSON).

use std::collections::{BTreeMap, BTreeSet};

use axum::response::Response;
use chrono::Utc;
use http::{Method, StatusCode};
use serde_json::{json, Value};

use super::context::{store_err, table_wanted, Ctx};
use super::registry::{Column, ResourceDef};
use super::status::ApiStatus;
use crate::metrics::scrape::SummarySource;
use crate::metrics::summary::{self, Summary};

pub const GROUP: &str = "metrics.k8s.io";
pub const VERSION: &str = "v1beta1";

fn column(name: &str, type_: &str, format: &str, path: Option<&str>, description: &str) -> Column {
    Column {
        name: name.into(),
        type_: type_.into(),
        format: format.into(),
        description: description.into(),
        priority: 0,
        json_path: path.map(String::from),
    }
}

/// The two registry entries (added by `server::assemble` when enabled).
pub fn defs() -> Vec<ResourceDef> {
    let name = column("Name", "string", "name", None, "Name must be unique within a namespace.");
    let window = column("Window", "string", "", Some(".window"), "The sampling window.");
    let def = |kind: &str, plural: &str, namespaced: bool, columns: Vec<Column>| ResourceDef {
        group: GROUP.into(),
        version: VERSION.into(),
        kind: kind.into(),
        plural: plural.into(),
        singular: String::new(),
        short_names: vec![],
        categories: vec![],
        namespaced,
        subresources: vec![],
        verbs: vec!["get".into(), "list".into()],
        columns,
    };
    vec![
        def(
            "NodeMetrics",
            "nodes",
            false,
            vec![
                name.clone(),
                column("CPU", "string", "", Some(".usage.cpu"), "CPU usage, in cores."),
                column("Memory", "string", "", Some(".usage.memory"), "Memory working set, in bytes."),
                window.clone(),
            ],
        ),
        def("PodMetrics", "pods", true, vec![name, window]),
    ]
}

/// Whether `def` is one of this module's kinds.
pub fn serves(def: &ResourceDef) -> bool {
    def.group == GROUP
}

/// Answers a request for `NodeMetrics` or `PodMetrics`.
pub(crate) async fn handle(ctx: &Ctx, method: &Method, watch: bool) -> Result<Response, ApiStatus> {
    if *method != Method::GET || watch {
        let verb = if watch { "watch" } else { method.as_str() };
        return Err(ApiStatus::method_not_allowed(verb));
    }
    let source = ctx.state.metrics.clone().ok_or_else(|| {
        ApiStatus::service_unavailable("the server is currently unable to handle the request")
    })?;
    let objects = source_objects(ctx)?;
    let nodes: BTreeSet<String> = if ctx.def.namespaced {
        objects
            .iter()
            .filter_map(|p| p.pointer("/spec/nodeName").and_then(Value::as_str))
            .filter(|n| !n.is_empty())
            .map(String::from)
            .collect()
    } else {
        objects.iter().map(name_of).collect()
    };
    let summaries = fetch(source.as_ref(), nodes).await;
    let now = Utc::now();
    let items: Vec<Value> = if ctx.def.namespaced {
        let by_pod: BTreeMap<(&str, &str), &summary::PodStats> = summaries
            .values()
            .flat_map(|s| &s.pods)
            .map(|p| ((p.pod_ref.namespace.as_str(), p.pod_ref.name.as_str()), p))
            .collect();
        objects
            .iter()
            .filter_map(|pod| {
                let ns = pod.pointer("/metadata/namespace").and_then(Value::as_str)?;
                let name = name_of(pod);
                let stats = by_pod.get(&(ns, name.as_str()))?;
                summary::pod_metrics(stats, &pod["metadata"]["labels"], &now)
            })
            .collect()
    } else {
        objects
            .iter()
            .filter_map(|node| {
                let s = summaries.get(&name_of(node))?;
                summary::node_metrics(&s.node, &node["metadata"]["labels"], &now)
            })
            .collect()
    };
    if let Some(name) = &ctx.name {
        let item = items.into_iter().next().ok_or_else(|| {
            // metrics-server's wording for an object without figures.
            ApiStatus::not_found(ctx.target(name))
        })?;
        if table_wanted(ctx) {
            return Ok(ctx.respond(StatusCode::OK, &super::table::to_table(&ctx.def, &[item], "", None, None, ctx.include())));
        }
        return Ok(ctx.respond(StatusCode::OK, &item));
    }
    if table_wanted(ctx) {
        return Ok(ctx.respond(StatusCode::OK, &super::table::to_table(&ctx.def, &items, "", None, None, ctx.include())));
    }
    Ok(ctx.respond(
        StatusCode::OK,
        &json!({
            "kind": format!("{}List", ctx.def.kind),
            "apiVersion": format!("{GROUP}/{VERSION}"),
            "metadata": {},
            "items": items,
        }),
    ))
}

fn name_of(obj: &Value) -> String {
    obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string()
}

/// The Nodes or Pods the request is about, selected by the request's
/// label and field selectors (a `get` names one, which must exist).
fn source_objects(ctx: &Ctx) -> Result<Vec<Value>, ApiStatus> {
    let plural = if ctx.def.namespaced { "pods" } else { "nodes" };
    let def = ctx
        .state
        .registry
        .lookup("", "v1", plural)
        .ok_or_else(|| ApiStatus::internal(format!("core {plural} are not served")))?;
    let store = &ctx.state.store;
    if let Some(name) = &ctx.name {
        let key = super::keys::object_key(&def, ctx.namespace.as_deref(), name);
        let rec = store
            .get(&key)
            .map_err(store_err)?
            .ok_or_else(|| ApiStatus::not_found(ctx.target(name)))?;
        return Ok(vec![super::objects::from_record(&def, &rec)?]);
    }
    let sel = ctx.selectors()?;
    let prefix = super::keys::collection_prefix(&def, ctx.namespace.as_deref());
    let page = store
        .list(&crate::store::ListOptions { prefix, ..Default::default() })
        .map_err(store_err)?;
    let mut out = Vec::new();
    for rec in &page.records {
        let obj = super::objects::from_record(&def, rec)?;
        if sel.matches(&obj) {
            out.push(obj);
        }
    }
    Ok(out)
}

/// Every node's summary, asked concurrently; unreachable nodes are logged
/// and left out.
async fn fetch(source: &dyn SummarySource, nodes: BTreeSet<String>) -> BTreeMap<String, Summary> {
    let asks = nodes.into_iter().map(|n| async move {
        let r = source.summary(&n).await;
        (n, r)
    });
    let mut out = BTreeMap::new();
    for (node, r) in futures::future::join_all(asks).await {
        match r {
            Ok(s) => {
                out.insert(node, s);
            }
            Err(e) => tracing::debug!("no metrics from node {node}: {e}"),
        }
    }
    out
}
