//! `registries.yaml` in k3s's format: `mirrors` (per registry host, or
//! `"*"`, a list of `endpoint`s tried in order before the default one, and
//! `rewrite` rules applied to the repository on those endpoints) and
//! `configs` (per endpoint host: `auth` and `tls`).
//! The `tls` settings are applied by [`super::HttpRegistry::with_config`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Credentials, RegistryError, Result};

pub const DEFAULT_PATH: &str = "/etc/rk3s/registries.yaml";

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistriesConfig {
    #[serde(default)]
    pub mirrors: HashMap<String, Mirror>,
    #[serde(default)]
    pub configs: HashMap<String, HostConfig>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    #[serde(default)]
    pub endpoint: Vec<String>,
    /// Regular expression → replacement, applied to the repository.
    #[serde(default)]
    pub rewrite: BTreeMap<String, String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    pub auth: Option<AuthConfig>,
    pub tls: Option<TlsConfig>,
}

#[derive(Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub username: Option<String>,
    pub password: Option<String>,
    /// base64 of `username:password`.
    pub auth: Option<String>,
    pub identitytoken: Option<String>,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// One place to try: a base URL and the repository name there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub base: String,
    pub repository: String,
    /// `host[:port]` of `base`, the key into `configs`.
    pub host: String,
}

impl RegistriesConfig {
    /// Reads `path`; a missing file is an empty config, a malformed one an
    /// error naming the file and the field.
    pub fn load(path: &Path) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(RegistryError::Io(
                    format!("read {}", path.display()),
                    source,
                ));
            }
        };
        Self::parse(&text).map_err(|message| RegistryError::Invalid {
            op: format!("read {}", path.display()),
            message,
        })
    }

    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let config: Self = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        for (host, mirror) in &config.mirrors {
            for pattern in mirror.rewrite.keys() {
                regex::Regex::new(pattern).map_err(|e| {
                    format!("mirrors.{host:?}.rewrite: {pattern:?} is not a valid regular expression: {e}")
                })?;
            }
        }
        Ok(config)
    }

    /// The endpoints for `host`'s `repository`: its mirrors (or `"*"`'s)
    /// in order, then the registry itself.
    pub fn endpoints(&self, host: &str, repository: &str, loopback: bool) -> Vec<Endpoint> {
        let mut out = Vec::new();
        if let Some(mirror) = self.mirrors.get(host).or_else(|| self.mirrors.get("*")) {
            let mut repo = repository.to_string();
            for (pattern, replacement) in &mirror.rewrite {
                if let Ok(re) = regex::Regex::new(pattern) {
                    repo = re.replace(&repo, replacement.as_str()).into_owned();
                }
            }
            for e in &mirror.endpoint {
                let base = if e.starts_with("http://") || e.starts_with("https://") {
                    e.clone()
                } else {
                    format!("https://{e}")
                };
                let base = base
                    .trim_end_matches('/')
                    .trim_end_matches("/v2")
                    .to_string();
                out.push(endpoint(base, repo.clone()));
            }
        }
        if host == "docker.io" {
            out.push(endpoint(
                "https://registry-1.docker.io".into(),
                repository.into(),
            ));
        } else {
            out.push(endpoint(format!("https://{host}"), repository.into()));
            if loopback && !self.configs.contains_key(host) {
                out.push(endpoint(format!("http://{host}"), repository.into()));
            }
        }
        out.dedup();
        out
    }

    /// The credentials `configs` gives an endpoint host.
    pub fn credentials(&self, host: &str) -> Option<Credentials> {
        let auth = self.configs.get(host)?.auth.as_ref()?;
        if let Some(token) = &auth.identitytoken {
            return Some(Credentials::IdentityToken(token.clone()));
        }
        if let (Some(username), Some(password)) = (&auth.username, &auth.password) {
            return Some(Credentials::Basic {
                username: username.clone(),
                password: password.clone(),
            });
        }
        let decoded = auth.auth.as_ref().and_then(|a| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.decode(a).ok()
        })?;
        let (username, password) = String::from_utf8(decoded)
            .ok()?
            .split_once(':')
            .map(|(u, p)| (u.to_string(), p.to_string()))?;
        Some(Credentials::Basic { username, password })
    }
}

fn endpoint(base: String, repository: String) -> Endpoint {
    let host = base
        .split_once("://")
        .map_or(base.as_str(), |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    Endpoint {
        base,
        repository,
        host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
mirrors:
  docker.io:
    endpoint:
      - "http://127.0.0.1:5000"
      - "mirror.example.com:5443/"
    rewrite:
      "^library/(.*)": "cache/$1"
configs:
  "mirror.example.com:5443":
    auth:
      username: alice
      password: secret
    tls:
      ca_file: /etc/ssl/ca.pem
  "quay.io":
    auth:
      auth: Ym9iOnB3
"#;

    #[test]
    fn mirrors_then_the_default_endpoint() {
        let c = RegistriesConfig::parse(EXAMPLE).unwrap();
        let e = c.endpoints("docker.io", "library/busybox", false);
        let got: Vec<_> = e
            .iter()
            .map(|e| (e.base.as_str(), e.repository.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("http://127.0.0.1:5000", "cache/busybox"),
                ("https://mirror.example.com:5443", "cache/busybox"),
                ("https://registry-1.docker.io", "library/busybox"),
            ]
        );
        assert_eq!(e[1].host, "mirror.example.com:5443");
        let l = c.endpoints("localhost:5000", "x", true);
        assert_eq!(l.len(), 2);
        assert_eq!(l[1].base, "http://localhost:5000");
    }

    #[test]
    fn credentials_from_configs() {
        let c = RegistriesConfig::parse(EXAMPLE).unwrap();
        assert_eq!(
            c.credentials("mirror.example.com:5443"),
            Some(Credentials::Basic {
                username: "alice".into(),
                password: "secret".into()
            })
        );
        assert_eq!(
            c.credentials("quay.io"),
            Some(Credentials::Basic {
                username: "bob".into(),
                password: "pw".into()
            })
        );
        assert_eq!(c.credentials("docker.io"), None);
    }

    #[test]
    fn malformed_files_name_the_field() {
        let err =
            RegistriesConfig::parse("mirrors:\n  docker.io:\n    endpoints: [x]\n").unwrap_err();
        assert!(err.contains("endpoints"), "{err}");
        let err = RegistriesConfig::parse("mirrors:\n  docker.io:\n    rewrite:\n      \"(\": x\n")
            .unwrap_err();
        assert!(err.contains("rewrite"), "{err}");
        let missing = RegistriesConfig::load(Path::new("/nonexistent/registries.yaml")).unwrap();
        assert!(missing.mirrors.is_empty());
    }
}
