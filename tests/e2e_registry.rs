//! Image pulls from a real registry into a real containerd: Debian's
//! `docker-registry` on loopback (plain HTTP, reached through the loopback
//! HTTPS → HTTP fallback), a busybox image pushed over the registry API,
//! and the agent's `ImageManager` with the real `HttpRegistry` storing and
//! unpacking it through `ContainerdRuntime`.
//!
//! Root-only: skips without root unless `RK3S_E2E=1`.
//!
//! A second registry serves HTTPS with a test CA and asks for basic auth:
//! `registries.yaml`'s `tls.ca_file` makes it trusted; without credentials
//! the pull is ErrImagePull with the 401; credentials from a
//! `kubernetes.io/dockerconfigjson` Secret (through
//! `pull_secrets::credentials_for_image`, as the pod worker does) or from
//! `configs.auth` pull it; so does `insecure_skip_verify` without the CA.
//!
//! Partial: pods are not run through the kubelet here (the worker's
//! reading of `imagePullSecrets` is not covered end to end), and the token
//! flow is not covered.

mod common;
#[path = "common/registry.rs"]
mod registry;

use std::sync::Arc;
use std::time::Instant;

use common::containerd::Containerd;
use common::image::BusyboxImage;
use common::privilege::{require_e2e, require_tools};
use registry::{DockerRegistry, Secured};
use rk3s::agent::kubelet::images::ImageManager;
use rk3s::agent::image_registry::{pull_secrets, Credentials, HttpRegistry, RegistriesConfig};
use rk3s::agent::runtime::containerd::ContainerdRuntime;
use rk3s::agent::runtime::ContainerRuntime;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_from_a_loopback_registry() {
    if !require_e2e("e2e_registry") {
        return;
    }
    require_tools("e2e_registry", &[("docker-registry", "docker-registry")]);
    // For the test's own reqwest client (the agent brings its own config).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let containerd = Containerd::start().expect("containerd");
    let registry = DockerRegistry::start().await;
    let scratch = tempfile::tempdir().unwrap();
    let tar = BusyboxImage::build(scratch.path(), "docker.io/rk3s/pushed:1").expect("image");
    let pushed = registry.push(&tar, "rk3s/busybox", "pulled").await;

    let runtime: Arc<dyn ContainerRuntime> = Arc::new(
        ContainerdRuntime::connect(containerd.socket(), &containerd.scratch().join("stdio"))
            .await
            .expect("connect"),
    );
    let images = ImageManager::new(runtime.clone(), scratch.path().join("images"))
        .with_registry(Arc::new(HttpRegistry::new().expect("client")));
    let reference = format!("{}/rk3s/busybox:pulled", registry.host());

    let started = Instant::now();
    let info = images
        .ensure(&reference, "IfNotPresent")
        .await
        .expect("pull");
    println!(
        "pull of {reference} (busybox, one layer): {:?}",
        started.elapsed()
    );
    assert_eq!(info.reference, reference);
    assert_eq!(info.digest, pushed);
    assert_eq!(info.id, tar.image_id);
    let listed = containerd
        .ctr_ok(&["images", "ls", "-q"])
        .expect("ctr images ls");
    assert!(listed.lines().any(|l| l == reference), "{listed}");

    // `Always` re-resolves the tag only: the digest is already here.
    let started = Instant::now();
    let again = images.ensure(&reference, "Always").await.expect("always");
    println!(
        "re-resolve of {reference} under Always: {:?}",
        started.elapsed()
    );
    assert_eq!(again, info);

    // Two pods at once: one pull, both get the image.
    let other = format!("{}/rk3s/busybox:other", registry.host());
    registry.push(&tar, "rk3s/busybox", "other").await;
    let (a, b) = tokio::join!(
        images.ensure(&other, "IfNotPresent"),
        images.ensure(&other, "IfNotPresent")
    );
    assert_eq!(a.expect("first").digest, pushed);
    assert_eq!(b.expect("second").digest, pushed);

    // A mirror for docker.io from registries.yaml (plain HTTP endpoint).
    registry.push(&tar, "library/busybox", "mirrored").await;
    let yaml = format!(
        "mirrors:\n  docker.io:\n    endpoint:\n      - \"{}\"\n",
        registry.base()
    );
    let config = RegistriesConfig::parse(&yaml).expect("registries.yaml");
    let mirrored = ImageManager::new(runtime.clone(), scratch.path().join("images")).with_registry(
        Arc::new(HttpRegistry::new().expect("client").with_config(config)),
    );
    let info = mirrored
        .ensure("busybox:mirrored", "IfNotPresent")
        .await
        .expect("pull through the mirror");
    assert_eq!(info.reference, "docker.io/library/busybox:mirrored");
    assert_eq!(info.digest, pushed);

    let missing = format!("{}/rk3s/busybox:nope", registry.host());
    let err = images
        .ensure(&missing, "IfNotPresent")
        .await
        .expect_err("a wrong tag fails");
    assert_eq!(err.reason, "ErrImagePull");
    assert!(
        err.message.starts_with(&format!(
            "failed to pull and unpack image \"{missing}\": failed to resolve reference \"{missing}\":"
        )) && err.message.ends_with("not found"),
        "{}",
        err.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_with_credentials_over_tls() {
    if !require_e2e("e2e_registry") {
        return;
    }
    require_tools("e2e_registry", &[("docker-registry", "docker-registry")]);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let containerd = Containerd::start().expect("containerd");
    let secured = Secured::generate();
    let registry = DockerRegistry::start_secured(&secured).await;
    let scratch = tempfile::tempdir().unwrap();
    let tar = BusyboxImage::build(scratch.path(), "docker.io/rk3s/private:1").expect("image");
    let pushed = registry.push(&tar, "rk3s/private", "secret").await;
    registry.push(&tar, "rk3s/private", "configs").await;
    let runtime: Arc<dyn ContainerRuntime> = Arc::new(
        ContainerdRuntime::connect(containerd.socket(), &containerd.scratch().join("stdio"))
            .await
            .expect("connect"),
    );
    let host = registry.host();
    let manager = |yaml: String| {
        let config = RegistriesConfig::parse(&yaml).expect("registries.yaml");
        ImageManager::new(runtime.clone(), scratch.path().join("images")).with_registry(Arc::new(
            HttpRegistry::new().expect("client").with_config(config),
        ))
    };
    let reference = format!("{host}/rk3s/private:secret");

    // The system roots do not know the test CA.
    let untrusted = manager(String::new())
        .ensure(&reference, "IfNotPresent")
        .await
        .expect_err("an unknown CA fails");
    assert_eq!(untrusted.reason, "ErrImagePull");

    let tls_only = format!(
        "configs:\n  \"{host}\":\n    tls:\n      ca_file: {}\n",
        secured.ca_file().display()
    );
    let images = manager(tls_only);
    let err = images
        .ensure(&reference, "IfNotPresent")
        .await
        .expect_err("no credentials");
    println!("without credentials: {}", err.message);
    assert_eq!(err.reason, "ErrImagePull");
    assert!(
        err.message.contains("401") || err.message.to_lowercase().contains("unauthorized"),
        "{}",
        err.message
    );

    // A dockerconfigjson Secret keyed the way `kubectl create secret
    // docker-registry --docker-server=https://HOST/` writes it.
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        registry::USER,
        registry::PASSWORD
    ));
    let body = serde_json::json!({"auths": {format!("https://{host}/"): {"auth": auth}}});
    let secret = k8s_openapi::api::core::v1::Secret {
        type_: Some("kubernetes.io/dockerconfigjson".into()),
        data: Some(std::collections::BTreeMap::from([(
            ".dockerconfigjson".to_string(),
            k8s_openapi::ByteString(serde_json::to_vec(&body).unwrap()),
        )])),
        ..Default::default()
    };
    let mut creds = vec![Credentials::Basic {
        username: registry::USER.into(),
        password: "wrong".into(),
    }];
    creds.extend(pull_secrets::credentials_for_image(&reference, &[secret]));
    assert_eq!(creds.len(), 2);
    let info = images
        .ensure_with(&reference, "IfNotPresent", &creds)
        .await
        .expect("pull with the Secret's credentials");
    assert_eq!(info.digest, pushed);

    // The same registry with `configs.auth` instead of a Secret.
    let with_auth = format!(
        "configs:\n  \"{host}\":\n    auth:\n      username: {}\n      password: {}\n    tls:\n      ca_file: {}\n",
        registry::USER,
        registry::PASSWORD,
        secured.ca_file().display()
    );
    let other = format!("{host}/rk3s/private:configs");
    let info = manager(with_auth)
        .ensure(&other, "IfNotPresent")
        .await
        .expect("pull with registries.yaml credentials");
    assert_eq!(info.digest, pushed);
    assert_eq!(info.reference, other);

    // `insecure_skip_verify` instead of the CA.
    let skip = format!("configs:\n  \"{host}\":\n    tls:\n      insecure_skip_verify: true\n");
    registry.push(&tar, "rk3s/private", "skip").await;
    let info = manager(skip)
        .ensure_with(
            &format!("{host}/rk3s/private:skip"),
            "IfNotPresent",
            &creds[1..],
        )
        .await
        .expect("pull without verifying the certificate");
    assert_eq!(info.digest, pushed);
}
