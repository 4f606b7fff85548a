//! Authentication and authorization for the API server, plugged into the
//! `apiserver::auth` seam by `server::assemble`.
//!
//! Map: `authn` (x509 client certificates, bootstrap tokens, ServiceAccount
//! JWTs), `jwt` (ES256 token signing and checks), `impersonation`
//! (`Impersonate-*` headers), `authz` (the chain: `system:masters`, the
//! Node authorizer, RBAC), `node` (the Node authorizer), `node_restriction` (its admission half), `rbac` (the RBAC
//! index and its store-watch cache, `rbac::rules` the matcher), `bootstrap`
//! (the default roles from `embedded/rbac/`), `escalation` (nobody grants
//! RBAC rights they lack), `reviews` (the access, rules, token and
//! self-subject reviews, never stored).
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
pub mod impersonation;
pub mod jwt;
pub mod node;
pub mod node_restriction;
pub mod rbac;
pub mod reviews;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("failed to load the service-account key: {0}")]
    Key(String),
    #[error("invalid token: {0}")]
    InvalidToken(String),
    #[error("failed to bootstrap the default RBAC objects: {0}")]
    Bootstrap(String),
}

/// The object name a list or watch is limited to by a `metadata.name=X`
/// (or `==`) field selector, which kube authorizes as a request on `X`.
pub fn single_object_name<'a>(verb: &str, field_selector: Option<&'a String>) -> Option<&'a str> {
    if !matches!(verb, "list" | "watch") {
        return None;
    }
    let sel = field_selector?.trim();
    let name = sel
        .strip_prefix("metadata.name==")
        .or_else(|| sel.strip_prefix("metadata.name="))?;
    Some(name).filter(|n| !n.is_empty() && !n.contains(','))
}

#[cfg(test)]
mod tests {
    #[test]
    fn single_object_name() {
        let sel = |s: &str| Some(s.to_string());
        assert_eq!(
            super::single_object_name("list", sel("metadata.name=x").as_ref()),
            Some("x")
        );
        assert_eq!(
            super::single_object_name("watch", sel("metadata.name==x").as_ref()),
            Some("x")
        );
        assert_eq!(
            super::single_object_name("get", sel("metadata.name=x").as_ref()),
            None
        );
        assert_eq!(
            super::single_object_name("list", sel("metadata.name=x,a=b").as_ref()),
            None
        );
        assert_eq!(
            super::single_object_name("list", sel("metadata.name!=x").as_ref()),
            None
        );
        assert_eq!(super::single_object_name("list", None), None);
    }
}
