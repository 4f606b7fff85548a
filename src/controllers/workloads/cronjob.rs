//! The CronJob controller: at each scheduled time (in `spec.timeZone`, a
//! `CRON_TZ=` prefix, or UTC) it creates the Job `<cronjob>-<minutes since
//! the epoch>` from `jobTemplate`, honouring `suspend`,
//! `startingDeadlineSeconds` and `concurrencyPolicy` (Allow, Forbid,
//! Replace); it keeps `status.active`, `lastScheduleTime` and
//! `lastSuccessfulTime` from the Jobs it owns and deletes finished Jobs
//! beyond `successfulJobsHistoryLimit` (3) and `failedJobsHistoryLimit` (1).
//!
//! Time comes from the [`Clock`](super::common::Clock) seam; the Job name
//! makes each scheduled time's creation idempotent across restarts.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use super::common::*;
use super::cron::{self, Schedule};

pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// The Job name for one scheduled time.
pub fn job_name(cronjob: &str, scheduled: Timestamp) -> String {
    format!("{cronjob}-{}", scheduled.as_second().div_euclid(60))
}

fn job_finished(job: &Job) -> Option<&str> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| c.type_.as_str())
}

fn job_ref(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        ..Default::default()
    }
}

/// Reconciles one CronJob.
pub async fn reconcile(cj: Arc<CronJob>, shared: Arc<Shared>) -> Result<Action> {
    let ns = cj.namespace().unwrap_or_default();
    let uid = cj.uid().unwrap_or_default();
    let spec = cj.spec.clone().unwrap_or_default();
    let old = cj.status.clone().unwrap_or_default();
    let japi: Api<Job> = Api::namespaced(shared.client(), &ns);
    let period = shared.ctx.options.cronjob_period;

    let jobs: Vec<Job> = list_all(&japi, "jobs")
        .await?
        .into_iter()
        .filter(|j| controller_uid(&j.metadata) == Some(uid.as_str()))
        .collect();
    let mut st = CronJobStatus {
        active: None,
        ..old.clone()
    };
    let mut active = Vec::new();
    for j in &jobs {
        match job_finished(j) {
            None if j.metadata.deletion_timestamp.is_none() => active.push(job_ref(j)),
            Some("Complete") => {
                let done = j.status.as_ref().and_then(|s| s.completion_time.clone());
                if let Some(t) = done {
                    if st.last_successful_time.as_ref().is_none_or(|l| l.0 < t.0) {
                        st.last_successful_time = Some(t);
                    }
                }
                if old.active.iter().flatten().any(|r| r.uid == j.metadata.uid) {
                    shared
                        .event(
                            cj.as_ref(),
                            false,
                            "SawCompletedJob",
                            format!("Saw completed job: {}, condition: Complete", j.name_any()),
                        )
                        .await;
                }
            }
            _ => {}
        }
    }
    st.active = (!active.is_empty()).then_some(active.clone());

    let mut requeue = period;
    if cj.metadata.deletion_timestamp.is_none() {
        cleanup_history(&shared, &cj, &japi, &jobs, &spec).await?;
    }
    if cj.metadata.deletion_timestamp.is_none() && !spec.suspend.unwrap_or(false) {
        let sched = Schedule::parse(&spec.schedule);
        let zone = sched
            .as_ref()
            .ok()
            .and_then(|s| s.zone.clone())
            .or(spec.time_zone.clone());
        match (sched, cron::zone(zone.as_deref())) {
            (Err(e), _) => {
                shared
                    .event(
                        cj.as_ref(),
                        true,
                        "UnparseableSchedule",
                        format!("unparseable schedule: {:?} : {e}", spec.schedule),
                    )
                    .await;
                write(&shared, &cj, &old, &st).await?;
                return Ok(Action::await_change());
            }
            (_, Err(e)) => {
                shared
                    .event(
                        cj.as_ref(),
                        true,
                        "UnknownTimeZone",
                        format!("invalid timeZone: {zone:?}: {e}"),
                    )
                    .await;
                write(&shared, &cj, &old, &st).await?;
                return Ok(Action::await_change());
            }
            (Ok(sched), Ok(tz)) => {
                let now = shared.now();
                let mut earliest = st
                    .last_schedule_time
                    .as_ref()
                    .or(cj.metadata.creation_timestamp.as_ref())
                    .map(|t| t.0)
                    .unwrap_or(now);
                if let Some(d) = spec.starting_deadline_seconds {
                    let floor = Timestamp::from_second(now.as_second() - d).unwrap_or(now);
                    earliest = earliest.max(floor);
                }
                let (scheduled, missed) = cron::most_recent(&sched, &tz, earliest, now, 100);
                if missed > 100 {
                    shared.event(cj.as_ref(), true, "TooManyMissedTimes", "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew".into()).await;
                }
                if let Some(at) = scheduled {
                    start_job(&shared, &cj, &japi, &spec, &mut st, &active, &jobs, at, now).await?;
                }
                if let Some(next) = sched.next_after(now, &tz) {
                    let wait =
                        Duration::from_secs((next.as_second() - now.as_second()).max(0) as u64 + 1);
                    requeue = requeue.min(shared.clock.real(wait).max(Duration::from_millis(50)));
                }
            }
        }
    }
    write(&shared, &cj, &old, &st).await?;
    Ok(Action::requeue(requeue))
}

async fn write(
    shared: &Shared,
    cj: &CronJob,
    old: &CronJobStatus,
    st: &CronJobStatus,
) -> Result<()> {
    let api: Api<CronJob> = Api::namespaced(shared.client(), &cj.namespace().unwrap_or_default());
    patch_status(
        &api,
        &cj.name_any(),
        &serde_json::to_value(old).unwrap_or_default(),
        &serde_json::to_value(st).unwrap_or_default(),
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn start_job(
    shared: &Shared,
    cj: &CronJob,
    japi: &Api<Job>,
    spec: &k8s_openapi::api::batch::v1::CronJobSpec,
    st: &mut CronJobStatus,
    active: &[ObjectReference],
    jobs: &[Job],
    at: Timestamp,
    now: Timestamp,
) -> Result<()> {
    let cname = cj.name_any();
    let jname = job_name(&cname, at);
    if jobs.iter().any(|j| j.name_any() == jname) {
        return Ok(());
    }
    if let Some(d) = spec.starting_deadline_seconds {
        if at.as_second() + d < now.as_second() {
            shared
                .event(
                    cj,
                    true,
                    "MissSchedule",
                    format!("Missed scheduled time to start a job: {at}"),
                )
                .await;
            return Ok(());
        }
    }
    match spec.concurrency_policy.as_deref().unwrap_or("Allow") {
        "Forbid" if !active.is_empty() => {
            shared.event(cj, false, "JobAlreadyActive", "Not starting job because prior execution is running and concurrency policy is Forbid".into()).await;
            return Ok(());
        }
        "Replace" => {
            for r in active {
                let n = r.name.clone().unwrap_or_default();
                delete_quiet(japi, &n, &background()).await?;
                shared
                    .event(cj, false, "SuccessfulDelete", format!("Deleted job {n}"))
                    .await;
            }
            st.active = None;
        }
        _ => {}
    }
    let tmpl = spec.job_template.clone();
    let tmeta = tmpl.metadata.unwrap_or_default();
    let mut annotations = tmeta.annotations.unwrap_or_default();
    annotations.insert(SCHEDULED_TIMESTAMP.into(), at.to_string());
    let job = Job {
        metadata: ObjectMeta {
            name: Some(jname.clone()),
            namespace: cj.meta().namespace.clone(),
            labels: tmeta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![controller_ref(cj)]),
            ..Default::default()
        },
        spec: tmpl.spec,
        status: None,
    };
    let created = match japi.create(&PostParams::default(), &job).await {
        Ok(j) => {
            shared
                .event(
                    cj,
                    false,
                    "SuccessfulCreate",
                    format!("Created job {jname}"),
                )
                .await;
            j
        }
        Err(e) if is_status(&e, 409) => {
            japi.get(&jname).await.ctx(|| format!("read job {jname}"))?
        }
        Err(e) => {
            shared
                .event(cj, true, "FailedCreate", format!("Error creating job: {e}"))
                .await;
            return Err(e).ctx(|| format!("create job {jname}"));
        }
    };
    st.active
        .get_or_insert_with(Vec::new)
        .push(job_ref(&created));
    st.last_schedule_time = Some(time(at));
    Ok(())
}

/// Deletes the oldest finished Jobs beyond the history limits.
async fn cleanup_history(
    shared: &Shared,
    cj: &CronJob,
    japi: &Api<Job>,
    jobs: &[Job],
    spec: &k8s_openapi::api::batch::v1::CronJobSpec,
) -> Result<()> {
    for (kind, limit) in [
        ("Complete", spec.successful_jobs_history_limit.unwrap_or(3)),
        ("Failed", spec.failed_jobs_history_limit.unwrap_or(1)),
    ] {
        let mut done: Vec<&Job> = jobs
            .iter()
            .filter(|j| job_finished(j) == Some(kind) && j.metadata.deletion_timestamp.is_none())
            .collect();
        let limit = limit.max(0) as usize;
        if done.len() <= limit {
            continue;
        }
        done.sort_by_key(|j| {
            j.status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .or(j.metadata.creation_timestamp.as_ref())
                .map(|t| t.0.as_second())
                .unwrap_or(0)
        });
        let n = done.len() - limit;
        for j in done.into_iter().take(n) {
            delete_quiet(japi, &j.name_any(), &background()).await?;
            shared
                .event(
                    cj,
                    false,
                    "SuccessfulDelete",
                    format!("Deleted job {}", j.name_any()),
                )
                .await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names_count_minutes_since_the_epoch() {
        let t: Timestamp = "2024-01-01T00:01:00Z".parse().unwrap();
        assert_eq!(job_name("hello", t), "hello-28401121");
    }
}
