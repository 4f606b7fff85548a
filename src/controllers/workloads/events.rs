//! Core `v1` Events, as kube-controller-manager's event broadcaster writes
//! them (`involvedObject`, `source.component`, `count`,
//! `firstTimestamp`/`lastTimestamp`), so `kubectl describe` and
//! `kubectl get events` find them by `involvedObject` field selectors.
//!
//! A repeat of the same reason and message for the same object within ten
//! minutes bumps `count` on the existing Event instead of creating another
//! (kube's correlator). That cache is only an optimisation: after a restart
//! the first repeat creates a new Event, as kube's does.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::Mutex;

const DEDUP_WINDOW: Duration = Duration::from_secs(600);

/// (involved object uid, reason, message).
type EventKey = (String, String, String);
/// (Event name, count, last seen).
type Seen = (String, i32, Timestamp);

/// Writes Events for one controller (`source.component`).
pub struct EventWriter {
    client: kube::Client,
    component: String,
    seen: Mutex<HashMap<EventKey, Seen>>,
}

impl EventWriter {
    pub fn new(client: kube::Client, component: &str) -> Self {
        EventWriter {
            client,
            component: component.to_string(),
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Records one Event about `regarding`.
    pub async fn record(
        &self,
        regarding: ObjectReference,
        warning: bool,
        reason: &str,
        message: String,
    ) -> Result<(), kube::Error> {
        let ns = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        let now = Timestamp::now();
        let key = (
            regarding.uid.clone().unwrap_or_default(),
            reason.to_string(),
            message.clone(),
        );
        let mut seen = self.seen.lock().await;
        seen.retain(|_, (_, _, at)| now.duration_since(*at).unsigned_abs() < DEDUP_WINDOW);
        if let Some((name, count, _)) = seen.get(&key).cloned() {
            let patch = json!({"count": count + 1, "lastTimestamp": Time(now)});
            if api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .is_ok()
            {
                seen.insert(key, (name, count + 1, now));
                return Ok(());
            }
        }
        let name = format!(
            "{}.{:x}",
            regarding.name.clone().unwrap_or_default(),
            now.as_nanosecond()
        );
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns),
                ..Default::default()
            },
            involved_object: regarding,
            reason: Some(reason.to_string()),
            message: Some(message),
            type_: Some(if warning { "Warning" } else { "Normal" }.to_string()),
            source: Some(EventSource {
                component: Some(self.component.clone()),
                host: None,
            }),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: None::<MicroTime>,
            reporting_component: Some(self.component.clone()),
            reporting_instance: Some(self.component.clone()),
            ..Default::default()
        };
        api.create(&PostParams::default(), &event).await?;
        seen.insert(key, (name, 1, now));
        Ok(())
    }
}
