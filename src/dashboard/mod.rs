//! The dashboard: a web page served by every node's ingress under
//! `/.rk3s/dashboard/` (on both listeners; use HTTPS) showing what
//! Traefik's dashboard shows (each router: host, path, TLS, target Service,
//! health of its endpoints) and the cluster at a glance (nodes, pods per
//! node, recent warning Events).
//!
//! Login is a bearer token (a ServiceAccount token, as the Kubernetes
//! dashboard asks). The page keeps it in `sessionStorage` and sends it on
//! every call; the backend makes every API call *with that token*, so the
//! API server's own authentication and RBAC decide what the user sees.
//!
//! The page stays current from watches: it holds one streamed response,
//! `api/watch` ([`live`]), for which the node watches the cluster with the
//! viewer's token and sends a new overview on every change; the page
//! reconnects with back-off when it breaks. `api/overview` is the same
//! overview read once (for scripts).
//!
//! Invariants:
//! - The backend holds no credentials of its own for reading: it never
//!   uses the node's identity to answer a user (only the CA and the server
//!   URL come from the node's kubeconfig).
//! - Everything the page loads is in the binary (`include_str!`); no CDN.
//! - A section the token may not read shows the API's error, never data.
//!
//! Partial: each viewer's stream holds its own seven watches (no sharing
//! between viewers, since each sees what its own token may read): fine for
//! a handful of viewers, not for hundreds.

pub mod live;
mod overview;

use std::path::Path;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

pub use overview::{Overview, RouterRow};

/// The URL prefix the dashboard lives under.
pub const PREFIX: &str = "/.rk3s/dashboard";

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error("failed to read the node kubeconfig {path}: {reason}")]
    Kubeconfig { path: String, reason: String },
}

/// How the backend reaches the API: the node kubeconfig with its user
/// replaced, per request, by the viewer's token.
#[derive(Clone)]
pub struct ApiAccess {
    template: kube::config::Kubeconfig,
}

impl ApiAccess {
    pub fn from_kubeconfig(path: &Path) -> Result<Self, DashboardError> {
        let template = kube::config::Kubeconfig::read_from(path).map_err(|e| DashboardError::Kubeconfig {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(ApiAccess { template })
    }

    /// A client that authenticates as the bearer of `token`, nothing else.
    pub async fn client_for(&self, token: &str) -> Result<kube::Client, String> {
        let mut kc = self.template.clone();
        let auth: kube::config::AuthInfo =
            serde_json::from_value(serde_json::json!({ "token": token })).map_err(|e| e.to_string())?;
        for user in &mut kc.auth_infos {
            user.auth_info = Some(auth.clone());
        }
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .map_err(|e| e.to_string())?;
        kube::Client::try_from(cfg).map_err(|e| e.to_string())
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")],
        body,
    )
        .into_response()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

fn refused(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({"error": message.into()}))).into_response()
}

/// `api/watch`: the viewer's overview as newline-delimited JSON, one
/// document per change, kept current by watches made with its token.
async fn watch_handler(State(access): State<Arc<ApiAccess>>, headers: HeaderMap) -> Response {
    let Some(token) = bearer(&headers) else {
        return refused(StatusCode::UNAUTHORIZED, "log in with a bearer token");
    };
    let client = match access.client_for(token).await {
        Ok(c) => c,
        Err(e) => return refused(StatusCode::BAD_REQUEST, e),
    };
    // A refused token is answered before the stream starts, so the page
    // can go back to the login form with the API's reason.
    if let Err(e) = kube::Api::<k8s_openapi::api::core::v1::Node>::all(client.clone())
        .list_metadata(&kube::api::ListParams::default().limit(1))
        .await
    {
        if matches!(&e, kube::Error::Api(s) if s.code == 401) {
            return refused(StatusCode::UNAUTHORIZED, format!("the API server refused the token: {}", overview::describe(&e)));
        }
    }
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(live::run(live::watches(&client), tx));
    (
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-store"),
            // Tells buffering reverse proxies in front of the node to pass lines through.
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response()
}

async fn overview_handler(State(access): State<Arc<ApiAccess>>, headers: HeaderMap) -> Response {
    let Some(token) = bearer(&headers) else {
        return (StatusCode::UNAUTHORIZED, Json(serde_json::json!({"error": "log in with a bearer token"})))
            .into_response();
    };
    let client = match access.client_for(token).await {
        Ok(c) => c,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, Json(serde_json::json!({"error": e}))).into_response()
        }
    };
    match overview::gather(client).await {
        Ok(o) => Json(o).into_response(),
        Err(overview::Denied(msg)) => {
            (StatusCode::UNAUTHORIZED, Json(serde_json::json!({"error": msg}))).into_response()
        }
    }
}

/// The dashboard's routes, to mount on the ingress's reserved prefix.
pub fn router(access: ApiAccess) -> Router {
    Router::new()
        .route(
            &format!("{PREFIX}/"),
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            PREFIX,
            get(|| async { axum::response::Redirect::permanent(&format!("{PREFIX}/")) }),
        )
        .route(
            &format!("{PREFIX}/app.js"),
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            &format!("{PREFIX}/style.css"),
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
        .route(&format!("{PREFIX}/api/overview"), get(overview_handler))
        .route(&format!("{PREFIX}/api/watch"), get(watch_handler))
        .with_state(Arc::new(access))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_are_embedded_and_load_nothing_from_outside() {
        for (name, text) in [("index.html", INDEX_HTML), ("app.js", APP_JS), ("style.css", STYLE_CSS)] {
            assert!(!text.is_empty(), "{name}");
            assert!(!text.contains("http://") && !text.contains("https://"), "{name} loads from outside");
        }
        assert!(INDEX_HTML.contains("viewport"), "the page is laid out for phones");
        assert!(INDEX_HTML.contains("app.js") && INDEX_HTML.contains("style.css"));
    }

    #[test]
    fn bearer_tokens_are_read_from_the_authorization_header() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer abc.def".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc.def"));
        h.insert(header::AUTHORIZATION, "Basic eA==".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }
}
