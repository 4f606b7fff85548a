//! The server side of joining: k3s's supervisor endpoints, served next to the API on the same
//! port (mounted by `assemble::extra_routes`, outside the API's authentication, so every route
//! here authenticates for itself).
//!
//! | route | credentials | answer |
//! |---|---|---|
//! | `GET /cacerts` | none | the server CA PEM, byte for byte (what join tokens pin) |
//! | `GET /ping` | none | `pong` |
//! | `POST /v1-rk3s/client-kubelet.crt` | token + node password | kubelet client certificate + CA |
//! | `POST /v1-rk3s/serving-kubelet.crt` | token + node password | kubelet serving certificate + CA |
//! | `GET /v1-rk3s/client-ca.crt`, `/server-ca.crt` | token | the CA certificates |
//! | `GET /v1-rk3s/config` | token | [`ClusterConfig`] JSON (CIDRs, DNS, domain) |
//!
//! Certificate requests carry the agent's PEM CSR as the body (its key never leaves it) and the
//! headers `rk3s-Node-Name`, `rk3s-Node-Password` and `rk3s-Node-IP` (comma-separated). The
//! server derives the subject and SANs from the headers, never from the CSR
//! (`pki::AgentCert`). Credentials and node passwords: see [`credentials`].
//!
//! [`builtin_node_credentials`] gives `rk3s server`'s own node its kubelet certificates straight
//! from the PKI, with the files a joined agent would have.
//!
//! Partial: no legacy GET issuance (k3s signs a shared key for old agents), no
//! `client-kube-proxy.crt`/`client-rk3s-controller.crt` routes yet, no request limits.

pub mod credentials;

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http::{HeaderMap, StatusCode};

use self::credentials::{authenticate, check_node_password, Caller, Refusal};
use super::assemble::{ClusterSettings, Parts};
use crate::pki::join::{ClusterConfig, NodeCredentials};
use crate::pki::node_files::AgentFiles;
use crate::apiserver::auth::PeerCertificates;
use crate::pki::{AgentCert, Pki, PkiError};
use crate::store::Store;

pub use crate::pki::join::{NODE_IP_HEADER, NODE_NAME_HEADER, NODE_PASSWORD_HEADER};
/// A CSR is well under a kilobyte; anything past this is not one.
const MAX_CSR_BYTES: usize = 16 * 1024;

#[derive(Clone)]
struct JoinState {
    store: Arc<dyn Store>,
    pki: Arc<Pki>,
    settings: ClusterSettings,
    server_secret: Option<Arc<str>>,
}

/// The join routes. The server token is read from `<server_dir>/token` (created there if
/// `server::run` has not already written it, e.g. in tests).
pub fn routes(parts: &Parts) -> Router {
    let server_secret = match crate::pki::load_or_create_server_token(
        &parts.server_dir,
        None,
        parts.pki.ca_bundle_pem(),
    ) {
        Ok(token) => Some(Arc::from(token.password.as_str())),
        Err(e) => {
            tracing::error!(
                "failed to load the server token, agents can join only with bootstrap tokens: {e}"
            );
            None
        }
    };
    let state = JoinState {
        store: parts.store.clone(),
        pki: parts.pki.clone(),
        settings: parts.settings.clone(),
        server_secret,
    };
    Router::new()
        .route("/cacerts", get(cacerts))
        .route("/ping", get(ping))
        .route("/v1-rk3s/client-kubelet.crt", post(client_kubelet))
        .route("/v1-rk3s/serving-kubelet.crt", post(serving_kubelet))
        .route("/v1-rk3s/client-ca.crt", get(client_ca))
        .route("/v1-rk3s/server-ca.crt", get(server_ca))
        .route("/v1-rk3s/config", get(config))
        .with_state(state)
}

fn pem_response(body: Vec<u8>) -> Response {
    (
        [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn cacerts(State(s): State<JoinState>) -> Response {
    pem_response(s.pki.ca_bundle_pem().to_vec())
}

async fn ping() -> &'static str {
    "pong"
}

/// Authenticates a request from its headers and the TLS peer certificate.
fn caller(s: &JoinState, req: &Request) -> Result<Caller, Refusal> {
    authenticate(
        s.store.as_ref(),
        s.server_secret.as_deref(),
        req.headers(),
        req.extensions().get::<PeerCertificates>(),
    )
}

async fn client_ca(State(s): State<JoinState>, req: Request) -> Result<Response, Refusal> {
    caller(&s, &req)?;
    Ok(pem_response(s.pki.client_ca_pem().as_bytes().to_vec()))
}

async fn server_ca(State(s): State<JoinState>, req: Request) -> Result<Response, Refusal> {
    caller(&s, &req)?;
    Ok(pem_response(s.pki.server_ca_pem().as_bytes().to_vec()))
}

async fn config(State(s): State<JoinState>, req: Request) -> Result<Response, Refusal> {
    caller(&s, &req)?;
    Ok(axum::Json(cluster_config(&s.settings)).into_response())
}

/// What agents need of the server's configuration.
pub fn cluster_config(settings: &ClusterSettings) -> ClusterConfig {
    ClusterConfig {
        cluster_cidr: settings.cluster_cidr.to_string(),
        service_cidr: settings.service_cidr.to_string(),
        cluster_dns: settings.cluster_dns,
        cluster_domain: settings.cluster_domain.clone(),
        service_node_port_range: settings.service_node_port_range.to_string(),
        flannel_backend: Some(settings.flannel_backend.name().to_string()),
    }
}

async fn client_kubelet(State(s): State<JoinState>, req: Request) -> Result<Response, Refusal> {
    issue(s, req, false).await
}

async fn serving_kubelet(State(s): State<JoinState>, req: Request) -> Result<Response, Refusal> {
    issue(s, req, true).await
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .unwrap_or("")
}

fn bad_request(message: impl Into<String>) -> Refusal {
    Refusal::new(StatusCode::BAD_REQUEST, message)
}

/// Parses `rk3s-Node-IP`: comma-separated addresses, possibly empty.
pub fn parse_node_ips(text: &str) -> Result<Vec<IpAddr>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpAddr>()
                .map_err(|_| format!("{NODE_IP_HEADER} holds {s:?}, which is not an IP address"))
        })
        .collect()
}

async fn issue(s: JoinState, req: Request, serving: bool) -> Result<Response, Refusal> {
    let who = caller(&s, &req)?;
    let (parts, body) = req.into_parts();
    let node = header(&parts.headers, NODE_NAME_HEADER).to_string();
    if node.is_empty() {
        return Err(bad_request(format!(
            "the {NODE_NAME_HEADER} header is missing"
        )));
    }
    crate::pki::certs::validate_node_name(&node).map_err(|e| bad_request(e.to_string()))?;
    if let Caller::Node { name } = &who {
        if *name != node {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                format!("node {name:?} may only renew its own certificates, not {node:?}'s"),
            ));
        }
    }
    let password = header(&parts.headers, NODE_PASSWORD_HEADER).to_string();
    let node_ips = parse_node_ips(header(&parts.headers, NODE_IP_HEADER)).map_err(bad_request)?;
    let csr = axum::body::to_bytes(body, MAX_CSR_BYTES)
        .await
        .map_err(|_| bad_request("the certificate request is too large or was cut off"))?;
    if csr.is_empty() {
        return Err(bad_request(
            "send the PEM certificate request (CSR) of the node's key as the body",
        ));
    }
    let cert = if serving {
        AgentCert::KubeletServing {
            node_name: node.clone(),
            node_ips,
        }
    } else {
        AgentCert::KubeletClient {
            node_name: node.clone(),
        }
    };
    let (store, pki) = (s.store.clone(), s.pki.clone());
    let node_for_check = node.clone();
    let chain = tokio::task::spawn_blocking(move || {
        check_node_password(store.as_ref(), &node_for_check, &password)?;
        pki.sign_agent_csr(&cert, &csr)
            .map_err(|e| bad_request(e.to_string()))
    })
    .await
    .map_err(|e| Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    tracing::info!(
        node = %node,
        caller = ?who,
        kind = if serving { "serving" } else { "client" },
        "issued a kubelet certificate"
    );
    Ok(pem_response(chain.into_bytes()))
}

/// Kubelet credentials for the server's own node, issued directly from the PKI into
/// `agent_dir` (the same files a joined agent has; valid ones are reused). `server_url` is what
/// the kubelet kubeconfig points at, normally `https://127.0.0.1:<port>`.
pub fn builtin_node_credentials(
    pki: &Pki,
    node_name: &str,
    node_ips: &[IpAddr],
    agent_dir: &Path,
    server_url: &str,
) -> Result<NodeCredentials, PkiError> {
    let files = AgentFiles::new(agent_dir);
    let ca_pem = pki.ca_bundle_pem();
    let client = AgentCert::KubeletClient {
        node_name: node_name.to_string(),
    };
    let serving = AgentCert::KubeletServing {
        node_name: node_name.to_string(),
        node_ips: node_ips.to_vec(),
    };
    for (cert, cert_path, key_path) in [
        (&client, files.client_cert(), files.client_key()),
        (&serving, files.serving_cert(), files.serving_key()),
    ] {
        let ca_for_check = match cert {
            AgentCert::KubeletServing { .. } => ca_pem,
            _ => pki.client_ca_pem().as_bytes(),
        };
        if files
            .reuse_reason(&cert_path, &key_path, ca_for_check, cert)
            .is_none()
        {
            continue;
        }
        let key = files.load_or_generate_key(&key_path)?;
        let csr = crate::pki::certs::csr_for_key(&key, node_name)?;
        let chain = pki.sign_agent_csr(cert, csr.as_bytes())?;
        files.write_cert(&cert_path, &chain)?;
    }
    files.write_cas(ca_pem, pki.client_ca_pem().as_bytes())?;
    files.write_kubeconfig(server_url)?;
    Ok(files.credentials(node_name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ip_header() {
        assert_eq!(parse_node_ips("").unwrap(), Vec::<IpAddr>::new());
        assert_eq!(
            parse_node_ips("10.0.0.2, fd00::2").unwrap(),
            vec![
                "10.0.0.2".parse::<IpAddr>().unwrap(),
                "fd00::2".parse().unwrap()
            ]
        );
        assert!(parse_node_ips("10.0.0.2,pi")
            .unwrap_err()
            .contains("\"pi\""));
    }

    #[test]
    fn builtin_credentials_are_issued_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(&dir.path().join("tls"), &crate::pki::PkiOptions::new("srv"))
            .unwrap();
        let agent = dir.path().join("agent");
        let ips = ["192.168.1.5".parse().unwrap()];
        let creds =
            builtin_node_credentials(&pki, "srv", &ips, &agent, "https://127.0.0.1:6443").unwrap();
        assert_eq!(creds.node_name, "srv");
        let first = std::fs::read_to_string(&creds.serving_cert).unwrap();
        let kubeconfig = std::fs::read_to_string(&creds.kubeconfig).unwrap();
        assert!(
            kubeconfig.contains("https://127.0.0.1:6443"),
            "{kubeconfig}"
        );
        let again =
            builtin_node_credentials(&pki, "srv", &ips, &agent, "https://127.0.0.1:6443").unwrap();
        assert_eq!(std::fs::read_to_string(&again.serving_cert).unwrap(), first);
        // A new node IP needs a new serving certificate.
        let more = ["192.168.1.6".parse().unwrap()];
        builtin_node_credentials(&pki, "srv", &more, &agent, "https://127.0.0.1:6443").unwrap();
        assert_ne!(std::fs::read_to_string(&creds.serving_cert).unwrap(), first);
    }
}
