//! A private containerd (runc runtime, overlayfs snapshotter) for one test.
//!
//! Each instance has its own config, `--root`, `--state` and socket under a
//! temp dir, and no CRI plugin, so any number of instances coexist with each
//! other and with a system containerd. It can be started inside a network
//! namespace (for multi-node tests); containers run with `--net-host` then
//! share that namespace.
//!
//! Invariants:
//! - `Drop` leaves nothing behind, even after a panic: every task is killed
//!   and deleted, leftover shims (and their children) are killed, containerd
//!   gets SIGTERM then SIGKILL, mounts under its dirs are lazily unmounted
//!   deepest first, and the temp dir is removed.
//! - runc keeps its state in the host-wide `/run/containerd/runc/<ns>/<id>`
//!   and cgroups are named `/<ns>/<id>`, so container ids must be unique on
//!   the host: use [`unique_id`].
//! - Started inside a [`super::netns::Node`], declare the `Containerd`
//!   after the node, so it is dropped first: the node's drop kills every
//!   process in its namespace, which would leave runc state and cgroups of
//!   the containers behind.
//!
//! Figures on the 2-core dev VM (containerd 1.6.20): ready on its socket in
//! ~55 ms (up to ~150 ms with four tests in parallel); a busybox image built
//! in ~70 ms and imported with unpacking in ~170–210 ms.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::image::ImageTar;
use super::privilege::{self, tool, CommandError};

/// The containerd namespace the harness uses, the one CRI clients use.
pub const NAMESPACE: &str = "k8s.io";

/// How long containerd may take to answer on its socket.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one cleanup command may take before it is abandoned.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long containerd gets to exit on SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A failure to start or drive the private containerd.
#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    #[error("failed to prepare containerd's directories: {0}")]
    Prepare(#[source] io::Error),
    #[error("failed to start containerd: {0}")]
    Spawn(#[source] io::Error),
    #[error("failed to start containerd: it exited with {status}; log tail:\n{log}")]
    Exited {
        status: std::process::ExitStatus,
        log: String,
    },
    #[error("failed to start containerd: its socket did not answer within {timeout:?}; log tail:\n{log}")]
    NotReady { timeout: Duration, log: String },
    #[error(transparent)]
    Command(#[from] CommandError),
}

/// A running private containerd; stopped and wiped on drop.
pub struct Containerd {
    child: Child,
    socket: PathBuf,
    root: PathBuf,
    state: PathBuf,
    log: PathBuf,
    netns: Option<String>,
    // Last: removed after the fields above are dropped.
    dir: TempDir,
}

impl Containerd {
    /// Starts a containerd in the host network namespace.
    pub fn start() -> Result<Self, ContainerdError> {
        Self::spawn(None)
    }

    /// Starts a containerd inside network namespace `netns` (a name under
    /// `/run/netns`, as `ip netns add` creates). Only the network namespace
    /// changes (`nsenter --net`), so its mounts stay visible on the host.
    pub fn start_in_netns(netns: &str) -> Result<Self, ContainerdError> {
        Self::spawn(Some(netns.to_string()))
    }

    fn spawn(netns: Option<String>) -> Result<Self, ContainerdError> {
        let dir = tempfile::Builder::new()
            .prefix("rk3s-ctrd-")
            .tempdir()
            .map_err(ContainerdError::Prepare)?;
        let root = dir.path().join("root");
        let state = dir.path().join("state");
        let socket = dir.path().join("containerd.sock");
        let log = dir.path().join("containerd.log");
        let config = dir.path().join("config.toml");
        std::fs::write(&config, config_toml(&root, &state, &socket))
            .map_err(ContainerdError::Prepare)?;
        let log_file = std::fs::File::create(&log).map_err(ContainerdError::Prepare)?;
        let log_err = log_file.try_clone().map_err(ContainerdError::Prepare)?;

        let mut cmd = match &netns {
            Some(ns) => {
                let mut c = Command::new(tool("nsenter"));
                c.arg(format!("--net=/run/netns/{ns}"))
                    .arg("--")
                    .arg(tool("containerd"));
                c
            }
            None => Command::new(tool("containerd")),
        };
        cmd.arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err);
        let child = cmd.spawn().map_err(ContainerdError::Spawn)?;
        let mut containerd = Self {
            child,
            socket,
            root,
            state,
            log,
            netns,
            dir,
        };
        containerd.wait_ready()?;
        Ok(containerd)
    }

    fn wait_ready(&mut self) -> Result<(), ContainerdError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(ContainerdError::Exited {
                    status,
                    log: self.log_tail(30),
                });
            }
            let mut probe = Command::new(tool("ctr"));
            probe.arg("--address").arg(&self.socket).arg("version");
            if privilege::output_within(&mut probe, Duration::from_secs(2))
                .is_ok_and(|o| o.status.success())
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ContainerdError::NotReady {
                    timeout: READY_TIMEOUT,
                    log: self.log_tail(30),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The gRPC socket clients connect to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// containerd's `--root` (content, metadata, snapshots).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// containerd's `--state` (runtime state, FIFOs).
    pub fn state(&self) -> &Path {
        &self.state
    }

    /// The network namespace it was started in, if any.
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    /// A scratch directory removed with this instance.
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    /// The last `lines` lines of containerd's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<_> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// A `ctr --address S --namespace k8s.io` command, to add arguments to.
    pub fn ctr_command(&self) -> Command {
        let mut cmd = Command::new(tool("ctr"));
        cmd.arg("--address")
            .arg(&self.socket)
            .arg("--namespace")
            .arg(NAMESPACE);
        cmd
    }

    /// Runs `ctr … args` and returns its output whatever its exit status.
    pub fn ctr(&self, args: &[&str]) -> Output {
        let mut cmd = self.ctr_command();
        cmd.args(args);
        privilege::output(&mut cmd).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs `ctr … args`, failing unless it succeeds; returns its stdout.
    pub fn ctr_ok(&self, args: &[&str]) -> Result<String, CommandError> {
        let mut cmd = self.ctr_command();
        cmd.args(args);
        let out = privilege::run(&mut cmd)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Imports (and unpacks for overlayfs) an image tar into `k8s.io`.
    pub fn import(&self, image: &ImageTar) -> Result<(), CommandError> {
        let path = image.path.to_string_lossy();
        self.ctr_ok(&["images", "import", "--snapshotter", "overlayfs", &path])?;
        Ok(())
    }

    /// `ctr run -d` of `image` as container `id`, running `sleep 1000`:
    /// the plain containerd baseline the kubelet's start is compared with.
    pub fn ctr_run_sleeping(&self, image: &str, id: &str) -> Result<String, CommandError> {
        self.ctr_ok(&[
            "run",
            "-d",
            "--snapshotter",
            "overlayfs",
            image,
            id,
            "sleep",
            "1000",
        ])
    }

    /// Kills and deletes every task and container in every namespace.
    fn remove_all_containers(&self) {
        let list = |ns: &str, what: &[&str]| -> Vec<String> {
            let mut cmd = Command::new(tool("ctr"));
            cmd.arg("--address")
                .arg(&self.socket)
                .arg("--namespace")
                .arg(ns)
                .args(what);
            match privilege::output_within(&mut cmd, CLEANUP_TIMEOUT) {
                Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .map(|l| l.trim().to_string())
                    .filter(|l| !l.is_empty())
                    .collect(),
                _ => Vec::new(),
            }
        };
        for ns in list("default", &["namespaces", "ls", "-q"]) {
            for task in list(&ns, &["tasks", "ls", "-q"]) {
                list(
                    &ns,
                    &["tasks", "kill", "--all", "--signal", "SIGKILL", &task],
                );
                list(&ns, &["tasks", "delete", "--force", &task]);
            }
            for container in list(&ns, &["containers", "ls", "-q"]) {
                list(&ns, &["containers", "delete", &container]);
            }
        }
    }

    /// Kills shims still serving this containerd, and what runs under them.
    fn kill_leftover_shims(&self) {
        let address = self.socket.to_string_lossy().into_owned();
        for shim in processes_with_arg(&address) {
            if shim == self.child.id() {
                continue;
            }
            for pid in descendants(shim).into_iter().rev() {
                kill(pid, libc::SIGKILL);
            }
            kill(shim, libc::SIGKILL);
        }
    }

    fn stop_daemon(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        kill(self.child.id(), libc::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.remove_all_containers();
        }
        self.kill_leftover_shims();
        self.stop_daemon();
        unmount_under(self.dir.path());
        // TempDir's own drop ignores errors; say why a directory stays.
        let path = self.dir.path().to_path_buf();
        if let Err(e) = std::fs::remove_dir_all(&path) {
            if e.kind() != io::ErrorKind::NotFound {
                eprintln!(
                    "containerd harness: failed to remove {}: {e}",
                    path.display()
                );
            }
        }
    }
}

/// A container id unique on this host, e.g. `hello-1234-7`.
pub fn unique_id(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The config the agent itself runs containerd with, on this run's paths.
fn config_toml(root: &Path, state: &Path, socket: &Path) -> String {
    rk3s::agent::containerd_supervisor::config_toml(&rk3s::agent::containerd_supervisor::ContainerdPaths {
        dir: root.to_path_buf(),
        state: state.to_path_buf(),
        socket: socket.to_path_buf(),
    })
}

fn kill(pid: u32, signal: i32) {
    // SAFETY: kill has no memory-safety preconditions; a stale pid only fails.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// Pids whose command line contains `arg` as a whole argument.
fn processes_with_arg(arg: &str) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == arg.as_bytes()))
        })
        .collect()
}

/// Every descendant of `root`, parents before children.
pub fn descendants(root: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = all_pids()
        .into_iter()
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // The command name may contain spaces and parentheses; fields follow the last ')'.
            let rest = &stat[stat.rfind(')')? + 2..];
            let ppid = rest.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, ppid))
        })
        .collect();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    found.remove(0);
    found
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Lazily unmounts every mount point at or under `dir`, deepest first.
pub fn unmount_under(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    for point in points {
        let Ok(c) = std::ffi::CString::new(point.as_os_str().as_encoded_bytes()) else {
            continue;
        };
        // SAFETY: `c` is a valid NUL-terminated path for the call's duration.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
            eprintln!(
                "harness: failed to unmount {}: {}",
                point.display(),
                io::Error::last_os_error()
            );
        }
    }
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let s = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("0");
            out.push(u8::from_str_radix(s, 8).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(out))
}
