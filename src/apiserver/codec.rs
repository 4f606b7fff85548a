//! Content negotiation: request bodies in JSON, YAML or Kubernetes protobuf;
//! responses in JSON (YAML when asked for only YAML), gzip-compressed when
//! large and the client accepts gzip, as kube-apiserver does.

use std::io::Write;

use axum::response::{IntoResponse, Response};
use http::{header, HeaderMap, HeaderValue, StatusCode};
use serde_json::Value;

use super::status::ApiStatus;

/// kube-apiserver's request body limit (3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;
/// Responses larger than this are gzip-compressed when the client allows it.
pub const GZIP_THRESHOLD: usize = 128 * 1024;

/// How the client wants objects rendered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rendering {
    Json,
    Yaml,
    /// `application/json;as=Table;g=meta.k8s.io;v=v1`.
    Table,
    /// `application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=<version>`
    /// (metadata informers' gets and watches).
    Metadata(&'static str),
    /// `…;as=PartialObjectMetadataList;…` (metadata informers' lists).
    MetadataList(&'static str),
}

/// The `meta.k8s.io` version a `v=` parameter names, if kube serves the
/// metadata renderings in it.
fn meta_version(params: &[&str]) -> Option<&'static str> {
    let param = |name: &str| {
        params.iter().find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    };
    if param("g") != Some("meta.k8s.io") {
        return None;
    }
    match param("v") {
        Some("v1") => Some("v1"),
        Some("v1beta1") => Some("v1beta1"),
        _ => None,
    }
}

/// What a request body was sent as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyType {
    Json,
    Yaml,
    Protobuf,
    MergePatch,
    JsonPatch,
    StrategicMergePatch,
    ApplyPatch,
}

/// The media type of `Content-Type` without parameters; none means JSON, as
/// kube-apiserver assumes for the Python client.
pub fn body_type(headers: &HeaderMap) -> Result<BodyType, ApiStatus> {
    let raw = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = raw
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    Ok(match media.as_str() {
        "" | "application/json" | "*/*" => BodyType::Json,
        "application/yaml" | "application/x-yaml" | "text/yaml" => BodyType::Yaml,
        "application/vnd.kubernetes.protobuf" => BodyType::Protobuf,
        "application/merge-patch+json" => BodyType::MergePatch,
        "application/json-patch+json" => BodyType::JsonPatch,
        "application/strategic-merge-patch+json" => BodyType::StrategicMergePatch,
        "application/apply-patch+yaml" => BodyType::ApplyPatch,
        _ => return Err(ApiStatus::unsupported_media_type(raw)),
    })
}

/// Parses a JSON or YAML document into a JSON value.
pub fn parse_document(body: &[u8], yaml: bool) -> Result<Value, ApiStatus> {
    if yaml {
        let v: serde_yaml::Value = serde_yaml::from_slice(body)
            .map_err(|e| ApiStatus::bad_request(format!("error decoding YAML: {e}")))?;
        serde_json::to_value(v)
            .map_err(|e| ApiStatus::bad_request(format!("error converting YAML to JSON: {e}")))
    } else {
        serde_json::from_slice(body).map_err(|e| {
            ApiStatus::bad_request(format!(
                "error decoding the request body: invalid JSON: {e}"
            ))
        })
    }
}

/// Decodes an object body (create/update) into JSON.
pub fn decode_object(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiStatus> {
    let value = match body_type(headers)? {
        BodyType::Json => parse_document(body, false)?,
        BodyType::Yaml => parse_document(body, true)?,
        BodyType::Protobuf => super::protobuf::decode(body)
            .map_err(|e| ApiStatus::bad_request(format!("failed to decode protobuf body: {e}")))?,
        other => {
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            tracing::debug!(?other, "patch media type on a non-patch request");
            return Err(ApiStatus::unsupported_media_type(ct));
        }
    };
    if !value.is_object() {
        return Err(ApiStatus::bad_request(
            "the request body must be a JSON object",
        ));
    }
    Ok(value)
}

/// Picks the rendering from `Accept`; `Err` is a 406.
pub fn rendering(headers: &HeaderMap) -> Result<Rendering, ApiStatus> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Ok(Rendering::Json);
    };
    let mut yaml = false;
    for clause in accept.split(',') {
        let mut parts = clause.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let params: Vec<&str> = parts.collect();
        let is_table = params.iter().any(|p| p.eq_ignore_ascii_case("as=Table"));
        let as_kind = params.iter().find_map(|p| p.strip_prefix("as="));
        match (media.as_str(), as_kind, meta_version(&params)) {
            ("application/json", Some("PartialObjectMetadata"), Some(v)) => {
                return Ok(Rendering::Metadata(v))
            }
            ("application/json", Some("PartialObjectMetadataList"), Some(v)) => {
                return Ok(Rendering::MetadataList(v))
            }
            _ => {}
        }
        match media.as_str() {
            "application/json" if is_table => return Ok(Rendering::Table),
            "application/json" | "*/*" | "application/*" | "" => {
                if params.iter().any(|p| p.starts_with("as=")) {
                    // A rendering we don't serve (another group or version); try the next.
                    continue;
                }
                return Ok(Rendering::Json);
            }
            "application/yaml" => yaml = true,
            _ => {}
        }
    }
    if yaml {
        Ok(Rendering::Yaml)
    } else {
        // Protobuf-only or renderings we don't serve: 406, like kube-apiserver.
        Err(ApiStatus::not_acceptable())
    }
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|e| e.split(';').next().unwrap_or("").trim() == "gzip")
        })
}

/// A JSON response body as kube-apiserver writes it: Go's `json.Encoder`
/// ends every document with a newline, and clients that compare or
/// concatenate bodies see it.
pub fn json_body(value: &Value) -> Vec<u8> {
    let mut body = serde_json::to_vec(value).unwrap_or_default();
    body.push(b'\n');
    body
}

/// Renders a value with a status code, in JSON or YAML, gzip if large.
pub fn respond(req_headers: &HeaderMap, code: StatusCode, value: &Value, yaml: bool) -> Response {
    let (body, ctype) = if yaml {
        (
            serde_yaml::to_string(value)
                .unwrap_or_default()
                .into_bytes(),
            "application/yaml",
        )
    } else {
        (json_body(value), "application/json")
    };
    let mut gzipped = false;
    let body = if body.len() > GZIP_THRESHOLD && accepts_gzip(req_headers) {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        match enc.write_all(&body).and_then(|_| enc.finish()) {
            Ok(z) => {
                gzipped = true;
                z
            }
            Err(_) => body,
        }
    } else {
        body
    };
    let mut resp = (code, body).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    if gzipped {
        resp.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        resp.headers_mut()
            .insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(name: header::HeaderName, v: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(name, HeaderValue::from_str(v).unwrap());
        m
    }

    #[test]
    fn table_accept_is_detected() {
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(
            rendering(&h(header::ACCEPT, kubectl)).unwrap(),
            Rendering::Table
        );
        assert_eq!(
            rendering(&h(header::ACCEPT, "application/json, */*")).unwrap(),
            Rendering::Json
        );
        assert_eq!(
            rendering(&h(
                header::ACCEPT,
                "application/vnd.kubernetes.protobuf,application/json"
            ))
            .unwrap(),
            Rendering::Json
        );
        assert_eq!(
            rendering(&h(header::ACCEPT, "application/yaml")).unwrap(),
            Rendering::Yaml
        );
        assert_eq!(rendering(&HeaderMap::new()).unwrap(), Rendering::Json);
        assert!(rendering(&h(header::ACCEPT, "application/vnd.kubernetes.protobuf")).is_err());
    }

    #[test]
    fn metadata_renderings_as_client_go_and_kube_rs_ask() {
        let informer = "application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json";
        assert_eq!(
            rendering(&h(header::ACCEPT, informer)).unwrap(),
            Rendering::MetadataList("v1")
        );
        assert_eq!(
            rendering(&h(
                header::ACCEPT,
                "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1beta1"
            ))
            .unwrap(),
            Rendering::Metadata("v1beta1")
        );
        // Another group is not a rendering kube knows: the plain JSON after it wins.
        assert_eq!(
            rendering(&h(
                header::ACCEPT,
                "application/json;as=PartialObjectMetadata;g=example.com;v=v1,application/json"
            ))
            .unwrap(),
            Rendering::Json
        );
        assert!(rendering(&h(
            header::ACCEPT,
            "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v2"
        ))
        .is_err());
    }

    #[test]
    fn content_types() {
        assert_eq!(body_type(&HeaderMap::new()).unwrap(), BodyType::Json);
        assert_eq!(
            body_type(&h(header::CONTENT_TYPE, "application/yaml")).unwrap(),
            BodyType::Yaml
        );
        assert_eq!(
            body_type(&h(header::CONTENT_TYPE, "text/plain"))
                .unwrap_err()
                .code,
            415
        );
    }

    #[test]
    fn yaml_and_bad_json() {
        let v = decode_object(
            &h(header::CONTENT_TYPE, "application/yaml"),
            b"kind: ConfigMap\ndata:\n  a: '1'\n",
        )
        .unwrap();
        assert_eq!(v["data"]["a"], "1");
        let e = decode_object(&HeaderMap::new(), b"{nope").unwrap_err();
        assert_eq!(e.code, 400);
    }

    #[test]
    fn large_responses_are_gzipped() {
        let big = Value::String("x".repeat(GZIP_THRESHOLD + 10));
        let r = respond(
            &h(header::ACCEPT_ENCODING, "gzip"),
            StatusCode::OK,
            &big,
            false,
        );
        assert_eq!(r.headers()[header::CONTENT_ENCODING], "gzip");
        let r = respond(&HeaderMap::new(), StatusCode::OK, &big, false);
        assert!(r.headers().get(header::CONTENT_ENCODING).is_none());
    }
}
