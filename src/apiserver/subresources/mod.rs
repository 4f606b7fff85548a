//! Subresources other than `status` (which `rest` handles as a view of the
//! object): each one in its own file, routed here by group-resource and
//! name. Streaming ones (`pods/log`, `exec`, `attach`, `portforward`,
//! `proxy`) never reach this module: `rest::dispatch` hands them, with the
//! raw request, to `super::streaming` before reading the body.
//!
//! `pods/ephemeralcontainers` is a view of the Pod that `rest` reads and
//! writes like `status` ([`ephemeral_containers::split`] says what of an
//! update is kept).
//!
//! Also here, routed the same way: the kinds that are answered and never
//! stored (`reviews`: the access, rules, token and self-subject reviews),
//! written against the `super::auth` seam only, so that no handler names a
//! concrete authentication or authorization plug-in.

use axum::response::Response;
use http::Method;

use super::context::Ctx;
use super::status::ApiStatus;

pub mod binding;
pub mod ephemeral_containers;
pub mod eviction;
pub mod reviews;
pub mod scale;
pub mod token_request;

/// Whether `sub` on `group_resource` is served by this module.
pub fn is_served(group_resource: &str, sub: &str) -> bool {
    matches!(
        (group_resource, sub),
        ("pods", "binding") | ("pods", "eviction") | ("serviceaccounts", "token") | (_, "scale")
    )
}

/// Whether `def` is a kind answered and never stored (a POST to its
/// collection is handled by [`create_unstored`]).
pub fn is_unstored_kind(def: &super::registry::ResourceDef) -> bool {
    reviews::is_review(def)
}

/// Answers a POST to an unstored kind's collection.
pub(crate) fn create_unstored(ctx: &Ctx, body: &[u8]) -> Result<Response, ApiStatus> {
    reviews::handle(ctx, body)
}

/// Handles one subresource request; `body` is the raw request body.
pub(crate) fn handle(ctx: &Ctx, method: &Method, body: &[u8]) -> Result<Response, ApiStatus> {
    let sub = ctx.sub.as_deref().unwrap_or_default();
    match (ctx.def.group_resource().as_str(), sub) {
        ("pods", "binding") => binding::handle(ctx, method, body),
        ("pods", "eviction") => eviction::handle(ctx, method, body),
        ("serviceaccounts", "token") => token_request::handle(ctx, method, body),
        (_, "scale") => scale::handle(ctx, method, body),
        _ => Err(ApiStatus::route_not_found()),
    }
}
