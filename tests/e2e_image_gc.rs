//! Image garbage collection against a real (private) containerd: one pass
//! with thresholds that always trigger (high 1%, low 0%, no minimum age) on
//! the real `statvfs` of containerd's root removes the image no container
//! uses and keeps the one a running container uses, and one imported
//! through rk3s (pinned, as airgap images are).
//!
//! Root-only: skips without root unless `RK3S_E2E=1`. The CRI logger
//! containerd spawns is the rk3s binary itself, as in production.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::containerd::Containerd;
use common::image::BusyboxImage;
use common::privilege::require_e2e;
use rk3s::agent::kubelet::image_gc::{ImageGc, ImageGcPolicy, Statvfs};
use rk3s::agent::runtime::{ContainerRuntime, ContainerSpec, ContainerState, ContainerdRuntime};

const USED: &str = "docker.io/rk3s/busybox:gc-used";
const UNUSED: &str = "docker.io/rk3s/busybox:gc-unused";
/// Imported through rk3s (the airgap path): pinned, so kept.
const AIRGAP: &str = "docker.io/rk3s/busybox:gc-airgap";

#[tokio::test]
async fn gc_removes_the_unused_image_and_keeps_the_used_one() {
    if !require_e2e("gc_removes_the_unused_image_and_keeps_the_used_one") {
        return;
    }
    let containerd = Containerd::start().expect("start containerd");
    // Different environments: different configs, so different digests.
    for (reference, which) in [(USED, "used"), (UNUSED, "unused")] {
        let tar = BusyboxImage::new(reference)
            .env("WHICH", which)
            .write(containerd.scratch())
            .expect("build image");
        containerd.import(&tar).expect("import image");
    }
    let logger = Path::new(env!("CARGO_BIN_EXE_rk3s"));
    let runtime = ContainerdRuntime::connect(containerd.socket(), &containerd.scratch().join("stdio"))
        .await
        .expect("connect")
        .with_log_binary(logger);
    let runtime: Arc<dyn ContainerRuntime> = Arc::new(runtime);
    let airgap = BusyboxImage::new(AIRGAP)
        .env("WHICH", "airgap")
        .write(containerd.scratch())
        .expect("build image");
    runtime
        .import_image(&airgap.path)
        .await
        .expect("import airgap image");
    // Importing again updates the record (target and pin) in place.
    runtime
        .import_image(&airgap.path)
        .await
        .expect("import airgap image again");

    let listed = runtime.list_images().await.expect("list images");
    for name in [USED, UNUSED] {
        let image = listed
            .iter()
            .find(|i| i.name == name)
            .unwrap_or_else(|| panic!("{name} listed in {listed:?}"));
        assert!(image.size > 0, "{name} has a size: {image:?}");
        assert!(image.created_at.is_some(), "{name} has a creation time");
        assert!(!image.pinned, "{name} imported by ctr is not pinned");
    }
    assert!(
        listed.iter().any(|i| i.name == AIRGAP && i.pinned),
        "an rk3s import is pinned: {listed:?}"
    );

    let mut spec = ContainerSpec::new("gc-uid", "gc-pod", "default", "c", USED);
    spec.command = vec!["sleep".into(), "3600".into()];
    spec.log_path = containerd.scratch().join("pods/gc/c/0.log");
    let id = runtime.create_container(&spec).await.expect("create");
    runtime.start(&id).await.expect("start");
    let status = runtime.status(&id).await.expect("status");
    assert_eq!(status.state, ContainerState::Running);

    let policy = ImageGcPolicy {
        high_threshold_percent: 1,
        low_threshold_percent: 0,
        minimum_age: Duration::ZERO,
    };
    let mut gc = ImageGc::new(
        runtime.clone(),
        Arc::new(Statvfs::new(containerd.root())),
        policy,
    );
    let report = gc.run_once(chrono::Utc::now()).await.expect("gc pass");
    assert_eq!(report.removed, vec![UNUSED.to_string()], "{report:?}");
    assert!(report.freed_bytes > 0);

    let left: Vec<String> = runtime
        .list_images()
        .await
        .expect("list images")
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert!(left.contains(&USED.to_string()), "{left:?}");
    assert!(left.contains(&AIRGAP.to_string()), "{left:?}");
    assert!(!left.contains(&UNUSED.to_string()), "{left:?}");
    assert!(
        runtime.image_exists(USED).await.expect("lookup").is_some(),
        "the used image is still unpacked"
    );
    assert_eq!(
        runtime.status(&id).await.expect("status").state,
        ContainerState::Running
    );

    runtime
        .stop(&id, Duration::from_secs(1))
        .await
        .expect("stop");
    runtime.remove(&id).await.expect("remove");
}
