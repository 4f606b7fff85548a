//! `kubectl debug` with ephemeral containers against the real `rk3s server`
//! and its built-in agent on a private containerd (`common::onenode`): a
//! debugger with `--target` runs `ps` in its target's PID namespace (with
//! the oldest, default and newest kubectl), `kubectl logs -c` reads it,
//! `exec` reaches a long-running one (same PID and network namespaces as
//! its target), `-i` attaches with stdin, the statuses appear in
//! `status.ephemeralContainerStatuses`, and `--copy-to` makes a copy of the
//! pod with an extra container.
//!
//! Root-only: skips without root unless `RK3S_E2E=1`.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::onenode::OneNode;
use common::privilege::{self, require_e2e};

const IMAGE: &str = "docker.io/rk3s/busybox:test";

const POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: docker.io/rk3s/busybox:test
    command: [sleep, "3600"]
"#;

const KUBECTLS: &[&str] = &[
    "/usr/lib/google-cloud-sdk/bin/kubectl.1.27",
    "/usr/bin/kubectl",
    "/usr/lib/google-cloud-sdk/bin/kubectl.1.33",
];

struct Env {
    one: OneNode,
    home: tempfile::TempDir,
}

impl Env {
    fn command(&self, kubectl: &str, args: &[&str]) -> Command {
        let mut c = self.one.node.command(kubectl);
        c.args(args)
            .env("KUBECONFIG", &self.one.kubeconfig)
            .env("HOME", self.home.path())
            .env("KUBECACHEDIR", self.home.path().join("cache"));
        c
    }

    fn run(&self, kubectl: &str, args: &[&str]) -> Output {
        privilege::output_within(&mut self.command(kubectl, args), Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("kubectl {args:?}: {e}"))
    }

    fn ok_with(&self, kubectl: &str, args: &[&str]) -> String {
        let o = self.run(kubectl, args);
        assert!(
            o.status.success(),
            "{kubectl} {args:?}: {}{}\n{}",
            text(&o.stdout),
            text(&o.stderr),
            self.one.server.log_tail(40)
        );
        text(&o.stdout)
    }

    fn ok(&self, args: &[&str]) -> String {
        self.ok_with("/usr/bin/kubectl", args)
    }

    /// kubectl with `input` on its stdin, killed after two minutes; with
    /// `keep_open` its stdin stays open until it exits (the container, not
    /// the end of kubectl's stdin, ends an attached session).
    fn with_stdin(&self, args: &[&str], input: &str, keep_open: bool) -> Output {
        let mut child = self
            .command("/usr/bin/kubectl", args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.as_bytes()).unwrap();
        let stdin = keep_open.then_some(stdin);
        let deadline = Instant::now() + Duration::from_secs(120);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        drop(stdin);
        child.wait_with_output().unwrap()
    }

    /// The state of ephemeral container `name` (`running`, `terminated`,
    /// `waiting`), once reported.
    fn ephemeral_state(&self, name: &str) -> Option<serde_json::Value> {
        let pod: serde_json::Value =
            serde_json::from_str(&self.ok(&["get", "pod", "web", "-o", "json"])).ok()?;
        pod.pointer("/status/ephemeralContainerStatuses")?
            .as_array()?
            .iter()
            .find(|s| s["name"] == name)
            .map(|s| s["state"].clone())
    }

    fn wait_state(&self, name: &str, state: &str) -> serde_json::Value {
        self.one.wait_for(&format!("ephemeral container {name} {state}"), 120, || {
            self.ephemeral_state(name).and_then(|s| s.get(state).cloned())
        })
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn kubectl_debug_runs_ephemeral_containers_in_a_running_pod() {
    if !require_e2e("kubectl_debug_runs_ephemeral_containers_in_a_running_pod") {
        return;
    }
    privilege::require_tools("e2e_debug", &[("kubectl", "kubectl")]);
    let env = Env {
        one: OneNode::start(&[], "rk3s=info"),
        home: tempfile::tempdir().unwrap(),
    };
    env.ok(&["wait", "--for=condition=Ready", "node/server", "--timeout=120s"]);
    let o = env.with_stdin(&["apply", "-f", "-"], POD, false);
    assert!(o.status.success(), "{}", text(&o.stderr));
    env.ok(&["wait", "--for=condition=Ready", "pod/web", "--timeout=180s"]);

    // --target: ps sees the target's processes; logs -c reads it.
    for (i, kubectl) in KUBECTLS.iter().enumerate() {
        let name = format!("ps{i}");
        env.ok_with(kubectl, &["debug", "web", &format!("--image={IMAGE}"), "--target=c", "-c", &name, "--", "ps"]);
        let done = env.wait_state(&name, "terminated");
        assert_eq!(done["exitCode"], 0, "{kubectl}: {done}");
        let logs = env.ok_with(kubectl, &["logs", "web", "-c", &name]);
        assert!(logs.contains("sleep 3600"), "{kubectl}: ps in the target's PID namespace: {logs}");
    }
    // The name kubectl picks, as it says it.
    let o = env.run("/usr/bin/kubectl", &["debug", "web", &format!("--image={IMAGE}"), "--target=c", "--", "ps"]);
    let said = format!("{}{}", text(&o.stdout), text(&o.stderr));
    let picked = said
        .split_whitespace()
        .find(|w| w.starts_with("debugger-"))
        .unwrap_or_else(|| panic!("no debugger name in {said:?}"))
        .trim_end_matches('.')
        .to_string();
    env.wait_state(&picked, "terminated");
    assert!(env.ok(&["logs", "web", "-c", &picked]).contains("sleep 3600"));

    // A long-running debugger: exec into it, in the target's PID and the
    // pod's network namespace.
    env.ok(&["debug", "web", &format!("--image={IMAGE}"), "--target=c", "-c", "shell", "--", "sleep", "3600"]);
    env.wait_state("shell", "running");
    let ns = |container: &str, kind: &str| {
        env.ok(&["exec", "web", "-c", container, "--", "readlink", &format!("/proc/self/ns/{kind}")])
    };
    for kind in ["pid", "net"] {
        assert_eq!(ns("shell", kind), ns("c", kind), "{kind} namespace of the debugger");
    }
    assert!(env.ok(&["exec", "web", "-c", "shell", "--", "ps"]).contains("sleep 3600"));

    // -i: kubectl attaches to the debugger's stdin and output.
    let o = env.with_stdin(
        &["debug", "-i", "web", &format!("--image={IMAGE}"), "-c", "reader", "--", "sh", "-c", "read line; echo got $line"],
        "hello\n",
        true,
    );
    assert!(text(&o.stdout).contains("got hello"), "debug -i: {}{}", text(&o.stdout), text(&o.stderr));
    assert_eq!(env.wait_state("reader", "terminated")["exitCode"], 0);

    // The pod runs on; its containers are untouched; every debugger is
    // reported, never ready.
    let pod: serde_json::Value = serde_json::from_str(&env.ok(&["get", "pod", "web", "-o", "json"])).unwrap();
    assert_eq!(pod["status"]["phase"], "Running");
    assert_eq!(pod["status"]["containerStatuses"][0]["restartCount"], 0);
    let statuses = pod["status"]["ephemeralContainerStatuses"].as_array().unwrap();
    assert_eq!(statuses.len(), KUBECTLS.len() + 3, "{statuses:?}");
    assert!(statuses.iter().all(|s| s["ready"] == false));

    // --copy-to: a copy of the pod with the debugging container added.
    env.ok(&["debug", "web", &format!("--image={IMAGE}"), "--copy-to=web-copy", "-c", "extra", "--", "sleep", "3600"]);
    env.ok(&["wait", "--for=condition=Ready", "pod/web-copy", "--timeout=180s"]);
    assert_eq!(env.ok(&["get", "pod", "web-copy", "-o", "jsonpath={.spec.containers[*].name}"]), "c extra");
    assert!(env.ok(&["exec", "web-copy", "-c", "extra", "--", "echo", "in the copy"]).contains("in the copy"));

    env.ok(&["delete", "pod", "web", "web-copy", "--wait=false"]);
    env.ok(&["wait", "--for=delete", "pod/web", "pod/web-copy", "--timeout=120s"]);
}
