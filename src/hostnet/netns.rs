//! Network namespaces as files: create one (bound onto a path so it
//! outlives every process), delete it, and run code inside one.
//!
//! A namespace switch (`setns`, `unshare`) applies to the calling *thread*
//! only, so every switch happens on a fresh, dedicated OS thread that ends
//! right after: no tokio worker ever changes namespace, and no thread ever
//! returns to a pool in the wrong one. Sockets and child processes created
//! on such a thread stay in its namespace for good, which is how the rest
//! of the module talks to a namespace from ordinary async code.
//!
//! Namespace files live in a directory that is made a shared mount point,
//! as `ip netns` and containerd do: unmounting a namespace file then
//! propagates to copies of the mount table made by other mount namespaces,
//! so the namespace is freed instead of pinned by a stray copy.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

static SHARED_DIR_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `f` on a dedicated thread that first enters the network namespace
/// at `netns` (or stays in the process's when `None`), and returns its
/// result without blocking the async runtime.
pub async fn run_in<T, F>(netns: Option<PathBuf>, f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("rk3s-netns".into())
        .spawn(move || {
            let result = match netns.as_deref().map(enter) {
                Some(Err(e)) => Err(e),
                _ => f(),
            };
            let _ = tx.send(result);
        })?;
    rx.await
        .unwrap_or_else(|_| Err(io::Error::other("the namespace thread panicked")))
}

/// Moves the calling thread into the network namespace at `path`.
fn enter(path: &Path) -> io::Result<()> {
    let file = File::open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", path.display())))?;
    // SAFETY: setns on a valid descriptor; affects only this thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("enter {}: {e}", path.display()),
        ));
    }
    Ok(())
}

/// Creates a new, empty network namespace bound onto `path` (which must
/// not exist yet: `AlreadyExists` otherwise), with `path`'s directory made
/// a shared mount point first.
pub async fn create(path: PathBuf) -> io::Result<()> {
    run_in(None, move || {
        let dir = path.parent().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "namespace path has no directory",
            )
        })?;
        fs::create_dir_all(dir)?;
        {
            // Serialised: two racing first calls would each bind the
            // directory onto itself, stacking two mounts.
            let _once = SHARED_DIR_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            make_shared_mount_point(dir)?;
        }
        // The empty file is the mount target; O_EXCL makes creation race-free.
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        let bound =
            unshare_net().and_then(|()| bind_mount(Path::new("/proc/thread-self/ns/net"), &path));
        if let Err(e) = bound {
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        Ok(())
    })
    .await
}

/// Unmounts and removes the namespace file at `path`. The namespace itself
/// lives on while processes are still in it. True if the file existed.
pub async fn delete(path: PathBuf) -> io::Result<bool> {
    run_in(None, move || {
        let c = cstring(&path)?;
        // SAFETY: plain syscall on a NUL-terminated path.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
            let e = io::Error::last_os_error();
            // EINVAL: not a mount point (a half-created file); ENOENT: gone.
            if !matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOENT)) {
                return Err(e);
            }
        }
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    })
    .await
}

/// Names of the entries in `dir` (an absent directory has none).
pub fn list(dir: &Path) -> io::Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for entry in entries {
        if let Some(name) = entry?.file_name().to_str() {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// Whether `path` is a bound network namespace (not just a leftover file).
pub fn is_netns(path: &Path) -> bool {
    // nsfs files report the NSFS magic on statfs.
    const NSFS_MAGIC: libc::c_long = 0x6e73_6673;
    let Ok(c) = cstring(path) else { return false };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: statfs fills `st`, which is a properly sized local.
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as libc::c_long == NSFS_MAGIC }
}

fn unshare_net() -> io::Result<()> {
    // SAFETY: affects only this dedicated thread, which ends after the bind.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("unshare the network namespace: {e}"),
        ));
    }
    Ok(())
}

fn bind_mount(source: &Path, target: &Path) -> io::Result<()> {
    mount(Some(source), target, libc::MS_BIND).map_err(context("bind the namespace onto", target))
}

/// Makes `dir` a shared mount point, bind-mounting it onto itself first
/// when it is not a mount point yet (what `ip netns add` does).
fn make_shared_mount_point(dir: &Path) -> io::Result<()> {
    let shared = |dir| mount(None, dir, libc::MS_SHARED | libc::MS_REC);
    match shared(dir) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            mount(Some(dir), dir, libc::MS_BIND | libc::MS_REC)
                .map_err(context("bind-mount onto itself", dir))?;
            shared(dir).map_err(context("make a shared mount of", dir))
        }
        other => other.map_err(context("make a shared mount of", dir)),
    }
}

fn mount(source: Option<&Path>, target: &Path, flags: libc::c_ulong) -> io::Result<()> {
    let src = source.map(cstring).transpose()?;
    let tgt = cstring(target)?;
    let none = c"none";
    // SAFETY: all pointers are NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            src.as_ref().map_or(none.as_ptr(), |s| s.as_ptr()),
            tgt.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        // Kept raw (no context added) so callers can match the errno.
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Adds what was being mounted to a mount error.
fn context<'a>(what: &str, target: &'a Path) -> impl FnOnce(io::Error) -> io::Error + 'a {
    let what = what.to_string();
    move |e| io::Error::new(e.kind(), format!("{what} {}: {e}", target.display()))
}

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_a_missing_directory_is_empty() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(list(&tmp.path().join("absent")).unwrap().is_empty());
        fs::write(tmp.path().join("b"), "").unwrap();
        fs::write(tmp.path().join("a"), "").unwrap();
        assert_eq!(list(tmp.path()).unwrap(), ["a", "b"]);
    }

    #[test]
    fn plain_files_are_not_namespaces() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("x");
        fs::write(&f, "").unwrap();
        assert!(!is_netns(&f));
        assert!(!is_netns(&tmp.path().join("absent")));
    }

    #[tokio::test]
    async fn run_in_without_a_namespace_runs_the_closure() {
        let got = run_in(None, || Ok(41 + 1)).await.unwrap();
        assert_eq!(got, 42);
        let err = run_in(Some(PathBuf::from("/nonexistent/ns")), || Ok(()))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ns"), "{err}");
    }
}
