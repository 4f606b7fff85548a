//! The host's mount table and NFS mounts: which paths are mount points (read
//! from `/proc/self/mountinfo`, so an agent that restarts finds the mounts
//! where it left them) and `mount -t nfs`, which needs the `mount.nfs` helper
//! (Debian's `nfs-common`); its absence is the error [`NfsHelperMissing`],
//! never a bare exit status.

use std::io;
use std::path::{Path, PathBuf};

/// The `mount.nfs` helper is not installed; carried inside the `io::Error`
/// of an NFS mount (kind `NotFound`) so callers can name the package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NfsHelperMissing;

impl std::fmt::Display for NfsHelperMissing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("mount.nfs was not found")
    }
}

impl std::error::Error for NfsHelperMissing {}

impl NfsHelperMissing {
    /// The error an NFS mount returns without the helper.
    pub fn error() -> io::Error {
        io::Error::new(io::ErrorKind::NotFound, NfsHelperMissing)
    }

    /// Whether `e` is that error.
    pub fn is(e: &io::Error) -> bool {
        e.get_ref().is_some_and(|inner| inner.is::<NfsHelperMissing>())
    }
}

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

/// Every mount point of this process's namespace at or below `dir`.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| mount_points(&t))
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// `mount -t nfs [-o <options>] <source> <target>`; [`NfsHelperMissing`]
/// without `mount.nfs`, the exit status and stderr when `mount` fails.
pub fn mount_nfs(source: &str, target: &Path, options: &[String]) -> io::Result<()> {
    if super::find_on_path("mount.nfs", None).is_none() {
        return Err(NfsHelperMissing::error());
    }
    let mut cmd = std::process::Command::new("mount");
    cmd.args(["-t", "nfs"]);
    if !options.is_empty() {
        cmd.args(["-o", &options.join(",")]);
    }
    cmd.arg(source).arg(target);
    let out = cmd.output()?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(io::Error::other(format!("{}: {text}", out.status)));
    }
    Ok(())
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

    #[test]
    fn a_missing_helper_is_recognisable() {
        assert!(NfsHelperMissing::is(&NfsHelperMissing::error()));
        assert!(!NfsHelperMissing::is(&io::Error::from(io::ErrorKind::NotFound)));
    }
}
