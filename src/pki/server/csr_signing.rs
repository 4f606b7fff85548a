//! Signing approved CertificateSigningRequests for the signers
//! kube-controller-manager runs (its `csrsigning` controller):
//! - `kubernetes.io/kube-apiserver-client`: any subject, client usages,
//!   signed by the client CA;
//! - `kubernetes.io/kube-apiserver-client-kubelet`: a kubelet's client
//!   certificate (`O=system:nodes`, `CN=system:node:…`, no SANs), client CA;
//! - `kubernetes.io/kubelet-serving`: a kubelet's serving certificate (same
//!   subject, DNS or IP SANs only), signed by the server CA, which is what
//!   the API server trusts for kubelets.
//!
//! Each signer checks the request as kube's does (`IsKubeletClientCSR`,
//! `IsKubeletServingCSR`, the usage sets); a refusal is the reason of the
//! `Failed` condition. The certificate lasts the request's
//! `expirationSeconds` (at least 10 minutes), at most the cluster signing
//! duration (a year, as other leaves). Any other signer is not ours.

use std::collections::BTreeSet;
use std::net::IpAddr;

use rcgen::SubjectPublicKeyInfo;
use time::Duration;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use super::super::certs::{self, LeafSpec, Usage, LEAF_VALIDITY};
use super::super::options::SanSet;
use super::Pki;

pub const KUBE_APISERVER_CLIENT: &str = "kubernetes.io/kube-apiserver-client";
pub const KUBE_APISERVER_CLIENT_KUBELET: &str = "kubernetes.io/kube-apiserver-client-kubelet";
pub const KUBELET_SERVING: &str = "kubernetes.io/kubelet-serving";

/// Why a request was not signed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CsrSignError {
    /// Another signer's request: left alone.
    #[error("signer {0} is not served by rk3s")]
    NotOurs(String),
    /// The signer refuses it (kube's `SignerValidationFailure`).
    #[error("{0}")]
    Refused(String),
    #[error("failed to sign the request: {0}")]
    Sign(String),
}

/// What a PKCS#10 request asks for.
#[derive(Debug, Default)]
struct Asked {
    common_name: String,
    organizations: Vec<String>,
    dns: Vec<String>,
    ips: Vec<IpAddr>,
    emails: usize,
    uris: usize,
}

fn parse(request: &[u8]) -> Result<(SubjectPublicKeyInfo, Asked), CsrSignError> {
    let refused = |m: String| CsrSignError::Refused(m);
    let der = pem_or_der(request).map_err(refused)?;
    let (_, req) = X509CertificationRequest::from_der(&der)
        .map_err(|e| refused(format!("unable to parse csr: {e}")))?;
    req.verify_signature()
        .map_err(|_| refused("the CSR's signature does not match its public key".into()))?;
    let info = &req.certification_request_info;
    let mut asked = Asked {
        common_name: info
            .subject
            .iter_common_name()
            .filter_map(|a| a.as_str().ok())
            .next()
            .unwrap_or_default()
            .to_string(),
        organizations: info
            .subject
            .iter_organization()
            .filter_map(|a| a.as_str().ok().map(String::from))
            .collect(),
        ..Default::default()
    };
    for ext in req.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext {
            for name in &san.general_names {
                match name {
                    GeneralName::DNSName(d) => asked.dns.push(d.to_string()),
                    GeneralName::IPAddress(b) => match b.len() {
                        4 => asked.ips.push(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap())),
                        16 => asked.ips.push(IpAddr::from(<[u8; 16]>::try_from(*b).unwrap())),
                        _ => {}
                    },
                    GeneralName::RFC822Name(_) => asked.emails += 1,
                    GeneralName::URI(_) => asked.uris += 1,
                    _ => {}
                }
            }
        }
    }
    let spki = SubjectPublicKeyInfo::from_der(info.subject_pki.raw)
        .map_err(|e| refused(format!("unsupported CSR public key: {e}")))?;
    Ok((spki, asked))
}

fn pem_or_der(request: &[u8]) -> Result<Vec<u8>, String> {
    if !request.starts_with(b"-----") {
        return Ok(request.to_vec());
    }
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateSigningRequestDer::from_pem_slice(request)
        .map(|d| d.as_ref().to_vec())
        .map_err(|_| "PEM block type must be CERTIFICATE REQUEST".to_string())
}

/// kube's usage check: every usage in `allowed`, every one of `required`
/// present.
fn check_usages(usages: &[String], allowed: &[&str], required: &[&str]) -> Result<(), String> {
    let have: BTreeSet<&str> = usages.iter().map(String::as_str).collect();
    let bad: Vec<&str> = have.iter().copied().filter(|u| !allowed.contains(u)).collect();
    let missing: Vec<&str> = required.iter().copied().filter(|u| !have.contains(u)).collect();
    if bad.is_empty() && missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "usages did not match {:?}",
        allowed.iter().map(|u| u.to_string()).collect::<Vec<_>>()
    ))
}

/// A kubelet's subject: `O=system:nodes`, `CN=system:node:<name>`.
fn check_kubelet_subject(asked: &Asked) -> Result<(), String> {
    if asked.organizations != ["system:nodes"] {
        return Err("organization is not [\"system:nodes\"]".into());
    }
    if !asked.common_name.starts_with("system:node:") {
        return Err("subject common name does not begin with system:node:".into());
    }
    Ok(())
}

impl Pki {
    /// Signs an approved request for one of the three kubernetes.io
    /// signers; returns the certificate PEM for `status.certificate`.
    pub fn sign_kubernetes_csr(
        &self,
        signer: &str,
        request: &[u8],
        usages: &[String],
        expiration_seconds: Option<i64>,
    ) -> Result<String, CsrSignError> {
        if ![KUBE_APISERVER_CLIENT, KUBE_APISERVER_CLIENT_KUBELET, KUBELET_SERVING].contains(&signer)
        {
            return Err(CsrSignError::NotOurs(signer.to_string()));
        }
        let (public_key, asked) = parse(request)?;
        let refused = CsrSignError::Refused;
        let client = ["digital signature", "key encipherment", "client auth"];
        let (usage, by_server_ca, sans) = match signer {
            KUBE_APISERVER_CLIENT => {
                check_usages(usages, &client, &["client auth"])
                    .map_err(|e| refused(format!("invalid usage for client certificate: {e}")))?;
                let sans = SanSet {
                    dns: asked.dns.iter().cloned().collect(),
                    ips: asked.ips.iter().copied().collect(),
                };
                (Usage::Client, false, sans)
            }
            KUBE_APISERVER_CLIENT_KUBELET => {
                check_kubelet_subject(&asked).map_err(refused)?;
                if !asked.dns.is_empty() || !asked.ips.is_empty() || asked.emails > 0 || asked.uris > 0 {
                    return Err(refused("subjectAltNames are not allowed".into()));
                }
                check_usages(usages, &client, &["digital signature", "client auth"])
                    .map_err(refused)?;
                (Usage::Client, false, SanSet::default())
            }
            _ => {
                check_kubelet_subject(&asked).map_err(refused)?;
                if asked.dns.is_empty() && asked.ips.is_empty() {
                    return Err(refused("DNS or IP subjectAltName is required".into()));
                }
                if asked.emails > 0 {
                    return Err(refused("Email subjectAltNames are not allowed".into()));
                }
                if asked.uris > 0 {
                    return Err(refused("URI subjectAltNames are not allowed".into()));
                }
                check_usages(
                    usages,
                    &["digital signature", "key encipherment", "server auth"],
                    &["digital signature", "server auth"],
                )
                .map_err(refused)?;
                let sans = SanSet {
                    dns: asked.dns.iter().cloned().collect(),
                    ips: asked.ips.iter().copied().collect(),
                };
                (Usage::Server, true, sans)
            }
        };
        let spec = LeafSpec {
            common_name: asked.common_name.clone(),
            organizations: asked.organizations.clone(),
            sans,
            usage,
        };
        let validity = expiration_seconds
            .map(|s| Duration::seconds(s.max(600)))
            .filter(|d| *d < LEAF_VALIDITY)
            .unwrap_or(LEAF_VALIDITY);
        let ca = if by_server_ca {
            &self.server_ca
        } else {
            &self.client_ca
        };
        certs::issue(ca, &spec, &public_key, validity).map_err(|e| CsrSignError::Sign(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::PkiOptions;

    fn request(cn: &str, orgs: &[&str], ips: &[&str]) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for o in orgs {
            params.distinguished_name.push(rcgen::DnType::OrganizationName, *o);
        }
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        params.subject_alt_names = ips
            .iter()
            .map(|ip| rcgen::SanType::IpAddress(ip.parse().unwrap()))
            .collect();
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    fn usages(u: &[&str]) -> Vec<String> {
        u.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn each_signer_checks_its_requests_as_kube_does() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path(), &PkiOptions::new("t")).unwrap();
        let alice = request("alice", &["devs"], &[]);
        let pem = pki
            .sign_kubernetes_csr(KUBE_APISERVER_CLIENT, alice.as_bytes(), &usages(&["digital signature", "client auth"]), Some(3600))
            .unwrap();
        let (_, cert) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let cert = cert.parse_x509().unwrap();
        assert_eq!(certs::subject_of(&cert), (Some("alice".into()), vec!["devs".into()]));
        // not_before is back-dated for clock skew; the end is what counts.
        let left = cert.validity().not_after.timestamp() - time::OffsetDateTime::now_utc().unix_timestamp();
        assert!((3500..=3600).contains(&left), "expirationSeconds honoured: {left}");
        assert_eq!(
            pki.sign_kubernetes_csr(KUBE_APISERVER_CLIENT, alice.as_bytes(), &usages(&["server auth"]), None),
            Err(CsrSignError::Refused(
                "invalid usage for client certificate: usages did not match [\"digital signature\", \"key encipherment\", \"client auth\"]".into()
            ))
        );
        let node = request("system:node:n1", &["system:nodes"], &["10.0.0.5"]);
        assert!(pki
            .sign_kubernetes_csr(KUBELET_SERVING, node.as_bytes(), &usages(&["digital signature", "server auth"]), None)
            .is_ok());
        assert_eq!(
            pki.sign_kubernetes_csr(KUBE_APISERVER_CLIENT_KUBELET, node.as_bytes(), &usages(&["digital signature", "client auth"]), None),
            Err(CsrSignError::Refused("subjectAltNames are not allowed".into()))
        );
        assert_eq!(
            pki.sign_kubernetes_csr(KUBELET_SERVING, alice.as_bytes(), &usages(&["digital signature", "server auth"]), None),
            Err(CsrSignError::Refused("organization is not [\"system:nodes\"]".into()))
        );
        assert!(matches!(
            pki.sign_kubernetes_csr("example.com/mine", alice.as_bytes(), &[], None),
            Err(CsrSignError::NotOurs(_))
        ));
    }
}
