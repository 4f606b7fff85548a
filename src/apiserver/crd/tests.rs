use super::*;
use crate::apiserver::testing::MemoryStore;

fn crontab_crd() -> Value {
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "crontabs.stable.example.com"},
        "spec": {"group": "stable.example.com", "scope": "Namespaced",
            "names": {"plural": "crontabs", "kind": "CronTab", "shortNames": ["ct"]},
            "versions": [
                {"name": "v1", "served": true, "storage": true,
                 "schema": {"openAPIV3Schema": {"type": "object"}},
                 "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}},
                 "additionalPrinterColumns": [{"name": "Spec", "type": "string", "jsonPath": ".spec.cronSpec"}]},
                {"name": "v2", "served": true, "storage": false, "schema": {"openAPIV3Schema": {"type": "object"}}},
                {"name": "v0", "served": false, "storage": false, "schema": {"openAPIV3Schema": {"type": "object"}}}]}})
}

#[test]
fn served_versions_become_registry_entries() {
    let defs = defs_from_crd(&crontab_crd());
    assert_eq!(defs.len(), 2);
    let v1 = &defs[0];
    assert_eq!(
        (v1.group.as_str(), v1.version.as_str(), v1.kind.as_str()),
        ("stable.example.com", "v1", "CronTab")
    );
    assert_eq!(
        (v1.plural.as_str(), v1.singular.as_str()),
        ("crontabs", "crontab")
    );
    assert_eq!(v1.short_names, ["ct"]);
    assert!(v1.namespaced);
    assert_eq!(v1.subresources, ["status", "scale"]);
    let cols: Vec<(&str, Option<&str>)> = v1
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.json_path.as_deref()))
        .collect();
    assert_eq!(cols, [("Name", None), ("Spec", Some(".spec.cronSpec"))]);
    let v2 = &defs[1];
    assert_eq!(v2.columns[1].name, "Age");
    assert_eq!(
        v2.columns[1].json_path.as_deref(),
        Some(".metadata.creationTimestamp")
    );
    assert!(v2.subresources.is_empty());
}

#[tokio::test]
async fn the_controller_serves_a_crd_and_cleans_up_on_deletion() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let registry = Arc::new(Registry::empty());
    let key = format!("{CRD_PREFIX}crontabs.stable.example.com");
    store
        .create(&key, &serde_json::to_vec(&crontab_crd()).unwrap())
        .unwrap();
    let shutdown = CancellationToken::new();
    start(store.clone(), registry.clone(), shutdown.clone());
    assert!(registry
        .lookup("stable.example.com", "v1", "crontabs")
        .is_some());
    assert!(registry
        .lookup("stable.example.com", "v0", "crontabs")
        .is_none());
    let stored: Value = serde_json::from_slice(&store.get(&key).unwrap().unwrap().value).unwrap();
    assert_eq!(stored["status"]["storedVersions"], json!(["v1"]));
    assert_eq!(stored["status"]["conditions"][1]["type"], "Established");
    assert_eq!(stored["status"]["acceptedNames"]["listKind"], "CronTabList");
    assert_eq!(stored["metadata"]["finalizers"], json!([CLEANUP_FINALIZER]));

    let obj_key = "/registry/crontabs.stable.example.com/default/a";
    store
        .create(obj_key, b"{\"metadata\":{\"name\":\"a\"}}")
        .unwrap();
    let rec = store.get(&key).unwrap().unwrap();
    let mut deleting: Value = serde_json::from_slice(&rec.value).unwrap();
    deleting["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    store
        .update(
            &key,
            &serde_json::to_vec(&deleting).unwrap(),
            rec.mod_revision,
        )
        .unwrap();
    for _ in 0..100 {
        if store.get(&key).unwrap().is_none() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(store.get(&key).unwrap().is_none(), "the CRD goes");
    assert!(
        store.get(obj_key).unwrap().is_none(),
        "its objects go first"
    );
    assert!(registry
        .lookup("stable.example.com", "v1", "crontabs")
        .is_none());
    shutdown.cancel();
}

#[test]
fn deprecated_versions_warn_on_every_path() {
    let registry = Registry::empty();
    let mut crd = crontab_crd();
    crd["spec"]["versions"][1]["deprecated"] = json!(true);
    let crd = Arc::new(crd);
    for def in defs_from_crd(&crd) {
        registry.insert_custom(def, crd.clone());
    }
    let warned = ["stable.example.com/v2 CronTab is deprecated".to_string()];
    for path in [
        "/apis/stable.example.com/v2/crontabs",
        "/apis/stable.example.com/v2/namespaces/default/crontabs/x/status",
        "/apis/stable.example.com/v2/watch/namespaces/default/crontabs",
    ] {
        assert_eq!(deprecation_warning(&registry, path), warned, "{path}");
    }
    assert!(deprecation_warning(&registry, "/apis/stable.example.com/v1/crontabs").is_empty());
    assert!(deprecation_warning(&registry, "/api/v1/pods").is_empty());
}

#[test]
fn openapi_publishes_the_schema_without_strategic_merge() {
    let registry = Registry::empty();
    let mut crd = crontab_crd();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"] = json!({"type": "object",
        "properties": {"spec": {"type": "object", "properties": {"cronSpec": {"type": "string"}}}}});
    let crd = Arc::new(crd);
    for def in defs_from_crd(&crd) {
        registry.insert_custom(def, crd.clone());
    }
    let doc = crate::apiserver::openapi::group_version_doc(&registry, "stable.example.com", "v1")
        .expect("a document");
    let schema = &doc["components"]["schemas"]["com.example.stable.v1.CronTab"];
    assert_eq!(
        schema["properties"]["spec"]["properties"]["cronSpec"]["type"],
        "string"
    );
    assert_eq!(
        schema["x-kubernetes-group-version-kind"][0]["kind"],
        "CronTab"
    );
    let patch = &doc["paths"]["/apis/stable.example.com/v1/namespaces/{namespace}/crontabs/{name}"]
        ["patch"]["requestBody"]["content"];
    assert!(
        patch.get("application/merge-patch+json").is_some(),
        "{patch}"
    );
    assert!(patch
        .get("application/strategic-merge-patch+json")
        .is_none());
}
