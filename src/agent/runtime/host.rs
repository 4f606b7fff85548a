//! What the runtime reads from or tidies on the host file system directly,
//! beside containerd: files inside an image's layers, and cgroups.

use std::path::{Path, PathBuf};

/// A regular file of the image (`rel` without a leading `/`) read from the
/// snapshot's layer directories, topmost first; empty when absent. Symlinks
/// are not followed: they would resolve against the host's root.
pub(super) fn read_image_file(mounts: &[containerd_client::types::Mount], rel: &str) -> String {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for m in mounts {
        match m.r#type.as_str() {
            "overlay" => {
                for o in &m.options {
                    if let Some(upper) = o.strip_prefix("upperdir=") {
                        dirs.insert(0, PathBuf::from(upper));
                    }
                    if let Some(lower) = o.strip_prefix("lowerdir=") {
                        dirs.extend(lower.split(':').map(PathBuf::from));
                    }
                }
            }
            "bind" => dirs.push(PathBuf::from(&m.source)),
            _ => {}
        }
    }
    dirs.iter()
        .map(|d| d.join(rel))
        .find(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file()))
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default()
}

/// How many OOM kills the cgroup at `path` has seen (v2, then v1 layout).
pub(super) fn oom_kills(path: &str) -> Option<u64> {
    let candidates = [
        format!("/sys/fs/cgroup{path}/memory.events"),
        format!("/sys/fs/cgroup/memory{path}/memory.oom_control"),
    ];
    candidates.iter().find_map(|file| {
        let text = std::fs::read_to_string(file).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
    })
}

/// Removes the pod-level parent of a container cgroup (runc removes the
/// container's own) once no container of the pod is left in it. A pod with
/// live containers keeps it: `rmdir` of a non-empty cgroup fails harmlessly.
pub(super) fn remove_pod_cgroup_if_empty(container_cgroup: &str) {
    let Some(pod) = Path::new(container_cgroup).parent() else {
        return;
    };
    let pod = pod.strip_prefix("/").unwrap_or(pod);
    let mut dirs = vec![Path::new("/sys/fs/cgroup").join(pod)];
    if let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup") {
        dirs.extend(controllers.flatten().map(|c| c.path().join(pod)));
    }
    for dir in dirs {
        let _ = std::fs::remove_dir(dir);
    }
}
