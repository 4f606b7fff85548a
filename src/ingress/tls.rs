//! TLS for the HTTPS listener: a certificate per host from the
//! `kubernetes.io/tls` Secrets that served Ingresses name in `spec.tls`,
//! chosen by the client's SNI, and a self-signed default certificate for
//! every other name (and for clients that send no SNI), as Traefik does.
//!
//! The certificate table is swapped whole on every change, so a handshake
//! sees one consistent table and open connections keep the key they
//! negotiated.
//!
//! Invariant: rustls uses the ring provider only (never aws-lc).
//! Invariant: a Secret that does not parse (bad PEM, key not matching a
//! supported algorithm) is skipped with a reason; it never takes the
//! listener down nor hides other hosts' certificates.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::Ingress;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("failed to read secret {secret}: {reason}")]
    Secret { secret: String, reason: String },
    #[error("failed to generate the default certificate: {0}")]
    Generate(String),
    #[error("failed to build the TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// Certificates by host name, wildcard suffix, and the default.
#[derive(Debug, Clone)]
pub struct CertTable {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the suffix after `*` (`.example.com`).
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
    /// Secrets that could not be used, with the reason.
    pub skipped: Vec<String>,
}

impl CertTable {
    pub fn only_default(default: Arc<CertifiedKey>) -> Self {
        CertTable {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            default,
            skipped: Vec::new(),
        }
    }

    /// The certificate for `sni`: an exact host, then a wildcard one label
    /// up, then the default.
    pub fn select(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = sni.map(|s| s.trim_end_matches('.').to_ascii_lowercase()) else {
            return self.default.clone();
        };
        if let Some(k) = self.exact.get(&name) {
            return k.clone();
        }
        if let Some(dot) = name.find('.') {
            if let Some(k) = self.wildcard.get(&name[dot..]) {
                return k.clone();
            }
        }
        self.default.clone()
    }

    /// Builds the table from served Ingresses and the TLS Secrets they name
    /// (looked up by `namespace/name`). The oldest Ingress wins a host.
    pub fn build(
        ingresses: &[&Ingress],
        secret: &dyn Fn(&str, &str) -> Option<Secret>,
        default: Arc<CertifiedKey>,
    ) -> CertTable {
        let mut table = CertTable::only_default(default);
        let mut loaded: HashMap<String, Option<Arc<CertifiedKey>>> = HashMap::new();
        let mut ordered: Vec<&&Ingress> = ingresses.iter().collect();
        ordered.sort_by_key(|i| {
            (
                i.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()),
                super::table::ingress_key(i),
            )
        });
        for ing in ordered {
            let ns = ing.metadata.namespace.as_deref().unwrap_or("default");
            for tls in ing.spec.iter().flat_map(|s| s.tls.iter().flatten()) {
                let Some(name) = tls.secret_name.as_deref().filter(|n| !n.is_empty()) else {
                    continue;
                };
                let key = format!("{ns}/{name}");
                let entry = loaded.entry(key.clone()).or_insert_with(|| {
                    let result = match secret(ns, name) {
                        None => Err(TlsError::Secret {
                            secret: key.clone(),
                            reason: "not found".into(),
                        }),
                        Some(s) => certified_key_from_secret(&key, &s),
                    };
                    match result {
                        Ok(k) => Some(Arc::new(k)),
                        Err(e) => {
                            table.skipped.push(e.to_string());
                            None
                        }
                    }
                });
                let Some(cert) = entry.clone() else { continue };
                for host in tls.hosts.iter().flatten() {
                    let host = host.trim().to_ascii_lowercase();
                    let slot = match host.strip_prefix('*') {
                        Some(suffix) => table.wildcard.entry(suffix.to_string()),
                        None => table.exact.entry(host),
                    };
                    slot.or_insert_with(|| cert.clone());
                }
            }
        }
        table
    }
}

/// A rustls key pair from a Secret's `tls.crt` and `tls.key`.
pub fn certified_key_from_secret(key: &str, secret: &Secret) -> Result<CertifiedKey, TlsError> {
    let fail = |reason: String| TlsError::Secret {
        secret: key.to_string(),
        reason,
    };
    if let Some(t) = secret.type_.as_deref() {
        if t != "kubernetes.io/tls" {
            return Err(fail(format!("its type is {t}, not kubernetes.io/tls")));
        }
    }
    let data = secret.data.as_ref().ok_or_else(|| fail("it has no data".into()))?;
    let crt = data.get("tls.crt").ok_or_else(|| fail("it has no tls.crt".into()))?;
    let pem_key = data.get("tls.key").ok_or_else(|| fail("it has no tls.key".into()))?;
    certified_key_from_pem(&crt.0, &pem_key.0).map_err(fail)
}

pub fn certified_key_from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, String> {
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.crt: {e}"))?;
    if certs.is_empty() {
        return Err("tls.crt holds no certificate".into());
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| format!("tls.key: {e}"))?
        .ok_or("tls.key holds no private key")?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("tls.key: {e}"))?;
    let ck = CertifiedKey::new(certs, signer);
    ck.keys_match().map_err(|e| format!("tls.crt and tls.key do not match: {e}"))?;
    Ok(ck)
}

/// The default certificate: self-signed, for `rk3s-ingress-default` (as
/// Traefik serves its own `TRAEFIK DEFAULT CERT`).
pub fn default_certificate() -> Result<CertifiedKey, TlsError> {
    let generated = rcgen::generate_simple_self_signed(vec!["rk3s-ingress-default".to_string()])
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    certified_key_from_pem(
        generated.cert.pem().as_bytes(),
        generated.signing_key.serialize_pem().as_bytes(),
    )
    .map_err(TlsError::Generate)
}

/// The resolver rustls calls per handshake; the controller swaps its table.
#[derive(Debug)]
pub struct SniResolver {
    table: RwLock<Arc<CertTable>>,
}

impl SniResolver {
    pub fn new(table: CertTable) -> Self {
        SniResolver {
            table: RwLock::new(Arc::new(table)),
        }
    }

    pub fn swap(&self, table: CertTable) {
        *self.table.write().expect("the lock is never poisoned") = Arc::new(table);
    }

    pub fn current(&self) -> Arc<CertTable> {
        self.table.read().expect("the lock is never poisoned").clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current().select(hello.server_name()))
    }
}

/// A rustls server configuration (ring, HTTP/2 and HTTP/1.1 by ALPN).
pub fn server_config(resolver: Arc<SniResolver>) -> Result<rustls::ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use serde_json::json;

    fn cert_for(names: &[&str]) -> (String, String) {
        let c = rcgen::generate_simple_self_signed(
            names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        (c.cert.pem(), c.signing_key.serialize_pem())
    }

    fn secret(name: &str, pem: &(String, String)) -> Secret {
        let mut s: Secret = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default"},
            "type": "kubernetes.io/tls",
        }))
        .unwrap();
        s.data = Some(
            [
                ("tls.crt".to_string(), ByteString(pem.0.clone().into_bytes())),
                ("tls.key".to_string(), ByteString(pem.1.clone().into_bytes())),
            ]
            .into(),
        );
        s
    }

    fn ingress(name: &str, tls: serde_json::Value) -> Ingress {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"tls": tls}
        }))
        .unwrap()
    }

    fn first_cert(k: &CertifiedKey) -> Vec<u8> {
        k.cert[0].to_vec()
    }

    #[test]
    fn sni_picks_exact_then_wildcard_then_default() {
        let exact = cert_for(&["hello.local"]);
        let wild = cert_for(&["*.apps.local"]);
        let secrets = [secret("hello-tls", &exact), secret("wild-tls", &wild)];
        let lookup = |ns: &str, n: &str| {
            secrets
                .iter()
                .find(|s| s.metadata.name.as_deref() == Some(n) && ns == "default")
                .cloned()
        };
        let ing = ingress(
            "a",
            json!([
                {"hosts": ["hello.local"], "secretName": "hello-tls"},
                {"hosts": ["*.apps.local"], "secretName": "wild-tls"},
                {"hosts": ["broken.local"], "secretName": "missing"},
            ]),
        );
        let default = Arc::new(default_certificate().unwrap());
        let table = CertTable::build(&[&ing], &lookup, default.clone());
        let pem_der = |p: &(String, String)| first_cert(&certified_key_from_pem(p.0.as_bytes(), p.1.as_bytes()).unwrap());
        assert_eq!(first_cert(&table.select(Some("HELLO.local"))), pem_der(&exact));
        assert_eq!(first_cert(&table.select(Some("x.apps.local"))), pem_der(&wild));
        assert_eq!(first_cert(&table.select(Some("a.x.apps.local"))), first_cert(&default));
        assert_eq!(first_cert(&table.select(Some("broken.local"))), first_cert(&default));
        assert_eq!(first_cert(&table.select(None)), first_cert(&default));
        assert_eq!(table.skipped.len(), 1);
        assert!(table.skipped[0].contains("default/missing"), "{:?}", table.skipped);
    }

    #[test]
    fn bad_secrets_are_refused_with_a_reason() {
        let (crt, _) = cert_for(&["a"]);
        let (_, other_key) = cert_for(&["b"]);
        let mismatched = secret("m", &(crt.clone(), other_key));
        let err = certified_key_from_secret("default/m", &mismatched).unwrap_err().to_string();
        assert!(err.contains("do not match"), "{err}");
        let mut opaque = secret("o", &(crt, String::new()));
        opaque.type_ = Some("Opaque".into());
        let err = certified_key_from_secret("default/o", &opaque).unwrap_err().to_string();
        assert!(err.contains("not kubernetes.io/tls"), "{err}");
    }
}
