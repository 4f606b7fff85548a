//! The Deployment controller: ReplicaSets named `<deployment>-<hash>` (the
//! hash of the pod template and `collisionCount`, also the
//! `pod-template-hash` label on the ReplicaSet's selector and template),
//! rolling updates within maxSurge/maxUnavailable, Recreate, pause/resume,
//! revisions (`deployment.kubernetes.io/revision`, `revision-history`,
//! `desired-replicas`, `max-replicas`), history cleanup and the
//! `Available`/`Progressing` conditions with kube's reasons and messages, so
//! `kubectl rollout status|history|undo|restart|pause|resume` work.
//!
//! The new ReplicaSet is the one whose template equals the Deployment's
//! ignoring the hash label, so `kubectl rollout undo` (which copies an old
//! ReplicaSet's template back) reuses that ReplicaSet under a new revision.
//!
//! Partial: the template hash is FNV-32a over the template's JSON, not over
//! Go's struct dump, so names differ from a real cluster's (same shape and
//! alphabet); proportional scaling during a rollout splits the change by
//! current size rather than by each ReplicaSet's `max-replicas` annotation.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::ResourceExt;
use serde_json::{json, Value};

use self::status::{get_condition, set_condition};
use super::common::*;
use super::rollout;

mod status;
mod strategy;

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub const HASH_LABEL: &str = "pod-template-hash";
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// One pass's view of a Deployment and its ReplicaSets.
struct Rollout<'a> {
    shared: &'a Shared,
    d: &'a Deployment,
    api: Api<ReplicaSet>,
    replicas: i32,
    surge: i32,
    unavailable: i32,
    template: Value,
    new_rs: Option<ReplicaSet>,
    olds: Vec<ReplicaSet>,
    /// Conditions set while finding/creating the new ReplicaSet.
    status: DeploymentStatus,
}

fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn rs_status(rs: &ReplicaSet) -> (i32, i32, i32) {
    let s = rs.status.clone().unwrap_or_default();
    (
        s.replicas,
        s.ready_replicas.unwrap_or(0),
        s.available_replicas.unwrap_or(0),
    )
}

pub fn revision_of(meta: &ObjectMeta) -> i64 {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// The RS template without its hash label, comparable to the Deployment's.
fn template_sans_hash(rs: &ReplicaSet) -> Value {
    let mut t = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(HASH_LABEL);
    }
    serde_json::to_value(&t).unwrap_or_default()
}

fn created(rs: &ReplicaSet) -> (i64, String) {
    (
        rs.metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second())
            .unwrap_or(0),
        rs.name_any(),
    )
}

/// Annotations a ReplicaSet inherits from its Deployment (kube skips its own bookkeeping keys).
fn copied_annotations(d: &Deployment) -> BTreeMap<String, String> {
    d.annotations()
        .iter()
        .filter(|(k, _)| {
            ![
                LAST_APPLIED,
                REVISION,
                REVISION_HISTORY,
                DESIRED_REPLICAS,
                MAX_REPLICAS,
            ]
            .contains(&k.as_str())
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

impl Rollout<'_> {
    fn all(&self) -> Vec<&ReplicaSet> {
        self.olds.iter().chain(self.new_rs.iter()).collect()
    }

    fn max_old_revision(&self) -> i64 {
        self.olds
            .iter()
            .map(|rs| revision_of(&rs.metadata))
            .max()
            .unwrap_or(0)
    }

    /// Sets `spec.replicas` and the desired/max annotations; records `ScalingReplicaSet`.
    async fn scale(&self, rs: &ReplicaSet, n: i32) -> Result<ReplicaSet> {
        let cur = rs_replicas(rs);
        let ann = rs.annotations();
        let desired = self.replicas.to_string();
        let max = (self.replicas + self.surge).to_string();
        if cur == n
            && ann.get(DESIRED_REPLICAS) == Some(&desired)
            && ann.get(MAX_REPLICAS) == Some(&max)
        {
            return Ok(rs.clone());
        }
        let patch = json!({
            "metadata": {"annotations": {DESIRED_REPLICAS: desired, MAX_REPLICAS: max}},
            "spec": {"replicas": n},
        });
        let name = rs.name_any();
        let out = self
            .api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .ctx(|| format!("scale replica set {name}"))?;
        if cur != n {
            let op = if n > cur { "up" } else { "down" };
            self.shared
                .event(
                    self.d,
                    false,
                    "ScalingReplicaSet",
                    format!("Scaled {op} replica set {name} from {cur} to {n}"),
                )
                .await;
        }
        Ok(out)
    }

    async fn scale_new(&mut self, n: i32) -> Result<bool> {
        let Some(rs) = self.new_rs.clone() else {
            return Ok(false);
        };
        let changed = rs_replicas(&rs) != n;
        self.new_rs = Some(self.scale(&rs, n).await?);
        Ok(changed)
    }

    async fn scale_old(&mut self, i: usize, n: i32) -> Result<()> {
        let rs = self.olds[i].clone();
        self.olds[i] = self.scale(&rs, n).await?;
        Ok(())
    }

    /// Finds the new ReplicaSet, bringing its revision and annotations up to
    /// date, or creates it when `create`.
    async fn new_replica_set(&mut self, create: bool) -> Result<()> {
        let new_revision = (self.max_old_revision() + 1).to_string();
        if let Some(rs) = self.new_rs.clone() {
            let mut ann = copied_annotations(self.d);
            let cur_rev = revision_of(&rs.metadata);
            let mut history = rs.annotations().get(REVISION_HISTORY).cloned();
            if cur_rev < self.max_old_revision() + 1 {
                if cur_rev > 0 {
                    history = Some(match history {
                        Some(h) if !h.is_empty() => format!("{h},{cur_rev}"),
                        _ => cur_rev.to_string(),
                    });
                }
                ann.insert(REVISION.into(), new_revision.clone());
            }
            if let Some(h) = history {
                ann.insert(REVISION_HISTORY.into(), h);
            }
            let min_ready = self.d.spec.as_ref().and_then(|s| s.min_ready_seconds);
            let stale = ann.iter().any(|(k, v)| rs.annotations().get(k) != Some(v))
                || rs.spec.as_ref().and_then(|s| s.min_ready_seconds) != min_ready;
            if stale {
                let name = rs.name_any();
                let patch = json!({"metadata": {"annotations": ann}, "spec": {"minReadySeconds": min_ready}});
                let updated = self
                    .api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .ctx(|| format!("annotate replica set {name}"))?;
                self.new_rs = Some(updated);
            }
            if get_condition(&self.status, "Progressing").is_none() {
                let c = self.condition(
                    "Progressing",
                    "True",
                    "FoundNewReplicaSet",
                    format!("Found new replica set {:?}", rs.name_any()),
                );
                set_condition(&mut self.status, c);
            }
            return Ok(());
        }
        if !create {
            return Ok(());
        }
        let dspec = self.d.spec.clone().unwrap_or_default();
        let collision = self.status.collision_count;
        let hash = template_hash(&self.template, collision);
        let name = format!("{}-{hash}", self.d.name_any());
        let mut template: PodTemplateSpec = dspec.template.clone();
        template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(Default::default)
            .insert(HASH_LABEL.into(), hash.clone());
        let mut selector: LabelSelector = dspec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(Default::default)
            .insert(HASH_LABEL.into(), hash.clone());
        let total: i32 = self.olds.iter().map(rs_replicas).sum();
        let replicas = match self.strategy_is_recreate() {
            true => self.replicas,
            false => rollout::new_rs_replicas(self.replicas, self.surge, total, 0),
        };
        let mut ann = copied_annotations(self.d);
        ann.insert(REVISION.into(), new_revision.clone());
        ann.insert(DESIRED_REPLICAS.into(), self.replicas.to_string());
        ann.insert(
            MAX_REPLICAS.into(),
            (self.replicas + self.surge).to_string(),
        );
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: self.d.namespace(),
                labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
                annotations: Some(ann),
                owner_references: Some(vec![controller_ref(self.d)]),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                min_ready_seconds: dspec.min_ready_seconds,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        match self.api.create(&PostParams::default(), &rs).await {
            Ok(created) => {
                if replicas > 0 {
                    self.shared
                        .event(
                            self.d,
                            false,
                            "ScalingReplicaSet",
                            format!("Scaled up replica set {name} from 0 to {replicas}"),
                        )
                        .await;
                }
                let c = self.condition(
                    "Progressing",
                    "True",
                    "NewReplicaSetCreated",
                    format!("Created new replica set {name:?}"),
                );
                set_condition(&mut self.status, c);
                self.new_rs = Some(created);
                Ok(())
            }
            Err(e) if is_status(&e, 409) => {
                // Same name, other template (or not ours): a hash collision. Bump
                // collisionCount so the next pass hashes to another name.
                let existing = self
                    .api
                    .get(&name)
                    .await
                    .ctx(|| format!("read replica set {name}"))?;
                if controller_uid(&existing.metadata) == self.d.uid().as_deref()
                    && template_sans_hash(&existing) == self.template
                {
                    self.new_rs = Some(existing);
                    return Ok(());
                }
                self.status.collision_count = Some(collision.unwrap_or(0) + 1);
                Err(Error::Invalid {
                    field: "replica set name".into(),
                    message: format!("hash collision on {name}"),
                })
            }
            Err(e) => {
                let msg = e.to_string();
                let c = self.condition(
                    "Progressing",
                    "False",
                    "ReplicaSetCreateError",
                    format!("Failed to create new replica set {name:?}: {msg}"),
                );
                set_condition(&mut self.status, c);
                Err(e).ctx(|| format!("create replica set {name}"))
            }
        }
    }

    fn strategy_is_recreate(&self) -> bool {
        self.d
            .spec
            .as_ref()
            .and_then(|s| s.strategy.as_ref())
            .and_then(|s| s.type_.as_deref())
            == Some("Recreate")
    }

    /// The new RS's revision on the Deployment's own annotation (what `rollout history` prints).
    async fn sync_deployment_revision(&self) -> Result<()> {
        let Some(rs) = &self.new_rs else {
            return Ok(());
        };
        let rev = revision_of(&rs.metadata).to_string();
        if self.d.annotations().get(REVISION) == Some(&rev) {
            return Ok(());
        }
        let api: Api<Deployment> = Api::namespaced(
            self.shared.client(),
            &self.d.namespace().unwrap_or_default(),
        );
        let patch = json!({"metadata": {"annotations": {REVISION: rev}}});
        api.patch(
            &self.d.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .ctx(|| format!("annotate deployment {}", self.d.name_any()))?;
        Ok(())
    }
}

/// Reconciles one Deployment.
pub async fn reconcile(d: Arc<Deployment>, shared: Arc<Shared>) -> Result<Action> {
    let ns = d.namespace().unwrap_or_default();
    let name = d.name_any();
    let dapi: Api<Deployment> = Api::namespaced(shared.client(), &ns);
    let api: Api<ReplicaSet> = Api::namespaced(shared.client(), &ns);
    let spec = d.spec.clone().unwrap_or_default();
    let old_status = d.status.clone().unwrap_or_default();
    let old_value = serde_json::to_value(&old_status).unwrap_or_default();

    let selector = spec.selector.clone();
    let empty = selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(|m| m.is_empty());
    if empty {
        shared
            .event(
                d.as_ref(),
                true,
                "SelectingAll",
                "This deployment is selecting all pods. A non-empty selector is required.".into(),
            )
            .await;
        let mut s = old_status.clone();
        s.observed_generation = d.metadata.generation;
        patch_status(
            &dapi,
            &name,
            &old_value,
            &serde_json::to_value(&s).unwrap_or_default(),
        )
        .await?;
        return Ok(Action::await_change());
    }
    let rs_list = list_all(&api, "replica sets").await?;
    let mine = claim(&api, d.as_ref(), rs_list, |rs| {
        selector_matches(&selector, &labels_of(&rs.metadata))
    })
    .await?;

    let replicas = or_default(spec.replicas, 1);
    let rolling = spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.clone())
        .unwrap_or_default();
    let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
    let (surge, unavailable) = if recreate {
        (0, 0)
    } else {
        rollout::resolve_fenceposts(
            rolling.max_surge.as_ref(),
            rolling.max_unavailable.as_ref(),
            replicas,
        )
        .map_err(|message| Error::Invalid {
            field: "spec.strategy.rollingUpdate".into(),
            message,
        })?
    };
    let template = serde_json::to_value(&spec.template).unwrap_or_default();
    let mut candidates: Vec<ReplicaSet> = mine
        .iter()
        .filter(|rs| template_sans_hash(rs) == template)
        .cloned()
        .collect();
    candidates.sort_by_key(created);
    let new_rs = candidates.into_iter().next();
    let olds = mine
        .into_iter()
        .filter(|rs| Some(rs.uid()) != new_rs.as_ref().map(|n| n.uid()))
        .collect();
    let mut r = Rollout {
        shared: &shared,
        d: d.as_ref(),
        api,
        replicas,
        surge,
        unavailable,
        template,
        new_rs,
        olds,
        status: old_status.clone(),
    };

    let paused = spec.paused.unwrap_or(false);
    let mut requeue = None;
    if d.metadata.deletion_timestamp.is_some() {
        // Only report; the garbage collector removes the ReplicaSets.
    } else {
        let cond = get_condition(&r.status, "Progressing").cloned();
        let timed_out =
            cond.as_ref().and_then(|c| c.reason.as_deref()) == Some("ProgressDeadlineExceeded");
        let paused_cond =
            cond.as_ref().and_then(|c| c.reason.as_deref()) == Some("DeploymentPaused");
        if !timed_out && paused && !paused_cond {
            let c = r.condition(
                "Progressing",
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused".into(),
            );
            set_condition(&mut r.status, c);
        } else if !timed_out && !paused && paused_cond {
            let c = r.condition(
                "Progressing",
                "Unknown",
                "DeploymentResumed",
                "Deployment is resumed".into(),
            );
            set_condition(&mut r.status, c);
        }
        let scaling = r.is_scaling_event();
        if paused || scaling {
            r.new_replica_set(false).await?;
            r.proportional_scale().await?;
            if paused {
                r.cleanup().await?;
            }
        } else if recreate {
            requeue = r.recreate().await?;
        } else {
            requeue = r.rolling().await?;
        }
        r.sync_deployment_revision().await?;
    }
    let status = r.final_status(!paused && d.metadata.deletion_timestamp.is_none());
    let deadline = if paused {
        None
    } else {
        r.deadline_requeue(&status)
    };
    patch_status(
        &dapi,
        &name,
        &old_value,
        &serde_json::to_value(&status).unwrap_or_default(),
    )
    .await?;
    let next = [requeue, deadline]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(Duration::from_secs(300));
    Ok(Action::requeue(next))
}
