use serde_json::json;

use super::apply::{apply, conflict_status, ApplyRequest};
use super::*;
use crate::apiserver::auth::UserInfo;
use crate::apiserver::registry::ResourceDef;

fn deployments() -> std::sync::Arc<ResourceDef> {
    crate::apiserver::builtin::builtin_registry()
        .lookup("apps", "v1", "deployments")
        .unwrap()
}

fn deployment(replicas: i64, image: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"app": "web"}},
           "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}},
                                 "spec": {"containers": [{"name": "web", "image": image}]}}}})
}

fn run_apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
) -> Result<Value, Vec<apply::Conflict>> {
    let def = deployments();
    let schema = schema::for_def(&def);
    apply(&ApplyRequest {
        live,
        applied,
        manager,
        force,
        api_version: "apps/v1",
        schema: schema.as_ref(),
        status_split: true,
        subresource: None,
    })
}

fn update(old: Option<&Value>, obj: &mut Value, manager: &str) {
    let def = deployments();
    let user = UserInfo::default();
    let req = AdmissionRequest {
        field_manager: Some(manager),
        ..AdmissionRequest::for_test(&def, Some("default"), "web", old, &user)
    };
    ManagedFields.admit(&req, obj, &mut Vec::new()).unwrap();
}

#[test]
fn create_records_an_update_entry_with_list_keys() {
    let mut obj = deployment(2, "nginx");
    update(None, &mut obj, "kubectl-create");
    let e = &obj["metadata"]["managedFields"][0];
    assert_eq!(e["manager"], "kubectl-create");
    assert_eq!(e["operation"], "Update");
    assert_eq!(e["apiVersion"], "apps/v1");
    assert_eq!(e["fieldsType"], "FieldsV1");
    let f = &e["fieldsV1"];
    assert_eq!(f["f:metadata"]["f:labels"], json!({".": {}, "f:app": {}}));
    assert_eq!(f["f:spec"]["f:replicas"], json!({}));
    let c = &f["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"];
    assert_eq!(c, &json!({".": {}, "f:image": {}, "f:name": {}}));
    assert!(
        f["f:metadata"].get("f:name").is_none(),
        "identity fields are not owned"
    );
}

#[test]
fn an_update_takes_changed_fields_from_other_managers() {
    let mut obj = deployment(2, "nginx");
    update(None, &mut obj, "kubectl-create");
    let old = obj.clone();
    obj["spec"]["replicas"] = json!(5);
    update(Some(&old), &mut obj, "kubectl-scale");
    let entries = read_entries(&obj);
    assert_eq!(entries.len(), 2);
    let path: Vec<String> = vec!["f:spec".into(), "f:replicas".into()];
    assert!(!entries[0].set.contains(&path));
    assert_eq!(entries[1].manager, "kubectl-scale");
    assert!(entries[1].set.contains(&path));
    // The same manager's updates merge into one entry.
    let old = obj.clone();
    obj["spec"]["replicas"] = json!(6);
    update(Some(&old), &mut obj, "kubectl-scale");
    assert_eq!(read_entries(&obj).len(), 2);
    // A client-sent `[{}]` resets them.
    let old = obj.clone();
    obj["metadata"]["managedFields"] = json!([{}]);
    update(Some(&old), &mut obj, "x");
    assert!(obj["metadata"].get("managedFields").is_none());
}

#[test]
fn apply_creates_then_reapplies_without_change() {
    let applied = deployment(2, "nginx");
    let created = run_apply(None, &applied, "kubectl", false).unwrap();
    let e = &created["metadata"]["managedFields"][0];
    assert_eq!(e["operation"], "Apply");
    assert_eq!(e["manager"], "kubectl");
    let again = run_apply(Some(&created), &applied, "kubectl", false).unwrap();
    assert_eq!(again, created, "a second identical apply changes nothing");
}

#[test]
fn apply_conflicts_with_another_manager_and_force_takes_over() {
    let mut live = deployment(2, "nginx");
    update(None, &mut live, "kubectl-client-side-apply");
    let applied = deployment(3, "nginx");
    let err = run_apply(Some(&live), &applied, "kubectl", false).unwrap_err();
    assert_eq!(err.len(), 1);
    let status = conflict_status(&err).to_value();
    assert_eq!(
        status["message"],
        "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"
    );
    assert_eq!(status["code"], 409);
    assert_eq!(status["reason"], "Conflict");
    assert_eq!(
        status["details"]["causes"][0],
        json!({"reason": "FieldManagerConflict", "message": "conflict with \"kubectl-client-side-apply\" using apps/v1",
               "field": ".spec.replicas"})
    );
    let forced = run_apply(Some(&live), &applied, "kubectl", true).unwrap();
    assert_eq!(forced["spec"]["replicas"], 3);
    let entries = read_entries(&forced);
    let path: Vec<String> = vec!["f:spec".into(), "f:replicas".into()];
    let owners: Vec<&str> = entries
        .iter()
        .filter(|e| e.set.contains(&path))
        .map(|e| e.manager.as_str())
        .collect();
    assert_eq!(owners, vec!["kubectl"]);
    // Unchanged shared fields are co-owned, not conflicts.
    let image: Vec<String> = [
        "f:spec",
        "f:template",
        "f:spec",
        "f:containers",
        "k:{\"name\":\"web\"}",
        "f:image",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(entries.iter().filter(|e| e.set.contains(&image)).count(), 2);
}

#[test]
fn apply_removes_fields_the_manager_stopped_applying() {
    let mut first = deployment(2, "nginx");
    first["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "sidecar", "image": "busybox"}));
    first["metadata"]["labels"]["extra"] = json!("1");
    let live = run_apply(None, &first, "kubectl", false).unwrap();
    let second = deployment(2, "nginx");
    let out = run_apply(Some(&live), &second, "kubectl", false).unwrap();
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(out["metadata"]["labels"].get("extra").is_none());
    // A field also owned by someone else stays.
    let mut shared = live.clone();
    let old = shared.clone();
    shared["metadata"]["labels"]["extra"] = json!("2");
    update(Some(&old), &mut shared, "kubectl-label");
    let out = run_apply(Some(&shared), &second, "kubectl", false).unwrap();
    assert_eq!(out["metadata"]["labels"]["extra"], "2");
}

#[test]
fn map_lists_merge_by_key_and_atomic_lists_replace() {
    let mut live = deployment(2, "nginx");
    live["spec"]["template"]["spec"]["containers"][0]["args"] = json!(["a", "b"]);
    live["spec"]["template"]["spec"]["containers"][0]["ports"] =
        json!([{"containerPort": 80, "protocol": "TCP"}]);
    update(None, &mut live, "creator");
    let mut applied = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"template": {"spec": {"containers": [
            {"name": "web", "args": ["a", "b"], "ports": [{"containerPort": 80}, {"containerPort": 443}]},
            {"name": "second", "image": "x"}]}}}});
    let out = run_apply(Some(&live), &applied, "kubectl", false).unwrap();
    let cs = &out["spec"]["template"]["spec"]["containers"];
    assert_eq!(
        cs[0]["image"], "nginx",
        "unapplied fields of a keyed item stay"
    );
    assert_eq!(cs[0]["ports"].as_array().unwrap().len(), 2);
    assert_eq!(cs[1]["name"], "second");
    applied["spec"]["template"]["spec"]["containers"][0]["args"] = json!(["c"]);
    let err = run_apply(Some(&out), &applied, "kubectl", false).unwrap_err();
    assert!(err[0].path.ends_with("[name=\"web\"].args"), "{err:?}");
}

#[test]
fn user_agent_prefix_names_the_manager() {
    assert_eq!(
        manager_from_user_agent("kubectl/v1.32.4 (linux/amd64) kubernetes/4cb5f07"),
        "kubectl"
    );
    assert_eq!(manager_from_user_agent(""), "");
}

#[test]
fn kubectl_upgrading_from_client_side_apply_takes_last_applied_fields() {
    let mut live = deployment(2, "nginx");
    live["metadata"]["annotations"] = json!({
        "kubectl.kubernetes.io/last-applied-configuration": deployment(2, "nginx").to_string()});
    update(None, &mut live, "kubectl-client-side-apply");
    let applied = deployment(3, "nginx");
    assert!(run_apply(Some(&live), &applied, "other", false).is_err());
    let out = run_apply(Some(&live), &applied, "kubectl", false).unwrap();
    assert_eq!(out["spec"]["replicas"], 3);
    // Not when the annotation no longer matches the live object.
    live["spec"]["replicas"] = json!(5);
    assert!(run_apply(Some(&live), &applied, "kubectl", false).is_err());
}
