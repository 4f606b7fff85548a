//! PLACEHOLDER (the `protobuf` helper's version replaces this file at merge):
//! decoding of Kubernetes protobuf request bodies. Always fails for now.

use std::fmt;

/// Why a protobuf body could not be decoded.
#[derive(Debug)]
pub struct ProtobufError(pub String);

impl fmt::Display for ProtobufError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProtobufError {}

/// The `k8s\0` envelope → the JSON object with apiVersion/kind.
pub fn decode(body: &[u8]) -> Result<serde_json::Value, ProtobufError> {
    Err(ProtobufError(format!(
        "failed to decode a {}-byte protobuf body: protobuf is not supported yet",
        body.len()
    )))
}
