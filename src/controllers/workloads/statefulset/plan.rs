//! The StatefulSet controller's decisions, as a pure function of what it
//! observed: the set, its revisions, the pods it owns and the clock. [`plan`]
//! returns the steps of this pass in order (at most one for OrderedReady),
//! the revisions still in use, the status to write and when to look again;
//! `super::apply` carries them out. No API call happens here, so the
//! decisions are unit-tested without a server.
//!
//! The plan walks a copy of the ordinals as they will be after each step: a
//! deleted failed pod leaves it, a created pod joins it (not yet ready, of the
//! revision it is created with), which is what later steps and the status's
//! revision promotion see.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::ordinal_of;
use crate::controllers::workloads::common::*;
use crate::controllers::workloads::history::{self, History};

/// What one pass observed.
pub struct Observed<'a> {
    pub set: &'a StatefulSet,
    pub history: &'a History,
    /// The pods the set owns (after claiming), named `<set>-<ordinal>`.
    pub pods: Vec<Pod>,
    pub now: Timestamp,
}

/// One step, in the order the plan lists them.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    DeletePod(String),
    /// Create the ordinal's claims (those missing), then its pod of `revision`
    /// from `template`.
    CreatePod {
        ordinal: i32,
        revision: String,
        template: PodTemplateSpec,
    },
    /// Delete a condemned ordinal's claims (`whenScaled: Delete`).
    ReleaseClaims(i32),
}

/// What one pass does.
#[derive(Debug, Clone, PartialEq)]
pub struct SetPlan {
    pub steps: Vec<Step>,
    /// Revisions (hashes or names) the pods use, kept by history truncation.
    pub in_use: Vec<String>,
    pub status: StatefulSetStatus,
    pub requeue: Duration,
}

pub(super) fn running_and_ready(p: &Pod) -> bool {
    pod_phase(p) == "Running" && is_ready(p)
}

fn revision_label(p: &Pod) -> Option<&str> {
    p.metadata
        .labels
        .as_ref()?
        .get(history::HASH_LABEL)
        .map(String::as_str)
}

/// The update strategy and ordinals one pass works with.
struct Policy<'a> {
    start: i32,
    end: i32,
    parallel: bool,
    rolling: bool,
    partition: i32,
    scaled_delete: bool,
    current_rev: &'a str,
    update_rev: &'a str,
    current_template: &'a PodTemplateSpec,
    update_template: &'a PodTemplateSpec,
}

/// Decides one pass.
pub fn plan(o: Observed<'_>) -> SetPlan {
    let set = o.set;
    let name = set.name_any();
    let spec = set.spec.clone().unwrap_or_default();
    let old = set.status.clone().unwrap_or_default();
    let hist = o.history;
    let update_rev = hist.update.name_any();
    let current_rev = old
        .current_revision
        .clone()
        .filter(|r| hist.all.iter().any(|cr| cr.name_any() == *r))
        .unwrap_or_else(|| update_rev.clone());
    let current_template = hist
        .all
        .iter()
        .find(|cr| cr.name_any() == current_rev)
        .and_then(history::revision_template)
        .unwrap_or_else(|| spec.template.clone());
    let start = spec.ordinals.as_ref().and_then(|s| s.start).unwrap_or(0);
    let replicas = or_default(spec.replicas, 1);
    let strategy = spec.update_strategy.as_ref();
    let policy = Policy {
        start,
        end: start + replicas,
        parallel: spec.pod_management_policy.as_deref() == Some("Parallel"),
        rolling: strategy.and_then(|u| u.type_.as_deref()) != Some("OnDelete"),
        partition: strategy
            .and_then(|u| u.rolling_update.as_ref())
            .and_then(|r| r.partition)
            .unwrap_or(0),
        scaled_delete: spec
            .persistent_volume_claim_retention_policy
            .as_ref()
            .and_then(|p| p.when_scaled.as_deref())
            == Some("Delete"),
        current_rev: &current_rev,
        update_rev: &update_rev,
        current_template: &current_template,
        update_template: &spec.template,
    };
    let min_ready = or_default(spec.min_ready_seconds, 0);
    let mut by_ord: BTreeMap<i32, Pod> = BTreeMap::new();
    for p in o.pods {
        if let Some(n) = ordinal_of(&name, &p.name_any()) {
            by_ord.insert(n, p);
        }
    }

    // Status from what exists before this pass acts (kube does the same).
    let mut st = StatefulSetStatus {
        observed_generation: set.metadata.generation,
        collision_count: hist.collision_count,
        current_revision: Some(current_rev.clone()),
        update_revision: Some(update_rev.clone()),
        ..Default::default()
    };
    let (mut count, mut ready, mut avail, mut cur, mut upd) = (0, 0, 0, 0, 0);
    for p in by_ord
        .values()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        count += 1;
        if is_ready(p) {
            ready += 1;
            if is_available(p, min_ready, o.now) {
                avail += 1;
            }
        }
        if revision_label(p) == Some(current_rev.as_str()) {
            cur += 1;
        }
        if revision_label(p) == Some(update_rev.as_str()) {
            upd += 1;
        }
    }
    let opt = |n: i32| (n != 0).then_some(n);
    st.replicas = count;
    st.ready_replicas = opt(ready);
    st.available_replicas = opt(avail);
    st.current_replicas = opt(cur);
    st.updated_replicas = opt(upd);
    st.conditions = old.conditions.clone();

    let mut steps = Vec::new();
    policy.steps(&name, &mut by_ord, &mut steps);
    // When every pod runs the update revision, it becomes current.
    let all_updated = (policy.start..policy.end).all(|n| {
        by_ord
            .get(&n)
            .is_some_and(|p| revision_label(p) == Some(update_rev.as_str()) && running_and_ready(p))
    });
    if all_updated && replicas > 0 {
        st.current_revision = Some(update_rev.clone());
        st.current_replicas = st.updated_replicas;
    }
    let in_use: Vec<String> = by_ord
        .values()
        .filter_map(|p| revision_label(p).map(String::from))
        .chain([current_rev.clone()])
        .collect();
    let requeue = if ready > avail {
        Duration::from_secs(min_ready.max(1) as u64)
    } else {
        Duration::from_secs(300)
    };
    SetPlan {
        steps,
        in_use,
        status: st,
        requeue,
    }
}

impl Policy<'_> {
    /// Appends this pass's steps, updating `by_ord` as each would.
    fn steps(&self, name: &str, by_ord: &mut BTreeMap<i32, Pod>, steps: &mut Vec<Step>) {
        let parallel = self.parallel;
        // Replace failed pods, then create missing ones in order.
        for o in self.start..self.end {
            if let Some(p) = by_ord.get(&o) {
                if pod_phase(p) == "Failed" && p.metadata.deletion_timestamp.is_none() {
                    steps.push(Step::DeletePod(p.name_any()));
                    by_ord.remove(&o);
                    if !parallel {
                        return;
                    }
                    continue;
                }
            }
            match by_ord.get(&o) {
                None => {
                    // Below the partition a recreated pod keeps the current revision.
                    let (rev, template) = if self.rolling
                        && o < self.partition
                        && self.current_rev != self.update_rev
                    {
                        (self.current_rev, self.current_template)
                    } else {
                        (self.update_rev, self.update_template)
                    };
                    steps.push(Step::CreatePod {
                        ordinal: o,
                        revision: rev.to_string(),
                        template: template.clone(),
                    });
                    by_ord.insert(o, planned_pod(name, o, rev));
                    if !parallel {
                        return;
                    }
                }
                Some(p) => {
                    if !parallel
                        && (!running_and_ready(p) || p.metadata.deletion_timestamp.is_some())
                    {
                        return;
                    }
                }
            }
        }
        // Condemned ordinals, highest first.
        let condemned: Vec<i32> = by_ord
            .keys()
            .rev()
            .copied()
            .filter(|o| *o >= self.end || *o < self.start)
            .collect();
        for o in &condemned {
            let p = &by_ord[o];
            if p.metadata.deletion_timestamp.is_some() {
                if !parallel {
                    return;
                }
                continue;
            }
            // OrderedReady scales down only while every lower pod is healthy.
            if !parallel && by_ord.iter().any(|(k, q)| k < o && !running_and_ready(q)) {
                return;
            }
            steps.push(Step::DeletePod(p.name_any()));
            if self.scaled_delete {
                steps.push(Step::ReleaseClaims(*o));
            }
            if !parallel {
                return;
            }
        }
        if !condemned.is_empty() {
            return;
        }
        // Rolling update: one pod at a time, highest ordinal first, down to partition.
        if self.rolling
            && by_ord
                .values()
                .all(|p| running_and_ready(p) && p.metadata.deletion_timestamp.is_none())
        {
            for o in (self.start.max(self.partition)..self.end).rev() {
                if let Some(p) = by_ord.get(&o) {
                    if revision_label(p) != Some(self.update_rev) {
                        steps.push(Step::DeletePod(p.name_any()));
                        return;
                    }
                }
            }
        }
    }
}

/// The pod a create step makes, as later steps see it: there, not yet ready.
fn planned_pod(set: &str, ordinal: i32, revision: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("{set}-{ordinal}")),
            labels: Some([(history::HASH_LABEL.to_string(), revision.to_string())].into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ControllerRevision;
    use serde_json::json;

    const OLD: &str = "web-old";
    const NEW: &str = "web-new";

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn set(spec: serde_json::Value, current: &str) -> StatefulSet {
        let mut s = json!({
            "selector": {"matchLabels": {"app": "web"}},
            "serviceName": "web",
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "new"}]}}
        });
        for (k, v) in spec.as_object().unwrap() {
            s[k] = v.clone();
        }
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "generation": 3},
            "spec": s,
            "status": {"replicas": 0, "currentRevision": current}
        }))
        .unwrap()
    }

    fn revision(name: &str, image: &str) -> ControllerRevision {
        let template: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": image}]}}))
        .unwrap();
        ControllerRevision {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            data: Some(k8s_openapi::apimachinery::pkg::runtime::RawExtension(
                history::revision_data(&template),
            )),
            revision: 1,
        }
    }

    fn history() -> History {
        History {
            all: vec![revision(OLD, "old"), revision(NEW, "new")],
            update: revision(NEW, "new"),
            update_hash: "new".into(),
            collision_count: None,
        }
    }

    fn pod(ordinal: i32, rev: &str, phase: &str, ready: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": format!("web-{ordinal}"), "namespace": "default",
                "labels": {"app": "web", "controller-revision-hash": rev}},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": phase, "conditions": [{"type": "Ready",
                "status": if ready { "True" } else { "False" },
                "lastTransitionTime": "1970-01-01T00:00:00Z"}]}
        }))
        .unwrap()
    }

    fn run(s: &StatefulSet, pods: Vec<Pod>) -> SetPlan {
        plan(Observed {
            set: s,
            history: &history(),
            pods,
            now: at(1000),
        })
    }

    fn created(p: &SetPlan) -> Vec<(i32, &str)> {
        p.steps
            .iter()
            .filter_map(|s| match s {
                Step::CreatePod {
                    ordinal, revision, ..
                } => Some((*ordinal, revision.as_str())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn ordered_ready_creates_one_ordinal_at_a_time() {
        let s = set(json!({"replicas": 3}), NEW);
        let p = run(&s, vec![]);
        assert_eq!(created(&p), vec![(0, NEW)]);
        let p = run(&s, vec![pod(0, NEW, "Pending", false)]);
        assert!(p.steps.is_empty(), "web-1 waits for web-0 to be ready");
        let p = run(&s, vec![pod(0, NEW, "Running", true)]);
        assert_eq!(created(&p), vec![(1, NEW)]);
        assert_eq!(p.status.replicas, 1);
        assert_eq!(p.status.ready_replicas, Some(1));
        assert_eq!(p.in_use, vec![NEW.to_string(), NEW.to_string(), NEW.to_string()]);
    }

    #[test]
    fn parallel_creates_every_missing_ordinal_and_replaces_failed_pods() {
        let s = set(json!({"replicas": 3, "podManagementPolicy": "Parallel"}), NEW);
        let p = run(&s, vec![pod(1, NEW, "Failed", false)]);
        assert_eq!(p.steps[0], Step::CreatePod {
            ordinal: 0,
            revision: NEW.into(),
            template: s.spec.as_ref().unwrap().template.clone(),
        });
        assert_eq!(p.steps[1], Step::DeletePod("web-1".into()));
        assert_eq!(created(&p), vec![(0, NEW), (2, NEW)]);
    }

    #[test]
    fn scale_down_goes_from_the_highest_ordinal_and_releases_claims_when_asked() {
        let s = set(
            json!({"replicas": 1, "persistentVolumeClaimRetentionPolicy": {"whenScaled": "Delete"}}),
            NEW,
        );
        let pods = vec![pod(0, NEW, "Running", true), pod(1, NEW, "Running", true), pod(2, NEW, "Running", true)];
        let p = run(&s, pods);
        assert_eq!(p.steps, vec![Step::DeletePod("web-2".into()), Step::ReleaseClaims(2)]);
        let s = set(json!({"replicas": 1}), NEW);
        let p = run(&s, vec![pod(0, NEW, "Pending", false), pod(1, NEW, "Running", true)]);
        assert!(p.steps.is_empty(), "OrderedReady waits for the lower pods to be healthy");
    }

    #[test]
    fn a_rolling_update_replaces_the_highest_old_pod_down_to_the_partition() {
        let s = set(json!({"replicas": 3, "updateStrategy": {"type": "RollingUpdate",
            "rollingUpdate": {"partition": 1}}}), OLD);
        let pods = vec![pod(0, OLD, "Running", true), pod(1, OLD, "Running", true), pod(2, NEW, "Running", true)];
        let p = run(&s, pods);
        assert_eq!(p.steps, vec![Step::DeletePod("web-1".into())]);
        assert_eq!(p.status.current_revision.as_deref(), Some(OLD));
        assert_eq!(p.status.updated_replicas, Some(1));
        // Below the partition a recreated pod keeps the current revision and template.
        let p = run(&s, vec![]);
        let Step::CreatePod { revision, template, .. } = &p.steps[0] else {
            panic!("expected a create, got {:?}", p.steps);
        };
        assert_eq!(revision, OLD);
        assert_eq!(template.spec.as_ref().unwrap().containers[0].image.as_deref(), Some("old"));
    }

    #[test]
    fn the_update_revision_becomes_current_once_every_pod_runs_it() {
        let s = set(json!({"replicas": 2}), OLD);
        let p = run(&s, vec![pod(0, NEW, "Running", true), pod(1, NEW, "Running", true)]);
        assert!(p.steps.is_empty());
        assert_eq!(p.status.current_revision.as_deref(), Some(NEW));
        assert_eq!(p.status.current_replicas, Some(2));
        let p = run(&set(json!({"updateStrategy": {"type": "OnDelete"}, "replicas": 1}), OLD),
            vec![pod(0, OLD, "Running", true)]);
        assert!(p.steps.is_empty(), "OnDelete waits for the user");
        assert_eq!(p.status.current_revision.as_deref(), Some(OLD));
    }
}
