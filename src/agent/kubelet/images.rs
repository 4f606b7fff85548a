//! Images for pods: `imagePullPolicy` semantics over what containerd holds,
//! pulls from registries (through the [`Registry`] seam), and the airgap
//! folder `<data-dir>/agent/images/` whose `*.tar` files are imported at
//! start and whenever new ones appear.
//!
//! Invariants: concurrent pulls of one reference are one pull (the others
//! wait for it, then find the image); `Always` only re-resolves the tag
//! and downloads nothing when containerd already holds that digest.
//!
//! Credentials: the pod's `imagePullSecrets` credentials (see
//! [`crate::agent::image_registry::pull_secrets`]) are tried one by one in
//! order, then the request without them, where the registry client falls
//! back to `registries.yaml`'s `configs` auth for the endpoint, else
//! anonymous. The error of the last attempt is the one reported.
//!
//! Image garbage collection is [`super::image_gc`]'s. Partial: under
//! `Always`, an image present locally is used when the registry cannot be
//! reached (airgap nodes keep working), where kubelet
//! would fail the pull.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use k8s_openapi::api::core::v1::Pod;

use super::api::PodApi;
use crate::agent::image_registry::{
    pull_secrets, Credentials, Reference, Registry, RegistryError, Scratch,
};
use crate::agent::runtime::{ContainerRuntime, ImageInfo};

pub const SCAN_PERIOD: Duration = Duration::from_secs(5);

/// `busybox` → `docker.io/library/busybox:latest`, as containerd's CRI
/// plugin normalises names.
pub fn normalize(image: &str) -> String {
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    let first = name.split('/').next().unwrap_or("");
    let has_domain =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let mut full = if has_domain {
        name.to_string()
    } else if name.contains('/') {
        format!("docker.io/{name}")
    } else {
        format!("docker.io/library/{name}")
    };
    let last = full.rsplit('/').next().unwrap_or("");
    if let Some(d) = digest {
        full.push('@');
        full.push_str(d);
    } else if !last.contains(':') {
        full.push_str(":latest");
    }
    full
}

/// The `imageID` a container status shows, as kubelet on containerd does:
/// the repo digest (`docker.io/library/busybox@sha256:…`, the manifest the
/// name points at) when known, else the image id (its config digest).
pub fn image_ref(info: &ImageInfo) -> String {
    if info.digest.is_empty() {
        return info.id.clone();
    }
    let name = info.reference.split('@').next().unwrap_or_default();
    let last = name.rsplit('/').next().unwrap_or_default();
    let repo = match last.rfind(':') {
        Some(i) => &name[..name.len() - (last.len() - i)],
        None => name,
    };
    format!("{repo}@{}", info.digest)
}

/// Why an image is not available; the reason goes to the container status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullError {
    /// `ErrImagePull` or `ErrImageNeverPull`.
    pub reason: &'static str,
    pub message: String,
}

/// Buckets of `rk3s_image_pull_duration_seconds` (a Pi pulls for minutes).
const PULL_BUCKETS: &[f64] = &[0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

pub struct ImageManager {
    runtime: Arc<dyn ContainerRuntime>,
    dir: PathBuf,
    seen: Mutex<HashMap<PathBuf, SystemTime>>,
    scan_lock: tokio::sync::Mutex<()>,
    registry: Option<Arc<dyn Registry>>,
    /// One lock per reference being pulled: the dedup of concurrent pulls.
    pulling: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Counts pulls (`rk3s_image_pulls_total`, `rk3s_image_pull_duration_seconds`).
    metrics: Option<Arc<crate::metrics::prom::Registry>>,
}

impl ImageManager {
    pub fn new(runtime: Arc<dyn ContainerRuntime>, images_dir: PathBuf) -> Self {
        Self {
            runtime,
            dir: images_dir,
            seen: Mutex::new(HashMap::new()),
            scan_lock: tokio::sync::Mutex::new(()),
            registry: None,
            pulling: Mutex::new(HashMap::new()),
            metrics: None,
        }
    }

    /// Counts every pull into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::prom::Registry>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Pulls what is missing from `registry`.
    pub fn with_registry(mut self, registry: Arc<dyn Registry>) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Imports every tar in the folder that is new or changed since the
    /// last scan; returns how many were imported.
    pub async fn scan(&self) -> usize {
        let _guard = self.scan_lock.lock().await;
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut imported = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("tar") {
                continue;
            }
            let Ok(mtime) = entry.metadata().and_then(|m| m.modified()) else {
                continue;
            };
            if self.seen.lock().unwrap().get(&path) == Some(&mtime) {
                continue;
            }
            match self.runtime.import_image(&path).await {
                Ok(refs) => {
                    tracing::info!(tar = %path.display(), images = ?refs, "imported an image tarball");
                    imported += 1;
                }
                Err(e) => {
                    tracing::warn!(tar = %path.display(), error = %e, "failed to import an image tarball")
                }
            }
            // Marked even on failure: a broken tar is retried only when it changes.
            self.seen.lock().unwrap().insert(path, mtime);
        }
        imported
    }

    /// Rescans the folder every [`SCAN_PERIOD`] until `shutdown`.
    pub async fn watch(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(SCAN_PERIOD) => {}
            }
            self.scan().await;
        }
    }

    /// The image for a container under `policy` (`Always`, `IfNotPresent`,
    /// `Never`; empty means kube's default for the tag).
    pub async fn ensure(&self, image: &str, policy: &str) -> Result<ImageInfo, PullError> {
        self.ensure_with(image, policy, &[]).await
    }

    /// [`Self::ensure`] with the pod's pull credentials for the image's
    /// registry, tried in order before the registry client's own.
    pub async fn ensure_with(
        &self,
        image: &str,
        policy: &str,
        creds: &[Credentials],
    ) -> Result<ImageInfo, PullError> {
        let reference = normalize(image);
        let lookup = |r: String| async move { self.runtime.image_exists(&r).await };
        let present = lookup(reference.clone()).await.map_err(|e| PullError {
            reason: "ErrImagePull",
            message: e.to_string(),
        })?;
        let policy = match policy {
            "" if reference.ends_with(":latest") => "Always",
            "" => "IfNotPresent",
            p => p,
        };
        match (policy, present) {
            ("Never", Some(info)) => Ok(info),
            ("Never", None) => Err(PullError {
                reason: "ErrImageNeverPull",
                message: format!(
                    "Container image \"{image}\" is not present with pull policy of Never"
                ),
            }),
            ("Always", Some(info)) => {
                let Some(registry) = self.registry.clone() else {
                    return Ok(info);
                };
                let Some(r) = Reference::parse(&reference) else {
                    return Ok(info);
                };
                match resolve(registry.as_ref(), &r, creds).await {
                    Ok((digest, _)) if digest == info.digest => Ok(info),
                    Ok(_) => self.pull(&reference, creds).await,
                    Err(e) => {
                        tracing::warn!(image = %reference, error = %e, "failed to re-resolve the image; using the local copy");
                        Ok(info)
                    }
                }
            }
            (_, Some(info)) => Ok(info),
            (_, None) => {
                if self.scan().await > 0 {
                    if let Ok(Some(info)) = lookup(reference.clone()).await {
                        return Ok(info);
                    }
                }
                self.pull(&reference, creds).await
            }
        }
    }

    /// Pulls `reference` (normalized) unless a concurrent pull of it just
    /// stored it.
    async fn pull(&self, reference: &str, creds: &[Credentials]) -> Result<ImageInfo, PullError> {
        let failed = |message: String| PullError {
            reason: "ErrImagePull",
            message: format!("failed to pull and unpack image \"{reference}\": {message}"),
        };
        let Some(registry) = self.registry.clone() else {
            return Err(failed(format!(
                "not found in containerd or {} and no registry client is configured",
                self.dir.display()
            )));
        };
        let parsed = Reference::parse(reference)
            .ok_or_else(|| failed(format!("invalid reference format: {reference}")))?;
        let lock = self
            .pulling
            .lock()
            .unwrap()
            .entry(reference.to_string())
            .or_default()
            .clone();
        let held = lock.lock().await;
        let pull_started = std::time::Instant::now();
        // Whether this call fetched (a waiter that finds the image stored by
        // the pull it waited on is not a pull).
        let fetched = std::sync::atomic::AtomicBool::new(false);
        let result = async {
            let before = self.runtime.image_exists(reference).await.ok().flatten();
            let (resolved, accepted) = resolve(registry.as_ref(), &parsed, creds)
                .await
                .map_err(|e| {
                    failed(format!("failed to resolve reference \"{reference}\": {e}"))
                })?;
            if let Some(info) = before.filter(|i| i.digest == resolved) {
                return Ok(info);
            }
            let started = std::time::Instant::now();
            fetched.store(true, std::sync::atomic::Ordering::Relaxed);
            let scratch = Scratch::create().map_err(|e| failed(e.to_string()))?;
            let image = registry
                .fetch(&parsed, accepted.as_ref(), scratch.path())
                .await
                .map_err(|e| failed(e.to_string()))?;
            self.runtime
                .store_pulled(reference, &image)
                .await
                .map_err(|e| failed(e.to_string()))?;
            tracing::info!(image = %reference, digest = %image.digest, elapsed = ?started.elapsed(), "pulled an image");
            self.runtime
                .image_exists(reference)
                .await
                .ok()
                .flatten()
                .ok_or_else(|| failed("stored but not found afterwards".into()))
        }
        .await;
        let counted = result.is_err() || fetched.load(std::sync::atomic::Ordering::Relaxed);
        if let (Some(m), true) = (&self.metrics, counted) {
            let outcome = if result.is_ok() { "success" } else { "error" };
            m.inc("rk3s_image_pulls_total", "Image pulls from a registry, by result.", &[("result", outcome)], 1.0);
            m.observe(
                "rk3s_image_pull_duration_seconds",
                "How long image pulls took (resolve, fetch, unpack).",
                &[],
                pull_started.elapsed().as_secs_f64(),
                PULL_BUCKETS,
            );
        }
        drop(held);
        // The last one out removes the entry.
        let mut pulling = self.pulling.lock().unwrap();
        if Arc::strong_count(&lock) <= 2 {
            pulling.remove(reference);
        }
        result
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The credentials the pod's `imagePullSecrets` give `image`'s registry,
/// in the pod's order. A missing or unreadable Secret is skipped with a
/// warning: kubelet pulls without it.
pub async fn pod_pull_credentials(api: &dyn PodApi, pod: &Pod, image: &str) -> Vec<Credentials> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let refs = pod
        .spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.as_ref());
    let mut secrets = Vec::new();
    for r in refs.into_iter().flatten() {
        match api.secret(namespace, &r.name).await {
            Ok(Some(s)) => secrets.push(s),
            Ok(None) => {
                tracing::warn!(pod = %format!("{namespace}/{name}"), secret = %r.name, "unable to retrieve pull secret, the image pull may not succeed")
            }
            Err(e) => {
                tracing::warn!(pod = %format!("{namespace}/{name}"), secret = %r.name, error = %e, "unable to retrieve pull secret, the image pull may not succeed")
            }
        }
    }
    pull_secrets::credentials_for_image(image, &secrets)
}

/// Resolves with each of `creds` in turn, then without: the digest and
/// the credentials that worked.
async fn resolve(
    registry: &dyn Registry,
    reference: &Reference,
    creds: &[Credentials],
) -> Result<(String, Option<Credentials>), RegistryError> {
    let mut last = None;
    for c in creds.iter().map(Some).chain([None]) {
        match registry.resolve(reference, c).await {
            Ok(digest) => return Ok((digest, c.cloned())),
            Err(e) => {
                tracing::debug!(image = ?reference, error = %e, "resolve failed with these credentials");
                last = Some(e);
            }
        }
    }
    Err(last.expect("at least the attempt without credentials"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_ref_is_the_repo_digest() {
        let info = |reference: &str, digest: &str| ImageInfo {
            reference: reference.into(),
            id: "sha256:cfg".into(),
            digest: digest.into(),
            chain_id: String::new(),
            config: Default::default(),
        };
        assert_eq!(
            image_ref(&info("127.0.0.1:5000/rk3s/x:1", "sha256:m")),
            "127.0.0.1:5000/rk3s/x@sha256:m"
        );
        assert_eq!(
            image_ref(&info("docker.io/library/busybox@sha256:m", "sha256:m")),
            "docker.io/library/busybox@sha256:m"
        );
        assert_eq!(
            image_ref(&info("docker.io/library/busybox:1", "")),
            "sha256:cfg"
        );
    }

    #[test]
    fn normalizes_like_containerd() {
        assert_eq!(normalize("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(
            normalize("rk3s/busybox:test"),
            "docker.io/rk3s/busybox:test"
        );
        assert_eq!(normalize("localhost:5000/x"), "localhost:5000/x:latest");
        assert_eq!(normalize("quay.io/a/b:1"), "quay.io/a/b:1");
        assert_eq!(normalize("a@sha256:00"), "docker.io/library/a@sha256:00");
    }

    use crate::agent::image_registry::{Credentials, RegistryError};
    use crate::agent::runtime::{BlobFile, FakeCall, FakeRuntime, PulledImage};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A registry holding one image per reference, counting fetches.
    #[derive(Default)]
    struct FakeRegistry {
        digests: Mutex<HashMap<String, String>>,
        fetches: AtomicUsize,
        /// When set, only these credentials are let in.
        required: Mutex<Option<Credentials>>,
        /// The credentials of every resolve and fetch, in order.
        seen: Mutex<Vec<Option<Credentials>>>,
    }

    fn blob(digest: &str) -> BlobFile {
        BlobFile {
            path: PathBuf::from("/nonexistent"),
            digest: digest.into(),
            size: 1,
            media_type: String::new(),
        }
    }

    #[async_trait::async_trait]
    impl Registry for FakeRegistry {
        async fn resolve(
            &self,
            r: &Reference,
            creds: Option<&Credentials>,
        ) -> crate::agent::image_registry::Result<String> {
            self.seen.lock().unwrap().push(creds.cloned());
            let required = self.required.lock().unwrap().clone();
            if required.is_some() && required.as_ref() != creds {
                return Err(RegistryError::Invalid {
                    op: "authorize".into(),
                    message: "401 Unauthorized".into(),
                });
            }
            let key = format!("{}/{}:{}", r.host, r.repository, r.object);
            self.digests
                .lock()
                .unwrap()
                .get(&key)
                .cloned()
                .ok_or(RegistryError::NotFound(key))
        }

        async fn fetch(
            &self,
            r: &Reference,
            creds: Option<&Credentials>,
            _: &Path,
        ) -> crate::agent::image_registry::Result<PulledImage> {
            let digest = self.resolve(r, creds).await?;
            self.fetches.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(PulledImage {
                index: None,
                manifest: blob(&digest),
                config: blob("sha256:config"),
                layers: vec![blob("sha256:layer")],
                digest,
            })
        }
    }

    fn with_registry() -> (Arc<FakeRuntime>, Arc<FakeRegistry>, ImageManager) {
        let rt = Arc::new(FakeRuntime::new());
        let reg = Arc::new(FakeRegistry::default());
        reg.digests.lock().unwrap().insert(
            "127.0.0.1:5000/rk3s/busybox:pulled".into(),
            "sha256:m1".into(),
        );
        let m =
            ImageManager::new(rt.clone(), PathBuf::from("/nonexistent")).with_registry(reg.clone());
        (rt, reg, m)
    }

    #[tokio::test]
    async fn pulls_missing_images_once_for_concurrent_pods() {
        let (rt, reg, m) = with_registry();
        let metrics = Arc::new(crate::metrics::prom::Registry::new());
        let m = m.with_metrics(metrics.clone());
        let image = "127.0.0.1:5000/rk3s/busybox:pulled";
        let (a, b) = tokio::join!(m.ensure(image, "IfNotPresent"), m.ensure(image, ""));
        // One fetch is one pull, however many pods waited on it.
        assert_eq!(metrics.value("rk3s_image_pulls_total", &[("result", "success")]), Some(1.0));
        assert_eq!(metrics.value("rk3s_image_pull_duration_seconds", &[]), Some(1.0));
        assert_eq!(a.unwrap().digest, "sha256:m1");
        assert_eq!(b.unwrap().id, "sha256:config");
        assert_eq!(reg.fetches.load(Ordering::SeqCst), 1);
        let stored: Vec<_> = rt
            .calls()
            .into_iter()
            .filter(|c| matches!(c, FakeCall::StorePulled(..)))
            .collect();
        assert_eq!(
            stored,
            vec![FakeCall::StorePulled(image.into(), "sha256:m1".into())]
        );
        assert!(m.pulling.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn always_re_resolves_and_pulls_only_a_new_digest() {
        let (_rt, reg, m) = with_registry();
        let image = "127.0.0.1:5000/rk3s/busybox:pulled";
        m.ensure(image, "Always").await.unwrap();
        m.ensure(image, "Always").await.unwrap();
        assert_eq!(reg.fetches.load(Ordering::SeqCst), 1);
        reg.digests
            .lock()
            .unwrap()
            .insert(image.into(), "sha256:m2".into());
        assert_eq!(m.ensure(image, "Always").await.unwrap().digest, "sha256:m2");
        assert_eq!(reg.fetches.load(Ordering::SeqCst), 2);
        // IfNotPresent never asks the registry again.
        reg.digests.lock().unwrap().clear();
        assert_eq!(
            m.ensure(image, "IfNotPresent").await.unwrap().digest,
            "sha256:m2"
        );
    }

    #[tokio::test]
    async fn a_missing_tag_is_err_image_pull_not_found() {
        let (_rt, _reg, m) = with_registry();
        let err = m
            .ensure("127.0.0.1:5000/rk3s/busybox:nope", "IfNotPresent")
            .await
            .unwrap_err();
        assert_eq!(err.reason, "ErrImagePull");
        assert_eq!(
            err.message,
            "failed to pull and unpack image \"127.0.0.1:5000/rk3s/busybox:nope\": failed to resolve reference \"127.0.0.1:5000/rk3s/busybox:nope\": 127.0.0.1:5000/rk3s/busybox:nope: not found"
        );
    }

    #[tokio::test]
    async fn pod_credentials_are_tried_in_order_then_none() {
        let (_rt, reg, m) = with_registry();
        let image = "127.0.0.1:5000/rk3s/busybox:pulled";
        let cred = |u: &str| Credentials::Basic {
            username: u.into(),
            password: "pw".into(),
        };
        *reg.required.lock().unwrap() = Some(cred("good"));
        let err = m.ensure(image, "IfNotPresent").await.unwrap_err();
        assert_eq!(err.reason, "ErrImagePull");
        assert!(err.message.contains("401 Unauthorized"), "{}", err.message);
        reg.seen.lock().unwrap().clear();
        let info = m
            .ensure_with(image, "IfNotPresent", &[cred("bad"), cred("good")])
            .await
            .unwrap();
        assert_eq!(info.digest, "sha256:m1");
        assert_eq!(
            *reg.seen.lock().unwrap(),
            vec![Some(cred("bad")), Some(cred("good")), Some(cred("good"))]
        );
        // The first credentials that work are used.
        *reg.required.lock().unwrap() = None;
        reg.seen.lock().unwrap().clear();
        m.ensure_with(image, "Always", &[cred("bad")])
            .await
            .unwrap();
        assert_eq!(*reg.seen.lock().unwrap(), vec![Some(cred("bad"))]);
    }

    #[tokio::test]
    async fn pull_credentials_come_from_the_pods_secrets_in_order() {
        use k8s_openapi::api::core::v1::Secret;
        let api = crate::agent::kubelet::api::FakePodApi::default();
        let secret = |user: &str| Secret {
            type_: Some("kubernetes.io/dockerconfigjson".into()),
            data: Some(std::collections::BTreeMap::from([(
                ".dockerconfigjson".to_string(),
                k8s_openapi::ByteString(
                    format!(r#"{{"auths":{{"quay.io":{{"username":"{user}","password":"pw"}}}}}}"#)
                        .into_bytes(),
                ),
            )])),
            ..Secret::default()
        };
        for (name, user) in [("a", "alice"), ("b", "bob")] {
            api.secrets
                .lock()
                .unwrap()
                .insert(("ns".into(), name.into()), secret(user));
        }
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [], "imagePullSecrets": [{"name": "b"}, {"name": "missing"}, {"name": "a"}]},
        }))
        .unwrap();
        let users: Vec<_> = pod_pull_credentials(&api, &pod, "quay.io/x/y:1")
            .await
            .into_iter()
            .map(|c| match c {
                Credentials::Basic { username, .. } => username,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(users, vec!["bob", "alice"]);
        assert!(pod_pull_credentials(&api, &pod, "busybox").await.is_empty());
    }

    #[tokio::test]
    async fn missing_image_is_err_image_pull() {
        let rt = Arc::new(crate::agent::runtime::FakeRuntime::new());
        let m = ImageManager::new(rt, PathBuf::from("/nonexistent"));
        assert_eq!(
            m.ensure("nope:1", "IfNotPresent").await.unwrap_err().reason,
            "ErrImagePull"
        );
        assert_eq!(
            m.ensure("nope:1", "Never").await.unwrap_err().reason,
            "ErrImageNeverPull"
        );
    }
}
