//! The file-system seam: mounts (tmpfs, NFS), the mount table, lazy unmounts
//! and FIFOs. [`FsOps`] is the one mount seam: what the kubelet's volumes,
//! `crate::storage`'s claim and NFS volumes and the runtime's exec and logger
//! FIFOs call;
//! [`LinuxFsOps`] makes the system calls (through this module's functions)
//! and [`super::fake::FakeFsOps`] records calls for unit tests.
//!
//! The methods are synchronous: each is one short system call, made from
//! wherever the caller already is (a pod worker's sync, a runtime call).

use std::io;
use std::path::{Path, PathBuf};

/// One `mount(2)`: `source` on `target` as `fstype`, with `options` as the
/// file system's data string (`mode=0777,size=…` for tmpfs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    pub source: String,
    pub target: PathBuf,
    pub fstype: String,
    pub options: String,
}

impl MountSpec {
    /// A tmpfs on `target` with `options`.
    pub fn tmpfs(target: &Path, options: &str) -> Self {
        MountSpec {
            source: "tmpfs".into(),
            target: target.to_path_buf(),
            fstype: "tmpfs".into(),
            options: options.into(),
        }
    }
}

/// The file-system operations that need privileges or a special file.
pub trait FsOps: Send + Sync {
    /// Mounts `spec`.
    fn mount(&self, spec: &MountSpec) -> io::Result<()>;
    /// Detaches whatever is mounted on `path` (`umount2(MNT_DETACH)`); an
    /// error when nothing is.
    fn unmount_detach(&self, path: &Path) -> io::Result<()>;
    /// Makes a FIFO at `path` (mode 0600); `AlreadyExists` when something is there.
    fn mkfifo(&self, path: &Path) -> io::Result<()>;
    /// `mount -t nfs -o <options> <source> <target>`; without the
    /// `mount.nfs` helper, an error [`super::NfsHelperMissing::is`] knows.
    fn mount_nfs(&self, source: &str, target: &Path, options: &[String]) -> io::Result<()>;
    /// Every mount point at or below `dir`.
    fn mounts_under(&self, dir: &Path) -> Vec<PathBuf>;
    /// Whether something is mounted exactly on `target`.
    fn is_mount_point(&self, target: &Path) -> bool {
        self.mounts_under(target).iter().any(|p| p == target)
    }
}

/// [`FsOps`] through the kernel.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinuxFsOps;

impl FsOps for LinuxFsOps {
    fn mount(&self, spec: &MountSpec) -> io::Result<()> {
        super::mount(spec)
    }

    fn unmount_detach(&self, path: &Path) -> io::Result<()> {
        super::unmount_detach(path)
    }

    fn mkfifo(&self, path: &Path) -> io::Result<()> {
        super::mkfifo(path)
    }

    fn mount_nfs(&self, source: &str, target: &Path, options: &[String]) -> io::Result<()> {
        super::mounts::mount_nfs(source, target, options)
    }

    fn mounts_under(&self, dir: &Path) -> Vec<PathBuf> {
        super::mounts::mounts_under(dir)
    }
}
