//! The ingress's own answers: small HTML pages that say what is missing
//! (no rule for the host and path, no ready endpoint of a named Service, a
//! backend that refused or timed out), so a user can fix the right object.
//!
//! Invariant: every page escapes what came from the request or the API.

use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::Full;

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A page with `status`, a one-line `headline` and a detail paragraph.
pub fn page(status: StatusCode, headline: &str, detail: &str) -> Response<Full<Bytes>> {
    let title = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let body = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title></head>\n<body style=\"font-family:sans-serif;margin:2em\">\
         <h1>{title}</h1>\n<p><strong>{}</strong></p>\n<p>{}</p>\n\
         <hr><small>rk3s ingress</small></body></html>\n",
        escape(headline),
        escape(detail)
    );
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Full::new(Bytes::from(body)))
        .expect("a static response is valid")
}

pub fn no_route(host: &str, path: &str) -> Response<Full<Bytes>> {
    page(
        StatusCode::NOT_FOUND,
        &format!("No Ingress rule matches host {host:?} and path {path:?}."),
        "Create an Ingress with a rule for this host and path \
         (kubectl create ingress NAME --rule=\"HOST/PATH*=SERVICE:PORT\"), \
         or give an Ingress a defaultBackend.",
    )
}

/// 503: the Service (or its port, or its ready endpoints) is missing.
pub fn unavailable(ingress: &str, why: &str) -> Response<Full<Bytes>> {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        why,
        &format!("Ingress {ingress} routes here. Check the Service and that its pods are Ready (kubectl get endpointslices)."),
    )
}

/// 502: every endpoint refused the connection, or the backend broke off.
pub fn bad_gateway(service: &str, why: &str) -> Response<Full<Bytes>> {
    page(
        StatusCode::BAD_GATEWAY,
        &format!("The backend of service {service} did not answer."),
        why,
    )
}

pub fn gateway_timeout(service: &str) -> Response<Full<Bytes>> {
    page(
        StatusCode::GATEWAY_TIMEOUT,
        &format!("The backend of service {service} did not answer in time."),
        "The connection or the response headers took longer than the ingress waits.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn text(r: Response<Full<Bytes>>) -> String {
        String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn pages_say_what_is_missing_and_escape_input() {
        let r = no_route("<evil>.local", "/a\"b");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let body = text(r).await;
        assert!(body.contains("&lt;evil&gt;.local"), "{body}");
        assert!(!body.contains("<evil>"), "{body}");
        let r = unavailable("default/hello", "service default/hello has no ready endpoints");
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = text(r).await;
        assert!(body.contains("service default/hello has no ready endpoints"), "{body}");
        assert!(body.contains("Ingress default/hello"), "{body}");
        let r = bad_gateway("default/web", "connection refused by 10.42.0.5:8080");
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
        assert!(text(r).await.contains("default/web"));
        assert_eq!(gateway_timeout("x").status(), StatusCode::GATEWAY_TIMEOUT);
    }
}
