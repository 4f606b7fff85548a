//! The Kubernetes API server: HTTPS (HTTP/1.1 and HTTP/2) serving generic
//! REST for every kind in the [`registry::Registry`], backed by a
//! [`crate::store::Store`].
//!
//! Map: `server` (bind/serve/shutdown, TLS, health), `context` (the shared
//! request context: `AppState`, `Ctx`), `rest` (routing, and the verbs in
//! `rest::{read, write, patch}`), `delete`, `watch` (watch streams),
//! `namespaces` (the bootstrap namespaces and namespace emptying),
//! `subresources` (the non-stored subresources and kinds, reviews included),
//! `streaming` (logs, exec, attach, port-forward, proxy through the node dialer), `status` (Status
//! errors), `codec` (content negotiation, gzip), `selectors`, `keys`
//! (storage layout), `objects` (system metadata), `admission` (the plug-in chain),
//! `defaults` and `validation` (its defaulting, validating and `fieldValidation` plug-ins), `openapi`, `strategic` (patches), `auth` (the
//! authn/authz seam, implemented in `crate::auth`), `testing` (`MemoryStore`). `builtin` (the
//! built-in kinds), `discovery`, `version`, `table` (what kubectl reads and
//! prints) and `protobuf` (kubectl's protobuf request bodies). `crd` serves
//! CustomResourceDefinitions' custom resources (registry entries at run
//! time, schema pruning/defaulting/validation, scale).
//!
//! Invariants: stored values never carry `resourceVersion`; every served
//! object gets `metadata.resourceVersion` = its record's `mod_revision`.
//! Partial (see each module): no authentication, strategic merge patch is
//! merge patch. `fieldmanager` keeps managedFields and serves server-side apply.
pub mod admission;
pub mod auth;
pub mod builtin;
pub mod body;
pub mod codec;
pub mod componentstatus;
pub mod context;
pub mod crd;
pub mod defaults;
pub mod delete;
pub mod events;
pub mod discovery;
pub mod fieldmanager;
pub mod impersonation;
pub mod ipalloc;
pub mod keys;
pub mod metadata;
pub mod metrics_api;
pub mod namespaces;
pub mod objects;
pub mod openapi;
pub mod protobuf;
pub mod registry;
pub mod rest;
pub mod selectors;
pub mod server;
pub mod status;
pub mod strategic;
pub mod proxy;
pub mod streaming;
pub mod subresources;
pub mod table;
pub mod telemetry;
#[cfg(test)]
pub mod testing;
pub mod validation;
pub mod version;
pub mod watch;

pub use server::{serve, ApiError, ApiServer, ServeOptions};
