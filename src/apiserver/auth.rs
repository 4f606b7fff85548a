//! The authentication and authorization seam. PARTIAL: only the allow-all
//! implementations exist; the PKI/token helpers plug real ones in through
//! `AppState` without touching the handlers.

use http::HeaderMap;

/// Who made a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub groups: Vec<String>,
}

/// What a request wants to do, as RBAC sees it.
#[derive(Clone, Debug)]
pub struct Attributes<'a> {
    pub verb: &'a str,
    pub group: &'a str,
    pub resource: &'a str,
    pub subresource: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
}

pub trait Authenticator: Send + Sync {
    /// `None` is a 401.
    fn authenticate(&self, headers: &HeaderMap) -> Option<UserInfo>;
}

pub trait Authorizer: Send + Sync {
    fn authorize(&self, user: &UserInfo, attrs: &Attributes<'_>) -> bool;
}

/// Everyone is `system:admin` (until authentication lands).
pub struct AllowAll;

impl Authenticator for AllowAll {
    fn authenticate(&self, _headers: &HeaderMap) -> Option<UserInfo> {
        Some(UserInfo {
            name: "system:admin".into(),
            groups: vec!["system:masters".into()],
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
            groups: vec![],
        };
        let a = Attributes {
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
}
