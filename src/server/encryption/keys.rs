//! The encryption configuration file and the AES-GCM transform.
//!
//! `<data-dir>/server/cred/encryption-config.json` (0600) has kube's
//! `EncryptionConfiguration` shape, as k3s writes it: one resource entry for
//! `secrets` with an ordered provider list. The first provider encrypts new
//! writes; every provider's keys can read. rk3s writes `aesgcm` (kube's
//! AES-GCM provider, 32-byte keys) and `identity`.
//!
//! A value written by key `NAME` is `k8s:enc:aesgcm:v1:NAME:` + a 12-byte
//! random nonce + the AES-256-GCM ciphertext and tag, with the storage key as
//! additional authenticated data (as kube does), so a ciphertext copied under
//! another key does not decrypt. Values without the `k8s:enc:` prefix are
//! plaintext (written before encryption was on).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub const PREFIX: &str = "k8s:enc:";
const GCM_PREFIX: &str = "k8s:enc:aesgcm:v1:";

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum KeyError {
    #[error("failed to parse the encryption configuration: {0}")]
    Parse(String),
    #[error("failed to decrypt {key}: {reason}")]
    Decrypt { key: String, reason: String },
    #[error("failed to encrypt {0}")]
    Encrypt(String),
}

/// One named AES-256 key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedKey {
    pub name: String,
    /// Base64 of 32 bytes.
    pub secret: String,
}

impl std::fmt::Debug for NamedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamedKey").field("name", &self.name).finish_non_exhaustive()
    }
}

/// The providers for Secrets, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provider {
    AesGcm(Vec<NamedKey>),
    Identity,
}

/// The parsed configuration: what writes use and what reads accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySet {
    pub providers: Vec<Provider>,
}

impl Default for KeySet {
    /// Encryption off: plaintext in, plaintext out.
    fn default() -> Self {
        KeySet { providers: vec![Provider::Identity] }
    }
}

impl KeySet {
    /// A fresh configuration with one new key, encrypting.
    pub fn generate() -> Self {
        KeySet { providers: vec![Provider::AesGcm(vec![new_key()]), Provider::Identity] }
    }

    /// Whether new writes are encrypted.
    pub fn enabled(&self) -> bool {
        matches!(self.providers.first(), Some(Provider::AesGcm(k)) if !k.is_empty())
    }

    /// The key new writes use.
    pub fn primary(&self) -> Option<&NamedKey> {
        match self.providers.first() {
            Some(Provider::AesGcm(keys)) => keys.first(),
            _ => None,
        }
    }

    /// Every key, primary first.
    pub fn all_keys(&self) -> Vec<&NamedKey> {
        self.providers
            .iter()
            .flat_map(|p| match p {
                Provider::AesGcm(keys) => keys.iter().collect(),
                Provider::Identity => Vec::new(),
            })
            .collect()
    }

    /// With a new primary key in front (rotation), old keys kept for reading.
    pub fn with_new_primary(&self) -> Self {
        let mut keys = vec![new_key()];
        keys.extend(self.all_keys().into_iter().cloned());
        KeySet { providers: vec![Provider::AesGcm(keys), Provider::Identity] }
    }

    /// Encryption on (a new key if there is none), old keys kept.
    pub fn enable(&self) -> Self {
        if self.enabled() {
            return self.clone();
        }
        let keys: Vec<NamedKey> = self.all_keys().into_iter().cloned().collect();
        if keys.is_empty() {
            return KeySet::generate();
        }
        KeySet { providers: vec![Provider::AesGcm(keys), Provider::Identity] }
    }

    /// Encryption off: identity first; the keys stay so existing ciphertext reads.
    pub fn disable(&self) -> Self {
        let keys: Vec<NamedKey> = self.all_keys().into_iter().cloned().collect();
        let mut providers = vec![Provider::Identity];
        if !keys.is_empty() {
            providers.push(Provider::AesGcm(keys));
        }
        KeySet { providers }
    }

    /// Only the providers new writes use (after every Secret was rewritten).
    pub fn pruned(&self) -> Self {
        match self.providers.first() {
            Some(Provider::AesGcm(keys)) => KeySet {
                providers: vec![Provider::AesGcm(keys[..1].to_vec()), Provider::Identity],
            },
            _ => KeySet::default(),
        }
    }

    /// Encrypts `plain` for storage key `key` with the primary key (or passes it through).
    pub fn encrypt(&self, key: &str, plain: &[u8]) -> Result<Vec<u8>, KeyError> {
        let Some(primary) = self.primary() else { return Ok(plain.to_vec()) };
        let sealing = aead_key(primary).ok_or_else(|| KeyError::Encrypt(key.into()))?;
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| KeyError::Encrypt(key.into()))?;
        let mut buf = plain.to_vec();
        sealing
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(key.as_bytes()), &mut buf)
            .map_err(|_| KeyError::Encrypt(key.into()))?;
        let mut out = format!("{GCM_PREFIX}{}:", primary.name).into_bytes();
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        Ok(out)
    }

    /// The plaintext of a stored value (plaintext values pass through).
    pub fn decrypt(&self, key: &str, stored: &[u8]) -> Result<Vec<u8>, KeyError> {
        if !stored.starts_with(PREFIX.as_bytes()) {
            return Ok(stored.to_vec());
        }
        let fail = |reason: &str| KeyError::Decrypt { key: key.into(), reason: reason.into() };
        let rest = stored
            .strip_prefix(GCM_PREFIX.as_bytes())
            .ok_or_else(|| fail("it was written by a provider rk3s does not have"))?;
        let colon = rest.iter().position(|b| *b == b':').ok_or_else(|| fail("no key name"))?;
        let name = String::from_utf8_lossy(&rest[..colon]).into_owned();
        let body = &rest[colon + 1..];
        let named = self
            .all_keys()
            .into_iter()
            .find(|k| k.name == name)
            .ok_or_else(|| fail(&format!("key {name:?} is not in the encryption configuration")))?;
        if body.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(fail("the value is too short"));
        }
        let opening = aead_key(named).ok_or_else(|| fail("the key is not 32 bytes of base64"))?;
        let (nonce, sealed) = body.split_at(NONCE_LEN);
        let mut buf = sealed.to_vec();
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| fail("bad nonce"))?;
        let plain = opening
            .open_in_place(nonce, Aad::from(key.as_bytes()), &mut buf)
            .map_err(|_| fail("authentication failed"))?;
        Ok(plain.to_vec())
    }

    /// Whether `stored` is already what a write with the primary key would produce.
    pub fn is_current(&self, stored: &[u8]) -> bool {
        match self.primary() {
            None => !stored.starts_with(PREFIX.as_bytes()),
            Some(k) => stored.starts_with(format!("{GCM_PREFIX}{}:", k.name).as_bytes()),
        }
    }

    /// kube's `EncryptionConfiguration` JSON.
    pub fn to_json(&self) -> String {
        let providers: Vec<Value> = self
            .providers
            .iter()
            .map(|p| match p {
                Provider::AesGcm(keys) => json!({"aesgcm": {"keys": keys}}),
                Provider::Identity => json!({"identity": {}}),
            })
            .collect();
        let doc = json!({
            "kind": "EncryptionConfiguration",
            "apiVersion": "apiserver.config.k8s.io/v1",
            "resources": [{"resources": ["secrets"], "providers": providers}],
        });
        serde_json::to_string_pretty(&doc).expect("JSON serialises")
    }

    pub fn from_json(text: &str) -> Result<Self, KeyError> {
        let doc: Value = serde_json::from_str(text).map_err(|e| KeyError::Parse(e.to_string()))?;
        let entry = doc["resources"]
            .as_array()
            .and_then(|r| r.iter().find(|e| e["resources"].as_array().is_some_and(|l| l.iter().any(|x| x == "secrets"))))
            .ok_or_else(|| KeyError::Parse("no resources entry for secrets".into()))?;
        let mut providers = Vec::new();
        for p in entry["providers"].as_array().into_iter().flatten() {
            if p.get("identity").is_some() {
                providers.push(Provider::Identity);
            } else if let Some(gcm) = p.get("aesgcm") {
                let keys: Vec<NamedKey> = serde_json::from_value(gcm["keys"].clone())
                    .map_err(|e| KeyError::Parse(format!("aesgcm keys: {e}")))?;
                if keys.iter().any(|k| k.name.is_empty() || k.name.contains(':')) {
                    return Err(KeyError::Parse("an aesgcm key name is empty or holds ':'".into()));
                }
                if keys.iter().any(|k| decode_secret(k).is_none()) {
                    return Err(KeyError::Parse("an aesgcm key is not 32 bytes of base64".into()));
                }
                providers.push(Provider::AesGcm(keys));
            } else {
                return Err(KeyError::Parse(format!("unsupported provider {p}; rk3s has aesgcm and identity")));
            }
        }
        if providers.is_empty() {
            return Err(KeyError::Parse("no providers for secrets".into()));
        }
        Ok(KeySet { providers })
    }
}

fn new_key() -> NamedKey {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes).expect("the system RNG works");
    // Key names never hold a colon: it ends the name in the stored prefix.
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.6fZ");
    NamedKey { name: format!("aesgcmkey-{stamp}"), secret: BASE64.encode(bytes) }
}

fn decode_secret(k: &NamedKey) -> Option<Vec<u8>> {
    BASE64.decode(&k.secret).ok().filter(|b| b.len() == 32)
}

fn aead_key(k: &NamedKey) -> Option<LessSafeKey> {
    let bytes = decode_secret(k)?;
    Some(LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &bytes).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_hides_the_value_and_binds_the_key() {
        let ks = KeySet::generate();
        let sealed = ks.encrypt("/registry/secrets/default/a", b"hunter2-plain").unwrap();
        assert!(sealed.starts_with(b"k8s:enc:aesgcm:v1:aesgcmkey-"));
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(ks.decrypt("/registry/secrets/default/a", &sealed).unwrap(), b"hunter2-plain");
        let err = ks.decrypt("/registry/secrets/default/b", &sealed).unwrap_err();
        assert!(err.to_string().contains("authentication failed"), "{err}");
        assert_eq!(ks.decrypt("k", b"{\"plain\":1}").unwrap(), b"{\"plain\":1}");
    }

    #[test]
    fn rotation_reads_old_ciphertext_and_writes_with_the_new_key() {
        let old = KeySet::generate();
        let sealed = old.encrypt("k", b"v").unwrap();
        let rotated = old.with_new_primary();
        assert!(!rotated.is_current(&sealed));
        assert_eq!(rotated.decrypt("k", &sealed).unwrap(), b"v");
        let resealed = rotated.encrypt("k", b"v").unwrap();
        assert!(rotated.is_current(&resealed));
        let pruned = rotated.pruned();
        assert_eq!(pruned.all_keys().len(), 1);
        assert!(pruned.decrypt("k", &sealed).is_err());
        assert_eq!(pruned.decrypt("k", &resealed).unwrap(), b"v");
    }

    #[test]
    fn disable_keeps_keys_for_reading_and_writes_plaintext() {
        let on = KeySet::generate();
        let sealed = on.encrypt("k", b"v").unwrap();
        let off = on.disable();
        assert!(!off.enabled());
        assert_eq!(off.encrypt("k", b"v").unwrap(), b"v");
        assert_eq!(off.decrypt("k", &sealed).unwrap(), b"v");
        assert_eq!(off.pruned(), KeySet::default());
        assert!(off.enable().enabled());
    }

    #[test]
    fn the_file_is_kubes_encryption_configuration() {
        let ks = KeySet::generate();
        let text = ks.to_json();
        let doc: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(doc["kind"], "EncryptionConfiguration");
        assert_eq!(doc["resources"][0]["resources"][0], "secrets");
        assert!(doc["resources"][0]["providers"][0]["aesgcm"]["keys"][0]["secret"].is_string());
        assert_eq!(doc["resources"][0]["providers"][1], json!({"identity": {}}));
        assert_eq!(KeySet::from_json(&text).unwrap(), ks);
        let err = KeySet::from_json(r#"{"resources":[{"resources":["secrets"],"providers":[{"kms":{}}]}]}"#).unwrap_err();
        assert!(err.to_string().contains("unsupported provider"), "{err}");
    }
}
