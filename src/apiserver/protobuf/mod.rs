//! Decoding of Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`) into the
//! JSON object the real API server would have seen.
//!
//! kubectl 1.32+ sends protobuf for every typed `kubectl create <generator>` and never falls back
//! to JSON, while rk3s stores and serves JSON; `decode` bridges the two. Answering such a request
//! with JSON is fine: kubectl sends `Accept: application/vnd.kubernetes.protobuf,application/json`.
//!
//! How: the body is `k8s\0` followed by a `runtime.Unknown` envelope (TypeMeta, `raw`,
//! `contentEncoding`, `contentType`). `raw` is decoded with the `k8s-pb` prost type for the
//! envelope's apiVersion/kind (`kinds`: every object type `k8s-pb` generates, all groups and
//! versions), so the wire format is validated by the real schema. prost has no reflection, so the
//! decoded value is rendered with its derived `Debug` and parsed back into a tree (`debug_tree`),
//! which `to_json` writes out with Kubernetes' JSON rules. The facts the protobuf schema lacks —
//! acronym JSON names, embedded structs, `bytes` fields, which zero scalars Go keeps — are in
//! `tables`.
//!
//! Invariants: the output always has `kind` and `apiVersion` from the envelope first; field order
//! follows the protobuf field order (which is Go's struct order for nearly every type). The result
//! equals what kubectl itself prints for the same object with `--dry-run=client -o json`
//! (`tests/protobuf_kubectl.rs` checks this for every `kubectl create` generator).
//!
//! Callers: use it for any request whose `Content-Type` is [`CONTENT_TYPE`] — POST, and PUT too
//! (client-go's typed updates use the same encoding) — and map every error to a 400 `BadRequest`
//! `Status` (a 415 would not help: kubectl does not retry with JSON). Answer in JSON.
//!
//! Partial:
//! - fields newer than the `k8s-pb` release (Kubernetes 1.34 types) are skipped by prost and so
//!   missing from the JSON;
//! - zero-value rules are keyed by Go type name across all versions, so a field that keeps its
//!   zero in one version keeps it in all (CRD `preserveUnknownFields` is corrected by hand);
//! - empty non-`omitempty` slices, which Go writes as `null`, are left out;
//! - v1beta1 `CustomResourceColumnDefinition.JSONPath` comes out as `jsonPath`.

mod debug_tree;
mod kinds;
mod tables;
mod to_json;

use k8s_pb::apimachinery::pkg::runtime::Unknown;
use prost::Message;
use serde_json::{Map, Value};

/// The media type of Kubernetes protobuf bodies.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The four bytes every Kubernetes protobuf body starts with.
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// Why a protobuf body could not be turned into JSON. Each is the client's fault (a 4xx).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtobufError {
    #[error("failed to decode protobuf body: not a Kubernetes protobuf envelope: {0}")]
    NotEnvelope(String),
    #[error("failed to decode protobuf body: unsupported content encoding `{0}`")]
    UnsupportedEncoding(String),
    #[error("failed to decode protobuf body: unknown kind `{kind}` in `{api_version}`")]
    UnknownKind { api_version: String, kind: String },
    #[error("failed to decode protobuf body: malformed {kind} ({api_version}): {reason}")]
    Malformed {
        api_version: String,
        kind: String,
        reason: String,
    },
}

/// Decodes a `k8s\0`-prefixed protobuf body into the object's Kubernetes JSON form.
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    let envelope = body
        .strip_prefix(MAGIC.as_slice())
        .ok_or_else(|| ProtobufError::NotEnvelope("missing the `k8s\\0` prefix".into()))?;
    let unknown =
        Unknown::decode(envelope).map_err(|err| ProtobufError::NotEnvelope(err.to_string()))?;
    let type_meta = unknown.type_meta.unwrap_or_default();
    let api_version = type_meta.api_version.unwrap_or_default();
    let kind = type_meta.kind.unwrap_or_default();
    if api_version.is_empty() || kind.is_empty() {
        return Err(ProtobufError::NotEnvelope(
            "apiVersion and kind must be set".into(),
        ));
    }
    if let Some(encoding) = unknown
        .content_encoding
        .filter(|encoding| !encoding.is_empty())
    {
        return Err(ProtobufError::UnsupportedEncoding(encoding));
    }
    if let Some(content_type) = unknown
        .content_type
        .filter(|ty| !ty.is_empty() && ty != CONTENT_TYPE)
    {
        return Err(ProtobufError::NotEnvelope(format!(
            "raw content type is `{content_type}`"
        )));
    }
    let raw = unknown.raw.unwrap_or_default();
    let malformed = |reason: String| ProtobufError::Malformed {
        api_version: api_version.clone(),
        kind: kind.clone(),
        reason,
    };

    let rendered = match kinds::lookup(&api_version, &kind, &raw) {
        kinds::Lookup::Decoded(rendered) => rendered,
        kinds::Lookup::Malformed(err) => return Err(malformed(err.to_string())),
        kinds::Lookup::UnknownKind => {
            return Err(ProtobufError::UnknownKind {
                api_version: api_version.clone(),
                kind: kind.clone(),
            })
        }
    };
    let tree = debug_tree::parse(&rendered)
        .map_err(|err| malformed(format!("internal rendering error: {err}")))?;
    let fields = match to_json::to_json(&tree, "") {
        Ok(Value::Object(fields)) => fields,
        Ok(_) => return Err(malformed("the object is not a message".into())),
        Err(err) => {
            return Err(malformed(format!(
                "field `{}`: {}",
                err.path.trim_start_matches('.'),
                err.reason
            )))
        }
    };

    let mut object = Map::with_capacity(fields.len() + 2);
    object.insert("kind".into(), Value::String(kind));
    object.insert("apiVersion".into(), Value::String(api_version));
    object.extend(fields);
    Ok(Value::Object(object))
}

/// Wraps an object's protobuf bytes the way client-go does; for tests and fakes.
pub fn encode_envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    use k8s_pb::apimachinery::pkg::runtime::TypeMeta;
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut body = MAGIC.to_vec();
    unknown.encode(&mut body).expect("a Vec grows as needed");
    body
}

#[cfg(test)]
mod tests;
