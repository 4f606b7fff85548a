//! ServiceAccount tokens: ES256 JWTs signed with the PKI's service-account
//! key, in kube-apiserver's bound-token shape (`iss`, `sub`, `aud`, `exp`,
//! `iat`, `nbf`, `jti` and the `kubernetes.io` claim naming the namespace,
//! ServiceAccount and the pod, secret or node the token is bound to).
//!
//! This module only signs and checks the token itself (signature, algorithm,
//! issuer, audience, time window with one minute of leeway); whether the
//! bound objects still exist is the authenticator's job (`authn`).

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED,
    ECDSA_P256_SHA256_FIXED_SIGNING,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{PrivatePkcs8KeyDer, SubjectPublicKeyInfoDer};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Why a key could not be loaded or a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("failed to load the service-account key: {0}")]
    Key(String),
    #[error("invalid token: {0}")]
    InvalidToken(String),
}

/// Clock skew tolerated on `exp` and `nbf`, as kube's `jwt.DefaultLeeway`.
pub const LEEWAY_SECS: i64 = 60;

/// `https://kubernetes.default.svc.<cluster-domain>`: the issuer and the
/// API server's own audience.
pub fn api_audience(cluster_domain: &str) -> String {
    format!("https://kubernetes.default.svc.{cluster_domain}")
}

/// A name and uid in the `kubernetes.io` claim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    pub name: String,
    pub uid: String,
}

/// The `kubernetes.io` claim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubeClaims {
    pub namespace: String,
    pub serviceaccount: ObjectRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<ObjectRef>,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Aud {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Aud::deserialize(d)? {
        Aud::One(s) => vec![s],
        Aud::Many(v) => v,
    })
}

/// The claims of a ServiceAccount token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    #[serde(deserialize_with = "one_or_many")]
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubeClaims,
}

/// Signs and verifies tokens with one ES256 key.
pub struct TokenKeys {
    key: EcdsaKeyPair,
    public: Vec<u8>,
    kid: String,
    rng: SystemRandom,
    /// The issuer we write and accept.
    pub issuer: String,
    /// The audiences the API server accepts (and TokenRequest's default).
    pub api_audiences: Vec<String>,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl TokenKeys {
    /// From the PKCS#8 PEM signing key and its SubjectPublicKeyInfo PEM.
    pub fn new(key_pem: &str, public_pem: &str, cluster_domain: &str) -> Result<Self, JwtError> {
        let bad = |e: String| JwtError::Key(e);
        let der = PrivatePkcs8KeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| bad(e.to_string()))?;
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            der.secret_pkcs8_der(),
            &rng,
        )
        .map_err(|e| bad(e.to_string()))?;
        let spki = SubjectPublicKeyInfoDer::from_pem_slice(public_pem.as_bytes())
            .map_err(|e| bad(e.to_string()))?;
        // kube's key id: the unpadded base64url SHA-256 of the public key's DER.
        let kid = B64.encode(Sha256::digest(spki.as_ref()));
        let public = key.public_key().as_ref().to_vec();
        let audience = api_audience(cluster_domain);
        Ok(TokenKeys {
            key,
            public,
            kid,
            rng,
            issuer: audience.clone(),
            api_audiences: vec![audience],
        })
    }

    /// The signed compact JWT for `claims`.
    pub fn sign(&self, claims: &Claims) -> Result<String, JwtError> {
        let header = serde_json::json!({"alg": "ES256", "kid": self.kid});
        let payload = serde_json::to_vec(claims).map_err(|e| JwtError::Key(e.to_string()))?;
        let signing_input = format!("{}.{}", B64.encode(header.to_string()), B64.encode(payload));
        let sig = self
            .key
            .sign(&self.rng, signing_input.as_bytes())
            .map_err(|_| JwtError::Key("failed to sign the token".into()))?;
        Ok(format!("{signing_input}.{}", B64.encode(sig.as_ref())))
    }

    /// Checks signature, algorithm, issuer, time window (at `now`, Unix
    /// seconds) and that one audience is in `audiences`; returns the claims.
    pub fn verify(&self, token: &str, audiences: &[String], now: i64) -> Result<Claims, JwtError> {
        let invalid = |why: &str| JwtError::InvalidToken(why.to_string());
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("not a JWT"));
        };
        let header: serde_json::Value = B64
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| invalid("malformed header"))?;
        if header["alg"] != "ES256" {
            return Err(invalid("unexpected signing algorithm"));
        }
        let sig = B64.decode(s).map_err(|_| invalid("malformed signature"))?;
        let signing_input = &token[..h.len() + 1 + p.len()];
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &self.public)
            .verify(signing_input.as_bytes(), &sig)
            .map_err(|_| invalid("invalid signature"))?;
        let claims: Claims = B64
            .decode(p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| invalid("malformed claims"))?;
        if claims.iss != self.issuer {
            return Err(invalid("unexpected issuer"));
        }
        if !claims.aud.iter().any(|a| audiences.contains(a)) {
            return Err(invalid("token audiences are not accepted"));
        }
        if now > claims.exp + LEEWAY_SECS {
            return Err(invalid("token has expired"));
        }
        if now + LEEWAY_SECS < claims.nbf {
            return Err(invalid("token is not valid yet"));
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> TokenKeys {
        let key = rcgen::KeyPair::generate().unwrap();
        TokenKeys::new(&key.serialize_pem(), &key.public_key_pem(), "cluster.local").unwrap()
    }

    fn claims(now: i64) -> Claims {
        Claims {
            iss: "https://kubernetes.default.svc.cluster.local".into(),
            sub: "system:serviceaccount:default:default".into(),
            aud: vec!["https://kubernetes.default.svc.cluster.local".into()],
            exp: now + 3600,
            iat: now,
            nbf: now,
            jti: "j".into(),
            kubernetes: KubeClaims {
                namespace: "default".into(),
                serviceaccount: ObjectRef {
                    name: "default".into(),
                    uid: "u".into(),
                },
                pod: None,
                secret: None,
                node: None,
            },
        }
    }

    #[test]
    fn round_trip_and_checks() {
        let k = keys();
        let now = 1_800_000_000;
        let aud = k.api_audiences.clone();
        let t = k.sign(&claims(now)).unwrap();
        assert_eq!(k.verify(&t, &aud, now).unwrap(), claims(now));
        // Expired (beyond the leeway), not yet valid, wrong audience.
        assert!(k.verify(&t, &aud, now + 3600 + LEEWAY_SECS + 1).is_err());
        assert!(k.verify(&t, &aud, now + 3600 + LEEWAY_SECS).is_ok());
        assert!(k.verify(&t, &aud, now - LEEWAY_SECS - 1).is_err());
        assert!(k.verify(&t, &["other".to_string()], now).is_err());
        // Wrong issuer.
        let mut c = claims(now);
        c.iss = "https://evil".into();
        assert!(k.verify(&k.sign(&c).unwrap(), &aud, now).is_err());
    }

    #[test]
    fn tampering_and_foreign_keys_fail() {
        let k = keys();
        let now = 1_800_000_000;
        let aud = k.api_audiences.clone();
        let t = k.sign(&claims(now)).unwrap();
        let mut c = claims(now);
        c.sub = "system:serviceaccount:kube-system:admin".into();
        let forged_payload = B64.encode(serde_json::to_vec(&c).unwrap());
        let parts: Vec<&str> = t.split('.').collect();
        let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
        assert!(k.verify(&forged, &aud, now).is_err());
        assert!(keys().verify(&t, &aud, now).is_err());
        assert!(k.verify("a.b", &aud, now).is_err());
        // alg "none" with an empty signature.
        let none = format!("{}.{}.", B64.encode(r#"{"alg":"none"}"#), parts[1]);
        assert!(k.verify(&none, &aud, now).is_err());
    }

    #[test]
    fn audience_may_be_a_string() {
        let v = serde_json::json!({"iss": "i", "sub": "s", "aud": "a", "exp": 1, "iat": 1, "nbf": 1, "jti": "j",
            "kubernetes.io": {"namespace": "n", "serviceaccount": {"name": "x", "uid": "y"}}});
        let c: Claims = serde_json::from_value(v).unwrap();
        assert_eq!(c.aud, vec!["a".to_string()]);
    }
}
