//! Watch streams (`?watch=true` and `/watch/` paths): one JSON event per line,
//! flushed per event. Initial ADDED events when no resourceVersion (or "0") is
//! given; selectors apply to old and new objects (leaving the selection is
//! DELETED, entering is ADDED); `timeoutSeconds` ends the stream cleanly; a
//! compacted resourceVersion is an ERROR event with a 410 Expired Status.
//! With `allowWatchBookmarks`, a BOOKMARK every minute and, with
//! `sendInitialEvents`, the `k8s.io/initial-events-end`
//! one. Table watches send one-row Tables, column definitions only first;
//! metadata watches (`as=PartialObjectMetadata`) send every object, bookmarks
//! included, as `PartialObjectMetadata`. ERROR events stay Status objects.
//!
//! A bookmark carries the watch's progress, not only the last event it
//! delivered: the store's revision read at the previous tick, once nothing
//! is queued (every event up to a revision read a minute ago has long been
//! handed to the watch's channel, wrappers' forwarding tasks included). So
//! a watch on a kind that never changes still moves its client's
//! resourceVersion along, as kube-apiserver's watch cache does, and its
//! next re-watch does not hit a compacted revision (a 410, a relist and a
//! warning in the client's log, on every compaction of an idle cluster).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use serde_json::{json, Value};

use super::keys;
use super::objects;
use super::registry::ResourceDef;
use super::context::AppState;
use super::selectors::Selectors;
use super::status::ApiStatus;
use crate::store::{EventKind, ListOptions};

/// How a watch renders the objects in its events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventRendering {
    Object,
    Table,
    /// `PartialObjectMetadata` of `meta.k8s.io/<version>`.
    Metadata(&'static str),
}

impl EventRendering {
    /// Bookmarks are never Table rows; metadata watches still get them as
    /// `PartialObjectMetadata`.
    fn for_bookmark(self) -> Self {
        match self {
            Self::Table => Self::Object,
            other => other,
        }
    }
}

fn event_line(
    kind: &str,
    obj: Value,
    def: &ResourceDef,
    render: EventRendering,
    first: &mut bool,
) -> bytes::Bytes {
    let obj = if kind == "ERROR" {
        obj
    } else if let EventRendering::Metadata(v) = render {
        super::metadata::partial(&obj, v)
    } else if render == EventRendering::Table {
        let rv = obj
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let mut t = super::table::to_table(
            def,
            &[obj],
            &rv,
            None,
            None,
            super::table::IncludeObject::Metadata,
        );
        if !*first {
            t.as_object_mut().map(|o| o.remove("columnDefinitions"));
        }
        *first = false;
        t
    } else {
        obj
    };
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": obj})).unwrap_or_default();
    line.push(b'\n');
    bytes::Bytes::from(line)
}

/// How often a watch with `allowWatchBookmarks` gets a BOOKMARK.
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);

/// A BOOKMARK object: the kind with only `metadata.resourceVersion`, plus the
/// `k8s.io/initial-events-end` annotation after the initial events.
fn bookmark(def: &ResourceDef, rev: i64, initial_end: bool) -> Value {
    let mut meta = json!({"resourceVersion": rev.to_string(), "creationTimestamp": null});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": def.kind, "apiVersion": def.api_version(), "metadata": meta})
}

/// The event a selective watcher sees, as kube-apiserver's cacher decides it:
/// an object leaving the selection is DELETED, one entering it ADDED.
pub fn classify(kind: EventKind, old_match: bool, new_match: bool) -> Option<&'static str> {
    match kind {
        EventKind::Created if new_match => Some("ADDED"),
        EventKind::Deleted if old_match => Some("DELETED"),
        EventKind::Updated if new_match && old_match => Some("MODIFIED"),
        EventKind::Updated if new_match => Some("ADDED"),
        EventKind::Updated if old_match => Some("DELETED"),
        _ => None,
    }
}

pub fn watch(
    state: Arc<AppState>,
    def: Arc<ResourceDef>,
    namespace: Option<String>,
    query: &HashMap<String, String>,
    sel: Selectors,
    render: EventRendering,
) -> Result<Response, ApiStatus> {
    let prefix = keys::collection_prefix(&def, namespace.as_deref());
    let rv: Option<i64> = match query
        .get("resourceVersion")
        .map(String::as_str)
        .filter(|s| !s.is_empty() && *s != "0")
    {
        Some(r) => Some(
            r.parse()
                .map_err(|_| ApiStatus::bad_request(format!("invalid resource version: {r}")))?,
        ),
        None => None,
    };
    let bookmarks = matches!(
        query.get("allowWatchBookmarks").map(String::as_str),
        Some("true") | Some("1")
    );
    let initial_events = matches!(
        query.get("sendInitialEvents").map(String::as_str),
        Some("true") | Some("1")
    );
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        let mut first = true;
        let start = match rv {
            Some(r) if !initial_events => r,
            _ => {
                let page = match state.store.list(&ListOptions {
                    prefix: prefix.clone(),
                    ..Default::default()
                }) {
                    Ok(p) => p,
                    Err(_) => return,
                };
                for rec in &page.records {
                    if let Ok(o) = objects::from_record(&def, rec) {
                        if sel.matches(&o)
                            && tx
                                .send(Ok(event_line("ADDED", o, &def, render, &mut first)))
                                .await
                                .is_err()
                        {
                            return;
                        }
                    }
                }
                if initial_events && bookmarks {
                    let b = bookmark(&def, page.revision, true);
                    if tx
                        .send(Ok(event_line("BOOKMARK", b, &def, render.for_bookmark(), &mut first)))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                page.revision
            }
        };
        let mut last = start;
        let mut ticker =
            tokio::time::interval_at(tokio::time::Instant::now() + BOOKMARK_EVERY, BOOKMARK_EVERY);
        let mut events = match state.store.watch(&prefix, start) {
            Ok(e) => e,
            Err(_) => {
                let s = ApiStatus::expired(start, state.store.compacted_revision()).to_value();
                let _ = tx
                    .send(Ok(event_line("ERROR", s, &def, render, &mut first)))
                    .await;
                return;
            }
        };
        // Read after the watch is registered: every later event reaches `events`.
        let mut progress = state.store.current_revision();
        let deadline = tokio::time::sleep(timeout.unwrap_or(Duration::from_secs(86400 * 365)));
        tokio::pin!(deadline);
        loop {
            let ev = tokio::select! {
                _ = state.shutdown.cancelled() => return,
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                _ = ticker.tick(), if bookmarks => {
                    if events.is_empty() {
                        last = last.max(progress);
                    }
                    progress = state.store.current_revision();
                    if tx.send(Ok(event_line("BOOKMARK", bookmark(&def, last, false), &def, render.for_bookmark(), &mut first))).await.is_err() {
                        return;
                    }
                    continue;
                }
                ev = events.recv() => ev,
            };
            let ev = match ev {
                None => return,
                Some(Err(e)) => {
                    let s = match e {
                        crate::store::StoreError::Compacted {
                            requested,
                            compacted,
                        } => ApiStatus::expired(requested, compacted),
                        other => ApiStatus::internal(other.to_string()),
                    };
                    let _ = tx
                        .send(Ok(event_line(
                            "ERROR",
                            s.to_value(),
                            &def,
                            render,
                            &mut first,
                        )))
                        .await;
                    return;
                }
                Some(Ok(ev)) => ev,
            };
            last = ev.revision;
            let Ok(new) = objects::from_record(&def, &ev.record) else {
                continue;
            };
            let old_match = ev
                .prev
                .as_ref()
                .and_then(|p| objects::from_record(&def, p).ok())
                .is_some_and(|o| sel.matches(&o));
            let new_match = sel.matches(&new);
            let Some(kind) = classify(ev.kind, old_match, new_match) else {
                continue;
            };
            let obj = if kind == "DELETED" && ev.kind == EventKind::Updated {
                let mut o = ev
                    .prev
                    .as_ref()
                    .and_then(|p| objects::from_record(&def, p).ok())
                    .unwrap_or(new);
                objects::set_resource_version(&mut o, ev.revision);
                o
            } else {
                new
            };
            if tx
                .send(Ok(event_line(kind, obj, &def, render, &mut first)))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    Response::builder()
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .map_err(|e| ApiStatus::internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_changes() {
        assert_eq!(classify(EventKind::Updated, true, false), Some("DELETED"));
        assert_eq!(classify(EventKind::Updated, false, true), Some("ADDED"));
        assert_eq!(classify(EventKind::Updated, true, true), Some("MODIFIED"));
        assert_eq!(classify(EventKind::Updated, false, false), None);
        assert_eq!(classify(EventKind::Created, false, false), None);
        assert_eq!(classify(EventKind::Deleted, true, false), Some("DELETED"));
    }

    #[test]
    fn table_events_carry_columns_once() {
        let def = crate::apiserver::builtin::builtin_registry()
            .lookup("", "v1", "configmaps")
            .unwrap();
        let mut first = true;
        let obj = json!({"metadata": {"name": "a", "resourceVersion": "3"}});
        let a: Value =
            serde_json::from_slice(&event_line("ADDED", obj.clone(), &def, EventRendering::Table, &mut first))
                .unwrap();
        let b: Value =
            serde_json::from_slice(&event_line("MODIFIED", obj, &def, EventRendering::Table, &mut first)).unwrap();
        assert!(a["object"]["columnDefinitions"].is_array());
        assert!(b["object"].get("columnDefinitions").is_none());
        assert_eq!(b["object"]["rows"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn metadata_events_carry_partial_objects_but_errors_stay_status() {
        let def = crate::apiserver::builtin::builtin_registry()
            .lookup("", "v1", "configmaps")
            .unwrap();
        let mut first = true;
        let render = EventRendering::Metadata("v1");
        let obj = json!({"kind": "ConfigMap", "metadata": {"name": "a", "resourceVersion": "3"}, "data": {"k": "v"}});
        let e: Value =
            serde_json::from_slice(&event_line("ADDED", obj, &def, render, &mut first)).unwrap();
        assert_eq!(e["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(e["object"]["metadata"]["name"], "a");
        assert!(e["object"].get("data").is_none());
        let b = bookmark(&def, 9, false);
        let e: Value = serde_json::from_slice(&event_line(
            "BOOKMARK",
            b,
            &def,
            render.for_bookmark(),
            &mut first,
        ))
        .unwrap();
        assert_eq!(e["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(e["object"]["metadata"]["resourceVersion"], "9");
        let s = ApiStatus::expired(1, 2).to_value();
        let e: Value =
            serde_json::from_slice(&event_line("ERROR", s, &def, render, &mut first)).unwrap();
        assert_eq!(e["object"]["kind"], "Status");
    }
}
