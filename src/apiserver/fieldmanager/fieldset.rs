//! Field sets as Kubernetes' structured-merge-diff keeps them and encodes
//! them in `managedFields[].fieldsV1`: a tree whose edges are path elements
//! `f:<field>`, `k:<json of key fields>` (an item of a map-keyed list),
//! `v:<json value>` (an item of a set) and `i:<index>`; a node is a member
//! when the set holds that path itself (encoded as `".": {}` when it also
//! has children, or as a bare `{}` leaf).
//!
//! Also here: walking an object into its field set, the set of fields one
//! write changed, and reading, removing and checking paths in an object.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::schema::{ListKind, Schema, TypeRef};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSet {
    pub member: bool,
    pub children: BTreeMap<String, FieldSet>,
}

/// One path: its encoded elements from the root.
pub type Path = Vec<String>;

impl FieldSet {
    pub fn is_empty(&self) -> bool {
        !self.member && self.children.values().all(FieldSet::is_empty)
    }

    /// Decodes a `fieldsV1` object; anything malformed decodes to empty.
    pub fn from_fields_v1(v: &Value) -> FieldSet {
        let mut s = FieldSet::default();
        if let Some(m) = v.as_object() {
            for (k, c) in m {
                if k == "." {
                    s.member = true;
                    continue;
                }
                let mut child = FieldSet::from_fields_v1(c);
                if c.as_object().is_none_or(Map::is_empty) {
                    child.member = true;
                }
                s.children.insert(k.clone(), child);
            }
        }
        s
    }

    pub fn to_fields_v1(&self) -> Value {
        let mut m = Map::new();
        if self.member && !self.children.is_empty() {
            m.insert(".".into(), json!({}));
        }
        for (k, c) in &self.children {
            if !c.is_empty() {
                m.insert(k.clone(), c.to_fields_v1());
            }
        }
        Value::Object(m)
    }

    pub fn insert(&mut self, path: &[String]) {
        let mut node = self;
        for el in path {
            node = node.children.entry(el.clone()).or_default();
        }
        node.member = true;
    }

    pub fn contains(&self, path: &[String]) -> bool {
        self.node(path).is_some_and(|n| n.member)
    }

    /// Whether the set holds `path` or anything below it.
    pub fn touches(&self, path: &[String]) -> bool {
        self.node(path).is_some_and(|n| !n.is_empty())
    }

    fn node(&self, path: &[String]) -> Option<&FieldSet> {
        let mut node = self;
        for el in path {
            node = node.children.get(el)?;
        }
        Some(node)
    }

    pub fn union(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (k, c) in &other.children {
            self.children.entry(k.clone()).or_default().union(c);
        }
    }

    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        FieldSet {
            member: self.member && !other.member,
            children: self
                .children
                .iter()
                .map(|(k, c)| match other.children.get(k) {
                    Some(o) => (k.clone(), c.difference(o)),
                    None => (k.clone(), c.clone()),
                })
                .filter(|(_, c)| !c.is_empty())
                .collect(),
        }
    }

    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        FieldSet {
            member: self.member && other.member,
            children: self
                .children
                .iter()
                .filter_map(|(k, c)| {
                    other
                        .children
                        .get(k)
                        .map(|o| (k.clone(), c.intersection(o)))
                })
                .filter(|(_, c)| !c.is_empty())
                .collect(),
        }
    }

    /// Every member path, parents before children.
    pub fn members(&self) -> Vec<Path> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out);
        out
    }

    fn collect(&self, prefix: &mut Path, out: &mut Vec<Path>) {
        if self.member && !prefix.is_empty() {
            out.push(prefix.clone());
        }
        for (k, c) in &self.children {
            prefix.push(k.clone());
            c.collect(prefix, out);
            prefix.pop();
        }
    }

    /// Whether the member at `path` is a leaf (no members below it).
    pub fn is_leaf(&self, path: &[String]) -> bool {
        self.node(path)
            .is_some_and(|n| n.children.values().all(FieldSet::is_empty))
    }

    /// Drops every path that no longer exists in `obj`.
    pub fn retain_existing(&mut self, obj: &Value) {
        self.children.retain(|k, c| match step(obj, k) {
            Some(v) => {
                c.retain_existing(v);
                !c.is_empty()
            }
            None => false,
        });
    }
}

/// A path as structured-merge-diff prints it: `.spec.replicas`,
/// `.spec.containers[name="web"].image`, `.metadata.finalizers[="x"]`.
pub fn path_string(path: &[String]) -> String {
    let mut s = String::new();
    for el in path {
        if let Some(f) = el.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = el.strip_prefix("k:") {
            let keys: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let parts: Vec<String> = keys.iter().map(|(n, v)| format!("{n}={v}")).collect();
            s.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = el.strip_prefix("v:") {
            s.push_str(&format!("[={v}]"));
        } else if let Some(i) = el.strip_prefix("i:") {
            s.push_str(&format!("[{i}]"));
        }
    }
    s
}

/// The `k:` element of a map-list item; `None` when the item has no keys.
pub fn item_key(item: &Value, keys: &[String]) -> Option<String> {
    let obj = item.as_object()?;
    let mut sorted: Vec<&String> = keys.iter().collect();
    sorted.sort();
    let mut m = Map::new();
    for k in sorted {
        match obj.get(k) {
            Some(v) => {
                m.insert(k.clone(), v.clone());
            }
            // Kubernetes defaults `protocol` in port keys before keying.
            None if k == "protocol" => {
                m.insert(k.clone(), json!("TCP"));
            }
            None => {}
        }
    }
    if m.is_empty() {
        return None;
    }
    Some(format!("k:{}", Value::Object(m)))
}

fn element(item: &Value, index: usize, kind: &ListKind) -> String {
    match kind {
        ListKind::Map(keys) => item_key(item, keys).unwrap_or_else(|| format!("i:{index}")),
        ListKind::Set => format!("v:{item}"),
        ListKind::Atomic => format!("i:{index}"),
    }
}

fn item_matches(item: &Value, keys: &Map<String, Value>) -> bool {
    keys.iter().all(|(k, want)| match item.get(k) {
        Some(v) => v == want,
        None => k == "protocol" && want == "TCP",
    })
}

/// The value one path element leads to.
pub fn step<'a>(v: &'a Value, el: &str) -> Option<&'a Value> {
    if let Some(f) = el.strip_prefix("f:") {
        return v.as_object()?.get(f);
    }
    let items = v.as_array()?;
    step_index(items, el).map(|i| &items[i])
}

pub fn step_index(items: &[Value], el: &str) -> Option<usize> {
    if let Some(k) = el.strip_prefix("k:") {
        let keys: Map<String, Value> = serde_json::from_str(k).ok()?;
        items.iter().position(|i| item_matches(i, &keys))
    } else if let Some(raw) = el.strip_prefix("v:") {
        let want: Value = serde_json::from_str(raw).ok()?;
        items.iter().position(|i| *i == want)
    } else {
        el.strip_prefix("i:")?
            .parse()
            .ok()
            .filter(|i| *i < items.len())
    }
}

pub fn get<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(obj, |v, el| step(v, el))
}

/// Removes the field or item at `path`; false when it was not there.
pub fn remove(obj: &mut Value, path: &[String]) -> bool {
    let Some((last, parent)) = path.split_last() else {
        return false;
    };
    let mut v = obj;
    for el in parent {
        let next = if let Some(f) = el.strip_prefix("f:") {
            v.as_object_mut().and_then(|o| o.get_mut(f))
        } else {
            match v.as_array_mut() {
                Some(items) => match step_index(items, el) {
                    Some(i) => items.get_mut(i),
                    None => None,
                },
                None => None,
            }
        };
        match next {
            Some(n) => v = n,
            None => return false,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        return v.as_object_mut().and_then(|o| o.shift_remove(f)).is_some();
    }
    match v.as_array_mut() {
        Some(items) => match step_index(items, last) {
            Some(i) => {
                items.remove(i);
                true
            }
            None => false,
        },
        None => false,
    }
}

/// Every field and list item `obj` sets, as server-side apply records the
/// fields of an applied configuration.
pub fn from_object(obj: &Value, schema: &dyn Schema) -> FieldSet {
    let mut set = FieldSet::default();
    if let Some(m) = obj.as_object() {
        walk_object(m, &schema.root(), schema, &mut set);
    }
    set
}

fn walk_object(m: &Map<String, Value>, ty: &TypeRef, schema: &dyn Schema, node: &mut FieldSet) {
    for (k, v) in m {
        let child = node.children.entry(format!("f:{k}")).or_default();
        walk_field(v, ty, k, schema, child);
    }
}

fn walk_field(v: &Value, owner: &TypeRef, field: &str, schema: &dyn Schema, node: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            walk_object(m, &schema.field_type(owner, field), schema, node)
        }
        Value::Array(items) if !items.is_empty() => {
            let kind = schema.list_kind(owner, field);
            if kind == ListKind::Atomic {
                node.member = true;
                return;
            }
            let item_ty = schema.field_type(owner, field);
            for (i, item) in items.iter().enumerate() {
                let c = node.children.entry(element(item, i, &kind)).or_default();
                c.member = true;
                if let Value::Object(m) = item {
                    walk_object(m, &item_ty, schema, c);
                }
            }
        }
        _ => node.member = true,
    }
}

/// The fields `new` adds or changes relative to `old`, as an Update records
/// them; a newly added map or item is a member itself too (the `.` entry).
pub fn changed(old: Option<&Value>, new: &Value, schema: &dyn Schema) -> FieldSet {
    let mut set = FieldSet::default();
    if let Some(m) = new.as_object() {
        diff_object(
            old.and_then(Value::as_object),
            m,
            &schema.root(),
            schema,
            &mut set,
        );
    }
    set
}

fn diff_object(
    old: Option<&Map<String, Value>>,
    new: &Map<String, Value>,
    ty: &TypeRef,
    schema: &dyn Schema,
    node: &mut FieldSet,
) {
    for (k, v) in new {
        let mut child = FieldSet::default();
        diff_field(old.and_then(|o| o.get(k)), v, ty, k, schema, &mut child);
        if !child.is_empty() {
            node.children.insert(format!("f:{k}"), child);
        }
    }
}

fn diff_field(
    old: Option<&Value>,
    new: &Value,
    owner: &TypeRef,
    field: &str,
    schema: &dyn Schema,
    node: &mut FieldSet,
) {
    match new {
        Value::Object(m) if !m.is_empty() => {
            let old_m = old.and_then(Value::as_object);
            if old_m.is_none() {
                node.member = true;
            }
            diff_object(old_m, m, &schema.field_type(owner, field), schema, node);
        }
        Value::Array(items) if !items.is_empty() => {
            let kind = schema.list_kind(owner, field);
            let old_items = old.and_then(Value::as_array);
            if kind == ListKind::Atomic {
                if old != Some(new) {
                    node.member = true;
                }
                return;
            }
            let item_ty = schema.field_type(owner, field);
            for (i, item) in items.iter().enumerate() {
                let el = element(item, i, &kind);
                let old_item = old_items.and_then(|o| step_index(o, &el).map(|j| &o[j]));
                let mut c = FieldSet::default();
                if old_item.is_none() {
                    c.member = true;
                }
                if let Value::Object(m) = item {
                    diff_object(
                        old_item.and_then(Value::as_object),
                        m,
                        &item_ty,
                        schema,
                        &mut c,
                    );
                }
                if !c.is_empty() {
                    node.children.insert(el, c);
                }
            }
        }
        _ => {
            if old != Some(new) {
                node.member = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::schema::Untyped;
    use super::*;

    fn p(s: &[&str]) -> Path {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn fields_v1_round_trips_with_dot_members() {
        let v = json!({"f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                       "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:name": {}}}}});
        let s = FieldSet::from_fields_v1(&v);
        assert!(s.contains(&p(&["f:metadata", "f:labels"])));
        assert!(s.contains(&p(&["f:metadata", "f:labels", "f:app"])));
        assert!(!s.contains(&p(&["f:metadata"])));
        assert_eq!(s.to_fields_v1(), v);
    }

    #[test]
    fn set_operations() {
        let mut a = FieldSet::default();
        a.insert(&p(&["f:spec", "f:replicas"]));
        a.insert(&p(&["f:spec", "f:paused"]));
        let mut b = FieldSet::default();
        b.insert(&p(&["f:spec", "f:replicas"]));
        assert_eq!(a.difference(&b).members(), vec![p(&["f:spec", "f:paused"])]);
        assert_eq!(a.intersection(&b), b);
        let mut c = b.clone();
        c.union(&a);
        assert_eq!(c, a);
        assert!(a.touches(&p(&["f:spec"])));
    }

    #[test]
    fn paths_print_like_structured_merge_diff() {
        assert_eq!(path_string(&p(&["f:spec", "f:replicas"])), ".spec.replicas");
        assert_eq!(
            path_string(&p(&[
                "f:spec",
                "k:{\"containerPort\":80,\"protocol\":\"TCP\"}",
                "f:name"
            ])),
            ".spec[containerPort=80,protocol=\"TCP\"].name"
        );
        assert_eq!(
            path_string(&p(&["f:finalizers", "v:\"x\""])),
            ".finalizers[=\"x\"]"
        );
    }

    #[test]
    fn objects_walk_with_builtin_list_keys() {
        let def = crate::apiserver::builtin::builtin_registry()
            .lookup("apps", "v1", "deployments")
            .unwrap();
        let schema = super::super::schema::for_def(&def);
        let obj = json!({"spec": {"replicas": 2, "template": {"spec": {"containers": [
            {"name": "web", "image": "a", "ports": [{"containerPort": 80}], "args": ["x"]}]}}}});
        let s = from_object(&obj, schema.as_ref());
        let c = p(&[
            "f:spec",
            "f:template",
            "f:spec",
            "f:containers",
            "k:{\"name\":\"web\"}",
        ]);
        assert!(s.contains(&c));
        let mut port = c.clone();
        port.extend(p(&[
            "f:ports",
            "k:{\"containerPort\":80,\"protocol\":\"TCP\"}",
        ]));
        assert!(s.contains(&port));
        let mut args = c.clone();
        args.push("f:args".into());
        assert!(s.contains(&args), "untagged lists are atomic leaves");
        assert!(get(&obj, &port).is_some());
        let mut o = obj.clone();
        assert!(remove(&mut o, &port));
        assert_eq!(
            o["spec"]["template"]["spec"]["containers"][0]["ports"],
            json!([])
        );
    }

    #[test]
    fn changed_records_added_maps_and_modified_leaves() {
        let old = json!({"metadata": {"name": "x"}, "data": {"a": "1", "b": "2"}});
        let new =
            json!({"metadata": {"name": "x", "labels": {"k": "v"}}, "data": {"a": "1", "b": "3"}});
        let s = changed(Some(&old), &new, &Untyped);
        assert_eq!(
            s.to_fields_v1(),
            json!({"f:data": {"f:b": {}}, "f:metadata": {"f:labels": {".": {}, "f:k": {}}}})
        );
        let mut keep = s.clone();
        keep.retain_existing(&json!({"data": {"b": "3"}}));
        assert_eq!(keep.to_fields_v1(), json!({"f:data": {"f:b": {}}}));
    }
}
