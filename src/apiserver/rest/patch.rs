//! PATCH: JSON merge (RFC 7386), JSON (RFC 6902) and strategic merge
//! patches through `strategic`, and server-side apply through
//! `fieldmanager`; all end in the write loop of `super::write`.

use axum::response::Response;
use serde_json::{json, Value};

use super::write::{check_type, create, write_loop};
use crate::apiserver::codec;
use crate::apiserver::context::{store_err, Ctx};
use crate::apiserver::objects::{self, meta_mut, meta_str};
use crate::apiserver::status::{self, ApiStatus};

/// Turns a patch failure into the Status kube-apiserver answers with: 422
/// Invalid naming the patch, or 415 for strategic merge on a kind without
/// patch metadata (custom resources).
fn patch_error(ctx: &Ctx, e: crate::apiserver::strategic::PatchError) -> ApiStatus {
    use crate::apiserver::strategic::PatchError;
    match e {
        PatchError::Unsupported(_) => ApiStatus::unsupported_media_type(
            ctx.headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
        ),
        PatchError::Invalid(message) | PatchError::TestFailed(message) => ApiStatus::invalid(
            &ctx.def.kind,
            &ctx.def.group,
            ctx.name.as_deref().unwrap_or_default(),
            vec![status::Cause {
                reason: "FieldValueInvalid".into(),
                message,
                field: "patch".into(),
            }],
        ),
    }
}

pub(super) fn patch(ctx: &Ctx, body: &[u8]) -> Result<Response, ApiStatus> {
    use crate::apiserver::codec::BodyType;
    use crate::apiserver::strategic::{self, TypeKey};
    let kind = codec::body_type(&ctx.headers)?;
    if kind == BodyType::ApplyPatch {
        return apply_patch(ctx, body);
    }
    let p = codec::parse_document(body, false)?;
    let type_key = TypeKey {
        group: &ctx.def.group,
        version: &ctx.def.version,
        kind: &ctx.def.kind,
    };
    match kind {
        BodyType::MergePatch | BodyType::Json | BodyType::JsonPatch => {}
        BodyType::StrategicMergePatch if strategic::supports_strategic(&type_key) => {}
        _ => {
            return Err(ApiStatus::unsupported_media_type(
                ctx.headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(""),
            ))
        }
    }
    write_loop(ctx, &|cur| {
        let mut v = match kind {
            BodyType::JsonPatch => {
                strategic::json_patch(cur, &p).map_err(|e| patch_error(ctx, e))?
            }
            BodyType::StrategicMergePatch => {
                strategic::strategic_merge(&type_key, cur, &p).map_err(|e| patch_error(ctx, e))?
            }
            _ => strategic::json_merge_patch(cur, &p),
        };
        // A patch that leaves resourceVersion as it was is unconditional; one
        // that sets it is a precondition the write loop checks.
        if meta_str(&v, "resourceVersion") == meta_str(cur, "resourceVersion") {
            meta_mut(&mut v).remove("resourceVersion");
        }
        Ok(v)
    })
}

/// Server-side apply (`application/apply-patch+yaml`, see `fieldmanager`):
/// creates the object when missing, otherwise merges the applied
/// configuration by type; the admission chain runs with Update recording off.
fn apply_patch(ctx: &Ctx, body: &[u8]) -> Result<Response, ApiStatus> {
    use crate::apiserver::fieldmanager::{self as fm, apply};
    let applied = codec::parse_document(body, true)?;
    if !applied.is_object() {
        return Err(ApiStatus::bad_request(
            "the request body must be a JSON object",
        ));
    }
    let manager = ctx.q("fieldManager").ok_or_else(|| {
        ApiStatus::invalid(
            "PatchOptions",
            "meta.k8s.io",
            "",
            vec![status::Cause {
                reason: "FieldValueRequired".into(),
                message: "Required value: is required for apply patch".into(),
                field: "fieldManager".into(),
            }],
        )
    })?;
    if applied.pointer("/metadata/managedFields").is_some() {
        return Err(ApiStatus::bad_request("metadata.managedFields must be nil"));
    }
    check_type(&ctx.def, &applied)?;
    let name = ctx.name.clone().unwrap_or_default();
    if meta_str(&applied, "name").is_some_and(|n| n != name) {
        return Err(ApiStatus::bad_request(
            "the name of the object does not match the name on the URL",
        ));
    }
    let schema = fm::schema::for_def(&ctx.def);
    let api_version = ctx.def.api_version();
    let run = |live: Option<&Value>| -> Result<Value, ApiStatus> {
        apply::apply(&apply::ApplyRequest {
            live,
            applied: &applied,
            manager,
            force: ctx.q("force") == Some("true"),
            api_version: &api_version,
            schema: schema.as_ref(),
            status_split: objects::has_status_subresource(&ctx.def),
            subresource: ctx.sub.as_deref(),
        })
        .map_err(|c| apply::conflict_status(&c))
    };
    let exists = ctx
        .state
        .store
        .get(&ctx.key())
        .map_err(store_err)?
        .is_some();
    if !exists {
        if ctx.sub.is_some() {
            return Err(ApiStatus::not_found(ctx.target(&name)));
        }
        let mut obj = run(None)?;
        meta_mut(&mut obj).insert("name".into(), json!(name));
        return fm::while_applying(|| create(ctx, obj));
    }
    fm::while_applying(|| {
        write_loop(ctx, &|cur| {
            let mut v = run(Some(cur))?;
            if meta_str(&v, "resourceVersion") == meta_str(cur, "resourceVersion") {
                meta_mut(&mut v).remove("resourceVersion");
            }
            Ok(v)
        })
    })
}
