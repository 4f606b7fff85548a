//! Whether a root-only (e2e) test runs, is skipped, or is refused.
//!
//! E2e tests need root (namespaces, mounts, containerd) and a few Debian
//! packages. On a developer machine without root they are skipped with a
//! message; in CI `RK3S_E2E=1` makes them mandatory, so a missing privilege
//! or tool fails loudly instead of passing silently.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Binaries every e2e test needs, with the Debian package providing each.
pub const E2E_TOOLS: &[(&str, &str)] = &[
    ("containerd", "containerd"),
    ("ctr", "containerd"),
    ("runc", "runc"),
    ("ip", "iproute2"),
    ("nft", "nftables"),
    ("iptables", "iptables"),
    ("nsenter", "util-linux"),
];

/// The static busybox the test images are built from.
pub const BUSYBOX: &str = "/bin/busybox";

/// Whether `test` must run: true as root with every tool present.
///
/// Without root: panics when `RK3S_E2E=1` (CI), otherwise prints why the
/// test is skipped and returns false. As root, missing tools always panic:
/// a half-provisioned machine is a setup error, not a reason to skip.
pub fn require_e2e(test: &str) -> bool {
    let mandatory = std::env::var("RK3S_E2E").is_ok_and(|v| v == "1");
    if !is_root() {
        if mandatory {
            panic!("{test}: RK3S_E2E=1 requires the e2e tests to run, but they need root; run as root or unset RK3S_E2E");
        }
        eprintln!("skipping {test}: needs root (set RK3S_E2E=1 to require)");
        return false;
    }
    require_tools(test, E2E_TOOLS);
    if !Path::new(BUSYBOX).is_file() {
        panic!("{test}: {BUSYBOX} is missing; install it with `apt-get install -y busybox-static`");
    }
    true
}

/// Panics unless every `(binary, debian_package)` is on PATH, naming the
/// packages to install.
pub fn require_tools(test: &str, tools: &[(&str, &str)]) {
    let missing: Vec<_> = tools
        .iter()
        .filter(|(bin, _)| which(bin).is_none())
        .collect();
    if missing.is_empty() {
        return;
    }
    let bins: Vec<_> = missing.iter().map(|(b, _)| *b).collect();
    let mut pkgs: Vec<_> = missing.iter().map(|(_, p)| *p).collect();
    pkgs.dedup();
    panic!(
        "{test}: missing {} on PATH; install with `apt-get install -y {}`",
        bins.join(", "),
        pkgs.join(" ")
    );
}

/// The first `name` found on PATH (or in the sbin directories, which a
/// non-login root shell may lack).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The path of tool `name` (see [`which`]), or the bare name when it is not
/// found, so that spawning it yields a "not found" error naming it.
pub fn tool(name: &str) -> PathBuf {
    which(name).unwrap_or_else(|| PathBuf::from(name))
}

/// A command run by the harness that could not be run or did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("failed to run `{command}`: {source}")]
    Spawn { command: String, source: io::Error },
    #[error("failed: `{command}` exited with {status}: {stderr}{stdout}")]
    Failed {
        command: String,
        status: std::process::ExitStatus,
        stdout: String,
        stderr: String,
    },
    #[error("failed: `{command}` did not finish within {timeout:?}")]
    TimedOut { command: String, timeout: Duration },
}

/// The command line of `cmd`, for error messages.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` to completion (stdin closed) and fails unless it exits with 0.
pub fn run(cmd: &mut Command) -> Result<Output, CommandError> {
    let out = output(cmd)?;
    check(cmd, out)
}

/// Runs `cmd` to completion (stdin closed), whatever its exit status.
pub fn output(cmd: &mut Command) -> Result<Output, CommandError> {
    cmd.stdin(Stdio::null())
        .output()
        .map_err(|source| CommandError::Spawn {
            command: describe(cmd),
            source,
        })
}

/// Fails unless `out` (produced by `cmd`) reports success.
pub fn check(cmd: &Command, out: Output) -> Result<Output, CommandError> {
    if out.status.success() {
        return Ok(out);
    }
    Err(CommandError::Failed {
        command: describe(cmd),
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Like [`output`] but kills `cmd` once `timeout` has passed: cleanup must
/// never hang on a wedged daemon.
pub fn output_within(cmd: &mut Command, timeout: Duration) -> Result<Output, CommandError> {
    let command = describe(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| CommandError::Spawn {
            command: command.clone(),
            source,
        })?;
    // Drain the pipes on threads so a chatty command cannot block on a full pipe.
    let drain = |pipe: Option<Box<dyn io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(CommandError::TimedOut { command, timeout });
            }
        }
    };
    Ok(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// Whether the test process runs with effective uid 0.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
