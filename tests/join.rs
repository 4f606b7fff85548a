//! Joining nodes (issue 5): `/cacerts`, CA pinning, kubelet certificates, node passwords and
//! bootstrap tokens from `rk3s token`, against the in-process server with its real PKI.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::apiserver::TestServer;
use rk3s::agent::join::{join_with, JoinError, JoinOptions};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio_util::sync::CancellationToken;
use x509_parser::prelude::{FromDer, X509Certificate};

const RK3S: &str = env!("CARGO_BIN_EXE_rk3s");

fn server_token(ts: &TestServer) -> String {
    std::fs::read_to_string(ts.data_dir().join("server/token"))
        .expect("the join routes write the server token")
        .trim()
        .to_string()
}

fn server_ca(ts: &TestServer) -> Vec<u8> {
    std::fs::read(ts.data_dir().join("server/tls/server-ca.crt")).unwrap()
}

fn client_ca(ts: &TestServer) -> Vec<u8> {
    std::fs::read(ts.data_dir().join("server/tls/client-ca.crt")).unwrap()
}

/// A node's state: its data dir and password file.
struct Node {
    dir: tempfile::TempDir,
}

impl Node {
    fn new() -> Self {
        Node {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn agent_dir(&self) -> PathBuf {
        self.dir.path().join("agent")
    }
    fn options(&self, ts: &TestServer, token: &str, name: &str) -> JoinOptions {
        JoinOptions {
            server: ts.url().to_string(),
            token: token.to_string(),
            node_name: name.to_string(),
            node_ip: None,
            agent_dir: self.agent_dir(),
            password_file: self.dir.path().join("etc/node/password"),
        }
    }
    fn join(
        &self,
        ts: &TestServer,
        token: &str,
        name: &str,
    ) -> Result<rk3s::agent::NodeCredentials, JoinError> {
        let opts = self.options(ts, token, name);
        runtime().block_on(async { join_with(&opts, &CancellationToken::new()).await })
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn https_client(ca: &[u8], identity: Option<(&[u8], &[u8])>) -> reqwest::blocking::Client {
    let tls = rk3s::pki::client_tls_config(ca, identity).unwrap();
    reqwest::blocking::Client::builder()
        .use_preconfigured_tls(tls)
        .build()
        .unwrap()
}

fn parse_cert(pem: &[u8]) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem).unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn cacerts_is_anonymous_and_the_certificate_routes_are_not() {
    let ts = TestServer::start();
    let ca = server_ca(&ts);
    let http = https_client(&ca, None);
    let resp = http.get(format!("{}/cacerts", ts.url())).send().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().unwrap().as_ref(), ca.as_slice());
    let pong = http.get(format!("{}/ping", ts.url())).send().unwrap();
    assert_eq!(pong.text().unwrap(), "pong");
    let resp = http
        .post(format!("{}/v1-rk3s/client-kubelet.crt", ts.url()))
        .header("rk3s-Node-Name", "n1")
        .body("csr")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = http
        .post(format!("{}/v1-rk3s/client-kubelet.crt", ts.url()))
        .basic_auth("node", Some("wrong"))
        .header("rk3s-Node-Name", "n1")
        .body("csr")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.text().unwrap().contains("not this server's token"));
}

#[test]
fn a_token_pinning_another_ca_is_refused_with_the_reason() {
    let ts = TestServer::start();
    let secret = rk3s::pki::JoinToken::parse(&server_token(&ts))
        .unwrap()
        .password;
    let wrong = format!("K10{}::server:{secret}", "0".repeat(64));
    let node = Node::new();
    let err = node.join(&ts, &wrong, "n1").unwrap_err();
    assert!(matches!(err, JoinError::CaMismatch { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("belongs to another cluster or server") && msg.contains(ts.url()),
        "{msg}"
    );
    assert!(!node.agent_dir().join("client-kubelet.crt").exists());
}

#[test]
fn an_agent_joins_and_a_second_machine_cannot_take_its_name() {
    let ts = TestServer::start();
    let token = server_token(&ts);
    let node = Node::new();
    let creds = node.join(&ts, &token, "n1").unwrap();
    assert_eq!(creds.node_name, "n1");
    let agent = node.agent_dir();

    // The client certificate: system:node:n1 in system:nodes, signed by the client CA.
    let client_pem = std::fs::read(agent.join("client-kubelet.crt")).unwrap();
    let der = parse_cert(&client_pem);
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let identity = rk3s::pki::client_identity(&der).unwrap();
    assert_eq!(identity.name, "system:node:n1");
    assert_eq!(identity.groups, vec!["system:nodes"]);
    let ca_der = parse_cert(&client_ca(&ts));
    let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
    cert.verify_signature(Some(ca.public_key())).unwrap();

    // The serving certificate names the node and the address it joined from.
    let serving_pem = std::fs::read(&creds.serving_cert).unwrap();
    let serving_der = parse_cert(&serving_pem);
    let (_, serving) = X509Certificate::from_der(&serving_der).unwrap();
    let sans = format!("{:?}", serving.subject_alternative_name().unwrap().unwrap());
    assert!(sans.contains("n1") && sans.contains("localhost"), "{sans}");

    for file in [
        "client-kubelet.key",
        "serving-kubelet.key",
        "kubelet.kubeconfig",
    ] {
        assert_eq!(mode(&agent.join(file)), 0o600, "{file}");
    }
    assert_eq!(mode(&node.dir.path().join("etc/node/password")), 0o600);
    let cluster = rk3s::agent::join::ClusterConfig::load(&agent).unwrap();
    assert_eq!(cluster.cluster_dns.to_string(), "10.43.0.10");
    assert_eq!(cluster.cluster_cidr, "10.42.0.0/16");

    // The kubeconfig works with kube, and the certificate with a plain HTTPS client.
    let version = runtime().block_on(async {
        common::apiserver::kube_client_for(&creds.kubeconfig)
            .await
            .apiserver_version()
            .await
    });
    assert!(version.is_ok(), "{version:?}");
    let key_pem = std::fs::read(agent.join("client-kubelet.key")).unwrap();
    let http = https_client(&server_ca(&ts), Some((&client_pem, &key_pem)));
    let resp = http.get(format!("{}/version", ts.url())).send().unwrap();
    assert_eq!(resp.status(), 200);

    // A second machine (another password) claiming n1 is refused, naming the node.
    let intruder = Node::new();
    let err = intruder.join(&ts, &token, "n1").unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, JoinError::Refused { .. }), "{err:?}");
    assert!(msg.contains("\"n1\"") && msg.contains("403"), "{msg}");
    // It may join under its own name.
    intruder.join(&ts, &token, "n2").unwrap();

    // A restart reuses valid certificates without asking the server.
    let again = node.join(&ts, &token, "n1").unwrap();
    assert_eq!(std::fs::read(&again.serving_cert).unwrap(), serving_pem);
    // The same machine rejoining (certificates lost, password kept) is let in.
    std::fs::remove_file(agent.join("client-kubelet.crt")).unwrap();
    node.join(&ts, &token, "n1").unwrap();
    assert!(agent.join("client-kubelet.crt").is_file());
}

fn rk3s_token(ts: &TestServer, args: &[&str]) -> std::process::Output {
    Command::new(RK3S)
        .arg("token")
        .args(args)
        .arg("--kubeconfig")
        .arg(ts.kubeconfig())
        .arg("--data-dir")
        .arg(ts.data_dir())
        .env_remove("KUBECONFIG")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn bootstrap_tokens_from_rk3s_token_create_join_until_deleted_or_expired() {
    let ts = TestServer::start();
    let out = rk3s_token(&ts, &["create", "--ttl", "1h", "--description", "for b1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_string();
    let parsed = rk3s::pki::JoinToken::parse(&token).unwrap();
    assert!(parsed.is_bootstrap_token(), "{token}");
    assert_eq!(
        parsed.ca_hash.as_deref(),
        Some(rk3s::pki::ca_hash(&server_ca(&ts)).as_str())
    );
    let id = parsed.password.split('.').next().unwrap().to_string();

    let out = rk3s_token(&ts, &["list"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list = text(&out.stdout);
    assert!(
        list.contains(&parsed.password) && list.contains("for b1"),
        "{list}"
    );

    let node = Node::new();
    node.join(&ts, &token, "b1").unwrap();

    let out = rk3s_token(&ts, &["delete", &id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = Node::new().join(&ts, &token, "b2").unwrap_err().to_string();
    assert!(
        err.contains("does not exist") && err.contains("401"),
        "{err}"
    );
    let out = rk3s_token(&ts, &["delete", &id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not found"));

    // An expired token (stored directly, as a token past its TTL would be) is refused.
    let mut expired = rk3s::pki::BootstrapToken::generate(None);
    expired.expiration = Some(chrono::Utc::now() - chrono::Duration::minutes(1));
    runtime().block_on(async {
        let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
            kube::Api::namespaced(ts.kube_client().await, "kube-system");
        let secret = serde_json::from_value(expired.to_secret_json()).unwrap();
        api.create(&Default::default(), &secret).await.unwrap();
    });
    let expired_token = format!("K10{}::{}", parsed.ca_hash.unwrap(), expired.token());
    let err = Node::new()
        .join(&ts, &expired_token, "b3")
        .unwrap_err()
        .to_string();
    assert!(err.contains("has expired"), "{err}");

    let out = Command::new(RK3S)
        .args(["token", "generate"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(rk3s::pki::bootstrap::is_bootstrap_token_format(
        text(&out.stdout).trim()
    ));
}

#[test]
fn the_server_token_file_survives_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let ca = b"-----BEGIN CERTIFICATE-----\nca\n-----END CERTIFICATE-----\n";
    let first = rk3s::pki::load_or_create_server_token(dir.path(), None, ca).unwrap();
    let again = rk3s::pki::load_or_create_server_token(dir.path(), None, ca).unwrap();
    assert_eq!(first, again);
    assert_eq!(mode(&dir.path().join("token")), 0o600);
    assert_eq!(mode(&dir.path().join("node-token")), 0o600);
}
