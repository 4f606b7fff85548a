//! Server-side apply: merges an applied configuration into the live object
//! by type (map-keyed lists item by item, sets as unions, atomic lists and
//! scalars replaced, objects field by field), refuses to change a field
//! another manager owns unless forced (409 with `FieldManagerConflict`
//! causes, worded as kube-apiserver's), removes the fields this manager
//! applied before and no longer applies when no other manager owns them, and
//! records the manager's `Apply` entry (its set is exactly the applied
//! fields).
//!
//! `kubectl` itself may take over, without conflicts, the fields of a
//! still-matching last-applied annotation (kube's upgrade from client-side
//! apply). An object that exists but has no managedFields at all first gets a
//! `before-first-apply` Update entry owning everything, as kube does.
//! A no-op apply keeps the entry's time, so the object stays byte-identical
//! and the write is skipped.

use serde_json::{json, Map, Value};

use super::fieldset::{self, FieldSet};
use super::schema::{ListKind, Schema, TypeRef};
use super::{managed_view, read_entries, write_entries, Entry};
use crate::apiserver::objects;
use crate::apiserver::status::ApiStatus;

pub struct ApplyRequest<'a> {
    /// The stored object; `None` when the apply creates it.
    pub live: Option<&'a Value>,
    /// The applied configuration (without `managedFields`).
    pub applied: &'a Value,
    pub manager: &'a str,
    pub force: bool,
    /// The kind's `apiVersion`, recorded in the entry.
    pub api_version: &'a str,
    pub schema: &'a dyn Schema,
    /// Whether `status` belongs to a status subresource.
    pub status_split: bool,
    pub subresource: Option<&'a str>,
}

/// One field another manager owns and the apply would change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// kube's printed manager: `"m"` for appliers, `"m" using apps/v1` for
    /// updaters.
    pub manager: String,
    /// `.spec.replicas`.
    pub path: String,
}

fn print_manager(e: &Entry) -> String {
    let mut s = format!("{:?}", e.manager);
    if let Some(sub) = &e.subresource {
        s.push_str(&format!(" with subresource {sub:?}"));
    }
    if !e.is_apply() {
        s.push_str(&format!(" using {}", e.api_version));
    }
    s
}

/// The object after the apply, with its managedFields, or the conflicts.
pub fn apply(req: &ApplyRequest<'_>) -> Result<Value, Vec<Conflict>> {
    let live = req.live.cloned().unwrap_or_else(|| json!({}));
    let mut applied = req.applied.clone();
    if let Some(o) = applied.as_object_mut() {
        if req.status_split && req.subresource != Some("status") {
            o.remove("status");
        }
    }
    let applied_view = managed_view(&applied, req.subresource, req.status_split);
    let a_set = fieldset::from_object(&applied_view, req.schema);
    let mut entries = read_entries(&live);
    if req.live.is_some() && entries.is_empty() {
        let all = fieldset::from_object(&managed_view(&live, None, false), req.schema);
        if !all.is_empty() {
            entries.push(Entry {
                manager: "before-first-apply".into(),
                operation: "Update".into(),
                api_version: req.api_version.into(),
                time: Some(objects::now_rfc3339()),
                subresource: None,
                set: all,
            });
        }
    }
    let sub = req.subresource.map(str::to_string);
    let mine = entries
        .iter()
        .position(|e| e.is_apply() && e.manager == req.manager && e.subresource == sub);

    let mut merged = live.clone();
    merge_value(&mut merged, &applied, &req.schema.root(), req.schema);

    let mut conflicts: Vec<(usize, fieldset::Path)> = Vec::new();
    for p in a_set.members() {
        if !a_set.is_leaf(&p) {
            continue;
        }
        let Some(lv) = fieldset::get(&live, &p) else {
            continue;
        };
        if Some(lv) == fieldset::get(&merged, &p) {
            continue;
        }
        for (i, e) in entries.iter().enumerate() {
            if Some(i) != mine && e.set.contains(&p) {
                conflicts.push((i, p.clone()));
            }
        }
    }
    if !conflicts.is_empty() {
        let upgrade = req.manager == "kubectl"
            && allowed_from_last_applied(&live, req.schema)
                .is_some_and(|allowed| conflicts.iter().all(|(_, p)| allowed.contains(p)));
        if !req.force && !upgrade {
            let mut out: Vec<Conflict> = conflicts
                .iter()
                .map(|(i, p)| Conflict {
                    manager: print_manager(&entries[*i]),
                    path: fieldset::path_string(p),
                })
                .collect();
            out.sort_by(|a, b| a.manager.cmp(&b.manager));
            return Err(out);
        }
        for (i, p) in &conflicts {
            let mut one = FieldSet::default();
            one.insert(p);
            entries[*i].set = entries[*i].set.difference(&one);
        }
    }

    let previous = mine.map(|i| entries[i].set.clone());
    if let Some(prev) = &previous {
        let dropped = prev.difference(&a_set);
        let mut others = FieldSet::default();
        for (j, e) in entries.iter().enumerate() {
            if Some(j) != mine {
                others.union(&e.set);
            }
        }
        // Parents first: removing an item takes its fields with it (and its
        // key fields must still be there to find it).
        let mut removed: Vec<fieldset::Path> = Vec::new();
        for p in dropped.members() {
            if removed.iter().any(|r| p.starts_with(r)) {
                continue;
            }
            if !others.touches(&p) && !a_set.touches(&p) && fieldset::remove(&mut merged, &p) {
                removed.push(p);
            }
        }
    }

    let unchanged_object = strip_fields(&merged) == strip_fields(&live);
    let now = Some(objects::now_rfc3339());
    match mine {
        Some(i) => {
            let same = previous.as_ref() == Some(&a_set);
            entries[i].set = a_set;
            entries[i].api_version = req.api_version.into();
            if !(same && unchanged_object) {
                entries[i].time = now;
            }
        }
        None => entries.push(Entry {
            manager: req.manager.into(),
            operation: "Apply".into(),
            api_version: req.api_version.into(),
            time: now,
            subresource: sub,
            set: a_set,
        }),
    }
    let view = managed_view(&merged, None, false);
    for e in &mut entries {
        e.set.retain_existing(&view);
    }
    write_entries(&mut merged, &entries);
    Ok(merged)
}

/// kube's `lastAppliedManager`: `kubectl` upgrading from client-side apply
/// may take the fields of the last-applied annotation without conflicts, as
/// long as the annotation still matches the live object.
fn allowed_from_last_applied(live: &Value, schema: &dyn Schema) -> Option<FieldSet> {
    let raw = live
        .pointer("/metadata/annotations")?
        .get(LAST_APPLIED)?
        .as_str()?;
    let last: Value = serde_json::from_str(raw).ok()?;
    let set = fieldset::from_object(&managed_view(&last, None, false), schema);
    let matches = set.members().iter().filter(|p| set.is_leaf(p)).all(|p| {
        let want = fieldset::get(&last, p);
        // kubectl records `annotations: {}`; an empty map asks nothing.
        want.is_some_and(|v| v.as_object().is_some_and(|o| o.is_empty()))
            || want == fieldset::get(live, p)
    });
    matches.then_some(set)
}

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

fn strip_fields(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.shift_remove("managedFields");
    }
    v
}

fn merge_object(
    live: &mut Map<String, Value>,
    applied: &Map<String, Value>,
    ty: &TypeRef,
    schema: &dyn Schema,
) {
    for (k, av) in applied {
        if av.is_null() {
            live.shift_remove(k);
            continue;
        }
        match live.get_mut(k) {
            Some(lv) => merge_field(lv, av, ty, k, schema),
            None => {
                live.insert(k.clone(), av.clone());
            }
        }
    }
}

fn merge_value(live: &mut Value, applied: &Value, ty: &TypeRef, schema: &dyn Schema) {
    if let (Some(lm), Some(am)) = (live.as_object_mut(), applied.as_object()) {
        merge_object(lm, am, ty, schema);
        return;
    }
    *live = applied.clone();
}

fn merge_field(
    live: &mut Value,
    applied: &Value,
    owner: &TypeRef,
    field: &str,
    schema: &dyn Schema,
) {
    let ty = schema.field_type(owner, field);
    if let (Some(lm), Some(am)) = (live.as_object_mut(), applied.as_object()) {
        merge_object(lm, am, &ty, schema);
        return;
    }
    if let (Some(litems), Some(aitems)) = (live.as_array_mut(), applied.as_array()) {
        match schema.list_kind(owner, field) {
            ListKind::Atomic => {}
            ListKind::Set => {
                for a in aitems {
                    if !litems.contains(a) {
                        litems.push(a.clone());
                    }
                }
                return;
            }
            ListKind::Map(keys) => {
                for a in aitems {
                    let at = fieldset::item_key(a, &keys)
                        .and_then(|el| fieldset::step_index(litems, &el));
                    match at {
                        Some(i) => merge_value(&mut litems[i], a, &ty, schema),
                        None => litems.push(a.clone()),
                    }
                }
                return;
            }
        }
    }
    *live = applied.clone();
}

/// The 409 kube-apiserver answers for apply conflicts.
pub fn conflict_status(conflicts: &[Conflict]) -> ApiStatus {
    let message = if let [c] = conflicts {
        format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            c.manager, c.path
        )
    } else {
        let mut lines = Vec::new();
        let mut last: Option<&str> = None;
        for c in conflicts {
            if last != Some(c.manager.as_str()) {
                lines.push(format!("conflicts with {}:", c.manager));
                last = Some(&c.manager);
            }
            lines.push(format!("- {}", c.path));
        }
        format!(
            "Apply failed with {} conflicts: {}",
            conflicts.len(),
            lines.join("\n")
        )
    };
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|c| {
            json!({"reason": "FieldManagerConflict", "message": format!("conflict with {}", c.manager),
                   "field": c.path})
        })
        .collect();
    let mut details = Map::new();
    details.insert("causes".into(), Value::Array(causes));
    ApiStatus {
        code: 409,
        reason: "Conflict",
        message,
        details: Some(Box::new(details)),
        retry_after: None,
    }
}
