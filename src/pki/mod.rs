//! The cluster's public-key infrastructure, join tokens, node passwords and kubeconfigs.
//!
//! What lives here, following k3s's layout under `<data-dir>/server/tls/`:
//! - two self-signed certificate authorities: the *server CA* signs serving certificates (the
//!   API server's and each kubelet's) and is what `/cacerts` serves and join tokens pin; the
//!   *client CA* signs client certificates (admin, control-plane components, kubelets);
//! - leaf certificates for the API server and the in-process control-plane clients, renewed at
//!   start when fewer than 90 days remain ([`Pki::load_or_create`]);
//! - the service-account signing key (ECDSA P-256, for ES256 JWTs: see [`server`]) and the
//!   tokens it signs ([`jwt`]);
//! - signing of agent CSRs for kubelet client/serving certificates ([`AgentCert`]);
//! - rustls configurations for the server and for clients ([`tls`]);
//! - k3s-format join tokens and kubeadm-format bootstrap tokens ([`token`], [`bootstrap`]);
//! - node-password hashing ([`nodepass`]) and kubeconfig files ([`kubeconfig`]);
//! - the join protocol's shared types ([`join`]) and a node's credential files ([`node_files`]),
//!   used by both `server::join` and `agent::join`.
//!
//! Invariants: private keys are written 0600 and certificates 0644, always atomically
//! ([`files::write_atomic`]); an existing CA is never replaced silently (a half-present CA is an
//! error, because a new CA would cut off every joined node); every key is ECDSA P-256.
//!
//! Partial: no request-header (front-proxy) CA, no `certificate rotate-ca`, no CA renewal (the
//! CAs last ten years, as in k3s), and no certificate revocation.

pub mod bootstrap;
pub mod ca;
pub mod certs;
pub mod files;
pub mod join;
pub mod jwt;
pub mod kubeconfig;
pub mod lifetimes;
pub mod node_files;
pub mod nodepass;
pub mod options;
pub mod server;
pub mod skip_verify;
pub mod tls;
pub mod token;

use std::path::{Path, PathBuf};

pub use bootstrap::BootstrapToken;
pub use certs::{generate_key_and_csr, AgentCert, KeyAndCsr};
pub use kubeconfig::{write_admin_kubeconfig, Kubeconfig};
pub use nodepass::{
    generate_node_password, hash_node_password, node_password_secret_name, verify_node_password,
};
pub use options::PkiOptions;
pub use server::{ClientRole, LeafFiles, Pki};
pub use tls::{client_identity, client_tls_config, UserInfo};
pub use token::{ca_hash, load_or_create_server_token, JoinToken};

/// Everything that can go wrong in this module.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("failed to {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to generate {what}: {source}")]
    Generate {
        what: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("failed to parse {what}: {reason}")]
    Parse { what: String, reason: String },
    #[error(
        "failed to load the {name}: {present} exists but {missing} is missing; restore it from a \
         backup, or remove both files to create a new CA (every joined node must then rejoin)"
    )]
    HalfPresentCa {
        name: &'static str,
        present: PathBuf,
        missing: PathBuf,
    },
    #[error("failed to build the TLS configuration: {0}")]
    Tls(String),
    #[error("failed to parse the join token: {0}")]
    InvalidToken(String),
    #[error(
        "the join token pins CA hash {expected} but the server's CA hashes to {actual}: the token \
         belongs to another cluster or server, or something is intercepting the connection"
    )]
    CaHashMismatch { expected: String, actual: String },
    #[error(
        "the given token pins CA hash {expected} but this server's CA hashes to {actual}: pass \
         the bare secret, or the full token this server printed"
    )]
    ServerTokenCaMismatch { expected: String, actual: String },
    #[error("failed to parse the bootstrap token: {0}")]
    InvalidBootstrapToken(String),
    #[error("invalid certificate request: {0}")]
    InvalidRequest(String),
    #[error("invalid PKI option: {0}")]
    InvalidOption(String),
    #[error("failed to encode the kubeconfig: {0}")]
    Kubeconfig(#[from] serde_yaml::Error),
}

impl PkiError {
    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        PkiError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn generate(what: impl Into<String>, source: rcgen::Error) -> Self {
        PkiError::Generate {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn parse(what: impl Into<String>, reason: impl ToString) -> Self {
        PkiError::Parse {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}
