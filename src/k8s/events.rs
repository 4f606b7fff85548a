//! The core/v1 Event recorder of the scheduler and every controller, as
//! kube-controller-manager's event broadcaster writes them
//! (`involvedObject`, `source.component`, `count`,
//! `firstTimestamp`/`lastTimestamp`), so `kubectl describe` and
//! `kubectl get events` find them by `involvedObject` field selectors.
//!
//! Why not `kube::runtime::events::Recorder`: it writes `events.k8s.io/v1`
//! Events, which our API stores as sent, without converting them to the
//! core shape `kubectl describe` reads (`involvedObject`, `message`, `count`;
//! see `apiserver::keys`). This writes the core shape directly and, like
//! client-go's EventCorrelator, turns a repeat of the same reason and
//! message for the same object within ten minutes into a `count` bump on the
//! first Event. That memory is only an optimisation: after a restart the
//! first repeat creates a new Event, as kube's does.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, ObjectReference};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

/// Repeats tracked before the memory is cleared.
const MAX_TRACKED: usize = 4096;
/// A repeat older than this is a new Event (kube's correlator window).
const DEDUP_WINDOW: Duration = Duration::from_secs(600);

type Seen = (String, String, i32, Instant);

pub struct EventRecorder {
    client: kube::Client,
    component: String,
    /// `(uid or ns/name, reason, message)` → `(namespace, event name, count, last seen)`.
    seen: Mutex<HashMap<(String, String, String), Seen>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventRecorder {
    pub fn new(client: kube::Client, component: &str) -> Self {
        EventRecorder {
            client,
            component: component.to_string(),
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Records one occurrence; failures are logged, never fatal (kube's
    /// recorders drop events under pressure too).
    pub async fn record(
        &self,
        obj: &ObjectReference,
        kind: EventType,
        reason: &str,
        message: &str,
    ) {
        if let Err(e) = self.try_record(obj, kind, reason, message).await {
            tracing::debug!(reason, "failed to record an event: {e}");
        }
    }

    async fn try_record(
        &self,
        obj: &ObjectReference,
        kind: EventType,
        reason: &str,
        message: &str,
    ) -> Result<(), kube::Error> {
        let ns = obj
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into());
        let id = obj
            .uid
            .clone()
            .unwrap_or_else(|| format!("{ns}/{}", obj.name.as_deref().unwrap_or("")));
        let key = (id, reason.to_string(), message.to_string());
        let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        let repeat = self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .filter(|seen| seen.3.elapsed() < DEDUP_WINDOW)
            .cloned();
        if let Some((ens, name, count, _)) = repeat {
            let patch = json!({"count": count + 1, "lastTimestamp": now});
            let api: Api<Event> = Api::namespaced(self.client.clone(), &ens);
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    self.remember(key, (ens, name, count + 1, Instant::now()));
                    return Ok(());
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let name = format!(
            "{}.{:x}",
            obj.name.as_deref().unwrap_or("object"),
            rand::random::<u64>()
        );
        let event: Event = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns},
            "involvedObject": obj,
            "reason": reason,
            "message": message,
            "type": match kind { EventType::Normal => "Normal", EventType::Warning => "Warning" },
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "reportingInstance": self.component,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }))
        .expect("the event is well-formed");
        api.create(&PostParams::default(), &event).await?;
        self.remember(key, (ns, name, 1, Instant::now()));
        Ok(())
    }

    fn remember(&self, key: (String, String, String), v: Seen) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= MAX_TRACKED {
            seen.retain(|_, s| s.3.elapsed() < DEDUP_WINDOW);
        }
        if seen.len() >= MAX_TRACKED {
            seen.clear();
        }
        seen.insert(key, v);
    }
}

/// The reference an Event about `obj` carries.
pub fn object_ref<K>(obj: &K) -> ObjectReference
where
    K: kube::Resource<DynamicType = ()>,
{
    let meta = obj.meta();
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        field_path: None,
    }
}
