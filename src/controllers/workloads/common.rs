//! What every workload controller shares: the error type and its back-off
//! policy, owner references and claiming, label-selector matching, pod
//! health predicates, status patches, events and the clock seam.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, ObjectMeta, OwnerReference, Time,
};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::{json, Value};

use crate::k8s::events::{EventRecorder, EventType};
use crate::k8s::selector;
use crate::controllers::Context;

/// Errors of one reconcile; every one is retried with back-off.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to {action}: {source}")]
    Api {
        action: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to read {field}: {message}")]
    Invalid { field: String, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches "what we were doing" to a kube client error.
pub trait ApiContext<T> {
    fn ctx(self, action: impl FnOnce() -> String) -> Result<T>;
}

impl<T> ApiContext<T> for std::result::Result<T, kube::Error> {
    fn ctx(self, action: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Api {
            action: action(),
            source,
        })
    }
}

/// Whether a client error is the API's 404 / 409 AlreadyExists.
pub fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// Source of "now", so tests can run CronJobs on an accelerated clock.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
    /// How long to really wait for `d` of this clock's time to pass.
    fn real(&self, d: Duration) -> Duration {
        d
    }
}

/// The wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// What each controller's reconcile gets.
pub struct Shared {
    pub ctx: Context,
    pub events: EventRecorder,
    pub clock: Arc<dyn Clock>,
    /// Consecutive failed passes per object, for the retry back-off only.
    failures: std::sync::Mutex<HashMap<String, u32>>,
}

impl Shared {
    pub fn new(ctx: Context, controller: &str, clock: Arc<dyn Clock>) -> Arc<Self> {
        Arc::new(Shared {
            events: EventRecorder::new(ctx.client.clone(), controller),
            failures: Default::default(),
            ctx,
            clock,
        })
    }

    /// Resets the object's retry back-off after a successful pass.
    pub fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    pub fn client(&self) -> kube::Client {
        self.ctx.client.clone()
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Publishes an Event about `obj`; failing to record it never fails the reconcile.
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        let kind = if warning { EventType::Warning } else { EventType::Normal };
        self.events
            .record(&obj.object_ref(&()), kind, reason, &note)
            .await;
    }
}

/// The retry delay after `failures` consecutive failed passes: 1 s doubling, at most 5 minutes.
pub fn retry_delay(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(9)).min(Duration::from_secs(300))
}

/// Errors retry with per-object exponential back-off instead of spinning;
/// a successful pass resets it ([`Shared::succeeded`]).
pub fn error_policy<K: Resource>(obj: Arc<K>, error: &Error, shared: Arc<Shared>) -> Action {
    let key = object_key(obj.as_ref());
    let failures = {
        let mut f = shared.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = f.entry(key.clone()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let delay = retry_delay(failures);
    tracing::warn!(object = %key, %error, retry_in = ?delay, "workload reconcile failed");
    Action::requeue(delay)
}

/// `namespace/name`, the back-off key.
pub fn object_key<K: Resource>(obj: &K) -> String {
    format!(
        "{}/{}",
        obj.meta().namespace.as_deref().unwrap_or(""),
        obj.meta().name.as_deref().unwrap_or("")
    )
}

/// The controller ownerReference to `owner`.
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The UID of the object's controller, if any.
pub fn controller_uid(meta: &ObjectMeta) -> Option<&str> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
        .map(|r| r.uid.as_str())
}

/// Whether `labels` satisfy a workload's `sel`: an empty selector selects
/// nothing here, as kube's workload controllers refuse to select every pod
/// (see `crate::k8s::selector` for the general rule).
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    !selector::is_empty(sel) && selector::matches(sel, labels)
}

/// Splits the namespace's objects into those `owner` controls (adopting
/// orphans that match, releasing its own that no longer match) and drops the rest.
///
/// A thin generic front: the work is in [`claim_for`], generic only in the
/// claimed kind and taking the matcher as `&dyn Fn`, so each (kind, owner,
/// closure) triple does not compile a copy of the whole loop (the release
/// binary is measured, see ARCHITECTURE.md).
pub async fn claim<C, O>(
    api: &Api<C>,
    owner: &O,
    objs: Vec<C>,
    matches: impl Fn(&C) -> bool + Sync,
) -> Result<Vec<C>>
where
    C: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    O: Resource<DynamicType = ()>,
{
    let owner_ref = controller_ref(owner);
    let owner_deleting = owner.meta().deletion_timestamp.is_some();
    claim_for(api, owner_ref, owner_deleting, objs, &matches).await
}

pub async fn claim_for<C>(
    api: &Api<C>,
    owner_ref: OwnerReference,
    owner_deleting: bool,
    objs: Vec<C>,
    matches: &(dyn Fn(&C) -> bool + Sync),
) -> Result<Vec<C>>
where
    C: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let uid = owner_ref.uid.clone();
    let mut mine = Vec::new();
    for obj in objs {
        let name = obj.name_any();
        match controller_uid(obj.meta()) {
            Some(u) if u == uid => {
                if matches(&obj) || owner_deleting {
                    mine.push(obj);
                } else {
                    let refs: Vec<_> = obj
                        .owner_references()
                        .iter()
                        .filter(|r| r.uid != uid)
                        .cloned()
                        .collect();
                    let patch = json!({"metadata": {"ownerReferences": refs}});
                    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .or_else(|e| {
                            if is_status(&e, 404) {
                                Ok(obj.clone())
                            } else {
                                Err(e)
                            }
                        })
                        .ctx(|| format!("release {name}"))?;
                }
            }
            Some(_) => {}
            None => {
                if owner_deleting || obj.meta().deletion_timestamp.is_some() || !matches(&obj) {
                    continue;
                }
                let mut refs = obj.owner_references().to_vec();
                refs.push(owner_ref.clone());
                let patch = json!({"metadata": {"ownerReferences": refs, "resourceVersion": obj.resource_version()}});
                match api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(adopted) => mine.push(adopted),
                    Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
                    Err(e) => return Err(e).ctx(|| format!("adopt {name}")),
                }
            }
        }
    }
    Ok(mine)
}

/// Lists every object of a kind in a namespace.
pub async fn list_all<C>(api: &Api<C>, what: &str) -> Result<Vec<C>>
where
    C: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    Ok(api
        .list(&ListParams::default())
        .await
        .ctx(|| format!("list {what}"))?
        .items)
}

/// Merge-patches `status`, writing `null` for fields the old status had and the new one lacks.
pub async fn patch_status<K>(api: &Api<K>, name: &str, old: &Value, new: &Value) -> Result<()>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    if old == new {
        return Ok(());
    }
    let mut status = new.clone();
    if let (Some(o), Some(n)) = (old.as_object(), status.as_object_mut()) {
        for k in o.keys() {
            n.entry(k.clone()).or_insert(Value::Null);
        }
    }
    match api
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 404) => Ok(()),
        Err(e) => Err(e).ctx(|| format!("update the status of {name}")),
    }
}

/// Deletes, treating "already gone" as done.
pub async fn delete_quiet<K>(api: &Api<K>, name: &str, dp: &DeleteParams) -> Result<()>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, dp).await {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 404) => Ok(()),
        Err(e) => Err(e).ctx(|| format!("delete {name}")),
    }
}

/// Background propagation (dependents go after the owner).
pub fn background() -> DeleteParams {
    DeleteParams::background()
}

/// A pod built from a template and owned by `owner`.
pub fn pod_from_template<K: Resource<DynamicType = ()>>(
    owner: &K,
    template: &PodTemplateSpec,
    extra_labels: &BTreeMap<String, String>,
) -> Pod {
    let tm = template.metadata.clone().unwrap_or_default();
    let mut labels = tm.labels.unwrap_or_default();
    labels.extend(extra_labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    Pod {
        metadata: ObjectMeta {
            namespace: owner.meta().namespace.clone(),
            labels: Some(labels),
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: Some(vec![controller_ref(owner)]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// Creates a pod; returns its name.
pub async fn create_pod(api: &Api<Pod>, pod: &Pod) -> std::result::Result<Pod, kube::Error> {
    api.create(&PostParams::default(), pod).await
}

pub fn pod_phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// Neither finished nor being deleted (kube's `IsPodActive`).
pub fn is_active(pod: &Pod) -> bool {
    !matches!(pod_phase(pod), "Succeeded" | "Failed") && pod.metadata.deletion_timestamp.is_none()
}

/// When the pod's Ready condition became True, if it is True.
pub fn ready_since(pod: &Pod) -> Option<Timestamp> {
    let c = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?;
    Some(
        c.last_transition_time
            .as_ref()
            .map(|t| t.0)
            .unwrap_or(Timestamp::UNIX_EPOCH),
    )
}

pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// Ready for at least `min_ready_seconds` (kube's `IsPodAvailable`).
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    match ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(t) => t.as_second() + i64::from(min_ready_seconds) <= now.as_second(),
    }
}

/// Seconds until a ready-but-not-yet-available pod becomes available.
pub fn until_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> Option<Duration> {
    let t = ready_since(pod)?;
    let left = t.as_second() + i64::from(min_ready_seconds) - now.as_second();
    (left > 0).then(|| Duration::from_secs(left as u64 + 1))
}

pub fn time(t: Timestamp) -> Time {
    Time(t)
}

/// FNV-1a, 32 bits: the hash kube uses for pod-template and revision hashes.
pub fn fnv32a(data: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in data {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// kube's `rand.SafeEncodeString`: digits and consonants only, so a hash never spells words.
pub fn safe_encode(s: &str) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    s.bytes()
        .map(|b| ALPHANUMS[b as usize % ALPHANUMS.len()] as char)
        .collect()
}

/// The hash of a pod template (plus the collision count), encoded as kube does.
pub fn template_hash(template: &Value, collision_count: Option<i32>) -> String {
    let mut bytes = serde_json::to_vec(template).unwrap_or_default();
    if let Some(c) = collision_count {
        bytes.extend_from_slice(&(c as u32).to_le_bytes());
    }
    safe_encode(&fnv32a(&bytes).to_string())
}

/// Condition list helper: the condition of `type_`, if present.
pub fn find_condition<'a, C>(
    conds: &'a [C],
    type_: &str,
    get: impl Fn(&C) -> &str,
) -> Option<&'a C> {
    conds.iter().find(|c| get(c) == type_)
}

/// Reads `spec.replicas`-style optional counts with kube's default.
pub fn or_default(v: Option<i32>, d: i32) -> i32 {
    v.unwrap_or(d)
}

/// Labels map helper.
pub fn labels_of(meta: &ObjectMeta) -> BTreeMap<String, String> {
    meta.labels.clone().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    #[test]
    fn retries_back_off_exponentially_up_to_five_minutes() {
        assert_eq!(retry_delay(1), Duration::from_secs(1));
        assert_eq!(retry_delay(2), Duration::from_secs(2));
        assert_eq!(retry_delay(5), Duration::from_secs(16));
        assert_eq!(retry_delay(12), Duration::from_secs(300));
        assert_eq!(retry_delay(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn fnv_matches_the_reference_vectors() {
        assert_eq!(fnv32a(b""), 0x811c9dc5);
        assert_eq!(fnv32a(b"a"), 0xe40c292c);
        assert_eq!(fnv32a(b"foobar"), 0xbf9cf968);
    }

    #[test]
    fn template_hash_is_stable_and_changes_with_the_template() {
        let a = json!({"spec": {"containers": [{"name": "x", "image": "a"}]}});
        let b = json!({"spec": {"containers": [{"name": "x", "image": "b"}]}});
        assert_eq!(template_hash(&a, None), template_hash(&a, None));
        assert_ne!(template_hash(&a, None), template_hash(&b, None));
        assert_ne!(template_hash(&a, None), template_hash(&a, Some(1)));
        assert!(template_hash(&a, None)
            .chars()
            .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
    }

    #[test]
    fn selectors_match_labels_and_expressions() {
        let labels: BTreeMap<_, _> = [
            ("app".to_string(), "web".to_string()),
            ("tier".into(), "fe".into()),
        ]
        .into();
        let mut sel = LabelSelector {
            match_labels: Some([("app".to_string(), "web".to_string())].into()),
            ..Default::default()
        };
        assert!(selector_matches(&sel, &labels));
        sel.match_expressions = Some(vec![LabelSelectorRequirement {
            key: "tier".into(),
            operator: "NotIn".into(),
            values: Some(vec!["fe".into()]),
        }]);
        assert!(!selector_matches(&sel, &labels));
        assert!(!selector_matches(&LabelSelector::default(), &labels));
    }
}
