//! The scale subresource: GET, PUT and PATCH of an `autoscaling/v1` Scale
//! view of deployments, replicasets, statefulsets and replicationcontrollers
//! (`spec.replicas`, `status.replicas`, `status.selector` as a selector
//! string), as `kubectl scale` uses it.
//!
//! A PUT or PATCH changes only the parent's `spec.replicas`; it passes the
//! admission chain as an update of subresource `scale` (so managedFields get
//! an entry with `subresource: scale`), bumps `generation`, honours a
//! `metadata.resourceVersion` precondition (409 when stale) and `dryRun`.
//! Patches: merge, JSON and strategic merge (Scale has no merge lists, so a
//! strategic patch merges like a merge patch).
//!
//! Custom resources: [`paths_for`] is the hook; the crd helper adds a branch
//! returning the CRD's `specReplicasPath`, `statusReplicasPath` and
//! `labelSelectorPath` (a string selector).

use axum::response::Response;
use http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::apiserver::codec::{self, BodyType};
use crate::apiserver::objects::{self, meta_str};
use crate::apiserver::context::{store_err, Ctx};
use crate::apiserver::status::ApiStatus;
use crate::apiserver::strategic;
use crate::store::StoreError;

/// Where a selector is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SelectorAt {
    /// A `LabelSelector` (`matchLabels`/`matchExpressions`).
    LabelSelector(String),
    /// A plain label map (replication controllers).
    Map(String),
    /// A selector string (CRDs' `labelSelectorPath`).
    String(String),
}

/// JSON pointers to the fields a Scale reflects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScalePaths {
    pub spec_replicas: String,
    pub status_replicas: String,
    pub selector: Option<SelectorAt>,
}

/// The scale paths of a kind, or `None` when it has no scale subresource.
pub fn paths_for(group_resource: &str) -> Option<ScalePaths> {
    let selector = match group_resource {
        "deployments.apps" | "replicasets.apps" | "statefulsets.apps" => {
            SelectorAt::LabelSelector("/spec/selector".into())
        }
        "replicationcontrollers" => SelectorAt::Map("/spec/selector".into()),
        // Custom resources with a scale subresource: the crd helper's branch.
        _ => return None,
    };
    Some(ScalePaths {
        spec_replicas: "/spec/replicas".into(),
        status_replicas: "/status/replicas".into(),
        selector: Some(selector),
    })
}

/// A `LabelSelector` as its string form (`a=b,c in (x,y)`), keys sorted
/// (`crate::k8s::selector::to_query`); a malformed one is empty.
pub fn label_selector_string(sel: &Value) -> String {
    crate::k8s::selector::from_json(sel)
        .map(|s| crate::k8s::selector::to_query(&s))
        .unwrap_or_default()
}

fn map_selector_string(sel: &Value) -> String {
    let mut parts: Vec<String> = sel
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    parts.sort();
    parts.join(",")
}

/// The Scale view of `obj`.
pub fn to_scale(obj: &Value, paths: &ScalePaths) -> Value {
    let mut metadata = serde_json::Map::new();
    for k in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = obj.pointer(&format!("/metadata/{k}")) {
            metadata.insert(k.into(), v.clone());
        }
    }
    let replicas =
        |p: &str, default: i64| obj.pointer(p).and_then(Value::as_i64).unwrap_or(default);
    let mut status = json!({"replicas": replicas(&paths.status_replicas, 0)});
    let selector = match &paths.selector {
        Some(SelectorAt::LabelSelector(p)) => obj.pointer(p).map(label_selector_string),
        Some(SelectorAt::Map(p)) => obj.pointer(p).map(map_selector_string),
        Some(SelectorAt::String(p)) => obj.pointer(p).and_then(Value::as_str).map(str::to_string),
        None => None,
    };
    if let Some(s) = selector.filter(|s| !s.is_empty()) {
        status["selector"] = json!(s);
    }
    json!({"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": metadata,
           "spec": {"replicas": replicas(&paths.spec_replicas, 1)}, "status": status})
}

fn set_pointer(obj: &mut Value, pointer: &str, value: Value) {
    let mut cur = obj;
    for part in pointer.trim_start_matches('/').split('/') {
        if !cur.is_object() {
            *cur = json!({});
        }
        cur = cur
            .as_object_mut()
            .expect("made an object above")
            .entry(part.to_string())
            .or_insert(Value::Null);
    }
    *cur = value;
}

pub(crate) fn handle(ctx: &Ctx, method: &Method, body: &[u8]) -> Result<Response, ApiStatus> {
    let paths = paths_for(&ctx.def.group_resource()).ok_or_else(ApiStatus::route_not_found)?;
    let name = ctx.name.clone().unwrap_or_default();
    let key = ctx.key();
    match *method {
        Method::GET => {
            let (_, obj) = ctx.read_current(&key, &name)?;
            Ok(ctx.respond(StatusCode::OK, &to_scale(&obj, &paths)))
        }
        Method::PUT => {
            let scale = codec::decode_object(&ctx.headers, body)?;
            write(ctx, &paths, &|_| Ok(scale.clone()))
        }
        Method::PATCH => {
            let kind = codec::body_type(&ctx.headers)?;
            let patch = codec::parse_document(body, false)?;
            write(ctx, &paths, &|cur| match kind {
                BodyType::JsonPatch => strategic::json_patch(cur, &patch)
                    .map_err(|e| ApiStatus::bad_request(e.to_string())),
                BodyType::MergePatch | BodyType::StrategicMergePatch | BodyType::Json => {
                    Ok(strategic::json_merge_patch(cur, &patch))
                }
                _ => Err(ApiStatus::unsupported_media_type(
                    ctx.headers
                        .get(http::header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or(""),
                )),
            })
        }
        ref m => Err(ApiStatus::method_not_allowed(m.as_str())),
    }
}

/// The read-modify-CAS loop: `desired` maps the current Scale to the wanted
/// one, whose `spec.replicas` is written into the parent.
fn write(
    ctx: &Ctx,
    paths: &ScalePaths,
    desired: &dyn Fn(&Value) -> Result<Value, ApiStatus>,
) -> Result<Response, ApiStatus> {
    let name = ctx.name.clone().unwrap_or_default();
    let key = ctx.key();
    for _ in 0..10 {
        let (rec, cur) = ctx.read_current(&key, &name)?;
        let current_scale = to_scale(&cur, paths);
        let scale = desired(&current_scale)?;
        if meta_str(&scale, "name").is_some_and(|n| n != name) {
            return Err(ApiStatus::bad_request(
                "the name of the object does not match the name on the URL",
            ));
        }
        let precondition = meta_str(&scale, "resourceVersion")
            .filter(|rv| Some(*rv) != meta_str(&current_scale, "resourceVersion"))
            .map(String::from);
        if precondition.is_some() {
            return Err(ApiStatus::modified(ctx.target(&name)));
        }
        let Some(replicas) = scale.pointer("/spec/replicas").and_then(Value::as_i64) else {
            return Err(invalid_replicas(&name, "Required value"));
        };
        if replicas < 0 {
            return Err(invalid_replicas(
                &name,
                &format!("Invalid value: {replicas}: must be greater than or equal to 0"),
            ));
        }
        let mut new = cur.clone();
        set_pointer(&mut new, &paths.spec_replicas, json!(replicas));
        if objects::tracks_generation(&ctx.def) && new != cur {
            let g = cur
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                + 1;
            objects::meta_mut(&mut new).insert("generation".into(), json!(g));
        }
        let warnings = ctx.admit(
            crate::apiserver::admission::Operation::Update,
            &name,
            Some(&cur),
            &mut new,
        )?;
        if new == cur || ctx.dry_run() {
            return Ok(ctx.respond_warned(StatusCode::OK, &to_scale(&new, paths), &warnings));
        }
        match ctx
            .state
            .store
            .update(&key, &objects::to_stored(&new), rec.mod_revision)
        {
            Ok(r) => {
                let stored = objects::from_record(&ctx.def, &r)?;
                return Ok(ctx.respond_warned(
                    StatusCode::OK,
                    &to_scale(&stored, paths),
                    &warnings,
                ));
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(store_err(e)),
        }
    }
    Err(ApiStatus::modified(ctx.target(&name)))
}

fn invalid_replicas(name: &str, message: &str) -> ApiStatus {
    ApiStatus::invalid(
        "Scale",
        "autoscaling",
        name,
        vec![crate::apiserver::status::Cause {
            reason: "FieldValueInvalid".into(),
            message: message.into(),
            field: "spec.replicas".into(),
        }],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_view_of_a_deployment() {
        let d = json!({"metadata": {"name": "web", "namespace": "default", "resourceVersion": "7", "labels": {"x": "y"}},
                       "spec": {"replicas": 2, "selector": {"matchLabels": {"b": "2", "a": "1"},
                                "matchExpressions": [{"key": "c", "operator": "In", "values": ["z", "y"]}]}},
                       "status": {"replicas": 1}});
        let s = to_scale(&d, &paths_for("deployments.apps").unwrap());
        assert_eq!(s["spec"]["replicas"], 2);
        assert_eq!(s["status"]["replicas"], 1);
        assert_eq!(s["status"]["selector"], "a=1,b=2,c in (y,z)");
        assert_eq!(s["metadata"]["resourceVersion"], "7");
        assert!(s["metadata"].get("labels").is_none());
        let rc = json!({"metadata": {"name": "r"}, "spec": {"selector": {"app": "r"}}});
        let s = to_scale(&rc, &paths_for("replicationcontrollers").unwrap());
        assert_eq!(s["status"]["selector"], "app=r");
        assert_eq!(s["spec"]["replicas"], 1, "unset replicas default to 1");
        assert!(paths_for("pods").is_none());
    }

    #[test]
    fn set_pointer_creates_parents() {
        let mut v = json!({});
        set_pointer(&mut v, "/spec/replicas", json!(3));
        assert_eq!(v, json!({"spec": {"replicas": 3}}));
    }
}
