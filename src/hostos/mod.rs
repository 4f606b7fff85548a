//! The host's operating system, for everything outside networking (that is
//! `crate::hostnet`): program lookup on `PATH`, file-system usage, tmpfs
//! and NFS mounts, the mount table, lazy unmounts, FIFOs. Each raw call is written once, here,
//! with its `unsafe` and its error wording, and the callers (`cli`,
//! `check_config`, the kubelet's volumes, node status and image garbage
//! collection, the runtime's exec and logger FIFOs) stay free of `libc`.
//!
//! Higher-level seams that unit tests fake (`check_config`'s host, the image
//! garbage collector's `DiskStats`) are built on these functions. Mounts,
//! unmounts and FIFOs are reached through the [`FsOps`] seam
//! ([`LinuxFsOps`] in production, [`fake::FakeFsOps`] in unit tests only), so
//! the kubelet's volumes, `crate::storage`'s claim and NFS volumes and the
//! runtime's FIFOs can be tested without root. It is the only mount seam.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

mod mounts;
mod ops;
pub use mounts::NfsHelperMissing;
pub use ops::{FsOps, LinuxFsOps, MountSpec};
#[cfg(test)]
pub mod fake;

/// Where programs are looked for when `PATH` is unset.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Root's directories, searched after `PATH` (containerd, runc and the
/// like live there, and a user's `PATH` often lacks them).
const SBIN: [&str; 2] = ["/usr/sbin", "/sbin"];

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: NUL in path", path.display()),
        )
    })
}

/// The first executable `program` on `PATH` (then in `/usr/sbin` and
/// `/sbin`), skipping any that resolves to `skip` (`rk3s kubectl` must not
/// find itself).
pub fn find_on_path(program: &str, skip: Option<&Path>) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
    std::env::split_paths(&path)
        .chain(SBIN.iter().map(PathBuf::from))
        .map(|dir| dir.join(program))
        .filter(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .find(|candidate| match (skip, candidate.canonicalize()) {
            (Some(skip), Ok(real)) => real != skip,
            _ => true,
        })
}

/// The size and the space available to unprivileged users of the file
/// system holding `path`, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsUsage {
    pub capacity: u64,
    pub available: u64,
}

/// `statvfs(2)` of `path`.
pub fn fs_usage(path: &Path) -> io::Result<FsUsage> {
    let c = c_path(path)?;
    // SAFETY: an all-zero statvfs is a valid value of the plain C struct.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `s` a valid out pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let frsize = s.f_frsize as u64;
    Ok(FsUsage {
        capacity: s.f_blocks as u64 * frsize,
        available: s.f_bavail as u64 * frsize,
    })
}

/// Mounts a tmpfs on `dir` with `options` (`mode=0777,size=…`).
pub fn mount_tmpfs(dir: &Path, options: &str) -> io::Result<()> {
    mount(&MountSpec::tmpfs(dir, options))
}

/// `mount(2)` of `spec` (no flags; everything is in its options).
pub fn mount(spec: &MountSpec) -> io::Result<()> {
    let target = c_path(&spec.target)?;
    let nul = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("NUL in {what}"));
    let source = CString::new(spec.source.as_str()).map_err(|_| nul("mount source"))?;
    let fstype = CString::new(spec.fstype.as_str()).map_err(|_| nul("file-system type"))?;
    let opts = CString::new(spec.options.as_str()).map_err(|_| nul("mount options"))?;
    // SAFETY: all pointers are valid NUL-terminated strings for the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            opts.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Detaches whatever is mounted on `path` (`umount2(MNT_DETACH)`); an error
/// when nothing is.
pub fn unmount_detach(path: &Path) -> io::Result<()> {
    let c = c_path(path)?;
    // SAFETY: `c` is a valid NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes a FIFO at `path` (mode 0600); `AlreadyExists` when something is there.
pub fn mkfifo(path: &Path) -> io::Result<()> {
    let c = c_path(path)?;
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_programs_and_skips_itself() {
        let sh = find_on_path("sh", None).expect("a shell on PATH");
        let real = sh.canonicalize().unwrap();
        assert_ne!(find_on_path("sh", Some(&real)).map(|p| p.canonicalize().unwrap()), Some(real));
        assert_eq!(find_on_path("rk3s-no-such-program", None), None);
    }

    #[test]
    fn fifos_and_usage() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        mkfifo(&p).unwrap();
        assert_eq!(mkfifo(&p).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        let u = fs_usage(dir.path()).unwrap();
        assert!(u.capacity >= u.available && u.capacity > 0);
        assert!(fs_usage(&dir.path().join("missing")).is_err());
        assert!(unmount_detach(dir.path()).is_err());
    }
}
