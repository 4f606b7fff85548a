//! kubeconfig files: the admin one (`/etc/rk3s/rk3s.yaml`) and the agents' component ones.
//!
//! Like k3s, a single cluster, user and context all named `default`. The admin kubeconfig embeds
//! everything as base64 data so it can be copied to a workstation; agent kubeconfigs may instead
//! reference certificate files, which then rotate without rewriting the kubeconfig.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::files::write_atomic;
use super::PkiError;

const NAME: &str = "default";

/// How the cluster's CA is given.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CaSource {
    None,
    Data(Vec<u8>),
    File(PathBuf),
}

/// How the user authenticates.
#[derive(Clone, PartialEq, Eq)]
enum Auth {
    None,
    CertData { cert: Vec<u8>, key: Vec<u8> },
    CertFiles { cert: PathBuf, key: PathBuf },
    Token(String),
}

/// A kubeconfig with one cluster, one user and one context, all named `default`.
#[derive(Clone, PartialEq, Eq)]
pub struct Kubeconfig {
    server: String,
    ca: CaSource,
    auth: Auth,
}

impl std::fmt::Debug for Kubeconfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kubeconfig")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl Kubeconfig {
    /// A kubeconfig for `server_url` (e.g. `https://127.0.0.1:6443`) with no CA and no user.
    pub fn new(server_url: impl Into<String>) -> Self {
        Kubeconfig {
            server: server_url.into(),
            ca: CaSource::None,
            auth: Auth::None,
        }
    }

    /// Embeds the CA bundle (`certificate-authority-data`).
    pub fn ca_data(mut self, ca_pem: &[u8]) -> Self {
        self.ca = CaSource::Data(ca_pem.to_vec());
        self
    }

    /// References the CA bundle file (`certificate-authority`).
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca = CaSource::File(path.into());
        self
    }

    /// Embeds a client certificate and key.
    pub fn client_cert_data(mut self, cert_pem: &[u8], key_pem: &[u8]) -> Self {
        self.auth = Auth::CertData {
            cert: cert_pem.to_vec(),
            key: key_pem.to_vec(),
        };
        self
    }

    /// References client certificate and key files.
    pub fn client_cert_files(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.auth = Auth::CertFiles {
            cert: cert.into(),
            key: key.into(),
        };
        self
    }

    /// A bearer token (a service-account or bootstrap token).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.auth = Auth::Token(token.into());
        self
    }

    /// The YAML text.
    pub fn to_yaml(&self) -> Result<String, PkiError> {
        let path_str = |p: &Path| Some(p.to_string_lossy().into_owned());
        let mut cluster = Cluster {
            server: self.server.clone(),
            ..Default::default()
        };
        match &self.ca {
            CaSource::None => {}
            CaSource::Data(pem) => cluster.certificate_authority_data = Some(BASE64.encode(pem)),
            CaSource::File(p) => cluster.certificate_authority = path_str(p),
        }
        let mut user = User::default();
        match &self.auth {
            Auth::None => {}
            Auth::CertData { cert, key } => {
                user.client_certificate_data = Some(BASE64.encode(cert));
                user.client_key_data = Some(BASE64.encode(key));
            }
            Auth::CertFiles { cert, key } => {
                user.client_certificate = path_str(cert);
                user.client_key = path_str(key);
            }
            Auth::Token(t) => user.token = Some(t.clone()),
        }
        let file = File {
            api_version: "v1".into(),
            clusters: vec![Named {
                name: NAME.into(),
                cluster: Some(cluster),
                context: None,
                user: None,
            }],
            contexts: vec![Named {
                name: NAME.into(),
                cluster: None,
                context: Some(Context {
                    cluster: NAME.into(),
                    user: NAME.into(),
                }),
                user: None,
            }],
            current_context: NAME.into(),
            kind: "Config".into(),
            preferences: serde_yaml::Mapping::new(),
            users: vec![Named {
                name: NAME.into(),
                cluster: None,
                context: None,
                user: Some(user),
            }],
        };
        Ok(serde_yaml::to_string(&file)?)
    }

    /// Writes the kubeconfig atomically with `mode`, creating parent directories.
    pub fn write(&self, path: &Path, mode: u32) -> Result<(), PkiError> {
        write_atomic(path, self.to_yaml()?.as_bytes(), mode)
    }
}

/// Writes the admin kubeconfig (k3s's `k3s.yaml`): CA, client certificate and key embedded.
/// `mode` is `--write-kubeconfig-mode`, 0o600 by default.
pub fn write_admin_kubeconfig(
    path: &Path,
    server_url: &str,
    ca_pem: &[u8],
    client_cert_pem: &[u8],
    client_key_pem: &[u8],
    mode: u32,
) -> Result<(), PkiError> {
    Kubeconfig::new(server_url)
        .ca_data(ca_pem)
        .client_cert_data(client_cert_pem, client_key_pem)
        .write(path, mode)
}

// The on-disk shape, in the key order kubectl itself writes.
#[derive(Serialize, Deserialize)]
struct File {
    #[serde(rename = "apiVersion")]
    api_version: String,
    clusters: Vec<Named>,
    contexts: Vec<Named>,
    #[serde(rename = "current-context")]
    current_context: String,
    kind: String,
    preferences: serde_yaml::Mapping,
    users: Vec<Named>,
}

#[derive(Serialize, Deserialize)]
struct Named {
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<Cluster>,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<Context>,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<User>,
}

#[derive(Serialize, Deserialize, Default)]
struct Cluster {
    #[serde(
        rename = "certificate-authority",
        skip_serializing_if = "Option::is_none"
    )]
    certificate_authority: Option<String>,
    #[serde(
        rename = "certificate-authority-data",
        skip_serializing_if = "Option::is_none"
    )]
    certificate_authority_data: Option<String>,
    server: String,
}

#[derive(Serialize, Deserialize)]
struct Context {
    cluster: String,
    user: String,
}

#[derive(Serialize, Deserialize, Default)]
struct User {
    #[serde(rename = "client-certificate", skip_serializing_if = "Option::is_none")]
    client_certificate: Option<String>,
    #[serde(
        rename = "client-certificate-data",
        skip_serializing_if = "Option::is_none"
    )]
    client_certificate_data: Option<String>,
    #[serde(rename = "client-key", skip_serializing_if = "Option::is_none")]
    client_key: Option<String>,
    #[serde(rename = "client-key-data", skip_serializing_if = "Option::is_none")]
    client_key_data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn admin_kubeconfig_embeds_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc/rk3s/rk3s.yaml");
        write_admin_kubeconfig(
            &path,
            "https://127.0.0.1:6443",
            b"CA",
            b"CERT",
            b"KEY",
            0o600,
        )
        .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let v: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["current-context"], "default");
        assert_eq!(v["kind"], "Config");
        let cluster = &v["clusters"][0];
        assert_eq!(cluster["name"], "default");
        assert_eq!(cluster["cluster"]["server"], "https://127.0.0.1:6443");
        assert_eq!(
            cluster["cluster"]["certificate-authority-data"],
            BASE64.encode("CA")
        );
        assert_eq!(v["contexts"][0]["context"]["user"], "default");
        let user = &v["users"][0]["user"];
        assert_eq!(user["client-certificate-data"], BASE64.encode("CERT"));
        assert_eq!(user["client-key-data"], BASE64.encode("KEY"));

        write_admin_kubeconfig(
            &path,
            "https://127.0.0.1:6443",
            b"CA",
            b"CERT",
            b"KEY",
            0o644,
        )
        .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
    }

    #[test]
    fn file_references_and_tokens() {
        let yaml = Kubeconfig::new("https://127.0.0.1:6444")
            .ca_file("/var/lib/rk3s/agent/server-ca.crt")
            .client_cert_files("/a/client-kubelet.crt", "/a/client-kubelet.key")
            .to_yaml()
            .unwrap();
        let v: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(
            v["clusters"][0]["cluster"]["certificate-authority"],
            "/var/lib/rk3s/agent/server-ca.crt"
        );
        assert_eq!(v["users"][0]["user"]["client-key"], "/a/client-kubelet.key");
        assert!(v["users"][0]["user"].get("token").is_none());

        let yaml = Kubeconfig::new("https://s:6443")
            .token("abcdef.0123456789abcdef")
            .to_yaml()
            .unwrap();
        let v: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(v["users"][0]["user"]["token"], "abcdef.0123456789abcdef");
        assert!(v["clusters"][0]["cluster"]
            .get("certificate-authority-data")
            .is_none());
    }
}
