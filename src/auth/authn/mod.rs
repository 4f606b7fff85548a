//! Who is asking: x509 client certificates, bootstrap tokens and
//! ServiceAccount JWTs, tried in that order as kube's union authenticator.
//!
//! - x509: the TLS layer already verified the chain against the client CA;
//!   the leaf's CN is the user and each O a group.
//! - `Authorization: Bearer <id>.<secret>`: the kube-system Secret
//!   `bootstrap-token-<id>` (type `bootstrap.kubernetes.io/token`) must
//!   exist, not be deleting, allow `usage-bootstrap-authentication`, not be
//!   expired and hold that secret; the user is `system:bootstrap:<id>` in
//!   `system:bootstrappers` and the Secret's `auth-extra-groups`.
//! - `Authorization: Bearer <JWT>`: see `jwt`; then the ServiceAccount
//!   (and the bound pod or secret) must still exist with the uid the token
//!   names. User `system:serviceaccount:<ns>:<name>` with its uid, groups
//!   `system:serviceaccounts` and `system:serviceaccounts:<ns>`, and the
//!   pod/node/credential-id extras.
//!
//! Every authenticated user also gets `system:authenticated`.
//! PARTIAL: legacy (Secret-based, unbound) ServiceAccount tokens are not
//! accepted; no OIDC, webhook or basic auth.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::apiserver::auth::{Authenticator, Authn, AuthnRequest, UserInfo};
use crate::pki::bootstrap::is_bootstrap_token_format;
use crate::pki::BootstrapToken;
use crate::store::Store;

use crate::pki::jwt::{Claims, TokenKeys};

pub use crate::apiserver::auth::{AUTHENTICATED, SERVICE_ACCOUNTS};
pub const BOOTSTRAPPERS: &str = "system:bootstrappers";

/// How many entries each verification cache holds before it is emptied.
const CACHE_CAP: usize = 4096;

/// The real authenticator `rk3s server` uses.
///
/// Parsing a certificate and checking an ES256 signature are the costly
/// steps (tens of µs), so their results are cached: the identity of a
/// certificate by its DER bytes (the TLS layer verified it), and the claims
/// of a token whose signature checked out by the token text. The cheap
/// checks (expiry, the bound objects still existing) run on every request,
/// so a deleted pod or ServiceAccount revokes its tokens at once.
pub struct ClusterAuthenticator {
    store: Arc<dyn Store>,
    tokens: Arc<TokenKeys>,
    identities: Mutex<HashMap<Vec<u8>, UserInfo>>,
    verified: Mutex<HashMap<String, Claims>>,
}

/// Looks `key` up in `cache`, filling it with `make` on a miss.
fn cached<K: std::hash::Hash + Eq, V: Clone>(
    cache: &Mutex<HashMap<K, V>>,
    key: K,
    make: impl FnOnce() -> Option<V>,
) -> Option<V> {
    if let Some(v) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Some(v.clone());
    }
    let v = make()?;
    let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
    if c.len() >= CACHE_CAP {
        c.clear();
    }
    c.insert(key, v.clone());
    Some(v)
}

fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

fn with_authenticated(mut u: UserInfo) -> UserInfo {
    if !u.groups.iter().any(|g| g == AUTHENTICATED) {
        u.groups.push(AUTHENTICATED.into());
    }
    u
}

/// `Bearer <token>` (the scheme is case-insensitive, as in kube).
pub fn bearer_token(headers: &http::HeaderMap) -> Option<Result<&str, ()>> {
    let v = headers.get(http::header::AUTHORIZATION)?;
    let Ok(s) = v.to_str() else {
        return Some(Err(()));
    };
    let (scheme, token) = s.trim().split_once(' ').unwrap_or((s, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Some(Err(()));
    }
    let token = token.trim();
    Some(if token.is_empty() { Err(()) } else { Ok(token) })
}

impl ClusterAuthenticator {
    pub fn new(store: Arc<dyn Store>, tokens: Arc<TokenKeys>) -> Self {
        ClusterAuthenticator {
            store,
            tokens,
            identities: Mutex::new(HashMap::new()),
            verified: Mutex::new(HashMap::new()),
        }
    }

    fn object(&self, key: &str) -> Option<Value> {
        let rec = self.store.get(key).ok()??;
        serde_json::from_slice(&rec.value).ok()
    }

    /// A bootstrap token `id.secret`, checked against its Secret.
    pub fn bootstrap_token(&self, token: &str) -> Result<UserInfo, String> {
        let (id, secret) = token.split_once('.').ok_or("malformed bootstrap token")?;
        let stored = self
            .object(&format!(
                "/registry/secrets/kube-system/bootstrap-token-{id}"
            ))
            .ok_or("no such bootstrap token")?;
        if stored.pointer("/metadata/deletionTimestamp").is_some() {
            return Err("the bootstrap token is being deleted".into());
        }
        let bt = BootstrapToken::from_secret_json(&stored).map_err(|e| e.to_string())?;
        if !bt.secret_matches(secret) {
            return Err("wrong bootstrap token secret".into());
        }
        if bt.is_expired(chrono::Utc::now()) {
            return Err("the bootstrap token has expired".into());
        }
        if !bt.usages.iter().any(|u| u == "authentication") {
            return Err("the bootstrap token is not for authentication".into());
        }
        let mut groups = vec![BOOTSTRAPPERS.to_string()];
        for g in &bt.groups {
            // kube only honours extra groups under system:bootstrappers:.
            if g.starts_with("system:bootstrappers:") && !groups.contains(g) {
                groups.push(g.clone());
            }
        }
        Ok(UserInfo {
            name: bt.user_name(),
            groups,
            ..Default::default()
        })
    }

    fn live_uid(&self, key: &str) -> Option<String> {
        let obj = self.object(key)?;
        if obj.pointer("/metadata/deletionTimestamp").is_some() {
            return None;
        }
        obj.pointer("/metadata/uid")?.as_str().map(str::to_string)
    }

    /// A ServiceAccount JWT with the objects it is bound to still there.
    pub fn service_account_token(&self, token: &str) -> Result<UserInfo, String> {
        let now = now_unix();
        let hit = match self
            .verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
        {
            Some(c) if now <= c.exp + crate::pki::jwt::LEEWAY_SECS => Some(c.clone()),
            _ => None,
        };
        let claims = match hit {
            Some(c) => c,
            None => {
                let c = self
                    .tokens
                    .verify(token, &self.tokens.api_audiences, now)
                    .map_err(|e| e.to_string())?;
                cached(&self.verified, token.to_string(), || Some(c.clone()));
                c
            }
        };
        self.check_bound_objects(&claims)?;
        Ok(service_account_user(&claims))
    }

    fn check_bound_objects(&self, c: &Claims) -> Result<(), String> {
        let k = &c.kubernetes;
        let ns = &k.namespace;
        let expect = |resource: &str, r: &crate::pki::jwt::ObjectRef| -> Result<(), String> {
            match self.live_uid(&format!("/registry/{resource}/{ns}/{}", r.name)) {
                Some(uid) if uid == r.uid => Ok(()),
                Some(_) => Err(format!("the {resource} {ns}/{} was recreated", r.name)),
                None => Err(format!("the {resource} {ns}/{} no longer exists", r.name)),
            }
        };
        expect("serviceaccounts", &k.serviceaccount)?;
        if let Some(p) = &k.pod {
            expect("pods", p)?;
        }
        if let Some(s) = &k.secret {
            expect("secrets", s)?;
        }
        Ok(())
    }

    /// Authenticates a bearer token for TokenReview (`audiences` empty: the API's).
    pub fn review_token(
        &self,
        token: &str,
        audiences: &[String],
    ) -> Result<(UserInfo, Vec<String>), String> {
        let api = &self.tokens.api_audiences;
        let wanted: &[String] = if audiences.is_empty() { api } else { audiences };
        if is_bootstrap_token_format(token) {
            // Bootstrap tokens have no audience: they are good for the API only.
            if !wanted.iter().any(|a| api.contains(a)) {
                return Err("token audiences are not accepted".into());
            }
            return self
                .bootstrap_token(token)
                .map(|u| (with_authenticated(u), api.clone()));
        }
        let claims = self
            .tokens
            .verify(token, wanted, now_unix())
            .map_err(|e| e.to_string())?;
        self.check_bound_objects(&claims)?;
        let aud = claims
            .aud
            .iter()
            .filter(|a| wanted.contains(a))
            .cloned()
            .collect();
        Ok((with_authenticated(service_account_user(&claims)), aud))
    }
}

/// The user a verified ServiceAccount token stands for.
pub fn service_account_user(c: &Claims) -> UserInfo {
    let k = &c.kubernetes;
    let mut extra = std::collections::BTreeMap::new();
    if let Some(p) = &k.pod {
        extra.insert(
            "authentication.kubernetes.io/pod-name".into(),
            vec![p.name.clone()],
        );
        extra.insert(
            "authentication.kubernetes.io/pod-uid".into(),
            vec![p.uid.clone()],
        );
    }
    if let Some(n) = &k.node {
        extra.insert(
            "authentication.kubernetes.io/node-name".into(),
            vec![n.name.clone()],
        );
        extra.insert(
            "authentication.kubernetes.io/node-uid".into(),
            vec![n.uid.clone()],
        );
    }
    extra.insert(
        "authentication.kubernetes.io/credential-id".into(),
        vec![format!("JTI={}", c.jti)],
    );
    UserInfo {
        name: format!(
            "system:serviceaccount:{}:{}",
            k.namespace, k.serviceaccount.name
        ),
        uid: k.serviceaccount.uid.clone(),
        groups: vec![
            SERVICE_ACCOUNTS.into(),
            format!("{SERVICE_ACCOUNTS}:{}", k.namespace),
        ],
        extra,
    }
}

impl Authenticator for ClusterAuthenticator {
    fn authenticate(&self, req: &AuthnRequest<'_>) -> Authn {
        if let Some(leaf) = req.peer_certificates.and_then(|c| c.first()) {
            let identity = cached(&self.identities, leaf.as_ref().to_vec(), || {
                crate::pki::client_identity(leaf).map(|id| UserInfo {
                    name: id.name,
                    groups: id.groups,
                    ..Default::default()
                })
            });
            return match identity {
                Some(u) => Authn::User(with_authenticated(u)),
                None => Authn::Invalid("the client certificate names no user".into()),
            };
        }
        let token = match bearer_token(req.headers) {
            None => return Authn::Anonymous,
            Some(Err(())) => return Authn::Invalid("malformed Authorization header".into()),
            Some(Ok(t)) => t,
        };
        let result = if is_bootstrap_token_format(token) {
            self.bootstrap_token(token)
        } else {
            self.service_account_token(token)
        };
        match result {
            Ok(u) => Authn::User(with_authenticated(u)),
            Err(why) => {
                tracing::debug!("rejected a bearer token: {why}");
                Authn::Invalid(why)
            }
        }
    }

    fn token_keys(&self) -> Option<&TokenKeys> {
        Some(&self.tokens)
    }

    fn review_token(
        &self,
        token: &str,
        audiences: &[String],
    ) -> Option<Result<(UserInfo, Vec<String>), String>> {
        Some(ClusterAuthenticator::review_token(self, token, audiences))
    }
}

#[cfg(test)]
mod tests;
