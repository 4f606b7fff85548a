//! Who may ask the join endpoints for certificates, and the node-password check.
//!
//! Accepted credentials, as k3s accepts them on its supervisor port:
//! - the server token: HTTP basic auth `node:<secret>` (any user name: k3s agents send `node`,
//!   servers `server`), or `Authorization: Bearer <secret>`;
//! - a bootstrap token `<id>.<secret>` as the basic-auth password or a bearer token, valid when
//!   Secret `kube-system/bootstrap-token-<id>` exists, its secret matches, it has not expired
//!   and it allows `authentication`;
//! - a kubelet client certificate (`system:node:<name>`, group `system:nodes`) the TLS layer
//!   verified, for renewing that same node's certificates.
//!
//! Node passwords: the first certificate request for a node stores a hash of its password in
//! Secret `kube-system/<node>.node-password.rk3s`; later requests must present the same password.
//! The Secret is written straight into the store, shaped as the API server would store it.
//!
//! Partial: the Secret is not deleted when its Node is (k3s has a controller for that), so a
//! reinstalled machine with a lost password file needs the Secret deleted by hand; there is no
//! rate limit on failed attempts.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use http::{HeaderMap, StatusCode};
use serde_json::{json, Value};

use crate::apiserver::auth::PeerCertificates;
use crate::apiserver::objects;
use crate::pki::{self, BootstrapToken};
use crate::store::{Store, StoreError};

/// The namespace of bootstrap-token and node-password Secrets.
pub const KUBE_SYSTEM: &str = "kube-system";
/// The Secret type of node-password Secrets.
pub const NODE_PASSWORD_TYPE: &str = "rk3s.io/node-password";

/// The store key of a Secret, as `apiserver::keys` lays it out.
pub fn secret_key(namespace: &str, name: &str) -> String {
    format!("/registry/secrets/{namespace}/{name}")
}

/// A refused request: the status and a message the agent prints as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
}

impl Refusal {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Refusal {
            status,
            message: message.into(),
        }
    }
    fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }
    fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl axum::response::IntoResponse for Refusal {
    fn into_response(self) -> axum::response::Response {
        let mut message = self.message;
        message.push('\n');
        (
            self.status,
            [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            message,
        )
            .into_response()
    }
}

/// Who passed authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Presented the server token.
    ServerToken,
    /// Presented bootstrap token `<id>.…`.
    Bootstrap { id: String },
    /// Presented the kubelet client certificate of this node.
    Node { name: String },
}

/// Checks a request's credentials. `server_secret` is `None` when the server token could not be
/// loaded, which then refuses every server-token request.
pub fn authenticate(
    store: &dyn Store,
    server_secret: Option<&str>,
    headers: &HeaderMap,
    peer: Option<&PeerCertificates>,
) -> Result<Caller, Refusal> {
    if let Some(value) = headers.get(http::header::AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| Refusal::unauthorized("the Authorization header is not ASCII"))?;
        let secret = presented_secret(value)?;
        return check_secret(store, server_secret, &secret);
    }
    if let Some(leaf) = peer.and_then(|p| p.0.first()) {
        if let Some(user) = pki::client_identity(leaf) {
            if let Some(name) = user.name.strip_prefix("system:node:") {
                if user.groups.iter().any(|g| g == "system:nodes") {
                    return Ok(Caller::Node {
                        name: name.to_string(),
                    });
                }
            }
        }
    }
    Err(Refusal::unauthorized(
        "no credentials: send the join token (basic auth node:<token> or a bearer token)",
    ))
}

/// The secret in `Basic base64(user:secret)` or `Bearer secret`.
fn presented_secret(header: &str) -> Result<String, Refusal> {
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = BASE64
            .decode(rest)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| Refusal::unauthorized("malformed basic credentials"))?;
        let (_user, secret) = decoded
            .split_once(':')
            .ok_or_else(|| Refusal::unauthorized("malformed basic credentials"))?;
        Ok(secret.to_string())
    } else if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
        Ok(rest.to_string())
    } else {
        Err(Refusal::unauthorized(
            "unsupported Authorization scheme: use Basic or Bearer",
        ))
    }
}

fn check_secret(
    store: &dyn Store,
    server_secret: Option<&str>,
    secret: &str,
) -> Result<Caller, Refusal> {
    if pki::bootstrap::is_bootstrap_token_format(secret) {
        return check_bootstrap_token(store, secret, chrono::Utc::now());
    }
    match server_secret {
        Some(expected) if constant_time_eq(expected.as_bytes(), secret.as_bytes()) => {
            Ok(Caller::ServerToken)
        }
        _ => Err(Refusal::unauthorized(
            "the token is not this server's token: use the token in /var/lib/rk3s/server/token \
             on the server, or one made with `rk3s token create`",
        )),
    }
}

/// Checks `<id>.<secret>` against its bootstrap-token Secret.
pub fn check_bootstrap_token(
    store: &dyn Store,
    token: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Caller, Refusal> {
    let (id, secret) = token.split_once('.').unwrap_or((token, ""));
    let refused = |why: &str| Refusal::unauthorized(format!("bootstrap token {id} {why}"));
    let key = secret_key(KUBE_SYSTEM, &format!("bootstrap-token-{id}"));
    let record = store
        .get(&key)
        .map_err(|e| Refusal::internal(format!("failed to read bootstrap token {id}: {e}")))?
        .ok_or_else(|| refused("does not exist (deleted, or never created)"))?;
    let value: Value = serde_json::from_slice(&record.value)
        .map_err(|e| Refusal::internal(format!("failed to decode {key}: {e}")))?;
    let stored = BootstrapToken::from_secret_json(&value)
        .map_err(|e| refused(&format!("is stored badly: {e}")))?;
    if !stored.secret_matches(secret) {
        return Err(refused("has a different secret"));
    }
    if stored.is_expired(now) {
        return Err(refused(
            "has expired: create a new one with `rk3s token create`",
        ));
    }
    if !stored.usages.iter().any(|u| u == "authentication") {
        return Err(refused("is not allowed for authentication"));
    }
    Ok(Caller::Bootstrap { id: stored.id })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks `password` for `node`, storing its hash on the node's first join. Slow on purpose
/// (PBKDF2): call it from a blocking thread.
pub fn check_node_password(store: &dyn Store, node: &str, password: &str) -> Result<(), Refusal> {
    if password.is_empty() {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "the rk3s-Node-Password header is missing",
        ));
    }
    let name = pki::node_password_secret_name(node);
    let key = secret_key(KUBE_SYSTEM, &name);
    // Two attempts: a concurrent first join of the same node may create the Secret in between.
    for _ in 0..2 {
        let existing = store
            .get(&key)
            .map_err(|e| Refusal::internal(format!("failed to read Secret {name}: {e}")))?;
        match existing {
            Some(record) => {
                let value: Value = serde_json::from_slice(&record.value)
                    .map_err(|e| Refusal::internal(format!("failed to decode {key}: {e}")))?;
                let hash = value
                    .pointer("/data/hash")
                    .and_then(Value::as_str)
                    .and_then(|b| BASE64.decode(b).ok())
                    .and_then(|b| String::from_utf8(b).ok())
                    .unwrap_or_default();
                return if pki::verify_node_password(password, &hash) {
                    Ok(())
                } else {
                    Err(Refusal::new(
                        StatusCode::FORBIDDEN,
                        format!(
                            "node {node:?} already joined with another node password: another \
                             machine is using the name {node}, or this machine lost its password \
                             file (/etc/rk3s/node/password). Give this machine another \
                             --node-name, or, if it really replaces {node}, delete the old \
                             password with `kubectl -n kube-system delete secret {name}`"
                        ),
                    ))
                };
            }
            None => {
                let secret = node_password_secret(node, &pki::hash_node_password(password));
                match store.create(&key, &objects::to_stored(&secret)) {
                    Ok(_) => {
                        tracing::info!(node = %node, "stored the password hash of a new node");
                        return Ok(());
                    }
                    Err(StoreError::AlreadyExists { .. }) => continue,
                    Err(e) => {
                        return Err(Refusal::internal(format!(
                            "failed to store Secret {name}: {e}"
                        )))
                    }
                }
            }
        }
    }
    Err(Refusal::internal(format!(
        "failed to store Secret {name}: it keeps changing"
    )))
}

/// The node-password Secret as the API server stores it.
fn node_password_secret(node: &str, hash: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": pki::node_password_secret_name(node),
            "namespace": KUBE_SYSTEM,
            "uid": uuid::Uuid::new_v4().to_string(),
            "creationTimestamp": objects::now_rfc3339(),
            "labels": {"rk3s.io/node-name": node},
        },
        "immutable": true,
        "type": NODE_PASSWORD_TYPE,
        "data": {"hash": BASE64.encode(hash)},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{SqliteStore, StoreOptions};

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), StoreOptions::default()).unwrap();
        (dir, store)
    }

    fn basic(user: &str, pass: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = format!("Basic {}", BASE64.encode(format!("{user}:{pass}")));
        h.insert(http::header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn secret_keys_follow_the_api_layout() {
        let registry = crate::apiserver::builtin::builtin_registry();
        let def = registry.lookup("", "v1", "secrets").unwrap();
        assert_eq!(
            secret_key("kube-system", "x"),
            crate::apiserver::keys::object_key(&def, Some("kube-system"), "x")
        );
    }

    #[test]
    fn server_token_and_bootstrap_tokens() {
        let (_d, store) = store();
        let ok = authenticate(&store, Some("s3cret"), &basic("node", "s3cret"), None);
        assert_eq!(ok, Ok(Caller::ServerToken));
        let bad = authenticate(&store, Some("s3cret"), &basic("node", "nope"), None).unwrap_err();
        assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
        let none = authenticate(&store, Some("s3cret"), &HeaderMap::new(), None).unwrap_err();
        assert!(none.message.contains("no credentials"), "{none:?}");
        // No server token loaded: nothing matches.
        assert!(authenticate(&store, None, &basic("node", "s3cret"), None).is_err());

        let token = BootstrapToken::generate(Some(std::time::Duration::from_secs(600)));
        let missing = authenticate(&store, None, &basic("node", &token.token()), None).unwrap_err();
        assert!(missing.message.contains("does not exist"), "{missing:?}");
        store
            .create(
                &secret_key(KUBE_SYSTEM, &token.secret_name()),
                &objects::to_stored(&token.to_secret_json()),
            )
            .unwrap();
        let mut bearer = HeaderMap::new();
        bearer.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {}", token.token()).parse().unwrap(),
        );
        assert_eq!(
            authenticate(&store, None, &bearer, None),
            Ok(Caller::Bootstrap {
                id: token.id.clone()
            })
        );
        let later = chrono::Utc::now() + chrono::Duration::seconds(601);
        let expired = check_bootstrap_token(&store, &token.token(), later).unwrap_err();
        assert!(expired.message.contains("has expired"), "{expired:?}");
        let wrong = format!("{}.0000000000000000", token.id);
        assert!(check_bootstrap_token(&store, &wrong, chrono::Utc::now()).is_err());
    }

    #[test]
    fn node_password_is_stored_then_enforced() {
        let (_d, store) = store();
        check_node_password(&store, "pi-1", "first").unwrap();
        check_node_password(&store, "pi-1", "first").unwrap();
        let err = check_node_password(&store, "pi-1", "second").unwrap_err();
        assert_eq!(err.status, StatusCode::FORBIDDEN);
        assert!(err.message.contains("\"pi-1\""), "{}", err.message);
        check_node_password(&store, "pi-2", "second").unwrap();
        let stored = store
            .get(&secret_key(KUBE_SYSTEM, "pi-1.node-password.rk3s"))
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_slice(&stored.value).unwrap();
        assert_eq!(v["type"], NODE_PASSWORD_TYPE);
        assert!(v.pointer("/metadata/resourceVersion").is_none());
        assert!(v.pointer("/metadata/uid").is_some());
        assert_eq!(
            check_node_password(&store, "pi-3", "").unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
    }
}
