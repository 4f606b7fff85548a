//! Reads: GET of one object and LIST (label/field selectors, limit/continue
//! over a snapshot), rendered as `Accept` asks: the object or list, a Table,
//! or metadata only (`PartialObjectMetadata[List]`, see `metadata`).

use axum::response::Response;
use base64::Engine;
use http::StatusCode;
use serde_json::{json, Value};

use crate::apiserver::codec::Rendering;
use crate::apiserver::context::{is_custom, rendering, store_err, Ctx};
use crate::apiserver::metadata;
use crate::apiserver::keys;
use crate::apiserver::objects;
use crate::apiserver::status::ApiStatus;
use crate::apiserver::table;
use crate::store::ListOptions;

pub(super) fn get(ctx: &Ctx) -> Result<Response, ApiStatus> {
    let name = ctx.name.clone().unwrap_or_default();
    let rec = ctx
        .state
        .store
        .get(&ctx.key())
        .map_err(store_err)?
        .ok_or_else(|| ApiStatus::not_found(ctx.target(&name)))?;
    let obj = objects::from_record(&ctx.def, &rec)?;
    render_one(ctx, obj)
}

/// One object as `Accept` asks: itself, a one-row Table or its
/// `PartialObjectMetadata` (the list form is a 406, as in kube).
pub(crate) fn render_one(ctx: &Ctx, obj: Value) -> Result<Response, ApiStatus> {
    match rendering(ctx) {
        Rendering::MetadataList(_) => Err(metadata::list_on_single(&ctx.def, is_custom(ctx))),
        Rendering::Metadata(v) => Ok(ctx.respond(StatusCode::OK, &metadata::partial(&obj, v))),
        Rendering::Table => {
            let rv = obj
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            Ok(ctx.respond(
                StatusCode::OK,
                &table::to_table(&ctx.def, &[obj], &rv, None, None, ctx.include()),
            ))
        }
        Rendering::Json | Rendering::Yaml => Ok(ctx.respond(StatusCode::OK, &obj)),
    }
}

/// A list as `Accept` asks: `<Kind>List`, a Table or a
/// `PartialObjectMetadataList`. `meta` is the list's metadata
/// (resourceVersion, continue, remainingItemCount).
pub(crate) fn render_list(ctx: &Ctx, items: Vec<Value>, meta: Value) -> Result<Response, ApiStatus> {
    match rendering(ctx) {
        Rendering::Metadata(_) => Err(metadata::single_on_list(&ctx.def, is_custom(ctx))),
        Rendering::MetadataList(v) => Ok(ctx.respond(
            StatusCode::OK,
            &metadata::partial_list(&items, meta, v),
        )),
        Rendering::Table => Ok(ctx.respond(
            StatusCode::OK,
            &table::to_table(
                &ctx.def,
                &items,
                meta["resourceVersion"].as_str().unwrap_or(""),
                meta["continue"].as_str(),
                meta["remainingItemCount"].as_i64(),
                ctx.include(),
            ),
        )),
        Rendering::Json | Rendering::Yaml => Ok(ctx.respond(StatusCode::OK, &json!({"kind": format!("{}List", ctx.def.kind), "apiVersion": ctx.def.api_version(), "metadata": meta, "items": items}))),
    }
}

/// A continue token: base64 JSON `{"v","rv","start"}` like Kubernetes'.
pub fn encode_continue(rv: i64, start: &str) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(json!({"v": "meta.k8s.io/v1", "rv": rv, "start": start}).to_string())
}

pub fn decode_continue(token: &str) -> Result<(i64, String), ApiStatus> {
    let bad = || {
        ApiStatus::bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(token)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(token))
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    Ok((
        v["rv"].as_i64().ok_or_else(bad)?,
        v["start"].as_str().ok_or_else(bad)?.to_string(),
    ))
}

pub(super) fn list(ctx: &Ctx) -> Result<Response, ApiStatus> {
    if let Rendering::Metadata(_) = rendering(ctx) {
        // Refused before the store is read.
        return Err(metadata::single_on_list(&ctx.def, is_custom(ctx)));
    }
    let sel = ctx.selectors()?;
    let prefix = keys::collection_prefix(&ctx.def, ctx.namespace.as_deref());
    let limit: Option<usize> = ctx
        .q("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0);
    let rv_param = ctx.q("resourceVersion");
    let (mut revision, mut start_after) = (None, None);
    if let Some(tok) = ctx.q("continue") {
        if rv_param.is_some_and(|r| r != "0") {
            return Err(ApiStatus::bad_request(
                "specifying resource version is not allowed when using continue",
            ));
        }
        let (rv, start) = decode_continue(tok)?;
        if rv < ctx.state.store.compacted_revision() {
            return Err(ApiStatus::expired_continue());
        }
        revision = Some(rv);
        start_after = Some(format!("{prefix}{start}"));
    } else if let Some(rv) = rv_param.filter(|r| *r != "0") {
        let rv: i64 = rv
            .parse()
            .map_err(|_| ApiStatus::bad_request(format!("invalid resource version: {rv}")))?;
        let exact = ctx.q("resourceVersionMatch") == Some("Exact")
            || (limit.is_some() && ctx.q("resourceVersionMatch").is_none());
        let current = ctx.state.store.current_revision();
        if rv > current {
            return Err(ApiStatus::too_large_resource_version(rv, current));
        }
        if exact {
            revision = Some(rv);
        }
    }
    let mut items = Vec::new();
    let mut last_key = None;
    let mut more = false;
    let mut page_rev;
    let mut remaining_total = 0usize;
    loop {
        let page = ctx
            .state
            .store
            .list(&ListOptions {
                prefix: prefix.clone(),
                start_after: start_after.clone(),
                limit: limit.map(|l| l.max(50)),
                revision,
            })
            .map_err(store_err)?;
        page_rev = page.revision;
        revision = Some(page.revision);
        let n = page.records.len();
        for (i, rec) in page.records.iter().enumerate() {
            let obj = objects::from_record(&ctx.def, rec)?;
            last_key = Some(rec.key.clone());
            if sel.matches(&obj) {
                items.push(obj);
            }
            if limit.is_some_and(|l| items.len() >= l) {
                let left = (n - i - 1) + page.remaining;
                more = left > 0;
                remaining_total = left;
                break;
            }
        }
        if more || page.remaining == 0 || limit.is_some_and(|l| items.len() >= l) {
            break;
        }
        start_after = last_key.clone();
    }
    let rv = page_rev.to_string();
    let cont = if more {
        last_key
            .as_ref()
            .map(|k| encode_continue(page_rev, k.strip_prefix(&prefix).unwrap_or(k)))
    } else {
        None
    };
    let remaining = if more && sel.is_empty() {
        Some(remaining_total as i64)
    } else {
        None
    };
    let mut meta = json!({"resourceVersion": rv});
    if let Some(c) = &cont {
        meta["continue"] = json!(c);
    }
    if let Some(r) = remaining {
        meta["remainingItemCount"] = json!(r);
    }
    render_list(ctx, items, meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip() {
        let t = encode_continue(42, "default/x");
        assert_eq!(decode_continue(&t).unwrap(), (42, "default/x".to_string()));
        assert_eq!(decode_continue("!!").unwrap_err().code, 400);
    }
}
