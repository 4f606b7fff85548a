//! Turns a parsed message tree into the JSON Kubernetes' Go types would serialize.
//!
//! Rules, in Go's terms:
//! - unset optional fields, empty lists and empty maps are left out;
//! - scalar fields at their zero value are left out unless `tables::KEEP_ZERO` lists them
//!   (pointer and non-`omitempty` fields); messages are kept even when empty (`"status": {}`),
//!   as Go writes non-pointer structs;
//! - `Time` → RFC 3339 in seconds, `MicroTime` → RFC 3339 with microseconds, both `null` when zero;
//!   `Duration` → Go's duration string; `IntOrString` → number or string; `Quantity` → its string;
//!   `RawExtension`, `FieldsV1` and apiextensions `JSON` → the embedded JSON; other `bytes` → base64;
//! - embedded Go structs (`tables::INLINE_FIELDS`) are flattened into their parent.

use base64::Engine as _;
use serde_json::{Map, Number, Value};

use super::debug_tree::Node;
use super::tables;

/// A field whose value cannot be represented, with its JSON path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FieldError {
    pub(super) path: String,
    pub(super) reason: String,
}

type Result<T> = std::result::Result<T, FieldError>;

fn fail<T>(path: &str, reason: impl Into<String>) -> Result<T> {
    Err(FieldError {
        path: path.to_string(),
        reason: reason.into(),
    })
}

/// Converts a top-level message; `path` names it in errors.
pub(super) fn to_json(node: &Node, path: &str) -> Result<Value> {
    element(node, false, path)
}

fn element(node: &Node, bytes: bool, path: &str) -> Result<Value> {
    match node {
        Node::Struct { name, fields } => message(name, fields, path),
        Node::Ints(ints) if bytes => Ok(Value::String(
            base64::engine::general_purpose::STANDARD.encode(to_bytes(ints, path)?),
        )),
        Node::List(items) if bytes && items.is_empty() => Ok(Value::String(String::new())),
        Node::Ints(ints) => Ok(Value::Array(
            ints.iter().map(|int| Value::from(*int)).collect(),
        )),
        Node::List(items) => items
            .iter()
            .map(|item| element(item, false, path))
            .collect::<Result<_>>()
            .map(Value::Array),
        Node::Map(entries) => map(entries, bytes, path).map(Value::Object),
        Node::Some(inner) => element(inner, bytes, path),
        Node::None => Ok(Value::Null),
        Node::Str(text) => Ok(Value::String(text.clone())),
        Node::Num(text) => number(text, path),
        Node::Bool(flag) => Ok(Value::Bool(*flag)),
    }
}

fn map(entries: &[(Node, Node)], bytes: bool, path: &str) -> Result<Map<String, Value>> {
    let mut object = Map::new();
    for (key, value) in entries {
        let key = match key {
            Node::Str(text) => text.clone(),
            _ => return fail(path, "map key is not a string"),
        };
        let value = element(value, bytes, &format!("{path}[{key}]"))?;
        object.insert(key, value);
    }
    Ok(object)
}

fn message(name: &str, fields: &[(String, Node)], path: &str) -> Result<Value> {
    let ty = name.to_ascii_lowercase();
    let field = |wanted: &str| {
        fields
            .iter()
            .find(|(name, _)| name == wanted)
            .map(|(_, node)| node)
    };
    match ty.as_str() {
        "time" => return time(field("seconds"), field("nanos"), false, path),
        "microtime" => return time(field("seconds"), field("nanos"), true, path),
        "duration" => {
            return Ok(Value::String(go_duration(int_field(
                field("duration"),
                path,
            )?)))
        }
        "quantity" => return Ok(Value::String(string_field(field("string")))),
        "intorstring" => {
            return if int_field(field("type"), path)? == 1 {
                Ok(Value::String(string_field(field("str_val"))))
            } else {
                Ok(Value::from(int_field(field("int_val"), path)?))
            };
        }
        "rawextension" | "fieldsv1" | "json" => return embedded_json(field("raw"), path),
        "jsonschemapropsorarray" => {
            return match field("j_son_schemas") {
                Some(list @ Node::List(items)) if !items.is_empty() => element(list, false, path),
                _ => element(field("schema").unwrap_or(&Node::None), false, path),
            };
        }
        "jsonschemapropsorbool" => {
            // Go writes the schema when there is one, and the bare `allows` flag otherwise.
            return match field("schema") {
                Some(schema @ Node::Some(_)) => element(schema, false, path),
                _ => Ok(Value::Bool(matches!(
                    unwrap_some(field("allows")),
                    Some(Node::Bool(true))
                ))),
            };
        }
        "jsonschemapropsorstringarray" => {
            return match field("property") {
                Some(list @ Node::List(items)) if !items.is_empty() => element(list, false, path),
                _ => element(field("schema").unwrap_or(&Node::None), false, path),
            };
        }
        _ => {}
    }

    let mut object = Map::new();
    for (field, node) in fields {
        let json_name = json_name(&ty, field);
        let child_path = format!("{path}.{json_name}");
        let Some(value) = field_value(&ty, field, &json_name, node, &child_path)? else {
            continue;
        };
        if tables::INLINE_FIELDS.contains(&(ty.as_str(), field.as_str())) {
            if let Value::Object(inner) = value {
                object.extend(inner);
            }
            continue;
        }
        object.insert(json_name, value);
    }
    Ok(Value::Object(object))
}

/// A field's JSON value, or `None` when Go would leave the field out.
fn field_value(
    ty: &str,
    field: &str,
    json_name: &str,
    node: &Node,
    path: &str,
) -> Result<Option<Value>> {
    let bytes = tables::BYTES_FIELDS.contains(&(ty, field));
    let inner = match node {
        Node::Some(inner) => inner.as_ref(),
        other => other,
    };
    match inner {
        Node::None => Ok(None),
        Node::List(items) if items.is_empty() && !bytes => Ok(None),
        Node::Map(entries) if entries.is_empty() => Ok(None),
        scalar if is_scalar(scalar) => {
            let value = element(scalar, false, path)?;
            if is_zero(&value) && !keeps_zero(ty, json_name) {
                return Ok(None);
            }
            Ok(Some(value))
        }
        other => element(other, bytes, path).map(Some),
    }
}

fn is_scalar(node: &Node) -> bool {
    matches!(node, Node::Str(_) | Node::Num(_) | Node::Bool(_))
}

fn is_zero(value: &Value) -> bool {
    match value {
        Value::String(text) => text.is_empty(),
        Value::Bool(flag) => !flag,
        Value::Number(number) => number.as_f64() == Some(0.0),
        _ => false,
    }
}

fn keeps_zero(ty: &str, json_name: &str) -> bool {
    tables::KEEP_ZERO
        .binary_search_by(|(name, _)| (*name).cmp(ty))
        .is_ok_and(|at| tables::KEEP_ZERO[at].1.contains(&json_name))
}

fn json_name(ty: &str, field: &str) -> String {
    if let Some((_, _, name)) = tables::TYPE_JSON_NAMES
        .iter()
        .find(|(t, f, _)| *t == ty && *f == field)
    {
        return (*name).to_string();
    }
    if let Some((_, name)) = tables::JSON_NAMES.iter().find(|(f, _)| *f == field) {
        return (*name).to_string();
    }
    let mut out = String::with_capacity(field.len());
    let mut upper = false;
    for c in field.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn number(text: &str, path: &str) -> Result<Value> {
    if let Ok(int) = text.parse::<i64>() {
        return Ok(Value::from(int));
    }
    if let Ok(uint) = text.parse::<u64>() {
        return Ok(Value::from(uint));
    }
    let Ok(float) = text.parse::<f64>() else {
        return fail(path, format!("`{text}` is not a number"));
    };
    // Go writes integral floats without a fraction (`1`, not `1.0`).
    if float.fract() == 0.0 && float.abs() < 9.0e15 {
        return Ok(Value::from(float as i64));
    }
    Number::from_f64(float)
        .map(Value::Number)
        .map_or_else(|| fail(path, format!("{text} has no JSON form")), Ok)
}

fn unwrap_some(node: Option<&Node>) -> Option<&Node> {
    match node {
        Some(Node::Some(inner)) => Some(inner),
        Some(Node::None) | None => None,
        Some(other) => Some(other),
    }
}

fn int_field(node: Option<&Node>, path: &str) -> Result<i64> {
    match unwrap_some(node) {
        None => Ok(0),
        Some(Node::Num(text)) => text
            .parse()
            .map_or_else(|_| fail(path, format!("`{text}` is not an integer")), Ok),
        Some(_) => fail(path, "expected an integer"),
    }
}

fn string_field(node: Option<&Node>) -> String {
    match unwrap_some(node) {
        Some(Node::Str(text)) => text.clone(),
        _ => String::new(),
    }
}

fn to_bytes(ints: &[i64], path: &str) -> Result<Vec<u8>> {
    ints.iter()
        .map(|int| u8::try_from(*int).map_or_else(|_| fail(path, "byte out of range"), Ok))
        .collect()
}

fn embedded_json(raw: Option<&Node>, path: &str) -> Result<Value> {
    let bytes = match unwrap_some(raw) {
        Some(Node::Ints(ints)) => to_bytes(ints, path)?,
        _ => return Ok(Value::Null),
    };
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&bytes).map_or_else(
        |err| fail(path, format!("embedded object is not JSON: {err}")),
        Ok,
    )
}

/// `metav1.Time` keeps whole seconds (its protobuf decoder drops nanos); `MicroTime` keeps
/// microseconds. A message with neither field set is Go's zero time, which marshals as `null`.
fn time(seconds: Option<&Node>, nanos: Option<&Node>, micro: bool, path: &str) -> Result<Value> {
    if unwrap_some(seconds).is_none() && unwrap_some(nanos).is_none() {
        return Ok(Value::Null);
    }
    let secs = int_field(seconds, path)?;
    let nanos = if micro { int_field(nanos, path)? } else { 0 };
    let Some(at) = u32::try_from(nanos)
        .ok()
        .and_then(|nanos| chrono::DateTime::from_timestamp(secs, nanos))
    else {
        return fail(path, format!("time {secs}s {nanos}ns is out of range"));
    };
    let format = if micro {
        "%Y-%m-%dT%H:%M:%S%.6fZ"
    } else {
        "%Y-%m-%dT%H:%M:%SZ"
    };
    Ok(Value::String(at.format(format).to_string()))
}

/// Go's `time.Duration.String()`: `1h2m3.5s`, `1.5ms`, `0s`.
pub(super) fn go_duration(nanos: i64) -> String {
    let sign = if nanos < 0 { "-" } else { "" };
    let u = nanos.unsigned_abs();
    if u == 0 {
        return "0s".into();
    }
    if u < 1_000_000_000 {
        let (unit, prec) = match u {
            0..1_000 => ("ns", 0),
            1_000..1_000_000 => ("µs", 3),
            _ => ("ms", 6),
        };
        let (whole, frac) = split_fraction(u, prec);
        return format!("{sign}{whole}{frac}{unit}");
    }
    let (secs, frac) = split_fraction(u, 9);
    let (minutes, secs) = (secs / 60, secs % 60);
    let (hours, minutes) = (minutes / 60, minutes % 60);
    match (hours, minutes) {
        (0, 0) => format!("{sign}{secs}{frac}s"),
        (0, _) => format!("{sign}{minutes}m{secs}{frac}s"),
        _ => format!("{sign}{hours}h{minutes}m{secs}{frac}s"),
    }
}

/// Splits `value` into `value / 10^prec` and `.digits` without trailing zeros ("" when none).
fn split_fraction(value: u64, prec: u32) -> (u64, String) {
    let scale = 10u64.pow(prec);
    let digits = value % scale;
    if prec == 0 || digits == 0 {
        return (value / scale, String::new());
    }
    let text = format!(".{digits:0width$}", width = prec as usize);
    (value / scale, text.trim_end_matches('0').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_duration_matches_go() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(5), "5ns");
        assert_eq!(go_duration(1_500), "1.5µs");
        assert_eq!(go_duration(2_000_000), "2ms");
        assert_eq!(go_duration(1_000_000_000), "1s");
        assert_eq!(go_duration(90_500_000_000), "1m30.5s");
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(go_duration(-300_000_000_000), "-5m0s");
    }

    #[test]
    fn json_names_follow_go_tags() {
        assert_eq!(json_name("podstatus", "pod_ips"), "podIPs");
        assert_eq!(json_name("servicespec", "cluster_ip"), "clusterIP");
        assert_eq!(json_name("objectmeta", "generate_name"), "generateName");
        assert_eq!(json_name("jsonschemaprops", "ref"), "$ref");
        assert_eq!(
            json_name("customresourcedefinitionversion", "schema"),
            "schema"
        );
    }

    #[test]
    fn keep_zero_table_is_sorted_for_binary_search() {
        assert!(tables::KEEP_ZERO
            .windows(2)
            .all(|pair| pair[0].0 < pair[1].0));
        assert!(keeps_zero("deploymentspec", "replicas"));
        assert!(!keeps_zero("deploymentspec", "minReadySeconds"));
    }
}
