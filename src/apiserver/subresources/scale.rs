//! The scale subresource, one implementation for built-in kinds and custom
//! resources: GET, PUT and PATCH of an `autoscaling/v1` Scale view of an
//! object (`spec.replicas`, `status.replicas`, `status.selector` as a
//! selector string), as `kubectl scale` uses it.
//!
//! Where the fields live is the only difference between kinds: [`ScalePaths`]
//! (JSON pointers). Deployments, replicasets, statefulsets and
//! replicationcontrollers have fixed paths ([`paths_for`]); a custom
//! resource has the ones its CRD version declares in `subresources.scale`
//! (`specReplicasPath`, `statusReplicasPath`, `labelSelectorPath`, dotted
//! paths without array steps, read by [`custom_paths`]).
//!
//! A PUT or PATCH changes only the parent's replicas field; it passes the
//! admission chain as an update of subresource `scale` (so managedFields get
//! an entry with `subresource: scale`, and a CRD schema's bounds apply),
//! bumps `generation` when the spec changed, honours a
//! `metadata.resourceVersion` precondition (409 when stale) and `dryRun`.
//! Patches: merge, JSON and strategic merge (Scale has no merge lists, so a
//! strategic patch merges like a merge patch).

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
    /// `spec.replicas` when the field is absent: 1 for the built-in kinds
    /// (their defaulting), 0 for custom resources (as apiextensions reads it).
    pub spec_default: i64,
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
        spec_default: 1,
    })
}

/// A CRD's dotted field path (`.spec.replicas`) as a JSON pointer.
fn pointer_of(path: &str) -> String {
    path.split('.')
        .filter(|s| !s.is_empty())
        .map(|s| format!("/{}", s.replace('~', "~0").replace('/', "~1")))
        .collect()
}

/// The paths a CRD version's `subresources.scale` declares (its
/// `specReplicasPath` and `statusReplicasPath` are required by the CRD's
/// validation; the kube defaults stand in if a stored CRD lacks them).
pub fn custom_paths(scale: &Value) -> ScalePaths {
    let path = |field: &str, default: &str| pointer_of(scale[field].as_str().unwrap_or(default));
    ScalePaths {
        spec_replicas: path("specReplicasPath", ".spec.replicas"),
        status_replicas: path("statusReplicasPath", ".status.replicas"),
        selector: scale["labelSelectorPath"]
            .as_str()
            .map(|p| SelectorAt::String(pointer_of(p))),
        spec_default: 0,
    }
}

/// The scale paths of the kind `ctx` addresses: a custom resource's from its
/// CRD, a built-in kind's from [`paths_for`]; 404 when it has none.
fn paths_of(ctx: &Ctx) -> Result<ScalePaths, ApiStatus> {
    let def = &ctx.def;
    if crate::apiserver::crd::is_custom(&ctx.state.registry, def) {
        let crd = ctx
            .state
            .registry
            .custom(&def.group, &def.version, &def.plural)
            .ok_or_else(ApiStatus::route_not_found)?;
        return crate::apiserver::crd::version_of(&crd, &def.version)
            .and_then(|v| v.pointer("/subresources/scale"))
            .map(custom_paths)
            .ok_or_else(ApiStatus::route_not_found);
    }
    paths_for(&def.group_resource()).ok_or_else(ApiStatus::route_not_found)
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
           "spec": {"replicas": replicas(&paths.spec_replicas, paths.spec_default)}, "status": status})
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
    let paths = paths_of(ctx)?;
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
        let replicas = match scale.pointer("/spec/replicas") {
            None | Some(Value::Null) => return Err(invalid_replicas(&name, "Required value")),
            Some(v) => v.as_i64().ok_or_else(|| {
                invalid_replicas(&name, &format!("Invalid value: {v}: must be an integer"))
            })?,
        };
        if replicas < 0 {
            return Err(invalid_replicas(
                &name,
                &format!("Invalid value: {replicas}: must be greater than or equal to 0"),
            ));
        }
        let mut new = cur.clone();
        set_pointer(&mut new, &paths.spec_replicas, json!(replicas));
        if objects::tracks_generation(&ctx.def)
            && objects::spec_part(&new) != objects::spec_part(&cur)
        {
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

    #[test]
    fn scale_view_of_a_custom_resource_reads_the_crd_paths() {
        let obj = json!({"metadata": {"name": "x", "namespace": "d"},
            "spec": {"replicas": 3}, "status": {"replicas": 2, "sel": "a=b"}});
        let paths = custom_paths(&json!({"specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas", "labelSelectorPath": ".status.sel"}));
        let s = to_scale(&obj, &paths);
        assert_eq!(s["spec"]["replicas"], 3);
        assert_eq!(s["status"], json!({"replicas": 2, "selector": "a=b"}));
        // Unset replicas read as 0 for custom resources; the paths may be deep.
        let deep = custom_paths(&json!({"specReplicasPath": ".spec.deep.count",
            "statusReplicasPath": ".status.n"}));
        assert_eq!(deep.spec_replicas, "/spec/deep/count");
        let s = to_scale(&json!({"metadata": {"name": "y"}}), &deep);
        assert_eq!(s["spec"]["replicas"], 0);
        assert!(s["status"].get("selector").is_none());
        let mut o = json!({"spec": {}});
        set_pointer(&mut o, &deep.spec_replicas, json!(5));
        assert_eq!(o["spec"]["deep"]["count"], 5);
        assert_eq!(pointer_of(".metadata.annotations.a/b"), "/metadata/annotations/a~1b");
    }
}
