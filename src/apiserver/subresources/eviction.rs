//! Serves the pod eviction subresource honouring PodDisruptionBudgets; planned (issue 4).
//!
//! Not implemented yet: answers 404 like an unserved route.

use axum::response::Response;
use http::Method;

use crate::apiserver::rest::Ctx;
use crate::apiserver::status::ApiStatus;

pub(crate) fn handle(_ctx: &Ctx, _method: &Method, _body: &[u8]) -> Result<Response, ApiStatus> {
    Err(ApiStatus::route_not_found())
}
