//! The storage half's mount errors. Every mount, unmount and mount-table read
//! goes through `crate::hostos::FsOps`, the one mount seam (unit tests use
//! its recording fake); here its `io::Error`s get the messages a user reads.
//!
//! A killed agent never unmounts (fail static): the mount table is read from
//! the host, so a restarted agent finds its NFS mounts where it left them.

use std::path::Path;

use crate::hostos::NfsHelperMissing;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountError {
    #[error("mount.nfs was not found: install the nfs-common package on this node to mount NFS volumes")]
    NfsHelperMissing,
    #[error("failed to mount {device} on {target}: {reason}")]
    Mount { device: String, target: String, reason: String },
    #[error("failed to unmount {target}: {reason}")]
    Unmount { target: String, reason: String },
}

impl MountError {
    /// The error of mounting `device` on `target`.
    pub fn mount(device: &str, target: &Path, e: std::io::Error) -> Self {
        if NfsHelperMissing::is(&e) {
            return MountError::NfsHelperMissing;
        }
        MountError::Mount {
            device: device.into(),
            target: target.display().to_string(),
            reason: e.to_string(),
        }
    }

    /// The error of unmounting `target`.
    pub fn unmount(target: &Path, e: std::io::Error) -> Self {
        MountError::Unmount {
            target: target.display().to_string(),
            reason: e.to_string(),
        }
    }
}
