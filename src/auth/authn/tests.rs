use super::*;
use crate::apiserver::testing::MemoryStore;
use crate::pki::jwt::{KubeClaims, ObjectRef};
use serde_json::json;

fn setup() -> (Arc<MemoryStore>, ClusterAuthenticator) {
    let store = Arc::new(MemoryStore::new());
    let key = rcgen::KeyPair::generate().unwrap();
    let keys =
        TokenKeys::new(&key.serialize_pem(), &key.public_key_pem(), "cluster.local").unwrap();
    let a = ClusterAuthenticator::new(store.clone(), Arc::new(keys));
    (store, a)
}

fn bearer(token: &str) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    h.insert(
        http::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    h
}

fn authn(a: &ClusterAuthenticator, h: &http::HeaderMap) -> Authn {
    a.authenticate(&AuthnRequest {
        headers: h,
        peer_certificates: None,
    })
}

/// Stores ServiceAccount default/app with `uid`.
fn create_app_account(store: &MemoryStore, uid: &str) {
    store
        .create(
            "/registry/serviceaccounts/default/app",
            json!({"metadata": {"name": "app", "uid": uid}})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
}

/// Claims of a token of ServiceAccount default/app (uid sa-1) for the API
/// server, valid for ten minutes, bound to `pod` if given.
fn app_claims(pod: Option<ObjectRef>) -> Claims {
    let now = chrono::Utc::now().timestamp();
    Claims {
        iss: "https://kubernetes.default.svc.cluster.local".into(),
        sub: "system:serviceaccount:default:app".into(),
        aud: vec!["https://kubernetes.default.svc.cluster.local".into()],
        exp: now + 600,
        iat: now,
        nbf: now,
        jti: "abc".into(),
        kubernetes: KubeClaims {
            namespace: "default".into(),
            serviceaccount: ObjectRef {
                name: "app".into(),
                uid: "sa-1".into(),
            },
            pod,
            secret: None,
            node: None,
        },
    }
}

#[test]
fn no_credentials_is_anonymous_and_junk_is_invalid() {
    let (_, a) = setup();
    assert_eq!(authn(&a, &http::HeaderMap::new()), Authn::Anonymous);
    assert!(matches!(authn(&a, &bearer("junk")), Authn::Invalid(_)));
    let mut basic = http::HeaderMap::new();
    basic.insert(http::header::AUTHORIZATION, "Basic eDp5".parse().unwrap());
    assert!(matches!(authn(&a, &basic), Authn::Invalid(_)));
}

#[test]
fn bootstrap_tokens() {
    let (store, a) = setup();
    let mut t = BootstrapToken::generate(Some(std::time::Duration::from_secs(3600)));
    store
        .create(
            &format!("/registry/secrets/kube-system/{}", t.secret_name()),
            t.to_secret_json().to_string().as_bytes(),
        )
        .unwrap();
    match authn(&a, &bearer(&t.token())) {
        Authn::User(u) => {
            assert_eq!(u.name, format!("system:bootstrap:{}", t.id));
            assert_eq!(
                u.groups,
                vec![
                    BOOTSTRAPPERS.to_string(),
                    crate::pki::bootstrap::DEFAULT_GROUP.to_string(),
                    AUTHENTICATED.to_string()
                ]
            );
        }
        other => panic!("{other:?}"),
    }
    // Wrong secret.
    let wrong = format!("{}.{}", t.id, "0000000000000000");
    assert!(matches!(authn(&a, &bearer(&wrong)), Authn::Invalid(_)));
    // Expired.
    t.id = "expird".into();
    t.expiration = Some(chrono::Utc::now() - chrono::Duration::seconds(5));
    store
        .create(
            &format!("/registry/secrets/kube-system/{}", t.secret_name()),
            t.to_secret_json().to_string().as_bytes(),
        )
        .unwrap();
    assert!(matches!(authn(&a, &bearer(&t.token())), Authn::Invalid(_)));
    // Not for authentication.
    t.id = "signin".into();
    t.expiration = None;
    t.usages = vec!["signing".into()];
    store
        .create(
            &format!("/registry/secrets/kube-system/{}", t.secret_name()),
            t.to_secret_json().to_string().as_bytes(),
        )
        .unwrap();
    assert!(matches!(authn(&a, &bearer(&t.token())), Authn::Invalid(_)));
}

#[test]
fn service_account_tokens_follow_their_objects() {
    let (store, a) = setup();
    create_app_account(&store, "sa-1");
    store
        .create(
            "/registry/pods/default/web",
            json!({"metadata": {"name": "web", "uid": "pod-1"}})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
    let claims = app_claims(Some(ObjectRef {
        name: "web".into(),
        uid: "pod-1".into(),
    }));
    let token = a.tokens.sign(&claims).unwrap();
    match authn(&a, &bearer(&token)) {
        Authn::User(u) => {
            assert_eq!(u.name, "system:serviceaccount:default:app");
            assert_eq!(u.uid, "sa-1");
            assert_eq!(
                u.groups,
                vec![
                    "system:serviceaccounts",
                    "system:serviceaccounts:default",
                    AUTHENTICATED
                ]
            );
            assert_eq!(
                u.extra["authentication.kubernetes.io/pod-name"],
                vec!["web".to_string()]
            );
        }
        other => panic!("{other:?}"),
    }
    // Another audience is not accepted by the API, but TokenReview may ask for it.
    let mut other_aud = claims.clone();
    other_aud.aud = vec!["vault".into()];
    let t2 = a.tokens.sign(&other_aud).unwrap();
    assert!(matches!(authn(&a, &bearer(&t2)), Authn::Invalid(_)));
    assert!(a.review_token(&t2, &["vault".to_string()]).is_ok());
    // The pod is deleted: the token is dead.
    store.delete("/registry/pods/default/web", None).unwrap();
    assert!(matches!(authn(&a, &bearer(&token)), Authn::Invalid(_)));
    // The ServiceAccount is recreated with a new uid: also dead.
    let mut unbound = claims.clone();
    unbound.kubernetes.pod = None;
    let t3 = a.tokens.sign(&unbound).unwrap();
    assert!(matches!(authn(&a, &bearer(&t3)), Authn::User(_)));
    store
        .delete("/registry/serviceaccounts/default/app", None)
        .unwrap();
    create_app_account(&store, "sa-2");
    assert!(matches!(authn(&a, &bearer(&t3)), Authn::Invalid(_)));
}

/// Prints what authenticating one request costs
/// (`cargo test --lib auth::authn::tests::measure -- --ignored --nocapture`).
#[test]
#[ignore]
fn measure() {
    let (store, a) = setup();
    let dir = tempfile::tempdir().unwrap();
    let pki =
        crate::pki::Pki::load_or_create(dir.path(), &crate::pki::PkiOptions::new("h")).unwrap();
    use rustls::pki_types::pem::PemObject;
    let der =
        rustls::pki_types::CertificateDer::from_pem_slice(pki.admin().cert_pem.as_bytes()).unwrap();
    let chain = vec![der];
    let empty = http::HeaderMap::new();
    let n = 10_000u32;
    let start = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(a.authenticate(&AuthnRequest {
            headers: &empty,
            peer_certificates: Some(&chain),
        }));
    }
    println!(
        "x509 client certificate: {:?} per request",
        start.elapsed() / n
    );
    create_app_account(&store, "sa-1");
    let claims = app_claims(None);
    let h = bearer(&a.tokens.sign(&claims).unwrap());
    let start = std::time::Instant::now();
    for _ in 0..n {
        assert!(matches!(authn(&a, &h), Authn::User(_)));
    }
    println!(
        "ServiceAccount JWT (ES256 verify + store get): {:?} per request",
        start.elapsed() / n
    );
}
