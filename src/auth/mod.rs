//! Authentication and authorization for the API server, plugged into the
//! `apiserver::auth` seam by `server::assemble`.
//!
//! Map: `authn` (x509 client certificates, bootstrap tokens, ServiceAccount
//! JWTs), (signed and checked by `crate::pki::jwt`), `authz` (the chain: `system:masters`, the
//! Node authorizer, RBAC), `node` (the Node authorizer), `node_restriction` (its admission half), `rbac` (the RBAC
//! index and its store-watch cache, `rbac::rules` the matcher), `bootstrap`
//! (the default roles from `embedded/rbac/`), `escalation` (nobody grants
//! RBAC rights they lack). The access, rules, token and self-subject
//! reviews are served by `apiserver::subresources::reviews` through the
//! seam's traits.
//!
//! Invariants: no credentials is 401 on every API path except health,
//! `/version` (RBAC's `system:public-info-viewer` grants it to
//! `system:unauthenticated`) and the join routes; bad credentials are
//! always 401, even where anonymous access would be allowed.
//!
//! PARTIAL: no legacy Secret-based ServiceAccount tokens, no OIDC or
//! webhook authentication; NodeRestriction admission (`node_restriction`)
//! covers only names and restricted labels.

pub mod authn;
pub mod authz;
pub mod bootstrap;
pub mod escalation;
pub mod node;
pub mod node_restriction;
pub mod rbac;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    Jwt(#[from] crate::pki::jwt::JwtError),
    #[error("failed to bootstrap the default RBAC objects: {0}")]
    Bootstrap(String),
}
