//! The Kubernetes API server (being written).
pub mod registry;
