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
        if req
            .subresource
            .is_some_and(|s| s != "status" && s != "ephemeralcontainers")
        {
            return Ok(());
        }
        let (unknown, type_error) = check(&req.def.group, &req.def.version, &req.def.kind, obj);
        if let Some(e) = type_error {
            return Err(ApiStatus::bad_request(format!(
                "{kind} in version \"{v}\" cannot be handled as a {kind}: {e}",
                kind = req.def.kind,
                v = req.def.version,
            )));
        }
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
#[cfg(test)]
pub fn prune(group: &str, version: &str, kind: &str, obj: &mut Value) -> Vec<String> {
    check(group, version, kind, obj).0
}

/// [`prune`], plus the first value of the wrong type (a decoding error
/// whatever `fieldValidation` says).
pub fn check(
    group: &str,
    version: &str,
    kind: &str,
    obj: &mut Value,
) -> (Vec<String>, Option<String>) {
    let s = schemas();
    let key = (group.to_string(), version.to_string(), kind.to_string());
    let Some(root) = s.roots.get(&key) else {
        return (Vec::new(), None);
    };
    let Some(schema) = s.defs.get(root) else {
        return (Vec::new(), None);
    };
    let mut w = Walker {
        defs: &s.defs,
        unknown: Vec::new(),
        type_error: None,
    };
    let short = root.rsplit('.').next().unwrap_or(root);
    w.walk(schema, obj, "", short);
    (w.unknown, w.type_error)
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

/// The Go type a schema names: `v1.PodSpec` for a `$ref`, else from `type`.
fn go_type(defs: &Map<String, Value>, schema: &Value) -> String {
    if let Some(name) = ref_name(schema) {
        let mut parts = name.rsplit('.');
        let ty = parts.next().unwrap_or(name);
        return match parts.next() {
            Some(pkg) => format!("{pkg}.{ty}"),
            None => ty.to_string(),
        };
    }
    let s = resolve(defs, schema);
    match s.get("type").and_then(Value::as_str) {
        Some("integer") => s
            .get("format")
            .and_then(Value::as_str)
            .unwrap_or("int64")
            .to_string(),
        Some("number") => "float64".into(),
        Some("string") => "string".into(),
        Some("boolean") => "bool".into(),
        Some("array") => format!(
            "[]{}",
            s.get("items")
                .map_or("interface {}".into(), |i| go_type(defs, i))
        ),
        Some("object") => match s.get("additionalProperties").filter(|a| a.is_object()) {
            Some(ap) => format!("map[string]{}", go_type(defs, ap)),
            None => "map[string]interface {}".into(),
        },
        _ => "interface {}".into(),
    }
}

/// The schema name a (possibly `allOf`-wrapped) `$ref` points at.
fn ref_name(schema: &Value) -> Option<&str> {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        return Some(r.rsplit('/').next().unwrap_or(r));
    }
    match schema.get("allOf").and_then(Value::as_array) {
        Some(list) if list.len() == 1 => ref_name(&list[0]),
        _ => None,
    }
}

/// How Go's JSON decoder names a value it could not store.
fn json_kind(v: &Value) -> String {
    match v {
        Value::String(_) => "string".into(),
        Value::Bool(_) => "bool".into(),
        Value::Array(_) => "array".into(),
        Value::Object(_) => "object".into(),
        Value::Number(n) if n.is_f64() => format!("number {n}"),
        _ => "number".into(),
    }
}

fn type_matches(ty: &str, v: &Value) -> bool {
    match ty {
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => true,
    }
}

/// One pass over an object: unknown fields found (and removed), and the
/// first value of the wrong JSON type, worded as Go's decoder words it.
pub(super) struct Walker<'a> {
    defs: &'a Map<String, Value>,
    pub(super) unknown: Vec<String>,
    pub(super) type_error: Option<String>,
}

impl<'a> Walker<'a> {
    fn walk(&mut self, schema: &Value, v: &mut Value, path: &str, parent: &str) {
        let resolved = resolve(self.defs, schema);
        if resolved.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
            return;
        }
        // Types Go decodes from several JSON shapes (apiextensions' JSON and
        // its "Or" unions, int-or-string, quantities): any shape is fine.
        if ref_name(schema)
            .map(|n| n.rsplit('.').next().unwrap_or(n))
            .is_some_and(|n| {
                matches!(
                    n,
                    "JSON" | "JSONSchemaPropsOrArray" | "JSONSchemaPropsOrBool"
                        | "JSONSchemaPropsOrStringArray" | "IntOrString" | "Quantity"
                )
            })
        {
            return;
        }
        if let Some(ty) = resolved.get("type").and_then(Value::as_str) {
            if !v.is_null() && !type_matches(ty, v) {
                if self.type_error.is_none() {
                    let field: String = path
                        .split('[')
                        .map(|p| p.split_once(']').map_or(p, |(_, rest)| rest))
                        .collect();
                    self.type_error = Some(format!(
                        "json: cannot unmarshal {} into Go struct field {parent}.{field} of type {}",
                        json_kind(v),
                        go_type(self.defs, schema)
                    ));
                }
                return;
            }
        }
        let own = ref_name(schema)
            .map(|n| n.rsplit('.').next().unwrap_or(n))
            .unwrap_or(parent)
            .to_string();
        match v {
            Value::Object(m) => {
                if let Some(props) = resolved.get("properties").and_then(Value::as_object) {
                    let unknown: Vec<String> = m
                        .keys()
                        .filter(|k| !props.contains_key(*k))
                        .cloned()
                        .collect();
                    for k in unknown {
                        m.shift_remove(&k);
                        self.unknown.push(join(path, &k));
                    }
                    for (k, child) in m.iter_mut() {
                        if let Some(ps) = props.get(k) {
                            self.walk(ps, child, &join(path, k), &own);
                        }
                    }
                } else if let Some(ap) = resolved
                    .get("additionalProperties")
                    .filter(|a| a.is_object())
                {
                    for (k, child) in m.iter_mut() {
                        self.walk(ap, child, &join(path, k), &own);
                    }
                }
            }
            Value::Array(items) => {
                if let Some(is) = resolved.get("items") {
                    for (i, child) in items.iter_mut().enumerate() {
                        self.walk(is, child, &format!("{path}[{i}]"), &own);
                    }
                }
            }
            _ => {}
        }
    }
}
