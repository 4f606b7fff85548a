//! The Kubernetes API server.
//!
//! State at this commit (partial): the building blocks are in place and unit
//! tested: `Status` errors worded like kube-apiserver (`status`), storage keys
//! (`keys`), label/field selectors (`selectors`), content negotiation and gzip
//! (`codec`), object bookkeeping (`objects`) and an in-memory `Store` test
//! double (`testing`). The HTTP server, the REST handlers (create, get, list,
//! update, patch, delete, watch), health endpoints and TLS are NOT written
//! yet. `builtin`, `discovery`, `table` and `protobuf` are placeholders that
//! the apimeta and protobuf helpers' versions replace.
pub mod auth;
pub mod builtin;
pub mod codec;
pub mod discovery;
pub mod jsonpatch;
pub mod keys;
pub mod objects;
pub mod protobuf;
pub mod registry;
pub mod rest;
pub mod selectors;
pub mod server;
pub mod status;
pub mod table;
pub mod testing;
pub mod watch;

pub use server::{serve, ApiError, ApiServer, ServeOptions};
