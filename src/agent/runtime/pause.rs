//! The pod's PID-namespace holder for `shareProcessNamespace: true`.
//!
//! containerd's CRI runs a pause container per pod and, with
//! `NamespaceMode POD`, starts every container into the pause's PID
//! namespace, so the pause is PID 1 of the pod (it reaps orphans and keeps
//! the namespace alive when containers restart). rk3s has no pause
//! container (the agent makes the network namespace itself, see
//! `agent::network`), and a PID namespace, unlike a network namespace,
//! cannot be kept by a bind mount: once its PID 1 exits no process can
//! enter it. So the runtime starts a pause *process*: the rk3s binary as
//! `rk3s _RK3S_PAUSE <pod uid>` (caught in `main.rs` like the log shim)
//! detaches (`setsid`), makes a new PID namespace and forks its init, which
//! prints nothing, holds no file, drops to uid/gid 65535 (the pause image's
//! user), no new privileges, not dumpable, and only reaps children until
//! SIGTERM/SIGINT/SIGKILL. Containers join `/proc/<pid>/ns/pid`.
//!
//! Invariants:
//! - The pause is found by its command line (`_RK3S_PAUSE <pod uid>`, and
//!   PID 1 in its own namespace by `NSpid`), never by a record: an agent
//!   restart re-adopts it without state, and a pod's containers keep
//!   running while the agent is down (fail static).
//! - One pause per pod uid; it outlives the agent and goes only when the
//!   pod terminates ([`stop_pause`] after its containers are stopped).
//!
//! Partial: the pause runs in the agent's cgroup (not the pod's), so a
//! service manager that kills the agent's whole cgroup on stop kills it
//! (k3s's units use `KillMode=process`); a pause killed from outside takes
//! the pod's containers with it (as a dead pause container does) and a new
//! one is started for the restarted containers.

use std::path::{Path, PathBuf};

use super::{Result, RuntimeError};

/// The first argument that makes the rk3s binary a pause.
pub const PAUSE_ARG: &str = "_RK3S_PAUSE";
/// The pause image's user and group (`registry.k8s.io/pause` runs as 65535).
const PAUSE_ID: libc::uid_t = 65535;

/// Whether `args` (the whole argv) asks for a pause.
pub fn is_pause_invocation(args: &[String]) -> bool {
    args.get(1).map(String::as_str) == Some(PAUSE_ARG)
}

/// `rk3s _RK3S_PAUSE <pod uid>`: forks the init of a new PID namespace,
/// prints its pid (as the caller's namespace sees it) and returns. Must run
/// single-threaded, before any runtime starts.
pub fn run_pause(args: &[String]) -> std::io::Result<()> {
    if args.get(2).is_none_or(|u| u.is_empty()) {
        return Err(std::io::Error::other(format!(
            "failed to start the pause: usage `{PAUSE_ARG} <pod uid>`"
        )));
    }
    // SAFETY: plain syscalls in a single-threaded process; the child only
    // makes async-signal-safe calls before it loops.
    unsafe {
        libc::setsid();
        if libc::unshare(libc::CLONE_NEWPID) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        match libc::fork() {
            -1 => Err(std::io::Error::last_os_error()),
            0 => pause_init(),
            pid => {
                println!("{pid}");
                Ok(())
            }
        }
    }
}

/// PID 1 of the pod's namespace: reap, and exit on SIGTERM or SIGINT.
unsafe fn pause_init() -> ! {
    let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
    if null >= 0 {
        for fd in 0..3 {
            libc::dup2(null, fd);
        }
        if null > 2 {
            libc::close(null);
        }
    }
    libc::chdir(c"/".as_ptr());
    libc::setgroups(0, std::ptr::null());
    libc::setgid(PAUSE_ID);
    libc::setuid(PAUSE_ID);
    libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    // Blocked signals reach an init even without a handler.
    let mut set: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut set);
    for s in [libc::SIGTERM, libc::SIGINT, libc::SIGCHLD] {
        libc::sigaddset(&mut set, s);
    }
    libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    loop {
        let mut sig = 0;
        if libc::sigwait(&set, &mut sig) != 0 {
            continue;
        }
        if sig == libc::SIGCHLD {
            while libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) > 0 {}
        } else {
            libc::_exit(0);
        }
    }
}

/// The pid of the running pause of `pod_uid`, looked up under `proc_root`
/// (`/proc`): its command line names the pod and it is PID 1 of its own
/// namespace (which tells it from the launcher that forked it).
pub(super) fn find_pause(proc_root: &Path, pod_uid: &str) -> Option<u32> {
    let entries = std::fs::read_dir(proc_root).ok()?;
    entries.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.get(1) != Some(&PAUSE_ARG.as_bytes()) || args.get(2) != Some(&pod_uid.as_bytes()) {
            return None;
        }
        let status = std::fs::read_to_string(e.path().join("status")).ok()?;
        let zombie = status
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z'));
        let init = status
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))
            .and_then(|l| l.split_whitespace().last())
            == Some("1");
        (init && !zombie).then_some(pid)
    })
}

/// The path of the pod's shared PID namespace, starting its pause with
/// `binary` (rk3s) if none runs.
pub(super) async fn ensure_pause(binary: &Path, pod_uid: &str) -> Result<PathBuf> {
    let proc_root = Path::new("/proc");
    let pid = match find_pause(proc_root, pod_uid) {
        Some(pid) => pid,
        None => start_pause(binary, pod_uid).await?,
    };
    Ok(PathBuf::from(format!("/proc/{pid}/ns/pid")))
}

async fn start_pause(binary: &Path, pod_uid: &str) -> Result<u32> {
    let op = || format!("start the pause process of pod {pod_uid}");
    let out = tokio::process::Command::new(binary)
        .args([PAUSE_ARG, pod_uid])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|source| RuntimeError::Io { op: op(), source })?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.trim().parse() {
        Ok(pid) if out.status.success() => {
            tracing::info!(pod_uid, pid, "started the pod's pause process (shareProcessNamespace)");
            Ok(pid)
        }
        _ => Err(RuntimeError::Invalid {
            op: op(),
            message: format!(
                "{} exited with {}: {}",
                binary.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        }),
    }
}

/// Kills the pod's pause (SIGKILL: its containers are already stopped);
/// nothing to do when none runs.
pub(super) fn stop_pause(pod_uid: &str) {
    if let Some(pid) = find_pause(Path::new("/proc"), pod_uid) {
        // SAFETY: a signal to a pid we just identified by its command line.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        tracing::info!(pod_uid, pid, "stopped the pod's pause process");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc_entry(root: &Path, pid: u32, argv: &[&str], nspid: &str, state: &str) {
        let dir = root.join(pid.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cmdline"), argv.join("\0") + "\0").unwrap();
        let status = format!("Name:\trk3s\nState:\t{state}\nNSpid:\t{nspid}\n");
        std::fs::write(dir.join("status"), status).unwrap();
    }

    #[test]
    fn finds_the_pods_pause_init_not_its_launcher_or_others() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("self")).unwrap();
        proc_entry(r, 10, &["/usr/bin/rk3s", PAUSE_ARG, "uid-a"], "10", "S (sleeping)");
        proc_entry(r, 11, &["/usr/bin/rk3s", PAUSE_ARG, "uid-a"], "11\t1", "S (sleeping)");
        proc_entry(r, 12, &["/usr/bin/rk3s", PAUSE_ARG, "uid-b"], "12\t1", "Z (zombie)");
        proc_entry(r, 13, &["/usr/bin/rk3s", "agent", "uid-b"], "13\t1", "S (sleeping)");
        assert_eq!(find_pause(r, "uid-a"), Some(11));
        assert_eq!(find_pause(r, "uid-b"), None, "a zombie or another command is no pause");
        assert_eq!(find_pause(r, "uid-c"), None);
    }

    #[test]
    fn recognises_its_invocation() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(is_pause_invocation(&args(&["rk3s", PAUSE_ARG, "u"])));
        assert!(!is_pause_invocation(&args(&["rk3s", "agent", PAUSE_ARG])));
        assert!(run_pause(&args(&["rk3s", PAUSE_ARG])).is_err());
    }
}
