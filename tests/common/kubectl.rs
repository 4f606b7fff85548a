//! The real `kubectl` (`/usr/bin/kubectl`, the dispatcher that runs kubectl
//! 1.32 for our `/version`), with a kubeconfig and a private HOME/cache dir
//! per instance so discovery caches never leak between tests.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct Kubectl {
    binary: PathBuf,
    kubeconfig: PathBuf,
    home: tempfile::TempDir,
    pub timeout: Duration,
}

impl Kubectl {
    pub fn new(kubeconfig: &Path) -> Self {
        Kubectl {
            binary: PathBuf::from("/usr/bin/kubectl"),
            kubeconfig: kubeconfig.to_path_buf(),
            home: tempfile::tempdir().expect("failed to make a kubectl home"),
            timeout: Duration::from_secs(60),
        }
    }

    /// The same kubectl, but release 1.`minor` (1.27 to 1.33 are bundled
    /// beside the dispatcher), e.g. 29 for the SPDY exec older clients use.
    pub fn release(mut self, minor: u32) -> Self {
        self.binary = PathBuf::from(format!("/usr/lib/google-cloud-sdk/bin/kubectl.1.{minor}"));
        self
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.binary);
        c.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.home.path())
            .env("KUBECACHEDIR", self.home.path().join("cache"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    fn wait(&self, mut child: Child, args: &[&str]) -> Output {
        let start = Instant::now();
        loop {
            match child.try_wait().expect("failed to wait for kubectl") {
                Some(_) => {
                    return child
                        .wait_with_output()
                        .expect("failed to read kubectl output")
                }
                None if start.elapsed() > self.timeout => {
                    let _ = child.kill();
                    let out = child.wait_with_output().ok();
                    panic!(
                        "kubectl {args:?} timed out after {:?}; stderr: {}",
                        self.timeout,
                        out.map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                            .unwrap_or_default()
                    );
                }
                None => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let child = self.command(args).spawn().expect("failed to start kubectl");
        self.wait(child, args)
    }

    /// Runs and returns stdout; panics with stderr on failure.
    pub fn run_ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Sets pod `pod`'s phase to Running, as its kubelet would (attach,
    /// exec and port-forward want a Running pod).
    pub fn mark_running(&self, pod: &str) {
        self.run_ok(&[
            "patch",
            "pod",
            pod,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Running"}}"#,
        ]);
    }

    pub fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let child = self.spawn_with_stdin(args, stdin);
        self.wait(child, args)
    }

    /// Starts a long-running kubectl fed `stdin` (then closed); the caller
    /// reads its stdout and kills it.
    pub fn spawn_with_stdin(&self, args: &[&str], stdin: &str) -> Child {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .spawn()
            .expect("failed to start kubectl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("failed to write stdin");
        child
    }

    /// Starts a long-running kubectl (e.g. `get --watch`); the caller kills it.
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args).spawn().expect("failed to start kubectl")
    }
}

/// The condition of type `kind` in `object`'s `status.conditions` (an
/// object as `kubectl get -o json` prints it), if it has one.
pub fn condition<'a>(object: &'a serde_json::Value, kind: &str) -> Option<&'a serde_json::Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}
