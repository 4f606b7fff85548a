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
//!
//! Shape: [`reconcile`] observes, [`plan::plan`] decides (pure), `apply` acts.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::Action;
use kube::ResourceExt;

use super::common::*;
use super::history;

mod plan;
use plan::{Observed, SetPlan, Step};

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

/// Reconciles one StatefulSet: observe (revisions, claimed pods, the clock),
/// [`plan::plan`] (pure), then [`apply`] the steps, history truncation and
/// the status.
pub async fn reconcile(set: Arc<StatefulSet>, shared: Arc<Shared>) -> Result<Action> {
    let ns = set.namespace().unwrap_or_default();
    let name = set.name_any();
    let spec = set.spec.clone().unwrap_or_default();
    let Some(hist) = history::sync(&shared, set.as_ref()).await? else {
        return Ok(Action::await_change());
    };
    let pods_api: Api<Pod> = Api::namespaced(shared.client(), &ns);
    let all = list_all(&pods_api, "pods").await?;
    let pods = claim(&pods_api, set.as_ref(), all, |p| {
        selector_matches(&spec.selector, &labels_of(&p.metadata))
            && ordinal_of(&name, &p.name_any()).is_some()
    })
    .await?;
    let plan = plan::plan(Observed {
        set: &set,
        history: &hist,
        pods,
        now: shared.now(),
    });
    let ctx = Ctx {
        shared: &shared,
        set: &set,
        pods: &pods_api,
        ns: &ns,
        name: &name,
    };
    ctx.apply(&hist, &plan).await?;
    Ok(Action::requeue(plan.requeue))
}

struct Ctx<'a> {
    shared: &'a Shared,
    set: &'a StatefulSet,
    pods: &'a Api<Pod>,
    ns: &'a str,
    name: &'a str,
}

impl Ctx<'_> {
    /// Carries out `plan`: its steps in order (stopping at the first error),
    /// history truncation, then the status patch.
    async fn apply(&self, hist: &history::History, plan: &SetPlan) -> Result<()> {
        for step in &plan.steps {
            match step {
                Step::DeletePod(pname) => self.delete_pod(pname).await?,
                Step::CreatePod {
                    ordinal,
                    revision,
                    template,
                } => {
                    self.ensure_claims(*ordinal).await?;
                    self.create_pod(*ordinal, revision, template).await?;
                }
                Step::ReleaseClaims(o) => self.release_scaled_claims(*o).await?,
            }
        }
        let spec = self.set.spec.clone().unwrap_or_default();
        history::truncate(
            self.shared,
            self.ns,
            hist,
            &plan.in_use,
            spec.revision_history_limit.unwrap_or(10),
        )
        .await?;
        let api: Api<StatefulSet> = Api::namespaced(self.shared.client(), self.ns);
        patch_status(
            &api,
            self.name,
            &serde_json::to_value(self.set.status.clone().unwrap_or_default()).unwrap_or_default(),
            &serde_json::to_value(&plan.status).unwrap_or_default(),
        )
        .await
    }

    async fn create_pod(&self, o: i32, rev: &str, template: &PodTemplateSpec) -> Result<Pod> {
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

    async fn delete_pod(&self, pname: &str) -> Result<()> {
        delete_quiet(self.pods, pname, &DeleteParams::default()).await?;
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

    async fn ensure_claims(&self, o: i32) -> Result<()> {
        let spec = self.set.spec.clone().unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.shared.client(), self.ns);
        // `whenDeleted: Delete` makes the set the claims' owner.
        let when_deleted = spec
            .persistent_volume_claim_retention_policy
            .as_ref()
            .and_then(|p| p.when_deleted.as_deref())
            == Some("Delete");
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

    /// A condemned ordinal's claims go with it (the plan asks only under
    /// `whenScaled: Delete`).
    async fn release_scaled_claims(&self, o: i32) -> Result<()> {
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
