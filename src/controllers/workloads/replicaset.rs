//! The ReplicaSet and ReplicationController controllers: keep `spec.replicas`
//! active pods from the template, claiming pods through the selector and
//! ownerReferences (adopting orphans, releasing pods that stopped matching).
//!
//! Everything is read from the API on each pass (no expectations cache):
//! the pod list is the truth, so a restart neither duplicates nor loses pods.
//! Creation goes in slow-start batches (1, 2, 4, ...) as kube's does, so a
//! failing admission stops after one error; the failure shows as the
//! `ReplicaFailure` condition (reason `FailedCreate`/`FailedDelete`).

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use super::common::*;

/// The most pods one pass creates or deletes (kube's `burstReplicas`).
const BURST: usize = 500;

/// What a replica pass computed, written into the owner's status.
#[derive(Debug, Default)]
pub struct Counts {
    pub replicas: i32,
    pub fully_labeled: i32,
    pub ready: i32,
    pub available: i32,
    /// `(reason, message)` of a failed create or delete.
    pub failure: Option<(String, String)>,
    /// When a ready pod becomes available (minReadySeconds).
    pub recheck: Option<Duration>,
}

/// Deletion preference, lowest first (kube's `ActivePods` ordering):
/// unscheduled, then pending/unknown/running, not ready, ready for less
/// time, more restarts, newer.
fn deletion_rank(pod: &Pod) -> (bool, u8, bool, Reverse<i64>, Reverse<i32>, Reverse<i64>) {
    let phase = match pod_phase(pod) {
        "Pending" => 0,
        "Unknown" => 1,
        _ => 2,
    };
    let scheduled = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_ref())
        .is_some();
    let ready = ready_since(pod);
    let restarts = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).max().unwrap_or(0))
        .unwrap_or(0);
    let created = pod
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .unwrap_or(0);
    (
        scheduled,
        phase,
        ready.is_some(),
        Reverse(ready.map(|t| t.as_second()).unwrap_or(0)),
        Reverse(restarts),
        Reverse(created),
    )
}

/// Picks the `n` pods to delete first.
pub fn pods_to_delete(mut pods: Vec<Pod>, n: usize) -> Vec<Pod> {
    pods.sort_by_key(deletion_rank);
    pods.truncate(n);
    pods
}

/// One pass for any replica owner: claim, create or delete, and count.
pub async fn sync_replicas<K>(
    shared: &Shared,
    owner: &K,
    selector: &LabelSelector,
    template: &PodTemplateSpec,
    replicas: i32,
    min_ready_seconds: i32,
) -> Result<Counts>
where
    K: Resource<DynamicType = ()>,
{
    let ns = owner.meta().namespace.clone().unwrap_or_default();
    let pods_api: Api<Pod> = Api::namespaced(shared.client(), &ns);
    let all = list_all(&pods_api, "pods").await?;
    let owned = claim(&pods_api, owner, all, |p| {
        selector_matches(selector, &labels_of(&p.metadata))
    })
    .await?;
    let active: Vec<Pod> = owned.into_iter().filter(is_active).collect();
    let now = shared.now();
    let mut counts = count(&active, template, min_ready_seconds, now);

    if owner.meta().deletion_timestamp.is_some() {
        return Ok(counts);
    }
    let name = owner.meta().name.clone().unwrap_or_default();
    let diff = active.len() as i64 - i64::from(replicas.max(0));
    if diff < 0 {
        let mut want = (-diff as usize).min(BURST);
        let mut batch = 1;
        let mut pod = pod_from_template(owner, template, &BTreeMap::new());
        pod.metadata.generate_name = Some(format!("{name}-"));
        'batches: while want > 0 {
            let n = batch.min(want);
            let results =
                futures::future::join_all((0..n).map(|_| create_pod(&pods_api, &pod))).await;
            for r in results {
                match r {
                    Ok(p) => {
                        shared
                            .event(
                                owner,
                                false,
                                "SuccessfulCreate",
                                format!("Created pod: {}", p.name_any()),
                            )
                            .await
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        shared
                            .event(
                                owner,
                                true,
                                "FailedCreate",
                                format!("Error creating: {msg}"),
                            )
                            .await;
                        counts.failure = Some(("FailedCreate".into(), msg));
                        break 'batches;
                    }
                }
            }
            want -= n;
            batch *= 2;
        }
    } else if diff > 0 {
        let n = (diff as usize).min(BURST);
        for pod in pods_to_delete(active, n) {
            let pname = pod.name_any();
            match delete_quiet(&pods_api, &pname, &DeleteParams::default()).await {
                Ok(()) => {
                    shared
                        .event(
                            owner,
                            false,
                            "SuccessfulDelete",
                            format!("Deleted pod: {pname}"),
                        )
                        .await
                }
                Err(e) => {
                    let msg = e.to_string();
                    shared
                        .event(
                            owner,
                            true,
                            "FailedDelete",
                            format!("Error deleting: {msg}"),
                        )
                        .await;
                    counts.failure = Some(("FailedDelete".into(), msg));
                    break;
                }
            }
        }
    }
    Ok(counts)
}

fn count(active: &[Pod], template: &PodTemplateSpec, min_ready: i32, now: Timestamp) -> Counts {
    let tlabels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let mut c = Counts {
        replicas: active.len() as i32,
        ..Default::default()
    };
    for p in active {
        let labels = labels_of(&p.metadata);
        if tlabels.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            c.fully_labeled += 1;
        }
        if is_ready(p) {
            c.ready += 1;
            if is_available(p, min_ready, now) {
                c.available += 1;
            } else if let Some(d) = until_available(p, min_ready, now) {
                c.recheck = Some(c.recheck.map_or(d, |r| r.min(d)));
            }
        }
    }
    c
}

fn opt(n: i32) -> Option<i32> {
    (n != 0).then_some(n)
}

fn next_action(counts: &Counts) -> Action {
    match (&counts.failure, counts.recheck) {
        (Some(_), _) => Action::requeue(Duration::from_secs(10)),
        (None, Some(d)) => Action::requeue(d),
        (None, None) => Action::requeue(Duration::from_secs(300)),
    }
}

/// Reconciles one ReplicaSet.
pub async fn reconcile(rs: Arc<ReplicaSet>, shared: Arc<Shared>) -> Result<Action> {
    let spec = rs.spec.clone().unwrap_or_default();
    let template = spec.template.clone().unwrap_or_default();
    let old = serde_json::to_value(rs.status.clone().unwrap_or_default()).unwrap_or_default();
    sync_and_report(
        &shared,
        rs.as_ref(),
        &spec.selector,
        &template,
        spec.replicas,
        spec.min_ready_seconds,
        old,
    )
    .await
}

/// Reconciles one ReplicationController (a ReplicaSet with an equality-only selector).
pub async fn reconcile_rc(rc: Arc<ReplicationController>, shared: Arc<Shared>) -> Result<Action> {
    let spec = rc.spec.clone().unwrap_or_default();
    let template = spec.template.clone().unwrap_or_default();
    // An RC without a selector selects its template's labels (kube's defaulting).
    let match_labels = spec
        .selector
        .clone()
        .or_else(|| template.metadata.as_ref().and_then(|m| m.labels.clone()));
    let selector = LabelSelector {
        match_labels,
        match_expressions: None,
    };
    let old = serde_json::to_value(rc.status.clone().unwrap_or_default()).unwrap_or_default();
    sync_and_report(
        &shared,
        rc.as_ref(),
        &selector,
        &template,
        spec.replicas,
        spec.min_ready_seconds,
        old,
    )
    .await
}

/// The pass both kinds share: sync the replicas, then write the status.
/// A ReplicationController's status has a ReplicaSet's shape (without
/// `terminatingReplicas`), so one typed status serves both.
async fn sync_and_report<K>(
    shared: &Shared,
    owner: &K,
    selector: &LabelSelector,
    template: &PodTemplateSpec,
    replicas: Option<i32>,
    min_ready_seconds: Option<i32>,
    old_status: serde_json::Value,
) -> Result<Action>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let counts = sync_replicas(
        shared,
        owner,
        selector,
        template,
        or_default(replicas, 1),
        or_default(min_ready_seconds, 0),
    )
    .await?;
    let old: ReplicaSetStatus = serde_json::from_value(old_status.clone()).unwrap_or_default();
    let now = time(shared.now());
    let mut conditions: Vec<ReplicaSetCondition> = old
        .conditions
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.type_ != "ReplicaFailure")
        .collect();
    if let Some((reason, message)) = &counts.failure {
        let prev = old
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "ReplicaFailure");
        conditions.push(ReplicaSetCondition {
            type_: "ReplicaFailure".into(),
            status: "True".into(),
            reason: Some(reason.clone()),
            message: Some(message.clone()),
            last_transition_time: Some(
                prev.and_then(|p| p.last_transition_time.clone())
                    .unwrap_or(now),
            ),
        });
    }
    let status = ReplicaSetStatus {
        replicas: counts.replicas,
        fully_labeled_replicas: opt(counts.fully_labeled),
        ready_replicas: opt(counts.ready),
        available_replicas: opt(counts.available),
        observed_generation: owner.meta().generation,
        conditions: (!conditions.is_empty()).then_some(conditions),
        terminating_replicas: None,
    };
    let api: Api<K> = Api::namespaced(shared.client(), &owner.namespace().unwrap_or_default());
    patch_status(
        &api,
        &owner.name_any(),
        &old_status,
        &serde_json::to_value(&status).unwrap_or_default(),
    )
    .await?;
    Ok(next_action(&counts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn pod(name: &str, node: Option<&str>, phase: &str, ready: bool, created: i64) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Some(Time(Timestamp::from_second(created).unwrap())),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(Into::into),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: ready.then(|| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn scale_down_prefers_unscheduled_then_not_ready_then_newest() {
        let pods = vec![
            pod("ready-old", Some("n"), "Running", true, 10),
            pod("ready-new", Some("n"), "Running", true, 20),
            pod("unready", Some("n"), "Running", false, 5),
            pod("unscheduled", None, "Pending", false, 1),
        ];
        let names: Vec<_> = pods_to_delete(pods, 3)
            .iter()
            .map(|p| p.name_any())
            .collect();
        assert_eq!(names, ["unscheduled", "unready", "ready-new"]);
    }
}
