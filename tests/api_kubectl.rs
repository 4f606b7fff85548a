//! The stock kubectl against the in-process API server.
//! `create -f`/`replace -f` run with kubectl's default strict validation (OpenAPI v3 is served).
mod common;

use common::apiserver::TestServer;

const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm1\n  labels:\n    app: web\ndata:\n  a: \"1\"\n";

#[test]
fn version_and_namespaces() {
    let s = TestServer::start();
    let k = s.kubectl();
    let v = k.run_ok(&["version"]);
    assert!(v.contains("Server Version: v1.32.0+rk3s"), "{v}");
    let ns = k.run_ok(&["get", "ns", "-o", "name"]);
    for n in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(ns.contains(&format!("namespace/{n}")), "{ns}");
    }
}

#[test]
fn configmap_lifecycle() {
    let s = TestServer::start();
    let k = s.kubectl();
    let out = k.run_with_stdin(&["create", "-f", "-"], CM);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let y = k.run_ok(&["get", "cm", "cm1", "-o", "yaml"]);
    assert!(y.contains("a: \"1\""), "{y}");
    assert!(y.contains("resourceVersion:"), "{y}");
    let j: serde_json::Value =
        serde_json::from_str(&k.run_ok(&["get", "cm", "cm1", "-o", "json"])).unwrap();
    assert_eq!(j["metadata"]["labels"]["app"], "web");
    assert_eq!(
        k.run_ok(&["get", "cm", "-l", "app=web", "-o", "name"])
            .trim(),
        "configmap/cm1"
    );
    assert_eq!(
        k.run_ok(&["get", "cm", "-l", "app!=web", "-o", "name"])
            .trim(),
        ""
    );
    assert_eq!(
        k.run_ok(&[
            "get",
            "cm",
            "--field-selector",
            "metadata.name=cm1",
            "-o",
            "name"
        ])
        .trim(),
        "configmap/cm1"
    );
    assert!(k.run_ok(&["get", "cm", "-A"]).contains("cm1"));
    k.run_ok(&["label", "cm", "cm1", "tier=fe"]);
    k.run_ok(&["annotate", "cm", "cm1", "note=hi"]);
    let j: serde_json::Value =
        serde_json::from_str(&k.run_ok(&["get", "cm", "cm1", "-o", "json"])).unwrap();
    assert_eq!(j["metadata"]["labels"]["tier"], "fe");
    assert_eq!(j["metadata"]["annotations"]["note"], "hi");
    let miss = k.run(&["get", "cm", "nope"]);
    assert!(String::from_utf8_lossy(&miss.stderr)
        .contains("Error from server (NotFound): configmaps \"nope\" not found"));
    let stale = serde_json::to_string(&j).unwrap();
    k.run_ok(&["label", "cm", "cm1", "x=y"]);
    let out = k.run_with_stdin(&["replace", "-f", "-"], &stale);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Operation cannot be fulfilled on configmaps \"cm1\""),
        "{err}"
    );
    k.run_ok(&["delete", "cm", "cm1", "--wait"]);
    assert!(!k.run(&["get", "cm", "cm1"]).status.success());
}

#[test]
fn chunked_list() {
    let s = TestServer::start();
    let k = s.kubectl();
    for i in 0..3 {
        k.run_with_stdin(&["create", "-f", "-"], &CM.replace("cm1", &format!("c{i}")));
    }
    let out = k.run_ok(&["get", "cm", "--chunk-size=1", "-o", "name"]);
    assert_eq!(out.lines().count(), 3, "{out}");
}

#[test]
fn finalizer_holds_object() {
    let s = TestServer::start();
    let k = s.kubectl();
    let cm = CM.replace(
        "  labels:",
        "  finalizers: [\"example.com/hold\"]\n  labels:",
    );
    assert!(k
        .run_with_stdin(&["create", "-f", "-"], &cm)
        .status
        .success());
    k.run_ok(&["delete", "cm", "cm1", "--wait=false"]);
    let j: serde_json::Value =
        serde_json::from_str(&k.run_ok(&["get", "cm", "cm1", "-o", "json"])).unwrap();
    assert!(j["metadata"]["deletionTimestamp"].is_string());
    k.run_ok(&[
        "patch",
        "cm",
        "cm1",
        "--type=merge",
        "-p",
        "{\"metadata\":{\"finalizers\":null}}",
    ]);
    assert!(!k.run(&["get", "cm", "cm1"]).status.success());
}

#[test]
fn watch_sees_changes() {
    let s = TestServer::start();
    let k = s.kubectl();
    k.run_with_stdin(&["create", "-f", "-"], CM);
    let mut child = k.spawn(&["get", "cm", "--watch", "-o", "name"]);
    std::thread::sleep(std::time::Duration::from_secs(2));
    k.run_with_stdin(&["create", "-f", "-"], &CM.replace("cm1", "cm2"));
    std::thread::sleep(std::time::Duration::from_secs(2));
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("configmap/cm2"), "{text}");
}

/// Needs protobuf request bodies (kubectl 1.32 `create <generator>`): passes
/// once the protobuf decoder is merged.
#[test]
fn create_generators() {
    let s = TestServer::start();
    let k = s.kubectl();
    k.run_ok(&["create", "namespace", "team"]);
    k.run_ok(&["create", "configmap", "g", "--from-literal=a=b"]);
}

/// Discovery-dependent: passes with apimeta's aggregated discovery.
#[test]
fn api_resources() {
    let s = TestServer::start();
    let out = s.kubectl().run_ok(&["api-resources"]);
    assert!(out.contains("configmaps"), "{out}");
}

#[test]
fn patches_collections_and_namespaces() {
    let s = TestServer::start();
    let k = s.kubectl();
    let ns = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team\n";
    assert!(k
        .run_with_stdin(&["create", "-f", "-"], ns)
        .status
        .success());
    for n in ["a", "b"] {
        let cm = CM
            .replace("cm1", n)
            .replace("  labels:", "  namespace: team\n  labels:");
        assert!(k
            .run_with_stdin(&["create", "-f", "-"], &cm)
            .status
            .success());
    }
    k.run_ok(&[
        "-n",
        "team",
        "patch",
        "cm",
        "a",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/data/a","value":"2"}]"#,
    ]);
    assert_eq!(
        k.run_ok(&["-n", "team", "get", "cm", "a", "-o", "jsonpath={.data.a}"]),
        "2"
    );
    assert!(k
        .run_ok(&["get", "cm", "-o", "wide", "-n", "team"])
        .contains("NAME"));
    let missing = k.run_with_stdin(&["-n", "nope", "create", "-f", "-"], CM);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("namespaces \"nope\" not found"));
    k.run_ok(&["-n", "team", "delete", "cm", "-l", "app=web"]);
    assert_eq!(
        k.run_ok(&["-n", "team", "get", "cm", "-o", "name"]).trim(),
        ""
    );
    assert!(k
        .run_with_stdin(
            &["create", "-f", "-"],
            &CM.replace("  labels:", "  namespace: team\n  labels:")
        )
        .status
        .success());
    k.run_ok(&["delete", "ns", "team", "--timeout=20s"]);
    assert!(!k.run(&["get", "ns", "team"]).status.success());
    let forbidden = k.run(&["delete", "ns", "default"]);
    assert!(
        String::from_utf8_lossy(&forbidden.stderr).contains("this namespace may not be deleted")
    );
}

/// `get all` needs the `all` category from apimeta's full registry.
#[test]
fn get_all() {
    let s = TestServer::start();
    let out = s.kubectl().run(&["get", "all"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Generator commands through the client-side dry run, which avoids the
/// protobuf request bodies of `kubectl create <generator>`.
#[test]
fn generators_via_client_dry_run() {
    let s = TestServer::start();
    let k = s.kubectl();
    let y = k.run_ok(&[
        "create",
        "configmap",
        "g",
        "--from-literal=a=b",
        "--dry-run=client",
        "-o",
        "yaml",
    ]);
    let sec = k.run_ok(&[
        "create",
        "secret",
        "generic",
        "sec",
        "--from-literal=p=q",
        "--dry-run=client",
        "-o",
        "yaml",
    ]);
    for doc in [&y, &sec] {
        let out = k.run_with_stdin(&["create", "-f", "-"], doc);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        k.run_ok(&["get", "secret", "sec", "-o", "jsonpath={.data.p}"]),
        "cQ=="
    );
    assert_eq!(
        k.run_ok(&["get", "cm", "g", "-o", "jsonpath={.data.a}"]),
        "b"
    );
}
