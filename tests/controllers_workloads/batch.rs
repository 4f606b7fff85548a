//! Jobs and CronJobs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::harness::*;

/// Waits up to 60 s for Job `name` to have condition `kind` True; the Job.
fn wait_job_condition(c: &Cluster, name: &str, kind: &str, what: &str) -> Job {
    wait_for(what, 60, || {
        let j: Job = c.get(name);
        j.status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .any(|c| c.type_ == kind && c.status == "True")
            .then_some(j)
    })
}

#[test]
fn jobs_complete_or_fail_after_the_backoff_limit() {
    let c = Cluster::start(&["n1"]);
    c.apply(
        r#"
apiVersion: batch/v1
kind: Job
metadata: {name: ok}
spec:
  completions: 2
  parallelism: 1
  template:
    metadata: {labels: {sim: succeed}}
    spec: {restartPolicy: Never, containers: [{name: c, image: a}]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: bad}
spec:
  backoffLimit: 1
  template:
    metadata: {labels: {sim: fail}}
    spec: {restartPolicy: Never, containers: [{name: c, image: a}]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: ttl}
spec:
  ttlSecondsAfterFinished: 1
  template:
    metadata: {labels: {sim: succeed}}
    spec: {restartPolicy: Never, containers: [{name: c, image: a}]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: slow}
spec:
  activeDeadlineSeconds: 2
  template:
    spec: {restartPolicy: Never, containers: [{name: c, image: a}]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: idx}
spec:
  completionMode: Indexed
  completions: 3
  parallelism: 2
  template:
    metadata: {labels: {sim: succeed}}
    spec: {restartPolicy: Never, containers: [{name: c, image: a}]}
"#,
    );
    let ok: Job = wait_job_condition(&c, "ok", "Complete", "job ok complete");
    let st = ok.status.unwrap();
    assert_eq!(st.succeeded, Some(2));
    assert!(st.start_time.is_some() && st.completion_time.is_some());
    assert!(st
        .conditions
        .unwrap()
        .iter()
        .any(|c| c.type_ == "SuccessCriteriaMet"));
    let pods = c.pods("batch.kubernetes.io/job-name=ok");
    assert_eq!(pods.len(), 2);
    assert!(pods.iter().all(|p| p.owner_references()[0].kind == "Job"
        && p.labels()
            .contains_key("batch.kubernetes.io/controller-uid")));
    c.kubectl.run_ok(&[
        "wait",
        "--for=condition=complete",
        "job/ok",
        "--timeout=10s",
    ]);

    let bad: Job = wait_job_condition(&c, "bad", "Failed", "job bad failed");
    let st = bad.status.unwrap();
    assert_eq!(st.failed, Some(2));
    let failed = st
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Failed")
        .unwrap();
    assert_eq!(failed.reason.as_deref(), Some("BackoffLimitExceeded"));
    assert_eq!(c.pods("batch.kubernetes.io/job-name=bad").len(), 2);

    let slow: Job = wait_job_condition(&c, "slow", "Failed", "job slow past its deadline");
    let reasons: Vec<_> = slow
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .filter_map(|c| c.reason)
        .collect();
    assert!(
        reasons.iter().all(|r| r == "DeadlineExceeded"),
        "{reasons:?}"
    );
    assert!(live(c.pods("batch.kubernetes.io/job-name=slow")).is_empty());

    let idx: Job = wait_job_condition(&c, "idx", "Complete", "indexed job complete");
    let st = idx.status.unwrap();
    assert_eq!(
        (st.succeeded, st.completed_indexes.as_deref()),
        (Some(3), Some("0-2"))
    );
    let mut hosts: Vec<String> = c
        .pods("batch.kubernetes.io/job-name=idx")
        .iter()
        .filter_map(|p| p.spec.as_ref()?.hostname.clone())
        .collect();
    hosts.sort();
    assert_eq!(hosts, ["idx-0", "idx-1", "idx-2"]);

    wait_for("job ttl deleted after it finished", 60, || {
        c.list::<Job>()
            .iter()
            .all(|j| j.name_any() != "ttl")
            .then_some(())
    });
}

#[test]
fn cronjob_starts_jobs_on_schedule() {
    let clock = Arc::new(FastClock {
        start: Timestamp::now(),
        real: Instant::now(),
        factor: 60,
    });
    let c = Cluster::start_with_clock(&["n1"], Some(clock));
    c.kubectl.run_ok(&[
        "create",
        "cronjob",
        "tick",
        "--image=a",
        "--schedule=*/1 * * * *",
    ]);
    let jobs = wait_for("two scheduled jobs", 60, || {
        let jobs: Vec<Job> = c
            .list::<Job>()
            .into_iter()
            .filter(|j| j.name_any().starts_with("tick-"))
            .collect();
        (jobs.len() >= 2).then_some(jobs)
    });
    for j in &jobs {
        let minutes: i64 = j
            .name_any()
            .trim_start_matches("tick-")
            .parse()
            .expect("tick-<minutes>");
        assert!(minutes > 0);
        assert_eq!(j.owner_references()[0].kind, "CronJob");
        assert!(j
            .annotations()
            .contains_key("batch.kubernetes.io/cronjob-scheduled-timestamp"));
    }
    let cj: k8s_openapi::api::batch::v1::CronJob = c.get("tick");
    let st = cj.status.unwrap();
    assert!(st.last_schedule_time.is_some());
    assert!(!st.active.unwrap_or_default().is_empty());
    // Suspended: no more jobs.
    c.kubectl.run_ok(&[
        "patch",
        "cronjob/tick",
        "-p",
        r#"{"spec":{"suspend":true}}"#,
    ]);
    std::thread::sleep(Duration::from_millis(500));
    let n = c.list::<Job>().len();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(c.list::<Job>().len(), n);

    // Forbid never starts a second Job while one runs; finished Jobs past
    // successfulJobsHistoryLimit are deleted.
    c.apply(
        r#"
apiVersion: batch/v1
kind: CronJob
metadata: {name: solo}
spec:
  schedule: "* * * * *"
  concurrencyPolicy: Forbid
  jobTemplate:
    spec:
      template:
        spec: {restartPolicy: Never, containers: [{name: c, image: a}]}
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: hist}
spec:
  schedule: "* * * * *"
  successfulJobsHistoryLimit: 1
  jobTemplate:
    spec:
      template:
        metadata: {labels: {sim: succeed}}
        spec: {restartPolicy: Never, containers: [{name: c, image: a}]}
"#,
    );
    let mut seen = std::collections::BTreeSet::new();
    wait_for("hist jobs trimmed to the history limit", 60, || {
        let jobs: Vec<Job> = c
            .list::<Job>()
            .into_iter()
            .filter(|j| j.name_any().starts_with("hist-"))
            .collect();
        seen.extend(jobs.iter().map(|j| j.name_any()));
        let complete = jobs
            .iter()
            .filter(|j| {
                j.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Complete"))
            })
            .count();
        let cj: k8s_openapi::api::batch::v1::CronJob = c.get("hist");
        let succeeded_once = cj.status.and_then(|s| s.last_successful_time).is_some();
        (seen.len() >= 3 && complete == 1 && succeeded_once).then_some(())
    });
    let solo: Vec<String> = c
        .list::<Job>()
        .iter()
        .map(|j| j.name_any())
        .filter(|n| n.starts_with("solo-"))
        .collect();
    assert_eq!(solo.len(), 1, "{solo:?}");
    let _ = &c.server;
}
