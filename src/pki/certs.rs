//! Leaf certificates: issuing, checking whether a stored one is still right, and signing agents'
//! certificate requests.
//!
//! A stored leaf is reissued at start when any of these holds (the reason is logged): it does not
//! parse, its key file does not match it, the current CA did not sign it, fewer than
//! [`RENEW_BEFORE`] remain, or its subject or SAN set differs from what the options now ask for
//! (a new `--tls-san`, a new node IP). The key is kept across reissues when it still parses.
//!
//! Agent certificates (design choice, as k3s does with CSRs): the agent generates its key and
//! sends a PKCS#10 request ([`generate_key_and_csr`]); the server checks the request's
//! self-signature (proof of possession) and signs only the public key, with a subject and SANs
//! it derives itself from the authenticated request ([`AgentCert`]). Private keys never cross
//! the network and a request cannot choose its own identity.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use rcgen::{
    CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose, PublicKeyData,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer};
use time::{Duration, OffsetDateTime};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::ca::{random_serial, CertAuthority, CLOCK_SKEW};
use super::files::{read_optional_string, write_atomic, PUBLIC_MODE, SECRET_MODE};
use super::options::SanSet;
use super::PkiError;

/// Leaf certificates last a year, as in k3s.
pub const LEAF_VALIDITY: Duration = Duration::days(365);
/// A leaf is renewed at start when fewer than this many days remain.
pub const RENEW_BEFORE: Duration = Duration::days(90);

/// What a leaf is for, which fixes its key usages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Server,
    Client,
}

/// Everything that identifies a leaf; two leaves with equal specs are interchangeable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafSpec {
    pub common_name: String,
    pub organizations: Vec<String>,
    pub sans: SanSet,
    pub usage: Usage,
}

impl LeafSpec {
    pub fn client(common_name: &str, organizations: &[&str]) -> Self {
        LeafSpec {
            common_name: common_name.to_string(),
            organizations: organizations.iter().map(|o| o.to_string()).collect(),
            sans: SanSet::default(),
            usage: Usage::Client,
        }
    }

    fn params(&self, validity: Duration) -> Result<CertificateParams, PkiError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for org in &self.organizations {
            params
                .distinguished_name
                .push(DnType::OrganizationName, org.as_str());
        }
        params
            .distinguished_name
            .push(DnType::CommonName, self.common_name.as_str());
        params.subject_alt_names = self.sans.to_rcgen()?;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![match self.usage {
            Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        let now = OffsetDateTime::now_utc();
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + validity;
        Ok(params)
    }
}

/// Signs `public_key` as described by `spec`; returns the certificate PEM.
pub fn issue(
    ca: &CertAuthority,
    spec: &LeafSpec,
    public_key: &impl PublicKeyData,
    validity: Duration,
) -> Result<String, PkiError> {
    let cert = spec
        .params(validity)?
        .signed_by(public_key, ca.issuer())
        .map_err(|e| PkiError::generate(format!("certificate for {}", spec.common_name), e))?;
    Ok(cert.pem())
}

/// A leaf certificate and its key, as PEM.
#[derive(Clone)]
pub struct LeafPem {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for LeafPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeafPem").finish_non_exhaustive()
    }
}

/// Loads `<dir>/<base>.crt/.key` if still right for `spec` (see the module docs), otherwise
/// issues a fresh certificate (reusing a parseable key) and writes it.
pub fn load_or_issue(
    dir: &Path,
    base: &str,
    ca: &CertAuthority,
    spec: &LeafSpec,
) -> Result<LeafPem, PkiError> {
    let cert_path = dir.join(format!("{base}.crt"));
    let key_path = dir.join(format!("{base}.key"));
    let existing_key = read_optional_string(&key_path)?
        .and_then(|pem| KeyPair::from_pem(&pem).ok().map(|key| (pem, key)));
    let existing_cert = read_optional_string(&cert_path)?;

    let reason = match (&existing_cert, &existing_key) {
        (Some(cert_pem), Some((key_pem, key))) => {
            match reissue_reason(ca, spec, cert_pem, key, OffsetDateTime::now_utc()) {
                None => {
                    return Ok(LeafPem {
                        cert_pem: cert_pem.clone(),
                        key_pem: key_pem.clone(),
                    })
                }
                Some(reason) => reason,
            }
        }
        (None, _) => "no certificate yet".to_string(),
        (Some(_), None) => "its key is missing or unreadable".to_string(),
    };

    let (key_pem, key, key_is_new) = match existing_key {
        Some((pem, key)) => (pem, key, false),
        None => {
            let key = KeyPair::generate()
                .map_err(|e| PkiError::generate(format!("key for {base}"), e))?;
            (key.serialize_pem(), key, true)
        }
    };
    let cert_pem = issue(ca, spec, &key, LEAF_VALIDITY)?;
    if key_is_new {
        // Key first: a crash in between leaves a mismatched pair, which the next start reissues.
        write_atomic(&key_path, key_pem.as_bytes(), SECRET_MODE)?;
    }
    write_atomic(&cert_path, cert_pem.as_bytes(), PUBLIC_MODE)?;
    if existing_cert.is_some() {
        tracing::info!(cert = %cert_path.display(), %reason, "reissued certificate");
    }
    Ok(LeafPem { cert_pem, key_pem })
}

/// Why a stored leaf must be reissued, or `None` when it is still right.
pub fn reissue_reason(
    ca: &CertAuthority,
    spec: &LeafSpec,
    cert_pem: &str,
    key: &KeyPair,
    now: OffsetDateTime,
) -> Option<String> {
    let der = match CertificateDer::from_pem_slice(cert_pem.as_bytes()) {
        Ok(der) => der,
        Err(e) => return Some(format!("it does not parse: {e}")),
    };
    let cert = match X509Certificate::from_der(&der) {
        Ok((_, cert)) => cert,
        Err(e) => return Some(format!("it does not parse: {e}")),
    };
    if cert.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
        return Some("its key file does not match it".into());
    }
    if !ca.signed(&cert) {
        return Some("the current CA did not sign it".into());
    }
    let remaining = cert.validity().not_after.timestamp() - now.unix_timestamp();
    if remaining < RENEW_BEFORE.whole_seconds() {
        return Some(format!("it expires in {} days", remaining.max(0) / 86_400));
    }
    let (cn, orgs) = subject_of(&cert);
    if cn.as_deref() != Some(spec.common_name.as_str()) || orgs != spec.organizations {
        return Some("its subject changed".into());
    }
    match sans_of(&cert) {
        Some(sans) if sans == spec.sans => None,
        _ => Some("its subject alternative names changed".into()),
    }
}

/// The first CN and every O of a certificate's subject, in order.
pub fn subject_of(cert: &X509Certificate<'_>) -> (Option<String>, Vec<String>) {
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .map(str::to_string);
    let orgs = cert
        .subject()
        .iter_organization()
        .filter_map(|a| a.as_str().ok())
        .map(str::to_string)
        .collect();
    (cn, orgs)
}

/// The DNS and IP SANs of a certificate; `None` if the extension is malformed or holds other
/// name types (which we never issue).
pub fn sans_of(cert: &X509Certificate<'_>) -> Option<SanSet> {
    let mut set = SanSet::default();
    let Ok(ext) = cert.subject_alternative_name() else {
        return None;
    };
    let Some(ext) = ext else {
        return Some(set);
    };
    for name in &ext.value.general_names {
        match name {
            GeneralName::DNSName(dns) => {
                set.dns.insert(dns.to_string());
            }
            GeneralName::IPAddress(bytes) => {
                let ip = match bytes.len() {
                    4 => IpAddr::from(<[u8; 4]>::try_from(*bytes).ok()?),
                    16 => IpAddr::from(<[u8; 16]>::try_from(*bytes).ok()?),
                    _ => return None,
                };
                set.ips.insert(ip);
            }
            _ => return None,
        }
    }
    Some(set)
}

/// A certificate an agent may request, with the identity the server (not the request) decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentCert {
    /// Kubelet client: CN `system:node:<name>`, O `system:nodes`, signed by the client CA.
    KubeletClient { node_name: String },
    /// Kubelet serving: CN `<name>`, SANs name, `localhost`, 127.0.0.1 and the node IPs, signed
    /// by the server CA.
    KubeletServing {
        node_name: String,
        node_ips: Vec<IpAddr>,
    },
    /// kube-proxy client: CN `system:kube-proxy`, signed by the client CA.
    KubeProxy,
    /// The agent's own controller (flannel, network policy): CN `system:rk3s-controller`.
    AgentController,
}

impl AgentCert {
    /// The leaf to issue, and whether the server CA (true) or the client CA (false) signs it.
    pub fn spec(&self) -> Result<(LeafSpec, bool), PkiError> {
        Ok(match self {
            AgentCert::KubeletClient { node_name } => {
                validate_node_name(node_name)?;
                let cn = format!("system:node:{node_name}");
                (LeafSpec::client(&cn, &["system:nodes"]), false)
            }
            AgentCert::KubeletServing {
                node_name,
                node_ips,
            } => {
                validate_node_name(node_name)?;
                let mut sans = SanSet::default();
                sans.dns.insert(node_name.clone());
                sans.dns.insert("localhost".into());
                sans.ips.insert(IpAddr::V4(Ipv4Addr::LOCALHOST));
                sans.ips.extend(node_ips.iter().copied());
                let spec = LeafSpec {
                    common_name: node_name.clone(),
                    organizations: Vec::new(),
                    sans,
                    usage: Usage::Server,
                };
                (spec, true)
            }
            AgentCert::KubeProxy => (LeafSpec::client("system:kube-proxy", &[]), false),
            AgentCert::AgentController => (LeafSpec::client("system:rk3s-controller", &[]), false),
        })
    }
}

/// Node names become DNS SANs and user names, so they must be DNS-1123 subdomains.
pub fn validate_node_name(name: &str) -> Result<(), PkiError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(PkiError::InvalidRequest(format!(
            "node name {name:?} must be a lowercase DNS-1123 subdomain (letters, digits, '-' and '.')"
        )))
    }
}

/// Extracts the public key of a PKCS#10 request (PEM or DER) after checking its signature.
pub fn csr_public_key(csr: &[u8]) -> Result<rcgen::SubjectPublicKeyInfo, PkiError> {
    let der = if csr.starts_with(b"-----") {
        CertificateSigningRequestDer::from_pem_slice(csr)
            .map_err(|e| PkiError::InvalidRequest(format!("the CSR is not valid PEM: {e}")))?
    } else {
        CertificateSigningRequestDer::from(csr.to_vec())
    };
    let (_, req) = X509CertificationRequest::from_der(der.as_ref())
        .map_err(|e| PkiError::InvalidRequest(format!("the CSR does not parse: {e}")))?;
    req.verify_signature().map_err(|_| {
        PkiError::InvalidRequest("the CSR's signature does not match its public key".into())
    })?;
    rcgen::SubjectPublicKeyInfo::from_der(req.certification_request_info.subject_pki.raw)
        .map_err(|e| PkiError::InvalidRequest(format!("unsupported CSR public key: {e}")))
}

/// A private key and a CSR over it, both PEM: what an agent sends to get a certificate.
#[derive(Clone)]
pub struct KeyAndCsr {
    pub key_pem: String,
    pub csr_pem: String,
}

/// Agent side: a fresh ECDSA P-256 key and a CSR for it. The server ignores the CSR's subject;
/// `common_name` only makes the request readable in logs and `openssl req -text`.
pub fn generate_key_and_csr(common_name: &str) -> Result<KeyAndCsr, PkiError> {
    let key = KeyPair::generate().map_err(|e| PkiError::generate("agent key", e))?;
    let csr_pem = csr_for_key(&key, common_name)?;
    Ok(KeyAndCsr {
        key_pem: key.serialize_pem(),
        csr_pem,
    })
}

/// Agent side: a CSR for an existing key (k3s agents keep their key across restarts).
pub fn csr_for_key(key: &KeyPair, common_name: &str) -> Result<String, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    let csr = params
        .serialize_request(key)
        .map_err(|e| PkiError::generate("certificate request", e))?;
    csr.pem()
        .map_err(|e| PkiError::generate("certificate request PEM", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csr_signature_is_checked() {
        let KeyAndCsr { csr_pem, .. } = generate_key_and_csr("node-1").unwrap();
        assert!(csr_public_key(csr_pem.as_bytes()).is_ok());
        // Flip a byte inside the DER: either parsing or the signature check must fail.
        let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes()).unwrap();
        let mut bytes = der.as_ref().to_vec();
        let n = bytes.len();
        bytes[n - 5] ^= 0xff;
        assert!(csr_public_key(&bytes).is_err());
    }

    #[test]
    fn node_names_are_validated() {
        assert!(validate_node_name("pi-1.lan").is_ok());
        for bad in ["", "Pi", "a_b", "-a", "a..b", "a b"] {
            assert!(validate_node_name(bad).is_err(), "{bad}");
        }
    }
}
