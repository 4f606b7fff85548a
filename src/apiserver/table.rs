//! PLACEHOLDER (the `apimeta` helper's version replaces this file at merge):
//! `meta.k8s.io/v1` Tables with NAME and AGE columns only.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::registry::ResourceDef;

/// What each row's `object` carries (`includeObject=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum IncludeObject {
    None,
    #[default]
    Metadata,
    Object,
}

fn age(ts: Option<&str>) -> String {
    let Some(t) = ts.and_then(|t| DateTime::parse_from_rfc3339(t).ok()) else {
        return "<unknown>".into();
    };
    let secs = (Utc::now() - t.with_timezone(&Utc)).num_seconds().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 3600 * 3 => format!("{}m", s / 60),
        s if s < 86400 * 2 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// A Table of `items` (full objects) for `kubectl get`.
pub fn to_table(
    def: &ResourceDef,
    items: &[Value],
    resource_version: &str,
    continue_token: Option<&str>,
    remaining: Option<i64>,
    include_object: IncludeObject,
) -> Value {
    let _ = def;
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let cells = json!([
                o.pointer("/metadata/name").cloned().unwrap_or(Value::Null),
                age(o
                    .pointer("/metadata/creationTimestamp")
                    .and_then(Value::as_str)),
            ]);
            let object = match include_object {
                IncludeObject::None => Value::Null,
                IncludeObject::Metadata => json!({
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": o.get("metadata").cloned().unwrap_or(json!({})),
                }),
                IncludeObject::Object => o.clone(),
            };
            json!({"cells": cells, "object": object})
        })
        .collect();
    let mut meta = json!({"resourceVersion": resource_version});
    if let Some(c) = continue_token {
        meta["continue"] = json!(c);
    }
    if let Some(r) = remaining {
        meta["remainingItemCount"] = json!(r);
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": [
            {"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0},
            {"name": "Age", "type": "string", "format": "", "description": "CreationTimestamp is a timestamp representing the server time when this object was created.", "priority": 0},
        ],
        "rows": rows,
    })
}
