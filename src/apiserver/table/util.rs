//! Small readers over JSON objects and the formatting helpers the printers
//! share (durations, label maps, label selectors, container lists).

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

/// The string at a JSON pointer, or "" when absent or not a string.
pub(super) fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

/// Whether a JSON pointer names a present, non-null value (Go's non-nil).
pub(super) fn present(v: &Value, ptr: &str) -> bool {
    v.pointer(ptr).is_some_and(|x| !x.is_null())
}

/// The integer at a JSON pointer, or 0.
pub(super) fn i(v: &Value, ptr: &str) -> i64 {
    v.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

/// The optional integer at a JSON pointer.
pub(super) fn oi(v: &Value, ptr: &str) -> Option<i64> {
    v.pointer(ptr).and_then(Value::as_i64)
}

/// The optional boolean at a JSON pointer.
pub(super) fn ob(v: &Value, ptr: &str) -> Option<bool> {
    v.pointer(ptr).and_then(Value::as_bool)
}

/// The array at a JSON pointer, or an empty slice.
pub(super) fn arr<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The number of entries of the object (map) at a JSON pointer.
pub(super) fn map_len(v: &Value, ptr: &str) -> usize {
    v.pointer(ptr)
        .and_then(Value::as_object)
        .map_or(0, |m| m.len())
}

/// A timestamp at a JSON pointer; `None` stands for Go's zero time.
pub(super) fn time(v: &Value, ptr: &str) -> Option<DateTime<Utc>> {
    parse_time(s(v, ptr))
}

pub(super) fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// apimachinery's `duration.HumanDuration`: about two significant figures.
pub fn human_duration(d: chrono::Duration) -> String {
    // Go truncates float seconds toward zero; so does integer division.
    let seconds = d.num_milliseconds() / 1000;
    if seconds < -1 {
        return "<invalid>".to_string();
    } else if seconds < 0 {
        return "0s".to_string();
    } else if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    } else if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    } else if hours < 48 {
        return format!("{hours}h");
    } else if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{}h", hours / 24, h)
        };
    } else if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    } else if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{}d", hours / 24 / 365, dy)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// `translateTimestampSince`: "<unknown>" for a zero (absent) time.
pub(super) fn since(now: DateTime<Utc>, t: Option<DateTime<Utc>>) -> String {
    match t {
        Some(t) => human_duration(now - t),
        None => "<unknown>".to_string(),
    }
}

/// The AGE cell of any object.
pub(super) fn age(now: DateTime<Utc>, obj: &Value) -> String {
    since(now, time(obj, "/metadata/creationTimestamp"))
}

/// `labels.FormatLabels`: sorted `k=v` pairs, `<none>` when empty.
pub(super) fn format_labels(v: Option<&Value>) -> String {
    let mut pairs: Vec<String> = v
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    if pairs.is_empty() {
        return "<none>".to_string();
    }
    pairs.sort();
    pairs.join(",")
}

/// `LabelSelectorAsSelector(sel).String()`: requirements sorted by key; ""
/// for a nil or empty selector.
pub(super) fn selector_string(sel: Option<&Value>) -> String {
    let Some(sel) = sel.filter(|v| v.is_object()) else {
        return String::new();
    };
    let mut reqs: Vec<(String, String)> = Vec::new();
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in m {
            reqs.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or(""))));
        }
    }
    for expr in sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        let key = s(expr, "/key").to_string();
        let mut values: Vec<&str> = arr(expr, "/values")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        values.sort_unstable();
        let text = match s(expr, "/operator") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.clone(),
            "DoesNotExist" => format!("!{key}"),
            _ => return "<error>".to_string(),
        };
        reqs.push((key, text));
    }
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    reqs.into_iter()
        .map(|(_, t)| t)
        .collect::<Vec<_>>()
        .join(",")
}

/// `metav1.FormatLabelSelector`: like `selector_string`, `<none>` when empty.
pub(super) fn format_selector(sel: Option<&Value>) -> String {
    let text = selector_string(sel);
    if text.is_empty() {
        "<none>".to_string()
    } else {
        text
    }
}

/// `layoutContainerCells`: comma-joined container names and images.
pub(super) fn containers(pod_spec: Option<&Value>) -> (String, String) {
    let list = pod_spec
        .and_then(|p| p.get("containers"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let names: Vec<&str> = list.iter().map(|c| s(c, "/name")).collect();
    let images: Vec<&str> = list.iter().map(|c| s(c, "/image")).collect();
    (names.join(","), images.join(","))
}

/// A workload's row as kube prints it: Name, the kind's own `columns`, Age,
/// then the wide Containers and Images of the pod template at `pod_spec` and,
/// for the kinds that print one, the Selector.
pub(super) fn workload_row(
    now: DateTime<Utc>,
    obj: &Value,
    columns: Vec<Value>,
    pod_spec: &str,
    selector: Option<String>,
) -> Vec<Value> {
    let (names, images) = containers(obj.pointer(pod_spec));
    let mut row = Vec::with_capacity(columns.len() + 5);
    row.push(json!(s(obj, "/metadata/name")));
    row.extend(columns);
    row.push(json!(age(now, obj)));
    row.push(json!(names));
    row.push(json!(images));
    row.extend(selector.map(|sel| json!(sel)));
    row
}

/// The Desired, Current and Ready replica counts of a ReplicaSet or a
/// ReplicationController.
pub(super) fn replica_counts(obj: &Value) -> Vec<Value> {
    vec![
        json!(i(obj, "/spec/replicas")),
        json!(i(obj, "/status/replicas")),
        json!(i(obj, "/status/readyReplicas")),
    ]
}

/// A string, or `fallback` when it is empty.
pub(super) fn or(text: &str, fallback: &str) -> String {
    if text.is_empty() {
        fallback.to_string()
    } else {
        text.to_string()
    }
}

/// `printBoolPtr`.
pub(super) fn bool_ptr(v: Option<bool>) -> String {
    match v {
        Some(true) => "True".to_string(),
        Some(false) => "False".to_string(),
        None => "<unset>".to_string(),
    }
}

/// `listWithMoreString`: up to three entries, then "+ N more...".
pub(super) fn list_with_more(list: &[String], count: usize, empty: &str) -> String {
    const MAX: usize = 3;
    let shown: Vec<&str> = list.iter().take(MAX).map(String::as_str).collect();
    let ret = shown.join(",");
    if count > MAX {
        return format!("{ret} + {} more...", count - MAX);
    }
    if ret.is_empty() {
        return empty.to_string();
    }
    ret
}

/// `helper.GetAccessModesAsString`, in the fixed upstream order.
pub(super) fn access_modes(modes: &[Value]) -> String {
    let has = |m: &str| modes.iter().any(|v| v.as_str() == Some(m));
    let mut out = Vec::new();
    for (mode, short) in [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ] {
        if has(mode) {
            out.push(short);
        }
    }
    out.join(",")
}

/// The text of a quantity as stored (quantities are canonical on write).
pub(super) fn quantity(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(q)) => q.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "0".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use serde_json::json;

    #[test]
    fn human_duration_matches_apimachinery() {
        let cases = [
            (-3, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (5, "5s"),
            (119, "119s"),
            (120, "2m"),
            (184, "3m4s"),
            (600, "10m"),
            (179 * 60 + 59, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 5 * 60, "3h5m"),
            (8 * 3600, "8h"),
            (47 * 3600, "47h"),
            (48 * 3600, "2d"),
            (50 * 3600, "2d2h"),
            (8 * 24 * 3600, "8d"),
            (730 * 24 * 3600, "2y"),
            (731 * 24 * 3600, "2y1d"),
            (9 * 365 * 24 * 3600, "9y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(Duration::seconds(secs)), want, "{secs}s");
        }
    }

    #[test]
    fn selectors_and_labels_format_like_kubernetes() {
        let sel = json!({"matchLabels": {"b": "2", "a": "1"},
            "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "dev"]},
                                 {"key": "gone", "operator": "DoesNotExist"}]});
        assert_eq!(
            selector_string(Some(&sel)),
            "a=1,b=2,env in (dev,prod),!gone"
        );
        assert_eq!(format_selector(Some(&json!({}))), "<none>");
        assert_eq!(selector_string(None), "");
        assert_eq!(
            format_labels(Some(&json!({"z": "1", "app": "web"}))),
            "app=web,z=1"
        );
        assert_eq!(format_labels(None), "<none>");
    }

    #[test]
    fn access_modes_use_upstream_order() {
        let modes = [json!("ReadWriteMany"), json!("ReadWriteOnce")];
        assert_eq!(access_modes(&modes), "RWO,RWX");
    }
}
