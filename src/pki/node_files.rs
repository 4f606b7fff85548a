//! A node's kubelet credentials on disk, in `<data-dir>/agent/`, written by a
//! joining agent (`agent::join`) and by the server for its built-in agent
//! (`server::join::builtin_node_credentials`):
//!
//! | file | mode | what |
//! |---|---|---|
//! | `server-ca.crt`, `client-ca.crt` | 0644 | the cluster CAs |
//! | `client-kubelet.{crt,key}` | 0600 | `system:node:<name>` client certificate (+ CA chain) |
//! | `serving-kubelet.{crt,key}` | 0600 | the kubelet's serving certificate (+ CA chain) |
//! | `kubelet.kubeconfig` | 0600 | server URL, server CA and client certificate by file path |
//! | `cluster-config.json` | 0644 | the server's [`ClusterConfig`], when it was fetched |
//!
//! Keys are kept across renewals (k3s does the same); a certificate is reused while
//! [`AgentFiles::reuse_reason`] finds nothing wrong with it. Every write is atomic.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{KeyPair, PublicKeyData};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::join::{ClusterConfig, NodeCredentials};
use crate::pki::certs::{sans_of, subject_of, RENEW_BEFORE};
use crate::pki::files::{read_optional_string, write_atomic, PUBLIC_MODE, SECRET_MODE};
use crate::pki::{AgentCert, Kubeconfig, PkiError};

/// The paths of a node's credential files.
#[derive(Debug, Clone)]
pub struct AgentFiles {
    dir: PathBuf,
}

impl AgentFiles {
    pub fn new(agent_dir: &Path) -> Self {
        AgentFiles {
            dir: agent_dir.to_path_buf(),
        }
    }
    pub fn server_ca(&self) -> PathBuf {
        self.dir.join("server-ca.crt")
    }
    pub fn client_ca(&self) -> PathBuf {
        self.dir.join("client-ca.crt")
    }
    pub fn client_cert(&self) -> PathBuf {
        self.dir.join("client-kubelet.crt")
    }
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client-kubelet.key")
    }
    pub fn serving_cert(&self) -> PathBuf {
        self.dir.join("serving-kubelet.crt")
    }
    pub fn serving_key(&self) -> PathBuf {
        self.dir.join("serving-kubelet.key")
    }
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubelet.kubeconfig")
    }
    pub fn cluster_config(&self) -> PathBuf {
        self.dir.join("cluster-config.json")
    }

    /// The credentials these files make up.
    pub fn credentials(&self, node_name: &str) -> NodeCredentials {
        NodeCredentials {
            node_name: node_name.to_string(),
            kubeconfig: self.kubeconfig(),
            serving_cert: self.serving_cert(),
            serving_key: self.serving_key(),
        }
    }

    /// Why the certificate at `cert_path` (with its key at `key_path`) cannot be reused as
    /// `cert`, or `None` when it can: it must parse, match its key, be signed by `ca_pem`, have
    /// more than 90 days left, and carry exactly the subject and SANs `cert` asks for.
    pub fn reuse_reason(
        &self,
        cert_path: &Path,
        key_path: &Path,
        ca_pem: &[u8],
        cert: &AgentCert,
    ) -> Option<String> {
        let cert_pem = match read_optional_string(cert_path) {
            Ok(Some(pem)) => pem,
            Ok(None) => return Some("no certificate yet".into()),
            Err(e) => return Some(e.to_string()),
        };
        let key = match read_optional_string(key_path) {
            Ok(Some(pem)) => match KeyPair::from_pem(&pem) {
                Ok(key) => key,
                Err(e) => return Some(format!("its key does not parse: {e}")),
            },
            Ok(None) => return Some("its key is missing".into()),
            Err(e) => return Some(e.to_string()),
        };
        let Ok(der) = CertificateDer::from_pem_slice(cert_pem.as_bytes()) else {
            return Some("it does not parse".into());
        };
        let Ok((_, parsed)) = X509Certificate::from_der(&der) else {
            return Some("it does not parse".into());
        };
        if parsed.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
            return Some("its key file does not match it".into());
        }
        let signed = CertificateDer::from_pem_slice(ca_pem)
            .ok()
            .and_then(|ca_der| {
                let (_, ca) = X509Certificate::from_der(&ca_der).ok()?;
                Some(parsed.verify_signature(Some(ca.public_key())).is_ok())
            })
            .unwrap_or(false);
        if !signed {
            return Some("the cluster CA did not sign it".into());
        }
        let remaining = parsed.validity().not_after.timestamp() - chrono::Utc::now().timestamp();
        if remaining < RENEW_BEFORE.whole_seconds() {
            return Some(format!("it expires in {} days", remaining.max(0) / 86_400));
        }
        let spec = match cert.spec() {
            Ok((spec, _)) => spec,
            Err(e) => return Some(e.to_string()),
        };
        let (cn, orgs) = subject_of(&parsed);
        if cn.as_deref() != Some(spec.common_name.as_str()) || orgs != spec.organizations {
            return Some("its subject changed".into());
        }
        match sans_of(&parsed) {
            Some(sans) if sans == spec.sans => None,
            _ => Some("its subject alternative names changed".into()),
        }
    }

    /// The non-loopback IP SANs of the stored serving certificate (the node IPs it was issued
    /// for), empty when there is none.
    pub fn serving_cert_node_ips(&self) -> Vec<IpAddr> {
        let Ok(Some(pem)) = read_optional_string(&self.serving_cert()) else {
            return Vec::new();
        };
        let Ok(der) = CertificateDer::from_pem_slice(pem.as_bytes()) else {
            return Vec::new();
        };
        let Ok((_, parsed)) = X509Certificate::from_der(&der) else {
            return Vec::new();
        };
        sans_of(&parsed)
            .map(|s| s.ips.into_iter().filter(|ip| !ip.is_loopback()).collect())
            .unwrap_or_default()
    }

    /// The key at `path`, or a fresh one written there (0600) when it is missing or broken.
    pub fn load_or_generate_key(&self, path: &Path) -> Result<KeyPair, PkiError> {
        if let Some(pem) = read_optional_string(path)? {
            if let Ok(key) = KeyPair::from_pem(&pem) {
                return Ok(key);
            }
            tracing::warn!(path = %path.display(), "replacing an unreadable key");
        }
        let key = KeyPair::generate().map_err(|e| PkiError::Parse {
            what: "a new kubelet key".into(),
            reason: e.to_string(),
        })?;
        write_atomic(path, key.serialize_pem().as_bytes(), SECRET_MODE)?;
        Ok(key)
    }

    /// Writes a certificate chain (0600, as k3s does for agent certificates).
    pub fn write_cert(&self, path: &Path, chain_pem: &str) -> Result<(), PkiError> {
        write_atomic(path, chain_pem.as_bytes(), SECRET_MODE)
    }

    /// Writes both CA certificates (0644), skipping unchanged ones.
    pub fn write_cas(&self, server_ca: &[u8], client_ca: &[u8]) -> Result<(), PkiError> {
        for (path, pem) in [(self.server_ca(), server_ca), (self.client_ca(), client_ca)] {
            if read_optional_string(&path)?.as_deref().map(str::as_bytes) != Some(pem) {
                write_atomic(&path, pem, PUBLIC_MODE)?;
            }
        }
        Ok(())
    }

    /// Writes `kubelet.kubeconfig` (0600) for `server_url`, referencing the CA and client
    /// certificate files so renewals need no rewrite.
    pub fn write_kubeconfig(&self, server_url: &str) -> Result<(), PkiError> {
        Kubeconfig::new(server_url.trim_end_matches('/'))
            .ca_file(self.server_ca())
            .client_cert_files(self.client_cert(), self.client_key())
            .write(&self.kubeconfig(), SECRET_MODE)
    }

    pub fn write_cluster_config(&self, config: &ClusterConfig) -> Result<(), PkiError> {
        let json = serde_json::to_vec_pretty(config).map_err(|e| PkiError::Parse {
            what: "the cluster configuration".into(),
            reason: e.to_string(),
        })?;
        write_atomic(&self.cluster_config(), &json, PUBLIC_MODE)
    }

    /// The stored cluster configuration, if any.
    pub fn read_cluster_config(&self) -> Option<ClusterConfig> {
        let text = read_optional_string(&self.cluster_config()).ok()??;
        serde_json::from_str(&text).ok()
    }
}
