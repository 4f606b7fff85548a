use super::*;
use crate::apiserver::registry::ResourceDef;

fn def(
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    namespaced: bool,
    subresources: &[&str],
) -> ResourceDef {
    ResourceDef {
        version: version.into(),
        kind: kind.into(),
        singular: kind.to_lowercase(),
        subresources: subresources.iter().map(|s| s.to_string()).collect(),
        verbs: crate::apiserver::builtin::FULL_VERBS
            .iter()
            .map(|s| s.to_string())
            .collect(),
        ..ResourceDef::for_test(group, plural, namespaced)
    }
}

fn registry() -> Registry {
    let r = Registry::empty();
    r.insert(def(
        "",
        "v1",
        "Pod",
        "pods",
        true,
        &["status", "log", "exec", "binding", "eviction"],
    ));
    r.insert(def("", "v1", "Service", "services", true, &["status"]));
    r.insert(def("", "v1", "Namespace", "namespaces", false, &["status"]));
    r.insert(def(
        "apps",
        "v1",
        "Deployment",
        "deployments",
        true,
        &["status", "scale"],
    ));
    r.insert(def(
        "networking.k8s.io",
        "v1",
        "Ingress",
        "ingresses",
        true,
        &["status"],
    ));
    r.insert(def("example.com", "v1", "Widget", "widgets", true, &[]));
    r
}

/// Every `$ref` in `v`, recursively.
fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r);
            }
            m.values().for_each(|x| refs(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

#[test]
fn index_lists_every_group_version_with_a_hash() {
    let idx = index(&registry());
    let paths = idx["paths"].as_object().unwrap();
    let keys: Vec<&str> = paths.keys().map(|k| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "api/v1",
            "apis/apps/v1",
            "apis/networking.k8s.io/v1",
            "apis/example.com/v1"
        ]
    );
    let url = paths["apis/apps/v1"]["serverRelativeURL"].as_str().unwrap();
    let hash = url.strip_prefix("/openapi/v3/apis/apps/v1?hash=").unwrap();
    assert_eq!(hash.len(), 32);
    assert!(hash
        .chars()
        .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()));
    // Stable across calls.
    assert_eq!(index(&registry()), idx);
}

#[test]
fn apps_doc_has_a_patch_with_field_validation_for_deployments() {
    let doc = group_version_doc(&registry(), "apps", "v1").unwrap();
    assert_eq!(doc["openapi"], "3.0.0");
    let patch = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
    assert_eq!(patch["operationId"], "patchAppsV1NamespacedDeployment");
    assert_eq!(patch["x-kubernetes-action"], "patch");
    assert_eq!(
        patch["x-kubernetes-group-version-kind"],
        json!({"group": "apps", "version": "v1", "kind": "Deployment"})
    );
    let params: Vec<&str> = patch["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for p in ["dryRun", "fieldManager", "fieldValidation", "force"] {
        assert!(params.contains(&p), "{p} missing from {params:?}");
    }
    let content = patch["requestBody"]["content"].as_object().unwrap();
    assert!(content.contains_key("application/strategic-merge-patch+json"));
    assert!(content.contains_key("application/apply-patch+yaml"));
    let scale =
        &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]["patch"];
    assert_eq!(scale["x-kubernetes-group-version-kind"]["kind"], "Scale");
    assert!(
        doc["paths"]["/apis/apps/v1/deployments"]["get"]["operationId"]
            == "listAppsV1DeploymentForAllNamespaces"
    );
}

#[test]
fn apps_doc_schemas_carry_kube_names_and_extensions() {
    let doc = group_version_doc(&registry(), "apps", "v1").unwrap();
    let schemas = &doc["components"]["schemas"];
    let dep = &schemas["io.k8s.api.apps.v1.Deployment"];
    assert_eq!(
        dep["x-kubernetes-group-version-kind"],
        json!([{"group": "apps", "kind": "Deployment", "version": "v1"}])
    );
    assert_eq!(
        dep["properties"]["spec"]["allOf"][0]["$ref"],
        "#/components/schemas/io.k8s.api.apps.v1.DeploymentSpec"
    );
    let containers = &schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
    assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
    assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
    assert_eq!(containers["x-kubernetes-list-type"], "map");
    assert!(schemas["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]["description"].is_string());
    assert_eq!(
        schemas["io.k8s.apimachinery.pkg.apis.meta.v1.Time"]["format"],
        "date-time"
    );
    assert_eq!(
        schemas["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["format"],
        "int-or-string"
    );
    assert_eq!(
        schemas["io.k8s.api.apps.v1.DeploymentList"]["x-kubernetes-group-version-kind"][0]["kind"],
        "DeploymentList"
    );
}

#[test]
fn every_ref_resolves_inside_each_document() {
    let r = registry();
    for (g, v) in group_versions(&r) {
        let doc = group_version_doc(&r, &g, &v).unwrap();
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(!all.is_empty());
        for rf in all {
            let name = rf
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("foreign ref {rf}"));
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "{g}/{v}: unresolved {rf}"
            );
        }
    }
}

#[test]
fn core_doc_covers_cluster_scoped_kinds_and_subresources() {
    let doc = group_version_doc(&registry(), "", "v1").unwrap();
    let paths = &doc["paths"];
    assert_eq!(
        paths["/api/v1/namespaces/{name}"]["get"]["operationId"],
        "readCoreV1Namespace"
    );
    assert_eq!(
        paths["/api/v1/namespaces/{namespace}/pods/{name}/status"]["patch"]["operationId"],
        "patchCoreV1NamespacedPodStatus"
    );
    assert_eq!(
        paths["/api/v1/namespaces/{namespace}/pods/{name}/binding"]["post"]
            ["x-kubernetes-group-version-kind"]["kind"],
        "Binding"
    );
    assert!(paths["/api/v1/namespaces/{namespace}/pods/{name}/exec"]["get"].is_object());
    assert_eq!(
        doc["components"]["schemas"]["io.k8s.api.core.v1.Pod"]["x-kubernetes-group-version-kind"]
            [0]["kind"],
        "Pod"
    );
    assert!(group_version_doc(&registry(), "batch", "v1").is_none());
}

#[test]
fn unknown_kinds_get_a_permissive_schema() {
    let doc = group_version_doc(&registry(), "example.com", "v1").unwrap();
    let w = &doc["components"]["schemas"]["com.example.v1.Widget"];
    assert_eq!(w["x-kubernetes-preserve-unknown-fields"], true);
    assert_eq!(
        doc["paths"]["/apis/example.com/v1/namespaces/{namespace}/widgets/{name}"]["patch"]
            ["x-kubernetes-group-version-kind"]["kind"],
        "Widget"
    );
}

#[tokio::test]
async fn router_serves_index_documents_and_hash_redirects() {
    use tower::ServiceExt;
    let app = router(Arc::new(registry()));
    let get = |uri: &str| {
        axum::http::Request::get(uri)
            .body(axum::body::Body::empty())
            .unwrap()
    };
    let resp = app.clone().oneshot(get("/openapi/v3")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let idx: Value = serde_json::from_slice(&body).unwrap();
    let url = idx["paths"]["apis/apps/v1"]["serverRelativeURL"]
        .as_str()
        .unwrap()
        .to_string();
    let resp = app.clone().oneshot(get(&url)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CACHE_CONTROL], "public, immutable");
    let hash = url.split("hash=").nth(1).unwrap();
    assert_eq!(resp.headers()[header::ETAG], format!("\"{hash}\""));
    let resp = app
        .clone()
        .oneshot(get("/openapi/v3/apis/apps/v1?hash=STALE"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(resp.headers()[header::LOCATION], url.as_str());
    let resp = app
        .clone()
        .oneshot(get("/openapi/v3/apis/nope/v1"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    // v2: JSON by default, protobuf on request, each with its own ETag.
    let resp = app.clone().oneshot(get("/openapi/v2")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
    let json_etag = resp.headers()[header::ETAG].clone();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    let doc: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["swagger"], "2.0");
    assert_eq!(
        doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]["x-kubernetes-group-version-kind"]["kind"],
        "Deployment"
    );
    assert!(doc["definitions"]["io.k8s.api.apps.v1.Deployment"].is_object());
    let pb = axum::http::Request::builder()
        .uri("/openapi/v2")
        .header(header::ACCEPT, v2::PROTOBUF_TYPE)
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(pb).await.unwrap();
    assert_eq!(resp.headers()[header::CONTENT_TYPE], v2::PROTOBUF_TYPE);
    let pb_etag = resp.headers()[header::ETAG].clone();
    assert_ne!(pb_etag, json_etag);
    let cond = axum::http::Request::builder()
        .uri("/openapi/v2")
        .header(header::IF_NONE_MATCH, json_etag)
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = app.oneshot(cond).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Prints generation time, size and a rough RSS delta (not asserted; other
/// tests run in parallel threads): run with `--nocapture`.
#[test]
fn generation_cost_figures() {
    let r = registry();
    let before = rss_kib();
    let start = std::time::Instant::now();
    let key = crate::apiserver::strategic::TypeKey {
        group: "apps",
        version: "v1",
        kind: "Deployment",
    };
    assert!(crate::apiserver::strategic::supports_strategic(&key));
    println!(
        "strategic type graph: {:?}, RSS {} KiB -> {} KiB",
        start.elapsed(),
        before,
        rss_kib()
    );
    for (g, v) in group_versions(&r) {
        let start = std::time::Instant::now();
        let doc = group_version_doc(&r, &g, &v).unwrap();
        let elapsed = start.elapsed();
        let bytes = serde_json::to_vec(&doc).unwrap().len();
        println!(
            "openapi {}: {:?}, {} bytes, {} schemas",
            gv_path(&g, &v),
            elapsed,
            bytes,
            doc["components"]["schemas"].as_object().unwrap().len()
        );
    }
    let before = rss_kib();
    let idx = index(&r);
    println!(
        "index + cached docs: RSS {} KiB -> {} KiB ({} GVs)",
        before,
        rss_kib(),
        idx["paths"].as_object().unwrap().len()
    );
}
