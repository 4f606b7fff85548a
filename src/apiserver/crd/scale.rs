//! The `scale` subresource of custom resources (`autoscaling/v1` `Scale`),
//! read from and written to the paths in the CRD's
//! `subresources.scale` (`specReplicasPath`, `statusReplicasPath`,
//! `labelSelectorPath`). GET, PUT (a Scale) and PATCH (merge or JSON patch
//! of the Scale) as `kubectl scale` uses them; the written object passes
//! the admission chain, so the schema's bounds apply.

use axum::response::Response;
use http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::apiserver::codec::{self, BodyType};
use crate::apiserver::objects;
use crate::apiserver::context::{store_err, Ctx};
use crate::apiserver::status::{ApiStatus, Cause};
use crate::store::StoreError;

/// `.spec.replicas` → `["spec", "replicas"]`.
fn steps(path: &str) -> Vec<&str> {
    path.split('.').filter(|s| !s.is_empty()).collect()
}

fn read_path(obj: &Value, path: &str) -> Option<Value> {
    crate::apiserver::table::json_path(obj, path)
}

fn write_path(obj: &mut Value, path: &str, value: Value) {
    let mut cur = obj;
    let parts = steps(path);
    for (i, step) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = json!({});
        }
        if i + 1 == parts.len() {
            cur[*step] = value;
            return;
        }
        cur = &mut cur[*step];
    }
}

fn scale_of(obj: &Value, paths: &Value) -> Value {
    let spec_path = paths["specReplicasPath"]
        .as_str()
        .unwrap_or(".spec.replicas");
    let status_path = paths["statusReplicasPath"]
        .as_str()
        .unwrap_or(".status.replicas");
    let mut status =
        json!({"replicas": read_path(obj, status_path).and_then(|v| v.as_i64()).unwrap_or(0)});
    if let Some(sel) = paths["labelSelectorPath"]
        .as_str()
        .and_then(|p| read_path(obj, p))
        .filter(Value::is_string)
    {
        status["selector"] = sel;
    }
    let meta = &obj["metadata"];
    let mut m = serde_json::Map::new();
    for k in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = meta.get(k) {
            m.insert(k.into(), v.clone());
        }
    }
    json!({"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": m,
           "spec": {"replicas": read_path(obj, spec_path).and_then(|v| v.as_i64()).unwrap_or(0)},
           "status": status})
}

pub(crate) fn handle(ctx: &Ctx, method: &Method, body: &[u8]) -> Result<Response, ApiStatus> {
    let def = &ctx.def;
    let crd = ctx
        .state
        .registry
        .custom(&def.group, &def.version, &def.plural)
        .ok_or_else(ApiStatus::route_not_found)?;
    let paths = super::version_of(&crd, &def.version)
        .and_then(|v| v.pointer("/subresources/scale"))
        .cloned()
        .ok_or_else(ApiStatus::route_not_found)?;
    let name = ctx.name.clone().unwrap_or_default();
    let key = ctx.key();
    if method == Method::GET {
        let (_, obj) = ctx.read_current(&key, &name)?;
        return Ok(ctx.respond(StatusCode::OK, &scale_of(&obj, &paths)));
    }
    if method != Method::PUT && method != Method::PATCH {
        return Err(ApiStatus::method_not_allowed(method.as_str()));
    }
    let spec_path = paths["specReplicasPath"]
        .as_str()
        .unwrap_or(".spec.replicas");
    for _ in 0..10 {
        let (rec, cur) = ctx.read_current(&key, &name)?;
        let current = scale_of(&cur, &paths);
        let desired = if method == Method::PUT {
            codec::decode_object(&ctx.headers, body)?
        } else {
            let patch = codec::parse_document(body, false)?;
            match codec::body_type(&ctx.headers)? {
                BodyType::JsonPatch => crate::apiserver::strategic::json_patch(&current, &patch)
                    .map_err(|e| ApiStatus::bad_request(format!("{e:?}")))?,
                BodyType::MergePatch | BodyType::Json => {
                    crate::apiserver::strategic::json_merge_patch(&current, &patch)
                }
                _ => {
                    return Err(ApiStatus::unsupported_media_type(
                        ctx.headers
                            .get(http::header::CONTENT_TYPE)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or(""),
                    ))
                }
            }
        };
        if let Some(rv) = objects::meta_str(&desired, "resourceVersion") {
            if method == Method::PUT && rv != rec.mod_revision.to_string() {
                return Err(ApiStatus::modified(ctx.target(&name)));
            }
        }
        let Some(replicas) = desired.pointer("/spec/replicas").and_then(Value::as_i64) else {
            return Err(ApiStatus::invalid(
                "Scale",
                "autoscaling",
                &name,
                vec![Cause {
                    reason: "FieldValueInvalid".into(),
                    message: format!(
                        "Invalid value: {}: must be an integer",
                        desired.pointer("/spec/replicas").unwrap_or(&Value::Null)
                    ),
                    field: "spec.replicas".into(),
                }],
            ));
        };
        if replicas < 0 {
            return Err(ApiStatus::invalid(
                "Scale",
                "autoscaling",
                &name,
                vec![Cause {
                    reason: "FieldValueInvalid".into(),
                    message: format!(
                        "Invalid value: {replicas}: must be greater than or equal to 0"
                    ),
                    field: "spec.replicas".into(),
                }],
            ));
        }
        let mut new = cur.clone();
        write_path(&mut new, spec_path, json!(replicas));
        if objects::spec_part(&cur) != objects::spec_part(&new) {
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
        if ctx.dry_run() {
            let r = ctx.respond_warned(StatusCode::OK, &scale_of(&new, &paths), &warnings);
            return Ok(r);
        }
        match ctx
            .state
            .store
            .update(&key, &objects::to_stored(&new), rec.mod_revision)
        {
            Ok(r) => {
                let obj = objects::from_record(def, &r)?;
                return Ok(ctx.respond_warned(StatusCode::OK, &scale_of(&obj, &paths), &warnings));
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(store_err(e)),
        }
    }
    Err(ApiStatus::modified(ctx.target(&name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_reads_the_crd_paths() {
        let obj = json!({"metadata": {"name": "x", "namespace": "d"},
            "spec": {"replicas": 3}, "status": {"replicas": 2, "sel": "a=b"}});
        let paths = json!({"specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas", "labelSelectorPath": ".status.sel"});
        let s = scale_of(&obj, &paths);
        assert_eq!(s["spec"]["replicas"], 3);
        assert_eq!(s["status"], json!({"replicas": 2, "selector": "a=b"}));
        let mut o = json!({"spec": {}});
        write_path(&mut o, ".spec.deep.replicas", json!(5));
        assert_eq!(o["spec"]["deep"]["replicas"], 5);
    }
}
