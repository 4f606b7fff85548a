//! The k3s habits on a real two-node cluster (issue 23): the real `rk3s
//! server` (with its built-in agent) and `rk3s agent`, each in a network
//! namespace ([`common::twonode`]).
//!
//! - Manifests dropped into `<data-dir>/server/manifests/` of the running
//!   server appear as objects and an `Addon`; an edit reaches the cluster; a
//!   `.skip` file stops further edits; a broken file gets a Warning Event.
//! - `rk3s secrets-encrypt enable` on the running server: a Secret's value is
//!   not in `state.db` (grep of the files), `kubectl get secret` still decodes
//!   it; the same after `rotate-keys`.
//! - `rk3s certificate rotate` on server and agent, then restarts: new
//!   certificates, kubectl works, both nodes Ready again.
//! - `rk3s snapshot save` while running, stop, wipe the server's data,
//!   `rk3s snapshot restore`, start: every object back with the same UIDs,
//!   the Secret still decrypts, the agent's node Ready without rejoining by hand.
//!
//! Root-only: skips without root unless `RK3S_E2E=1`.

mod common;

use std::path::Path;

use common::privilege::require_e2e;
use common::twonode::{text, Cluster};

const RK3S: &str = env!("CARGO_BIN_EXE_rk3s");

fn rk3s(args: &[&str]) -> String {
    let o = std::process::Command::new(RK3S)
        .args(args)
        .env("RK3S_CONFIG_FILE", "/dev/null")
        .output()
        .expect("run rk3s");
    assert!(o.status.success(), "rk3s {args:?}: {}{}", text(&o.stdout), text(&o.stderr));
    text(&o.stdout)
}

/// Whether any of the datastore's files holds `needle` (db, WAL).
fn db_contains(data: &Path, needle: &str) -> bool {
    let db = data.join("server/db");
    ["state.db", "state.db-wal"].iter().any(|f| {
        std::fs::read(db.join(f))
            .map(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
            .unwrap_or(false)
    })
}

fn both_nodes_ready(c: &Cluster) -> Option<()> {
    let out = c.kubectl_ok(&[
        "get", "nodes", "-o",
        "jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type==\"Ready\")].status} {end}",
    ]);
    (out.contains("server=True") && out.contains("agent=True")).then_some(())
}

const DEMO: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: demo
  namespace: kube-system
data:
  k: v1
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: demo
spec:
  replicas: 1
  selector: {matchLabels: {app: demo}}
  template:
    metadata: {labels: {app: demo}}
    spec:
      nodeSelector: {kubernetes.io/hostname: agent}
      containers: [{name: c, image: docker.io/rk3s/busybox:test, imagePullPolicy: IfNotPresent, command: [sleep, '3600']}]
";

/// The demo Deployment's pod once Running (tracked for clean-up).
fn demo_pod(c: &Cluster) -> String {
    c.wait_for("the demo pod Running", 120, || {
        let out = c.kubectl_ok(&[
            "get", "pods", "-l", "app=demo", "-o",
            "jsonpath={range .items[*]}{.metadata.name}={.status.phase} {end}",
        ]);
        let (name, phase) = out.split_whitespace().next()?.split_once('=')?;
        c.track_pod(name);
        (phase == "Running").then(|| name.to_string())
    })
}

fn cm_value(c: &Cluster) -> String {
    c.kubectl_ok(&["get", "cm", "demo", "-n", "kube-system", "-o", "jsonpath={.data.k}"])
}

fn manifests(c: &Cluster, data: &Path) {
    let dir = data.join("server/manifests");
    std::fs::write(dir.join("demo.yaml"), DEMO).unwrap();
    c.wait_for("the manifest's Deployment", 30, || {
        c.kubectl(&["get", "deployment", "demo"]).status.success().then_some(())
    });
    assert_eq!(cm_value(c), "v1");
    demo_pod(c);
    let addon = c.kubectl_ok(&["get", "addons", "-A"]);
    assert!(addon.contains("kube-system") && addon.contains("demo.yaml"), "{addon}");

    std::fs::write(dir.join("demo.yaml"), DEMO.replace("k: v1", "k: v2")).unwrap();
    c.wait_for("the edit to reach the cluster", 30, || (cm_value(c) == "v2").then_some(()));

    std::fs::write(dir.join("demo.yaml.skip"), "").unwrap();
    std::fs::write(dir.join("demo.yaml"), DEMO.replace("k: v1", "k: v3")).unwrap();
    // A file applied after the skipped one shows a pass ran since the edit.
    std::fs::write(dir.join("marker.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: marker}\n").unwrap();
    c.wait_for("a pass after the .skip", 30, || {
        c.kubectl(&["get", "cm", "marker"]).status.success().then_some(())
    });
    std::thread::sleep(std::time::Duration::from_secs(5));
    assert_eq!(cm_value(c), "v2", "a .skip file stops the manifest");

    std::fs::write(dir.join("broken.yml"), "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: [oops\n").unwrap();
    c.wait_for("a Warning Event on the broken file's Addon", 30, || {
        let ev = c.kubectl_ok(&[
            "get", "events", "-n", "kube-system", "--field-selector", "involvedObject.name=broken",
            "-o", "jsonpath={.items[*].reason}",
        ]);
        ev.contains("ApplyManifestFailed").then_some(())
    });
    // And the broken file does not block the others.
    std::fs::write(dir.join("later.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: later}\n").unwrap();
    c.wait_for("a file after the broken one", 30, || {
        c.kubectl(&["get", "cm", "later"]).status.success().then_some(())
    });
}

fn secret_value(c: &Cluster) -> String {
    let b64 = c.kubectl_ok(&["get", "secret", "s1", "-o", "jsonpath={.data.password}"]);
    use base64::Engine as _;
    text(&base64::engine::general_purpose::STANDARD.decode(b64.trim()).unwrap())
}

fn secrets(c: &Cluster, data: &Path) {
    let d = data.to_str().unwrap();
    let out = rk3s(&["secrets-encrypt", "-d", d, "enable"]);
    assert!(out.contains("re-encrypted"), "{out}");
    c.kubectl_ok(&["create", "secret", "generic", "s1", "--from-literal=password=hunter2-e2e-habits"]);
    // A Secret's data is base64 inside its JSON: what a plaintext store would hold.
    let stored = "aHVudGVyMi1lMmUtaGFiaXRz";
    assert!(!db_contains(data, stored), "the Secret's value is not in state.db");
    assert_eq!(secret_value(c), "hunter2-e2e-habits");
    // The same grep finds a value stored in plaintext (a ConfigMap).
    let probe = "cHJvYmUtcGxhaW50ZXh0LWU yZQ".replace(' ', "");
    c.kubectl_ok(&["create", "configmap", "probe", &format!("--from-literal=x={probe}")]);
    assert!(db_contains(data, &probe), "the grep sees plaintext values");
    let status = rk3s(&["secrets-encrypt", "-d", d, "status"]);
    assert!(status.contains("Encryption Status: Enabled"), "{status}");

    let out = rk3s(&["secrets-encrypt", "-d", d, "rotate-keys"]);
    assert!(out.contains("re-encrypted"), "{out}");
    assert!(!db_contains(data, stored), "still not in state.db after rotate-keys");
    assert_eq!(secret_value(c), "hunter2-e2e-habits");
    let after = rk3s(&["secrets-encrypt", "-d", d, "status"]);
    assert_ne!(status, after, "a new active key");
}

fn certificates(c: &mut Cluster, data: &Path, agent_data: &Path) {
    let before = std::fs::read_to_string(data.join("server/tls/serving-kube-apiserver.crt")).unwrap();
    let agent_before = std::fs::read_to_string(agent_data.join("agent/client-kubelet.crt")).unwrap();
    let out = rk3s(&["certificate", "-d", data.to_str().unwrap(), "check"]);
    assert!(out.contains("serving-kube-apiserver.crt") && out.contains("client-kubelet.crt"), "{out}");
    rk3s(&["certificate", "-d", data.to_str().unwrap(), "rotate"]);
    rk3s(&["certificate", "-d", agent_data.to_str().unwrap(), "rotate"]);
    c.restart_server();
    c.wait_for("the API after rotation", 60, || c.kubectl(&["get", "ns"]).status.success().then_some(()));
    c.restart_agent();
    c.wait_for("the agent's new kubelet certificate", 60, || {
        let now = std::fs::read_to_string(agent_data.join("agent/client-kubelet.crt")).ok()?;
        (now != agent_before).then_some(())
    });
    let after = std::fs::read_to_string(data.join("server/tls/serving-kube-apiserver.crt")).unwrap();
    assert_ne!(before, after, "a new serving certificate");
    c.wait_for("both nodes Ready after rotation", 90, || both_nodes_ready(c));
    // The agent serves exec again, through its tunnel with the new certificates.
    let pod = demo_pod(c);
    c.wait_for("exec into the agent's pod after rotation", 90, || {
        let o = c.kubectl(&["exec", &pod, "--", "echo", "rotated"]);
        text(&o.stdout).contains("rotated").then_some(())
    });
}

fn uids(c: &Cluster) -> String {
    c.kubectl_ok(&[
        "get", "configmaps,secrets,deployments,addons", "-A", "-o",
        "jsonpath={range .items[*]}{.kind}/{.metadata.namespace}/{.metadata.name}={.metadata.uid}\n{end}",
    ])
}

fn snapshot_restore(c: &mut Cluster, data: &Path, keep: &Path) {
    let d = data.to_str().unwrap();
    let out = rk3s(&["snapshot", "-d", d, "save"]);
    assert!(out.contains("saved to"), "{out}");
    let before = uids(c);
    assert!(before.contains("Secret/default/s1=") && before.contains("Deployment/default/demo="), "{before}");
    // The snapshot leaves the machine (the SD card dies).
    let snaps = data.join("server/db/snapshots");
    for e in std::fs::read_dir(&snaps).unwrap().flatten() {
        std::fs::copy(e.path(), keep.join(e.file_name())).unwrap();
    }
    let name = rk3s(&["snapshot", "-d", d, "--dir", keep.to_str().unwrap(), "ls"]);
    let name = name.lines().nth(1).and_then(|l| l.split_whitespace().next()).unwrap().to_string();
    c.stop_server();
    std::fs::remove_dir_all(data.join("server")).unwrap();
    // A damaged copy is refused before anything is written.
    let bad = keep.join("bad.tar.gz");
    let mut bytes = std::fs::read(keep.join(format!("{name}.tar.gz"))).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&bad, bytes).unwrap();
    std::fs::copy(keep.join(format!("{name}.tar.gz.sha256")), keep.join("bad.tar.gz.sha256")).unwrap();
    let o = std::process::Command::new(RK3S)
        .args(["snapshot", "-d", d, "restore", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!o.status.success() && text(&o.stderr).contains("refusing snapshot"), "{}", text(&o.stderr));
    assert!(!data.join("server/db/state.db").exists());

    let out = rk3s(&["snapshot", "-d", d, "--dir", keep.to_str().unwrap(), "restore", &name]);
    assert!(out.contains("Restored"), "{out}");
    c.spawn_server();
    c.wait_for("the API after restore", 60, || c.kubectl(&["get", "ns"]).status.success().then_some(()));
    assert_eq!(uids(c), before, "every object back with the same UID");
    assert_eq!(secret_value(c), "hunter2-e2e-habits");
    c.wait_for("both nodes Ready after restore", 90, || both_nodes_ready(c));
}

#[test]
fn manifests_secrets_encryption_certificates_and_snapshots() {
    if !require_e2e("manifests_secrets_encryption_certificates_and_snapshots") {
        return;
    }
    let mut c = Cluster::start();
    c.start_agent();
    c.wait_for("both nodes Ready", 90, || both_nodes_ready(&c));
    let data = c.dir.path().join("server-data");
    let agent_data = c.dir.path().join("agent-data");
    let keep = tempfile::tempdir().unwrap();
    manifests(&c, &data);
    secrets(&c, &data);
    certificates(&mut c, &data, &agent_data);
    snapshot_restore(&mut c, &data, keep.path());
}
