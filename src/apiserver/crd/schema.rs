//! Structural-schema handling of custom resources, as apiextensions-apiserver
//! does it: pruning of fields the schema does not declare, defaulting from
//! `default`, and validation with kube's error wording
//! (`spec.replicas: Invalid value: 20: spec.replicas in body should be less
//! than or equal to 10`).
//!
//! The root's `apiVersion`, `kind` and `metadata` are never pruned nor
//! validated here (the REST layer owns them); neither are those of
//! `x-kubernetes-embedded-resource` objects' `apiVersion`/`kind`/`metadata`.
//!
//! Partial: `format` checks cover `int32`, `int64`, `date-time`, `date`,
//! `email`, `uuid` and `byte`; CEL rules (`x-kubernetes-validations`),
//! `allOf`/`anyOf`/`oneOf`/`not` and list-type uniqueness are not checked.

use serde_json::{Map, Value};

use crate::apiserver::status::Cause;

/// JSON's name for a value's type, as kube-openapi prints it.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A value as Go's `%v`-ish rendering in field errors: strings quoted.
fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn invalid(errs: &mut Vec<Cause>, path: &str, value: &str, detail: String) {
    errs.push(Cause {
        reason: "FieldValueInvalid".into(),
        message: format!("Invalid value: {value}: {detail}"),
        field: path.into(),
    });
}

fn flag(schema: &Value, name: &str) -> bool {
    schema.get(name).and_then(Value::as_bool).unwrap_or(false)
}

fn keeps_metadata(schema: &Value, root: bool) -> bool {
    root || flag(schema, "x-kubernetes-embedded-resource")
}

/// Drops every field the schema does not declare; returns the dropped
/// paths (`spec.foo`) for `fieldValidation` warnings and errors.
pub fn prune(schema: &Value, obj: &mut Value) -> Vec<String> {
    let mut dropped = Vec::new();
    prune_at(schema, obj, "", true, &mut dropped);
    dropped
}

fn prune_at(schema: &Value, v: &mut Value, path: &str, root: bool, dropped: &mut Vec<String>) {
    let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
    match v {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                if keeps_metadata(schema, root) && matches!(k.as_str(), "apiVersion" | "kind") {
                    continue;
                }
                if keeps_metadata(schema, root) && k == "metadata" {
                    if !root {
                        // Embedded objects' metadata keeps ObjectMeta's fields only.
                        if let Some(m) = map.get_mut("metadata").and_then(Value::as_object_mut) {
                            m.retain(|mk, _| OBJECT_META_FIELDS.contains(&mk.as_str()));
                        }
                    }
                    continue;
                }
                let p = child(path, &k);
                if let Some(sub) = props.and_then(|p| p.get(&k)) {
                    if let Some(val) = map.get_mut(&k) {
                        prune_at(sub, val, &p, false, dropped);
                    }
                } else if let Some(sub) = additional.filter(|a| a.is_object()) {
                    if let Some(val) = map.get_mut(&k) {
                        prune_at(sub, val, &p, false, dropped);
                    }
                } else if !preserve && additional.and_then(Value::as_bool) != Some(true) {
                    map.remove(&k);
                    dropped.push(p);
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune_at(sub, item, &format!("{path}[{i}]"), false, dropped);
                }
            }
        }
        _ => {}
    }
}

const OBJECT_META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "labels",
    "annotations",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "ownerReferences",
    "finalizers",
    "managedFields",
    "selfLink",
];

/// Sets every missing field that has a `default`, top-down, so nested
/// defaults apply inside defaulted objects too. A `null` in a field that is
/// not nullable is dropped first (and so defaulted), as kube does.
pub fn apply_defaults(schema: &Value, v: &mut Value) {
    match v {
        Value::Object(map) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, sub) in props {
                    // kube drops nulls of non-nullable fields before defaulting.
                    if map.get(k).is_some_and(Value::is_null) && !flag(sub, "nullable") {
                        map.remove(k);
                    }
                    let Some(default) = sub.get("default") else {
                        continue;
                    };
                    let missing = match map.get(k) {
                        None => true,
                        Some(Value::Null) => !flag(sub, "nullable"),
                        Some(_) => false,
                    };
                    if missing {
                        map.insert(k.clone(), default.clone());
                    }
                }
                for (k, sub) in props {
                    if let Some(val) = map.get_mut(k) {
                        apply_defaults(sub, val);
                    }
                }
            }
            if let Some(sub) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for val in map.values_mut() {
                    apply_defaults(sub, val);
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                for item in items {
                    apply_defaults(sub, item);
                }
            }
        }
        _ => {}
    }
}

/// Validates a whole custom resource against its version's schema.
pub fn validate(schema: &Value, obj: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    validate_at(schema, obj, "", true, &mut errs);
    errs
}

fn validate_at(schema: &Value, v: &Value, path: &str, root: bool, errs: &mut Vec<Cause>) {
    let int_or_string = flag(schema, "x-kubernetes-int-or-string");
    let declared = schema.get("type").and_then(Value::as_str).unwrap_or("");
    let actual = type_name(v);
    if v.is_null() && (flag(schema, "nullable") || declared.is_empty() && !int_or_string) {
        return;
    }
    if int_or_string {
        if !matches!(actual, "integer" | "string") {
            invalid(
                errs,
                path,
                &show(v),
                format!("{path} in body must be of type integer,string: {actual:?}"),
            );
            return;
        }
    } else if !declared.is_empty() {
        let ok = declared == actual || (declared == "number" && actual == "integer");
        if !ok {
            invalid(
                errs,
                path,
                &format!("{actual:?}"),
                format!("{path} in body must be of type {declared}: {actual:?}"),
            );
            return;
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        if !options.contains(v) {
            let list: Vec<String> = options.iter().map(show).collect();
            errs.push(Cause {
                reason: "FieldValueNotSupported".into(),
                message: format!(
                    "Unsupported value: {}: supported values: {}",
                    show(v),
                    list.join(", ")
                ),
                field: path.into(),
            });
        }
    }
    match v {
        Value::Number(n) => check_number(schema, n, path, errs),
        Value::String(s) => check_string(schema, s, path, errs),
        Value::Array(items) => {
            let len = items.len() as u64;
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64) {
                if len > max {
                    errs.push(Cause {
                        reason: "FieldValueTooMany".into(),
                        message: format!("Too many: {len}: must have at most {max} items"),
                        field: path.into(),
                    });
                }
            }
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64) {
                if len < min {
                    invalid(
                        errs,
                        path,
                        &format!("{len}"),
                        format!("{path} in body should have at least {min} items"),
                    );
                }
            }
            if let Some(sub) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    validate_at(sub, item, &format!("{path}[{i}]"), false, errs);
                }
            }
        }
        Value::Object(map) => check_object(schema, map, path, root, errs),
        _ => {}
    }
}

fn check_object(
    schema: &Value,
    map: &Map<String, Value>,
    path: &str,
    root: bool,
    errs: &mut Vec<Cause>,
) {
    let skip =
        |k: &str| keeps_metadata(schema, root) && matches!(k, "apiVersion" | "kind" | "metadata");
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for r in required.iter().filter_map(Value::as_str) {
            if !map.contains_key(r) && !skip(r) {
                errs.push(Cause {
                    reason: "FieldValueRequired".into(),
                    message: "Required value".into(),
                    field: child(path, r),
                });
            }
        }
    }
    if !root && flag(schema, "x-kubernetes-embedded-resource") {
        for k in ["apiVersion", "kind"] {
            if map.get(k).and_then(Value::as_str).is_none_or(str::is_empty) {
                errs.push(Cause {
                    reason: "FieldValueRequired".into(),
                    message: "Required value: must not be empty".into(),
                    field: child(path, k),
                });
            }
        }
    }
    let n = map.len() as u64;
    if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64) {
        if n > max {
            errs.push(Cause {
                reason: "FieldValueTooMany".into(),
                message: format!("Too many: {n}: must have at most {max} items"),
                field: path.into(),
            });
        }
    }
    if let Some(min) = schema.get("minProperties").and_then(Value::as_u64) {
        if n < min {
            invalid(
                errs,
                path,
                &format!("{n}"),
                format!("{path} in body should have at least {min} properties"),
            );
        }
    }
    let props = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties").filter(|a| a.is_object());
    for (k, val) in map {
        if skip(k) {
            continue;
        }
        let p = child(path, k);
        if let Some(sub) = props.and_then(|p| p.get(k)) {
            validate_at(sub, val, &p, false, errs);
        } else if let Some(sub) = additional {
            validate_at(sub, val, &p, false, errs);
        }
    }
}

fn check_number(schema: &Value, n: &serde_json::Number, path: &str, errs: &mut Vec<Cause>) {
    let Some(x) = n.as_f64() else { return };
    let shown = n.to_string();
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
        let exclusive = flag(schema, "exclusiveMaximum");
        if x > max || (exclusive && x == max) {
            let word = if exclusive {
                "less than"
            } else {
                "less than or equal to"
            };
            invalid(
                errs,
                path,
                &shown,
                format!("{path} in body should be {word} {}", schema["maximum"]),
            );
        }
    }
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
        let exclusive = flag(schema, "exclusiveMinimum");
        if x < min || (exclusive && x == min) {
            let word = if exclusive {
                "greater than"
            } else {
                "greater than or equal to"
            };
            invalid(
                errs,
                path,
                &shown,
                format!("{path} in body should be {word} {}", schema["minimum"]),
            );
        }
    }
    if let Some(m) = schema.get("multipleOf").and_then(Value::as_f64) {
        if m > 0.0 && (x / m).fract() != 0.0 {
            invalid(
                errs,
                path,
                &shown,
                format!(
                    "{path} in body should be a multiple of {}",
                    schema["multipleOf"]
                ),
            );
        }
    }
    let format = schema.get("format").and_then(Value::as_str).unwrap_or("");
    let out_of_range = match format {
        "int32" => n.as_i64().is_none_or(|i| i32::try_from(i).is_err()),
        "int64" => n.as_i64().is_none() && (n.is_u64() || n.is_i64()),
        _ => false,
    };
    if out_of_range {
        invalid(
            errs,
            path,
            &shown,
            format!("{path} in body must be of type {format}: {shown:?}"),
        );
    }
}

fn check_string(schema: &Value, s: &str, path: &str, errs: &mut Vec<Cause>) {
    let chars = s.chars().count() as u64;
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
        if chars > max {
            errs.push(Cause {
                reason: "FieldValueTooLong".into(),
                message: format!("Too long: may not be more than {max} bytes"),
                field: path.into(),
            });
        }
    }
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
        if chars < min {
            invalid(
                errs,
                path,
                &format!("{s:?}"),
                format!("{path} in body should be at least {min} chars long"),
            );
        }
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        // An uncompilable pattern is refused when the CRD is written.
        if regex::Regex::new(pattern).is_ok_and(|re| !re.is_match(s)) {
            invalid(
                errs,
                path,
                &format!("{s:?}"),
                format!("{path} in body should match '{pattern}'"),
            );
        }
    }
    let format = schema.get("format").and_then(Value::as_str).unwrap_or("");
    if !format_ok(format, s) {
        invalid(
            errs,
            path,
            &format!("{s:?}"),
            format!("{path} in body must be of type {format}: {s:?}"),
        );
    }
}

fn format_ok(format: &str, s: &str) -> bool {
    use base64::Engine;
    match format {
        "date-time" => chrono::DateTime::parse_from_rfc3339(s).is_ok(),
        "date" => chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok(),
        "email" => s
            .split_once('@')
            .is_some_and(|(a, b)| !a.is_empty() && b.contains('.')),
        "uuid" => uuid::Uuid::parse_str(s).is_ok(),
        "byte" => base64::engine::general_purpose::STANDARD.decode(s).is_ok(),
        _ => true,
    }
}

/// Why a schema is not structural, as `(path, message)` pairs under
/// `base` (e.g. `spec.versions[0].schema.openAPIV3Schema`).
pub fn structural_errors(schema: &Value, base: &str) -> Vec<Cause> {
    let mut errs = Vec::new();
    structural_at(schema, base, true, &mut errs);
    errs
}

fn structural_at(schema: &Value, path: &str, root: bool, errs: &mut Vec<Cause>) {
    let has_type = schema
        .get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| !t.is_empty());
    let exempt = flag(schema, "x-kubernetes-int-or-string")
        || flag(schema, "x-kubernetes-preserve-unknown-fields");
    if !has_type && !exempt {
        let message = if root {
            "Required value: must not be empty at the root"
        } else {
            "Required value: must not be empty for specified object fields"
        };
        errs.push(Cause {
            reason: "FieldValueRequired".into(),
            message: message.into(),
            field: format!("{path}.type"),
        });
    }
    if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
        if let Err(e) = regex::Regex::new(p) {
            errs.push(Cause {
                reason: "FieldValueInvalid".into(),
                message: format!(
                    "Invalid value: {p:?}: must be a valid regular expression, but isn't: {e}"
                ),
                field: format!("{path}.pattern"),
            });
        }
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (k, sub) in props {
            structural_at(sub, &format!("{path}.properties[{k}]"), false, errs);
        }
    }
    if let Some(items) = schema.get("items").filter(|i| i.is_object()) {
        structural_at(items, &format!("{path}.items"), false, errs);
    }
    if let Some(a) = schema.get("additionalProperties").filter(|a| a.is_object()) {
        structural_at(a, &format!("{path}.additionalProperties"), false, errs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn crontab_schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["cronSpec"], "properties": {
                "cronSpec": {"type": "string", "pattern": "^(\\d+|\\*)(/\\d+)?(\\s+(\\d+|\\*)(/\\d+)?){4}$"},
                "image": {"type": "string", "maxLength": 10},
                "replicas": {"type": "integer", "minimum": 1, "maximum": 10, "default": 1},
                "mode": {"type": "string", "enum": ["a", "b"]},
                "port": {"x-kubernetes-int-or-string": true},
                "tags": {"type": "array", "maxItems": 2, "items": {"type": "string"}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "opt": {"type": "string", "nullable": true},
                "nested": {"type": "object", "default": {}, "properties": {
                    "level": {"type": "string", "default": "info"}}},
                "template": {"type": "object", "x-kubernetes-embedded-resource": true,
                             "properties": {"spec": {"type": "object"}}}
            }},
            "status": {"type": "object", "properties": {"replicas": {"type": "integer"}}}
        }})
    }

    fn messages(errs: &[Cause]) -> Vec<String> {
        errs.iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn validation_names_fields_as_kube_does() {
        let s = crontab_schema();
        let obj = json!({"apiVersion": "stable.example.com/v1", "kind": "CronTab", "metadata": {"name": "x"},
            "spec": {"cronSpec": "* * * * */5", "replicas": 20}});
        assert_eq!(
            messages(&validate(&s, &obj)),
            ["spec.replicas: Invalid value: 20: spec.replicas in body should be less than or equal to 10"]
        );
        let obj = json!({"spec": {"cronSpec": "bad", "replicas": "two", "mode": "c",
            "image": "a-very-long-image", "tags": ["a", "b", "c"], "port": true}});
        assert_eq!(
            messages(&validate(&s, &obj)),
            [
                "spec.cronSpec: Invalid value: \"bad\": spec.cronSpec in body should match '^(\\d+|\\*)(/\\d+)?(\\s+(\\d+|\\*)(/\\d+)?){4}$'",
                "spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\"",
                "spec.mode: Unsupported value: \"c\": supported values: \"a\", \"b\"",
                "spec.image: Too long: may not be more than 10 bytes",
                "spec.tags: Too many: 3: must have at most 2 items",
                "spec.port: Invalid value: true: spec.port in body must be of type integer,string: \"boolean\"",
            ]
        );
        let obj = json!({"spec": {"port": "http", "opt": null, "labels": {"a": 1},
                                  "template": {"kind": "Pod"}}});
        assert_eq!(
            messages(&validate(&s, &obj)),
            [
                "spec.cronSpec: Required value",
                "spec.labels.a: Invalid value: \"integer\": spec.labels.a in body must be of type string: \"integer\"",
                "spec.template.apiVersion: Required value: must not be empty",
            ]
        );
    }

    #[test]
    fn pruning_drops_undeclared_fields_only() {
        let s = crontab_schema();
        let mut obj = json!({"apiVersion": "v", "kind": "K", "metadata": {"name": "x", "labels": {"a": "b"}},
            "extra": 1,
            "spec": {"cronSpec": "x", "foo": {"bar": 1}, "free": {"any": {"thing": 1}},
                     "labels": {"k": "v"},
                     "template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "junk": 1},
                                  "spec": {"x": 1}, "other": 2}}});
        let dropped = prune(&s, &mut obj);
        // An object schema without properties keeps nothing, as in kube.
        assert_eq!(
            dropped,
            [
                "extra",
                "spec.foo",
                "spec.template.spec.x",
                "spec.template.other"
            ]
        );
        assert_eq!(obj["metadata"]["labels"]["a"], "b");
        assert_eq!(obj["spec"]["free"]["any"]["thing"], 1);
        assert_eq!(obj["spec"]["labels"]["k"], "v");
        assert_eq!(obj["spec"]["template"]["kind"], "Pod");
        assert!(obj["spec"]["template"]["metadata"].get("junk").is_none());
    }

    #[test]
    fn defaults_apply_top_down() {
        let s = crontab_schema();
        let mut obj = json!({"spec": {"cronSpec": "x"}});
        apply_defaults(&s, &mut obj);
        assert_eq!(obj["spec"]["replicas"], 1);
        assert_eq!(obj["spec"]["nested"]["level"], "info");
        let mut obj = json!({"spec": {"replicas": null, "image": null, "opt": null}});
        apply_defaults(&s, &mut obj);
        assert_eq!(obj["spec"]["replicas"], 1);
        assert!(obj["spec"].get("image").is_none());
        assert!(obj["spec"]["opt"].is_null() && obj["spec"].get("opt").is_some());
        let mut obj = json!({"spec": {"replicas": 3, "nested": {"level": "debug"}}});
        apply_defaults(&s, &mut obj);
        assert_eq!(obj["spec"]["replicas"], 3);
        assert_eq!(obj["spec"]["nested"]["level"], "debug");
    }

    #[test]
    fn structural_schemas_need_types() {
        let s = json!({"type": "object", "properties": {"spec": {"properties": {"a": {"type": "string"}}},
                       "free": {"x-kubernetes-preserve-unknown-fields": true}}});
        assert_eq!(
            messages(&structural_errors(&s, "spec.versions[0].schema.openAPIV3Schema")),
            ["spec.versions[0].schema.openAPIV3Schema.properties[spec].type: Required value: must not be empty for specified object fields"]
        );
        assert!(structural_errors(&crontab_schema(), "x").is_empty());
    }
}
