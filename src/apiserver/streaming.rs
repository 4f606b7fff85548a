//! Streaming subresources proxied to a node's kubelet API: `pods/log`,
//! `pods/exec`, `pods/attach`, `pods/portforward` and `nodes/proxy`.
//! They get the raw request (upgrades need it), after authentication and
//! authorization but before the body is read.
//!
//! Not implemented yet (issue 8: the websocket tunnel): answers 503 naming
//! the node-side gap, never hangs.

use std::sync::Arc;

use axum::extract::Request;
use axum::response::Response;

use super::registry::ResourceDef;
use super::rest::AppState;
use super::status::ApiStatus;

/// Whether `sub` on `group_resource` is streamed through here.
pub fn is_streaming(group_resource: &str, sub: &str) -> bool {
    matches!(
        (group_resource, sub),
        ("pods", "log" | "exec" | "attach" | "portforward" | "proxy")
            | ("nodes", "proxy")
            | ("services", "proxy")
    )
}

/// One streaming request, already authorized.
pub struct StreamRequest {
    pub state: Arc<AppState>,
    pub def: Arc<ResourceDef>,
    pub namespace: Option<String>,
    pub name: String,
    pub sub: String,
    pub request: Request,
}

pub async fn handle(req: StreamRequest) -> Result<Response, ApiStatus> {
    Err(ApiStatus::service_unavailable(format!(
        "the {} subresource of {} \"{}\" is not served yet: the node tunnel (issue 8) is not implemented",
        req.sub, req.def.plural, req.name
    )))
}
