use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use time::Duration;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::*;
use crate::pki::certs::{generate_key_and_csr, sans_of, subject_of};
use crate::pki::options::{example, SanSet};

fn opts() -> PkiOptions {
    example::options("pi-1")
}

fn parse(pem: &str) -> X509Certificate<'static> {
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    let leaked: &'static [u8] = Box::leak(der.as_ref().to_vec().into_boxed_slice());
    X509Certificate::from_der(leaked).unwrap().1
}

fn not_after(pem: &str) -> i64 {
    parse(pem).validity().not_after.timestamp()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn creates_every_file_with_the_right_mode() {
    let dir = tempfile::tempdir().unwrap();
    Pki::load_or_create(dir.path(), &opts()).unwrap();
    for key in [
        "server-ca.key",
        "client-ca.key",
        "serving-kube-apiserver.key",
        "client-admin.key",
        "client-supervisor.key",
        "client-controller.key",
        "client-scheduler.key",
        "service.key",
    ] {
        assert_eq!(mode(&dir.path().join(key)), 0o600, "{key}");
    }
    for cert in [
        "server-ca.crt",
        "client-ca.crt",
        "serving-kube-apiserver.crt",
        "client-admin.crt",
        "client-supervisor.crt",
        "client-controller.crt",
        "client-scheduler.crt",
        "service.pub",
    ] {
        assert_eq!(mode(&dir.path().join(cert)), 0o644, "{cert}");
    }
}

#[test]
fn reload_reuses_everything_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let a = Pki::load_or_create(dir.path(), &opts()).unwrap();
    let b = Pki::load_or_create(dir.path(), &opts()).unwrap();
    assert_eq!(a.ca_bundle_pem(), b.ca_bundle_pem());
    assert_eq!(a.client_ca_pem(), b.client_ca_pem());
    assert_eq!(a.ca_bundle_sha256(), b.ca_bundle_sha256());
    assert_eq!(a.serving().cert_pem, b.serving().cert_pem);
    assert_eq!(a.admin().cert_pem, b.admin().cert_pem);
    assert_eq!(a.service_account_key_pem(), b.service_account_key_pem());
    assert_eq!(
        std::fs::read(dir.path().join("server-ca.crt")).unwrap(),
        a.ca_bundle_pem()
    );
    assert_ne!(a.server_ca_pem(), a.client_ca_pem());
}

#[test]
fn serving_certificate_holds_every_san() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::load_or_create(dir.path(), &opts()).unwrap();
    let cert = parse(pki.serving().cert_pem);
    example::assert_serving_sans(&sans_of(&cert).unwrap());
    // Leaves last a year.
    let days =
        (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp()) / 86_400;
    assert!((365..=366).contains(&days), "{days}");
    assert!(!cert.is_ca());
}

#[test]
fn admin_certificate_identity() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::load_or_create(dir.path(), &opts()).unwrap();
    let (cn, orgs) = subject_of(&parse(pki.admin().cert_pem));
    assert_eq!(cn.as_deref(), Some("system:admin"));
    assert_eq!(orgs, vec!["system:masters".to_string()]);
    let (cn, _) = subject_of(&parse(pki.client(ClientRole::Scheduler).cert_pem));
    assert_eq!(cn.as_deref(), Some("system:kube-scheduler"));
    assert_eq!(pki.admin().cert_path(), dir.path().join("client-admin.crt"));
}

#[test]
fn leaf_close_to_expiry_is_renewed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::load_or_create(dir.path(), &opts()).unwrap();
    // Test hook: replace the admin certificate by one with 30 days left, same key.
    let key = KeyPair::from_pem(pki.admin().key_pem).unwrap();
    let short = certs::issue(
        &pki.client_ca,
        &ClientRole::Admin.spec(),
        &key,
        Duration::days(30),
    )
    .unwrap();
    let cert_path = pki.admin().cert_path();
    write_atomic(&cert_path, short.as_bytes(), PUBLIC_MODE).unwrap();
    let old_key = pki.admin().key_pem.to_string();
    let serving_before = pki.serving().cert_pem.to_string();
    drop(pki);

    let reloaded = Pki::load_or_create(dir.path(), &opts()).unwrap();
    let remaining_days = (not_after(reloaded.admin().cert_pem)
        - time::OffsetDateTime::now_utc().unix_timestamp())
        / 86_400;
    assert!(
        remaining_days >= 364,
        "renewed for a year, got {remaining_days} days"
    );
    assert_eq!(
        std::fs::read_to_string(&cert_path).unwrap(),
        reloaded.admin().cert_pem
    );
    assert_eq!(
        reloaded.admin().key_pem,
        old_key,
        "the key is kept across renewal"
    );
    assert_eq!(
        reloaded.serving().cert_pem,
        serving_before,
        "healthy leaves are untouched"
    );

    // A leaf with 100 days left is still fine.
    let ok = certs::issue(
        &reloaded.client_ca,
        &ClientRole::Admin.spec(),
        &key,
        Duration::days(100),
    )
    .unwrap();
    write_atomic(&cert_path, ok.as_bytes(), PUBLIC_MODE).unwrap();
    let again = Pki::load_or_create(dir.path(), &opts()).unwrap();
    assert_eq!(again.admin().cert_pem, ok);
}

#[test]
fn san_change_reissues_the_serving_certificate_only() {
    let dir = tempfile::tempdir().unwrap();
    let first = Pki::load_or_create(dir.path(), &opts()).unwrap();
    let mut more = opts();
    more.tls_sans.push("api.example.org".into());
    let second = Pki::load_or_create(dir.path(), &more).unwrap();
    assert_ne!(first.serving().cert_pem, second.serving().cert_pem);
    assert_eq!(first.serving().key_pem, second.serving().key_pem);
    assert!(sans_of(&parse(second.serving().cert_pem))
        .unwrap()
        .dns
        .contains("api.example.org"));
    assert_eq!(first.admin().cert_pem, second.admin().cert_pem);
    assert_eq!(first.ca_bundle_pem(), second.ca_bundle_pem());
    // Removing the SAN again also reissues: the certificate follows the flags exactly.
    let third = Pki::load_or_create(dir.path(), &opts()).unwrap();
    let sans: SanSet = sans_of(&parse(third.serving().cert_pem)).unwrap();
    assert!(!sans.dns.contains("api.example.org"));
}

#[test]
fn a_replaced_ca_reissues_its_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let first = Pki::load_or_create(dir.path(), &opts()).unwrap();
    std::fs::remove_file(dir.path().join("client-ca.crt")).unwrap();
    std::fs::remove_file(dir.path().join("client-ca.key")).unwrap();
    let second = Pki::load_or_create(dir.path(), &opts()).unwrap();
    assert_ne!(first.client_ca_pem(), second.client_ca_pem());
    assert_ne!(first.admin().cert_pem, second.admin().cert_pem);
    assert!(second.client_ca.signed(&parse(second.admin().cert_pem)));
    assert_eq!(first.serving().cert_pem, second.serving().cert_pem);
}

#[test]
fn mismatched_key_reissues() {
    let dir = tempfile::tempdir().unwrap();
    let first = Pki::load_or_create(dir.path(), &opts()).unwrap();
    let other = KeyPair::generate().unwrap();
    write_atomic(
        &first.admin().key_path(),
        other.serialize_pem().as_bytes(),
        SECRET_MODE,
    )
    .unwrap();
    let second = Pki::load_or_create(dir.path(), &opts()).unwrap();
    let cert = parse(second.admin().cert_pem);
    assert_eq!(
        cert.public_key().subject_public_key.data.as_ref(),
        rcgen::PublicKeyData::der_bytes(&other)
    );
}

#[test]
fn signs_agent_csrs_with_server_chosen_identities() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::load_or_create(dir.path(), &opts()).unwrap();
    let req = generate_key_and_csr("whatever-the-agent-claims").unwrap();

    let client = pki
        .sign_agent_csr(
            &AgentCert::KubeletClient {
                node_name: "pi-2".into(),
            },
            req.csr_pem.as_bytes(),
        )
        .unwrap();
    assert!(
        client.ends_with(pki.client_ca_pem()),
        "chain ends with the client CA"
    );
    let leaf = parse(&client);
    let (cn, orgs) = subject_of(&leaf);
    assert_eq!(cn.as_deref(), Some("system:node:pi-2"));
    assert_eq!(orgs, vec!["system:nodes".to_string()]);
    assert!(pki.client_ca.signed(&leaf));
    let agent_key = KeyPair::from_pem(&req.key_pem).unwrap();
    assert_eq!(
        leaf.public_key().subject_public_key.data.as_ref(),
        rcgen::PublicKeyData::der_bytes(&agent_key)
    );

    let serving = pki
        .sign_agent_csr(
            &AgentCert::KubeletServing {
                node_name: "pi-2".into(),
                node_ips: vec!["192.168.1.11".parse().unwrap()],
            },
            req.csr_pem.as_bytes(),
        )
        .unwrap();
    let leaf = parse(&serving);
    assert!(pki.server_ca.signed(&leaf));
    let sans = sans_of(&leaf).unwrap();
    assert!(sans.dns.contains("pi-2") && sans.dns.contains("localhost"));
    assert!(sans
        .ips
        .contains(&"192.168.1.11".parse::<IpAddr>().unwrap()));
    assert_eq!(subject_of(&leaf).0.as_deref(), Some("pi-2"));

    let err = pki
        .sign_agent_csr(
            &AgentCert::KubeletClient {
                node_name: "Bad_Name".into(),
            },
            req.csr_pem.as_bytes(),
        )
        .unwrap_err();
    assert!(err.to_string().contains("DNS-1123"), "{err}");
    assert!(pki
        .sign_agent_csr(&AgentCert::KubeProxy, b"garbage")
        .is_err());
}

#[test]
fn service_account_key_pair_matches() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::load_or_create(dir.path(), &opts()).unwrap();
    let key = KeyPair::from_pem(pki.service_account_key_pem()).unwrap();
    assert_eq!(key.algorithm(), &rcgen::PKCS_ECDSA_P256_SHA256);
    assert_eq!(key.public_key_pem(), pki.service_account_public_key_pem());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("service.pub")).unwrap(),
        pki.service_account_public_key_pem()
    );
}
