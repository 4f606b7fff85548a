//! Field management as kube-apiserver keeps it: `metadata.managedFields`
//! entries `{manager, operation, apiVersion, time, fieldsType: FieldsV1,
//! fieldsV1, subresource}` recording which manager owns which fields, and
//! server-side apply (`application/apply-patch+yaml`) merging an applied
//! configuration by type with ownership conflicts.
//!
//! - [`ManagedFields`] is the admission plug-in that records an `Update`
//!   entry for every create, PUT and non-apply PATCH: the fields the write
//!   added or changed go to the writing manager (from `fieldManager`, or the
//!   User-Agent's first part as kube derives it) and are taken from every
//!   other manager; fields the write removed leave every entry. A client that
//!   sends managedFields different from the stored ones sets them (`[{}]`
//!   resets them), as in kube. It runs last in the chain so defaulted fields
//!   belong to the writer, as in kube.
//! - [`apply::apply`] is the apply merge (see there); `rest::patch` runs it
//!   and then the chain inside [`while_applying`], so the plug-in leaves the
//!   entries the apply computed alone.
//! - [`fieldset`] holds the field-set tree and its `fieldsV1` encoding,
//!   [`schema`] the per-type list keys (built-ins from the strategic-merge
//!   table; custom resources untyped until the crd helper adds a schema).
//!
//! Invariants: entries never own identity or system fields (apiVersion, kind,
//! name, namespace, uid, resourceVersion, generation, creationTimestamp,
//! deletion fields, managedFields); writes to the main resource of a kind
//! with a status subresource never own `status`, and status writes own only
//! `status` (entry `subresource: status`). Entries with no fields are dropped.
//!
//! Partial: map types are always granular (kube's `x-kubernetes-map-type:
//! atomic` structs such as LabelSelector are merged field by field);
//! entries are not merged per apiVersion (no version conversion exists);
//! timestamps have second resolution.

pub mod apply;
pub mod fieldset;
pub mod schema;

use std::cell::Cell;

use serde_json::{json, Value};

use self::fieldset::FieldSet;
use super::admission::{Admission, AdmissionRequest};
use super::objects;
use super::status::ApiStatus;

/// One `managedFields` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    pub api_version: String,
    pub time: Option<String>,
    pub subresource: Option<String>,
    pub set: FieldSet,
}

impl Entry {
    pub fn is_apply(&self) -> bool {
        self.operation == "Apply"
    }

    fn to_value(&self) -> Value {
        let mut v = json!({"manager": self.manager, "operation": self.operation,
                           "apiVersion": self.api_version});
        if let Some(t) = &self.time {
            v["time"] = json!(t);
        }
        v["fieldsType"] = json!("FieldsV1");
        v["fieldsV1"] = self.set.to_fields_v1();
        if let Some(s) = &self.subresource {
            v["subresource"] = json!(s);
        }
        v
    }

    fn from_value(v: &Value) -> Option<Entry> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        Some(Entry {
            manager: s("manager").unwrap_or_default(),
            operation: s("operation")?,
            api_version: s("apiVersion").unwrap_or_default(),
            time: s("time"),
            subresource: s("subresource").filter(|s| !s.is_empty()),
            set: FieldSet::from_fields_v1(v.get("fieldsV1").unwrap_or(&Value::Null)),
        })
    }
}

/// The entries stored in `obj` (malformed ones are skipped).
pub fn read_entries(obj: &Value) -> Vec<Entry> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Entry::from_value).collect())
        .unwrap_or_default()
}

/// Stores `entries` into `obj`, dropping empty ones; no entries removes the
/// field.
pub fn write_entries(obj: &mut Value, entries: &[Entry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.set.is_empty())
        .map(Entry::to_value)
        .collect();
    let m = objects::meta_mut(obj);
    if list.is_empty() {
        m.remove("managedFields");
    } else {
        m.insert("managedFields".into(), Value::Array(list));
    }
}

const SYSTEM_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
    "managedFields",
];

/// The part of `obj` field ownership is tracked on for a write to
/// `subresource` (see the module invariants).
pub fn managed_view(obj: &Value, subresource: Option<&str>, status_split: bool) -> Value {
    let mut v = obj.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("apiVersion");
        o.remove("kind");
        match subresource {
            Some("status") => o.retain(|k, _| k == "status"),
            _ if status_split => {
                o.remove("status");
            }
            _ => {}
        }
        if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            for k in SYSTEM_METADATA {
                m.remove(*k);
            }
            if m.is_empty() {
                o.remove("metadata");
            }
        }
    }
    v
}

/// kube's manager for a request without `fieldManager`: the User-Agent up to
/// its first `/` (at most 128 bytes).
pub fn manager_from_user_agent(ua: &str) -> &str {
    let first = ua.split('/').next().unwrap_or("");
    let mut end = first.len().min(128);
    while !first.is_char_boundary(end) {
        end -= 1;
    }
    &first[..end]
}

thread_local! {
    static APPLYING: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` (the admission chain of an apply) with the Update recording
/// switched off: the apply path has already computed the entries.
pub fn while_applying<T>(f: impl FnOnce() -> T) -> T {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            APPLYING.with(|a| a.set(false));
        }
    }
    APPLYING.with(|a| a.set(true));
    let _reset = Reset;
    f()
}

/// The admission plug-in recording `Update` entries.
pub struct ManagedFields;

impl Admission for ManagedFields {
    fn name(&self) -> &'static str {
        "managed-fields"
    }

    fn admit(
        &self,
        req: &AdmissionRequest<'_>,
        obj: &mut Value,
        _warnings: &mut Vec<String>,
    ) -> Result<(), ApiStatus> {
        if APPLYING.with(Cell::get) {
            return Ok(());
        }
        let sent = obj.pointer("/metadata/managedFields").cloned();
        let stored = req
            .old
            .and_then(|o| o.pointer("/metadata/managedFields").cloned());
        if let Some(sent) = sent.filter(|s| Some(s) != stored.as_ref()) {
            // The client sets the entries itself; `[]` or `[{}]` resets.
            let entries: Vec<Entry> = sent
                .as_array()
                .map(|a| a.iter().filter_map(Entry::from_value).collect())
                .unwrap_or_default();
            write_entries(obj, &entries);
            return Ok(());
        }
        let schema = schema::for_def(req.def);
        let split = objects::has_status_subresource(req.def);
        let view = managed_view(obj, req.subresource, split);
        let old_view = req.old.map(|o| managed_view(o, req.subresource, split));
        let changed = fieldset::changed(old_view.as_ref(), &view, schema.as_ref());
        let mut entries = req.old.map(read_entries).unwrap_or_default();
        let manager = req.field_manager.unwrap_or("unknown").to_string();
        let sub = req.subresource.map(str::to_string);
        let api_version = req.def.api_version();
        let full_view = managed_view(obj, None, false);
        for e in &mut entries {
            let mine = !e.is_apply() && e.manager == manager && e.subresource == sub;
            if !mine {
                e.set = e.set.difference(&changed);
            }
            e.set.retain_existing(&full_view);
        }
        if !changed.is_empty() {
            let pos = entries.iter().position(|e| {
                !e.is_apply()
                    && e.manager == manager
                    && e.subresource == sub
                    && e.api_version == api_version
            });
            let now = Some(objects::now_rfc3339());
            match pos {
                Some(i) => {
                    entries[i].set.union(&changed);
                    entries[i].time = now;
                }
                None => entries.push(Entry {
                    manager,
                    operation: "Update".into(),
                    api_version,
                    time: now,
                    subresource: sub,
                    set: changed,
                }),
            }
        }
        write_entries(obj, &entries);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
