//! The Kubernetes API server (being written).
pub mod protobuf;
pub mod registry;
