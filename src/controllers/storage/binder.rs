//! kube's persistentvolume-binder, one level-triggered pass: every claim
//! (`syncClaim`) then every volume (`syncVolume`).
//!
//! Claims: an unset class gets the default one (kube's retroactive default
//! class); an unbound claim binds to `binding::find_matching_volume`'s
//! choice, except on a WaitForFirstConsumer class before the scheduler put
//! `volume.kubernetes.io/selected-node` on it; with no match, a class with
//! a provisioner gets the `storage-provisioner` annotations (the
//! provisioner takes it from there), otherwise a `FailedBinding` Event.
//! Binding writes the volume first (`claimRef`, `bound-by-controller`,
//! phase Bound), then the claim (`volumeName`, `bind-completed`, phase
//! Bound with the volume's capacity and modes), as kube does, so a crash
//! between the two is finished by the next pass.
//!
//! Volumes: no `claimRef` (or one without uid: reserved for a claim not
//! yet made) is Available; a claim that is gone (or has another uid)
//! makes it Released, and then `Retain` keeps it, `Delete` leaves it to
//! its provisioner (local-path: the node's agent) or, for a volume no
//! provisioner made, fails it as kube does (no in-tree deleter). A volume
//! the controller bound to a claim now bound elsewhere is unbound.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, Patch, PatchParams};
use serde_json::{json, Value};

use super::{Events, Result, World};
use crate::k8s::events::EventType;
use crate::storage::binding::{self as b, ANN_BETA_STORAGE_PROVISIONER, ANN_BIND_COMPLETED,
    ANN_BOUND_BY_CONTROLLER, ANN_PROVISIONED_BY, ANN_SELECTED_NODE, ANN_STORAGE_PROVISIONER};

fn ann<'a>(meta: &'a kube::api::ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref().and_then(|a| a.get(key)).map(String::as_str)
}

async fn patch_claim(client: &kube::Client, c: &PersistentVolumeClaim, body: &Value, status: bool) -> Result<()> {
    let api: Api<PersistentVolumeClaim> =
        Api::namespaced(client.clone(), c.metadata.namespace.as_deref().unwrap_or("default"));
    let name = c.metadata.name.as_deref().unwrap_or("");
    if status {
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(body)).await?;
    } else {
        api.patch(name, &PatchParams::default(), &Patch::Merge(body)).await?;
    }
    Ok(())
}

async fn patch_volume(client: &kube::Client, name: &str, body: &Value, status: bool) -> Result<()> {
    let api: Api<PersistentVolume> = Api::all(client.clone());
    if status {
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(body)).await?;
    } else {
        api.patch(name, &PatchParams::default(), &Patch::Merge(body)).await?;
    }
    Ok(())
}

async fn set_volume_phase(client: &kube::Client, v: &PersistentVolume, phase: &str, message: Option<&str>) -> Result<()> {
    if b::volume_phase(v) == phase {
        return Ok(());
    }
    let name = v.metadata.name.as_deref().unwrap_or("");
    tracing::info!(volume = name, phase, "persistent volume phase");
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    patch_volume(client, name, &json!({"status": {"phase": phase, "message": message,
        "lastPhaseTransitionTime": now}}), true).await
}

/// The volume's half of a bind: its `claimRef` and phase.
async fn bind_volume(client: &kube::Client, v: &PersistentVolume, c: &PersistentVolumeClaim) -> Result<()> {
    let name = v.metadata.name.as_deref().unwrap_or("");
    let ref_ok = v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()).is_some_and(|r| {
        r.uid.as_deref() == c.metadata.uid.as_deref() && r.name == c.metadata.name
    });
    if !ref_ok {
        let mut meta = json!({});
        if v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()).is_none() {
            meta = json!({"annotations": {ANN_BOUND_BY_CONTROLLER: "yes"}});
        }
        patch_volume(client, name, &json!({"metadata": meta, "spec": {"claimRef": {
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "namespace": c.metadata.namespace, "name": c.metadata.name,
            "uid": c.metadata.uid, "resourceVersion": c.metadata.resource_version}}}), false).await?;
    }
    set_volume_phase(client, v, "Bound", None).await
}

/// The claim's half: `volumeName`, annotations, status.
async fn bind_claim(client: &kube::Client, c: &PersistentVolumeClaim, v: &PersistentVolume) -> Result<()> {
    let pv_name = v.metadata.name.as_deref().unwrap_or("");
    if b::claim_volume_name(c) != pv_name || ann(&c.metadata, ANN_BIND_COMPLETED).is_none() {
        let mut annotations = json!({ANN_BIND_COMPLETED: "yes"});
        if b::claim_volume_name(c).is_empty() {
            annotations[ANN_BOUND_BY_CONTROLLER] = json!("yes");
        }
        patch_claim(client, c, &json!({"metadata": {"annotations": annotations},
            "spec": {"volumeName": pv_name}}), false).await?;
    }
    let vs = v.spec.clone().unwrap_or_default();
    let status = c.status.clone().unwrap_or_default();
    if b::claim_phase(c) != "Bound" || status.capacity != vs.capacity || status.access_modes != vs.access_modes {
        tracing::info!(claim = %b::claim_key(c), volume = pv_name, "claim bound");
        patch_claim(client, c, &json!({"status": {"phase": "Bound", "capacity": vs.capacity,
            "accessModes": vs.access_modes}}), true).await?;
    }
    Ok(())
}

async fn claim_pending(client: &kube::Client, c: &PersistentVolumeClaim) -> Result<()> {
    if b::claim_phase(c) != "Pending" {
        patch_claim(client, c, &json!({"status": {"phase": "Pending"}}), true).await?;
    }
    Ok(())
}

async fn sync_claim(client: &kube::Client, events: &Events, w: &World, c: &PersistentVolumeClaim) -> Result<()> {
    if c.spec.as_ref().is_some_and(|s| s.storage_class_name.is_none()) {
        if let Some(default) = b::default_class(&w.classes) {
            // kube's retroactive default StorageClass assignment.
            return patch_claim(client, c, &json!({"spec": {"storageClassName": default.metadata.name}}), false).await;
        }
    }
    let class_name = b::claim_class(c);
    let class = w.class(class_name);
    let volume_name = b::claim_volume_name(c);
    if !volume_name.is_empty() {
        let Some(v) = w.volume(volume_name) else {
            if b::claim_phase(c) == "Bound" {
                events.emit(c, EventType::Warning, "ClaimLost", "Bound claim has lost its PersistentVolume. Data on the volume is lost!").await;
                patch_claim(client, c, &json!({"status": {"phase": "Lost"}}), true).await?;
            } else {
                claim_pending(client, c).await?;
            }
            return Ok(());
        };
        let claim_ref = v.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
        if claim_ref.is_none() || b::claim_ref_matches(v, c) {
            // Volume free (the user pre-bound the claim) or ours: finish.
            if let Some(why) = b::unsatisfied_by(v, c).filter(|_| claim_ref.is_none()) {
                events.emit(c, EventType::Warning, "FailedBinding",
                    &format!("Cannot bind to requested volume \"{volume_name}\": {why}")).await;
                return claim_pending(client, c).await;
            }
            bind_volume(client, v, c).await?;
            return bind_claim(client, c, v).await;
        }
        events.emit(c, EventType::Warning, "FailedBinding",
            &format!("volume \"{volume_name}\" already bound to a different claim.")).await;
        return claim_pending(client, c).await;
    }
    let delayed = b::is_wait_for_first_consumer(class);
    let selected = ann(&c.metadata, ANN_SELECTED_NODE);
    if delayed && selected.is_none() {
        events.emit(c, EventType::Normal, "WaitForFirstConsumer",
            "waiting for first consumer to be created before binding").await;
        return claim_pending(client, c).await;
    }
    let node = selected.and_then(|n| w.node(n)).map(|n| {
        (n.metadata.name.clone().unwrap_or_default(), n.metadata.labels.clone().unwrap_or_default())
    });
    let found = b::find_matching_volume(c, &w.volumes, node.as_ref().map(|(n, l)| (n.as_str(), l)));
    if let Some(v) = found {
        bind_volume(client, v, c).await?;
        return bind_claim(client, c, v).await;
    }
    if let Some(provisioner) = b::dynamic_provisioner(class) {
        if ann(&c.metadata, ANN_STORAGE_PROVISIONER) != Some(provisioner) {
            patch_claim(client, c, &json!({"metadata": {"annotations": {
                ANN_STORAGE_PROVISIONER: provisioner, ANN_BETA_STORAGE_PROVISIONER: provisioner}}}), false).await?;
        }
        events.emit(c, EventType::Normal, "ExternalProvisioning", &format!(
            "Waiting for a volume to be created either by the external provisioner '{provisioner}' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered.")).await;
    } else if class_name.is_empty() || class.is_some() {
        let msg = if class_name.is_empty() {
            "no persistent volumes available for this claim and no storage class is set".to_string()
        } else {
            format!("storageclass.storage.k8s.io \"{class_name}\" has no provisioner and no persistent volume matches the claim")
        };
        events.emit(c, EventType::Normal, "FailedBinding", &msg).await;
    } else {
        events.emit(c, EventType::Warning, "ProvisioningFailed",
            &format!("storageclass.storage.k8s.io \"{class_name}\" not found")).await;
    }
    claim_pending(client, c).await
}

/// The claim `v`'s `claimRef` names, when it still exists with that uid.
fn referenced_claim<'a>(w: &'a World, v: &PersistentVolume) -> Option<&'a PersistentVolumeClaim> {
    w.claims.iter().find(|c| b::claim_ref_matches(v, c))
}

async fn sync_volume(client: &kube::Client, events: &Events, w: &World, v: &PersistentVolume) -> Result<()> {
    let name = v.metadata.name.as_deref().unwrap_or("");
    let Some(claim_ref) = v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return set_volume_phase(client, v, "Available", None).await;
    };
    if claim_ref.uid.as_deref().unwrap_or("").is_empty() {
        // Reserved for a claim the user has not bound yet.
        return set_volume_phase(client, v, "Available", None).await;
    }
    let Some(c) = referenced_claim(w, v) else {
        if b::volume_phase(v) == "Failed" {
            return Ok(());
        }
        set_volume_phase(client, v, "Released", None).await?;
        let policy = v.spec.as_ref().and_then(|s| s.persistent_volume_reclaim_policy.as_deref()).unwrap_or("Retain");
        let provisioned = ann(&v.metadata, ANN_PROVISIONED_BY).is_some();
        if policy == "Delete" && !provisioned {
            let msg = format!("error getting deleter volume plugin for volume \"{name}\": no deletable volume plugin matched");
            events.emit(v, EventType::Warning, "VolumeFailedDelete", &msg).await;
            return set_volume_phase(client, v, "Failed", Some(&msg)).await;
        }
        if policy == "Recycle" {
            let msg = "Recycle is not supported by rk3s (deprecated in Kubernetes)";
            events.emit(v, EventType::Warning, "VolumeFailedRecycle", msg).await;
            return set_volume_phase(client, v, "Failed", Some(msg)).await;
        }
        return Ok(());
    };
    let claim_volume = b::claim_volume_name(c);
    if claim_volume == name {
        return set_volume_phase(client, v, "Bound", None).await;
    }
    if claim_volume.is_empty() {
        // The claim's sync finishes the bind.
        return Ok(());
    }
    if ann(&v.metadata, ANN_BOUND_BY_CONTROLLER).is_some() {
        // We bound it, the claim went elsewhere: free the volume.
        patch_volume(client, name, &json!({"metadata": {"annotations": {ANN_BOUND_BY_CONTROLLER: null}},
            "spec": {"claimRef": null}}), false).await?;
        return set_volume_phase(client, v, "Available", None).await;
    }
    Ok(())
}

pub async fn reconcile(client: &kube::Client, events: &Events, w: &World) -> Result<()> {
    for c in w.claims.iter().filter(|c| c.metadata.deletion_timestamp.is_none()) {
        if let Err(e) = sync_claim(client, events, w, c).await {
            tracing::warn!(claim = %b::claim_key(c), "failed to sync the claim: {e}");
        }
    }
    for v in &w.volumes {
        if let Err(e) = sync_volume(client, events, w, v).await {
            tracing::warn!(volume = ?v.metadata.name, "failed to sync the volume: {e}");
        }
    }
    Ok(())
}
