//! Kubernetes `Status` errors, worded like kube-apiserver's
//! (apimachinery `pkg/api/errors`), so that kubectl prints the same
//! `Error from server (Reason): message` lines.

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};
use serde_json::{json, Map, Value};

use super::registry::ResourceDef;

/// One `details.causes[]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cause {
    /// e.g. `FieldValueRequired`, `FieldValueInvalid`.
    pub reason: String,
    pub message: String,
    pub field: String,
}

/// A failed request, rendered as a `Status` object.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiStatus {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// `details`; `None` renders no `details` key, `Some(empty)` renders `{}`.
    pub details: Option<Box<Map<String, Value>>>,
    pub retry_after: Option<u64>,
}

/// What `details` names: the resource (plural), group and object name.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    pub group: &'a str,
    pub resource: &'a str,
    pub name: &'a str,
}

impl<'a> Target<'a> {
    pub fn of(def: &'a ResourceDef, name: &'a str) -> Self {
        Target {
            group: &def.group,
            resource: &def.plural,
            name,
        }
    }

    /// `deployments.apps`, or `pods` for the core group.
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.resource.to_string()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }

    fn details(&self) -> Map<String, Value> {
        let mut d = Map::new();
        if !self.name.is_empty() {
            d.insert("name".into(), json!(self.name));
        }
        if !self.group.is_empty() {
            d.insert("group".into(), json!(self.group));
        }
        d.insert("kind".into(), json!(self.resource));
        d
    }
}

impl ApiStatus {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiStatus {
            code,
            reason,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    fn with_details(mut self, details: Map<String, Value>) -> Self {
        self.details = Some(Box::new(details));
        self
    }

    /// `pods "x" not found`.
    pub fn not_found(t: Target<'_>) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{}\" not found", t.qualified(), t.name),
        )
        .with_details(t.details())
    }

    /// An unknown URL: `the server could not find the requested resource`.
    pub fn route_not_found() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(Map::new())
    }

    /// `namespaces "x" already exists`.
    pub fn already_exists(t: Target<'_>) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{}\" already exists", t.qualified(), t.name),
        )
        .with_details(t.details())
    }

    /// generateName could not find a free name.
    pub fn generate_name_conflict(t: Target<'_>) -> Self {
        let mut s = Self::new(
            409,
            "AlreadyExists",
            format!(
                "{} \"{}\" already exists, the server was not able to generate a unique name for the object",
                t.qualified(),
                t.name
            ),
        )
        .with_details(t.details());
        if let Some(d) = s.details.as_mut() {
            d.insert("retryAfterSeconds".into(), json!(1));
        }
        s.retry_after = Some(1);
        s
    }

    /// `Operation cannot be fulfilled on … "x": <why>`.
    pub fn conflict(t: Target<'_>, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{}\": {}",
                t.qualified(),
                t.name,
                why
            ),
        )
        .with_details(t.details())
    }

    /// The stale-resourceVersion conflict.
    pub fn modified(t: Target<'_>) -> Self {
        Self::conflict(
            t,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 422 with one cause per invalid field.
    pub fn invalid(kind: &str, group: &str, name: &str, causes: Vec<Cause>) -> Self {
        let list: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        let summary = if list.len() == 1 {
            list[0].clone()
        } else {
            format!("[{}]", list.join(", "))
        };
        let qualified = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let mut d = Map::new();
        d.insert("name".into(), json!(name));
        if !group.is_empty() {
            d.insert("group".into(), json!(group));
        }
        d.insert("kind".into(), json!(kind));
        d.insert(
            "causes".into(),
            Value::Array(
                causes
                    .iter()
                    .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                    .collect(),
            ),
        );
        Self::new(
            422,
            "Invalid",
            format!("{qualified} \"{name}\" is invalid: {summary}"),
        )
        .with_details(d)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn forbidden_message(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    /// `namespaces "x" is forbidden: <why>`, with details.
    pub fn forbidden(t: Target<'_>, why: &str) -> Self {
        Self::new(
            403,
            "Forbidden",
            format!("{} \"{}\" is forbidden: {}", t.qualified(), t.name, why),
        )
        .with_details(t.details())
    }

    /// 503 ServiceUnavailable, e.g. a node without a live tunnel.
    pub fn service_unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn method_not_allowed(method: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method})"),
        )
        .with_details(Map::new())
    }

    /// `too old resource version: X (Y)`.
    pub fn expired(requested: i64, oldest: i64) -> Self {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {requested} ({oldest})"),
        )
    }

    pub fn expired_continue() -> Self {
        Self::new(
            410,
            "Expired",
            "The provided continue parameter is too old to display a consistent list result. You can start a new list \
             without the continue parameter.",
        )
    }

    pub fn too_large_resource_version(requested: i64, current: i64) -> Self {
        let mut d = Map::new();
        d.insert(
            "causes".into(),
            json!([{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}]),
        );
        d.insert("retryAfterSeconds".into(), json!(1));
        let mut s = Self::new(
            504,
            "Timeout",
            format!("Too large resource version: {requested}, current: {current}"),
        )
        .with_details(d);
        s.retry_after = Some(1);
        s
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {content_type:?})"))
    }

    pub fn not_acceptable() -> Self {
        Self::new(
            406,
            "NotAcceptable",
            "only the following media types are accepted: application/json, application/yaml",
        )
    }

    /// A 406 with kube's own words (a metadata rendering that does not fit
    /// the request).
    pub fn not_acceptable_message(message: impl Into<String>) -> Self {
        Self::new(406, "NotAcceptable", message)
    }

    pub fn too_large_body(limit: usize) -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {limit}"),
        )
    }

    pub fn too_many_requests() -> Self {
        let mut d = Map::new();
        d.insert("retryAfterSeconds".into(), json!(1));
        let mut s = Self::new(
            429,
            "TooManyRequests",
            "Too many requests, please try again later.",
        )
        .with_details(d);
        s.retry_after = Some(1);
        s
    }

    /// An error kube's storage returns as a plain Go error: 500 with no
    /// reason and the error's text (apimachinery `ErrorToAPIStatus`).
    pub fn unknown(message: impl Into<String>) -> Self {
        Self::new(500, "", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {}", message.into()),
        )
    }

    /// The `Status` object as JSON.
    pub fn to_value(&self) -> Value {
        let mut v = Map::new();
        v.insert("kind".into(), json!("Status"));
        v.insert("apiVersion".into(), json!("v1"));
        v.insert("metadata".into(), json!({}));
        v.insert("status".into(), json!("Failure"));
        v.insert("message".into(), json!(self.message));
        if !self.reason.is_empty() {
            // kube's `reason` is omitempty (StatusReasonUnknown is "").
            v.insert("reason".into(), json!(self.reason));
        }
        if let Some(d) = &self.details {
            v.insert("details".into(), Value::Object((**d).clone()));
        }
        v.insert("code".into(), json!(self.code));
        Value::Object(v)
    }
}

impl IntoResponse for ApiStatus {
    fn into_response(self) -> Response {
        let body = super::codec::json_body(&self.to_value());
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (code, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

/// A `Status` Success, as some deletes return.
pub fn success(details: Map<String, Value>) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_matches_kube_apiserver() {
        let t = Target {
            group: "apps",
            resource: "deployments",
            name: "web",
        };
        let v = ApiStatus::not_found(t).to_value();
        assert_eq!(v["message"], "deployments.apps \"web\" not found");
        assert_eq!(v["reason"], "NotFound");
        assert_eq!(v["code"], 404);
        assert_eq!(
            v["details"],
            json!({"name": "web", "group": "apps", "kind": "deployments"})
        );
        assert_eq!(v["status"], "Failure");
    }

    /// Byte for byte what kube-apiserver sends for `GET
    /// /apis/apps/v1/namespaces/default/deployments/web` when it is missing:
    /// Go's json.Encoder field order (as `metav1.Status` declares its
    /// fields) and its final newline.
    #[tokio::test]
    async fn the_wire_body_is_kube_apiserver_s_to_the_byte() {
        let t = Target {
            group: "apps",
            resource: "deployments",
            name: "web",
        };
        let resp = ApiStatus::not_found(t).into_response();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16).await.unwrap();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\
             \"message\":\"deployments.apps \\\"web\\\" not found\",\"reason\":\"NotFound\",\
             \"details\":{\"name\":\"web\",\"group\":\"apps\",\"kind\":\"deployments\"},\"code\":404}\n"
        );
    }

    #[test]
    fn core_group_has_no_group_in_details() {
        let v = ApiStatus::already_exists(Target {
            group: "",
            resource: "namespaces",
            name: "x",
        })
        .to_value();
        assert_eq!(v["message"], "namespaces \"x\" already exists");
        assert_eq!(v["details"], json!({"name": "x", "kind": "namespaces"}));
        assert_eq!(v["code"], 409);
    }

    #[test]
    fn conflict_wording() {
        let v = ApiStatus::modified(Target {
            group: "apps",
            resource: "deployments",
            name: "web",
        })
        .to_value();
        assert_eq!(
            v["message"],
            "Operation cannot be fulfilled on deployments.apps \"web\": the object has been modified; please apply \
             your changes to the latest version and try again"
        );
        assert_eq!(v["reason"], "Conflict");
    }

    #[test]
    fn invalid_lists_causes() {
        let v = ApiStatus::invalid(
            "ConfigMap",
            "",
            "",
            vec![Cause {
                reason: "FieldValueRequired".into(),
                message: "Required value: name or generateName is required".into(),
                field: "metadata.name".into(),
            }],
        )
        .to_value();
        assert_eq!(
            v["message"],
            "ConfigMap \"\" is invalid: metadata.name: Required value: name or generateName is required"
        );
        assert_eq!(v["details"]["causes"][0]["field"], "metadata.name");
        assert_eq!(v["code"], 422);
    }

    #[test]
    fn route_not_found_has_empty_details() {
        let v = ApiStatus::route_not_found().to_value();
        assert_eq!(v["details"], json!({}));
        assert_eq!(
            v["message"],
            "the server could not find the requested resource"
        );
    }

    #[test]
    fn expired_wording() {
        assert_eq!(
            ApiStatus::expired(5, 10).to_value()["message"],
            "too old resource version: 5 (10)"
        );
    }
}
