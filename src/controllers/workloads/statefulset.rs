//! The StatefulSet controller: pods `<set>-<ordinal>` with stable identity
//! (`statefulset.kubernetes.io/pod-name`, `apps.kubernetes.io/pod-index`,
//! hostname and `serviceName` subdomain), PVCs `<claim>-<set>-<ordinal>`
//! from `volumeClaimTemplates`, OrderedReady (ordinal N+1 only once N is
//! Running and Ready; scale down from the highest ordinal, one at a time) or
//! Parallel management, RollingUpdate from the highest ordinal down to
//! `partition` (or OnDelete), ControllerRevisions with the
//! `controller-revision-hash` label, and kube's status fields.
//!
//! PVCs are kept when pods go unless `persistentVolumeClaimRetentionPolicy`
//! says `Delete`: `whenDeleted: Delete` makes the set their owner (the
//! garbage collector removes them with it), `whenScaled: Delete` deletes a
//! condemned ordinal's claims once its pod is gone.
//!
//! Partial: `spec.ordinals.start` is honoured; `maxUnavailable` for rolling
//! updates is 1 (the stable default).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::Action;
use kube::ResourceExt;

use super::common::*;
use super::history;

pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// The ordinal of a pod named `<set>-<n>`, if it is one of this set's names.
pub fn ordinal_of(set: &str, pod: &str) -> Option<i32> {
    let n = pod.strip_prefix(set)?.strip_prefix('-')?;
    if n.is_empty() || (n.len() > 1 && n.starts_with('0')) {
        return None;
    }
    n.parse().ok()
}

/// The claim name for one template and ordinal.
pub fn claim_name(template: &str, set: &str, ordinal: i32) -> String {
    format!("{template}-{set}-{ordinal}")
}

fn running_and_ready(p: &Pod) -> bool {
    pod_phase(p) == "Running" && is_ready(p)
}

fn revision_label(p: &Pod) -> Option<&str> {
    p.metadata
        .labels
        .as_ref()?
        .get(history::HASH_LABEL)
        .map(String::as_str)
}

/// Reconciles one StatefulSet.
pub async fn reconcile(set: Arc<StatefulSet>, shared: Arc<Shared>) -> Result<Action> {
    let ns = set.namespace().unwrap_or_default();
    let name = set.name_any();
    let spec = set.spec.clone().unwrap_or_default();
    let old = set.status.clone().unwrap_or_default();
    if set.metadata.deletion_timestamp.is_some() {
        // Being deleted: the garbage collector removes pods and revisions;
        // writing a new revision now would only race it.
        return Ok(Action::await_change());
    }
    let mut collision = old.collision_count;
    let hist = history::sync(
        &shared,
        set.as_ref(),
        &spec.selector,
        &spec.template,
        &mut collision,
    )
    .await?;
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

    let pods_api: Api<Pod> = Api::namespaced(shared.client(), &ns);
    let all = list_all(&pods_api, "pods").await?;
    let owned = claim(&pods_api, set.as_ref(), all, |p| {
        selector_matches(&spec.selector, &labels_of(&p.metadata))
            && ordinal_of(&name, &p.name_any()).is_some()
    })
    .await?;
    let start = spec.ordinals.as_ref().and_then(|o| o.start).unwrap_or(0);
    let replicas = or_default(spec.replicas, 1);
    let end = start + replicas;
    let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
    let rolling = spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.type_.as_deref())
        != Some("OnDelete");
    let partition = spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .unwrap_or(0);
    let min_ready = or_default(spec.min_ready_seconds, 0);
    let now = shared.now();
    let mut by_ord: BTreeMap<i32, Pod> = BTreeMap::new();
    for p in owned {
        if let Some(o) = ordinal_of(&name, &p.name_any()) {
            by_ord.insert(o, p);
        }
    }

    // Status from what exists before this pass acts (kube does the same).
    let mut st = StatefulSetStatus {
        observed_generation: set.metadata.generation,
        collision_count: collision,
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
            if is_available(p, min_ready, now) {
                avail += 1;
            }
        }
        if revision_label(p) == Some(&current_rev) {
            cur += 1;
        }
        if revision_label(p) == Some(&update_rev) {
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
    let mut requeue = None;

    if set.metadata.deletion_timestamp.is_none() {
        let ctx = Ctx {
            shared: &shared,
            set: &set,
            pods: &pods_api,
            ns: &ns,
            name: &name,
        };
        ctx.act(
            &mut by_ord,
            start,
            end,
            parallel,
            rolling,
            partition,
            &current_rev,
            &update_rev,
            &current_template,
        )
        .await?;
        // When every pod runs the update revision, it becomes current.
        let all_updated = (start..end).all(|o| {
            by_ord
                .get(&o)
                .is_some_and(|p| revision_label(p) == Some(&update_rev) && running_and_ready(p))
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
        history::truncate(
            &shared,
            &ns,
            &hist,
            &in_use,
            spec.revision_history_limit.unwrap_or(10),
        )
        .await?;
        if ready > avail {
            requeue = Some(Duration::from_secs(min_ready.max(1) as u64));
        }
    }
    let api: Api<StatefulSet> = Api::namespaced(shared.client(), &ns);
    patch_status(
        &api,
        &name,
        &serde_json::to_value(&old).unwrap_or_default(),
        &serde_json::to_value(&st).unwrap_or_default(),
    )
    .await?;
    Ok(Action::requeue(requeue.unwrap_or(Duration::from_secs(300))))
}

struct Ctx<'a> {
    shared: &'a Shared,
    set: &'a StatefulSet,
    pods: &'a Api<Pod>,
    ns: &'a str,
    name: &'a str,
}

impl Ctx<'_> {
    #[allow(clippy::too_many_arguments)]
    async fn act(
        &self,
        by_ord: &mut BTreeMap<i32, Pod>,
        start: i32,
        end: i32,
        parallel: bool,
        rolling: bool,
        partition: i32,
        current_rev: &str,
        update_rev: &str,
        current_template: &k8s_openapi::api::core::v1::PodTemplateSpec,
    ) -> Result<()> {
        let spec = self.set.spec.clone().unwrap_or_default();
        // Replace failed pods, then create missing ones in order.
        for o in start..end {
            if let Some(p) = by_ord.get(&o) {
                if pod_phase(p) == "Failed" && p.metadata.deletion_timestamp.is_none() {
                    self.delete_pod(p).await?;
                    by_ord.remove(&o);
                    if !parallel {
                        return Ok(());
                    }
                    continue;
                }
            }
            match by_ord.get(&o) {
                None => {
                    // Below the partition a recreated pod keeps the current revision.
                    let (rev, template) = if rolling && o < partition && current_rev != update_rev {
                        (current_rev, current_template)
                    } else {
                        (update_rev, &spec.template)
                    };
                    self.ensure_claims(o).await?;
                    let pod = self.create_pod(o, rev, template).await?;
                    by_ord.insert(o, pod);
                    if !parallel {
                        return Ok(());
                    }
                }
                Some(p) => {
                    if !parallel
                        && (!running_and_ready(p) || p.metadata.deletion_timestamp.is_some())
                    {
                        return Ok(());
                    }
                }
            }
        }
        // Condemned ordinals, highest first.
        let condemned: Vec<i32> = by_ord
            .keys()
            .rev()
            .copied()
            .filter(|o| *o >= end || *o < start)
            .collect();
        for o in &condemned {
            let p = by_ord[o].clone();
            if p.metadata.deletion_timestamp.is_some() {
                if !parallel {
                    return Ok(());
                }
                continue;
            }
            // OrderedReady scales down only while every lower pod is healthy.
            if !parallel && by_ord.iter().any(|(k, q)| k < o && !running_and_ready(q)) {
                return Ok(());
            }
            self.delete_pod(&p).await?;
            self.release_scaled_claims(*o).await?;
            if !parallel {
                return Ok(());
            }
        }
        if !condemned.is_empty() {
            return Ok(());
        }
        // Rolling update: one pod at a time, highest ordinal first, down to partition.
        if rolling
            && by_ord
                .values()
                .all(|p| running_and_ready(p) && p.metadata.deletion_timestamp.is_none())
        {
            for o in (start.max(partition)..end).rev() {
                if let Some(p) = by_ord.get(&o) {
                    if revision_label(p) != Some(update_rev) {
                        self.delete_pod(p).await?;
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    async fn create_pod(
        &self,
        o: i32,
        rev: &str,
        template: &k8s_openapi::api::core::v1::PodTemplateSpec,
    ) -> Result<Pod> {
        let spec = self.set.spec.clone().unwrap_or_default();
        let pod_name = format!("{}-{o}", self.name);
        let extra: BTreeMap<String, String> = [
            (history::HASH_LABEL.to_string(), rev.to_string()),
            (POD_NAME_LABEL.to_string(), pod_name.clone()),
            (POD_INDEX_LABEL.to_string(), o.to_string()),
        ]
        .into();
        let mut pod = pod_from_template(self.set, template, &extra);
        pod.metadata.name = Some(pod_name.clone());
        let ps = pod.spec.get_or_insert_with(Default::default);
        ps.hostname = Some(pod_name.clone());
        if let Some(svc) = spec.service_name.as_ref().filter(|s| !s.is_empty()) {
            ps.subdomain = Some(svc.clone());
        }
        for tmpl in spec.volume_claim_templates.iter().flatten() {
            let vname = tmpl.name_any();
            let volumes = ps.volumes.get_or_insert_with(Vec::new);
            volumes.retain(|v| v.name != vname);
            volumes.push(Volume {
                name: vname.clone(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim_name(&vname, self.name, o),
                    read_only: None,
                }),
                ..Default::default()
            });
        }
        match create_pod(self.pods, &pod).await {
            Ok(p) => {
                self.shared
                    .event(
                        self.set,
                        false,
                        "SuccessfulCreate",
                        format!(
                            "create Pod {pod_name} in StatefulSet {} successful",
                            self.name
                        ),
                    )
                    .await;
                Ok(p)
            }
            Err(e) if is_status(&e, 409) => self
                .pods
                .get(&pod_name)
                .await
                .ctx(|| format!("read pod {pod_name}")),
            Err(e) => {
                self.shared
                    .event(
                        self.set,
                        true,
                        "FailedCreate",
                        format!(
                            "create Pod {pod_name} in StatefulSet {} failed error: {e}",
                            self.name
                        ),
                    )
                    .await;
                Err(e).ctx(|| format!("create pod {pod_name}"))
            }
        }
    }

    async fn delete_pod(&self, p: &Pod) -> Result<()> {
        let pname = p.name_any();
        delete_quiet(self.pods, &pname, &DeleteParams::default()).await?;
        self.shared
            .event(
                self.set,
                false,
                "SuccessfulDelete",
                format!("delete Pod {pname} in StatefulSet {} successful", self.name),
            )
            .await;
        Ok(())
    }

    fn policy(&self) -> (bool, bool) {
        let p = self
            .set
            .spec
            .as_ref()
            .and_then(|s| s.persistent_volume_claim_retention_policy.clone())
            .unwrap_or_default();
        (
            p.when_deleted.as_deref() == Some("Delete"),
            p.when_scaled.as_deref() == Some("Delete"),
        )
    }

    async fn ensure_claims(&self, o: i32) -> Result<()> {
        let spec = self.set.spec.clone().unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.shared.client(), self.ns);
        let (when_deleted, _) = self.policy();
        for tmpl in spec.volume_claim_templates.iter().flatten() {
            let cname = claim_name(&tmpl.name_any(), self.name, o);
            if api
                .get_opt(&cname)
                .await
                .ctx(|| format!("read claim {cname}"))?
                .is_some()
            {
                continue;
            }
            let mut labels = tmpl.labels().clone();
            labels.extend(spec.selector.match_labels.clone().unwrap_or_default());
            let pvc = PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(cname.clone()),
                    namespace: Some(self.ns.to_string()),
                    labels: Some(labels),
                    annotations: tmpl.metadata.annotations.clone(),
                    owner_references: when_deleted.then(|| vec![controller_ref(self.set)]),
                    ..Default::default()
                },
                spec: tmpl.spec.clone(),
                status: None,
            };
            match api.create(&PostParams::default(), &pvc).await {
                Ok(_) => {
                    self.shared
                        .event(
                            self.set,
                            false,
                            "SuccessfulCreate",
                            format!(
                                "create Claim {cname} Pod {}-{o} in StatefulSet {} success",
                                self.name, self.name
                            ),
                        )
                        .await
                }
                Err(e) if is_status(&e, 409) => {}
                Err(e) => return Err(e).ctx(|| format!("create claim {cname}")),
            }
        }
        Ok(())
    }

    /// With `whenScaled: Delete`, a condemned ordinal's claims go with it.
    async fn release_scaled_claims(&self, o: i32) -> Result<()> {
        let (_, when_scaled) = self.policy();
        if !when_scaled {
            return Ok(());
        }
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.shared.client(), self.ns);
        for tmpl in self
            .set
            .spec
            .iter()
            .flat_map(|s| s.volume_claim_templates.iter().flatten())
        {
            delete_quiet(
                &api,
                &claim_name(&tmpl.name_any(), self.name, o),
                &background(),
            )
            .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals_parse_only_this_sets_names() {
        assert_eq!(ordinal_of("web", "web-0"), Some(0));
        assert_eq!(ordinal_of("web", "web-12"), Some(12));
        assert_eq!(ordinal_of("web", "web-01"), None);
        assert_eq!(ordinal_of("web", "web-x"), None);
        assert_eq!(ordinal_of("web", "webby-1"), None);
        assert_eq!(ordinal_of("web", "web-"), None);
        assert_eq!(claim_name("data", "web", 2), "data-web-2");
    }
}
