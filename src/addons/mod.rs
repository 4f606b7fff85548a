//! Auto-deploying manifests (k3s's deploy controller): every `.yaml`, `.yml`
//! or `.json` file in `<data-dir>/server/manifests/` is applied to the cluster
//! at start and again whenever its contents change.
//!
//! Design:
//! - Each file is one `Addon` (`k3s.cattle.io/v1`, as k3s names the kind) in
//!   `kube-system`, named after the file without its extension, with
//!   `spec.source` (the path) and `spec.checksum` (SHA-256 of the bytes); once
//!   every object applied, `status.gvks` lists their kinds. The CRD is
//!   registered at start so `kubectl get addons -A` works.
//! - Objects go in with server-side apply under our field manager
//!   (`rk3s-deploy`), forcing ownership (the file is the source of truth);
//!   namespaced objects without a namespace land in `default`.
//! - The directory is polled every [`POLL_INTERVAL`] (2 s): a `readdir` and a
//!   `stat` per file; a file is read and hashed only when its size or mtime
//!   changed. Polling, not inotify: no new dependency, it works the same on
//!   bind mounts, NFS and editors that replace files by rename, and costs
//!   nothing measurable; k3s's own deploy controller rescans on a timer too.
//! - `<file>.skip` beside a file stops it from being applied; removing the
//!   `.skip` applies it again. Removing a file (or skipping it) leaves its
//!   objects and its Addon in the cluster, as k3s does.
//! - A file that does not parse or whose objects the API refuses gets a
//!   Warning Event on its Addon (reason `ApplyManifestFailed`) and a log line
//!   naming the file; it is retried every [`RETRY_INTERVAL`] or as soon as it
//!   changes, and never stops the other files.
//!
//! - With several servers, every server runs its own deployer on its own
//!   directory, as k3s's deploy controller does (not under a leader Lease):
//!   a file is applied at this server's start and when its copy changes, so
//!   identical copies on several servers settle rather than fight.
//!
//! Invariants: files are applied one at a time in name order; a file counts
//! as applied only when every object in it applied (so a CRD and its custom
//! resources in one file converge on the retry).
//!
//! Partial: objects a file no longer contains are not pruned (k3s prunes
//! them); `--disable NAME` switches the in-binary components, not files.

pub mod apply;
pub mod manifest;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::k8s::events::{EventRecorder, EventType};

pub const POLL_INTERVAL: Duration = Duration::from_secs(2);
pub const RETRY_INTERVAL: Duration = Duration::from_secs(30);

/// What we know about one file between passes.
#[derive(Default)]
struct FileState {
    /// `(mtime, len)` when last read.
    stamp: Option<(SystemTime, u64)>,
    /// The checksum applied successfully.
    applied: Option<String>,
    /// The checksum that last failed, and when.
    failed: Option<(String, Instant)>,
}

/// The deployer: owns the per-file state of one manifests directory.
pub struct Deployer {
    client: kube::Client,
    dir: PathBuf,
    events: EventRecorder,
    files: HashMap<PathBuf, FileState>,
}

impl Deployer {
    pub fn new(client: kube::Client, dir: &Path) -> Self {
        Deployer {
            events: EventRecorder::new(client.clone(), "deploy"),
            client,
            dir: dir.to_path_buf(),
            files: HashMap::new(),
        }
    }

    /// Registers the Addon CRD and waits (bounded) until it is served.
    pub async fn prepare(&self) -> Result<(), apply::ApplyError> {
        apply::ensure_crd(&self.client).await?;
        let gvk = kube::core::GroupVersionKind::gvk(apply::ADDON_GROUP, apply::ADDON_VERSION, apply::ADDON_KIND);
        for _ in 0..100 {
            if kube::discovery::pinned_kind(&self.client, &gvk).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// One pass over the directory.
    pub async fn pass(&mut self) {
        let names = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect::<Vec<_>>(),
            Err(e) => {
                tracing::debug!(dir = %self.dir.display(), "failed to read the manifests directory: {e}");
                return;
            }
        };
        for file in manifest::select(&self.dir, &names) {
            let state = self.files.entry(file.path.clone()).or_default();
            if file.skipped {
                if state.applied.take().is_some() || state.stamp.is_none() {
                    tracing::info!(file = %file.path.display(), "skipping manifest: a .skip file is beside it");
                }
                state.stamp = Some((SystemTime::UNIX_EPOCH, 0));
                state.failed = None;
                continue;
            }
            let Ok(meta) = std::fs::metadata(&file.path) else { continue };
            let stamp = (meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), meta.len());
            let retry_due = state.failed.as_ref().is_some_and(|(_, at)| at.elapsed() >= RETRY_INTERVAL);
            if state.stamp == Some(stamp) && !retry_due {
                continue;
            }
            let bytes = match std::fs::read(&file.path) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(file = %file.path.display(), "failed to read manifest: {e}");
                    continue;
                }
            };
            state.stamp = Some(stamp);
            let sum = manifest::checksum(&bytes);
            if state.applied.as_deref() == Some(sum.as_str()) {
                continue;
            }
            if !retry_due && state.failed.as_ref().is_some_and(|(f, _)| *f == sum) {
                continue;
            }
            let result = deploy_file(&self.client, &self.events, &file, &bytes, &sum).await;
            let state = self.files.get_mut(&file.path).expect("inserted above");
            match result {
                Ok(()) => {
                    state.applied = Some(sum);
                    state.failed = None;
                }
                Err(()) => state.failed = Some((sum, Instant::now())),
            }
        }
    }

    /// Polls until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = self.prepare() => match r {
                    Ok(()) => break,
                    Err(e) => tracing::warn!("{e} (retrying)"),
                },
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
        tracing::info!(dir = %self.dir.display(), "deploying manifests");
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.pass() => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
            }
        }
    }
}

/// Applies one file; failures are logged and recorded as an Event on its Addon.
async fn deploy_file(
    client: &kube::Client,
    events: &EventRecorder,
    file: &manifest::ManifestFile,
    bytes: &[u8],
    sum: &str,
) -> Result<(), ()> {
    let source = file.path.display().to_string();
    let addon_ref = match apply::record_addon(client, &file.addon, &source, sum, None).await {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(file = %source, "{e}");
            None
        }
    };
    let outcome = match std::str::from_utf8(bytes) {
        Err(e) => Err(format!("the file is not UTF-8: {e}")),
        Ok(text) => match manifest::documents(text) {
            Err(e) => Err(e.to_string()),
            Ok(docs) => {
                let mut gvks = Vec::new();
                let mut error = None;
                for doc in &docs {
                    match apply::apply_object(client, doc).await {
                        Ok(gvk) => {
                            if !gvks.contains(&gvk) {
                                gvks.push(gvk)
                            }
                        }
                        Err(e) => {
                            error = Some(e.to_string());
                            break;
                        }
                    }
                }
                match error {
                    Some(e) => Err(e),
                    None => Ok((docs.len(), gvks)),
                }
            }
        },
    };
    match outcome {
        Ok((count, gvks)) => {
            tracing::info!(file = %source, objects = count, "applied manifest");
            if let Err(e) = apply::record_addon(client, &file.addon, &source, sum, Some(&gvks)).await {
                tracing::warn!(file = %source, "{e}");
            }
            if let Some(r) = &addon_ref {
                events
                    .record(r, EventType::Normal, "AppliedManifest", &format!("Applied manifest at \"{source}\""))
                    .await;
            }
            Ok(())
        }
        Err(e) => {
            tracing::error!(file = %source, "failed to apply manifest: {e}");
            if let Some(r) = &addon_ref {
                let msg = format!("Failed to apply manifest at \"{source}\": {e}");
                events.record(r, EventType::Warning, "ApplyManifestFailed", &msg).await;
            }
            Err(())
        }
    }
}
