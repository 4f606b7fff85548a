//! Real TLS handshakes against `Pki::server_tls_config`: the stock kubectl with the admin
//! kubeconfig (full verification, client certificate seen by the server), a client without a
//! certificate (optional client auth), and clients trusting or presenting the wrong CA.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rk3s::pki::{
    client_identity, client_tls_config, write_admin_kubeconfig, Pki, PkiOptions, UserInfo,
};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

const VERSION: &str = r#"{"major":"1","minor":"32","gitVersion":"v1.32.0"}"#;

/// The identity (or `None`) of every request the server answered.
type Seen = Arc<Mutex<Vec<Option<UserInfo>>>>;

async fn serve(pki: &Pki) -> (SocketAddr, Seen) {
    let acceptor = TlsAcceptor::from(Arc::new(pki.server_tls_config().unwrap()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let record = record.clone();
            tokio::spawn(async move {
                // Failed handshakes (the wrong-CA cases) just end the connection.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let identity = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|certs| certs.first())
                    .and_then(|leaf| client_identity(leaf));
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let identity = identity.clone();
                    let record = record.clone();
                    async move {
                        record.lock().unwrap().push(identity);
                        let resp = if req.uri().path() == "/version" {
                            Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from_static(VERSION.as_bytes())))
                        } else {
                            Response::builder()
                                .status(404)
                                .body(Full::new(Bytes::new()))
                        };
                        Ok::<_, Infallible>(resp.unwrap())
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

fn admin() -> Option<UserInfo> {
    Some(UserInfo {
        name: "system:admin".into(),
        groups: vec!["system:masters".into()],
    })
}

#[tokio::test]
async fn kubectl_verifies_the_server_and_presents_the_admin_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::load_or_create(
        &dir.path().join("server/tls"),
        &PkiOptions::new("test-host"),
    )
    .unwrap();
    let (addr, seen) = serve(&pki).await;

    let kubeconfig = dir.path().join("etc/rk3s.yaml");
    let admin_files = pki.admin();
    write_admin_kubeconfig(
        &kubeconfig,
        &format!("https://127.0.0.1:{}", addr.port()),
        pki.ca_bundle_pem(),
        admin_files.cert_pem.as_bytes(),
        admin_files.key_pem.as_bytes(),
        0o600,
    )
    .unwrap();

    let out = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["version", "-o", "json"])
        .env_remove("KUBECONFIG")
        .env("HOME", dir.path())
        .output()
        .await
        .expect("kubectl must be installed for this test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kubectl failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["serverVersion"]["gitVersion"], "v1.32.0");
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty());
    assert!(seen.iter().all(|id| *id == admin()), "server saw {seen:?}");
}

#[tokio::test]
async fn optional_client_auth_and_wrong_cas() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::load_or_create(&dir.path().join("a"), &PkiOptions::new("test-host")).unwrap();
    let other = Pki::load_or_create(&dir.path().join("b"), &PkiOptions::new("test-host")).unwrap();
    let (addr, seen) = serve(&pki).await;
    let url = format!("https://127.0.0.1:{}/version", addr.port());

    // No client certificate: the handshake succeeds and the request is anonymous.
    let anonymous = reqwest::Client::builder()
        .use_preconfigured_tls(client_tls_config(pki.ca_bundle_pem(), None).unwrap())
        .build()
        .unwrap();
    let resp = anonymous.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), VERSION);
    assert_eq!(seen.lock().unwrap().as_slice(), &[None]);

    // Trusting another cluster's CA: the server certificate does not verify.
    let wrong_trust = reqwest::Client::builder()
        .use_preconfigured_tls(client_tls_config(other.ca_bundle_pem(), None).unwrap())
        .build()
        .unwrap();
    let err = wrong_trust.get(&url).send().await.unwrap_err();
    // Both CAs were created in the same second, so their names match and webpki reports a bad
    // signature rather than an unknown issuer: either way the server certificate is rejected.
    let chain = format!("{err:?}");
    assert!(chain.contains("InvalidCertificate"), "{chain}");

    // Presenting a certificate from another cluster's client CA: the server refuses it.
    let foreign = other.admin();
    let wrong_cert = reqwest::Client::builder()
        .use_preconfigured_tls(
            client_tls_config(
                pki.ca_bundle_pem(),
                Some((foreign.cert_pem.as_bytes(), foreign.key_pem.as_bytes())),
            )
            .unwrap(),
        )
        .build()
        .unwrap();
    assert!(wrong_cert.get(&url).send().await.is_err());

    // The admin certificate of this cluster is accepted and identified.
    let admin_files = pki.admin();
    let admin_client = reqwest::Client::builder()
        .use_preconfigured_tls(
            client_tls_config(
                pki.ca_bundle_pem(),
                Some((
                    admin_files.cert_pem.as_bytes(),
                    admin_files.key_pem.as_bytes(),
                )),
            )
            .unwrap(),
        )
        .build()
        .unwrap();
    assert_eq!(admin_client.get(&url).send().await.unwrap().status(), 200);
    assert_eq!(seen.lock().unwrap().as_slice(), &[None, admin()]);
}
