use super::*;
use crate::apiserver::builtin::builtin_registry;
use crate::apiserver::table::custom_resource_columns;
use http::Request;
use tower::ServiceExt;

/// kubectl 1.30+'s discovery Accept header.
const DISC: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
/// kubectl 1.27–1.29's.
const DISC_OLD: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";

fn catalog() -> Catalog {
    Catalog::new(&builtin_registry().all())
}

fn widget_def() -> ResourceDef {
    ResourceDef {
        group: "example.com".into(),
        version: "v1beta1".into(),
        kind: "Widget".into(),
        plural: "widgets".into(),
        singular: "widget".into(),
        short_names: vec!["wd".into()],
        categories: vec!["all".into()],
        namespaced: true,
        subresources: vec!["status".into(), "scale".into()],
        verbs: crate::apiserver::builtin::FULL_VERBS
            .iter()
            .map(|s| s.to_string())
            .collect(),
        columns: custom_resource_columns(),
    }
}

#[test]
fn accept_negotiation_follows_client_preference() {
    assert_eq!(negotiate(Some(DISC)), DiscoveryFormat::AggregatedV2);
    assert_eq!(
        negotiate(Some(DISC_OLD)),
        DiscoveryFormat::AggregatedV2Beta1
    );
    assert_eq!(negotiate(Some("application/json")), DiscoveryFormat::Legacy);
    assert_eq!(
        negotiate(Some("application/json, */*")),
        DiscoveryFormat::Legacy
    );
    assert_eq!(negotiate(None), DiscoveryFormat::Legacy);
    // Parameter order and spacing do not matter.
    assert_eq!(
        negotiate(Some(
            "application/json; as=APIGroupDiscoveryList; v=v2; g=apidiscovery.k8s.io"
        )),
        DiscoveryFormat::AggregatedV2
    );
    // Legacy JSON listed first wins.
    assert_eq!(
        negotiate(Some(
            "application/json,application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
        )),
        DiscoveryFormat::Legacy
    );
    // q-values reorder.
    assert_eq!(
        negotiate(Some("application/json;q=0.5,application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList")),
        DiscoveryFormat::AggregatedV2
    );
    // An unknown discovery version is skipped.
    assert_eq!(
        negotiate(Some("application/json;g=apidiscovery.k8s.io;v=v9;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList")),
        DiscoveryFormat::AggregatedV2Beta1
    );
}

#[test]
fn storage_version_hash_matches_kube() {
    assert_eq!(storage_version_hash("", "v1", "Pod"), "xPOwRZ+Yhw8=");
    assert_eq!(storage_version_hash("", "v1", "ConfigMap"), "qFsyl6wFWjQ=");
}

#[test]
fn kube_version_order() {
    let mut versions = vec![
        "v1alpha1", "v2beta1", "v1", "foo", "v2", "v1beta2", "v10", "v1beta1",
    ];
    versions.sort_by(|a, b| compare_kube_versions(a, b));
    assert_eq!(
        versions,
        ["v10", "v2", "v1", "v2beta1", "v1beta2", "v1beta1", "v1alpha1", "foo"]
    );
}

#[test]
fn legacy_core_list_has_subresources_in_kube_order() {
    let list = api_resource_list(&catalog(), "", "v1").expect("core v1");
    assert_eq!(list["kind"], "APIResourceList");
    assert_eq!(list["groupVersion"], "v1");
    assert!(list.get("apiVersion").is_none());
    let resources = list["resources"].as_array().expect("resources");
    let names: Vec<&str> = resources
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names[0], "bindings");
    let pods = names.iter().position(|n| *n == "pods").expect("pods");
    assert_eq!(
        names[pods..pods + 11],
        [
            "pods",
            "pods/attach",
            "pods/binding",
            "pods/ephemeralcontainers",
            "pods/eviction",
            "pods/exec",
            "pods/log",
            "pods/portforward",
            "pods/proxy",
            "pods/status",
            "podtemplates"
        ]
    );
    assert_eq!(
        resources[pods],
        json!({"name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod",
               "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
               "shortNames": ["po"], "categories": ["all"], "storageVersionHash": "xPOwRZ+Yhw8="})
    );
    assert_eq!(
        resources[pods + 4],
        json!({"name": "pods/eviction", "singularName": "", "namespaced": true, "group": "policy",
               "version": "v1", "kind": "Eviction", "verbs": ["create"]})
    );
    assert_eq!(
        resources[pods + 9],
        json!({"name": "pods/status", "singularName": "", "namespaced": true, "kind": "Pod",
               "verbs": ["get", "patch", "update"]})
    );
    let bindings = &resources[0];
    assert!(bindings.get("storageVersionHash").is_none());
}

#[test]
fn legacy_group_documents() {
    let c = catalog();
    let list = api_group_list(&c);
    assert_eq!(list["kind"], "APIGroupList");
    let groups = list["groups"].as_array().expect("groups");
    let names: Vec<&str> = groups.iter().filter_map(|g| g["name"].as_str()).collect();
    assert_eq!(
        names[..4],
        [
            "apiregistration.k8s.io",
            "apps",
            "events.k8s.io",
            "authentication.k8s.io"
        ]
    );
    assert!(!names.contains(&""));
    let autoscaling = groups
        .iter()
        .find(|g| g["name"] == "autoscaling")
        .expect("autoscaling");
    assert_eq!(
        autoscaling["versions"],
        json!([{"groupVersion": "autoscaling/v2", "version": "v2"}, {"groupVersion": "autoscaling/v1", "version": "v1"}])
    );
    assert_eq!(
        autoscaling["preferredVersion"],
        json!({"groupVersion": "autoscaling/v2", "version": "v2"})
    );

    let apps = api_group(&c, "apps").expect("apps");
    assert_eq!(apps["kind"], "APIGroup");
    assert_eq!(apps["apiVersion"], "v1");
    assert_eq!(apps["preferredVersion"]["groupVersion"], "apps/v1");
    assert!(api_group(&c, "nope.example.com").is_none());
    assert!(api_group(&c, "").is_none());

    let apps_v1 = api_resource_list(&c, "apps", "v1").expect("apps/v1");
    assert_eq!(apps_v1["apiVersion"], "v1");
    assert_eq!(apps_v1["groupVersion"], "apps/v1");
    let scale = apps_v1["resources"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == "deployments/scale"))
        .expect("deployments/scale");
    assert_eq!(scale["group"], "autoscaling");
    assert_eq!(scale["kind"], "Scale");
    assert!(api_resource_list(&c, "apps", "v1beta1").is_none());

    let versions = api_versions(&c, "10.0.0.1:6443");
    assert_eq!(
        versions,
        json!({"kind": "APIVersions", "versions": ["v1"],
               "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "10.0.0.1:6443"}]})
    );
}

#[test]
fn aggregated_documents_split_core_and_groups() {
    let c = catalog();
    let core = aggregated_discovery(&c, true, DiscoveryFormat::AggregatedV2);
    assert_eq!(core["kind"], "APIGroupDiscoveryList");
    assert_eq!(core["apiVersion"], "apidiscovery.k8s.io/v2");
    let items = core["items"].as_array().expect("items");
    assert_eq!(items.len(), 1);
    assert!(items[0]["metadata"].get("name").is_none());
    let v1 = &items[0]["versions"][0];
    assert_eq!(v1["version"], "v1");
    assert_eq!(v1["freshness"], "Current");
    let pods = v1["resources"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["resource"] == "pods"))
        .expect("pods");
    assert_eq!(
        pods["responseKind"],
        json!({"group": "", "version": "", "kind": "Pod"})
    );
    assert_eq!(pods["scope"], "Namespaced");
    assert_eq!(pods["singularResource"], "pod");
    assert_eq!(pods["shortNames"], json!(["po"]));
    assert_eq!(pods["categories"], json!(["all"]));
    let subs: Vec<&str> = pods["subresources"]
        .as_array()
        .expect("subresources")
        .iter()
        .filter_map(|s| s["subresource"].as_str())
        .collect();
    assert_eq!(
        subs,
        [
            "attach",
            "binding",
            "ephemeralcontainers",
            "eviction",
            "exec",
            "log",
            "portforward",
            "proxy",
            "status"
        ]
    );
    let nodes = v1["resources"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["resource"] == "nodes"))
        .expect("nodes");
    assert_eq!(nodes["scope"], "Cluster");

    let groups = aggregated_discovery(&c, false, DiscoveryFormat::AggregatedV2Beta1);
    assert_eq!(groups["apiVersion"], "apidiscovery.k8s.io/v2beta1");
    let items = groups["items"].as_array().expect("items");
    assert!(items.iter().all(|i| i["metadata"]["name"] != ""));
    let apps = items
        .iter()
        .find(|i| i["metadata"]["name"] == "apps")
        .expect("apps");
    let deploy = apps["versions"][0]["resources"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["resource"] == "deployments"))
        .expect("deployments");
    assert_eq!(deploy["shortNames"], json!(["deploy"]));
    assert_eq!(
        deploy["subresources"][0],
        json!({"subresource": "scale", "responseKind": {"group": "autoscaling", "version": "v1", "kind": "Scale"},
               "verbs": ["get", "patch", "update"]})
    );
    let authz = items
        .iter()
        .find(|i| i["metadata"]["name"] == "authorization.k8s.io")
        .expect("authz");
    for r in authz["versions"][0]["resources"]
        .as_array()
        .expect("reviews")
    {
        assert_eq!(r["verbs"], json!(["create"]));
    }
}

#[test]
fn custom_resources_appear_and_disappear_at_run_time() {
    let reg = builtin_registry();
    reg.insert(widget_def());
    let c = Catalog::new(&reg.all());
    let list = api_group_list(&c);
    let last = list["groups"]
        .as_array()
        .and_then(|g| g.last())
        .expect("groups");
    assert_eq!(last["name"], "example.com");
    let doc = aggregated_discovery(&c, false, DiscoveryFormat::AggregatedV2);
    let item = doc["items"]
        .as_array()
        .and_then(|i| i.last())
        .expect("items");
    assert_eq!(
        item["versions"][0]["resources"][0]["subresources"][0]["subresource"],
        "scale"
    );
    reg.remove("example.com", "v1beta1", "widgets");
    let c = Catalog::new(&reg.all());
    assert!(api_group(&c, "example.com").is_none());
}

async fn send(
    router: Router,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut req = Request::builder().uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = router
        .oneshot(req.body(Body::empty()).expect("request"))
        .await
        .expect("response");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body")
        .to_vec();
    (status, headers, body)
}

#[tokio::test]
async fn router_serves_aggregated_discovery_with_etag() {
    let router = router(Arc::new(builtin_registry()));
    let (status, headers, body) =
        send(router.clone(), "/api?timeout=32s", &[("accept", DISC)]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], AGGREGATED_V2);
    assert_eq!(headers[header::VARY], "Accept");
    let etag = headers[header::ETAG].to_str().expect("etag").to_string();
    assert!(etag.starts_with('"') && etag.len() == 130, "{etag}");
    let doc: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(doc["items"][0]["versions"][0]["version"], "v1");

    let (status, headers, body) = send(
        router.clone(),
        "/api",
        &[("accept", DISC), ("if-none-match", &etag)],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert_eq!(headers[header::ETAG], etag.as_str());
    assert!(body.is_empty());

    let (_, headers, _) = send(router.clone(), "/apis", &[("accept", DISC_OLD)]).await;
    assert_eq!(headers[header::CONTENT_TYPE], AGGREGATED_V2BETA1);

    let (status, headers, body) =
        send(router.clone(), "/api", &[("host", "192.168.1.10:6443")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    let doc: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(
        doc["serverAddressByClientCIDRs"][0]["serverAddress"],
        "192.168.1.10:6443"
    );
}

#[tokio::test]
async fn router_serves_legacy_paths_version_and_404s() {
    let router = router_with_address(Arc::new(builtin_registry()), Some("10.0.0.1:6443".into()));
    let (_, _, body) = send(
        router.clone(),
        "/api",
        &[("accept", "application/json, */*")],
    )
    .await;
    let doc: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(
        doc["serverAddressByClientCIDRs"][0]["serverAddress"],
        "10.0.0.1:6443"
    );

    let (status, _, body) = send(router.clone(), "/api/v1", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let doc: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(doc["groupVersion"], "v1");

    let (status, _, body) = send(router.clone(), "/apis/batch/v1", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let doc: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(doc["groupVersion"], "batch/v1");

    let (status, _, body) = send(router.clone(), "/apis/batch", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let doc: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(doc["kind"], "APIGroup");

    for path in ["/apis/nope.example.com", "/apis/apps/v7"] {
        let (status, _, body) = send(router.clone(), path, &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        let doc: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(doc, not_found_status());
    }

    let (status, headers, body) = send(router.clone(), "/version?timeout=5s", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    let doc: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(doc["minor"], "32");

    // Deeper paths are not this router's.
    let (status, _, _) = send(router, "/api/v1/pods", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn router_merges_with_the_rest_handlers() {
    // The REST core owns everything below a group version, whatever it names
    // its path parameters.
    let rest: Router = Router::new()
        .route("/api/{v}/{resource}", get(|| async { "rest" }))
        .route("/apis/{g}/{v}/{resource}", get(|| async { "rest" }))
        .route(
            "/apis/{g}/{v}/namespaces/{ns}/{resource}",
            get(|| async { "rest" }),
        );
    let merged = router(Arc::new(builtin_registry())).merge(rest);
    let (_, _, body) = send(merged.clone(), "/apis/apps/v1/deployments", &[]).await;
    assert_eq!(body, b"rest");
    let (_, _, body) = send(merged.clone(), "/api/v1/pods", &[]).await;
    assert_eq!(body, b"rest");
    let (status, _, body) = send(merged, "/apis/apps/v1", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let doc: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(doc["groupVersion"], "apps/v1");
}
