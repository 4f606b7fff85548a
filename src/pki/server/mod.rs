//! The server's PKI in `<data-dir>/server/tls/`: created on first start, reused afterwards.
//!
//! Files (PEM; keys 0600, certificates 0644):
//! - `server-ca.{crt,key}`: signs serving certificates; `server-ca.crt` is the `/cacerts` body
//!   and what join tokens pin.
//! - `client-ca.{crt,key}`: signs client certificates; the API server trusts it for client auth.
//! - `serving-kube-apiserver.{crt,key}`: the API server's serving certificate.
//! - `client-<role>.{crt,key}`: see [`ClientRole`].
//! - `service.key` / `service.pub`: the service-account token signing key (below).
//!
//! Service-account key choice: ECDSA P-256 (JWT `ES256`), not k3s's RSA 2048. Only rk3s signs and
//! verifies these tokens (kube-apiserver accepts ES256 too, so the choice stays compatible); an
//! EC key is generated in microseconds rather than seconds on a Raspberry Pi, its signatures are
//! 64 bytes and signing is several times cheaper than RSA 2048. `service.key` is PKCS#8 PEM,
//! `service.pub` a SubjectPublicKeyInfo PEM.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rcgen::KeyPair;
use sha2::{Digest, Sha256};

use super::ca::CertAuthority;
use super::certs::{self, AgentCert, LeafPem, LeafSpec, Usage, LEAF_VALIDITY};
use super::files::{read_optional_string, write_atomic, PUBLIC_MODE, SECRET_MODE};
use super::options::PkiOptions;
use super::PkiError;

/// The client certificates the server keeps for its own components.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ClientRole {
    /// `client-admin`: CN `system:admin`, O `system:masters`; the admin kubeconfig.
    Admin,
    /// `client-supervisor`: CN `system:rk3s-supervisor`, O `system:masters`; the server's
    /// in-process helpers (join handlers, add-on deployer).
    Supervisor,
    /// `client-controller`: CN `system:kube-controller-manager`.
    ControllerManager,
    /// `client-scheduler`: CN `system:kube-scheduler`.
    Scheduler,
}

impl ClientRole {
    pub const ALL: [ClientRole; 4] = [
        ClientRole::Admin,
        ClientRole::Supervisor,
        ClientRole::ControllerManager,
        ClientRole::Scheduler,
    ];

    /// The file base name in the TLS directory.
    pub fn file_base(self) -> &'static str {
        match self {
            ClientRole::Admin => "client-admin",
            ClientRole::Supervisor => "client-supervisor",
            ClientRole::ControllerManager => "client-controller",
            ClientRole::Scheduler => "client-scheduler",
        }
    }

    fn spec(self) -> LeafSpec {
        match self {
            ClientRole::Admin => LeafSpec::client("system:admin", &["system:masters"]),
            ClientRole::Supervisor => {
                LeafSpec::client("system:rk3s-supervisor", &["system:masters"])
            }
            ClientRole::ControllerManager => {
                LeafSpec::client("system:kube-controller-manager", &[])
            }
            ClientRole::Scheduler => LeafSpec::client("system:kube-scheduler", &[]),
        }
    }
}

/// A stored certificate/key pair: paths (for kubeconfigs that reference files) and contents.
#[derive(Clone, Copy)]
pub struct LeafFiles<'a> {
    pub cert_pem: &'a str,
    pub key_pem: &'a str,
    pub base: &'a str,
    tls_dir: &'a Path,
}

impl LeafFiles<'_> {
    pub fn cert_path(&self) -> PathBuf {
        self.tls_dir.join(format!("{}.crt", self.base))
    }
    pub fn key_path(&self) -> PathBuf {
        self.tls_dir.join(format!("{}.key", self.base))
    }
}

impl std::fmt::Debug for LeafFiles<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeafFiles")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

const SERVING_BASE: &str = "serving-kube-apiserver";

/// The loaded PKI of a server.
#[derive(Debug)]
pub struct Pki {
    tls_dir: PathBuf,
    server_ca: CertAuthority,
    client_ca: CertAuthority,
    serving: LeafPem,
    clients: BTreeMap<ClientRole, LeafPem>,
    sa_key_pem: String,
    sa_public_pem: String,
    ca_hash: String,
}

impl Pki {
    /// Loads the PKI from `tls_dir`, creating what is missing and reissuing leaves that are
    /// close to expiry or no longer match `opts` (see [`super::certs`]). CAs are only ever
    /// created, never replaced.
    pub fn load_or_create(tls_dir: &Path, opts: &PkiOptions) -> Result<Pki, PkiError> {
        std::fs::create_dir_all(tls_dir)
            .map_err(|e| PkiError::io("create directory", tls_dir, e))?;
        let server_ca =
            CertAuthority::load_or_create(tls_dir, "server-ca", "rk3s-server-ca", "server CA")?;
        let client_ca =
            CertAuthority::load_or_create(tls_dir, "client-ca", "rk3s-client-ca", "client CA")?;

        let serving_spec = LeafSpec {
            common_name: "kube-apiserver".into(),
            organizations: Vec::new(),
            sans: opts.serving_sans()?,
            usage: Usage::Server,
        };
        let serving = certs::load_or_issue(tls_dir, SERVING_BASE, &server_ca, &serving_spec)?;
        let mut clients = BTreeMap::new();
        for role in ClientRole::ALL {
            let leaf = certs::load_or_issue(tls_dir, role.file_base(), &client_ca, &role.spec())?;
            clients.insert(role, leaf);
        }
        let (sa_key_pem, sa_public_pem) = load_or_create_sa_key(tls_dir)?;
        let ca_hash = hex::encode(Sha256::digest(server_ca.cert_pem().as_bytes()));
        Ok(Pki {
            tls_dir: tls_dir.to_path_buf(),
            server_ca,
            client_ca,
            serving,
            clients,
            sa_key_pem,
            sa_public_pem,
            ca_hash,
        })
    }

    /// The directory the PKI lives in.
    pub fn tls_dir(&self) -> &Path {
        &self.tls_dir
    }

    /// The server CA certificate PEM.
    pub fn server_ca_pem(&self) -> &str {
        self.server_ca.cert_pem()
    }

    /// The client CA certificate PEM (what verifies client certificates).
    pub fn client_ca_pem(&self) -> &str {
        self.client_ca.cert_pem()
    }

    /// The body `/cacerts` serves: the server CA PEM, byte for byte as stored.
    pub fn ca_bundle_pem(&self) -> &[u8] {
        self.server_ca.cert_pem().as_bytes()
    }

    /// Lowercase hex SHA-256 of [`Self::ca_bundle_pem`]: the hash in `K10<hash>::…` tokens.
    pub fn ca_bundle_sha256(&self) -> &str {
        &self.ca_hash
    }

    /// The API server's serving certificate and key.
    pub fn serving(&self) -> LeafFiles<'_> {
        LeafFiles {
            cert_pem: &self.serving.cert_pem,
            key_pem: &self.serving.key_pem,
            base: SERVING_BASE,
            tls_dir: &self.tls_dir,
        }
    }

    /// A control-plane client certificate and key.
    pub fn client(&self, role: ClientRole) -> LeafFiles<'_> {
        let leaf = &self.clients[&role];
        LeafFiles {
            cert_pem: &leaf.cert_pem,
            key_pem: &leaf.key_pem,
            base: role.file_base(),
            tls_dir: &self.tls_dir,
        }
    }

    /// The admin client certificate (`system:admin`, `system:masters`).
    pub fn admin(&self) -> LeafFiles<'_> {
        self.client(ClientRole::Admin)
    }

    /// The service-account signing key, PKCS#8 PEM (ECDSA P-256, for ES256).
    pub fn service_account_key_pem(&self) -> &str {
        &self.sa_key_pem
    }

    /// The service-account verifying key, SubjectPublicKeyInfo PEM.
    pub fn service_account_public_key_pem(&self) -> &str {
        &self.sa_public_pem
    }

    /// Signs an agent's CSR (PEM or DER) as `cert` dictates and returns the certificate PEM
    /// followed by the signing CA's PEM, as k3s's `/v1-k3s/*.crt` endpoints answer. The caller
    /// must already have authenticated the agent and checked its node password.
    pub fn sign_agent_csr(&self, cert: &AgentCert, csr: &[u8]) -> Result<String, PkiError> {
        let public_key = certs::csr_public_key(csr)?;
        let (spec, by_server_ca) = cert.spec()?;
        let ca = if by_server_ca {
            &self.server_ca
        } else {
            &self.client_ca
        };
        let mut chain = certs::issue(ca, &spec, &public_key, LEAF_VALIDITY)?;
        chain.push_str(ca.cert_pem());
        Ok(chain)
    }
}

/// Loads `service.key` (writing `service.pub` from it if missing or stale) or creates both.
fn load_or_create_sa_key(dir: &Path) -> Result<(String, String), PkiError> {
    let key_path = dir.join("service.key");
    let pub_path = dir.join("service.pub");
    let (key_pem, key) = match read_optional_string(&key_path)? {
        Some(pem) => {
            let key = KeyPair::from_pem(&pem)
                .map_err(|e| PkiError::parse(key_path.display().to_string(), e))?;
            (pem, key)
        }
        None => {
            let key =
                KeyPair::generate().map_err(|e| PkiError::generate("service-account key", e))?;
            let pem = key.serialize_pem();
            write_atomic(&key_path, pem.as_bytes(), SECRET_MODE)?;
            (pem, key)
        }
    };
    let public_pem = key.public_key_pem();
    if read_optional_string(&pub_path)?.as_deref() != Some(public_pem.as_str()) {
        write_atomic(&pub_path, public_pem.as_bytes(), PUBLIC_MODE)?;
    }
    Ok((key_pem, public_pem))
}

pub mod csr_signing;

#[cfg(test)]
mod tests;
