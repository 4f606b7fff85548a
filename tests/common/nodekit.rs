//! What the namespace clusters ([`super::twonode`], [`super::multinode`])
//! share (each derefs to its [`ServerShell`]): kubectl beside the server, polling, the server's and an agent's
//! command lines as a user types them, the busybox import, and removing the
//! host-wide leftovers of a pod (its netns file and log directory, which the
//! fail-static agents leave behind on purpose).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::containerd::Containerd;
use super::image::{BusyboxImage, DEFAULT_REFERENCE};
use super::netns::Node;
use super::privilege;
use super::twonode::Daemon;

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Commands run in the server's namespace with kubectl's environment (the
/// cluster's kubeconfig, a private HOME and discovery cache).
pub struct ServerShell {
    netns: String,
    kubeconfig: PathBuf,
    home: tempfile::TempDir,
}

impl ServerShell {
    pub fn new(netns: &str, kubeconfig: &Path) -> Self {
        ServerShell {
            netns: netns.to_string(),
            kubeconfig: kubeconfig.to_path_buf(),
            home: tempfile::tempdir().unwrap(),
        }
    }

    /// `program` in the server's namespace, with kubectl's environment.
    pub fn in_server(&self, program: &str) -> Command {
        let mut c = Command::new(privilege::tool("nsenter"));
        c.arg(format!("--net=/var/run/netns/{}", self.netns))
            .arg(program)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.home.path())
            .env("KUBECACHEDIR", self.home.path().join("cache"));
        c
    }

    pub fn kubectl_cmd(&self, args: &[&str]) -> Command {
        let mut c = self.in_server("/usr/bin/kubectl");
        c.args(args);
        c
    }

    /// kubectl beside the server, killed after 60 s.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        privilege::output_within(&mut self.kubectl_cmd(args), Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let o = self.kubectl(args);
        assert!(
            o.status.success(),
            "kubectl {args:?} failed ({}): {}",
            o.status,
            text(&o.stderr)
        );
        text(&o.stdout)
    }

    pub fn kubectl_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = self
            .kubectl_cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kubectl");
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }

    pub fn apply(&self, yaml: &str) {
        let o = self.kubectl_stdin(&["apply", "-f", "-"], yaml.as_bytes());
        assert!(o.status.success(), "apply: {}", text(&o.stderr));
    }

    pub fn pod_field(&self, pod: &str, jsonpath: &str) -> String {
        text(
            &self
                .kubectl(&["get", "pod", pod, "-o", &format!("jsonpath={jsonpath}")])
                .stdout,
        )
    }

    /// Polls `f` every 500 ms for up to `secs` (see [`wait_for`]).
    pub fn wait_for<T>(&self, what: &str, secs: u64, f: impl FnMut() -> Option<T>) -> T {
        wait_for(what, secs, f)
    }

    /// Whether node `name` reports Ready.
    pub fn node_ready(&self, name: &str) -> bool {
        let o = self.kubectl(&[
            "get",
            "node",
            name,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        text(&o.stdout) == "True"
    }
}

/// Polls `f` every 500 ms for up to `secs`.
pub fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Removes a pod's host-wide leftovers: its netns file, log directory and
/// pause process (`shareProcessNamespace`).
pub fn forget_pod(uid: &str) {
    kill_pause(uid);
    let netns = format!("rk3s-{uid}");
    if Path::new("/var/run/netns").join(&netns).exists() {
        let _ = super::netns::ip(&["netns", "del", &netns]);
    }
    if let Ok(dirs) = std::fs::read_dir("/var/log/pods") {
        for d in dirs.flatten() {
            if d.file_name().to_string_lossy().ends_with(uid) {
                let _ = std::fs::remove_dir_all(d.path());
            }
        }
    }
}

/// Kills the pause process (`rk3s _RK3S_PAUSE <uid>`) the agent started
/// for pod `uid`, if one outlived the agent.
pub fn kill_pause(uid: &str) {
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.get(1) == Some(&&b"_RK3S_PAUSE"[..]) && args.get(2) == Some(&uid.as_bytes()) {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Puts the busybox test image into `ctrd`.
pub fn import_busybox(ctrd: &Containerd) {
    let tar = BusyboxImage::new(DEFAULT_REFERENCE)
        .write(ctrd.scratch())
        .unwrap();
    ctrd.import(&tar).expect("import busybox");
}

fn socket(ctrd: &Containerd) -> String {
    format!("unix://{}", ctrd.socket().display())
}

/// The `--run-dir` of the node whose data is in `data`: its own, so no
/// test leaves FIFOs or directories in the host's `/run/rk3s`.
pub fn run_dir(data: &Path) -> PathBuf {
    data.join("run")
}

/// `rk3s server` (node `server`, on `ctrd`) with its data in `data` and
/// the admin kubeconfig written to `kubeconfig`, then `extra` flags.
pub fn server_argv(node: &Node, ctrd: &Containerd, data: &Path, kubeconfig: &Path, extra: &[&str]) -> Vec<String> {
    [
        "server",
        "--node-name",
        "server",
        "--node-ip",
        &node.ip().to_string(),
        "--container-runtime-endpoint",
        &socket(ctrd),
        "--data-dir",
        data.to_str().unwrap(),
        "--run-dir",
        run_dir(data).to_str().unwrap(),
        "--write-kubeconfig",
        kubeconfig.to_str().unwrap(),
    ]
    .iter()
    .chain(extra)
    .map(|a| a.to_string())
    .collect()
}

/// Starts `rk3s server` in `node` on `ctrd` with [`server_argv`], its data
/// in `dir/server-data`, its log in `dir/server.log`; returns it and the
/// kubeconfig path it writes.
pub fn start_server(node: &Node, ctrd: &Containerd, dir: &Path, extra: &[&str]) -> (Daemon, PathBuf) {
    let kubeconfig = dir.join("rk3s.yaml");
    let argv = server_argv(node, ctrd, &dir.join("server-data"), &kubeconfig, extra);
    let server = Daemon::start("server", node.netns(), argv, Vec::new(), dir.join("server.log"));
    (server, kubeconfig)
}

/// The server's join token, as a user reads it (`cat …/server/token`).
pub fn server_token(server_data: &Path) -> String {
    std::fs::read_to_string(server_data.join("server/token"))
        .expect("read the server token")
        .trim()
        .to_string()
}

/// `rk3s agent` named `name` in `node`, joining the server at `server`
/// with `token`, on `ctrd`, with its data in `data`; and its environment:
/// the node password in `password` (never the host's
/// /etc/rk3s/node/password).
pub fn agent_command(
    name: &str,
    server: &Node,
    token: &str,
    node: &Node,
    ctrd: &Containerd,
    data: &Path,
    password: &Path,
) -> (Vec<String>, Vec<(String, String)>) {
    let argv = [
        "agent",
        "--server",
        &format!("https://{}:6443", server.ip()),
        "--token",
        token,
        "--node-name",
        name,
        "--node-ip",
        &node.ip().to_string(),
        "--container-runtime-endpoint",
        &socket(ctrd),
        "--data-dir",
        data.to_str().unwrap(),
        "--run-dir",
        run_dir(data).to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec();
    let envs = vec![(
        "RK3S_NODE_PASSWORD_FILE".to_string(),
        password.display().to_string(),
    )];
    (argv, envs)
}
