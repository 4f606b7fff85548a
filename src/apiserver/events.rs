//! `events.k8s.io/v1` Events: one storage, two shapes. Events are stored
//! in core/v1's shape (`/registry/events/…`, like kube-apiserver, whose
//! storage version is core/v1) and converted on the way in and out of the
//! events.k8s.io group, field by field as kube's
//! `pkg/apis/events/v1/conversion.go` does through the internal type:
//!
//! | core/v1 | events.k8s.io/v1 |
//! |---|---|
//! | `involvedObject` | `regarding` |
//! | `message` | `note` |
//! | `source` | `deprecatedSource` |
//! | `firstTimestamp` / `lastTimestamp` | `deprecatedFirstTimestamp` / `deprecatedLastTimestamp` |
//! | `count` | `deprecatedCount` |
//! | `reportingComponent` | `reportingController` |
//! | `related`, `reportingInstance`, `action`, `reason`, `type`, `eventTime`, `series`, `metadata` | the same |
//!
//! Fields Go always writes (non-pointer structs and times without a usable
//! `omitempty`) are written as Go writes them: `eventTime`/timestamps as
//! `null`, `involvedObject`/`regarding` and `source`/`deprecatedSource` as
//! objects; zero counts are left out.
//!
//! Invariant: whatever the group a client writes through, the stored
//! bytes are core/v1's; a record stored in the events.k8s.io shape (written
//! before this conversion existed) is recognised by its `apiVersion` and
//! converted too, so both groups read every Event.

use serde_json::{Map, Value};

use super::registry::ResourceDef;

/// core/v1 field ↔ events.k8s.io/v1 field, for the renamed ones.
const RENAMED: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
    ("reportingComponent", "reportingController"),
];

/// Fields both shapes share.
const SHARED: &[&str] = &[
    "metadata",
    "related",
    "reportingInstance",
    "action",
    "reason",
    "type",
    "eventTime",
    "series",
];

/// Whether `def` is the events.k8s.io Event resource.
pub fn is_events_group(def: &ResourceDef) -> bool {
    def.group == "events.k8s.io" && def.plural == "events"
}

/// Whether `def` is the core Event resource.
pub fn is_core_events(def: &ResourceDef) -> bool {
    def.group.is_empty() && def.plural == "events"
}

/// Whether a stored or received object is in the events.k8s.io shape.
fn in_events_shape(v: &Value) -> bool {
    v.get("apiVersion")
        .and_then(Value::as_str)
        .is_some_and(|a| a.starts_with("events.k8s.io/"))
}

fn rename(v: &Value, to_events: bool, api_version: &str) -> Value {
    let Some(src) = v.as_object() else {
        return v.clone();
    };
    let mut out = Map::new();
    out.insert("kind".into(), "Event".into());
    out.insert("apiVersion".into(), api_version.into());
    for f in SHARED {
        if let Some(x) = src.get(*f) {
            out.insert((*f).into(), x.clone());
        }
    }
    for (core, events) in RENAMED {
        let (from, to) = if to_events { (core, events) } else { (events, core) };
        if let Some(x) = src.get(*from) {
            out.insert((*to).into(), x.clone());
        }
    }
    // What Go's encoder writes for zero values.
    let (reference, source, first, last) = if to_events {
        ("regarding", "deprecatedSource", "deprecatedFirstTimestamp", "deprecatedLastTimestamp")
    } else {
        ("involvedObject", "source", "firstTimestamp", "lastTimestamp")
    };
    for f in [reference, source] {
        out.entry(f).or_insert_with(|| Value::Object(Map::new()));
    }
    for f in [first, last, "eventTime"] {
        out.entry(f).or_insert(Value::Null);
    }
    let count = if to_events { "deprecatedCount" } else { "count" };
    if out.get(count).and_then(Value::as_i64) == Some(0) {
        out.remove(count);
    }
    Value::Object(out)
}

/// core/v1 shape → events.k8s.io/v1 shape.
pub fn to_events(core: &Value) -> Value {
    rename(core, true, "events.k8s.io/v1")
}

/// events.k8s.io/v1 shape → core/v1 shape.
pub fn to_core(events: &Value) -> Value {
    rename(events, false, "v1")
}

/// A stored Event as the resource `def` serves it (anything else unchanged).
pub fn for_reading(def: &ResourceDef, stored: Value) -> Value {
    if is_events_group(def) && !in_events_shape(&stored) {
        to_events(&stored)
    } else if is_core_events(def) && in_events_shape(&stored) {
        to_core(&stored)
    } else {
        stored
    }
}

/// An Event about to be stored, in core/v1's shape (anything else
/// unchanged).
pub fn for_storage(def: &ResourceDef, obj: &Value) -> Option<Value> {
    (is_events_group(def) || (is_core_events(def) && in_events_shape(obj))).then(|| to_core(obj))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn recorder_event() -> Value {
        // What kube-rs's Recorder (events.k8s.io/v1) posts.
        json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "web.1", "namespace": "default"},
            "action": "Reconciling", "reason": "Scaled", "type": "Normal",
            "note": "scaled to 3",
            "regarding": {"kind": "Deployment", "name": "web", "namespace": "default", "uid": "u1", "apiVersion": "apps/v1"},
            "related": {"kind": "Pod", "name": "p"},
            "reportingController": "demo-controller", "reportingInstance": "demo-0",
            "eventTime": "2026-01-01T00:00:00.000000Z",
            "series": {"count": 2, "lastObservedTime": "2026-01-01T00:01:00.000000Z"}
        })
    }

    #[test]
    fn events_group_writes_are_stored_as_core() {
        let core = to_core(&recorder_event());
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["message"], "scaled to 3");
        assert_eq!(core["involvedObject"]["name"], "web");
        assert_eq!(core["reportingComponent"], "demo-controller");
        assert_eq!(core["reportingInstance"], "demo-0");
        assert_eq!(core["related"]["name"], "p");
        assert_eq!(core["series"]["count"], 2);
        assert_eq!(core["source"], json!({}));
        assert_eq!(core["firstTimestamp"], Value::Null);
        assert!(core.get("note").is_none() && core.get("regarding").is_none());
    }

    #[test]
    fn conversion_round_trips() {
        let ev = recorder_event();
        let back = to_events(&to_core(&ev));
        for f in ["note", "regarding", "related", "reportingController", "series", "eventTime", "action"] {
            assert_eq!(back[f], ev[f], "{f}");
        }
        let core = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "x"},
            "involvedObject": {"kind": "Pod", "name": "p"}, "message": "Pulled", "count": 3,
            "source": {"component": "kubelet", "host": "n1"},
            "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:02:00Z"});
        let ev = to_events(&core);
        assert_eq!(ev["deprecatedCount"], 3);
        assert_eq!(ev["deprecatedSource"]["component"], "kubelet");
        assert_eq!(ev["deprecatedLastTimestamp"], "2026-01-01T00:02:00Z");
        assert_eq!(ev["eventTime"], Value::Null);
        assert_eq!(to_core(&ev), {
            let mut c = core.clone();
            c["eventTime"] = Value::Null;
            c
        });
    }

    #[test]
    fn reading_picks_the_shape_of_the_resource() {
        let reg = crate::apiserver::builtin::builtin_registry();
        let core_def = reg.lookup("", "v1", "events").unwrap();
        let ev_def = reg.lookup("events.k8s.io", "v1", "events").unwrap();
        let stored = to_core(&recorder_event());
        assert_eq!(for_reading(&ev_def, stored.clone())["note"], "scaled to 3");
        assert_eq!(for_reading(&core_def, stored.clone())["message"], "scaled to 3");
        // An old record stored in the events shape reads through core too.
        assert_eq!(for_reading(&core_def, recorder_event())["message"], "scaled to 3");
        assert!(for_storage(&core_def, &stored).is_none());
        assert_eq!(for_storage(&ev_def, &recorder_event()).unwrap()["apiVersion"], "v1");
    }
}
