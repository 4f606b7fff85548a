//! Subresources other than `status` (which `rest` handles as a view of the
//! object): each one in its own file, routed here by group-resource and
//! name. Streaming ones (`pods/log`, `exec`, `attach`, `portforward`,
//! `proxy`) never reach this module: `rest::dispatch` hands them, with the
//! raw request, to `super::streaming` before reading the body.

use axum::response::Response;
use http::Method;

use super::rest::Ctx;
use super::status::ApiStatus;

pub mod binding;
pub mod eviction;
pub mod scale;
pub mod token_request;

/// Whether `sub` on `group_resource` is served by this module.
pub fn is_served(group_resource: &str, sub: &str) -> bool {
    matches!(
        (group_resource, sub),
        ("pods", "binding") | ("pods", "eviction") | ("serviceaccounts", "token") | (_, "scale")
    )
}

/// Handles one subresource request; `body` is the raw request body.
pub(crate) fn handle(ctx: &Ctx, method: &Method, body: &[u8]) -> Result<Response, ApiStatus> {
    let sub = ctx.sub.as_deref().unwrap_or_default();
    match (ctx.def.group_resource().as_str(), sub) {
        ("pods", "binding") => binding::handle(ctx, method, body),
        ("pods", "eviction") => eviction::handle(ctx, method, body),
        ("serviceaccounts", "token") => token_request::handle(ctx, method, body),
        (_, "scale") if crate::apiserver::crd::is_custom(&ctx.state.registry, &ctx.def) => {
            crate::apiserver::crd::scale::handle(ctx, method, body)
        }
        (_, "scale") => scale::handle(ctx, method, body),
        _ => Err(ApiStatus::route_not_found()),
    }
}
