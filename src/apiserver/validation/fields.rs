//! `fieldValidation`: finds the fields of an object that its kind's schema
//! does not declare (as kube's strict JSON decoding does), drops them, and
//! fails, warns or stays silent as the request asks.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::{Map, Value};

use crate::apiserver::admission::{Admission, AdmissionRequest, FieldValidation};
use crate::apiserver::status::ApiStatus;

/// The schema-pruning plug-in; put it first in the chain.
pub struct UnknownFields;

struct Schemas {
    defs: Map<String, Value>,
    /// (group, version, kind) → schema name.
    roots: HashMap<(String, String, String), String>,
}

fn schemas() -> &'static Schemas {
    static S: OnceLock<Schemas> = OnceLock::new();
    S.get_or_init(|| {
        let (defs, roots) = crate::apiserver::openapi::all_builtin_schemas();
        let roots = roots
            .into_iter()
            .map(|(k, name)| {
                (
                    (
                        k.group.to_string(),
                        k.version.to_string(),
                        k.kind.to_string(),
                    ),
                    name,
                )
            })
            .collect();
        Schemas { defs, roots }
    })
}

impl Admission for UnknownFields {
    fn name(&self) -> &'static str {
        "fieldvalidation"
    }

    fn admit(
        &self,
        req: &AdmissionRequest<'_>,
        obj: &mut Value,
        warnings: &mut Vec<String>,
    ) -> Result<(), ApiStatus> {
        if req.subresource.is_some_and(|s| s != "status") {
            return Ok(());
        }
        let unknown = prune(&req.def.group, &req.def.version, &req.def.kind, obj);
        if unknown.is_empty() {
            return Ok(());
        }
        let texts: Vec<String> = unknown
            .iter()
            .map(|p| format!("unknown field \"{p}\""))
            .collect();
        match req.field_validation {
            FieldValidation::Strict => Err(ApiStatus::bad_request(format!(
                "{kind} in version \"{v}\" cannot be handled as a {kind}: strict decoding error: {}",
                texts.join(", "),
                kind = req.def.kind,
                v = req.def.version,
            ))),
            FieldValidation::Warn => {
                warnings.extend(texts);
                Ok(())
            }
            FieldValidation::Ignore => Ok(()),
        }
    }
}

/// Removes the fields of `obj` its built-in kind does not declare and
/// returns their paths (`spec.template.spec.containers[0].foo`), in
/// document order. Kinds without a built-in schema are left alone.
pub fn prune(group: &str, version: &str, kind: &str, obj: &mut Value) -> Vec<String> {
    let s = schemas();
    let key = (group.to_string(), version.to_string(), kind.to_string());
    let Some(root) = s.roots.get(&key) else {
        return Vec::new();
    };
    let Some(schema) = s.defs.get(root) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    walk(&s.defs, schema, obj, "", &mut out);
    out
}

/// Follows `$ref` and single-element `allOf` wrappers to the real schema.
fn resolve<'a>(defs: &'a Map<String, Value>, mut schema: &'a Value) -> &'a Value {
    for _ in 0..16 {
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            let name = r.rsplit('/').next().unwrap_or(r);
            match defs.get(name) {
                Some(s) => {
                    schema = s;
                    continue;
                }
                None => return schema,
            }
        }
        match schema.get("allOf").and_then(Value::as_array) {
            Some(list) if list.len() == 1 => schema = &list[0],
            _ => return schema,
        }
    }
    schema
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn walk(
    defs: &Map<String, Value>,
    schema: &Value,
    v: &mut Value,
    path: &str,
    out: &mut Vec<String>,
) {
    let schema = resolve(defs, schema);
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return;
    }
    match v {
        Value::Object(m) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                let unknown: Vec<String> = m
                    .keys()
                    .filter(|k| !props.contains_key(*k))
                    .cloned()
                    .collect();
                for k in unknown {
                    m.shift_remove(&k);
                    out.push(join(path, &k));
                }
                for (k, child) in m.iter_mut() {
                    if let Some(ps) = props.get(k) {
                        walk(defs, ps, child, &join(path, k), out);
                    }
                }
            } else if let Some(ap) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for (k, child) in m.iter_mut() {
                    walk(defs, ap, child, &join(path, k), out);
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = schema.get("items") {
                for (i, child) in items.iter_mut().enumerate() {
                    walk(defs, is, child, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}
