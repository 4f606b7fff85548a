//! The real kubectl against the OpenAPI router (plus a minimal legacy
//! discovery stub): `kubectl explain` walks our schemas. Skipped when no
//! kubectl is installed.

use std::sync::Arc;

use axum::routing::get;
use axum::{Json, Router};
use rk3s::apiserver::openapi;
use rk3s::apiserver::registry::{Registry, ResourceDef};
use serde_json::json;

fn def(group: &str, kind: &str, plural: &str) -> ResourceDef {
    ResourceDef {
        group: group.into(),
        version: "v1".into(),
        kind: kind.into(),
        plural: plural.into(),
        singular: kind.to_lowercase(),
        short_names: vec![],
        categories: vec![],
        namespaced: true,
        subresources: vec!["status".into()],
        verbs: [
            "create", "delete", "get", "list", "patch", "update", "watch",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        columns: vec![],
    }
}

fn resource_list(gv: &str, name: &str, kind: &str) -> serde_json::Value {
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": [
        {"name": name, "singularName": kind.to_lowercase(), "namespaced": true, "kind": kind, "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}
    ]})
}

async fn serve() -> String {
    let registry = Registry::empty();
    registry.insert(def("", "Pod", "pods"));
    registry.insert(def("apps", "Deployment", "deployments"));
    let discovery = Router::new()
        .route("/version", get(|| async { Json(json!({"major": "1", "minor": "32", "gitVersion": "v1.32.4+rk3s1", "platform": "linux/amd64"})) }))
        .route("/api", get(|| async { Json(json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})) }))
        .route("/apis", get(|| async {
            Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [{"name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}], "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"}}]}))
        }))
        .route("/api/v1", get(|| async { Json(resource_list("v1", "pods", "Pod")) }))
        .route("/apis/apps/v1", get(|| async { Json(resource_list("apps/v1", "deployments", "Deployment")) }));
    let app = discovery.merge(openapi::router(Arc::new(registry)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// Whether kubectl runs here; says the test is skipped when it does not.
fn kubectl_installed() -> bool {
    let there = std::process::Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_ok();
    if !there {
        eprintln!("kubectl not installed: skipped");
    }
    there
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_explain_walks_the_schemas() {
    if !kubectl_installed() {
        return;
    }
    let server = serve().await;
    let home = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new("kubectl")
        .env("HOME", home.path())
        .env("KUBECONFIG", home.path().join("none"))
        .args([
            "--server",
            &server,
            "explain",
            "deployment.spec.template.spec.containers",
        ])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kubectl failed: {stderr}\n{stdout}");
    assert!(stdout.contains("KIND:       Deployment"), "{stdout}");
    assert!(
        stdout.contains("FIELD: containers <[]Container>"),
        "{stdout}"
    );
    assert!(stdout.contains("image\t<string>"), "{stdout}");
}

/// `kubectl apply` (strict validation) finds our PATCH operations declare
/// `fieldValidation`, so it leaves validation to the server: a manifest with
/// an unknown field is not rejected client-side, and the create reaches the
/// server (which, here, serves no REST handlers).
#[tokio::test(flavor = "multi_thread")]
async fn kubectl_apply_passes_the_field_validation_probe() {
    if !kubectl_installed() {
        return;
    }
    let server = serve().await;
    let home = tempfile::tempdir().unwrap();
    let manifest = home.path().join("d.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: default\nspec:\n  bogusField: 1\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: web\n        image: nginx\n",
    )
    .unwrap();
    let out = tokio::process::Command::new("kubectl")
        .env("HOME", home.path())
        .env("KUBECONFIG", home.path().join("none"))
        .args(["--server", &server, "apply", "-f"])
        .arg(&manifest)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("error validating"), "{stderr}");
    assert!(
        !stderr.contains("openapi") && !stderr.contains("unknown field"),
        "{stderr}"
    );
    assert!(
        stderr.contains("error when creating") && stderr.contains("post deployments.apps"),
        "{stderr}"
    );
    eprintln!("kubectl apply (no REST handlers here): {stderr}");
}
