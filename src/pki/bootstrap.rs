//! Bootstrap tokens for `rk3s token create|list|delete`, stored as Kubernetes bootstrap-token
//! Secrets exactly as kubeadm and k3s store them.
//!
//! A token is `<id>.<secret>` with `id` matching `[a-z0-9]{6}` and `secret` `[a-z0-9]{16}`. It is
//! kept in Secret `kube-system/bootstrap-token-<id>` of type `bootstrap.kubernetes.io/token`
//! whose `data` holds `token-id`, `token-secret`, optional `expiration` (RFC 3339),
//! `usage-bootstrap-authentication`/`usage-bootstrap-signing` (`"true"`), `auth-extra-groups`
//! (comma-separated) and optional `description`. Agents present it as the password of a join
//! token (`K10<hash>::<id>.<secret>`) and authenticate as `system:bootstrap:<id>`.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

use super::token::random_bytes;
use super::PkiError;

/// The group k3s puts node-join bootstrap tokens in, with our program name.
pub const DEFAULT_GROUP: &str = "system:bootstrappers:rk3s:default-node-token";
/// The Secret type of bootstrap tokens.
pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// `rk3s token create`'s default TTL, as in k3s.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);

const ID_LEN: usize = 6;
const SECRET_LEN: usize = 16;

/// A bootstrap token and its Secret's metadata.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    pub id: String,
    pub secret: String,
    /// `None`: never expires.
    pub expiration: Option<DateTime<Utc>>,
    pub description: Option<String>,
    /// Usages without the `usage-bootstrap-` prefix: `authentication`, `signing`.
    pub usages: Vec<String>,
    pub groups: Vec<String>,
}

impl std::fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootstrapToken")
            .field("id", &self.id)
            .field("secret", &"[redacted]")
            .field("expiration", &self.expiration)
            .field("usages", &self.usages)
            .field("groups", &self.groups)
            .finish()
    }
}

/// Whether `s` is `[a-z0-9]{6}.[a-z0-9]{16}`.
pub fn is_bootstrap_token_format(s: &str) -> bool {
    match s.split_once('.') {
        Some((id, secret)) => {
            id.len() == ID_LEN
                && secret.len() == SECRET_LEN
                && id.bytes().chain(secret.bytes()).all(is_token_char)
        }
        None => false,
    }
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `n` random characters from `[a-z0-9]`, unbiased (rejection sampling).
fn random_token_chars(n: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(n);
    while out.len() < n {
        for b in random_bytes::<32>() {
            // 252 = 7 * 36: bytes above it would favour the first characters.
            if b < 252 && out.len() < n {
                out.push(ALPHABET[(b % 36) as usize] as char);
            }
        }
    }
    out
}

impl BootstrapToken {
    /// A fresh token valid for `ttl` from now (`None` or zero: never expires), usable for
    /// authentication and signing, in [`DEFAULT_GROUP`].
    pub fn generate(ttl: Option<Duration>) -> BootstrapToken {
        let expiration = ttl
            .filter(|d| !d.is_zero())
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .map(|d| Utc::now() + d);
        BootstrapToken {
            id: random_token_chars(ID_LEN),
            secret: random_token_chars(SECRET_LEN),
            expiration,
            description: None,
            usages: vec!["authentication".into(), "signing".into()],
            groups: vec![DEFAULT_GROUP.into()],
        }
    }

    /// Splits `id.secret`, checking the format; the other fields get [`Self::generate`]'s
    /// defaults with no expiry (used by `rk3s token create <token>`).
    pub fn parse(token: &str) -> Result<BootstrapToken, PkiError> {
        let token = token.trim();
        if !is_bootstrap_token_format(token) {
            return Err(PkiError::InvalidBootstrapToken(format!(
                "{token:?} does not match [a-z0-9]{{6}}.[a-z0-9]{{16}}"
            )));
        }
        let (id, secret) = token.split_once('.').expect("format checked");
        let mut parsed = BootstrapToken::generate(None);
        parsed.id = id.to_string();
        parsed.secret = secret.to_string();
        Ok(parsed)
    }

    /// `id.secret`.
    pub fn token(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }

    /// `bootstrap-token-<id>`.
    pub fn secret_name(&self) -> String {
        format!("bootstrap-token-{}", self.id)
    }

    /// The user a request authenticated with this token acts as.
    pub fn user_name(&self) -> String {
        format!("system:bootstrap:{}", self.id)
    }

    /// Whether the token has expired at `now`.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expiration.is_some_and(|exp| now >= exp)
    }

    /// Whether a presented secret matches, in constant time.
    pub fn secret_matches(&self, presented: &str) -> bool {
        let (a, b) = (self.secret.as_bytes(), presented.as_bytes());
        // The length is public (always 16); only the contents must not leak through timing.
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// The `v1/Secret` object that stores this token, `data` base64-encoded.
    pub fn to_secret_json(&self) -> Value {
        let mut data = Map::new();
        let mut put = |k: &str, v: &str| {
            data.insert(k.to_string(), Value::String(BASE64.encode(v)));
        };
        put("token-id", &self.id);
        put("token-secret", &self.secret);
        if let Some(exp) = self.expiration {
            put(
                "expiration",
                &exp.to_rfc3339_opts(SecondsFormat::Secs, true),
            );
        }
        if let Some(desc) = &self.description {
            put("description", desc);
        }
        for usage in &self.usages {
            put(&format!("usage-bootstrap-{usage}"), "true");
        }
        if !self.groups.is_empty() {
            put("auth-extra-groups", &self.groups.join(","));
        }
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": self.secret_name(), "namespace": "kube-system"},
            "type": SECRET_TYPE,
            "data": data,
        })
    }

    /// Reads a bootstrap-token Secret (`data` base64, or `stringData`), checking its type, name
    /// and token format.
    pub fn from_secret_json(secret: &Value) -> Result<BootstrapToken, PkiError> {
        let bad = |why: String| PkiError::InvalidBootstrapToken(why);
        if secret.get("type").and_then(Value::as_str) != Some(SECRET_TYPE) {
            return Err(bad(format!("the Secret's type is not {SECRET_TYPE}")));
        }
        let meta = secret.get("metadata");
        if let Some(ns) = meta
            .and_then(|m| m.get("namespace"))
            .and_then(Value::as_str)
        {
            if ns != "kube-system" {
                return Err(bad(format!(
                    "bootstrap tokens live in kube-system, not {ns}"
                )));
            }
        }
        let field = |key: &str| -> Result<Option<String>, PkiError> {
            if let Some(v) = secret
                .get("data")
                .and_then(|d| d.get(key))
                .and_then(Value::as_str)
            {
                let bytes = BASE64
                    .decode(v)
                    .map_err(|e| bad(format!("data.{key} is not base64: {e}")))?;
                return String::from_utf8(bytes)
                    .map(Some)
                    .map_err(|_| bad(format!("data.{key} is not UTF-8")));
            }
            Ok(secret
                .get("stringData")
                .and_then(|d| d.get(key))
                .and_then(Value::as_str)
                .map(str::to_string))
        };
        let id = field("token-id")?.ok_or_else(|| bad("data.token-id is missing".into()))?;
        let sec =
            field("token-secret")?.ok_or_else(|| bad("data.token-secret is missing".into()))?;
        let mut token = BootstrapToken::parse(&format!("{id}.{sec}"))?;
        let name = meta.and_then(|m| m.get("name")).and_then(Value::as_str);
        if name != Some(token.secret_name().as_str()) {
            return Err(bad(format!(
                "the Secret is named {name:?} but must be {} for token-id {id}",
                token.secret_name()
            )));
        }
        token.expiration = match field("expiration")? {
            None => None,
            Some(text) => Some(
                DateTime::parse_from_rfc3339(&text)
                    .map_err(|e| bad(format!("data.expiration {text:?} is not RFC 3339: {e}")))?
                    .with_timezone(&Utc),
            ),
        };
        token.description = field("description")?;
        let mut usages = Vec::new();
        for usage in ["authentication", "signing"] {
            if field(&format!("usage-bootstrap-{usage}"))?.as_deref() == Some("true") {
                usages.push(usage.to_string());
            }
        }
        token.usages = usages;
        token.groups = field("auth-extra-groups")?
            .map(|g| {
                g.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_have_the_kubeadm_format() {
        for _ in 0..50 {
            let t = BootstrapToken::generate(Some(DEFAULT_TTL));
            assert!(is_bootstrap_token_format(&t.token()), "{}", t.token());
        }
        let a = BootstrapToken::generate(None);
        let b = BootstrapToken::generate(None);
        assert_ne!(a.token(), b.token());
        assert_eq!(a.expiration, None);
    }

    #[test]
    fn format_check() {
        assert!(is_bootstrap_token_format("abcdef.0123456789abcdef"));
        for bad in [
            "abcdef0123456789abcdef",
            "ABCDEF.0123456789abcdef",
            "abcde.0123456789abcdef",
            "abcdef.0123456789abcde_",
        ] {
            assert!(!is_bootstrap_token_format(bad), "{bad}");
            assert!(BootstrapToken::parse(bad).is_err());
        }
    }

    #[test]
    fn secret_json_round_trips() {
        let mut t = BootstrapToken::generate(Some(Duration::from_secs(3600)));
        t.description = Some("for pi-2".into());
        let secret = t.to_secret_json();
        assert_eq!(secret["type"], SECRET_TYPE);
        assert_eq!(
            secret["metadata"]["name"],
            format!("bootstrap-token-{}", t.id)
        );
        assert_eq!(secret["metadata"]["namespace"], "kube-system");
        let groups = BASE64
            .decode(secret["data"]["auth-extra-groups"].as_str().unwrap())
            .unwrap();
        assert_eq!(groups, DEFAULT_GROUP.as_bytes());
        let exp = String::from_utf8(
            BASE64
                .decode(secret["data"]["expiration"].as_str().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert!(exp.ends_with('Z') && exp.len() == 20, "{exp}");

        let back = BootstrapToken::from_secret_json(&secret).unwrap();
        // RFC 3339 with whole seconds drops the sub-second part.
        assert_eq!(
            back.expiration.unwrap().timestamp(),
            t.expiration.unwrap().timestamp()
        );
        assert_eq!(
            (
                back.id,
                back.secret,
                back.usages,
                back.groups,
                back.description
            ),
            (
                t.id.clone(),
                t.secret.clone(),
                t.usages.clone(),
                t.groups.clone(),
                t.description.clone()
            )
        );
    }

    #[test]
    fn from_secret_json_rejects_mismatches() {
        let t = BootstrapToken::generate(None);
        let mut s = t.to_secret_json();
        s["metadata"]["name"] = json!("bootstrap-token-zzzzzz");
        assert!(BootstrapToken::from_secret_json(&s).is_err());
        let mut s = t.to_secret_json();
        s["type"] = json!("Opaque");
        assert!(BootstrapToken::from_secret_json(&s).is_err());
        let s = json!({"type": SECRET_TYPE, "metadata": {"name": "bootstrap-token-abcdef"},
                       "stringData": {"token-id": "abcdef", "token-secret": "0123456789abcdef"}});
        let parsed = BootstrapToken::from_secret_json(&s).unwrap();
        assert!(
            parsed.usages.is_empty() && parsed.groups.is_empty() && parsed.expiration.is_none()
        );
    }

    #[test]
    fn expiry_and_secret_check() {
        let t = BootstrapToken::generate(Some(Duration::from_secs(60)));
        assert!(!t.is_expired(Utc::now()));
        assert!(t.is_expired(Utc::now() + chrono::Duration::seconds(61)));
        assert!(
            !BootstrapToken::generate(None).is_expired(Utc::now() + chrono::Duration::days(10_000))
        );
        assert!(t.secret_matches(&t.secret.clone()));
        assert!(!t.secret_matches("0000000000000000"));
    }
}
