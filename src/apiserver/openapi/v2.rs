//! `/openapi/v2`: one Swagger 2.0 document for the whole API, as
//! kube-apiserver serves it, in JSON or in gnostic's protobuf
//! ([`super::v2_proto`]) when the client asks for
//! `application/com.github.proto-openapi.spec.v2@v1.0+protobuf` (kubectl's
//! client-side validation, `apply`'s patch metadata and Helm read that one).
//!
//! It is derived from the OpenAPI v3 group-version documents, so the two
//! never disagree: `#/components/schemas/X` becomes `#/definitions/X`,
//! request bodies become `in: body` parameters, response contents become
//! `schema` plus `produces`. Schemas are reduced to what Swagger 2.0 and
//! kubectl's validator understand, as kube does for CRDs in v2: no
//! `nullable`/`anyOf`/`oneOf`/`not`, `allOf: [$ref]` flattened to `$ref`,
//! int-or-string as `type: string`, and a schema that preserves unknown
//! fields loses its `type` and `properties` (kubectl would otherwise refuse
//! the unknown fields the server accepts).
//!
//! Invariant: the document (both encodings) is generated once per registry
//! fingerprint (the per group-version fingerprints joined, so a CRD change
//! regenerates it) and served with a strong ETag; `If-None-Match` gets 304.

use std::sync::{Arc, Mutex, OnceLock};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha512};

use super::{fingerprint, group_version_doc, group_versions, v2_proto};
use crate::apiserver::registry::Registry;

/// The media type of the protobuf document.
pub const PROTOBUF_TYPE: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// The whole-API Swagger 2.0 document.
pub fn document(registry: &Registry) -> Value {
    let mut paths = Map::new();
    let mut definitions = Map::new();
    let mut version = Value::from("v1.32.0");
    for (g, v) in group_versions(registry) {
        let Some(doc) = group_version_doc(registry, &g, &v) else {
            continue;
        };
        if let Some(ver) = doc.pointer("/info/version") {
            version = ver.clone();
        }
        if let Some(schemas) = doc.pointer("/components/schemas").and_then(Value::as_object) {
            for (name, schema) in schemas {
                let mut s = schema.clone();
                convert_schema(&mut s);
                definitions.insert(name.clone(), s);
            }
        }
        if let Some(p) = doc.get("paths").and_then(Value::as_object) {
            for (path, item) in p {
                paths.insert(path.clone(), convert_path_item(item));
            }
        }
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": version},
        "paths": paths,
        "definitions": definitions,
        "securityDefinitions": {"BearerToken": {"description": "Bearer Token authentication", "type": "apiKey", "name": "authorization", "in": "header"}},
        "security": [{"BearerToken": []}]
    })
}

fn v2_ref(r: &str) -> String {
    r.replace("#/components/schemas/", "#/definitions/")
}

/// Reduce one OpenAPI v3 schema (in place) to Swagger 2.0.
pub fn convert_schema(schema: &mut Value) {
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    if let Some(Value::String(r)) = obj.get_mut("$ref") {
        *r = v2_ref(r);
    }
    // `allOf: [{$ref}]` (v3's way to put a description beside a ref).
    if let Some(Value::Array(all)) = obj.get("allOf") {
        if all.len() == 1 {
            if let Some(r) = all[0].get("$ref").and_then(Value::as_str) {
                let r = v2_ref(r);
                obj.remove("allOf");
                obj.insert("$ref".into(), r.into());
            }
        }
    }
    for k in ["nullable", "anyOf", "oneOf", "not"] {
        obj.remove(k);
    }
    if obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        obj.insert("type".into(), "string".into());
        obj.entry("format").or_insert_with(|| "int-or-string".into());
    }
    if obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        obj.remove("type");
        obj.remove("properties");
        obj.remove("additionalProperties");
        obj.remove("required");
    }
    for key in ["properties", "patternProperties"] {
        if let Some(Value::Object(props)) = obj.get_mut(key) {
            for prop in props.values_mut() {
                convert_schema(prop);
            }
        }
    }
    for key in ["items", "additionalProperties"] {
        match obj.get_mut(key) {
            Some(v @ Value::Object(_)) => convert_schema(v),
            Some(Value::Array(list)) => list.iter_mut().for_each(convert_schema),
            _ => {}
        }
    }
    if let Some(Value::Array(all)) = obj.get_mut("allOf") {
        all.iter_mut().for_each(convert_schema);
    }
}

fn convert_parameter(p: &Value) -> Value {
    let mut out = Map::new();
    for k in ["name", "in", "description", "required"] {
        if let Some(v) = p.get(k) {
            out.insert(k.into(), v.clone());
        }
    }
    if let Some(schema) = p.get("schema").and_then(Value::as_object) {
        for (k, v) in schema {
            out.insert(k.clone(), v.clone());
        }
    }
    Value::Object(out)
}

fn convert_path_item(item: &Value) -> Value {
    let mut out = Map::new();
    let Some(item) = item.as_object() else {
        return Value::Object(out);
    };
    for (k, v) in item {
        match k.as_str() {
            "parameters" => {
                let params = v.as_array().into_iter().flatten().map(convert_parameter);
                out.insert(k.clone(), Value::Array(params.collect()));
            }
            "get" | "put" | "post" | "delete" | "patch" | "options" | "head" => {
                out.insert(k.clone(), convert_operation(v));
            }
            _ => {}
        }
    }
    Value::Object(out)
}

fn convert_operation(op: &Value) -> Value {
    let mut out = Map::new();
    let Some(op) = op.as_object() else {
        return Value::Object(out);
    };
    for k in ["description", "tags", "operationId"] {
        if let Some(v) = op.get(k) {
            out.insert(k.into(), v.clone());
        }
    }
    let mut params: Vec<Value> = op
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(convert_parameter)
        .collect();
    if let Some(body) = op.get("requestBody") {
        let content = body.get("content").and_then(Value::as_object);
        let consumes: Vec<&String> = content.into_iter().flat_map(|c| c.keys()).collect();
        out.insert("consumes".into(), json!(consumes));
        let mut schema = content
            .and_then(|c| c.values().next())
            .and_then(|m| m.get("schema"))
            .cloned()
            .unwrap_or(json!({}));
        convert_schema(&mut schema);
        // kube lists the body first.
        params.insert(
            0,
            json!({"name": "body", "in": "body", "required": body.get("required").cloned().unwrap_or(Value::Bool(true)), "schema": schema}),
        );
    }
    let mut produces: Vec<String> = Vec::new();
    let mut responses = Map::new();
    for (code, resp) in op.get("responses").and_then(Value::as_object).into_iter().flatten() {
        let mut r = Map::new();
        r.insert(
            "description".into(),
            resp.get("description").cloned().unwrap_or_else(|| "".into()),
        );
        if let Some(content) = resp.get("content").and_then(Value::as_object) {
            for t in content.keys() {
                if !produces.contains(t) {
                    produces.push(t.clone());
                }
            }
            if let Some(mut schema) = content.values().next().and_then(|m| m.get("schema")).cloned() {
                convert_schema(&mut schema);
                r.insert("schema".into(), schema);
            }
        }
        responses.insert(code.clone(), Value::Object(r));
    }
    if !produces.is_empty() {
        out.insert("produces".into(), json!(produces));
    }
    out.insert("schemes".into(), json!(["https"]));
    if !params.is_empty() {
        out.insert("parameters".into(), Value::Array(params));
    }
    out.insert("responses".into(), Value::Object(responses));
    for (k, v) in op.iter().filter(|(k, _)| k.starts_with("x-")) {
        out.insert(k.clone(), v.clone());
    }
    Value::Object(out)
}

/// One encoding of the document and its ETag.
#[derive(Clone)]
struct Encoded {
    bytes: Bytes,
    etag: String,
}

#[derive(Clone)]
struct Cached {
    fingerprint: String,
    json: Encoded,
    proto: Encoded,
}

fn etag(bytes: &[u8]) -> String {
    format!("\"{}\"", hex::encode_upper(Sha512::digest(bytes)))
}

fn encoded(bytes: Vec<u8>) -> Encoded {
    Encoded {
        etag: etag(&bytes),
        bytes: bytes.into(),
    }
}

fn cached(registry: &Registry) -> Cached {
    static CACHE: OnceLock<Mutex<Option<Cached>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(None));
    let fp: String = group_versions(registry)
        .iter()
        .map(|(g, v)| format!("{g}/{v}:{}\n", fingerprint(registry, g, v)))
        .collect();
    if let Some(c) = cache.lock().expect("openapi v2 cache").as_ref() {
        if c.fingerprint == fp {
            return c.clone();
        }
    }
    let doc = document(registry);
    let c = Cached {
        fingerprint: fp,
        json: encoded(serde_json::to_vec(&doc).expect("serializing a JSON value")),
        proto: encoded(v2_proto::encode_document(&doc)),
    };
    *cache.lock().expect("openapi v2 cache") = Some(c.clone());
    c
}

/// Whether an Accept header asks for the protobuf document (kube accepts
/// both the `@` and the older `.` spelling of the version).
fn wants_protobuf(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("com.github.proto-openapi.spec.v2"))
}

pub async fn serve(State(registry): State<Arc<Registry>>, headers: HeaderMap) -> Response {
    let proto = wants_protobuf(&headers);
    let c = tokio::task::spawn_blocking(move || cached(&registry))
        .await
        .expect("generating the OpenAPI v2 document");
    let (enc, content_type) = if proto {
        (c.proto, PROTOBUF_TYPE)
    } else {
        (c.json, "application/json")
    };
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == enc.etag));
    let mut resp = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = (StatusCode::OK, enc.bytes).into_response();
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        r
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&enc.etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::VARY, HeaderValue::from_static("Accept"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v3_constructs_become_swagger_2() {
        let mut s = json!({
            "type": "object",
            "properties": {
                "spec": {"allOf": [{"$ref": "#/components/schemas/io.k8s.api.core.v1.PodSpec"}], "description": "d"},
                "port": {"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {"a": {"type": "string"}}},
                "list": {"type": "array", "items": {"nullable": true, "$ref": "#/components/schemas/X"}},
                "anyOf": {"type": "array", "items": {"type": "string"}}
            }
        });
        convert_schema(&mut s);
        let p = &s["properties"];
        assert_eq!(p["spec"], json!({"$ref": "#/definitions/io.k8s.api.core.v1.PodSpec", "description": "d"}));
        assert_eq!(p["port"], json!({"x-kubernetes-int-or-string": true, "type": "string", "format": "int-or-string"}));
        assert_eq!(p["free"], json!({"x-kubernetes-preserve-unknown-fields": true}));
        assert_eq!(p["list"]["items"], json!({"$ref": "#/definitions/X"}));
        // A property that happens to be named like a keyword stays.
        assert_eq!(p["anyOf"]["type"], "array");
    }

    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                if let Some(Value::String(r)) = o.get("$ref") {
                    out.push(r.clone());
                }
                o.values().for_each(|x| refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }

    /// kubectl's OpenAPI parser refuses the whole document when one ref
    /// does not resolve, or a schema has several types or v3 keywords.
    #[test]
    fn every_ref_of_the_builtin_document_resolves() {
        let registry = crate::apiserver::builtin::builtin_registry();
        let doc = document(&registry);
        let defs = doc["definitions"].as_object().unwrap();
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(all.len() > 1000);
        for r in all {
            let name = r.strip_prefix("#/definitions/").unwrap_or_else(|| panic!("{r}"));
            assert!(defs.contains_key(name), "unresolved {r}");
        }
        for (name, schema) in defs {
            assert!(schema.get("nullable").is_none() && schema.get("anyOf").is_none(), "{name}");
            assert!(!schema["type"].is_array(), "{name}");
        }
        let pod = &doc["definitions"]["io.k8s.api.core.v1.Pod"];
        assert_eq!(pod["x-kubernetes-group-version-kind"][0]["kind"], "Pod");
        // Both encodings are produced from the same document.
        assert!(!v2_proto::encode_document(&doc).is_empty());
    }

    #[test]
    fn operations_get_body_parameters_and_produces() {
        let op = json!({
            "operationId": "createCoreV1NamespacedPod",
            "parameters": [{"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}}],
            "requestBody": {"content": {"*/*": {"schema": {"$ref": "#/components/schemas/io.k8s.api.core.v1.Pod"}}}, "required": true},
            "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/io.k8s.api.core.v1.Pod"}}}}},
            "x-kubernetes-action": "post"
        });
        let v2 = convert_operation(&op);
        assert_eq!(v2["consumes"], json!(["*/*"]));
        assert_eq!(v2["produces"], json!(["application/json"]));
        assert_eq!(v2["parameters"][0], json!({"name": "body", "in": "body", "required": true, "schema": {"$ref": "#/definitions/io.k8s.api.core.v1.Pod"}}));
        assert_eq!(v2["parameters"][1], json!({"name": "dryRun", "in": "query", "type": "string", "uniqueItems": true}));
        assert_eq!(v2["responses"]["200"]["schema"]["$ref"], "#/definitions/io.k8s.api.core.v1.Pod");
        assert_eq!(v2["x-kubernetes-action"], "post");
    }
}
