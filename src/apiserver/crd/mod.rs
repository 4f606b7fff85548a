//! CustomResourceDefinitions: serving `apiextensions.k8s.io/v1` CRDs' custom
//! resources through the generic REST, discovery and table code.
//!
//! - [`start`] (called from `ApiServer::bind`) loads every stored CRD into
//!   the registry, then follows a store watch on the CRDs' prefix: each
//!   served version becomes one registry entry (`Registry::insert_custom`,
//!   which also keeps the CRD object for schemas and scale paths), the CRD
//!   gets its status (`acceptedNames`, `NamesAccepted`/`Established`,
//!   `storedVersions`) and the `customresourcecleanup.apiextensions.k8s.io`
//!   finalizer. A CRD being deleted has its objects deleted, then its
//!   registry entries, then the finalizer, and goes.
//! - [`admission::CrdAdmission`] (in `server::assemble::admission_chain`)
//!   validates CRD objects (422s) and custom resources against their
//!   structural schema: pruning, defaulting, validation (`schema`), and
//!   deprecation warnings on writes.
//! - the `scale` subresource is `subresources/scale.rs`'s, with the CRD's paths.
//!
//! Versions use the `None` conversion: objects are stored once under the
//! group-resource and served with the requested version's `apiVersion`.
//!
//! Requests to a `deprecated` version get its `Warning` header
//! ([`deprecation_warning`], from `rest::dispatch`).
//!
//! Partial: defaults are applied on writes, not when reading objects stored
//! before a default was added; no `Webhook` conversion; no name-conflict detection between CRDs
//! (`NamesAccepted` is always True); objects are deleted from the store
//! directly when their CRD goes (their own finalizers are not waited for).

pub mod admission;
pub mod schema;

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::keys;
use super::registry::{Column, Registry, ResourceDef};
use crate::store::{EventKind, ListOptions, Record, Store};

/// The finalizer a CRD carries while its objects are removed.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// Where CRDs are stored.
pub const CRD_PREFIX: &str = "/registry/customresourcedefinitions.apiextensions.k8s.io/";

/// The verbs discovery lists for custom resources, in kube's order.
const VERBS: &[&str] = &[
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "create",
    "update",
    "watch",
];

/// Whether `def` is served from a CRD of `registry`.
pub fn is_custom(registry: &Registry, def: &ResourceDef) -> bool {
    registry
        .custom(&def.group, &def.version, &def.plural)
        .is_some()
}

/// The `Warning` texts of a request path that names a deprecated CRD
/// version (`/apis/G/V/[watch/][namespaces/NS/]PLURAL...`): the version's
/// `deprecationWarning`, or kube's default text.
pub fn deprecation_warning(registry: &Registry, path: &str) -> Vec<String> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let ["apis", group, version, rest @ ..] = segs.as_slice() else {
        return Vec::new();
    };
    let rest = match rest {
        ["watch", tail @ ..] => tail,
        tail => tail,
    };
    let plural = match rest {
        ["namespaces", _, plural, ..] => *plural,
        [plural, ..] => *plural,
        [] => return Vec::new(),
    };
    let Some(crd) = registry.custom(group, version, plural) else {
        return Vec::new();
    };
    match version_of(&crd, version) {
        Some(v) if v["deprecated"] == true => {
            vec![v["deprecationWarning"].as_str().map_or_else(
                || {
                    format!(
                        "{group}/{version} {} is deprecated",
                        s(&crd, "/spec/names/kind")
                    )
                },
                String::from,
            )]
        }
        _ => Vec::new(),
    }
}

/// Whether `def` is the CustomResourceDefinition kind itself.
pub fn is_crd_kind(def: &ResourceDef) -> bool {
    def.group == "apiextensions.k8s.io" && def.plural == "customresourcedefinitions"
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn strings(v: &Value, ptr: &str) -> Vec<String> {
    crate::apiserver::objects::string_list(v.pointer(ptr))
}

/// The CRD's `spec.names` with kube's defaults (`singular` = lower-case
/// kind, `listKind` = kind + "List"): its `status.acceptedNames`.
pub fn accepted_names(crd: &Value) -> Value {
    let mut names = crd
        .pointer("/spec/names")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let kind = s(crd, "/spec/names/kind").to_string();
    if s(crd, "/spec/names/singular").is_empty() {
        names["singular"] = json!(kind.to_lowercase());
    }
    if s(crd, "/spec/names/listKind").is_empty() {
        names["listKind"] = json!(format!("{kind}List"));
    }
    names
}

/// One version's entry in `spec.versions`, by name.
pub fn version_of<'a>(crd: &'a Value, version: &str) -> Option<&'a Value> {
    crd.pointer("/spec/versions")?
        .as_array()?
        .iter()
        .find(|v| v["name"] == version)
}

/// The `openAPIV3Schema` of one version.
pub fn schema_of<'a>(crd: &'a Value, version: &str) -> Option<&'a Value> {
    version_of(crd, version)?.pointer("/schema/openAPIV3Schema")
}

/// The OpenAPI v3 schema of one served version, as kube publishes it: the
/// version's `openAPIV3Schema` with `apiVersion`, `kind` and `metadata`
/// (ObjectMeta) filled in and the `x-kubernetes-group-version-kind` tag;
/// `None` when the version has no schema.
pub fn openapi_schema(crd: &Value, def: &ResourceDef) -> Option<Value> {
    let mut schema = schema_of(crd, &def.version)?.clone();
    let obj = schema.as_object_mut()?;
    let props = obj.entry("properties").or_insert_with(|| json!({}));
    if let Some(p) = props.as_object_mut() {
        p.insert("apiVersion".into(), json!({"type": "string",
            "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"}));
        p.insert("kind".into(), json!({"type": "string",
            "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"}));
        p.insert("metadata".into(), json!({"allOf": [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}],
            "description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"}));
    }
    obj.insert(
        "x-kubernetes-group-version-kind".into(),
        json!([{"group": def.group, "kind": def.kind, "version": def.version}]),
    );
    Some(schema)
}

/// The registry entries of a CRD: one per served version.
pub fn defs_from_crd(crd: &Value) -> Vec<ResourceDef> {
    let names = accepted_names(crd);
    let group = s(crd, "/spec/group").to_string();
    let namespaced = s(crd, "/spec/scope") != "Cluster";
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    versions
        .iter()
        .filter(|v| v["served"].as_bool().unwrap_or(false))
        .map(|v| {
            let mut subresources = Vec::new();
            if v.pointer("/subresources/status").is_some() {
                subresources.push("status".to_string());
            }
            if v.pointer("/subresources/scale").is_some() {
                subresources.push("scale".to_string());
            }
            ResourceDef {
                group: group.clone(),
                version: s(v, "/name").to_string(),
                kind: s(&names, "/kind").to_string(),
                plural: s(&names, "/plural").to_string(),
                singular: s(&names, "/singular").to_string(),
                short_names: strings(&names, "/shortNames"),
                categories: strings(&names, "/categories"),
                namespaced,
                subresources,
                verbs: VERBS.iter().map(|s| s.to_string()).collect(),
                columns: columns_of(v),
            }
        })
        .collect()
}

/// Name first, then `additionalPrinterColumns`, or Age when there are none.
fn columns_of(version: &Value) -> Vec<Column> {
    let mut cols = super::table::custom_resource_columns();
    let extra = version
        .get("additionalPrinterColumns")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty());
    if let Some(extra) = extra {
        cols.truncate(1);
        for c in extra {
            cols.push(Column {
                name: s(c, "/name").to_string(),
                type_: s(c, "/type").to_string(),
                format: s(c, "/format").to_string(),
                description: s(c, "/description").to_string(),
                priority: c["priority"].as_i64().unwrap_or(0) as i32,
                json_path: Some(s(c, "/jsonPath").to_string()),
            });
        }
    } else if let Some(age) = cols.get_mut(1) {
        age.json_path = Some(".metadata.creationTimestamp".into());
    }
    cols
}

/// The status a CRD gets once served; `lastTransitionTime`s of unchanged
/// conditions are kept.
fn desired_status(crd: &Value, now: &str) -> Value {
    let mut stored = strings(crd, "/status/storedVersions");
    let storage = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .and_then(|vs| vs.iter().find(|v| v["storage"] == true))
        .map(|v| s(v, "/name").to_string());
    if let Some(sv) = storage {
        if !stored.contains(&sv) {
            stored.push(sv);
        }
    }
    let old_time = |t: &str| {
        crd.pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|cs| cs.iter().find(|c| c["type"] == t && c["status"] == "True"))
            .and_then(|c| c.get("lastTransitionTime").cloned())
            .unwrap_or_else(|| json!(now))
    };
    json!({
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "lastTransitionTime": old_time("NamesAccepted"),
             "reason": "NoConflicts", "message": "no conflicts found"},
            {"type": "Established", "status": "True", "lastTransitionTime": old_time("Established"),
             "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"},
        ],
        "acceptedNames": accepted_names(crd),
        "storedVersions": stored,
    })
}

/// What the controller registered per CRD name, to drop stale versions.
type Served = HashMap<String, Vec<(String, String, String)>>;

struct Controller {
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    served: Served,
}

impl Controller {
    fn unregister(&mut self, name: &str) {
        for (g, v, p) in self.served.remove(name).unwrap_or_default() {
            self.registry.remove(&g, &v, &p);
        }
    }

    /// Brings the registry and the CRD's status in line with one record.
    fn sync(&mut self, rec: &Record) {
        let Ok(crd) = serde_json::from_slice::<Value>(&rec.value) else {
            tracing::warn!("failed to decode CRD at {}", rec.key);
            return;
        };
        let name = s(&crd, "/metadata/name").to_string();
        let defs = defs_from_crd(&crd);
        if crd.pointer("/metadata/deletionTimestamp").is_some() {
            self.finish_deletion(rec, crd, &defs);
            return;
        }
        let shared = Arc::new(crd.clone());
        let wanted: Vec<(String, String, String)> = defs
            .iter()
            .map(|d| (d.group.clone(), d.version.clone(), d.plural.clone()))
            .collect();
        for old in self.served.get(&name).cloned().unwrap_or_default() {
            if !wanted.contains(&old) {
                self.registry.remove(&old.0, &old.1, &old.2);
            }
        }
        for def in defs {
            self.registry.insert_custom(def, shared.clone());
        }
        self.served.insert(name.clone(), wanted);
        let mut updated = crd.clone();
        updated["status"] = desired_status(&crd, &super::objects::now_rfc3339());
        let finalizers = super::objects::finalizers(&crd);
        if !finalizers.iter().any(|f| f == CLEANUP_FINALIZER) {
            let mut list: Vec<Value> = finalizers.into_iter().map(Value::String).collect();
            list.push(json!(CLEANUP_FINALIZER));
            updated["metadata"]["finalizers"] = Value::Array(list);
        }
        if updated != crd {
            // A conflict means a newer write, whose event syncs again.
            if let Err(e) = self.store.update(
                &rec.key,
                &super::objects::to_stored(&updated),
                rec.mod_revision,
            ) {
                tracing::debug!("CRD {name} status not written: {e}");
            }
        }
    }

    /// Deletes every object of a CRD being deleted, its registry entries,
    /// then the cleanup finalizer (and the CRD when it was the last).
    fn finish_deletion(&mut self, rec: &Record, mut crd: Value, defs: &[ResourceDef]) {
        let name = s(&crd, "/metadata/name").to_string();
        self.unregister(&name);
        if let Some(def) = defs.first() {
            if let Err(e) = delete_all(self.store.as_ref(), &keys::resource_prefix(def)) {
                tracing::warn!("failed to delete the objects of CRD {name}: {e}");
                return;
            }
        }
        let rest: Vec<Value> = super::objects::finalizers(&crd)
            .into_iter()
            .filter(|f| f != CLEANUP_FINALIZER)
            .map(Value::String)
            .collect();
        let result = if rest.is_empty() {
            self.store
                .delete(&rec.key, Some(rec.mod_revision))
                .map(|_| ())
        } else {
            crd["metadata"]["finalizers"] = Value::Array(rest);
            self.store
                .update(&rec.key, &super::objects::to_stored(&crd), rec.mod_revision)
                .map(|_| ())
        };
        if let Err(e) = result {
            tracing::debug!("CRD {name} finalizer not removed yet: {e}");
        }
    }

    fn deleted(&mut self, rec: &Record) {
        let name = serde_json::from_slice::<Value>(&rec.value)
            .map(|v| s(&v, "/metadata/name").to_string())
            .unwrap_or_default();
        self.unregister(&name);
    }

    /// Lists every CRD and syncs each; returns the list's revision.
    fn resync(&mut self) -> crate::store::Result<i64> {
        let page = self.store.list(&ListOptions {
            prefix: CRD_PREFIX.into(),
            ..Default::default()
        })?;
        let present: Vec<String> = page
            .records
            .iter()
            .filter_map(|r| serde_json::from_slice::<Value>(&r.value).ok())
            .map(|v| s(&v, "/metadata/name").to_string())
            .collect();
        let gone: Vec<String> = self
            .served
            .keys()
            .filter(|n| !present.contains(n))
            .cloned()
            .collect();
        for n in gone {
            self.unregister(&n);
        }
        for rec in &page.records {
            self.sync(rec);
        }
        Ok(page.revision)
    }
}

fn delete_all(store: &dyn Store, prefix: &str) -> crate::store::Result<()> {
    let page = store.list(&ListOptions {
        prefix: prefix.into(),
        ..Default::default()
    })?;
    for r in page.records {
        match store.delete(&r.key, None) {
            Ok(_) | Err(crate::store::StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Loads the stored CRDs into the registry now, then follows their changes
/// until `shutdown`. Must be called inside a tokio runtime.
pub fn start(store: Arc<dyn Store>, registry: Arc<Registry>, shutdown: CancellationToken) {
    let mut ctl = Controller {
        store,
        registry,
        served: HashMap::new(),
    };
    let mut revision = match ctl.resync() {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("failed to load CRDs: {e}");
            0
        }
    };
    tokio::spawn(async move {
        loop {
            let mut rx = match ctl.store.watch(CRD_PREFIX, revision) {
                Ok(rx) => rx,
                Err(e) => {
                    tracing::warn!("failed to watch CRDs: {e}");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                    }
                    revision = ctl.resync().unwrap_or(revision);
                    continue;
                }
            };
            loop {
                let ev = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    ev = rx.recv() => ev,
                };
                match ev {
                    Some(Ok(ev)) => {
                        revision = ev.revision;
                        match ev.kind {
                            EventKind::Created | EventKind::Updated => ctl.sync(&ev.record),
                            EventKind::Deleted => ctl.deleted(&ev.record),
                        }
                    }
                    // Fell behind or the stream ended: list again and rewatch.
                    Some(Err(_)) | None => {
                        revision = ctl.resync().unwrap_or(revision);
                        break;
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests;
