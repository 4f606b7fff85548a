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
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams};
use kube::runtime::controller::Action;
use kube::ResourceExt;

use super::common::*;

pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
pub const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";

/// kube's pod-failure back-off: 10 s, doubling per failure, at most 6 minutes.
pub fn backoff(failures: i32) -> Duration {
    if failures <= 0 {
        return Duration::ZERO;
    }
    let secs = 10u64.saturating_mul(1u64 << (failures - 1).min(10));
    Duration::from_secs(secs.min(360))
}

fn finished_condition(status: &JobStatus) -> Option<&JobCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
}

fn has_condition(status: &JobStatus, type_: &str) -> bool {
    status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == type_ && c.status == "True")
}

fn set_condition(
    status: &mut JobStatus,
    type_: &str,
    value: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    let conds = status.conditions.get_or_insert_with(Vec::new);
    if let Some(c) = conds.iter_mut().find(|c| c.type_ == type_) {
        if c.status != value {
            c.status = value.into();
            c.last_transition_time = Some(time(now));
        }
        c.reason = Some(reason.into());
        c.message = Some(message.into());
        c.last_probe_time = Some(time(now));
        return;
    }
    conds.push(JobCondition {
        type_: type_.into(),
        status: value.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(time(now)),
        last_transition_time: Some(time(now)),
    });
}

/// When a finished pod finished: its containers' latest termination, else its last condition change.
fn finished_at(p: &Pod) -> Timestamp {
    let st = p.status.clone().unwrap_or_default();
    let terminated = st
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|c| {
            c.state
                .as_ref()?
                .terminated
                .as_ref()?
                .finished_at
                .as_ref()
                .map(|t| t.0)
        })
        .max();
    let cond = st
        .conditions
        .iter()
        .flatten()
        .filter_map(|c| c.last_transition_time.as_ref().map(|t| t.0))
        .max();
    terminated
        .or(cond)
        .or(p.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

fn restarts(p: &Pod) -> i32 {
    let st = p.status.clone().unwrap_or_default();
    st.container_statuses
        .iter()
        .flatten()
        .chain(st.init_container_statuses.iter().flatten())
        .map(|c| c.restart_count)
        .sum()
}

/// Reconciles one Job.
pub async fn reconcile(job: Arc<Job>, shared: Arc<Shared>) -> Result<Action> {
    let ns = job.namespace().unwrap_or_default();
    let name = job.name_any();
    let uid = job.uid().unwrap_or_default();
    let japi: Api<Job> = Api::namespaced(shared.client(), &ns);
    let pods_api: Api<Pod> = Api::namespaced(shared.client(), &ns);
    let spec = job.spec.clone().unwrap_or_default();
    let old = job.status.clone().unwrap_or_default();
    let now = shared.now();

    if let Some(done) = finished_condition(&old) {
        let Some(ttl) = spec.ttl_seconds_after_finished else {
            return Ok(Action::await_change());
        };
        let at = old
            .completion_time
            .as_ref()
            .or(done.last_transition_time.as_ref())
            .map(|t| t.0)
            .unwrap_or(now);
        let left = at.as_second() + i64::from(ttl) - now.as_second();
        if left > 0 {
            return Ok(Action::requeue(Duration::from_secs(left as u64)));
        }
        delete_quiet(&japi, &name, &background()).await?;
        return Ok(Action::await_change());
    }
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }

    let selector = spec.selector.clone().unwrap_or_else(|| LabelSelector {
        match_labels: Some([(CONTROLLER_UID_LABEL.to_string(), uid.clone())].into()),
        match_expressions: None,
    });
    let all = list_all(&pods_api, "pods").await?;
    let pods = claim(&pods_api, job.as_ref(), all, |p| {
        selector_matches(&selector, &labels_of(&p.metadata))
    })
    .await?;
    let active: Vec<&Pod> = pods.iter().filter(|p| is_active(p)).collect();
    let terminating = pods
        .iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_some()
                && !matches!(pod_phase(p), "Succeeded" | "Failed")
        })
        .count() as i32;
    let failed_pods: Vec<&Pod> = pods.iter().filter(|p| pod_phase(p) == "Failed").collect();
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let mut done_indexes = parse_indexes(old.completed_indexes.as_deref().unwrap_or(""));
    if indexed {
        let c = spec.completions.unwrap_or(0);
        for p in pods.iter().filter(|p| pod_phase(p) == "Succeeded") {
            if let Some(i) = index_of(p).filter(|i| *i < c) {
                done_indexes.insert(i);
            }
        }
    }
    let succeeded = if indexed {
        done_indexes.len() as i32
    } else {
        pods.iter().filter(|p| pod_phase(p) == "Succeeded").count() as i32
    }
    .max(old.succeeded.unwrap_or(0));
    let failed = (failed_pods.len() as i32).max(old.failed.unwrap_or(0));
    let ready = active.iter().filter(|p| is_ready(p)).count() as i32;

    let mut st = old.clone();
    let suspended = spec.suspend.unwrap_or(false);
    if st.start_time.is_none() && !suspended {
        st.start_time = Some(time(now));
    }
    let backoff_limit = spec.backoff_limit.unwrap_or(6);
    let on_failure = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        == Some("OnFailure");
    let restart_total: i32 = active.iter().map(|p| restarts(p)).sum();
    let past_backoff = failed > backoff_limit
        || (on_failure
            && if backoff_limit == 0 {
                restart_total > 0
            } else {
                restart_total >= backoff_limit
            });
    let deadline_at = spec
        .active_deadline_seconds
        .zip(st.start_time.as_ref())
        .map(|(d, s)| s.0.as_second() + d);
    let past_deadline = !suspended && deadline_at.is_some_and(|at| at <= now.as_second());
    let completions = spec.completions;
    let complete = match completions {
        Some(c) => succeeded >= c,
        None => succeeded > 0 && active.is_empty(),
    };

    let mut requeue: Option<Duration> =
        deadline_at.map(|at| Duration::from_secs((at - now.as_second()).max(1) as u64));
    let failure = if has_condition(&st, "FailureTarget") {
        st.conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "FailureTarget")
            .map(|c| {
                (
                    c.reason.clone().unwrap_or_default(),
                    c.message.clone().unwrap_or_default(),
                )
            })
    } else if past_backoff {
        Some((
            "BackoffLimitExceeded".to_string(),
            "Job has reached the specified backoff limit".to_string(),
        ))
    } else if past_deadline {
        Some((
            "DeadlineExceeded".to_string(),
            "Job was active longer than specified deadline".to_string(),
        ))
    } else {
        None
    };

    if let Some((reason, message)) = failure {
        if !has_condition(&st, "FailureTarget") {
            set_condition(&mut st, "FailureTarget", "True", &reason, &message, now);
            shared
                .event(job.as_ref(), true, &reason, message.clone())
                .await;
        }
        delete_pods(&shared, &job, &pods_api, &active).await?;
        if terminating == 0 {
            set_condition(&mut st, "Failed", "True", &reason, &message, now);
        } else {
            requeue = Some(Duration::from_secs(1));
        }
    } else if complete || has_condition(&st, "SuccessCriteriaMet") {
        let message = "Reached expected number of succeeded pods";
        if !has_condition(&st, "SuccessCriteriaMet") {
            set_condition(
                &mut st,
                "SuccessCriteriaMet",
                "True",
                "CompletionsReached",
                message,
                now,
            );
        }
        delete_pods(&shared, &job, &pods_api, &active).await?;
        if terminating == 0 {
            set_condition(
                &mut st,
                "Complete",
                "True",
                "CompletionsReached",
                message,
                now,
            );
            st.completion_time = Some(time(now));
            shared
                .event(job.as_ref(), false, "Completed", "Job completed".into())
                .await;
        } else {
            requeue = Some(Duration::from_secs(1));
        }
    } else {
        if suspended {
            if !has_condition(&st, "Suspended") {
                set_condition(
                    &mut st,
                    "Suspended",
                    "True",
                    "JobSuspended",
                    "Job suspended",
                    now,
                );
                shared
                    .event(job.as_ref(), false, "Suspended", "Job suspended".into())
                    .await;
            }
        } else if st
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Suspended" && c.status == "True")
        {
            set_condition(
                &mut st,
                "Suspended",
                "False",
                "JobResumed",
                "Job resumed",
                now,
            );
            st.start_time = Some(time(now));
            shared
                .event(job.as_ref(), false, "Resumed", "Job resumed".into())
                .await;
        }
        let parallelism = spec.parallelism.unwrap_or(1).max(0);
        let want = if suspended {
            0
        } else {
            match completions {
                Some(c) => (c - succeeded).clamp(0, parallelism),
                None if succeeded > 0 => 0,
                None => parallelism,
            }
        };
        let have = active.len() as i32;
        if indexed {
            // One active pod per pending index; anything else goes.
            let c = completions.unwrap_or(0);
            let mut running = BTreeSet::new();
            let mut extra: Vec<&Pod> = Vec::new();
            for p in &active {
                match index_of(p) {
                    Some(i)
                        if !suspended
                            && i < c
                            && !done_indexes.contains(&i)
                            && running.insert(i) => {}
                    _ => extra.push(p),
                }
            }
            delete_pods(&shared, &job, &pods_api, &extra).await?;
            let free = if suspended {
                0
            } else {
                (parallelism as usize).saturating_sub(running.len())
            };
            let todo: Vec<Option<i32>> = (0..c)
                .filter(|i| !done_indexes.contains(i) && !running.contains(i))
                .take(free)
                .map(Some)
                .collect();
            let wait = failed_pods
                .iter()
                .map(|p| finished_at(p))
                .max()
                .map(|t| t.as_second() + backoff(failed).as_secs() as i64 - now.as_second())
                .unwrap_or(0);
            if !todo.is_empty() && failed > 0 && wait > 0 {
                requeue = Some(Duration::from_secs(wait as u64));
            } else if !todo.is_empty() {
                create_pods(&shared, &job, &pods_api, &todo).await?;
            }
        } else if have > want {
            let mut extra: Vec<Pod> = active.iter().map(|p| (*p).clone()).collect();
            extra = super::replicaset::pods_to_delete(extra, (have - want) as usize);
            let refs: Vec<&Pod> = extra.iter().collect();
            delete_pods(&shared, &job, &pods_api, &refs).await?;
        } else if have < want {
            let last_failure = failed_pods.iter().map(|p| finished_at(p)).max();
            let wait = last_failure
                .map(|t| t.as_second() + backoff(failed).as_secs() as i64 - now.as_second())
                .unwrap_or(0);
            if failed > 0 && wait > 0 {
                requeue = Some(requeue.map_or(Duration::from_secs(wait as u64), |r| {
                    r.min(Duration::from_secs(wait as u64))
                }));
            } else {
                let n = (want - have) as usize;
                create_pods(&shared, &job, &pods_api, &vec![None; n]).await?;
            }
        }
    }

    let opt = |n: i32| (n != 0).then_some(n);
    st.active = opt(active.len() as i32);
    st.ready = Some(ready);
    st.succeeded = opt(succeeded);
    st.failed = opt(failed);
    st.terminating = Some(terminating);
    st.uncounted_terminated_pods = Some(UncountedTerminatedPods::default());
    if indexed {
        st.completed_indexes = Some(format_indexes(&done_indexes)).filter(|s| !s.is_empty());
    }
    if finished_condition(&st).is_some() {
        st.active = None;
        if let Some(ttl) = spec.ttl_seconds_after_finished {
            requeue = Some(Duration::from_secs(ttl.max(0) as u64));
        }
    }
    patch_status(
        &japi,
        &name,
        &serde_json::to_value(&old).unwrap_or_default(),
        &serde_json::to_value(&st).unwrap_or_default(),
    )
    .await?;
    Ok(Action::requeue(requeue.unwrap_or(Duration::from_secs(300))))
}

async fn delete_pods(shared: &Shared, job: &Job, api: &Api<Pod>, pods: &[&Pod]) -> Result<()> {
    for p in pods {
        let pname = p.name_any();
        delete_quiet(api, &pname, &DeleteParams::background()).await?;
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
