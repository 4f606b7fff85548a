//! The Job controller (NonIndexed completion mode): runs pods until
//! `completions` succeed (or, without `completions`, until one succeeds and
//! the rest finish), at most `parallelism` at a time; failed pods count
//! against `backoffLimit` (restarts too, for `restartPolicy: OnFailure`)
//! with kube's exponential back-off between retries (10 s doubling, 6 min
//! cap); `activeDeadlineSeconds`, `suspend`, and `ttlSecondsAfterFinished`
//! (the Job is deleted, background propagation, once the TTL passes).
//!
//! Conditions as kube 1.32 sets them: `SuccessCriteriaMet` then `Complete`
//! (reason `CompletionsReached`), `FailureTarget` then `Failed` (reasons
//! `BackoffLimitExceeded`, `DeadlineExceeded`); the terminal condition
//! follows once no pod of the Job is still terminating.
//!
//! Pods carry `batch.kubernetes.io/job-name`, `batch.kubernetes.io/controller-uid`
//! (and the legacy `job-name`, `controller-uid`) but not the
//! `batch.kubernetes.io/job-tracking` finalizer: counts are derived from the
//! pods that exist and kept monotonic in status, so a pod deleted after it
//! finished is not counted twice, but one deleted before it was ever seen
//! is not counted at all.
//!
//! Indexed completion mode: one pod per pending index `0..completions`
//! (annotation and label `batch.kubernetes.io/job-completion-index`,
//! hostname `<job>-<index>`, `JOB_COMPLETION_INDEX` in every container),
//! `status.completedIndexes` as ranges. Partial: podFailurePolicy,
//! successPolicy, backoffLimitPerIndex and `failedIndexes` are not implemented.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use kube::api::{Api, DeleteParams};
use kube::runtime::controller::Action;
use kube::ResourceExt;

use super::common::*;

mod plan;
pub use plan::backoff;
use plan::{Finished, JobPlan};

pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
pub const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";

/// Reconciles one Job: observe (the Job, its claimed pods, the clock), [`plan`]
/// (pure), then [`apply`] the plan's pod deletions and creations, events and
/// status.
pub async fn reconcile(job: Arc<Job>, shared: Arc<Shared>) -> Result<Action> {
    let ns = job.namespace().unwrap_or_default();
    let name = job.name_any();
    let japi: Api<Job> = Api::namespaced(shared.client(), &ns);
    let pods_api: Api<Pod> = Api::namespaced(shared.client(), &ns);
    let now = shared.now();
    match plan::finished(&job, now) {
        Some(Finished::Idle) => return Ok(Action::await_change()),
        Some(Finished::WaitTtl(left)) => return Ok(Action::requeue(left)),
        Some(Finished::DeleteJob) => {
            delete_quiet(&japi, &name, &background()).await?;
            return Ok(Action::await_change());
        }
        None => {}
    }
    let selector = plan::selector(&job);
    let all = list_all(&pods_api, "pods").await?;
    let pods = claim(&pods_api, job.as_ref(), all, |p| {
        selector_matches(&selector, &labels_of(&p.metadata))
    })
    .await?;
    let plan = plan::plan(&job, &pods, now);
    apply(&shared, &job, &japi, &pods_api, &plan).await?;
    Ok(Action::requeue(plan.requeue))
}

/// Carries out `plan`: events, deletions, creations, then the status patch
/// (skipped when a creation fails, so the next pass sees the same state).
async fn apply(
    shared: &Shared,
    job: &Job,
    japi: &Api<Job>,
    pods_api: &Api<Pod>,
    plan: &JobPlan,
) -> Result<()> {
    for e in &plan.events {
        shared
            .event(job, e.warning, &e.reason, e.message.clone())
            .await;
    }
    delete_pods(shared, job, pods_api, &plan.delete).await?;
    create_pods(shared, job, pods_api, &plan.create).await?;
    patch_status(
        japi,
        &job.name_any(),
        &serde_json::to_value(job.status.clone().unwrap_or_default()).unwrap_or_default(),
        &serde_json::to_value(&plan.status).unwrap_or_default(),
    )
    .await
}

async fn delete_pods(shared: &Shared, job: &Job, api: &Api<Pod>, names: &[String]) -> Result<()> {
    for pname in names {
        delete_quiet(api, pname, &DeleteParams::background()).await?;
        shared
            .event(
                job,
                false,
                "SuccessfulDelete",
                format!("Deleted pod: {pname}"),
            )
            .await;
    }
    Ok(())
}

/// Creates one pod per entry; `Some(i)` makes the pod for completion index `i`.
async fn create_pods(
    shared: &Shared,
    job: &Job,
    api: &Api<Pod>,
    indexes: &[Option<i32>],
) -> Result<()> {
    let name = job.name_any();
    let uid = job.uid().unwrap_or_default();
    let extra: BTreeMap<String, String> = [
        (CONTROLLER_UID_LABEL.to_string(), uid.clone()),
        (JOB_NAME_LABEL.to_string(), name.clone()),
        ("controller-uid".to_string(), uid),
        ("job-name".to_string(), name.clone()),
    ]
    .into();
    let template = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    for index in indexes {
        let mut pod = pod_from_template(job, &template, &extra);
        pod.metadata.generate_name = Some(format!("{name}-"));
        if let Some(i) = index {
            with_index(&mut pod, &name, *i);
        }
        match create_pod(api, &pod).await {
            Ok(p) => {
                shared
                    .event(
                        job,
                        false,
                        "SuccessfulCreate",
                        format!("Created pod: {}", p.name_any()),
                    )
                    .await
            }
            Err(e) => {
                shared
                    .event(job, true, "FailedCreate", format!("Error creating: {e}"))
                    .await;
                return Err(e).ctx(|| format!("create a pod for job {name}"));
            }
        }
    }
    Ok(())
}

/// The completion index a pod of an Indexed Job runs.
pub fn index_of(p: &Pod) -> Option<i32> {
    let from = |m: Option<&BTreeMap<String, String>>| m?.get(COMPLETION_INDEX)?.parse().ok();
    from(p.metadata.annotations.as_ref()).or_else(|| from(p.metadata.labels.as_ref()))
}

/// Marks a pod as the one for index `i`, as kube does: annotation, label,
/// hostname `<job>-<i>` and `JOB_COMPLETION_INDEX` in every container.
fn with_index(pod: &mut Pod, job: &str, i: i32) {
    pod.metadata.generate_name = Some(format!("{job}-{i}-"));
    pod.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(COMPLETION_INDEX.into(), i.to_string());
    pod.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert(COMPLETION_INDEX.into(), i.to_string());
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.hostname = Some(format!("{job}-{i}"));
    let env = EnvVar {
        name: "JOB_COMPLETION_INDEX".into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: format!("metadata.annotations['{COMPLETION_INDEX}']"),
            }),
            ..Default::default()
        }),
    };
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        let envs = c.env.get_or_insert_with(Vec::new);
        if !envs.iter().any(|e| e.name == env.name) {
            envs.push(env.clone());
        }
    }
}

/// Parses `completedIndexes` ("1,3-5,7").
pub fn parse_indexes(s: &str) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
                    out.extend(a..=b);
                }
            }
            None => out.extend(part.parse::<i32>().ok()),
        }
    }
    out
}

/// Formats indexes as kube writes `completedIndexes`: sorted, runs as ranges.
pub fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut iter = set.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end = iter.next().unwrap_or(end);
        }
        parts.push(if end == start {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn completed_indexes_round_trip_as_ranges() {
        let set: BTreeSet<i32> = [0, 1, 2, 4, 6, 7].into();
        assert_eq!(format_indexes(&set), "0-2,4,6-7");
        assert_eq!(parse_indexes("0-2,4,6-7"), set);
        assert_eq!(format_indexes(&BTreeSet::new()), "");
        assert!(parse_indexes("").is_empty());
    }

    #[test]
    fn indexed_pods_carry_their_index() {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "spec": {"containers": [{"name": "c", "image": "i"}]}
        }))
        .unwrap();
        with_index(&mut pod, "work", 3);
        assert_eq!(index_of(&pod), Some(3));
        let spec = pod.spec.unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("work-3"));
        let env = &spec.containers[0].env.as_ref().unwrap()[0];
        assert_eq!(env.name, "JOB_COMPLETION_INDEX");
    }

    #[test]
    fn backoff_doubles_from_ten_seconds_up_to_six_minutes() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::from_secs(10));
        assert_eq!(backoff(2), Duration::from_secs(20));
        assert_eq!(backoff(4), Duration::from_secs(80));
        assert_eq!(backoff(7), Duration::from_secs(360));
        assert_eq!(backoff(40), Duration::from_secs(360));
    }
}
