//! The default RBAC objects (`embedded/rbac/*.yaml`, compiled in), written
//! to the store at every start: created when missing; when the stored copy
//! still carries `rbac.authorization.kubernetes.io/autoupdate: "true"`, rules
//! and subjects it lacks are added back (kube's reconciliation: extra rules
//! or subjects an admin added are kept). Setting the annotation to `"false"`
//! leaves an object alone.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::apiserver::keys;
use crate::apiserver::objects;
use crate::apiserver::registry::Registry;
use crate::store::{Store, StoreError};

use super::AuthError;

const CLUSTER_ROLES: &str = include_str!("../../embedded/rbac/cluster-roles.yaml");
const CLUSTER_ROLE_BINDINGS: &str = include_str!("../../embedded/rbac/cluster-role-bindings.yaml");
/// Namespaced defaults (Roles and RoleBindings, e.g. cluster DNS's read of
/// `kube-system/coredns-custom`).
const ROLES: &str = include_str!("../../embedded/rbac/roles.yaml");
const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";

/// Every embedded default object, parsed.
pub fn default_objects() -> Result<Vec<Value>, AuthError> {
    let mut out = Vec::new();
    for text in [CLUSTER_ROLES, CLUSTER_ROLE_BINDINGS, ROLES] {
        for doc in serde_yaml::Deserializer::from_str(text) {
            let v = Value::deserialize(doc)
                .map_err(|e| AuthError::Bootstrap(format!("embedded RBAC YAML: {e}")))?;
            if !v.is_null() {
                out.push(v);
            }
        }
    }
    Ok(out)
}

/// Adds to `stored[field]` each element of `wanted[field]` it lacks; whether
/// anything was added.
fn add_missing(stored: &mut Value, wanted: &Value, field: &str) -> bool {
    let Some(want) = wanted.get(field).and_then(Value::as_array) else {
        return false;
    };
    let have = stored[field].as_array().cloned().unwrap_or_default();
    let missing: Vec<Value> = want.iter().filter(|w| !have.contains(w)).cloned().collect();
    if missing.is_empty() {
        return false;
    }
    let mut all = have;
    all.extend(missing);
    stored[field] = Value::Array(all);
    true
}

/// Creates or reconciles every default ClusterRole and ClusterRoleBinding.
pub fn ensure_default_rbac(store: &dyn Store, registry: &Registry) -> Result<(), AuthError> {
    for obj in default_objects()? {
        let kind = obj["kind"].as_str().unwrap_or_default();
        let plural = match kind {
            "ClusterRole" => "clusterroles",
            "ClusterRoleBinding" => "clusterrolebindings",
            "Role" => "roles",
            "RoleBinding" => "rolebindings",
            other => return Err(AuthError::Bootstrap(format!("unexpected kind {other}"))),
        };
        let def = registry
            .lookup("rbac.authorization.k8s.io", "v1", plural)
            .ok_or_else(|| AuthError::Bootstrap(format!("{plural} is not registered")))?;
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let namespace = obj["metadata"]["namespace"].as_str().map(str::to_string);
        let key = keys::object_key(&def, namespace.as_deref(), &name);
        let write_err = |e: StoreError| AuthError::Bootstrap(format!("{kind} {name}: {e}"));
        match store.get(&key).map_err(write_err)? {
            None => {
                let mut new = obj.clone();
                new["metadata"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
                new["metadata"]["creationTimestamp"] = json!(objects::now_rfc3339());
                match store.create(&key, &objects::to_stored(&new)) {
                    Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
                    Err(e) => return Err(write_err(e)),
                }
            }
            Some(rec) => {
                let Ok(mut stored) = serde_json::from_slice::<Value>(&rec.value) else {
                    continue;
                };
                if stored
                    .pointer(&format!(
                        "/metadata/annotations/{}",
                        AUTOUPDATE.replace('/', "~1")
                    ))
                    .and_then(Value::as_str)
                    != Some("true")
                {
                    continue;
                }
                let changed = add_missing(&mut stored, &obj, "rules")
                    | add_missing(&mut stored, &obj, "subjects");
                if changed {
                    match store.update(&key, &objects::to_stored(&stored), rec.mod_revision) {
                        Ok(_) | Err(StoreError::Conflict { .. }) => {}
                        Err(e) => return Err(write_err(e)),
                    }
                }
            }
        }
    }
    write_aggregated_rules(store)
}

/// Rewrites each aggregated ClusterRole's stored `rules` to the union its
/// selectors give (what kube's aggregation controller keeps up to date).
fn write_aggregated_rules(store: &dyn Store) -> Result<(), AuthError> {
    let page = store
        .list(&crate::store::ListOptions {
            prefix: super::rbac::CLUSTER_ROLES.into(),
            ..Default::default()
        })
        .map_err(|e| AuthError::Bootstrap(format!("listing ClusterRoles: {e}")))?;
    let mut roles = std::collections::BTreeMap::new();
    let mut records = std::collections::BTreeMap::new();
    for rec in &page.records {
        if let Ok(v) = serde_json::from_slice::<Value>(&rec.value) {
            let name = v["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            records.insert(name.clone(), rec.clone());
            roles.insert(name, v);
        }
    }
    let effective = super::rbac::resolve_cluster_roles(&roles);
    for (name, role) in &roles {
        if role.get("aggregationRule").is_none() {
            continue;
        }
        let rules: Vec<Value> = effective
            .get(name)
            .map(|r| r.iter().map(|x| x.to_json()).collect())
            .unwrap_or_default();
        if role.get("rules") == Some(&Value::Array(rules.clone())) {
            continue;
        }
        let mut updated = role.clone();
        updated["rules"] = Value::Array(rules);
        let rec = &records[name];
        match store.update(&rec.key, &objects::to_stored(&updated), rec.mod_revision) {
            Ok(_) | Err(StoreError::Conflict { .. }) => {}
            Err(e) => return Err(AuthError::Bootstrap(format!("ClusterRole {name}: {e}"))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::testing::MemoryStore;

    #[test]
    fn embedded_objects_parse() {
        let objs = default_objects().unwrap();
        let names: Vec<&str> = objs
            .iter()
            .filter_map(|o| o["metadata"]["name"].as_str())
            .collect();
        for n in [
            "cluster-admin",
            "admin",
            "edit",
            "view",
            "system:node",
            "system:discovery",
        ] {
            assert!(names.contains(&n), "{n} missing");
        }
    }

    #[test]
    fn creates_then_reconciles() {
        let store = MemoryStore::new();
        let reg = crate::apiserver::builtin::builtin_registry();
        ensure_default_rbac(&store, &reg).unwrap();
        let key = "/registry/clusterroles.rbac.authorization.k8s.io/system:basic-user";
        let rec = store.get(key).unwrap().unwrap();
        let mut v: Value = serde_json::from_slice(&rec.value).unwrap();
        assert!(v["metadata"]["uid"].is_string());
        // Someone strips the rules: they come back at the next start.
        v["rules"] = json!([]);
        store
            .update(key, v.to_string().as_bytes(), rec.mod_revision)
            .unwrap();
        ensure_default_rbac(&store, &reg).unwrap();
        let v: Value = serde_json::from_slice(&store.get(key).unwrap().unwrap().value).unwrap();
        assert_eq!(v["rules"].as_array().unwrap().len(), 2);
        // With autoupdate off, edits stay.
        let rec = store.get(key).unwrap().unwrap();
        let mut v: Value = serde_json::from_slice(&rec.value).unwrap();
        v["rules"] = json!([]);
        v["metadata"]["annotations"][AUTOUPDATE] = json!("false");
        store
            .update(key, v.to_string().as_bytes(), rec.mod_revision)
            .unwrap();
        ensure_default_rbac(&store, &reg).unwrap();
        let v: Value = serde_json::from_slice(&store.get(key).unwrap().unwrap().value).unwrap();
        assert_eq!(v["rules"], json!([]));
    }

    #[test]
    fn aggregated_rules_are_written() {
        let store = MemoryStore::new();
        ensure_default_rbac(&store, &crate::apiserver::builtin::builtin_registry()).unwrap();
        let get = |n: &str| -> Value {
            let key = format!("{}{n}", crate::auth::rbac::CLUSTER_ROLES);
            serde_json::from_slice(&store.get(&key).unwrap().unwrap().value).unwrap()
        };
        let view = get("view")["rules"].as_array().unwrap().len();
        let edit = get("edit")["rules"].as_array().unwrap().len();
        let admin = get("admin")["rules"].as_array().unwrap().len();
        assert!(
            view > 0 && edit > view && admin > edit,
            "{view} {edit} {admin}"
        );
        // A second start changes nothing.
        let rev = store.current_revision();
        ensure_default_rbac(&store, &crate::apiserver::builtin::builtin_registry()).unwrap();
        assert_eq!(store.current_revision(), rev);
    }
}
