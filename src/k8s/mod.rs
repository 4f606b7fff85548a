//! Kubernetes helpers shared by the control plane and the agent, each kept
//! once with kube's semantics: label selectors (`selector`), taints,
//! tolerations and node-selector requirements (`scheduling`), the core/v1
//! Event recorder (`events`) and the two Lease expiry rules (`lease`).
//!
//! Architecture invariant: this module sits below everything that talks
//! Kubernetes (`apiserver`, `auth`, `controllers`, `scheduler`, `agent`) and
//! imports none of them, nor `store` or `server`; it works on k8s_openapi
//! types (and JSON through them) and a `kube::Client`.

pub mod events;
pub mod lease;
pub mod scheduling;
pub mod selector;
