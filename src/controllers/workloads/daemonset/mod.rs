//! The DaemonSet controller: one pod per eligible node. A node is eligible
//! when the template's `nodeSelector` and required node affinity match it and
//! every NoSchedule/NoExecute taint is tolerated, counting the tolerations
//! kube adds to every daemon pod (not-ready, unreachable, disk/memory/pid
//! pressure, unschedulable, and network-unavailable for host-network pods).
//! Pods get the required node affinity `matchFields metadata.name In [node]`
//! and the scheduler binds them; a node added later gets its pod because
//! node events requeue every DaemonSet.
//!
//! Updates: RollingUpdate deletes old pods within `maxUnavailable` (replacing
//! unavailable old pods first), OnDelete waits for the user; revisions are
//! ControllerRevisions (`kubectl rollout history ds`), the pods' label
//! `controller-revision-hash` is the revision's hash.
//!
//! Partial: `maxSurge` is treated as 0 (kube's default); failed daemon pods
//! are replaced at once, without kube's per-node back-off.
//!
//! Shape: [`reconcile`] observes (revisions, nodes, claimed pods, the clock),
//! [`plan::plan`] decides (pure), [`apply`] acts.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams};
use kube::runtime::controller::Action;
use kube::ResourceExt;

use super::common::*;
use super::history;

mod eligible;
mod plan;
pub use eligible::{default_tolerations, pin_to_node, should_run, target_node};
use plan::{DaemonPlan, Observed};

/// Reconciles one DaemonSet.
pub async fn reconcile(ds: Arc<DaemonSet>, shared: Arc<Shared>) -> Result<Action> {
    let ns = ds.namespace().unwrap_or_default();
    let spec = ds.spec.clone().unwrap_or_default();
    let Some(hist) = history::sync(&shared, ds.as_ref()).await? else {
        return Ok(Action::await_change());
    };
    let nodes: Api<Node> = Api::all(shared.client());
    let nodes = list_all(&nodes, "nodes").await?;
    let pods_api: Api<Pod> = Api::namespaced(shared.client(), &ns);
    let all = list_all(&pods_api, "pods").await?;
    let pods = claim(&pods_api, ds.as_ref(), all, |p| {
        selector_matches(&spec.selector, &labels_of(&p.metadata))
    })
    .await?;
    let plan = plan::plan(Observed {
        ds: &ds,
        nodes: &nodes,
        pods,
        hash: &hist.update_hash,
        collision_count: hist.collision_count,
        now: shared.now(),
    })?;
    apply(&shared, &ds, &pods_api, &hist, &plan).await?;
    Ok(Action::requeue(plan.requeue))
}

/// Carries out `plan`: deletions, creations (stopping at the first failed
/// one), history truncation, then the status patch.
async fn apply(
    shared: &Shared,
    ds: &DaemonSet,
    pods_api: &Api<Pod>,
    hist: &history::History,
    plan: &DaemonPlan,
) -> Result<()> {
    let ns = ds.namespace().unwrap_or_default();
    let name = ds.name_any();
    let spec = ds.spec.clone().unwrap_or_default();
    for pname in &plan.delete {
        delete_quiet(pods_api, pname, &DeleteParams::default()).await?;
        shared
            .event(ds, false, "SuccessfulDelete", format!("Deleted pod: {pname}"))
            .await;
    }
    for node in &plan.create {
        let mut template = spec.template.clone();
        pin_to_node(&mut template, node);
        let mut extra = BTreeMap::new();
        extra.insert(history::HASH_LABEL.to_string(), hist.update_hash.clone());
        if let Some(g) = ds.metadata.generation {
            extra.insert("pod-template-generation".to_string(), g.to_string());
        }
        let mut pod = pod_from_template(ds, &template, &extra);
        pod.metadata.generate_name = Some(format!("{name}-"));
        match create_pod(pods_api, &pod).await {
            Ok(p) => {
                shared
                    .event(ds, false, "SuccessfulCreate", format!("Created pod: {}", p.name_any()))
                    .await
            }
            Err(e) => {
                shared
                    .event(ds, true, "FailedCreate", format!("Error creating: {e}"))
                    .await;
                return Err(e).ctx(|| format!("create a daemon pod for node {node}"));
            }
        }
    }
    history::truncate(
        shared,
        &ns,
        hist,
        &plan.in_use,
        spec.revision_history_limit.unwrap_or(10),
    )
    .await?;
    let api: Api<DaemonSet> = Api::namespaced(shared.client(), &ns);
    patch_status(
        &api,
        &name,
        &serde_json::to_value(ds.status.clone().unwrap_or_default()).unwrap_or_default(),
        &serde_json::to_value(&plan.status).unwrap_or_default(),
    )
    .await
}
