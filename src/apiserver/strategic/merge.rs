//! The strategic merge algorithm itself.

use serde_json::{Map, Value};

use super::meta::{self, FieldMeta};
use super::{PatchError, TypeGraph, TypeKey};

/// Apply a strategic merge patch to `original` (a built-in kind).
pub fn strategic_merge(
    kind: &TypeKey,
    original: &Value,
    patch: &Value,
) -> Result<Value, PatchError> {
    let graph = TypeGraph::get();
    let root = graph.root(kind).ok_or_else(|| {
        let gk = if kind.group.is_empty() {
            kind.kind.to_string()
        } else {
            format!("{}.{}", kind.kind, kind.group)
        };
        PatchError::Unsupported(gk)
    })?;
    let Value::Object(patch) = patch else {
        return Err(PatchError::Invalid(
            "a strategic merge patch must be a JSON object".into(),
        ));
    };
    let original = match original {
        Value::Object(o) => o.clone(),
        _ => Map::new(),
    };
    merge_map(graph, Some(root), original, patch).map(Value::Object)
}

fn invalid(msg: impl Into<String>) -> PatchError {
    PatchError::Invalid(msg.into())
}

fn directive(m: &Map<String, Value>) -> Option<&str> {
    m.get("$patch").and_then(Value::as_str)
}

fn merge_map(
    g: &TypeGraph,
    ty: Option<&str>,
    mut original: Map<String, Value>,
    patch: &Map<String, Value>,
) -> Result<Map<String, Value>, PatchError> {
    match patch.get("$patch") {
        None => {}
        Some(Value::String(d)) if d == "merge" => {}
        Some(Value::String(d)) if d == "replace" => return Ok(clean_map(patch)),
        Some(Value::String(d)) if d == "delete" => return Ok(Map::new()),
        Some(other) => return Err(invalid(format!("unknown patch type {other} in map"))),
    }
    if let Some(keys) = patch.get("$retainKeys") {
        let keys: Vec<&str> = keys
            .as_array()
            .ok_or_else(|| invalid("$retainKeys must be a list of strings"))?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        original.retain(|k, _| keys.contains(&k.as_str()));
    }
    for (k, values) in patch {
        let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") else {
            continue;
        };
        let values = values
            .as_array()
            .ok_or_else(|| invalid(format!("{k} must be a list")))?;
        if let Some(Value::Array(list)) = original.get_mut(field) {
            list.retain(|v| !values.contains(v));
        }
    }
    for (k, pv) in patch {
        if k.starts_with('$') {
            continue;
        }
        let deletes_map = matches!(pv, Value::Object(m) if directive(m) == Some("delete"));
        if pv.is_null() || deletes_map {
            original.shift_remove(k);
            continue;
        }
        let child = ty.and_then(|t| g.child(t, k));
        let field_meta = ty.and_then(|t| meta::lookup(t, k));
        let old = original.get_mut(k).map(std::mem::take);
        let merged = match (old, pv) {
            (Some(Value::Object(o)), Value::Object(p)) => Value::Object(merge_map(g, child, o, p)?),
            (_, Value::Object(p)) => Value::Object(merge_map(g, child, Map::new(), p)?),
            (old, Value::Array(p)) => {
                let o = match old {
                    Some(Value::Array(a)) => a,
                    _ => Vec::new(),
                };
                Value::Array(merge_list(g, child, field_meta, o, p, k)?)
            }
            (_, other) => other.clone(),
        };
        original.insert(k.clone(), merged);
    }
    for (k, order) in patch {
        let Some(field) = k.strip_prefix("$setElementOrder/") else {
            continue;
        };
        let order = order
            .as_array()
            .ok_or_else(|| invalid(format!("{k} must be a list")))?;
        let key = ty
            .and_then(|t| meta::lookup(t, field))
            .map(|m| m.merge_key)
            .unwrap_or("");
        if let Some(Value::Array(list)) = original.get_mut(field) {
            let items = std::mem::take(list);
            *list = set_element_order(items, order, key);
        }
    }
    Ok(original)
}

fn is_merge(m: Option<&FieldMeta>) -> bool {
    m.is_some_and(|m| m.strategy.split(',').any(|s| s == "merge"))
}

fn merge_list(
    g: &TypeGraph,
    elem: Option<&str>,
    m: Option<&FieldMeta>,
    mut original: Vec<Value>,
    patch: &[Value],
    field: &str,
) -> Result<Vec<Value>, PatchError> {
    if !is_merge(m) {
        return Ok(clean_list(patch));
    }
    let key = m.map(|m| m.merge_key).unwrap_or("");
    if patch
        .iter()
        .any(|p| matches!(p, Value::Object(o) if directive(o) == Some("replace")))
    {
        let rest: Vec<Value> = patch
            .iter()
            .filter(|p| !matches!(p, Value::Object(o) if directive(o) == Some("replace")))
            .cloned()
            .collect();
        return Ok(clean_list(&rest));
    }
    if key.is_empty() {
        // A primitive list with strategy merge is a set union.
        for p in patch {
            if !original.contains(p) {
                original.push(p.clone());
            }
        }
        return Ok(original);
    }
    for p in patch {
        let Value::Object(item) = p else {
            return Err(invalid(format!(
                "{field}: list items must be objects with merge key {key}"
            )));
        };
        let Some(id) = item.get(key) else {
            return Err(invalid(format!(
                "map: {p} does not contain declared merge key: {key}"
            )));
        };
        let found = original.iter().position(|o| o.get(key) == Some(id));
        match (directive(item), found) {
            (Some("delete"), _) => original.retain(|o| o.get(key) != Some(id)),
            (_, Some(i)) => {
                let o = match std::mem::take(&mut original[i]) {
                    Value::Object(o) => o,
                    _ => Map::new(),
                };
                original[i] = Value::Object(merge_map(g, elem, o, item)?);
            }
            (_, None) => original.push(Value::Object(merge_map(g, elem, Map::new(), item)?)),
        }
    }
    Ok(original)
}

/// Order `items` as `$setElementOrder` says: items named in `order` come in
/// that order, the others (server-only) keep their place relative to them,
/// as apimachinery's `normalizeElementOrder` does.
fn set_element_order(items: Vec<Value>, order: &[Value], key: &str) -> Vec<Value> {
    let id = |v: &Value| -> Value {
        if key.is_empty() {
            v.clone()
        } else {
            v.get(key).cloned().unwrap_or(Value::Null)
        }
    };
    let order_ids: Vec<Value> = order.iter().map(&id).collect();
    let server_ids: Vec<Value> = items.iter().map(&id).collect();
    let (mut named, server_only): (Vec<Value>, Vec<Value>) =
        items.into_iter().partition(|v| order_ids.contains(&id(v)));
    named.sort_by_key(|v| order_ids.iter().position(|o| *o == id(v)));
    let pos = |v: &Value| server_ids.iter().position(|s| *s == id(v));
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::with_capacity(named.len() + server_only.len());
    while i < named.len() || j < server_only.len() {
        let take_left = if j >= server_only.len() {
            true
        } else if i >= named.len() {
            false
        } else {
            matches!((pos(&named[i]), pos(&server_only[j])), (Some(l), Some(r)) if l < r)
        };
        if take_left {
            out.push(named[i].clone());
            i += 1;
        } else {
            out.push(server_only[j].clone());
            j += 1;
        }
    }
    out
}

/// A patch value as a plain value: directives and nulls removed.
fn clean(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(clean_map(m)),
        Value::Array(a) => Value::Array(clean_list(a)),
        other => other.clone(),
    }
}

fn clean_map(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter()
        .filter(|(k, v)| !k.starts_with('$') && !v.is_null())
        .map(|(k, v)| (k.clone(), clean(v)))
        .collect()
}

fn clean_list(a: &[Value]) -> Vec<Value> {
    a.iter()
        .filter(|v| !matches!(v, Value::Object(o) if directive(o).is_some() && o.len() == 1))
        .filter(|v| !matches!(v, Value::Object(o) if directive(o) == Some("delete")))
        .map(clean)
        .collect()
}

#[cfg(test)]
#[path = "merge_tests.rs"]
mod tests;
