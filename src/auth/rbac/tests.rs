use super::*;
use crate::apiserver::testing::MemoryStore;
use serde_json::json;

fn user(name: &str, groups: &[&str]) -> UserInfo {
    UserInfo {
        name: name.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        ..Default::default()
    }
}

fn attrs<'a>(verb: &'a str, resource: &'a str, ns: Option<&'a str>) -> Attributes<'a> {
    Attributes::resource(verb, "", resource, None, ns, None)
}

fn cluster_role(name: &str, labels: Value, rules: Value) -> Value {
    json!({"metadata": {"name": name, "labels": labels}, "rules": rules})
}

fn sample() -> RbacIndex {
    let view_pods = cluster_role(
        "agg-view",
        json!({"rbac.authorization.k8s.io/aggregate-to-view": "true"}),
        json!([{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}]),
    );
    let edit_pods = cluster_role(
        "agg-edit",
        json!({"rbac.authorization.k8s.io/aggregate-to-edit": "true"}),
        json!([{"verbs": ["delete"], "apiGroups": [""], "resources": ["pods"]}]),
    );
    let view = json!({"metadata": {"name": "view",
            "labels": {"rbac.authorization.k8s.io/aggregate-to-edit": "true"}},
        "aggregationRule": {"clusterRoleSelectors": [
            {"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}}]}});
    let edit = json!({"metadata": {"name": "edit"},
        "aggregationRule": {"clusterRoleSelectors": [
            {"matchExpressions": [{"key": "rbac.authorization.k8s.io/aggregate-to-edit",
                "operator": "In", "values": ["true"]}]}]}});
    let crb = json!({"metadata": {"name": "viewers"},
        "roleRef": {"kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "Group", "name": "viewers"}]});
    let rb = json!({"metadata": {"name": "editors", "namespace": "dev"},
        "roleRef": {"kind": "ClusterRole", "name": "edit"},
        "subjects": [{"kind": "User", "name": "alice"},
                     {"kind": "ServiceAccount", "name": "bot"}]});
    let role = json!({"metadata": {"name": "cm", "namespace": "dev"},
        "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"]}]});
    let rb_role = json!({"metadata": {"name": "cm", "namespace": "dev"},
        "roleRef": {"kind": "Role", "name": "cm"},
        "subjects": [{"kind": "User", "name": "carol"}]});
    // A binding to a missing role grants nothing.
    let dangling = json!({"metadata": {"name": "x", "namespace": "dev"},
        "roleRef": {"kind": "Role", "name": "missing"},
        "subjects": [{"kind": "User", "name": "dave"}]});
    RbacIndex::build(
        &[view_pods, edit_pods, view, edit],
        &[crb],
        &[role],
        &[rb, rb_role, dangling],
    )
}

#[test]
fn cluster_role_binding_with_aggregation() {
    let idx = sample();
    let bob = user("bob", &["viewers"]);
    assert!(idx.allows(&bob, &attrs("get", "pods", Some("any"))));
    assert!(idx.allows(&bob, &attrs("list", "pods", None)));
    assert!(!idx.allows(&bob, &attrs("delete", "pods", Some("any"))));
}

#[test]
fn role_binding_is_namespaced_and_transitive_aggregation() {
    let idx = sample();
    let alice = user("alice", &[]);
    // edit aggregates agg-edit and view (which aggregates agg-view).
    assert!(idx.allows(&alice, &attrs("delete", "pods", Some("dev"))));
    assert!(idx.allows(&alice, &attrs("get", "pods", Some("dev"))));
    assert!(!idx.allows(&alice, &attrs("get", "pods", Some("prod"))));
    assert!(!idx.allows(&alice, &attrs("list", "pods", None)));
    let bot = user("system:serviceaccount:dev:bot", &[]);
    assert!(idx.allows(&bot, &attrs("delete", "pods", Some("dev"))));
    let carol = user("carol", &[]);
    assert!(idx.allows(&carol, &attrs("get", "configmaps", Some("dev"))));
    assert!(!idx.allows(&carol, &attrs("get", "configmaps", Some("prod"))));
    assert!(!idx.allows(&user("dave", &[]), &attrs("get", "configmaps", Some("dev"))));
}

#[test]
fn rules_in_a_namespace() {
    let idx = sample();
    let alice = user("alice", &["viewers"]);
    let dev = idx.rules_in(&alice, "dev");
    assert_eq!(dev.len(), 2, "{dev:?}");
    assert_eq!(idx.rules_in(&alice, "prod").len(), 1);
}

fn put(store: &MemoryStore, key: &str, v: Value) {
    store.create(key, v.to_string().as_bytes()).unwrap();
}

#[test]
fn cache_follows_store_writes() {
    let store = Arc::new(MemoryStore::new());
    let rbac = RbacAuthorizer::new(store.clone());
    let eve = user("eve", &[]);
    let get_pods = attrs("get", "pods", Some("default"));
    assert!(!rbac.allows(&eve, &get_pods));
    put(
        &store,
        &format!("{CLUSTER_ROLES}pods"),
        cluster_role(
            "pods",
            json!({}),
            json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]),
        ),
    );
    assert!(!rbac.allows(&eve, &get_pods));
    put(
        &store,
        &format!("{ROLE_BINDINGS}default/eve"),
        json!({"metadata": {"name": "eve", "namespace": "default"},
            "roleRef": {"kind": "ClusterRole", "name": "pods"},
            "subjects": [{"kind": "User", "name": "eve"}]}),
    );
    assert!(rbac.allows(&eve, &get_pods));
    store
        .delete(&format!("{ROLE_BINDINGS}default/eve"), None)
        .unwrap();
    assert!(!rbac.allows(&eve, &get_pods));
}

/// Prints what one authorization costs with the default roles loaded
/// (`cargo test --lib auth::rbac::tests::measure -- --ignored --nocapture`).
#[test]
#[ignore]
fn measure() {
    let store = Arc::new(MemoryStore::new());
    crate::auth::bootstrap::ensure_default_rbac(
        store.as_ref(),
        &crate::apiserver::builtin::builtin_registry(),
    )
    .unwrap();
    let rbac = RbacAuthorizer::new(store.clone());
    let sa = user(
        "system:serviceaccount:default:default",
        &[
            "system:serviceaccounts",
            "system:serviceaccounts:default",
            "system:authenticated",
        ],
    );
    let a = attrs("delete", "pods", Some("default"));
    rbac.allows(&sa, &a);
    let n = 100_000;
    let start = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(rbac.allows(&sa, &a));
    }
    let per = start.elapsed() / n;
    println!("RBAC deny (cached index, no change): {per:?} per request");
    let start = std::time::Instant::now();
    for _ in 0..100 {
        rbac.state.lock().unwrap().index = None;
        std::hint::black_box(rbac.allows(&sa, &a));
    }
    println!(
        "RBAC index rebuild (default roles): {:?}",
        start.elapsed() / 100
    );
}
