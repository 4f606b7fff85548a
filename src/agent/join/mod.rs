//! The agent side of k3s's join flow: turn `--server` and `--token` into kubelet credentials.
//!
//! Steps ([`join_with`], a state machine over [`Step`]):
//! 1. Reuse: when `<data-dir>/agent/` already holds certificates for this node that the token's
//!    CA signed and that have more than 90 days left, return them without contacting the server
//!    (a rebooting Pi starts its kubelet even while the server is down).
//! 2. `GET /cacerts` without verifying TLS, and check the body's hash against the token's
//!    (`K10<hash>::…`); a mismatch stops with a message saying the token or the server is wrong.
//!    A bare token pins nothing: the first CA seen is trusted, with a warning.
//! 3. From then on TLS is verified against that CA: fetch the cluster configuration, then send
//!    CSRs for the kubelet client and serving certificates with the token (basic auth
//!    `node:<secret>`, or a bootstrap token as a bearer token) and the node password.
//! 4. Write the files ([`files`]) and return [`NodeCredentials`].
//!
//! Connection failures and server errors (5xx) are retried with capped exponential back-off
//! and jitter, logged at each attempt, until shutdown; a refused token or node password, or a
//! wrong CA, stops at once.
//!
//! The node password lives in `/etc/rk3s/node/password` (0600, created on the first join), or
//! wherever `RK3S_NODE_PASSWORD_FILE` points (read by `config`: tests, several agents on one
//! machine).
//!
//! Partial: the node IP defaults to the local address of the connection to the server (k3s
//! uses the default route's); no kube-proxy or agent-controller certificates yet.

pub mod http;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ::http::{Method, StatusCode};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use tokio_util::sync::CancellationToken;

use self::http::{Endpoint, HttpError, Response};
use crate::config::{AgentConfig, TokenSource};
use crate::pki::{self, AgentCert, JoinToken, PkiError};
use crate::pki::join::{NODE_IP_HEADER, NODE_NAME_HEADER, NODE_PASSWORD_HEADER};
pub use crate::pki::join::{ClusterConfig, NodeCredentials};
use crate::pki::node_files::AgentFiles;

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("failed to read the token file {}: {source}", path.display())]
    TokenFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to join: {0}")]
    Token(PkiError),
    #[error("failed to join: --server {0}")]
    Server(String),
    #[error("failed to join {server}: {source}")]
    CaMismatch { server: String, source: PkiError },
    #[error("failed to join {server}: {message}")]
    Refused { server: String, message: String },
    #[error("failed to join {server}: {message}")]
    Tls { server: String, message: String },
    #[error("failed to join {server}: stopped while waiting for the server")]
    Cancelled { server: String },
    #[error("failed to save the node's credentials: {0}")]
    Files(#[from] PkiError),
}

/// Everything a join needs; [`JoinOptions::from_config`] fills it from `rk3s agent`'s flags.
#[derive(Clone)]
pub struct JoinOptions {
    /// `https://host:port` of the server.
    pub server: String,
    /// The token text (`K10<hash>::node:<secret>`, `K10<hash>::<id>.<secret>` or a bare secret).
    pub token: String,
    pub node_name: String,
    /// `None`: the local address of the connection to the server.
    pub node_ip: Option<IpAddr>,
    /// `<data-dir>/agent`.
    pub agent_dir: PathBuf,
    pub password_file: PathBuf,
}

impl std::fmt::Debug for JoinOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinOptions")
            .field("server", &self.server)
            .field("node_name", &self.node_name)
            .field("node_ip", &self.node_ip)
            .field("agent_dir", &self.agent_dir)
            .field("password_file", &self.password_file)
            .finish_non_exhaustive()
    }
}

impl JoinOptions {
    pub fn from_config(config: &AgentConfig) -> Result<Self, JoinError> {
        let token = match &config.token {
            TokenSource::Value(t) => t.expose().to_string(),
            TokenSource::File(path) => std::fs::read_to_string(path)
                .map_err(|source| JoinError::TokenFile {
                    path: path.clone(),
                    source,
                })?
                .trim()
                .to_string(),
        };
        Ok(JoinOptions {
            server: config.server.to_string(),
            token,
            node_name: config.node.node_name.clone(),
            node_ip: config.node.node_ip,
            agent_dir: config.data_dir.join("agent"),
            password_file: config.node_password_file.clone(),
        })
    }
}

/// Joins the cluster at `config.server` and returns the node's credentials.
pub async fn join(
    config: &AgentConfig,
    shutdown: &CancellationToken,
) -> Result<NodeCredentials, JoinError> {
    join_with(&JoinOptions::from_config(config)?, shutdown).await
}

/// Where a join stands.
enum Step {
    /// Nothing trusted yet: fetch `/cacerts` and check it against the token.
    FetchCa,
    /// The CA is pinned: get the configuration and both certificates.
    Certificates {
        ca_pem: Vec<u8>,
    },
    Done(NodeCredentials),
}

/// Joins with explicit options (see the module docs for the steps).
pub async fn join_with(
    opts: &JoinOptions,
    shutdown: &CancellationToken,
) -> Result<NodeCredentials, JoinError> {
    let token = JoinToken::parse(&opts.token).map_err(JoinError::Token)?;
    let endpoint = Endpoint::parse(&opts.server).map_err(JoinError::Server)?;
    pki::certs::validate_node_name(&opts.node_name).map_err(JoinError::Token)?;
    let files = AgentFiles::new(&opts.agent_dir);
    let password = load_or_create_password(&opts.password_file)?;

    if let Some(creds) = reusable(opts, &token, &files) {
        tracing::info!(
            node = %opts.node_name,
            dir = %opts.agent_dir.display(),
            "reusing the kubelet certificates from an earlier join"
        );
        return Ok(creds);
    }

    let mut step = Step::FetchCa;
    loop {
        step = match step {
            Step::FetchCa => {
                tracing::info!(server = %endpoint.url, "fetching the cluster CA");
                let resp = with_retries(&endpoint, shutdown, "fetch /cacerts", || {
                    http::request(
                        &endpoint,
                        http::unverified_tls(),
                        Method::GET,
                        "/cacerts",
                        &[],
                        Vec::new(),
                    )
                })
                .await?;
                let ca_pem = resp.body.to_vec();
                token
                    .verify_ca(&ca_pem)
                    .map_err(|source| JoinError::CaMismatch {
                        server: endpoint.url.clone(),
                        source,
                    })?;
                if token.ca_hash.is_none() {
                    tracing::warn!(
                        server = %endpoint.url,
                        ca_hash = %pki::ca_hash(&ca_pem),
                        "the token pins no CA hash, so this first connection is trusted \
                         blindly; use the full K10… token to rule out a man in the middle"
                    );
                }
                Step::Certificates { ca_pem }
            }
            Step::Certificates { ca_pem } => {
                let creds = fetch_certificates(
                    opts, &token, &password, &endpoint, &ca_pem, &files, shutdown,
                )
                .await?;
                Step::Done(creds)
            }
            Step::Done(creds) => return Ok(creds),
        };
    }
}

/// The stored credentials, when they are still right for this node and token.
fn reusable(opts: &JoinOptions, token: &JoinToken, files: &AgentFiles) -> Option<NodeCredentials> {
    let ca_pem = std::fs::read(files.server_ca()).ok()?;
    let client_ca_pem = std::fs::read(files.client_ca()).ok()?;
    if token.verify_ca(&ca_pem).is_err() || !files.kubeconfig().is_file() {
        return None;
    }
    let node_ips = match opts.node_ip {
        Some(ip) => vec![ip],
        None => files.serving_cert_node_ips(),
    };
    let client = AgentCert::KubeletClient {
        node_name: opts.node_name.clone(),
    };
    let serving = AgentCert::KubeletServing {
        node_name: opts.node_name.clone(),
        node_ips,
    };
    let reasons = [
        files.reuse_reason(
            &files.client_cert(),
            &files.client_key(),
            &client_ca_pem,
            &client,
        ),
        files.reuse_reason(
            &files.serving_cert(),
            &files.serving_key(),
            &ca_pem,
            &serving,
        ),
    ];
    if let Some(reason) = reasons.into_iter().flatten().next() {
        tracing::info!(%reason, "requesting new kubelet certificates");
        return None;
    }
    Some(files.credentials(&opts.node_name))
}

async fn fetch_certificates(
    opts: &JoinOptions,
    token: &JoinToken,
    password: &str,
    endpoint: &Endpoint,
    ca_pem: &[u8],
    files: &AgentFiles,
    shutdown: &CancellationToken,
) -> Result<NodeCredentials, JoinError> {
    let tls = std::sync::Arc::new(pki::client_tls_config(ca_pem, None)?);
    let auth = authorization(token);
    let authed = [("authorization", auth.clone())];

    let config = with_retries(
        endpoint,
        shutdown,
        "fetch the cluster configuration",
        || {
            http::request(
                endpoint,
                tls.clone(),
                Method::GET,
                "/v1-rk3s/config",
                &authed,
                Vec::new(),
            )
        },
    )
    .await?;
    let node_ip = opts.node_ip.unwrap_or(config.local_ip);
    match serde_json::from_slice::<ClusterConfig>(&config.body) {
        Ok(cluster) => files.write_cluster_config(&cluster)?,
        Err(e) => tracing::warn!("ignoring the server's unreadable cluster configuration: {e}"),
    }
    let client_ca = with_retries(endpoint, shutdown, "fetch the client CA", || {
        http::request(
            endpoint,
            tls.clone(),
            Method::GET,
            "/v1-rk3s/client-ca.crt",
            &authed,
            Vec::new(),
        )
    })
    .await?;

    let headers = [
        ("authorization", auth),
        (NODE_NAME_HEADER, opts.node_name.clone()),
        (NODE_PASSWORD_HEADER, password.to_string()),
        (NODE_IP_HEADER, node_ip.to_string()),
    ];
    for (path, what, cert_path, key_path) in [
        (
            "/v1-rk3s/client-kubelet.crt",
            "issue the kubelet client certificate",
            files.client_cert(),
            files.client_key(),
        ),
        (
            "/v1-rk3s/serving-kubelet.crt",
            "issue the kubelet serving certificate",
            files.serving_cert(),
            files.serving_key(),
        ),
    ] {
        let key = files.load_or_generate_key(&key_path)?;
        let csr = pki::certs::csr_for_key(&key, &opts.node_name)?;
        let resp = with_retries(endpoint, shutdown, what, || {
            http::request(
                endpoint,
                tls.clone(),
                Method::POST,
                path,
                &headers,
                csr.clone().into_bytes(),
            )
        })
        .await?;
        files.write_cert(&cert_path, &resp.text())?;
    }
    files.write_cas(ca_pem, &client_ca.body)?;
    files.write_kubeconfig(&endpoint.url)?;
    tracing::info!(
        node = %opts.node_name,
        %node_ip,
        server = %endpoint.url,
        "joined: kubelet certificates issued"
    );
    Ok(files.credentials(&opts.node_name))
}

/// The Authorization header for a token: a bootstrap token goes as a bearer token, anything
/// else as basic auth `node:<secret>` (k3s agents always use the user `node`).
pub fn authorization(token: &JoinToken) -> String {
    if token.is_bootstrap_token() {
        format!("Bearer {}", token.password)
    } else {
        format!(
            "Basic {}",
            BASE64.encode(format!("node:{}", token.password))
        )
    }
}

/// Runs `attempt` until it gets a 2xx answer: unreachable servers and 5xx answers are retried
/// with back-off until `shutdown`; 4xx answers and TLS failures end the join.
async fn with_retries<F, Fut>(
    endpoint: &Endpoint,
    shutdown: &CancellationToken,
    what: &str,
    mut attempt: F,
) -> Result<Response, JoinError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Response, HttpError>>,
{
    let mut delay = FIRST_BACKOFF;
    for n in 1u32.. {
        let problem = tokio::select! {
            _ = shutdown.cancelled() => {
                return Err(JoinError::Cancelled { server: endpoint.url.clone() })
            }
            r = attempt() => match r {
                Ok(resp) if resp.status.is_success() => return Ok(resp),
                Ok(resp) if resp.status.is_server_error() => {
                    format!("the server answered {}: {}", resp.status, resp.text())
                }
                Ok(resp) => return Err(refused(endpoint, what, &resp)),
                Err(HttpError::Tls(message)) => {
                    return Err(JoinError::Tls { server: endpoint.url.clone(), message })
                }
                Err(HttpError::Unreachable(message)) => message,
            },
        };
        let wait = jitter(delay);
        tracing::warn!(
            attempt = n,
            retry_in = %format!("{:.1}s", wait.as_secs_f32()),
            "failed to {what}: {problem}"
        );
        tokio::select! {
            _ = shutdown.cancelled() => {
                return Err(JoinError::Cancelled { server: endpoint.url.clone() })
            }
            _ = tokio::time::sleep(wait) => {}
        }
        delay = (delay * 2).min(MAX_BACKOFF);
    }
    unreachable!("the attempt loop only ends by returning")
}

fn refused(endpoint: &Endpoint, what: &str, resp: &Response) -> JoinError {
    let hint = match resp.status {
        StatusCode::UNAUTHORIZED => {
            " (check the token: `cat /var/lib/rk3s/server/token` on the server, or `rk3s token \
             create`)"
        }
        _ => "",
    };
    JoinError::Refused {
        server: endpoint.url.clone(),
        message: format!(
            "the server refused to {what} ({}): {}{hint}",
            resp.status,
            resp.text()
        ),
    }
}

/// ±20 % so that agents restarted together do not retry in lockstep.
fn jitter(d: Duration) -> Duration {
    let factor = 0.8 + rand::random::<f64>() * 0.4;
    d.mul_f64(factor)
}

/// The node password: read from `path`, or generated and written there (0600) on first use.
pub fn load_or_create_password(path: &Path) -> Result<String, JoinError> {
    if let Some(text) = pki::files::read_optional_string(path)? {
        let text = text.trim();
        if !text.is_empty() {
            return Ok(text.to_string());
        }
    }
    let password = pki::generate_node_password();
    pki::files::write_atomic(
        path,
        format!("{password}\n").as_bytes(),
        pki::files::SECRET_MODE,
    )?;
    tracing::info!(path = %path.display(), "created the node password");
    Ok(password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node/password");
        let first = load_or_create_password(&path).unwrap();
        assert_eq!(first.len(), 32);
        assert_eq!(load_or_create_password(&path).unwrap(), first);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn authorization_header_follows_the_token_kind() {
        let server = JoinToken::parse("s3cret").unwrap();
        assert_eq!(
            authorization(&server),
            format!("Basic {}", BASE64.encode("node:s3cret"))
        );
        let bootstrap = JoinToken::parse("abcdef.0123456789abcdef").unwrap();
        assert_eq!(authorization(&bootstrap), "Bearer abcdef.0123456789abcdef");
    }

    #[test]
    fn cluster_config_json_names() {
        let c = ClusterConfig {
            cluster_cidr: "10.42.0.0/16".into(),
            service_cidr: "10.43.0.0/16".into(),
            cluster_dns: "10.43.0.10".parse().unwrap(),
            cluster_domain: "cluster.local".into(),
            service_node_port_range: "30000-32767".into(),
            flannel_backend: Some("host-gw".into()),
        };
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["clusterCIDR"], "10.42.0.0/16");
        assert_eq!(v["clusterDNS"], "10.43.0.10");
        assert_eq!(v["clusterDomain"], "cluster.local");
        assert_eq!(v["flannelBackend"], "host-gw");
        assert_eq!(serde_json::from_value::<ClusterConfig>(v.clone()).unwrap(), c);
        // An older server's answer has no backend: the agent then uses vxlan.
        let mut old = v;
        old.as_object_mut().unwrap().remove("flannelBackend");
        assert_eq!(serde_json::from_value::<ClusterConfig>(old).unwrap().flannel_backend, None);
    }

    #[tokio::test]
    async fn an_unreachable_server_is_retried_until_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        // A port nothing listens on: bind, read the port, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let opts = JoinOptions {
            server: format!("https://127.0.0.1:{port}"),
            token: "s3cret".into(),
            node_name: "n1".into(),
            node_ip: None,
            agent_dir: dir.path().join("agent"),
            password_file: dir.path().join("password"),
        };
        let shutdown = CancellationToken::new();
        let stopper = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            stopper.cancel();
        });
        let err = join_with(&opts, &shutdown).await.unwrap_err();
        assert!(matches!(err, JoinError::Cancelled { .. }), "{err}");
    }
}
