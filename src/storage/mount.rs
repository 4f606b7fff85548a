//! The mount seam: every mount and unmount the storage half makes goes
//! through [`Mounter`], so unit tests run the volume logic over
//! [`FakeMounter`], which records calls and keeps a mount table.
//!
//! NFS is mounted by `mount -t nfs`, which needs the `mount.nfs` helper
//! (Debian's `nfs-common`); its absence is reported as such, never as a
//! bare exit status. Whether a directory is a mount point is read from
//! `/proc/self/mountinfo`, so an agent that restarts finds its NFS mounts
//! where it left them (fail static: a killed agent never unmounts).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountError {
    #[error("mount.nfs was not found: install the nfs-common package on this node to mount NFS volumes")]
    NfsHelperMissing,
    #[error("failed to mount {device} on {target}: {reason}")]
    Mount { device: String, target: String, reason: String },
    #[error("failed to unmount {target}: {reason}")]
    Unmount { target: String, reason: String },
}

pub trait Mounter: Send + Sync {
    /// `mount -t nfs -o <options> <source> <target>`.
    fn mount_nfs(&self, source: &str, target: &Path, options: &[String]) -> Result<(), MountError>;
    /// Whether something is mounted exactly on `target`.
    fn is_mount_point(&self, target: &Path) -> bool;
    /// Every mount point at or below `dir`.
    fn mounts_under(&self, dir: &Path) -> Vec<PathBuf>;
    fn unmount(&self, target: &Path) -> Result<(), MountError>;
}

/// The host's mounts.
pub struct HostMounter;

/// Decodes the octal escapes (`\040`) of `/proc/*/mountinfo` paths.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount points listed in a mountinfo text.
pub fn mount_points(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .collect()
}

fn host_mount_points() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| mount_points(&t))
        .unwrap_or_default()
}

impl Mounter for HostMounter {
    fn mount_nfs(&self, source: &str, target: &Path, options: &[String]) -> Result<(), MountError> {
        if crate::hostos::find_on_path("mount.nfs", None).is_none() {
            return Err(MountError::NfsHelperMissing);
        }
        let mut cmd = std::process::Command::new("mount");
        cmd.args(["-t", "nfs"]);
        if !options.is_empty() {
            cmd.args(["-o", &options.join(",")]);
        }
        cmd.arg(source).arg(target);
        let err = |reason: String| MountError::Mount {
            device: source.into(),
            target: target.display().to_string(),
            reason,
        };
        let out = cmd.output().map_err(|e| err(e.to_string()))?;
        if !out.status.success() {
            let text = String::from_utf8_lossy(&out.stderr).trim().to_string();
            return Err(err(format!("{}: {text}", out.status)));
        }
        Ok(())
    }

    fn is_mount_point(&self, target: &Path) -> bool {
        host_mount_points().iter().any(|p| p == target)
    }

    fn mounts_under(&self, dir: &Path) -> Vec<PathBuf> {
        host_mount_points().into_iter().filter(|p| p.starts_with(dir)).collect()
    }

    fn unmount(&self, target: &Path) -> Result<(), MountError> {
        crate::hostos::unmount_detach(target).map_err(|e| MountError::Unmount {
            target: target.display().to_string(),
            reason: e.to_string(),
        })
    }
}

/// A recording mount table for unit tests.
#[derive(Default)]
pub struct FakeMounter {
    pub mounted: Mutex<BTreeSet<PathBuf>>,
    /// Every call, as text, in order.
    pub calls: Mutex<Vec<String>>,
    /// Behave as a host without `mount.nfs`.
    pub no_nfs_helper: bool,
}

impl Mounter for FakeMounter {
    fn mount_nfs(&self, source: &str, target: &Path, options: &[String]) -> Result<(), MountError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("mount -t nfs -o {} {source} {}", options.join(","), target.display()));
        if self.no_nfs_helper {
            return Err(MountError::NfsHelperMissing);
        }
        self.mounted.lock().unwrap().insert(target.to_path_buf());
        Ok(())
    }

    fn is_mount_point(&self, target: &Path) -> bool {
        self.mounted.lock().unwrap().contains(target)
    }

    fn mounts_under(&self, dir: &Path) -> Vec<PathBuf> {
        self.mounted.lock().unwrap().iter().filter(|p| p.starts_with(dir)).cloned().collect()
    }

    fn unmount(&self, target: &Path) -> Result<(), MountError> {
        self.calls.lock().unwrap().push(format!("umount {}", target.display()));
        self.mounted.lock().unwrap().remove(target);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mount_points_with_escapes() {
        let info = "36 35 98:0 / /mnt/a\\040b rw,noatime master:1 - ext3 /dev/root rw\n\
                    37 35 0:40 / /var/lib/rk3s/pods/u/volumes/nfs rw - nfs4 srv:/x rw\n";
        assert_eq!(
            mount_points(info),
            vec![PathBuf::from("/mnt/a b"), PathBuf::from("/var/lib/rk3s/pods/u/volumes/nfs")]
        );
    }
}
