//! The Job controller's decisions, as a pure function of what it observed:
//! the Job, the pods it owns and the clock. [`plan`] returns the pods to
//! delete and create, the events to record, the status to write and when to
//! look again; `super::apply` carries it out. No API call happens here, so
//! the decisions are unit-tested without a server.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::{format_indexes, index_of, parse_indexes, CONTROLLER_UID_LABEL};
use crate::controllers::workloads::common::*;

/// An event the plan asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedEvent {
    pub warning: bool,
    pub reason: String,
    pub message: String,
}

/// What one pass over a Job does.
#[derive(Debug, Clone, PartialEq)]
pub struct JobPlan {
    /// Pods to delete (background propagation), by name.
    pub delete: Vec<String>,
    /// Pods to create; `Some(i)` is the pod for completion index `i`.
    pub create: Vec<Option<i32>>,
    /// Recorded before the pods are touched.
    pub events: Vec<PlannedEvent>,
    /// The whole status as it should be stored (patched as a diff).
    pub status: JobStatus,
    /// When to look again even if nothing changes (deadlines, back-off, TTL).
    pub requeue: Duration,
}

/// A finished or deleted Job's only business: its TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// Nothing to do until the Job changes.
    Idle,
    /// The TTL after finishing runs out in this long.
    WaitTtl(Duration),
    /// The TTL has run out: delete the Job (background propagation).
    DeleteJob,
}

/// `Some` when the Job is finished or being deleted (no pods are managed).
pub fn finished(job: &Job, now: Timestamp) -> Option<Finished> {
    let old = job.status.clone().unwrap_or_default();
    if let Some(done) = finished_condition(&old) {
        let Some(ttl) = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished) else {
            return Some(Finished::Idle);
        };
        let at = old
            .completion_time
            .as_ref()
            .or(done.last_transition_time.as_ref())
            .map(|t| t.0)
            .unwrap_or(now);
        let left = at.as_second() + i64::from(ttl) - now.as_second();
        return Some(if left > 0 {
            Finished::WaitTtl(Duration::from_secs(left as u64))
        } else {
            Finished::DeleteJob
        });
    }
    job.metadata.deletion_timestamp.is_some().then_some(Finished::Idle)
}

/// The Job's pod selector (the controller-uid label when it has none).
pub fn selector(job: &Job) -> LabelSelector {
    job.spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .unwrap_or_else(|| LabelSelector {
            match_labels: Some(
                [(CONTROLLER_UID_LABEL.to_string(), job.uid().unwrap_or_default())].into(),
            ),
            match_expressions: None,
        })
}

fn event(warning: bool, reason: &str, message: &str) -> PlannedEvent {
    PlannedEvent {
        warning,
        reason: reason.into(),
        message: message.into(),
    }
}

fn names(pods: &[&Pod]) -> Vec<String> {
    pods.iter().map(|p| p.name_any()).collect()
}

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

/// The pass over an unfinished Job that owns `pods`.
pub fn plan(job: &Job, pods: &[Pod], now: Timestamp) -> JobPlan {
    let spec = job.spec.clone().unwrap_or_default();
    let old = job.status.clone().unwrap_or_default();
    let mut events = Vec::new();
    let mut delete: Vec<String> = Vec::new();
    let mut create: Vec<Option<i32>> = Vec::new();

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
            events.push(event(true, &reason, &message));
        }
        delete.extend(names(&active));
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
        delete.extend(names(&active));
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
            events.push(event(false, "Completed", "Job completed"));
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
                events.push(event(false, "Suspended", "Job suspended"));
            }
        } else if has_condition(&st, "Suspended") {
            set_condition(
                &mut st,
                "Suspended",
                "False",
                "JobResumed",
                "Job resumed",
                now,
            );
            st.start_time = Some(time(now));
            events.push(event(false, "Resumed", "Job resumed"));
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
        // Seconds of back-off left after the latest failure.
        let backoff_left = failed_pods
            .iter()
            .map(|p| finished_at(p))
            .max()
            .map(|t| t.as_second() + backoff(failed).as_secs() as i64 - now.as_second())
            .unwrap_or(0);
        if indexed {
            // One active pod per pending index; anything else goes.
            let c = completions.unwrap_or(0);
            let mut running = BTreeSet::new();
            for p in &active {
                match index_of(p) {
                    Some(i)
                        if !suspended
                            && i < c
                            && !done_indexes.contains(&i)
                            && running.insert(i) => {}
                    _ => delete.push(p.name_any()),
                }
            }
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
            if !todo.is_empty() && failed > 0 && backoff_left > 0 {
                requeue = Some(Duration::from_secs(backoff_left as u64));
            } else {
                create = todo;
            }
        } else if have > want {
            let extra: Vec<Pod> = active.iter().map(|p| (*p).clone()).collect();
            let extra = crate::controllers::workloads::replicaset::pods_to_delete(
                extra,
                (have - want) as usize,
            );
            delete.extend(extra.iter().map(|p| p.name_any()));
        } else if have < want {
            if failed > 0 && backoff_left > 0 {
                let wait = Duration::from_secs(backoff_left as u64);
                requeue = Some(requeue.map_or(wait, |r| r.min(wait)));
            } else {
                create = vec![None; (want - have) as usize];
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
    JobPlan {
        delete,
        create,
        events,
        status: st,
        requeue: requeue.unwrap_or(Duration::from_secs(300)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn job(spec: serde_json::Value, status: serde_json::Value) -> Job {
        let mut spec = spec;
        spec["template"] = json!({"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}});
        serde_json::from_value(json!({
            "metadata": {"name": "work", "namespace": "default", "uid": "u1"},
            "spec": spec, "status": status
        }))
        .unwrap()
    }

    fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
        match (into, from) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (slot, v) => *slot = v,
        }
    }

    fn pod(name: &str, phase: &str, extra: serde_json::Value) -> Pod {
        let mut v = json!({"metadata": {"name": name, "namespace": "default", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": phase}});
        merge(&mut v, extra);
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn starts_up_to_parallelism_pods_for_the_completions_left() {
        let j = job(json!({"completions": 3, "parallelism": 2}), json!({}));
        let p = plan(&j, &[pod("a", "Succeeded", json!({}))], at(1000));
        assert_eq!(p.create, vec![None, None]);
        assert!(p.delete.is_empty());
        assert_eq!(p.status.succeeded, Some(1));
        assert_eq!(p.status.start_time, Some(time(at(1000))));
        let p = plan(&j, &[pod("a", "Succeeded", json!({})), pod("b", "Succeeded", json!({})), pod("c", "Running", json!({}))], at(1000));
        assert!(p.create.is_empty(), "one left to complete, one running");
    }

    #[test]
    fn completion_sets_the_conditions_and_records_an_event() {
        let j = job(json!({"completions": 1}), json!({}));
        let p = plan(&j, &[pod("a", "Succeeded", json!({}))], at(1000));
        let types: Vec<&str> = p.status.conditions.iter().flatten().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["SuccessCriteriaMet", "Complete"]);
        assert_eq!(p.status.completion_time, Some(time(at(1000))));
        assert_eq!(p.events, vec![event(false, "Completed", "Job completed")]);
        assert_eq!(p.status.active, None);
    }

    #[test]
    fn failures_past_the_backoff_limit_fail_the_job_and_delete_active_pods() {
        let j = job(json!({"completions": 3, "parallelism": 2, "backoffLimit": 1}), json!({}));
        let pods = [
            pod("f1", "Failed", json!({})),
            pod("f2", "Failed", json!({})),
            pod("r", "Running", json!({})),
        ];
        let p = plan(&j, &pods, at(1000));
        assert_eq!(p.delete, vec!["r".to_string()]);
        assert!(p.create.is_empty());
        let failed = p.status.conditions.iter().flatten().find(|c| c.type_ == "Failed").unwrap();
        assert_eq!(failed.reason.as_deref(), Some("BackoffLimitExceeded"));
        assert!(p.events[0].warning);
    }

    #[test]
    fn a_failed_pod_delays_the_replacement_by_the_backoff() {
        let j = job(json!({"completions": 1}), json!({}));
        let failed = pod("f", "Failed", json!({"status": {"conditions": [
            {"type": "Ready", "status": "False", "lastTransitionTime": "1970-01-01T00:16:30Z"}]}}));
        // Failed at 990 s; the first back-off is 10 s: wait until 1000.
        let p = plan(&j, std::slice::from_ref(&failed), at(995));
        assert!(p.create.is_empty());
        assert_eq!(p.requeue, Duration::from_secs(5));
        let p = plan(&j, &[failed], at(1001));
        assert_eq!(p.create, vec![None]);
    }

    #[test]
    fn indexed_jobs_create_the_pending_indexes() {
        let j = job(
            json!({"completions": 4, "parallelism": 2, "completionMode": "Indexed"}),
            json!({"completedIndexes": "0"}),
        );
        let mut running = pod("w1", "Running", json!({}));
        super::super::with_index(&mut running, "work", 1);
        let p = plan(&j, &[running], at(1000));
        assert_eq!(p.create, vec![Some(2)]);
        assert_eq!(p.status.completed_indexes.as_deref(), Some("0"));
    }

    #[test]
    fn a_suspended_job_deletes_its_pods_and_says_so_once() {
        let j = job(json!({"completions": 2, "suspend": true}), json!({}));
        let p = plan(&j, &[pod("r", "Running", json!({}))], at(1000));
        assert_eq!(p.delete, vec!["r".to_string()]);
        assert_eq!(p.events, vec![event(false, "Suspended", "Job suspended")]);
        let mut j2 = j.clone();
        j2.status = Some(p.status);
        assert!(plan(&j2, &[], at(1001)).events.is_empty());
    }

    #[test]
    fn a_finished_job_waits_out_its_ttl_then_goes() {
        let status = json!({"completionTime": "1970-01-01T00:16:40Z",
            "conditions": [{"type": "Complete", "status": "True"}]});
        let j = job(json!({"ttlSecondsAfterFinished": 60}), status.clone());
        assert_eq!(finished(&j, at(1010)), Some(Finished::WaitTtl(Duration::from_secs(50))));
        assert_eq!(finished(&j, at(1060)), Some(Finished::DeleteJob));
        assert_eq!(finished(&job(json!({}), status), at(5000)), Some(Finished::Idle));
        assert_eq!(finished(&job(json!({}), json!({})), at(5000)), None);
    }
}
