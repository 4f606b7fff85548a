//! The Kubernetes API server (being written).
pub mod openapi;
pub mod registry;
pub mod strategic;
