//! ControllerRevisions for DaemonSets and StatefulSets: each distinct pod
//! template is stored once as `<owner>-<hash>` (data
//! `{"spec":{"template":{...,"$patch":"replace"}}}`, as kube writes it) with
//! a monotonically growing `revision`, which is what
//! `kubectl rollout history|undo` read and write.

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, StatefulSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::{json, Value};

use super::common::*;

pub const HASH_LABEL: &str = "controller-revision-hash";

/// The owner's revisions and which one matches its current template.
pub struct History {
    pub all: Vec<ControllerRevision>,
    pub update: ControllerRevision,
    /// The hash part of the update revision's name.
    pub update_hash: String,
    /// The owner's `status.collisionCount` after finding or creating `update`.
    pub collision_count: Option<i32>,
}

/// The revision data for a template.
pub fn revision_data(template: &PodTemplateSpec) -> Value {
    let mut t = serde_json::to_value(template).unwrap_or_default();
    if let Some(o) = t.as_object_mut() {
        o.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": t}})
}

/// The template a revision's data holds.
pub fn revision_template(cr: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = cr.data.as_ref()?.0.get("spec")?.get("template")?.clone();
    if let Some(o) = t.as_object_mut() {
        o.remove("$patch");
    }
    serde_json::from_value(t).ok()
}

/// An owner of ControllerRevisions: what [`sync`] reads from it.
pub trait Revisioned: Resource<DynamicType = ()> {
    fn selector(&self) -> LabelSelector;
    fn template(&self) -> PodTemplateSpec;
    /// `status.collisionCount`.
    fn collision_count(&self) -> Option<i32>;
}

impl Revisioned for DaemonSet {
    fn selector(&self) -> LabelSelector {
        self.spec.as_ref().map(|s| s.selector.clone()).unwrap_or_default()
    }
    fn template(&self) -> PodTemplateSpec {
        self.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default()
    }
    fn collision_count(&self) -> Option<i32> {
        self.status.as_ref().and_then(|s| s.collision_count)
    }
}

impl Revisioned for StatefulSet {
    fn selector(&self) -> LabelSelector {
        self.spec.as_ref().map(|s| s.selector.clone()).unwrap_or_default()
    }
    fn template(&self) -> PodTemplateSpec {
        self.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default()
    }
    fn collision_count(&self) -> Option<i32> {
        self.status.as_ref().and_then(|s| s.collision_count)
    }
}

/// The first step of a DaemonSet's or StatefulSet's pass: `None` while the
/// owner is being deleted (the garbage collector removes its pods and
/// revisions; writing a new revision now would only race it), else its
/// revisions with the one for its template found or created, starting from
/// its `status.collisionCount`.
pub async fn sync<K: Revisioned>(shared: &Shared, owner: &K) -> Result<Option<History>> {
    if owner.meta().deletion_timestamp.is_some() {
        return Ok(None);
    }
    let mut collision_count = owner.collision_count();
    let (all, update, update_hash) = find_or_create(
        shared,
        owner.meta(),
        controller_ref(owner),
        &owner.selector(),
        &owner.template(),
        &mut collision_count,
    )
    .await?;
    Ok(Some(History {
        all,
        update,
        update_hash,
        collision_count,
    }))
}

/// Lists the owner's revisions and finds or creates the one for `template`.
/// Not generic in the owner's kind: one copy serves DaemonSets and
/// StatefulSets alike.
async fn find_or_create(
    shared: &Shared,
    owner: &ObjectMeta,
    owner_ref: OwnerReference,
    selector: &LabelSelector,
    template: &PodTemplateSpec,
    collision_count: &mut Option<i32>,
) -> Result<(Vec<ControllerRevision>, ControllerRevision, String)> {
    let ns = owner.namespace.clone().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(shared.client(), &ns);
    let list = list_all(&api, "controller revisions").await?;
    let mut all = claim_for(&api, owner_ref.clone(), owner.deletion_timestamp.is_some(), list, &|cr: &ControllerRevision| {
        selector_matches(selector, &labels_of(&cr.metadata))
    })
    .await?;
    all.sort_by_key(|cr| cr.revision);
    let data = revision_data(template);
    let max = all.iter().map(|cr| cr.revision).max().unwrap_or(0);
    if let Some(i) = all
        .iter()
        .position(|cr| cr.data.as_ref().map(|d| &d.0) == Some(&data))
    {
        let cr = all[i].clone();
        let hash = cr.labels().get(HASH_LABEL).cloned().unwrap_or_default();
        if cr.revision < max {
            // Going back to an old template makes it the newest revision.
            let patch = json!({"revision": max + 1});
            let name = cr.name_any();
            all[i] = api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .ctx(|| format!("bump controller revision {name}"))?;
        }
        let update = all[i].clone();
        return Ok((all, update, hash));
    }
    loop {
        let hash = template_hash(&data, *collision_count);
        let name = format!("{}-{hash}", owner.name.clone().unwrap_or_default());
        let mut labels = template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        labels.insert(HASH_LABEL.into(), hash.clone());
        let cr = ControllerRevision {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                labels: Some(labels),
                annotations: owner.annotations.clone(),
                owner_references: Some(vec![owner_ref.clone()]),
                ..Default::default()
            },
            data: Some(RawExtension(data.clone())),
            revision: max + 1,
        };
        match api.create(&PostParams::default(), &cr).await {
            Ok(created) => {
                all.push(created.clone());
                return Ok((all, created, hash));
            }
            Err(e) if is_status(&e, 409) => {
                let existing = api
                    .get(&name)
                    .await
                    .ctx(|| format!("read controller revision {name}"))?;
                if existing.data.as_ref().map(|d| &d.0) == Some(&data)
                    && controller_uid(&existing.metadata) == owner.uid.as_deref()
                {
                    all.push(existing.clone());
                    return Ok((all, existing, hash));
                }
                *collision_count = Some(collision_count.unwrap_or(0) + 1);
            }
            Err(e) => return Err(e).ctx(|| format!("create controller revision {name}")),
        }
    }
}

/// Deletes the oldest revisions no live pod uses, beyond `limit`.
pub async fn truncate(
    shared: &Shared,
    ns: &str,
    h: &History,
    in_use: &[String],
    limit: i32,
) -> Result<()> {
    let api: Api<ControllerRevision> = Api::namespaced(shared.client(), ns);
    let mut spare: Vec<&ControllerRevision> = h
        .all
        .iter()
        .filter(|cr| cr.name_any() != h.update.name_any())
        .filter(|cr| {
            !in_use
                .iter()
                .any(|u| cr.labels().get(HASH_LABEL) == Some(u) || cr.name_any() == *u)
        })
        .collect();
    let limit = limit.max(0) as usize;
    if spare.len() <= limit {
        return Ok(());
    }
    spare.sort_by_key(|cr| cr.revision);
    let n = spare.len() - limit;
    for cr in spare.into_iter().take(n) {
        delete_quiet(&api, &cr.name_any(), &Default::default()).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_data_round_trips_the_template() {
        let t: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"labels": {"app": "x"}},
            "spec": {"containers": [{"name": "c", "image": "i"}]}
        }))
        .unwrap();
        let data = revision_data(&t);
        assert_eq!(data["spec"]["template"]["$patch"], "replace");
        let cr = ControllerRevision {
            data: Some(RawExtension(data)),
            ..Default::default()
        };
        assert_eq!(revision_template(&cr), Some(t));
    }
}
