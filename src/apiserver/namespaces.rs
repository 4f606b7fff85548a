//! The namespaces every cluster has from the first start, and a minimal
//! namespace finalizer: empties a terminating namespace, then removes it
//! (the namespace controller in `crate::controllers` resumes it after a
//! restart).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::context::AppState;
use super::keys;
use super::objects;
use crate::store::{ListOptions, Store, StoreError};

/// The namespaces every cluster has from the first start.
pub fn bootstrap_namespaces(store: &dyn Store) {
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let obj = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": objects::now_rfc3339(),
                         "labels": {"kubernetes.io/metadata.name": ns}},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
        match store.create(&keys::namespace_key(ns), &objects::to_stored(&obj)) {
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => tracing::warn!("failed to create namespace {ns}: {e}"),
        }
    }
}

/// Deletes (or marks, when held by finalizers) everything in a namespace.
fn empty_namespace(state: &AppState, ns: &str) {
    let mut seen = std::collections::HashSet::new();
    for def in state.registry.all().into_iter().filter(|d| d.namespaced) {
        let prefix = keys::collection_prefix(&def, Some(ns));
        if !seen.insert(prefix.clone()) {
            continue;
        }
        let Ok(page) = state.store.list(&ListOptions {
            prefix,
            ..Default::default()
        }) else {
            continue;
        };
        for rec in page.records {
            let mut v: Value = serde_json::from_slice(&rec.value).unwrap_or(Value::Null);
            if objects::finalizers(&v).is_empty() {
                let _ = state.store.delete(&rec.key, Some(rec.mod_revision));
            } else if v.pointer("/metadata/deletionTimestamp").is_none() {
                let m = objects::meta_mut(&mut v);
                m.insert("deletionTimestamp".into(), json!(objects::now_rfc3339()));
                m.insert("deletionGracePeriodSeconds".into(), json!(0));
                let _ = state
                    .store
                    .update(&rec.key, &objects::to_stored(&v), rec.mod_revision);
            }
        }
    }
}

/// The namespace finalizer, minimal: empties the namespace, then removes it
/// once it has no `metadata.finalizers`; gives up after a minute (PARTIAL:
/// not resumed after a restart; a controller replaces this later).
pub async fn finish_namespace(state: Arc<AppState>, name: String) {
    let key = keys::namespace_key(&name);
    for _ in 0..60 {
        empty_namespace(&state, &name);
        let Ok(Some(rec)) = state.store.get(&key) else {
            return;
        };
        let v: Value = serde_json::from_slice(&rec.value).unwrap_or(Value::Null);
        if objects::finalizers(&v).is_empty()
            && state.store.delete(&key, Some(rec.mod_revision)).is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
