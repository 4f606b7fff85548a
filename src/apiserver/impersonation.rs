//! Impersonation (`kubectl --as`, `--as-group`, `--as-uid`): the
//! `Impersonate-User`, `Impersonate-Group`, `Impersonate-Uid` and
//! `Impersonate-Extra-<key>` headers replace the requester's identity after
//! each is authorized with the `impersonate` verb, as kube-apiserver does:
//! `users` (or `serviceaccounts` for `system:serviceaccount:<ns>:<name>`),
//! `groups`, `uids` in the core group, `userextras/<key>` in
//! `authentication.k8s.io`.

use std::collections::BTreeMap;

use http::HeaderMap;

use super::auth::{
    forbidden_message, Attributes, Authorizer, UserInfo, ANONYMOUS, AUTHENTICATED,
    SERVICE_ACCOUNTS, UNAUTHENTICATED,
};
use super::status::ApiStatus;

const USER: &str = "impersonate-user";
const GROUP: &str = "impersonate-group";
const UID: &str = "impersonate-uid";
const EXTRA: &str = "impersonate-extra-";

/// Whether the request asks to impersonate anyone.
pub fn requested(headers: &HeaderMap) -> bool {
    headers
        .keys()
        .any(|k| matches!(k.as_str(), USER | GROUP | UID) || k.as_str().starts_with(EXTRA))
}

fn values<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect()
}

/// The identity the request acts as: `user` itself when no impersonation
/// headers came, else the impersonated one if `user` may impersonate it.
pub fn apply(
    authorizer: &dyn Authorizer,
    user: UserInfo,
    headers: &HeaderMap,
) -> Result<UserInfo, ApiStatus> {
    if !requested(headers) {
        return Ok(user);
    }
    let Some(name) = values(headers, USER).first().map(|s| s.to_string()) else {
        return Err(ApiStatus::bad_request(
            "impersonation headers need Impersonate-User to be set",
        ));
    };
    let check = |group: &str, resource: &str, namespace: Option<&str>, name: &str| {
        let a = Attributes {
            resource_request: true,
            path: "",
            verb: "impersonate",
            group,
            resource,
            subresource: None,
            namespace,
            name: Some(name),
        };
        if authorizer.authorize(&user, &a) {
            Ok(())
        } else {
            Err(ApiStatus::forbidden_message(forbidden_message(&user, &a)))
        }
    };
    let sa = name
        .strip_prefix("system:serviceaccount:")
        .and_then(|r| r.split_once(':'));
    match sa {
        Some((ns, sa_name)) => check("", "serviceaccounts", Some(ns), sa_name)?,
        None => check("", "users", None, &name)?,
    }
    let mut groups: Vec<String> = Vec::new();
    for g in values(headers, GROUP) {
        check("", "groups", None, g)?;
        groups.push(g.to_string());
    }
    let uid = match values(headers, UID).first() {
        Some(u) => {
            check("", "uids", None, u)?;
            u.to_string()
        }
        None => String::new(),
    };
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in headers.iter() {
        let Some(key) = k.as_str().strip_prefix(EXTRA) else {
            continue;
        };
        let key = percent_encoding::percent_decode_str(key)
            .decode_utf8_lossy()
            .to_string();
        let Ok(v) = v.to_str() else { continue };
        // kube authorizes an extra as resource "userextras", subresource "<key>".
        let a = Attributes {
            resource_request: true,
            path: "",
            verb: "impersonate",
            group: "authentication.k8s.io",
            resource: "userextras",
            subresource: Some(&key),
            namespace: None,
            name: Some(v),
        };
        if !authorizer.authorize(&user, &a) {
            return Err(ApiStatus::forbidden_message(forbidden_message(&user, &a)));
        }
        extra.entry(key).or_default().push(v.to_string());
    }
    if let Some((ns, _)) = sa {
        if groups.is_empty() {
            groups.push(SERVICE_ACCOUNTS.into());
            groups.push(format!("{SERVICE_ACCOUNTS}:{ns}"));
        }
    }
    let marker = if name == ANONYMOUS {
        UNAUTHENTICATED
    } else {
        AUTHENTICATED
    };
    if !groups.iter().any(|g| g == marker) {
        groups.push(marker.into());
    }
    Ok(UserInfo {
        name,
        uid,
        groups,
        extra,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Allows only "impersonate users/bob" and "impersonate groups/devs".
    struct Only;
    impl Authorizer for Only {
        fn authorize(&self, _u: &UserInfo, a: &Attributes<'_>) -> bool {
            a.verb == "impersonate"
                && matches!(
                    (a.resource, a.name),
                    ("users", Some("bob")) | ("groups", Some("devs"))
                )
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn admin() -> UserInfo {
        UserInfo {
            name: "admin".into(),
            ..Default::default()
        }
    }

    #[test]
    fn no_headers_keeps_the_user() {
        assert_eq!(apply(&Only, admin(), &HeaderMap::new()).unwrap(), admin());
    }

    #[test]
    fn allowed_impersonation() {
        let u = apply(
            &Only,
            admin(),
            &headers(&[("Impersonate-User", "bob"), ("Impersonate-Group", "devs")]),
        )
        .unwrap();
        assert_eq!(u.name, "bob");
        assert_eq!(
            u.groups,
            vec!["devs".to_string(), AUTHENTICATED.to_string()]
        );
    }

    #[test]
    fn forbidden_impersonation() {
        let e = apply(&Only, admin(), &headers(&[("Impersonate-User", "carol")])).unwrap_err();
        assert_eq!(e.code, 403);
        let e = apply(
            &Only,
            admin(),
            &headers(&[
                ("Impersonate-User", "bob"),
                ("Impersonate-Group", "system:masters"),
            ]),
        )
        .unwrap_err();
        assert_eq!(e.code, 403);
        let e = apply(&Only, admin(), &headers(&[("Impersonate-Group", "devs")])).unwrap_err();
        assert_eq!(e.code, 400);
    }
}
