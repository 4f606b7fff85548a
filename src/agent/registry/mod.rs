//! Pulling images from OCI / Docker registries (the distribution HTTP API),
//! for containerd 1.6 which has no Transfer service: the agent resolves the
//! reference, picks this platform's manifest out of an index, and downloads
//! the config and layers into a scratch directory, verifying each digest;
//! the runtime then writes them into containerd's content store and
//! unpacks them ([`crate::agent::runtime::ContainerRuntime::store_pulled`]).
//!
//! Auth: anonymous, HTTP basic, and the `WWW-Authenticate: Bearer` token
//! flow (with basic credentials sent to the token realm when given).
//! Endpoints: `docker.io` is served by `https://registry-1.docker.io`;
//! loopback registries are tried over HTTPS, then plain HTTP, like
//! containerd.
//!
//! Invariants: a blob is streamed to disk chunk by chunk and hashed on
//! the way (**the agent never holds a whole layer in memory**); a blob
//! whose digest or size differs from its descriptor is refused.
//!
//! Mirrors and per-host credentials come from `registries.yaml`
//! ([`config`]): mirrors are tried in order, then the registry itself.
//!
//! TLS: the system roots; a host with `tls` settings in `registries.yaml`
//! gets its own client (`ca_file` added to the roots, `cert_file` and
//! `key_file` as the client certificate, `insecure_skip_verify`), always
//! on rustls with ring. The pod's `imagePullSecrets` credentials
//! ([`pull_secrets`]) are passed in per call and take precedence over
//! `configs` auth.
//!
//! Partial: the file is read from its default path (no
//! `--private-registry` flag here).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::agent::runtime::image::{arch, Descriptor as Desc, Platform};
use crate::agent::runtime::{BlobFile, PulledImage};

pub mod config;
pub mod pull_secrets;
mod tls;

use tls::build_client;

pub use config::RegistriesConfig;

const INDEX_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
const MANIFEST_TYPES: [&str; 2] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];
/// Manifests and indexes are small; a bigger one is refused.
const MAX_MANIFEST: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}: not found")]
    NotFound(String),
    #[error("unexpected status from {method} request to {url}: {status}")]
    Status {
        method: &'static str,
        url: String,
        status: reqwest::StatusCode,
    },
    #[error("failed to do request: {method} {url}: {source}")]
    Http {
        method: &'static str,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("failed to {op}: {message}")]
    Invalid { op: String, message: String },
    #[error("failed to {0}: {1}")]
    Io(String, #[source] std::io::Error),
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// A normalized reference split for the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// As written in the image name: `docker.io`, `127.0.0.1:5000`.
    pub host: String,
    pub repository: String,
    /// The tag or the `sha256:…` digest asked for.
    pub object: String,
}

impl Reference {
    /// Parses a normalized reference (`docker.io/library/busybox:1.36`,
    /// `host:5000/a/b@sha256:…`).
    pub fn parse(normalized: &str) -> Option<Self> {
        let (host, rest) = normalized.split_once('/')?;
        let (repository, object) = match rest.split_once('@') {
            Some((r, d)) => (r, d),
            None => rest.rsplit_once(':')?,
        };
        // A digest reference may carry a tag too: the digest wins.
        let repository = repository.split(':').next().unwrap_or(repository);
        Some(Self {
            host: host.to_string(),
            repository: repository.to_string(),
            object: object.to_string(),
        })
    }

    pub fn is_loopback(&self) -> bool {
        let name = self
            .host
            .rsplit_once(':')
            .map_or(self.host.as_str(), |(h, _)| h);
        matches!(name, "localhost" | "127.0.0.1" | "[::1]")
    }
}

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    Basic {
        username: String,
        password: String,
    },
    /// An OAuth2 refresh token sent to the token realm.
    IdentityToken(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Self::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
        }
    }
}

/// The network side of pulls: a seam so the image manager's tests use a fake.
#[async_trait::async_trait]
pub trait Registry: Send + Sync {
    /// The digest the reference points at now (index or manifest).
    async fn resolve(&self, reference: &Reference, creds: Option<&Credentials>) -> Result<String>;
    /// Downloads this platform's manifest, config and layers into `dir`.
    async fn fetch(
        &self,
        reference: &Reference,
        creds: Option<&Credentials>,
        dir: &Path,
    ) -> Result<PulledImage>;
}

/// The real client.
pub struct HttpRegistry {
    http: reqwest::Client,
    /// Clients for the hosts with `tls` settings in `registries.yaml`.
    per_host: HashMap<String, std::result::Result<reqwest::Client, String>>,
    config: RegistriesConfig,
}

#[derive(Deserialize)]
struct ManifestOrIndex {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    #[serde(default)]
    manifests: Vec<Desc>,
    config: Option<Desc>,
    #[serde(default)]
    layers: Vec<Desc>,
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: String,
    #[serde(default)]
    access_token: String,
}

/// One pull's connection state: the endpoint that answered and the
/// `Authorization` header it accepted.
struct Session<'a> {
    /// The endpoint's client, or why its TLS settings could not be loaded.
    http: std::result::Result<&'a reqwest::Client, &'a str>,
    /// As asked for (error messages name it).
    reference: &'a Reference,
    /// Repository on this endpoint (mirrors may rewrite it).
    repository: String,
    creds: Option<Credentials>,
    base: String,
    authorization: Option<String>,
}

/// `Bearer realm="…",service="…",scope="…"` → its parameters.
fn challenge_params(header: &str) -> Option<(String, Vec<(String, String)>)> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    let re = regex::Regex::new(r#"([A-Za-z_]+)="([^"]*)""#).expect("static regex");
    let params = re
        .captures_iter(rest)
        .map(|c| (c[1].to_ascii_lowercase(), c[2].to_string()))
        .collect();
    Some((scheme.to_ascii_lowercase(), params))
}

fn basic_header(username: &str, password: &str) -> String {
    use base64::Engine;
    let raw = format!("{username}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

impl HttpRegistry {
    pub fn new() -> Result<Self> {
        let http = build_client(None).map_err(|message| RegistryError::Invalid {
            op: "build the registry client".into(),
            message,
        })?;
        Ok(Self {
            http,
            per_host: HashMap::new(),
            config: RegistriesConfig::default(),
        })
    }

    /// Mirrors, credentials and TLS settings from `registries.yaml`. A
    /// host whose `tls` files cannot be loaded keeps the error: every
    /// request to it fails with it (the agent still starts).
    pub fn with_config(mut self, config: RegistriesConfig) -> Self {
        self.per_host = config
            .configs
            .iter()
            .filter_map(|(host, c)| {
                let tls = c.tls.as_ref()?;
                let client = build_client(Some(tls)).map_err(|e| {
                    tracing::warn!(host = %host, error = %e, "failed to load the TLS settings of registries.yaml");
                    format!("configure TLS for {host} from registries.yaml: {e}")
                });
                Some((host.clone(), client))
            })
            .collect();
        self.config = config;
        self
    }

    /// A session per endpoint, in the order to try them (mirrors, then
    /// the registry itself).
    fn sessions<'a>(
        &'a self,
        reference: &'a Reference,
        creds: Option<&Credentials>,
    ) -> Vec<Session<'a>> {
        self.config
            .endpoints(
                &reference.host,
                &reference.repository,
                reference.is_loopback(),
            )
            .into_iter()
            .map(|e| Session {
                http: match self.per_host.get(&e.host) {
                    Some(Ok(client)) => Ok(client),
                    Some(Err(message)) => Err(message.as_str()),
                    None => Ok(&self.http),
                },
                reference,
                creds: creds.cloned().or_else(|| self.config.credentials(&e.host)),
                repository: e.repository,
                base: e.base,
                authorization: None,
            })
            .collect()
    }
}

/// Keeps the last error of endpoints tried in turn.
fn note_failure(session: &Session<'_>, err: RegistryError, last: &mut Option<RegistryError>) {
    tracing::debug!(endpoint = %session.base, error = %err, "registry endpoint failed");
    *last = Some(err);
}

impl Session<'_> {
    fn client(&self) -> Result<&reqwest::Client> {
        self.http.map_err(|message| RegistryError::Invalid {
            op: format!("pull from {}", self.base),
            message: message.to_string(),
        })
    }

    fn url(&self, kind: &str, object: &str) -> String {
        format!("{}/v2/{}/{kind}/{object}", self.base, self.repository)
    }

    /// Sends the request, answering one auth challenge if the registry
    /// asks for one.
    async fn send(
        &mut self,
        method: reqwest::Method,
        url: &str,
        accept: &str,
    ) -> Result<reqwest::Response> {
        let verb: &'static str = if method == reqwest::Method::HEAD {
            "HEAD"
        } else {
            "GET"
        };
        for attempt in 0..2 {
            let mut req = self.client()?.request(method.clone(), url);
            if !accept.is_empty() {
                req = req.header(reqwest::header::ACCEPT, accept);
            }
            if let Some(a) = &self.authorization {
                req = req.header(reqwest::header::AUTHORIZATION, a);
            }
            let resp = req.send().await.map_err(|source| RegistryError::Http {
                method: verb,
                url: url.to_string(),
                source,
            })?;
            if resp.status() != reqwest::StatusCode::UNAUTHORIZED || attempt == 1 {
                return Ok(resp);
            }
            let challenge = resp
                .headers()
                .get(reqwest::header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(challenge_params);
            let Some((scheme, params)) = challenge else {
                return Ok(resp);
            };
            let authorization = match scheme.as_str() {
                "bearer" => self.token(&params).await?,
                "basic" => match &self.creds {
                    Some(Credentials::Basic { username, password }) => {
                        basic_header(username, password)
                    }
                    _ => return Ok(resp),
                },
                _ => return Ok(resp),
            };
            if self.authorization.as_ref() == Some(&authorization) {
                return Ok(resp);
            }
            self.authorization = Some(authorization);
        }
        unreachable!("the second attempt always returns")
    }

    /// The token flow: GET realm?service=…&scope=… (with basic credentials
    /// when given); an identity token goes as an OAuth2 refresh token.
    async fn token(&self, params: &[(String, String)]) -> Result<String> {
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let realm = get("realm").ok_or_else(|| RegistryError::Invalid {
            op: "authorize".into(),
            message: "the Bearer challenge has no realm".into(),
        })?;
        let scope = get("scope").unwrap_or_else(|| format!("repository:{}:pull", self.repository));
        let service = get("service").unwrap_or_default();
        let resp = match &self.creds {
            Some(Credentials::IdentityToken(refresh)) => {
                let form = [
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh.as_str()),
                    ("service", service.as_str()),
                    ("scope", scope.as_str()),
                    ("client_id", "rk3s"),
                ];
                self.client()?.post(&realm).form(&form).send().await
            }
            other => {
                let mut req = self
                    .client()?
                    .get(&realm)
                    .query(&[("service", service.as_str()), ("scope", scope.as_str())]);
                if let Some(Credentials::Basic { username, password }) = other {
                    req = req.basic_auth(username, Some(password));
                }
                req.send().await
            }
        };
        let resp = resp.map_err(|source| RegistryError::Http {
            method: "GET",
            url: realm.clone(),
            source,
        })?;
        if !resp.status().is_success() {
            return Err(RegistryError::Status {
                method: "GET",
                url: realm,
                status: resp.status(),
            });
        }
        let body: TokenResponse = resp.json().await.map_err(|source| RegistryError::Http {
            method: "GET",
            url: realm.clone(),
            source,
        })?;
        let token = if body.token.is_empty() {
            body.access_token
        } else {
            body.token
        };
        Ok(format!("Bearer {token}"))
    }

    fn accept_manifests() -> String {
        INDEX_TYPES
            .iter()
            .chain(MANIFEST_TYPES.iter())
            .copied()
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn check(&self, resp: &reqwest::Response, verb: &'static str, url: &str) -> Result<()> {
        match resp.status() {
            s if s.is_success() => Ok(()),
            reqwest::StatusCode::NOT_FOUND => Err(RegistryError::NotFound(format!(
                "{}/{}:{}",
                self.reference.host, self.reference.repository, self.reference.object
            ))),
            status => Err(RegistryError::Status {
                method: verb,
                url: url.to_string(),
                status,
            }),
        }
    }

    /// HEAD the manifest for its digest; GET and hash it when the
    /// registry does not say.
    async fn resolve(&mut self) -> Result<String> {
        let url = self.url("manifests", &self.reference.object.clone());
        let resp = self
            .send(reqwest::Method::HEAD, &url, &Self::accept_manifests())
            .await?;
        self.check(&resp, "HEAD", &url)?;
        if let Some(d) = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
        {
            return Ok(d.to_string());
        }
        let (_, digest, _) = self.manifest(&self.reference.object.clone()).await?;
        Ok(digest)
    }

    /// GETs a manifest or index: its bytes, digest and media type.
    async fn manifest(&mut self, object: &str) -> Result<(Vec<u8>, String, String)> {
        let url = self.url("manifests", object);
        let mut resp = self
            .send(reqwest::Method::GET, &url, &Self::accept_manifests())
            .await?;
        self.check(&resp, "GET", &url)?;
        let media_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let http_err = |source| RegistryError::Http {
            method: "GET",
            url: url.clone(),
            source,
        };
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(http_err)? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_MANIFEST {
                return Err(RegistryError::Invalid {
                    op: format!("read manifest {url}"),
                    message: format!("larger than {MAX_MANIFEST} bytes"),
                });
            }
        }
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&body)));
        if object.starts_with("sha256:") && object != digest {
            return Err(RegistryError::Invalid {
                op: format!("read manifest {url}"),
                message: format!("its content is {digest}"),
            });
        }
        Ok((body, digest, media_type))
    }

    /// Streams a blob into `path`, hashing it on the way.
    async fn blob(&mut self, desc: &Desc, path: &Path) -> Result<BlobFile> {
        let url = self.url("blobs", &desc.digest);
        let mut resp = self.send(reqwest::Method::GET, &url, "").await?;
        self.check(&resp, "GET", &url)?;
        let op = format!("download {}", desc.digest);
        let io = |source| RegistryError::Io(op.clone(), source);
        let mut file = tokio::fs::File::create(path).await.map_err(io)?;
        let mut hasher = Sha256::new();
        let mut size = 0i64;
        while let Some(chunk) = resp.chunk().await.map_err(|source| RegistryError::Http {
            method: "GET",
            url: url.clone(),
            source,
        })? {
            hasher.update(&chunk);
            size += chunk.len() as i64;
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.flush().await.map_err(io)?;
        let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
        if digest != desc.digest || (desc.size > 0 && size != desc.size) {
            return Err(RegistryError::Invalid {
                op,
                message: format!("got {size} bytes with digest {digest}"),
            });
        }
        Ok(BlobFile {
            path: path.to_path_buf(),
            digest,
            size,
            media_type: desc.media_type.clone(),
        })
    }
}

fn write_small(
    dir: &Path,
    name: &str,
    body: &[u8],
    digest: &str,
    media_type: &str,
) -> Result<BlobFile> {
    let path = dir.join(name);
    std::fs::write(&path, body)
        .map_err(|source| RegistryError::Io(format!("write {}", path.display()), source))?;
    Ok(BlobFile {
        path,
        digest: digest.to_string(),
        size: body.len() as i64,
        media_type: media_type.to_string(),
    })
}

/// The media type a document declares, else the one its response carried.
fn declared_or(declared: &str, from_header: String) -> String {
    if declared.is_empty() {
        from_header
    } else {
        declared.to_string()
    }
}

fn platform_matches(p: &Platform) -> bool {
    let arch = arch();
    p.os == "linux"
        && p.architecture == arch
        // 32-bit ARM images come in variants; the Pi's 64-bit kernel runs v7.
        && (arch != "arm" || p.variant.as_deref().is_none_or(|v| v == "v7"))
}

#[async_trait::async_trait]
impl Registry for HttpRegistry {
    async fn resolve(&self, reference: &Reference, creds: Option<&Credentials>) -> Result<String> {
        let mut last = None;
        for mut s in self.sessions(reference, creds) {
            match s.resolve().await {
                Ok(v) => return Ok(v),
                Err(e) => note_failure(&s, e, &mut last),
            }
        }
        Err(last.expect("at least one endpoint"))
    }

    async fn fetch(
        &self,
        reference: &Reference,
        creds: Option<&Credentials>,
        dir: &Path,
    ) -> Result<PulledImage> {
        let mut last = None;
        for mut s in self.sessions(reference, creds) {
            match s.fetch(dir).await {
                Ok(v) => return Ok(v),
                Err(e) => note_failure(&s, e, &mut last),
            }
        }
        Err(last.expect("at least one endpoint"))
    }
}

impl Session<'_> {
    async fn fetch(&mut self, dir: &Path) -> Result<PulledImage> {
        let s = self;
        let reference = s.reference;
        let invalid = |message: String| RegistryError::Invalid {
            op: format!("read manifest of {}", reference.object),
            message,
        };
        let (body, digest, header_type) = s.manifest(&reference.object).await?;
        let parsed: ManifestOrIndex =
            serde_json::from_slice(&body).map_err(|e| invalid(e.to_string()))?;
        let top_type = declared_or(&parsed.media_type, header_type);
        let (index, manifest_bytes, manifest_digest, manifest_type, manifest) =
            if parsed.config.is_none() {
                let chosen = parsed
                    .manifests
                    .iter()
                    .find(|m| m.platform.as_ref().is_some_and(platform_matches))
                    .ok_or_else(|| {
                        invalid(format!(
                            "no match for platform linux/{} in manifest {digest}",
                            arch()
                        ))
                    })?;
                let index = write_small(dir, "index.json", &body, &digest, &top_type)?;
                let (mbody, mdigest, mtype) = s.manifest(&chosen.digest).await?;
                let m: ManifestOrIndex =
                    serde_json::from_slice(&mbody).map_err(|e| invalid(e.to_string()))?;
                let mtype = declared_or(&chosen.media_type, mtype);
                (Some(index), mbody, mdigest, mtype, m)
            } else {
                (None, body, digest.clone(), top_type, parsed)
            };
        let config_desc = manifest
            .config
            .as_ref()
            .ok_or_else(|| invalid(format!("manifest {manifest_digest} has no config")))?;
        let manifest_file = write_small(
            dir,
            "manifest.json",
            &manifest_bytes,
            &manifest_digest,
            &manifest_type,
        )?;
        let config = s.blob(config_desc, &dir.join("config.json")).await?;
        let mut layers = Vec::new();
        for (i, l) in manifest.layers.iter().enumerate() {
            layers.push(s.blob(l, &dir.join(format!("layer-{i}"))).await?);
        }
        Ok(PulledImage {
            index,
            manifest: manifest_file,
            config,
            layers,
            digest,
        })
    }
}

/// Where a pulled image's files go while it is stored; removed on drop.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn create() -> std::io::Result<Self> {
        let dir = std::env::temp_dir().join(format!("rk3s-pull-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir(&dir)?;
        Ok(Self(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references() {
        let r = Reference::parse("docker.io/library/busybox:1.36").unwrap();
        assert_eq!(r.host, "docker.io");
        assert_eq!(r.repository, "library/busybox");
        assert_eq!(r.object, "1.36");
        let r = Reference::parse("127.0.0.1:5000/rk3s/busybox@sha256:ab").unwrap();
        assert_eq!(
            (r.repository.as_str(), r.object.as_str()),
            ("rk3s/busybox", "sha256:ab")
        );
        assert!(r.is_loopback());
        assert!(!Reference::parse("quay.io/a/b:1").unwrap().is_loopback());
    }

    #[test]
    fn parses_bearer_challenges() {
        let (scheme, params) = challenge_params(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        )
        .unwrap();
        assert_eq!(scheme, "bearer");
        assert_eq!(
            params[0],
            ("realm".into(), "https://auth.docker.io/token".into())
        );
        assert_eq!(params[2].1, "repository:library/busybox:pull");
    }

    #[test]
    fn tls_settings_are_checked_when_the_client_is_built() {
        use config::TlsConfig;
        let half = TlsConfig {
            cert_file: Some("/etc/cert.pem".into()),
            ..TlsConfig::default()
        };
        assert_eq!(
            build_client(Some(&half)).unwrap_err(),
            "cert_file and key_file go together"
        );
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let no_cert = TlsConfig {
            ca_file: Some(empty),
            ..TlsConfig::default()
        };
        assert!(build_client(Some(&no_cert))
            .unwrap_err()
            .contains("no PEM certificate"));
        let skip = TlsConfig {
            insecure_skip_verify: true,
            ..TlsConfig::default()
        };
        assert!(build_client(Some(&skip)).is_ok());
    }

    #[tokio::test]
    async fn a_host_with_unreadable_tls_files_fails_with_the_reason() {
        let config = RegistriesConfig::parse(
            "configs:\n  \"127.0.0.1:1\":\n    tls:\n      ca_file: /nonexistent/ca.pem\n",
        )
        .unwrap();
        let registry = HttpRegistry::new().unwrap().with_config(config);
        let r = Reference::parse("127.0.0.1:1/a/b:1").unwrap();
        let err = registry.resolve(&r, None).await.unwrap_err().to_string();
        assert!(
            err.contains("configure TLS for 127.0.0.1:1") && err.contains("/nonexistent/ca.pem"),
            "{err}"
        );
    }
}
