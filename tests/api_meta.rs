//! The discovery router alone, served over plain HTTP to the real kubectl
//! (when installed): `kubectl version` and `kubectl api-resources` need
//! nothing but `/version` and discovery, and over `http://` kubectl sends no
//! credentials. Both kubectl 1.32 (aggregated discovery v2) and, when the
//! dispatcher bundles it, kubectl 1.27 (v2beta1 only) are run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use axum::routing::get;
use rk3s::apiserver::builtin::builtin_registry;
use rk3s::apiserver::discovery::router;
use rk3s::apiserver::registry::Registry;
use rk3s::apiserver::table::{to_table, IncludeObject};
use serde_json::json;

/// A list route answering with a Table, as the REST core will.
/// Items are built per request so that ages are exact whenever kubectl asks.
fn table_route(
    registry: &Registry,
    group: &str,
    plural: &str,
    items: fn() -> Vec<serde_json::Value>,
) -> axum::Router {
    let def = registry.lookup(group, "v1", plural).expect("builtin");
    let path = if def.namespaced {
        format!("/api/v1/namespaces/default/{plural}")
    } else {
        format!("/api/v1/{plural}")
    };
    axum::Router::new().route(
        &path,
        get(move || {
            let table = to_table(&def, &items(), "100", None, None, IncludeObject::Metadata);
            async move {
                (
                    [(
                        http::header::CONTENT_TYPE,
                        "application/json;as=Table;v=v1;g=meta.k8s.io",
                    )],
                    table.to_string(),
                )
            }
        }),
    )
}

fn ago(secs: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::seconds(secs)).to_rfc3339()
}

fn pods() -> Vec<serde_json::Value> {
    vec![json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "default", "creationTimestamp": ago(3600), "uid": "u1"},
        "spec": {"nodeName": "pi-1", "containers": [{"name": "app", "image": "app:1"}]},
        "status": {"phase": "Running", "podIPs": [{"ip": "10.42.0.7"}],
            "containerStatuses": [{"name": "app", "ready": false, "restartCount": 5,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(300)}}}]}})]
}

fn nodes() -> Vec<serde_json::Value> {
    vec![json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "pi-1", "creationTimestamp": ago(7200), "uid": "n1",
            "labels": {"node-role.kubernetes.io/control-plane": "true"}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}],
            "addresses": [{"type": "InternalIP", "address": "192.168.1.10"}],
            "nodeInfo": {"kubeletVersion": "v1.32.0+rk3s1", "osImage": "Debian", "kernelVersion": "6.6",
                         "containerRuntimeVersion": "containerd://1.7"}}})]
}

fn fixtures(registry: &Registry) -> axum::Router {
    table_route(registry, "", "pods", pods).merge(table_route(registry, "", "nodes", nodes))
}

fn kubectl_binaries() -> Vec<PathBuf> {
    let mut found = Vec::new();
    for candidate in [
        "/usr/bin/kubectl",
        "/usr/lib/google-cloud-sdk/bin/kubectl.1.27",
    ] {
        let path = PathBuf::from(candidate);
        if path.exists() {
            found.push(path);
        }
    }
    found
}

fn write_kubeconfig(dir: &Path, port: u16) -> PathBuf {
    let path = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: http://127.0.0.1:{port}\n\
         contexts:\n- name: t\n  context:\n    cluster: t\n    user: u\ncurrent-context: t\nusers:\n- name: u\n  user: {{}}\n"
    );
    std::fs::write(&path, text).expect("write kubeconfig");
    path
}

fn run(kubectl: &Path, dir: &Path, kubeconfig: &Path, args: &[&str]) -> String {
    let out = Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .args(args)
        .env("HOME", dir)
        .output()
        .expect("run kubectl");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{} {args:?} failed: {}\n{stdout}",
        kubectl.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The columns of the `api-resources` line for `name`.
fn line_fields(output: &str, name: &str, api_version: &str) -> Vec<String> {
    output
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .find(|f| f.first().map(String::as_str) == Some(name) && f.iter().any(|x| x == api_version))
        .unwrap_or_else(|| panic!("no {name} ({api_version}) line in:\n{output}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_kubectl_reads_version_and_discovery() {
    let binaries = kubectl_binaries();
    if binaries.is_empty() {
        eprintln!("kubectl not installed; skipping");
        return;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let registry = Arc::new(builtin_registry());
    let app = router(registry.clone()).merge(fixtures(&registry));
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    for kubectl in binaries {
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = write_kubeconfig(dir.path(), port);
        let kubectl2 = kubectl.clone();
        let dir_path = dir.path().to_path_buf();
        let (version, resources, pods, nodes) = tokio::task::spawn_blocking(move || {
            let version = run(
                &kubectl2,
                &dir_path,
                &kubeconfig,
                &["version", "-o", "json"],
            );
            let resources = run(&kubectl2, &dir_path, &kubeconfig, &["api-resources"]);
            let pods = run(
                &kubectl2,
                &dir_path,
                &kubeconfig,
                &["get", "po", "-n", "default", "-o", "wide"],
            );
            let nodes = run(&kubectl2, &dir_path, &kubeconfig, &["get", "nodes"]);
            (version, resources, pods, nodes)
        })
        .await
        .expect("kubectl thread");

        let version: serde_json::Value = serde_json::from_str(&version).expect("version json");
        assert_eq!(
            version["serverVersion"]["minor"],
            "32",
            "{}",
            kubectl.display()
        );
        assert_eq!(version["serverVersion"]["gitVersion"], "v1.32.0+rk3s1");

        assert_eq!(
            line_fields(&resources, "pods", "v1"),
            ["pods", "po", "v1", "true", "Pod"]
        );
        assert_eq!(
            line_fields(&resources, "deployments", "apps/v1"),
            ["deployments", "deploy", "apps/v1", "true", "Deployment"]
        );
        assert_eq!(
            line_fields(&resources, "horizontalpodautoscalers", "autoscaling/v2"),
            [
                "horizontalpodautoscalers",
                "hpa",
                "autoscaling/v2",
                "true",
                "HorizontalPodAutoscaler"
            ]
        );
        assert_eq!(
            line_fields(
                &resources,
                "customresourcedefinitions",
                "apiextensions.k8s.io/v1"
            ),
            [
                "customresourcedefinitions",
                "crd,crds",
                "apiextensions.k8s.io/v1",
                "false",
                "CustomResourceDefinition"
            ]
        );
        assert_eq!(
            line_fields(&resources, "namespaces", "v1"),
            ["namespaces", "ns", "v1", "false", "Namespace"]
        );
        assert!(
            !resources.contains("pods/status"),
            "subresources are not listed"
        );
        let pod_lines: Vec<Vec<&str>> = pods
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            pod_lines[0],
            [
                "NAME",
                "READY",
                "STATUS",
                "RESTARTS",
                "AGE",
                "IP",
                "NODE",
                "NOMINATED",
                "NODE",
                "READINESS",
                "GATES"
            ],
            "{pods}"
        );
        assert_eq!(
            pod_lines[1],
            [
                "web-1",
                "0/1",
                "CrashLoopBackOff",
                "5",
                "(5m",
                "ago)",
                "60m",
                "10.42.0.7",
                "pi-1",
                "<none>",
                "<none>"
            ],
            "{pods}"
        );
        let node_lines: Vec<Vec<&str>> = nodes
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            node_lines[0],
            ["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
            "{nodes}"
        );
        assert_eq!(
            node_lines[1],
            ["pi-1", "Ready", "control-plane", "120m", "v1.32.0+rk3s1"],
            "{nodes}"
        );
        eprintln!(
            "{}: version, api-resources and get as expected",
            kubectl.display()
        );
    }
    server.abort();
}
