//! The Kubernetes API server (being written).
pub mod builtin;
pub mod discovery;
pub mod protobuf;
pub mod registry;
pub mod table;
pub mod version;
