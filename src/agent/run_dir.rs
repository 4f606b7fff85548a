//! The agent's runtime directory (`--run-dir`, default `/run/rk3s`): what
//! lives only as long as the machine is up. Every path below it is derived
//! here, so one value decides them all and two agents on one machine (the
//! e2e tests run several) never share FIFOs or a containerd socket.
//!
//! Layout:
//! - `containerd/`: the supervised containerd's state dir and socket;
//! - `stdio/<container id>/`: each container's stdio FIFOs (its log shim
//!   reads them; `stdin` is what `kubectl attach` writes to);
//! - `exec/exec-<uuid>/`: one exec session's FIFOs, removed when it ends.
//!
//! Invariants:
//! - The default is on tmpfs, so FIFOs never touch the SD card and nothing
//!   here survives a reboot (nor do the tasks whose FIFOs they are).
//! - Paths depend only on the run dir and the container id: an agent
//!   restarted with the same `--run-dir` finds the stdin FIFO of a
//!   container it did not start (fail static). Changing `--run-dir` under
//!   running containers loses `attach` to them until they restart.
//! - A clean shutdown removes the FIFO roots only when empty: the stdio
//!   dirs of running containers stay with their containers.

use std::path::{Path, PathBuf};

pub use crate::config::DEFAULT_RUN_DIR;

/// One agent's run dir and the paths derived from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RunDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The supervised containerd's state dir (shim sockets, task bundles),
    /// like k3s's `/run/k3s/containerd`.
    pub fn containerd_state(&self) -> PathBuf {
        self.root.join("containerd")
    }

    /// Where the supervised containerd listens.
    pub fn containerd_socket(&self) -> PathBuf {
        self.containerd_state().join("containerd.sock")
    }

    /// The parent of each container's stdio FIFO directory.
    pub fn stdio_fifos(&self) -> PathBuf {
        self.root.join("stdio")
    }

    /// The parent of each exec session's FIFO directory.
    pub fn exec_fifos(&self) -> PathBuf {
        self.root.join("exec")
    }

    /// Removes the FIFO roots that are empty (at a clean shutdown): what
    /// is still in them belongs to running containers or sessions.
    pub fn remove_empty_fifo_roots(&self) {
        for dir in [self.exec_fifos(), self.stdio_fifos()] {
            match std::fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::DirectoryNotEmpty
                    ) => {}
                Err(e) => tracing::debug!(dir = %dir.display(), "failed to remove the FIFO root: {e}"),
            }
        }
    }
}

impl Default for RunDir {
    fn default() -> Self {
        RunDir::new(DEFAULT_RUN_DIR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_layout_is_under_run_rk3s() {
        let run = RunDir::default();
        assert_eq!(run.exec_fifos(), Path::new("/run/rk3s/exec"));
        assert_eq!(run.stdio_fifos(), Path::new("/run/rk3s/stdio"));
        assert_eq!(run.containerd_state(), Path::new("/run/rk3s/containerd"));
        assert_eq!(
            run.containerd_socket(),
            Path::new("/run/rk3s/containerd/containerd.sock")
        );
    }

    #[test]
    fn every_path_follows_the_run_dir() {
        let run = RunDir::new("/tmp/agent-7/run");
        for p in [
            run.exec_fifos(),
            run.stdio_fifos(),
            run.containerd_state(),
            run.containerd_socket(),
        ] {
            assert!(p.starts_with("/tmp/agent-7/run"), "{}", p.display());
        }
        assert_ne!(run.exec_fifos(), run.stdio_fifos());
    }

    #[test]
    fn shutdown_removes_only_empty_fifo_roots() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path().join("run"));
        std::fs::create_dir_all(run.exec_fifos()).unwrap();
        // A running container's FIFO dir keeps the stdio root.
        let running = run.stdio_fifos().join("c1");
        std::fs::create_dir_all(&running).unwrap();
        std::fs::create_dir_all(run.containerd_state()).unwrap();

        run.remove_empty_fifo_roots();
        assert!(!run.exec_fifos().exists());
        assert!(running.exists());
        assert!(run.containerd_state().exists());

        std::fs::remove_dir(&running).unwrap();
        run.remove_empty_fifo_roots();
        assert!(!run.stdio_fifos().exists());
        // Already gone: nothing to do, no error.
        run.remove_empty_fifo_roots();
    }
}
