//! The authentication and authorization seam. The real implementations
//! live in `crate::auth` and are handed to the server in `ServeOptions`;
//! [`AllowAll`] is the test/bootstrap stand-in.
//!
//! [`identify`] is what every request goes through (the REST fallback and
//! the non-resource middleware in `server`): authentication, then
//! impersonation (`Impersonate-User`/`-Group`/`-Uid`/`-Extra-*`), each
//! impersonated attribute authorized by the `impersonate` verb.

use std::collections::BTreeMap;

use http::HeaderMap;
use rustls::pki_types::CertificateDer;

/// Who made a request (Kubernetes' `user.Info`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    /// e.g. `authentication.kubernetes.io/pod-name` for bound SA tokens.
    pub extra: BTreeMap<String, Vec<String>>,
}

/// The client certificate chain the TLS handshake verified, put into every
/// request's extensions by the server (absent when none was presented).
#[derive(Clone, Debug)]
pub struct PeerCertificates(pub std::sync::Arc<Vec<CertificateDer<'static>>>);

/// What an authenticator sees of a request.
pub struct AuthnRequest<'a> {
    pub headers: &'a HeaderMap,
    /// The verified client certificate chain, leaf first.
    pub peer_certificates: Option<&'a [CertificateDer<'static>]>,
}

/// The outcome of authenticating one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authn {
    /// Credentials were presented and are good.
    User(UserInfo),
    /// No credentials at all (anonymous).
    Anonymous,
    /// Credentials were presented and are bad: always a 401.
    Invalid(String),
}

/// What a request wants to do, as RBAC sees it.
#[derive(Clone, Debug)]
pub struct Attributes<'a> {
    /// `false` for non-resource URLs (`/api`, `/version`, `/openapi/v3`…),
    /// which RBAC matches by `path` against `nonResourceURLs`.
    pub resource_request: bool,
    pub path: &'a str,
    pub verb: &'a str,
    pub group: &'a str,
    pub resource: &'a str,
    pub subresource: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
}

impl<'a> Attributes<'a> {
    /// A resource request (RBAC matches it by group, resource, subresource,
    /// namespace and name; its path plays no part).
    pub fn resource(
        verb: &'a str,
        group: &'a str,
        resource: &'a str,
        subresource: Option<&'a str>,
        namespace: Option<&'a str>,
        name: Option<&'a str>,
    ) -> Self {
        Attributes {
            resource_request: true,
            path: "",
            verb,
            group,
            resource,
            subresource,
            namespace,
            name,
        }
    }

    /// A request for the non-resource URL `path`.
    pub fn non_resource(verb: &'a str, path: &'a str) -> Self {
        Attributes {
            resource_request: false,
            path,
            verb,
            group: "",
            resource: "",
            subresource: None,
            namespace: None,
            name: None,
        }
    }
}

pub trait Authenticator: Send + Sync {
    fn authenticate(&self, req: &AuthnRequest<'_>) -> Authn;
    /// The ServiceAccount token keys (for TokenRequest), if this
    /// authenticator accepts ServiceAccount tokens.
    fn token_keys(&self) -> Option<&crate::pki::jwt::TokenKeys> {
        None
    }
    /// Authenticates a bearer token for TokenReview: the user and the
    /// audiences it is good for, or why not. `None`: tokens are not supported.
    fn review_token(
        &self,
        _token: &str,
        _audiences: &[String],
    ) -> Option<Result<(UserInfo, Vec<String>), String>> {
        None
    }
}

/// One `rules[]` entry of a Role or ClusterRole (what SelfSubjectRulesReview
/// lists; RBAC in `crate::auth::rbac::rules` matches them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyRule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

pub trait Authorizer: Send + Sync {
    fn authorize(&self, user: &UserInfo, attrs: &Attributes<'_>) -> bool;
    /// The rules `user` holds in `namespace` (cluster-wide included), for
    /// SelfSubjectRulesReview, and whether the list is incomplete (another
    /// authorizer, such as the Node one, decides without rules). `None`:
    /// this authorizer cannot list rules.
    fn rules_in(
        &self,
        _user: &UserInfo,
        _namespace: &str,
    ) -> Option<(Vec<PolicyRule>, bool)> {
        None
    }
}

pub const ANONYMOUS: &str = "system:anonymous";
pub const UNAUTHENTICATED: &str = "system:unauthenticated";
pub const AUTHENTICATED: &str = "system:authenticated";
pub const SERVICE_ACCOUNTS: &str = "system:serviceaccounts";

/// The user an anonymous request is authorized as.
pub fn anonymous_user() -> UserInfo {
    UserInfo {
        name: ANONYMOUS.into(),
        groups: vec![UNAUTHENTICATED.into()],
        ..Default::default()
    }
}

/// Authenticates a request and applies impersonation: `Ok(None)` when no
/// credentials came (the caller decides whether anonymous may proceed),
/// 401 for bad credentials, 403 for a forbidden impersonation.
pub fn identify(
    authenticator: &dyn Authenticator,
    authorizer: &dyn Authorizer,
    headers: &HeaderMap,
    peer_certificates: Option<&[CertificateDer<'static>]>,
) -> Result<Option<UserInfo>, super::status::ApiStatus> {
    let user = match authenticator.authenticate(&AuthnRequest {
        headers,
        peer_certificates,
    }) {
        Authn::User(u) => u,
        Authn::Anonymous => {
            if super::impersonation::requested(headers) {
                return Err(super::status::ApiStatus::unauthorized());
            }
            return Ok(None);
        }
        Authn::Invalid(_) => return Err(super::status::ApiStatus::unauthorized()),
    };
    super::impersonation::apply(authorizer, user, headers).map(Some)
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

/// Everyone is `system:admin` (until authentication lands).
pub struct AllowAll;

impl Authenticator for AllowAll {
    fn authenticate(&self, _req: &AuthnRequest<'_>) -> Authn {
        Authn::User(UserInfo {
            name: "system:admin".into(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
            ..Default::default()
        })
    }
}

impl Authorizer for AllowAll {
    fn authorize(&self, _user: &UserInfo, _attrs: &Attributes<'_>) -> bool {
        true
    }
}

/// kube-apiserver's Forbidden wording for a denied request.
pub fn forbidden_message(user: &UserInfo, a: &Attributes<'_>) -> String {
    let res = match a.subresource {
        Some(s) => format!("{}/{}", a.resource, s),
        None => a.resource.to_string(),
    };
    let subject = match a.name {
        Some(n) if a.group.is_empty() => format!("{} \"{n}\"", a.resource),
        Some(n) => format!("{}.{} \"{n}\"", a.resource, a.group),
        None if a.group.is_empty() => a.resource.to_string(),
        None => format!("{}.{}", a.resource, a.group),
    };
    let scope = match a.namespace {
        Some(ns) => format!(" in the namespace \"{ns}\""),
        None => " at the cluster scope".to_string(),
    };
    format!(
        "{subject} is forbidden: User \"{}\" cannot {} resource \"{res}\" in API group \"{}\"{scope}",
        user.name, a.verb, a.group
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_wording() {
        let u = UserInfo {
            name: "bob".into(),
            ..Default::default()
        };
        let a = Attributes {
            resource_request: true,
            path: "/api/v1/namespaces/d/pods/x",
            verb: "get",
            group: "",
            resource: "pods",
            subresource: None,
            namespace: Some("d"),
            name: Some("x"),
        };
        assert_eq!(
            forbidden_message(&u, &a),
            "pods \"x\" is forbidden: User \"bob\" cannot get resource \"pods\" in API group \"\" in the namespace \"d\""
        );
    }

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
