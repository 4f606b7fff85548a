//! Credentials from a pod's `imagePullSecrets`: `kubernetes.io/dockerconfigjson`
//! Secrets (`.dockerconfigjson`, `{"auths": {KEY: {…}}}`) and legacy
//! `kubernetes.io/dockercfg` ones (`.dockercfg`, `{KEY: {…}}`).
//!
//! A KEY names a registry as kubelet reads it: a scheme (`https://`,
//! `http://`) and any path are dropped, `host:port` must match exactly, and
//! Docker Hub's names (`docker.io`, `index.docker.io`,
//! `registry-1.docker.io`, `https://index.docker.io/v1/`) all match an
//! image on `docker.io`. An entry gives `username`/`password`, or `auth`
//! (base64 of `user:pass`), or an `identitytoken`.
//!
//! Invariant: the credentials come out in the order of the pod's
//! `imagePullSecrets` (then of the keys in each Secret), the order in
//! which they are tried; a Secret that is malformed or of another type
//! gives none (kubelet skips it too).
//!
//! Partial: kubelet's glob keys (`*.example.com`) and path-prefix matching
//! are not supported; a KEY with a path matches its whole host.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use serde::Deserialize;

use super::Credentials;

/// One `auths` entry; other fields (`email`) are ignored.
#[derive(Default, Deserialize)]
struct Entry {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

#[derive(Deserialize)]
struct DockerConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
}

const DOCKER_HUB: [&str; 3] = ["docker.io", "index.docker.io", "registry-1.docker.io"];

/// `https://index.docker.io/v1/` → `index.docker.io`.
fn key_host(key: &str) -> &str {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    rest.split('/').next().unwrap_or_default()
}

/// Whether a config KEY names the registry `host` (as written in the
/// normalized image name).
pub fn key_matches(key: &str, host: &str) -> bool {
    let key = key_host(key).to_ascii_lowercase();
    let host = host.to_ascii_lowercase();
    key == host || (DOCKER_HUB.contains(&key.as_str()) && DOCKER_HUB.contains(&host.as_str()))
}

fn entry_credentials(e: &Entry) -> Option<Credentials> {
    if let Some(token) = e.identitytoken.as_ref().filter(|t| !t.is_empty()) {
        return Some(Credentials::IdentityToken(token.clone()));
    }
    if let (Some(username), Some(password)) = (&e.username, &e.password) {
        if !username.is_empty() || !password.is_empty() {
            return Some(Credentials::Basic {
                username: username.clone(),
                password: password.clone(),
            });
        }
    }
    decode_auth(e.auth.as_deref()?)
}

/// `auth`: base64 of `user:pass`.
pub fn decode_auth(auth: &str) -> Option<Credentials> {
    use base64::Engine;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .ok()?;
    let (username, password) = String::from_utf8(decoded)
        .ok()?
        .split_once(':')
        .map(|(u, p)| (u.to_string(), p.to_string()))?;
    Some(Credentials::Basic { username, password })
}

/// The `KEY → entry` pairs of one Secret, empty when it is not a docker
/// config Secret or does not parse.
fn entries(secret: &Secret) -> Vec<(String, Entry)> {
    let data = secret.data.as_ref();
    let get = |k: &str| data.and_then(|d| d.get(k)).map(|b| b.0.as_slice());
    let parsed = match secret.type_.as_deref() {
        Some("kubernetes.io/dockerconfigjson") => get(".dockerconfigjson")
            .and_then(|b| serde_json::from_slice::<DockerConfigJson>(b).ok())
            .map(|c| c.auths),
        Some("kubernetes.io/dockercfg") => {
            get(".dockercfg").and_then(|b| serde_json::from_slice(b).ok())
        }
        _ => None,
    };
    parsed.map(|m| m.into_iter().collect()).unwrap_or_default()
}

/// The credentials `secrets` (in the pod's order) give registry `host`.
pub fn credentials_for(host: &str, secrets: &[Secret]) -> Vec<Credentials> {
    let mut out = Vec::new();
    for secret in secrets {
        for (key, entry) in entries(secret) {
            if !key_matches(&key, host) {
                continue;
            }
            if let Some(c) = entry_credentials(&entry) {
                if !out.contains(&c) {
                    out.push(c);
                }
            }
        }
    }
    out
}

/// The credentials for `image` (as written in the pod spec).
pub fn credentials_for_image(image: &str, secrets: &[Secret]) -> Vec<Credentials> {
    let normalized = crate::agent::kubelet::images::normalize(image);
    match super::Reference::parse(&normalized) {
        Some(r) => credentials_for(&r.host, secrets),
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(type_: &str, key: &str, body: &str) -> Secret {
        Secret {
            type_: Some(type_.into()),
            data: Some(BTreeMap::from([(
                key.to_string(),
                ByteString(body.as_bytes().to_vec()),
            )])),
            ..Secret::default()
        }
    }

    fn basic(u: &str, p: &str) -> Credentials {
        Credentials::Basic {
            username: u.into(),
            password: p.into(),
        }
    }

    #[test]
    fn keys_match_as_kubelet_reads_them() {
        assert!(key_matches("127.0.0.1:5000", "127.0.0.1:5000"));
        assert!(key_matches("https://127.0.0.1:5000/v2/", "127.0.0.1:5000"));
        assert!(key_matches("http://Quay.io/some/path", "quay.io"));
        assert!(!key_matches("127.0.0.1:5000", "127.0.0.1"));
        assert!(!key_matches("127.0.0.1", "127.0.0.1:5000"));
        assert!(!key_matches("quay.io", "ghcr.io"));
        for hub in [
            "docker.io",
            "index.docker.io",
            "https://index.docker.io/v1/",
            "registry-1.docker.io",
        ] {
            assert!(key_matches(hub, "docker.io"), "{hub}");
        }
        assert!(!key_matches("docker.io", "quay.io"));
    }

    #[test]
    fn dockerconfigjson_and_dockercfg_in_order() {
        let json = secret(
            "kubernetes.io/dockerconfigjson",
            ".dockerconfigjson",
            r#"{"auths":{
                "https://index.docker.io/v1/":{"auth":"YWxpY2U6czNjcmV0","email":"a@b"},
                "quay.io":{"username":"q","password":"p"},
                "127.0.0.1:5000":{"identitytoken":"tok"}}}"#,
        );
        let cfg = secret(
            "kubernetes.io/dockercfg",
            ".dockercfg",
            r#"{"docker.io":{"username":"bob","password":"pw"}}"#,
        );
        assert_eq!(
            credentials_for("docker.io", &[json.clone(), cfg.clone()]),
            vec![basic("alice", "s3cret"), basic("bob", "pw")]
        );
        assert_eq!(
            credentials_for("docker.io", &[cfg.clone(), json.clone()]),
            vec![basic("bob", "pw"), basic("alice", "s3cret")]
        );
        assert_eq!(
            credentials_for("127.0.0.1:5000", std::slice::from_ref(&json)),
            vec![Credentials::IdentityToken("tok".into())]
        );
        assert_eq!(
            credentials_for_image("busybox", std::slice::from_ref(&cfg)),
            vec![basic("bob", "pw")]
        );
        assert_eq!(
            credentials_for_image("quay.io/a/b:1", std::slice::from_ref(&json)),
            vec![basic("q", "p")]
        );
        assert!(credentials_for("ghcr.io", &[json, cfg]).is_empty());
    }

    #[test]
    fn other_or_malformed_secrets_give_nothing() {
        let opaque = secret(
            "Opaque",
            ".dockerconfigjson",
            r#"{"auths":{"quay.io":{"username":"q","password":"p"}}}"#,
        );
        let broken = secret("kubernetes.io/dockerconfigjson", ".dockerconfigjson", "{");
        let bad_auth = secret(
            "kubernetes.io/dockerconfigjson",
            ".dockerconfigjson",
            r#"{"auths":{"quay.io":{"auth":"not base64!"}}}"#,
        );
        assert!(credentials_for("quay.io", &[opaque, broken, bad_auth]).is_empty());
    }
}
