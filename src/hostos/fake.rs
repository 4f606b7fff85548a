//! A recording fake of [`FsOps`] for unit tests: it keeps the set of mount
//! points (so an unmount of something never mounted fails, as the kernel's
//! `EINVAL` does), makes FIFOs as empty regular files (so a caller's later
//! existence checks behave), records every call in order, and can be told
//! to fail the next mount or to behave as a host without `mount.nfs`.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::ops::{FsOps, MountSpec};

/// One call the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsCall {
    Mount(MountSpec),
    UnmountDetach(PathBuf),
    Mkfifo(PathBuf),
    /// `mount -t nfs -o <options> <source> <target>`.
    MountNfs {
        source: String,
        target: PathBuf,
        options: Vec<String>,
    },
}

#[derive(Default)]
struct State {
    calls: Vec<FsCall>,
    mounted: BTreeSet<PathBuf>,
    fail_next_mount: Option<io::ErrorKind>,
    no_nfs_helper: bool,
}

/// See the module docs.
#[derive(Default)]
pub struct FakeFsOps {
    state: Mutex<State>,
}

impl FakeFsOps {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every call, in order.
    pub fn calls(&self) -> Vec<FsCall> {
        self.state().calls.clone()
    }

    /// The paths mounted now.
    pub fn mounted(&self) -> BTreeSet<PathBuf> {
        self.state().mounted.clone()
    }

    /// NFS mounts fail as on a host without `mount.nfs`.
    pub fn without_nfs_helper(self) -> Self {
        self.state().no_nfs_helper = true;
        self
    }

    /// The next mount fails with `kind`.
    pub fn fail_next_mount(&self, kind: io::ErrorKind) {
        self.state().fail_next_mount = Some(kind);
    }
}

impl FsOps for FakeFsOps {
    fn mount(&self, spec: &MountSpec) -> io::Result<()> {
        let mut s = self.state();
        s.calls.push(FsCall::Mount(spec.clone()));
        if let Some(kind) = s.fail_next_mount.take() {
            return Err(io::Error::new(kind, "fake mount failure"));
        }
        if !spec.target.is_dir() {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        s.mounted.insert(spec.target.clone());
        Ok(())
    }

    fn unmount_detach(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state();
        s.calls.push(FsCall::UnmountDetach(path.to_path_buf()));
        if s.mounted.remove(path) {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(libc::EINVAL))
        }
    }

    fn mkfifo(&self, path: &Path) -> io::Result<()> {
        self.state().calls.push(FsCall::Mkfifo(path.to_path_buf()));
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map(|_| ())
    }

    fn mount_nfs(&self, source: &str, target: &Path, options: &[String]) -> io::Result<()> {
        let mut s = self.state();
        s.calls.push(FsCall::MountNfs {
            source: source.into(),
            target: target.to_path_buf(),
            options: options.to_vec(),
        });
        if s.no_nfs_helper {
            return Err(super::NfsHelperMissing::error());
        }
        s.mounted.insert(target.to_path_buf());
        Ok(())
    }

    fn mounts_under(&self, dir: &Path) -> Vec<PathBuf> {
        self.state()
            .mounted
            .iter()
            .filter(|p| p.starts_with(dir))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_mounts_and_refuses_unmounting_what_is_not_mounted() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FakeFsOps::new();
        let spec = MountSpec::tmpfs(dir.path(), "mode=0777");
        fs.mount(&spec).unwrap();
        assert!(fs.mounted().contains(dir.path()));
        fs.unmount_detach(dir.path()).unwrap();
        assert!(fs.unmount_detach(dir.path()).is_err());
        fs.fail_next_mount(io::ErrorKind::PermissionDenied);
        assert_eq!(
            fs.mount(&spec).unwrap_err().kind(),
            io::ErrorKind::PermissionDenied
        );
        let fifo = dir.path().join("f");
        fs.mkfifo(&fifo).unwrap();
        assert_eq!(fs.mkfifo(&fifo).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(
            fs.calls(),
            vec![
                FsCall::Mount(spec.clone()),
                FsCall::UnmountDetach(dir.path().to_path_buf()),
                FsCall::UnmountDetach(dir.path().to_path_buf()),
                FsCall::Mount(spec),
                FsCall::Mkfifo(fifo.clone()),
                FsCall::Mkfifo(fifo),
            ]
        );
    }
}
