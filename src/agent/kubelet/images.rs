//! Images for pods: `imagePullPolicy` semantics over what containerd holds,
//! and the airgap folder `<data-dir>/agent/images/` whose `*.tar` files are
//! imported at start and whenever new ones appear.
//!
//! Partial: pulling from registries (and `/etc/rk3s/registries.yaml`,
//! `imagePullSecrets`) is not implemented: an image that is neither in
//! containerd nor in the images folder fails with `ErrImagePull`, then
//! `ImagePullBackOff`. No image garbage collection yet.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

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

/// Why an image is not available; the reason goes to the container status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullError {
    /// `ErrImagePull` or `ErrImageNeverPull`.
    pub reason: &'static str,
    pub message: String,
}

pub struct ImageManager {
    runtime: Arc<dyn ContainerRuntime>,
    dir: PathBuf,
    seen: Mutex<HashMap<PathBuf, SystemTime>>,
    scan_lock: tokio::sync::Mutex<()>,
}

impl ImageManager {
    pub fn new(runtime: Arc<dyn ContainerRuntime>, images_dir: PathBuf) -> Self {
        Self {
            runtime,
            dir: images_dir,
            seen: Mutex::new(HashMap::new()),
            scan_lock: tokio::sync::Mutex::new(()),
        }
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
            // `Always` would re-resolve the tag at the registry; without a
            // registry client, what containerd holds is the freshest copy.
            (_, Some(info)) => Ok(info),
            (_, None) => {
                if self.scan().await > 0 {
                    if let Ok(Some(info)) = lookup(reference.clone()).await {
                        return Ok(info);
                    }
                }
                Err(PullError {
                    reason: "ErrImagePull",
                    message: format!(
                        "failed to pull and unpack image \"{reference}\": not found in containerd or {} (pulling from registries is not implemented yet)",
                        self.dir.display()
                    ),
                })
            }
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
