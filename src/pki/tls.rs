//! rustls configurations (ring provider only) and the identity in a client certificate.
//!
//! The server asks for a client certificate but does not require one: kubectl with the admin
//! kubeconfig presents one, while agents joining with a token, `/cacerts` fetches and
//! service-account bearer tokens come without. A presented certificate must chain to the client
//! CA or the handshake fails, so [`client_identity`] only ever sees verified certificates when
//! fed from a connection made with [`Pki::server_tls_config`].

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::certs::subject_of;
use super::server::Pki;
use super::PkiError;

/// The user a client certificate names, as Kubernetes' x509 authenticator reads it: the
/// subject CN is the user name and each O is a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub groups: Vec<String>,
}

/// The identity in a peer certificate (DER); `None` if it does not parse or has no CN.
/// Verification is the TLS layer's job: pass only certificates the handshake accepted.
pub fn client_identity(cert_der: &[u8]) -> Option<UserInfo> {
    let (_, cert) = X509Certificate::from_der(cert_der).ok()?;
    let (cn, groups) = subject_of(&cert);
    let name = cn.filter(|n| !n.is_empty())?;
    Some(UserInfo { name, groups })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn parse_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::parse(what, e))?;
    if certs.is_empty() {
        return Err(PkiError::parse(what, "no certificate in PEM"));
    }
    Ok(certs)
}

fn roots(ca_pem: &[u8], what: &str) -> Result<RootCertStore, PkiError> {
    let mut roots = RootCertStore::empty();
    for cert in parse_certs(ca_pem, what)? {
        roots.add(cert).map_err(|e| PkiError::parse(what, e))?;
    }
    Ok(roots)
}

impl Pki {
    /// The API server's TLS configuration: serving certificate + server CA as the chain, ALPN
    /// `h2` then `http/1.1`, optional client certificates verified against the client CA.
    pub fn server_tls_config(&self) -> Result<ServerConfig, PkiError> {
        let roots = roots(self.client_ca_pem().as_bytes(), "client CA")?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| PkiError::Tls(e.to_string()))?;
        let serving = self.serving();
        let mut chain = parse_certs(serving.cert_pem.as_bytes(), "serving certificate")?;
        chain.extend(parse_certs(self.ca_bundle_pem(), "server CA")?);
        let key = PrivateKeyDer::from_pem_slice(serving.key_pem.as_bytes())
            .map_err(|e| PkiError::parse("serving key", e))?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| PkiError::Tls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| PkiError::Tls(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// A client configuration trusting only `ca_pem` (a pinned cluster CA, never the OS store),
/// optionally presenting a client certificate (`(cert_pem, key_pem)`; the cert PEM may hold a
/// chain). No ALPN is set; HTTP clients add their own.
pub fn client_tls_config(
    ca_pem: &[u8],
    identity: Option<(&[u8], &[u8])>,
) -> Result<ClientConfig, PkiError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| PkiError::Tls(e.to_string()))?
        .with_root_certificates(roots(ca_pem, "CA bundle")?);
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some((cert_pem, key_pem)) => {
            let chain = parse_certs(cert_pem, "client certificate")?;
            let key = PrivateKeyDer::from_pem_slice(key_pem)
                .map_err(|e| PkiError::parse("client key", e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| PkiError::Tls(e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::PkiOptions;

    #[test]
    fn identity_of_admin_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path(), &PkiOptions::new("host")).unwrap();
        let der = CertificateDer::from_pem_slice(pki.admin().cert_pem.as_bytes()).unwrap();
        assert_eq!(
            client_identity(&der),
            Some(UserInfo {
                name: "system:admin".into(),
                groups: vec!["system:masters".into()],
            })
        );
        assert_eq!(client_identity(b"not a certificate"), None);
    }

    #[test]
    fn configs_build() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path(), &PkiOptions::new("host")).unwrap();
        let server = pki.server_tls_config().unwrap();
        assert_eq!(
            server.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        let admin = pki.admin();
        client_tls_config(
            pki.ca_bundle_pem(),
            Some((admin.cert_pem.as_bytes(), admin.key_pem.as_bytes())),
        )
        .unwrap();
        assert!(client_tls_config(b"junk", None).is_err());
    }
}
