//! The Deployment's status: counts summed over its ReplicaSets and the
//! `Available`/`Progressing`/`ReplicaFailure` conditions with kube's
//! reasons, messages and timestamp rules (kube's `calculateStatus` and
//! `syncRolloutStatus`), including the progress deadline.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentStatus, ReplicaSet};
use kube::ResourceExt;

use super::{rs_replicas, rs_status, Rollout};
use crate::controllers::workloads::common::time;

pub(super) fn set_condition(status: &mut DeploymentStatus, mut cond: DeploymentCondition) {
    let conds = status.conditions.get_or_insert_with(Vec::new);
    if let Some(cur) = conds.iter().find(|c| c.type_ == cond.type_) {
        if cur.status == cond.status && cur.reason == cond.reason {
            return;
        }
        if cur.status == cond.status {
            cond.last_transition_time = cur.last_transition_time.clone();
        }
    }
    conds.retain(|c| c.type_ != cond.type_);
    conds.push(cond);
}

pub(super) fn get_condition<'a>(
    status: &'a DeploymentStatus,
    type_: &str,
) -> Option<&'a DeploymentCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_)
}

impl Rollout<'_> {
    pub(super) fn condition(
        &self,
        type_: &str,
        status: &str,
        reason: &str,
        message: String,
    ) -> DeploymentCondition {
        let now = time(self.shared.now());
        DeploymentCondition {
            type_: type_.into(),
            status: status.into(),
            reason: Some(reason.into()),
            message: Some(message),
            last_update_time: Some(now.clone()),
            last_transition_time: Some(now),
        }
    }

    pub(super) fn progress_deadline(&self) -> i32 {
        self.d
            .spec
            .as_ref()
            .and_then(|s| s.progress_deadline_seconds)
            .unwrap_or(600)
    }

    /// kube's `calculateStatus` plus `syncRolloutStatus`: counts and conditions.
    pub(super) fn final_status(&self, track_progress: bool) -> DeploymentStatus {
        let all = self.all();
        let mut s = self.status.clone();
        let sum = |f: &dyn Fn(&ReplicaSet) -> i32| all.iter().map(|r| f(r)).sum::<i32>();
        let replicas = sum(&|r| rs_status(r).0);
        let updated = self.new_rs.as_ref().map(|r| rs_status(r).0).unwrap_or(0);
        let ready = sum(&|r| rs_status(r).1);
        let available = sum(&|r| rs_status(r).2);
        let total_spec = sum(&|r| rs_replicas(r));
        let opt = |n: i32| (n != 0).then_some(n);
        s.replicas = opt(replicas);
        s.updated_replicas = opt(updated);
        s.ready_replicas = opt(ready);
        s.available_replicas = opt(available);
        s.unavailable_replicas = opt((total_spec - available).max(0));
        s.observed_generation = self.d.metadata.generation;
        let max_unavailable = if self.strategy_is_recreate() || self.replicas == 0 {
            0
        } else {
            self.unavailable.min(self.replicas)
        };
        let c = if available >= self.replicas - max_unavailable {
            self.condition(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
            )
        } else {
            self.condition(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
            )
        };
        set_condition(&mut s, c);
        if !track_progress {
            return s;
        }
        let old = self.d.status.clone().unwrap_or_default();
        let current = get_condition(&s, "Progressing").cloned();
        let done = replicas == updated
            && current.as_ref().and_then(|c| c.reason.as_deref()) == Some("NewReplicaSetAvailable");
        if !done {
            let rs_name = self.new_rs.as_ref().map(|r| r.name_any());
            let subject = |what: &str| match &rs_name {
                Some(n) => format!("ReplicaSet {n:?} {what}"),
                None => format!("Deployment {:?} {what}", self.d.name_any()),
            };
            let complete =
                updated == self.replicas && replicas == self.replicas && available == self.replicas;
            let old_old = old.replicas.unwrap_or(0) - old.updated_replicas.unwrap_or(0);
            let progressing = updated > old.updated_replicas.unwrap_or(0)
                || replicas - updated < old_old
                || ready > old.ready_replicas.unwrap_or(0)
                || available > old.available_replicas.unwrap_or(0);
            if complete {
                let c = self.condition(
                    "Progressing",
                    "True",
                    "NewReplicaSetAvailable",
                    subject("has successfully progressed."),
                );
                set_condition(&mut s, c);
            } else if progressing {
                let mut c = self.condition(
                    "Progressing",
                    "True",
                    "ReplicaSetUpdated",
                    subject("is progressing."),
                );
                if let Some(cur) = &current {
                    if cur.status == "True" {
                        c.last_transition_time = cur.last_transition_time.clone();
                    }
                }
                if let Some(conds) = s.conditions.as_mut() {
                    conds.retain(|c| c.type_ != "Progressing");
                }
                set_condition(&mut s, c);
            } else if self.timed_out(current.as_ref()) {
                let c = self.condition(
                    "Progressing",
                    "False",
                    "ProgressDeadlineExceeded",
                    subject("has timed out progressing."),
                );
                set_condition(&mut s, c);
            }
        }
        // The new ReplicaSet's failure, if any, shows on the Deployment.
        let failure = self
            .all()
            .into_iter()
            .filter_map(|r| {
                r.status
                    .as_ref()?
                    .conditions
                    .as_ref()?
                    .iter()
                    .find(|c| c.type_ == "ReplicaFailure")
                    .cloned()
            })
            .next();
        match failure {
            Some(f) => {
                let c = self.condition(
                    "ReplicaFailure",
                    &f.status,
                    f.reason.as_deref().unwrap_or(""),
                    f.message.unwrap_or_default(),
                );
                set_condition(&mut s, c);
            }
            None => {
                if let Some(conds) = s.conditions.as_mut() {
                    conds.retain(|c| c.type_ != "ReplicaFailure");
                }
            }
        }
        s
    }

    fn timed_out(&self, cond: Option<&DeploymentCondition>) -> bool {
        let Some(c) = cond else { return false };
        match c.reason.as_deref() {
            Some("NewReplicaSetAvailable") => false,
            Some("ProgressDeadlineExceeded") => true,
            _ => c.last_update_time.as_ref().is_some_and(|t| {
                t.0.as_second() + i64::from(self.progress_deadline())
                    < self.shared.now().as_second()
            }),
        }
    }

    /// When to look again for the progress deadline while a rollout is under way.
    pub(super) fn deadline_requeue(&self, s: &DeploymentStatus) -> Option<Duration> {
        let c = get_condition(s, "Progressing")?;
        if c.reason.as_deref() != Some("ReplicaSetUpdated")
            && c.reason.as_deref() != Some("NewReplicaSetCreated")
            && c.reason.as_deref() != Some("FoundNewReplicaSet")
        {
            return None;
        }
        let at = c.last_update_time.as_ref()?.0.as_second() + i64::from(self.progress_deadline());
        let left = at - self.shared.now().as_second();
        Some(Duration::from_secs(left.max(0) as u64 + 1))
    }
}
