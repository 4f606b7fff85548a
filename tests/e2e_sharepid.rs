//! `shareProcessNamespace` against the real `rk3s server` and its built-in
//! agent on a private containerd (`common::onenode`): in a pod with the
//! flag, container `b` sees container `a`'s `sleep` and PID 1 is the pod's
//! pause process; in a pod without it, `b` sees only its own processes;
//! `hostPID` with the flag is refused with kube's error; the pause goes
//! with its pod.
//!
//! Root-only: skips without root unless `RK3S_E2E=1`.

mod common;

use common::nodekit;
use common::onenode::OneNode;
use common::privilege::{self, require_e2e};

fn pod(name: &str, share: bool) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 1
  shareProcessNamespace: {share}
  containers:
  - name: a
    image: docker.io/rk3s/busybox:test
    command: [sleep, "4242"]
  - name: b
    image: docker.io/rk3s/busybox:test
    command: [sleep, "3600"]
"#
    )
}

/// Pids of running pause processes (`rk3s _RK3S_PAUSE <uid>`) of pod `uid`.
fn pauses(uid: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_string_lossy().parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            (args.get(1) == Some(&&b"_RK3S_PAUSE"[..]) && args.get(2) == Some(&uid.as_bytes()))
                .then_some(pid)
        })
        .collect()
}

#[test]
fn share_process_namespace_puts_the_pods_containers_in_one_pid_namespace() {
    if !require_e2e("share_process_namespace_puts_the_pods_containers_in_one_pid_namespace") {
        return;
    }
    privilege::require_tools("e2e_sharepid", &[("kubectl", "kubectl")]);
    let one = OneNode::start(&[], "rk3s=info");
    one.wait_node_ready();
    for (name, share) in [("shared", true), ("apart", false)] {
        let file = one.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, pod(name, share)).unwrap();
        one.kubectl_ok(&["apply", "-f", file.to_str().unwrap()]);
    }
    one.kubectl_ok(&["wait", "--for=condition=Ready", "pod/shared", "pod/apart", "--timeout=180s"]);
    let exec = |pod: &str, c: &str, argv: &[&str]| {
        let mut args = vec!["exec", pod, "-c", c, "--"];
        args.extend(argv);
        one.kubectl_ok(&args)
    };

    // Shared: b sees a's sleep; PID 1 is the pause; one namespace.
    let ps = exec("shared", "b", &["ps"]);
    eprintln!("ps in b of the shared pod:\n{ps}");
    assert!(ps.contains("sleep 4242"), "b sees a's process: {ps}");
    assert!(ps.contains("sleep 3600"), "{ps}");
    let init = exec("shared", "b", &["cat", "/proc/1/cmdline"]);
    assert!(init.contains("_RK3S_PAUSE"), "PID 1 is the pause: {init:?}");
    let ns = |pod: &str, c: &str| exec(pod, c, &["readlink", "/proc/self/ns/pid"]);
    assert_eq!(ns("shared", "a"), ns("shared", "b"));
    let uid = one.kubectl_ok(&["get", "pod", "shared", "-o", "jsonpath={.metadata.uid}"]);
    let pids = pauses(&uid);
    assert_eq!(pids.len(), 1, "one pause for the pod: {pids:?}");
    let host_view = std::fs::read_link(format!("/proc/{}/ns/pid", pids[0])).unwrap();
    assert_eq!(ns("shared", "a").trim(), host_view.to_str().unwrap());

    // Apart: b sees only itself; it is its own PID 1.
    let ps = exec("apart", "b", &["ps"]);
    eprintln!("ps in b of the other pod:\n{ps}");
    assert!(!ps.contains("sleep 4242"), "b must not see a's process: {ps}");
    assert!(ps.contains("sleep 3600"), "{ps}");
    let init = exec("apart", "b", &["cat", "/proc/1/cmdline"]);
    assert!(init.starts_with("sleep"), "PID 1 is b's own command: {init:?}");
    assert_ne!(ns("apart", "a"), ns("apart", "b"));
    let apart_uid = one.kubectl_ok(&["get", "pod", "apart", "-o", "jsonpath={.metadata.uid}"]);
    assert!(pauses(&apart_uid).is_empty(), "no pause without the flag");

    // hostPID with the flag: kube's error, nothing created.
    let file = one.dir.path().join("both.yaml");
    let both = pod("both", true).replace("  shareProcessNamespace", "  hostPID: true\n  shareProcessNamespace");
    std::fs::write(&file, both).unwrap();
    let o = one.kubectl(&["apply", "-f", file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("spec.securityContext.shareProcessNamespace: Invalid value: true: ShareProcessNamespace and HostPID cannot both be enabled"),
        "{err}"
    );

    // The pause goes with its pod.
    one.kubectl_ok(&["delete", "pod", "shared", "apart", "--wait=false"]);
    one.kubectl_ok(&["wait", "--for=delete", "pod/shared", "pod/apart", "--timeout=120s"]);
    one.wait_for("the pause to stop", 30, || pauses(&uid).is_empty().then_some(()));
    nodekit::forget_pod(&uid);
    nodekit::forget_pod(&apart_uid);
}
