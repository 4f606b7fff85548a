//! Image garbage collection, with kubelet's policy: when the filesystem
//! holding containerd's root is at least `image-gc-high-threshold` percent
//! full, delete images no container uses, least recently used first, until
//! usage is back at `image-gc-low-threshold` percent. Images younger than
//! `minimum-image-ttl-duration` are never deleted. [`ImageGc::run`] makes a
//! pass every [`GC_PERIOD`] (kubelet's five minutes) until cancelled.
//!
//! [`plan`] is the policy, pure; [`ImageGc`] feeds it from the
//! [`ContainerRuntime`] and a [`DiskStats`] seam ([`Statvfs`] in
//! production) and deletes what it chose, logging the bytes each image frees.
//!
//! An image is a manifest digest with every name pointing at it: deleting
//! one name of a digest still in use would free nothing, so all names go
//! together or none does.
//!
//! Invariants:
//! - An image used by a container (any state, running or exited) is never
//!   removed: one name or its digest in use keeps every name of it.
//! - Nothing is removed while usage is under the high threshold, and a
//!   pass stops as soon as the bytes freed bring usage to the low one.
//! - Images pinned by containerd's CRI label (`io.cri-containerd.pinned`,
//!   set on every airgap import) are never removed.
//!
//! Partial:
//! - Only containers rk3s manages count as users (the runtime lists those);
//!   containers another client created in the `k8s.io` namespace do not
//!   protect their images.
//! - Sizes are content sizes (compressed layers, config, manifest); layers
//!   shared by several images count in each, and unpacked snapshots are not
//!   counted, so the freed estimate can be off either way. Like kubelet, the
//!   pass trusts the estimate and does not re-read the disk between deletes.
//! - "Last used" is kept in memory: after a restart an image's last use is
//!   its containerd record time until a container is seen using it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::agent::runtime::{ContainerRuntime, RuntimeError, StoredImage};

/// How often a pass runs (kubelet's `ImageGCPeriod`).
pub const GC_PERIOD: Duration = Duration::from_secs(5 * 60);

/// The thresholds, from `--kubelet-arg` (kubelet's defaults otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageGcPolicy {
    /// Percent of the disk in use at which a pass deletes images.
    pub high_threshold_percent: u8,
    /// Percent of the disk in use a pass brings usage back to.
    pub low_threshold_percent: u8,
    /// Images younger than this are kept.
    pub minimum_age: Duration,
}

impl Default for ImageGcPolicy {
    fn default() -> Self {
        Self {
            high_threshold_percent: 85,
            low_threshold_percent: 80,
            minimum_age: Duration::from_secs(120),
        }
    }
}

/// Size and free space of a filesystem, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskUsage {
    pub capacity: u64,
    /// Free to unprivileged users (`f_bavail`), as kubelet counts it.
    pub available: u64,
}

impl DiskUsage {
    /// Percent in use, rounded down (kubelet's `100 - available*100/capacity`).
    pub fn used_percent(&self) -> u64 {
        if self.capacity == 0 {
            return 0;
        }
        100 - (self.available.min(self.capacity) as u128 * 100 / self.capacity as u128) as u64
    }

    /// Bytes to free so usage is at most `low_percent`.
    pub fn bytes_over(&self, low_percent: u8) -> u64 {
        let target_available = self.capacity as u128 * (100 - low_percent.min(100) as u128) / 100;
        (target_available as u64).saturating_sub(self.available)
    }
}

/// A failure of a pass.
#[derive(Debug, thiserror::Error)]
pub enum ImageGcError {
    #[error("failed to read the disk usage of {path}: {source}")]
    Stat {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// The disk seam: how full the image filesystem is.
pub trait DiskStats: Send + Sync {
    fn usage(&self) -> Result<DiskUsage, ImageGcError>;
}

/// `statvfs(2)` of a directory on the image filesystem.
#[derive(Debug, Clone)]
pub struct Statvfs {
    pub path: PathBuf,
}

impl Statvfs {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }
}

impl DiskStats for Statvfs {
    fn usage(&self) -> Result<DiskUsage, ImageGcError> {
        statvfs(&self.path).map_err(|source| ImageGcError::Stat {
            path: self.path.clone(),
            source,
        })
    }
}

fn statvfs(path: &Path) -> std::io::Result<DiskUsage> {
    crate::hostos::fs_usage(path).map(|u| DiskUsage {
        capacity: u.capacity,
        available: u.available,
    })
}

/// One image as the policy sees it: a digest and every name for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub digest: String,
    pub names: Vec<String>,
    pub size: u64,
    /// The oldest record time of its names: what the minimum age counts from.
    pub created_at: Option<DateTime<Utc>>,
    pub last_used: Option<DateTime<Utc>>,
    pub pinned: bool,
}

/// Groups image records by digest. `last_used` holds the in-memory last
/// time a container was seen using a digest; record times stand in before.
pub fn candidates(
    images: &[StoredImage],
    last_used: &HashMap<String, DateTime<Utc>>,
) -> Vec<Candidate> {
    let mut by_digest: BTreeMap<&str, Candidate> = BTreeMap::new();
    for image in images {
        let record_time = image.updated_at.max(image.created_at);
        let c = by_digest
            .entry(image.digest.as_str())
            .or_insert_with(|| Candidate {
                digest: image.digest.clone(),
                names: Vec::new(),
                size: image.size,
                created_at: image.created_at,
                last_used: last_used.get(&image.digest).copied(),
                pinned: false,
            });
        c.names.push(image.name.clone());
        c.size = c.size.max(image.size);
        c.created_at = match (c.created_at, image.created_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        c.last_used = c.last_used.max(record_time);
        c.pinned |= image.pinned;
    }
    by_digest.into_values().collect()
}

/// The images a pass deletes, in order: none under the high threshold;
/// otherwise unused, unpinned images at least `minimum_age` old, least
/// recently used first, until their sizes cover the bytes over the low
/// threshold.
pub fn plan(
    policy: &ImageGcPolicy,
    disk: DiskUsage,
    mut images: Vec<Candidate>,
    in_use: &HashSet<String>,
    now: DateTime<Utc>,
) -> Vec<Candidate> {
    if disk.used_percent() < policy.high_threshold_percent as u64 {
        return Vec::new();
    }
    let to_free = disk.bytes_over(policy.low_threshold_percent);
    let min_age = chrono::Duration::from_std(policy.minimum_age).unwrap_or(chrono::Duration::MAX);
    images.retain(|c| {
        let used = in_use.contains(&c.digest) || c.names.iter().any(|n| in_use.contains(n));
        // No creation time: its age is unknown, so it is too young.
        let old_enough = c.created_at.is_some_and(|t| now - t >= min_age);
        !used && !c.pinned && old_enough
    });
    // Never used sorts first; ties by digest so the order is stable.
    images.sort_by(|a, b| {
        a.last_used
            .cmp(&b.last_used)
            .then_with(|| a.digest.cmp(&b.digest))
    });
    let mut freed = 0u64;
    let mut chosen = Vec::new();
    for c in images {
        if freed >= to_free {
            break;
        }
        freed += c.size;
        chosen.push(c);
    }
    chosen
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// The names deleted, in order.
    pub removed: Vec<String>,
    pub freed_bytes: u64,
}

/// The image collector of one node.
pub struct ImageGc {
    runtime: Arc<dyn ContainerRuntime>,
    disk: Arc<dyn DiskStats>,
    policy: ImageGcPolicy,
    /// Digest → last time a container was seen using it.
    last_used: HashMap<String, DateTime<Utc>>,
}

impl ImageGc {
    pub fn new(
        runtime: Arc<dyn ContainerRuntime>,
        disk: Arc<dyn DiskStats>,
        policy: ImageGcPolicy,
    ) -> Self {
        Self {
            runtime,
            disk,
            policy,
            last_used: HashMap::new(),
        }
    }

    /// One pass at time `now`.
    pub async fn run_once(&mut self, now: DateTime<Utc>) -> Result<GcReport, ImageGcError> {
        let images = self.runtime.list_images().await?;
        let containers = self.runtime.list(&BTreeMap::new()).await?;
        let mut in_use: HashSet<String> = containers.into_iter().map(|c| c.image).collect();
        // A name in use protects its digest, hence every other name of it.
        let used_digests: Vec<String> = images
            .iter()
            .filter(|i| in_use.contains(&i.name))
            .map(|i| i.digest.clone())
            .collect();
        for digest in used_digests {
            self.last_used.insert(digest.clone(), now);
            in_use.insert(digest);
        }
        let present: HashSet<&str> = images.iter().map(|i| i.digest.as_str()).collect();
        self.last_used.retain(|d, _| present.contains(d.as_str()));

        let disk = self.disk.usage()?;
        let chosen = plan(
            &self.policy,
            disk,
            candidates(&images, &self.last_used),
            &in_use,
            now,
        );
        let mut report = GcReport::default();
        for c in chosen {
            for name in &c.names {
                self.runtime.remove_image(name).await?;
                report.removed.push(name.clone());
            }
            self.last_used.remove(&c.digest);
            report.freed_bytes += c.size;
            tracing::info!(
                image = %c.names.join(","),
                digest = %c.digest,
                freed_bytes = c.size,
                "image garbage collection removed an unused image"
            );
        }
        Ok(report)
    }

    /// A pass every [`GC_PERIOD`] until `shutdown`; failures are logged
    /// and the next pass tries again. A failure that repeats unchanged is
    /// logged once (then at debug): an idle node logs nothing every pass.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut last_error: Option<String> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(GC_PERIOD) => {}
            }
            match self.run_once(Utc::now()).await {
                Ok(_) => last_error = None,
                Err(e) => {
                    let text = e.to_string();
                    if last_error.as_deref() == Some(text.as_str()) {
                        tracing::debug!(error = %e, "image garbage collection failed again");
                    } else {
                        tracing::warn!(error = %e, "image garbage collection failed (logged again only when the error changes)");
                    }
                    last_error = Some(text);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::runtime::{ContainerSpec, FakeCall, FakeRuntime, ImageInfo};

    const GIB: u64 = 1 << 30;

    struct FixedDisk(DiskUsage);

    impl DiskStats for FixedDisk {
        fn usage(&self) -> Result<DiskUsage, ImageGcError> {
            Ok(self.0)
        }
    }

    /// A 100 GiB disk with `used` GiB in use.
    fn disk(used: u64) -> DiskUsage {
        DiskUsage {
            capacity: 100 * GIB,
            available: (100 - used) * GIB,
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn stored(name: &str, digest: &str, gib: u64, age_secs: i64) -> StoredImage {
        let t = now() - chrono::Duration::seconds(age_secs);
        StoredImage {
            name: name.into(),
            digest: digest.into(),
            size: gib * GIB,
            created_at: Some(t),
            updated_at: Some(t),
            pinned: false,
        }
    }

    fn gc_with(images: &[StoredImage], used_gib: u64) -> (Arc<FakeRuntime>, ImageGc) {
        let rt = Arc::new(FakeRuntime::new());
        for i in images {
            rt.add_stored_image(i.clone());
        }
        let gc = ImageGc::new(
            rt.clone(),
            Arc::new(FixedDisk(disk(used_gib))),
            ImageGcPolicy::default(),
        );
        (rt, gc)
    }

    fn removed(rt: &FakeRuntime) -> Vec<String> {
        rt.calls()
            .into_iter()
            .filter_map(|c| match c {
                FakeCall::RemoveImage(n) => Some(n),
                _ => None,
            })
            .collect()
    }

    async fn run_container(rt: &FakeRuntime, image: &str) {
        rt.add_image(ImageInfo {
            reference: image.into(),
            id: "sha256:cfg".into(),
            digest: "sha256:x".into(),
            chain_id: "sha256:c".into(),
            config: Default::default(),
        });
        rt.create_container(&ContainerSpec::new("uid", "pod", "default", "c", image))
            .await
            .unwrap();
    }

    #[test]
    fn usage_percent_and_bytes_over() {
        assert_eq!(disk(85).used_percent(), 85);
        assert_eq!(disk(0).used_percent(), 0);
        assert_eq!(disk(90).bytes_over(80), 10 * GIB);
        assert_eq!(disk(70).bytes_over(80), 0);
        let empty = DiskUsage {
            capacity: 0,
            available: 0,
        };
        assert_eq!(empty.used_percent(), 0);
    }

    #[tokio::test]
    async fn nothing_happens_below_high() {
        let (rt, mut gc) = gc_with(&[stored("a", "sha256:a", 5, 3600)], 84);
        let report = gc.run_once(now()).await.unwrap();
        assert_eq!(report, GcReport::default());
        assert!(removed(&rt).is_empty());
        assert_eq!(rt.stored_image_names(), vec!["a".to_string()]);
    }

    #[tokio::test]
    async fn oldest_first_until_low() {
        // 88% used, low 80%: 8 GiB to free. "old" (5) and "mid" (5) cover it;
        // "new" stays.
        let images = [
            stored("new", "sha256:n", 5, 600),
            stored("old", "sha256:o", 5, 7200),
            stored("mid", "sha256:m", 5, 3600),
        ];
        let (rt, mut gc) = gc_with(&images, 88);
        let report = gc.run_once(now()).await.unwrap();
        assert_eq!(report.removed, vec!["old", "mid"]);
        assert_eq!(report.freed_bytes, 10 * GIB);
        assert_eq!(removed(&rt), vec!["old", "mid"]);
        assert_eq!(rt.stored_image_names(), vec!["new".to_string()]);
    }

    #[tokio::test]
    async fn stops_once_at_low() {
        // 90% used, low 80%: exactly 10 GiB to free; the first image does it.
        let images = [
            stored("big", "sha256:b", 10, 7200),
            stored("other", "sha256:o", 10, 3600),
        ];
        let (rt, mut gc) = gc_with(&images, 90);
        gc.run_once(now()).await.unwrap();
        assert_eq!(removed(&rt), vec!["big"]);
    }

    #[tokio::test]
    async fn images_in_use_are_never_removed() {
        // Both names of the used digest stay, even under pressure.
        let images = [
            stored("used", "sha256:u", 50, 7200),
            stored("alias", "sha256:u", 50, 7200),
            stored("free", "sha256:f", 1, 3600),
        ];
        let (rt, mut gc) = gc_with(&images, 99);
        run_container(&rt, "used").await;
        let report = gc.run_once(now()).await.unwrap();
        assert_eq!(report.removed, vec!["free"]);
        assert_eq!(
            rt.stored_image_names(),
            vec!["alias".to_string(), "used".to_string()]
        );
    }

    #[tokio::test]
    async fn ttl_is_respected() {
        let images = [
            stored("young", "sha256:y", 5, 60),
            stored("old", "sha256:o", 5, 121),
        ];
        let (rt, mut gc) = gc_with(&images, 99);
        gc.run_once(now()).await.unwrap();
        assert_eq!(removed(&rt), vec!["old"]);
        // A zero TTL lets the young one go too.
        gc.policy.minimum_age = Duration::ZERO;
        gc.run_once(now()).await.unwrap();
        assert_eq!(removed(&rt), vec!["old", "young"]);
    }

    #[tokio::test]
    async fn pinned_and_undated_images_stay() {
        let mut pinned = stored("pinned", "sha256:p", 5, 7200);
        pinned.pinned = true;
        let mut undated = stored("undated", "sha256:d", 5, 7200);
        undated.created_at = None;
        let (rt, mut gc) = gc_with(&[pinned, undated], 99);
        gc.run_once(now()).await.unwrap();
        assert!(removed(&rt).is_empty());
    }

    #[tokio::test]
    async fn recent_use_outranks_age() {
        // "a" is older but was used at the last pass; "b" goes first.
        let images = [
            stored("a", "sha256:a", 10, 7200),
            stored("b", "sha256:b", 10, 3600),
        ];
        let (rt, mut gc) = gc_with(&images, 99);
        gc.last_used
            .insert("sha256:a".into(), now() - chrono::Duration::seconds(60));
        gc.policy.low_threshold_percent = 98;
        gc.run_once(now()).await.unwrap();
        assert_eq!(removed(&rt), vec!["b"]);
    }

    #[tokio::test]
    async fn remove_failure_is_reported() {
        let (rt, mut gc) = gc_with(&[stored("a", "sha256:a", 5, 7200)], 99);
        rt.fail_next("remove_image", "boom");
        assert!(gc.run_once(now()).await.is_err());
    }
}
