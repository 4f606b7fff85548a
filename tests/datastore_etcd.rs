//! `rk3s server --datastore-endpoint` and `rk3s datastore migrate`, run as a
//! user runs them: the real binary, a private etcd on loopback (Debian's
//! `etcd-server`; skipped without it), the stock kubectl.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::loopback::{free_port, server_command, RK3S};
use rk3s::store::etcd::LocalEtcd;

const OBJECTS: usize = 500;

/// A server process, SIGKILLed on drop if still running (panics included).
struct Server(Option<Child>);

impl Server {
    /// SIGTERM and wait.
    fn stop(mut self) -> Output {
        let child = self.0.take().unwrap();
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        child.wait_with_output().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn server_cmd(data: &Path, kubeconfig: &Path, port: u16, extra: &[&str]) -> Command {
    let _ = std::fs::remove_file(kubeconfig);
    let mut cmd = server_command(data, kubeconfig, port, extra);
    cmd.stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// `rk3s datastore migrate` of the SQLite data in `data` to etcd at `endpoint`.
fn migrate(data: &Path, endpoint: &str) -> Output {
    Command::new(RK3S)
        .args(["datastore", "migrate", "--datastore-endpoint", endpoint])
        .arg("--data-dir")
        .arg(data)
        .env("RK3S_CONFIG_FILE", "/dev/null")
        .output()
        .unwrap()
}

/// Starts a server and waits until kubectl gets an answer through it.
fn start(data: &Path, kubeconfig: &Path, port: u16, extra: &[&str]) -> Server {
    let server = Server(Some(server_cmd(data, kubeconfig, port, extra).spawn().unwrap()));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if kubeconfig.is_file() && kubectl(kubeconfig, &["get", "ns", "default"]).status.success() {
            return server;
        }
        assert!(Instant::now() < deadline, "the server never answered");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("run kubectl")
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// name → uid of the test's ConfigMaps (`cm…`) in namespace `mig` (the
/// namespace also gets `kube-root-ca.crt` from the controllers).
fn uids(kubeconfig: &Path) -> BTreeMap<String, String> {
    let text = ok(kubectl(
        kubeconfig,
        &[
            "get",
            "configmaps",
            "-n",
            "mig",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}={.metadata.uid}{\"\\n\"}{end}",
        ],
    ));
    text.lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(n, _)| n.starts_with("cm"))
        .map(|(n, u)| (n.to_string(), u.to_string()))
        .collect()
}

#[test]
fn a_sqlite_cluster_moves_to_etcd_with_every_object_and_a_second_server_joins_with_the_token() {
    if !LocalEtcd::available() {
        eprintln!("skipped: no etcd binary (apt-get install etcd-server)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let kubeconfig = dir.path().join("rk3s.yaml");
    let port = free_port();

    // A one-server cluster on SQLite with 500 objects.
    let server = start(&data, &kubeconfig, port, &[]);
    ok(kubectl(&kubeconfig, &["create", "namespace", "mig"]));
    let mut list = String::from("apiVersion: v1\nkind: List\nitems:\n");
    for i in 0..OBJECTS {
        list.push_str(&format!(
            "- apiVersion: v1\n  kind: ConfigMap\n  metadata:\n    name: cm{i:03}\n    namespace: mig\n  data:\n    num: \"{i}\"\n"
        ));
    }
    let manifest = dir.path().join("cms.yaml");
    std::fs::write(&manifest, list).unwrap();
    ok(kubectl(&kubeconfig, &["create", "--validate=false", "-f", manifest.to_str().unwrap()]));
    let before = uids(&kubeconfig);
    assert_eq!(before.len(), OBJECTS);
    let out = server.stop();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Move it to an empty etcd.
    let etcd = LocalEtcd::start().unwrap();
    let moved = migrate(&data, &etcd.endpoint);
    let said = ok(moved);
    assert!(said.contains("copied"), "{said}");

    // The same server on etcd: every object, same UIDs; writes and reads work.
    let server = start(&data, &kubeconfig, port, &["--datastore-endpoint", &etcd.endpoint]);
    assert_eq!(uids(&kubeconfig), before);
    let cm = ok(kubectl(&kubeconfig, &["get", "cm", "-n", "mig", "cm007", "-o", "jsonpath={.data.num}"]));
    assert_eq!(cm, "7");
    ok(kubectl(&kubeconfig, &["create", "configmap", "after", "-n", "mig", "--from-literal=k=v"]));
    ok(kubectl(&kubeconfig, &["delete", "configmap", "cm000", "-n", "mig"]));
    assert_eq!(uids(&kubeconfig).len(), OBJECTS - 1);
    ok(kubectl(&kubeconfig, &["get", "configmap", "after", "-n", "mig"]));

    // Migrating again into the now non-empty etcd is refused.
    let again = migrate(&data, &etcd.endpoint);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("empty etcd"));

    // A second server with another token is refused, saying why.
    let data2 = dir.path().join("data2");
    let kubeconfig2 = dir.path().join("second.yaml");
    let wrong = server_cmd(
        &data2,
        &kubeconfig2,
        free_port(),
        &["--datastore-endpoint", &etcd.endpoint, "--token", "not-the-token"],
    )
    .output()
    .unwrap();
    assert!(!wrong.status.success());
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(err.contains("--token does not match"), "{err}");

    // With the first server's token it joins: the same CAs, the same objects,
    // and a write through one is read through the other.
    let token = std::fs::read_to_string(data.join("server/token")).unwrap();
    let first_url = format!("https://127.0.0.1:{port}");
    let second = start(
        &data2,
        &kubeconfig2,
        free_port(),
        &["--datastore-endpoint", &etcd.endpoint, "--token", token.trim(), "--server", &first_url],
    );
    for ca in ["server-ca.crt", "client-ca.crt", "service.key"] {
        assert_eq!(
            std::fs::read(data.join("server/tls").join(ca)).unwrap(),
            std::fs::read(data2.join("server/tls").join(ca)).unwrap(),
            "{ca} differs"
        );
    }
    assert_eq!(uids(&kubeconfig2), uids(&kubeconfig));
    ok(kubectl(&kubeconfig2, &["create", "configmap", "via-second", "-n", "mig", "--from-literal=k=v"]));
    ok(kubectl(&kubeconfig, &["get", "configmap", "via-second", "-n", "mig"]));
    let out = second.stop();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let out = server.stop();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    drop(etcd);
}
