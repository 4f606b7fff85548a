//! The registry of served kinds: one entry per resource, from which REST
//! routing, discovery, tables and storage keys are all derived, so that adding
//! a kind is one entry. CRDs add entries at run time (`Registry::insert_custom`, from `crate::apiserver::crd`).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// One served resource (a group/version/plural).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceDef {
    /// API group; "" for the core group.
    pub group: String,
    pub version: String,
    pub kind: String,
    /// The lower-case plural used in URLs, e.g. `deployments`.
    pub plural: String,
    /// The lower-case singular, e.g. `deployment`.
    pub singular: String,
    pub short_names: Vec<String>,
    /// e.g. `all` for the kinds `kubectl get all` shows.
    pub categories: Vec<String>,
    pub namespaced: bool,
    /// Subresources served, e.g. `status`, `scale`, `binding`, `log`.
    pub subresources: Vec<String>,
    /// Verbs advertised in discovery.
    pub verbs: Vec<String>,
    /// Which table columns `kubectl get` shows (see `table.rs`).
    pub columns: Vec<Column>,
}

impl ResourceDef {
    /// `apps/v1`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `deployments.apps`, or `pods` for the core group: the name RBAC,
    /// errors and storage use.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub fn has_subresource(&self, name: &str) -> bool {
        self.subresources.iter().any(|s| s == name)
    }
}

#[cfg(test)]
impl ResourceDef {
    /// A bare `v1` kind `K` of `group` served at `plural`: no names beyond
    /// that, no subresources, verbs or columns (tests set what they need
    /// with `..`).
    pub fn for_test(group: &str, plural: &str, namespaced: bool) -> Self {
        ResourceDef {
            group: group.into(),
            version: "v1".into(),
            kind: "K".into(),
            plural: plural.into(),
            singular: String::new(),
            short_names: vec![],
            categories: vec![],
            namespaced,
            subresources: vec![],
            verbs: vec![],
            columns: vec![],
        }
    }
}

/// A table column definition, as in `meta.k8s.io/v1` `TableColumnDefinition`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// `string`, `integer`, `number`, `boolean` or `date`.
    pub type_: String,
    /// e.g. `name` for the NAME column.
    pub format: String,
    pub description: String,
    /// 0 for the default view, 1 for `-o wide`.
    pub priority: i32,
    /// A simple JSONPath (`.spec.cronSpec`) the cell is read from: a custom
    /// resource's `additionalPrinterColumns`; `None` for built-in printers.
    pub json_path: Option<String>,
}

/// All served kinds, shared by the router, discovery and controllers.
#[derive(Debug, Default)]
pub struct Registry {
    defs: RwLock<Vec<Arc<ResourceDef>>>,
    by_gvr: RwLock<HashMap<(String, String, String), Arc<ResourceDef>>>,
    /// For entries served from a CustomResourceDefinition: the CRD object
    /// they come from (schemas, scale paths, deprecation; see `crd`).
    custom: RwLock<HashMap<(String, String, String), Arc<serde_json::Value>>>,
}

impl Registry {
    /// An empty registry (tests); see `builtin` for the served set.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Add or replace an entry.
    pub fn insert(&self, def: ResourceDef) {
        let def = Arc::new(def);
        let gvr = (def.group.clone(), def.version.clone(), def.plural.clone());
        let mut defs = self.defs.write().expect("registry lock");
        defs.retain(|d| {
            (d.group.as_str(), d.version.as_str(), d.plural.as_str())
                != (gvr.0.as_str(), gvr.1.as_str(), gvr.2.as_str())
        });
        defs.push(def.clone());
        self.by_gvr.write().expect("registry lock").insert(gvr, def);
    }

    /// Add or replace an entry served from a CustomResourceDefinition.
    pub fn insert_custom(&self, def: ResourceDef, crd: Arc<serde_json::Value>) {
        let gvr = (def.group.clone(), def.version.clone(), def.plural.clone());
        self.insert(def);
        self.custom.write().expect("registry lock").insert(gvr, crd);
    }

    /// The CRD an entry is served from, `None` for built-in kinds.
    pub fn custom(
        &self,
        group: &str,
        version: &str,
        plural: &str,
    ) -> Option<Arc<serde_json::Value>> {
        self.custom
            .read()
            .expect("registry lock")
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
            .cloned()
    }

    /// Remove an entry (a deleted CRD version).
    pub fn remove(&self, group: &str, version: &str, plural: &str) {
        self.custom.write().expect("registry lock").remove(&(
            group.to_string(),
            version.to_string(),
            plural.to_string(),
        ));
        self.defs
            .write()
            .expect("registry lock")
            .retain(|d| !(d.group == group && d.version == version && d.plural == plural));
        self.by_gvr.write().expect("registry lock").remove(&(
            group.to_string(),
            version.to_string(),
            plural.to_string(),
        ));
    }

    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceDef>> {
        self.by_gvr
            .read()
            .expect("registry lock")
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
            .cloned()
    }

    /// Every entry, in insertion order (discovery's order).
    pub fn all(&self) -> Vec<Arc<ResourceDef>> {
        self.defs.read().expect("registry lock").clone()
    }
}
