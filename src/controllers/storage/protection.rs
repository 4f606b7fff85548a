//! kube's pvc-protection and pv-protection controllers: every live claim
//! carries `kubernetes.io/pvc-protection` and every live volume
//! `kubernetes.io/pv-protection` (added here, where kube's admission adds
//! them on create); a claim being deleted keeps its finalizer while a
//! scheduled, unfinished pod of its namespace names it (so it shows
//! `Terminating` until the pod goes), a volume being deleted while it is
//! Bound.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::{Result, World};
use crate::storage::binding::{self as b, PVC_PROTECTION, PV_PROTECTION};

/// Whether `pod` uses `claim` in the sense of kube's `podUsesPVC`: only
/// scheduled pods that have not finished count.
pub fn pod_uses_claim(pod: &Pod, c: &PersistentVolumeClaim) -> bool {
    let scheduled = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty());
    let finished = matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"));
    scheduled
        && !finished
        && pod.metadata.namespace == c.metadata.namespace
        && c.metadata.name.as_ref().is_some_and(|n| b::pod_claims(pod).contains(n))
}

/// The finalizer list with `f` added or removed, or `None` when unchanged.
pub fn finalizers_with(current: Option<&Vec<String>>, f: &str, present: bool) -> Option<Vec<String>> {
    let list = current.cloned().unwrap_or_default();
    let has = list.iter().any(|x| x == f);
    match (has, present) {
        (false, true) => Some(list.into_iter().chain([f.to_string()]).collect()),
        (true, false) => Some(list.into_iter().filter(|x| x != f).collect()),
        _ => None,
    }
}

fn patch_body(meta: &kube::api::ObjectMeta, finalizers: Vec<String>) -> serde_json::Value {
    // The resourceVersion makes the merge patch a compare-and-swap: another
    // writer's finalizer is never dropped.
    json!({"metadata": {"finalizers": finalizers, "resourceVersion": meta.resource_version}})
}

pub async fn reconcile(client: &kube::Client, w: &World) -> Result<()> {
    for c in &w.claims {
        let want = if c.metadata.deletion_timestamp.is_none() {
            true
        } else {
            w.pods.iter().any(|p| pod_uses_claim(p, c))
        };
        if let Some(list) = finalizers_with(c.metadata.finalizers.as_ref(), PVC_PROTECTION, want) {
            let api: Api<PersistentVolumeClaim> =
                Api::namespaced(client.clone(), c.metadata.namespace.as_deref().unwrap_or("default"));
            let name = c.metadata.name.as_deref().unwrap_or("");
            if let Err(e) = api.patch(name, &PatchParams::default(), &Patch::Merge(patch_body(&c.metadata, list))).await {
                tracing::debug!(claim = %b::claim_key(c), "pvc-protection: {e}");
            }
        }
    }
    for v in &w.volumes {
        let want = v.metadata.deletion_timestamp.is_none() || b::volume_phase(v) == "Bound";
        if let Some(list) = finalizers_with(v.metadata.finalizers.as_ref(), PV_PROTECTION, want) {
            let api: Api<PersistentVolume> = Api::all(client.clone());
            let name = v.metadata.name.as_deref().unwrap_or("");
            if let Err(e) = api.patch(name, &PatchParams::default(), &Patch::Merge(patch_body(&v.metadata, list))).await {
                tracing::debug!(volume = name, "pv-protection: {e}");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(node: Option<&str>, phase: &str, claim: &str) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "ns"},
            "spec": {"nodeName": node, "containers": [],
                     "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": claim}}]},
            "status": {"phase": phase}})).unwrap()
    }

    #[test]
    fn only_scheduled_running_pods_hold_a_claim() {
        let c: PersistentVolumeClaim = serde_json::from_value(json!({"metadata": {"name": "data", "namespace": "ns"}})).unwrap();
        assert!(pod_uses_claim(&pod(Some("n1"), "Running", "data"), &c));
        assert!(!pod_uses_claim(&pod(None, "Pending", "data"), &c));
        assert!(!pod_uses_claim(&pod(Some("n1"), "Succeeded", "data"), &c));
        assert!(!pod_uses_claim(&pod(Some("n1"), "Running", "other"), &c));
    }

    #[test]
    fn finalizers_are_added_and_removed_once() {
        let some = vec!["other".to_string()];
        assert_eq!(finalizers_with(Some(&some), PVC_PROTECTION, true), Some(vec!["other".into(), PVC_PROTECTION.into()]));
        let both = vec!["other".to_string(), PVC_PROTECTION.to_string()];
        assert_eq!(finalizers_with(Some(&both), PVC_PROTECTION, true), None);
        assert_eq!(finalizers_with(Some(&both), PVC_PROTECTION, false), Some(vec!["other".into()]));
        assert_eq!(finalizers_with(None, PVC_PROTECTION, false), None);
    }
}
