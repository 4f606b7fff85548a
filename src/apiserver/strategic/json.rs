//! JSON merge patch (RFC 7386) and JSON patch (RFC 6902).

use serde_json::{Map, Value};

use super::PatchError;

/// Apply an RFC 7386 merge patch: objects merge recursively, `null`
/// deletes, anything else replaces.
pub fn json_merge_patch(original: &Value, patch: &Value) -> Value {
    let Value::Object(p) = patch else {
        return patch.clone();
    };
    let mut target = match original {
        Value::Object(o) => o.clone(),
        _ => Map::new(),
    };
    for (k, v) in p {
        if v.is_null() {
            target.shift_remove(k);
        } else {
            let merged = json_merge_patch(target.get(k).unwrap_or(&Value::Null), v);
            target.insert(k.clone(), merged);
        }
    }
    Value::Object(target)
}

fn invalid(msg: impl Into<String>) -> PatchError {
    PatchError::Invalid(msg.into())
}

/// Split a JSON pointer into unescaped tokens.
fn tokens(pointer: &str) -> Result<Vec<String>, PatchError> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let rest = pointer
        .strip_prefix('/')
        .ok_or_else(|| invalid(format!("invalid JSON pointer {pointer:?}")))?;
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn index(token: &str, len: usize, allow_end: bool) -> Result<usize, PatchError> {
    if allow_end && token == "-" {
        return Ok(len);
    }
    let i: usize = token
        .parse()
        .map_err(|_| invalid(format!("invalid array index {token:?}")))?;
    let max = if allow_end {
        len
    } else {
        len.saturating_sub(1)
    };
    if (allow_end && i > len) || (!allow_end && (len == 0 || i > max)) {
        return Err(invalid(format!("array index {i} out of bounds")));
    }
    Ok(i)
}

fn parent<'a>(
    doc: &'a mut Value,
    toks: &[String],
    path: &str,
) -> Result<&'a mut Value, PatchError> {
    let mut cur = doc;
    for t in toks {
        cur = match cur {
            Value::Object(m) => m.get_mut(t),
            Value::Array(a) => {
                let i = index(t, a.len(), false)?;
                a.get_mut(i)
            }
            _ => None,
        }
        .ok_or_else(|| invalid(format!("path {path} does not exist")))?;
    }
    Ok(cur)
}

fn get<'a>(doc: &'a Value, path: &str) -> Result<&'a Value, PatchError> {
    let toks = tokens(path)?;
    let mut cur = doc;
    for t in &toks {
        cur = match cur {
            Value::Object(m) => m.get(t),
            Value::Array(a) => a.get(index(t, a.len(), false)?),
            _ => None,
        }
        .ok_or_else(|| invalid(format!("path {path} does not exist")))?;
    }
    Ok(cur)
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), PatchError> {
    let toks = tokens(path)?;
    let Some((last, init)) = toks.split_last() else {
        *doc = value;
        return Ok(());
    };
    match parent(doc, init, path)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
        }
        Value::Array(a) => {
            let i = index(last, a.len(), true)?;
            a.insert(i, value);
        }
        _ => return Err(invalid(format!("path {path}: parent is not a container"))),
    }
    Ok(())
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, PatchError> {
    let toks = tokens(path)?;
    let Some((last, init)) = toks.split_last() else {
        return Err(invalid("cannot remove the whole document"));
    };
    match parent(doc, init, path)? {
        Value::Object(m) => m
            .shift_remove(last)
            .ok_or_else(|| invalid(format!("path {path} does not exist"))),
        Value::Array(a) => {
            let i = index(last, a.len(), false)?;
            Ok(a.remove(i))
        }
        _ => Err(invalid(format!("path {path} does not exist"))),
    }
}

/// Apply an RFC 6902 JSON patch (a list of operations).
pub fn json_patch(original: &Value, ops: &Value) -> Result<Value, PatchError> {
    let ops = ops
        .as_array()
        .ok_or_else(|| invalid("a JSON patch must be a list of operations"))?;
    let mut doc = original.clone();
    for op in ops {
        let name = op
            .get("op")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("operation without \"op\""))?;
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("{name} operation without \"path\"")))?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| invalid(format!("{name} operation without \"value\"")))
        };
        let from = || {
            op.get("from")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("{name} operation without \"from\"")))
        };
        match name {
            "add" => add(&mut doc, path, value()?)?,
            "remove" => {
                remove(&mut doc, path)?;
            }
            "replace" => {
                get(&doc, path)?;
                let v = value()?;
                let toks = tokens(path)?;
                match toks.split_last() {
                    None => doc = v,
                    Some(_) => *parent(&mut doc, &toks, path)? = v,
                }
            }
            "move" => {
                let v = remove(&mut doc, from()?)?;
                add(&mut doc, path, v)?;
            }
            "copy" => {
                let v = get(&doc, from()?)?.clone();
                add(&mut doc, path, v)?;
            }
            "test" => {
                if *get(&doc, path)? != value()? {
                    return Err(PatchError::TestFailed(path.to_string()));
                }
            }
            other => return Err(invalid(format!("unknown JSON patch operation {other:?}"))),
        }
    }
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let o = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]});
        let p = json!({"a": "z", "c": {"f": null}, "l": [3]});
        assert_eq!(
            json_merge_patch(&o, &p),
            json!({"a": "z", "c": {"d": "e"}, "l": [3]})
        );
        assert_eq!(json_merge_patch(&json!({"a": 1}), &json!("x")), json!("x"));
    }

    #[test]
    fn json_patch_applies_every_operation() {
        let o = json!({"metadata": {"labels": {"a/b": "1"}}, "spec": {"list": [1, 2, 3]}});
        let ops = json!([
            {"op": "test", "path": "/metadata/labels/a~1b", "value": "1"},
            {"op": "add", "path": "/spec/list/-", "value": 4},
            {"op": "add", "path": "/spec/list/0", "value": 0},
            {"op": "remove", "path": "/spec/list/1"},
            {"op": "replace", "path": "/metadata/labels/a~1b", "value": "2"},
            {"op": "copy", "from": "/spec/list", "path": "/spec/copy"},
            {"op": "move", "from": "/spec/copy", "path": "/spec/moved"},
            {"op": "add", "path": "/metadata/labels/t~0x", "value": "y"}
        ]);
        let got = json_patch(&o, &ops).unwrap();
        assert_eq!(
            got,
            json!({"metadata": {"labels": {"a/b": "2", "t~x": "y"}}, "spec": {"list": [0, 2, 3, 4], "moved": [0, 2, 3, 4]}})
        );
    }

    #[test]
    fn json_patch_reports_failures() {
        let o = json!({"a": 1});
        assert_eq!(
            json_patch(&o, &json!([{"op": "test", "path": "/a", "value": 2}])),
            Err(PatchError::TestFailed("/a".into()))
        );
        assert!(matches!(
            json_patch(&o, &json!([{"op": "remove", "path": "/b"}])),
            Err(PatchError::Invalid(_))
        ));
        assert!(matches!(
            json_patch(&o, &json!([{"op": "replace", "path": "/b", "value": 1}])),
            Err(PatchError::Invalid(_))
        ));
        assert!(matches!(
            json_patch(&o, &json!({"op": "add"})),
            Err(PatchError::Invalid(_))
        ));
    }
}
