//! The pure half of kube-controller-manager's persistentvolume-binder:
//! which volume a claim binds to (`findMatchingVolume`), whether a volume's
//! node affinity admits a node, and the small predicates the controller,
//! the scheduler and the kubelet share. No I/O here: everything takes the
//! objects and answers.
//!
//! Matching, as kube does it: a volume pre-bound to the claim (its
//! `claimRef` names the claim) wins at once; otherwise the smallest volume
//! that is unclaimed, not being deleted, of the claim's class, volume mode
//! and access modes (a superset), matching the claim's selector and at
//! least as big as the request. With a node (WaitForFirstConsumer), the
//! volume's node affinity must admit that node too.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;

/// Annotations and finalizers, as kube spells them.
pub const ANN_BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
pub const ANN_BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
pub const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
pub const ANN_STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
pub const ANN_BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
pub const ANN_PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
pub const ANN_DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
pub const PV_PROTECTION: &str = "kubernetes.io/pv-protection";
/// A class with this provisioner only binds pre-created volumes.
pub const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// `namespace/name` of a claim.
pub fn claim_key(c: &PersistentVolumeClaim) -> String {
    format!(
        "{}/{}",
        c.metadata.namespace.as_deref().unwrap_or(""),
        c.metadata.name.as_deref().unwrap_or("")
    )
}

/// The claim's class name ("" for none).
pub fn claim_class(c: &PersistentVolumeClaim) -> &str {
    c.spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .unwrap_or("")
}

pub fn volume_class(v: &PersistentVolume) -> &str {
    v.spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .unwrap_or("")
}

pub fn claim_volume_name(c: &PersistentVolumeClaim) -> &str {
    c.spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .unwrap_or("")
}

pub fn volume_phase(v: &PersistentVolume) -> &str {
    v.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

pub fn claim_phase(c: &PersistentVolumeClaim) -> &str {
    c.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// The claim's storage request in bytes (0 when absent).
pub fn claim_request(c: &PersistentVolumeClaim) -> i64 {
    c.spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .and_then(|q| crate::quantity::bytes(&q.0))
        .unwrap_or(0)
}

pub fn volume_capacity(v: &PersistentVolume) -> i64 {
    v.spec
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .and_then(|q| crate::quantity::bytes(&q.0))
        .unwrap_or(0)
}

/// Whether the class delays binding to the first consumer.
pub fn is_wait_for_first_consumer(class: Option<&StorageClass>) -> bool {
    class.and_then(|c| c.volume_binding_mode.as_deref()) == Some("WaitForFirstConsumer")
}

/// The class's provisioner, when it provisions at all.
pub fn dynamic_provisioner(class: Option<&StorageClass>) -> Option<&str> {
    class
        .map(|c| c.provisioner.as_str())
        .filter(|p| !p.is_empty() && *p != NO_PROVISIONER)
}

/// Whether the claim's `claimRef` on `v` names `c` (uid too, when both have one).
pub fn claim_ref_matches(v: &PersistentVolume, c: &PersistentVolumeClaim) -> bool {
    let Some(r) = v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return false;
    };
    let same_name = r.name.as_deref() == c.metadata.name.as_deref()
        && r.namespace.as_deref().unwrap_or("") == c.metadata.namespace.as_deref().unwrap_or("");
    let uid_ok = match (r.uid.as_deref(), c.metadata.uid.as_deref()) {
        (Some(a), Some(b)) if !a.is_empty() => a == b,
        _ => true,
    };
    same_name && uid_ok
}

fn access_modes_contain(volume: &[String], claim: &[String]) -> bool {
    claim.iter().all(|m| volume.contains(m))
}

fn volume_mode(m: Option<&String>) -> &str {
    m.map(String::as_str).unwrap_or("Filesystem")
}

/// Whether the volume's required node affinity admits a node with these
/// name and labels (no affinity admits every node).
pub fn volume_admits_node(v: &PersistentVolume, node: &str, labels: &BTreeMap<String, String>) -> bool {
    let Some(required) = v
        .spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref())
    else {
        return true;
    };
    required.node_selector_terms.iter().any(|t| {
        let exprs_ok = t.match_expressions.iter().flatten().all(|r| {
            crate::k8s::scheduling::requirement_matches(r, labels.get(&r.key).map(String::as_str))
        });
        let fields_ok = t.match_fields.iter().flatten().all(|r| {
            let value = (r.key == "metadata.name").then_some(node);
            crate::k8s::scheduling::requirement_matches(r, value)
        });
        let empty = t.match_expressions.as_ref().is_none_or(Vec::is_empty)
            && t.match_fields.as_ref().is_none_or(Vec::is_empty);
        !empty && exprs_ok && fields_ok
    })
}

/// Why a volume cannot satisfy a claim, or `None` when it can
/// (kube's `checkVolumeSatisfyClaim`, plus the selector).
pub fn unsatisfied_by(v: &PersistentVolume, c: &PersistentVolumeClaim) -> Option<String> {
    let (Some(vs), Some(cs)) = (v.spec.as_ref(), c.spec.as_ref()) else {
        return Some("missing spec".into());
    };
    if volume_capacity(v) < claim_request(c) {
        return Some("requested PV is too small".into());
    }
    if volume_class(v) != claim_class(c) {
        return Some("storageClassName does not match".into());
    }
    if volume_mode(vs.volume_mode.as_ref()) != volume_mode(cs.volume_mode.as_ref()) {
        return Some("incompatible volumeMode".into());
    }
    let vm = vs.access_modes.clone().unwrap_or_default();
    let cm = cs.access_modes.clone().unwrap_or_default();
    if !access_modes_contain(&vm, &cm) {
        return Some("incompatible accessMode".into());
    }
    None
}

/// The volume `c` should bind to among `volumes` (kube's
/// `findMatchingVolume`); `node` = `(name, labels)` for delayed binding.
pub fn find_matching_volume<'a>(
    c: &PersistentVolumeClaim,
    volumes: impl IntoIterator<Item = &'a PersistentVolume>,
    node: Option<(&str, &BTreeMap<String, String>)>,
) -> Option<&'a PersistentVolume> {
    let selector = c.spec.as_ref().and_then(|s| s.selector.as_ref());
    let mut best: Option<&PersistentVolume> = None;
    for v in volumes {
        if v.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if let Some((name, labels)) = node {
            if !volume_admits_node(v, name, labels) {
                continue;
            }
        }
        if claim_ref_matches(v, c) {
            // Pre-bound to this claim: the user's (or a provisioner's) choice.
            if unsatisfied_by(v, c).is_none() {
                return Some(v);
            }
            continue;
        }
        if v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()).is_some() {
            continue;
        }
        if volume_phase(v) != "Available" && !volume_phase(v).is_empty() {
            continue;
        }
        if unsatisfied_by(v, c).is_some() {
            continue;
        }
        if let Some(sel) = selector {
            let labels = v.metadata.labels.clone().unwrap_or_default();
            if !crate::k8s::selector::matches(sel, &labels) {
                continue;
            }
        }
        if best.is_none_or(|b| volume_capacity(v) < volume_capacity(b)) {
            best = Some(v);
        }
    }
    best
}

/// The cluster's default class: the newest with the default annotation, as
/// kube picks among several.
pub fn default_class<'a>(classes: impl IntoIterator<Item = &'a StorageClass>) -> Option<&'a StorageClass> {
    classes
        .into_iter()
        .filter(|c| {
            c.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANN_DEFAULT_CLASS))
                .is_some_and(|v| v == "true")
        })
        .max_by(|a, b| {
            (&a.metadata.creation_timestamp.as_ref().map(|t| t.0), &a.metadata.name)
                .cmp(&(&b.metadata.creation_timestamp.as_ref().map(|t| t.0), &b.metadata.name))
        })
}

/// The claims a pod's volumes name, in order.
pub fn pod_claims(pod: &k8s_openapi::api::core::v1::Pod) -> Vec<String> {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|v| v.persistent_volume_claim.as_ref().map(|c| c.claim_name.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pv(name: &str, size: &str, class: &str, modes: &[&str]) -> PersistentVolume {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": {"tier": name}},
            "spec": {"capacity": {"storage": size}, "storageClassName": class,
                     "accessModes": modes, "hostPath": {"path": "/x"}},
            "status": {"phase": "Available"}}))
        .unwrap()
    }

    fn pvc(size: &str, class: &str, modes: &[&str]) -> PersistentVolumeClaim {
        serde_json::from_value(json!({"metadata": {"name": "c", "namespace": "ns", "uid": "u1"},
            "spec": {"resources": {"requests": {"storage": size}}, "storageClassName": class,
                     "accessModes": modes}}))
        .unwrap()
    }

    #[test]
    fn picks_the_smallest_volume_that_fits() {
        let vols = [
            pv("big", "10Gi", "", &["ReadWriteOnce"]),
            pv("small", "1Gi", "", &["ReadWriteOnce"]),
            pv("tiny", "100Mi", "", &["ReadWriteOnce"]),
        ];
        let c = pvc("500Mi", "", &["ReadWriteOnce"]);
        assert_eq!(find_matching_volume(&c, &vols, None).unwrap().metadata.name.as_deref(), Some("small"));
    }

    #[test]
    fn class_modes_and_selector_must_match() {
        let vols = [
            pv("other-class", "1Gi", "fast", &["ReadWriteOnce"]),
            pv("rwo", "1Gi", "", &["ReadWriteOnce"]),
            pv("rwx", "5Gi", "", &["ReadWriteMany", "ReadWriteOnce"]),
        ];
        let c = pvc("1Gi", "", &["ReadWriteMany"]);
        assert_eq!(find_matching_volume(&c, &vols, None).unwrap().metadata.name.as_deref(), Some("rwx"));
        let mut c = pvc("1Gi", "", &["ReadWriteOnce"]);
        c.spec.as_mut().unwrap().selector =
            Some(serde_json::from_value(json!({"matchLabels": {"tier": "rwx"}})).unwrap());
        assert_eq!(find_matching_volume(&c, &vols, None).unwrap().metadata.name.as_deref(), Some("rwx"));
        let c = pvc("1Gi", "slow", &["ReadWriteOnce"]);
        assert!(find_matching_volume(&c, &vols, None).is_none());
    }

    #[test]
    fn claimed_volumes_are_skipped_and_prebound_ones_win() {
        let mut taken = pv("taken", "1Gi", "", &["ReadWriteOnce"]);
        taken.spec.as_mut().unwrap().claim_ref =
            Some(serde_json::from_value(json!({"namespace": "ns", "name": "other"})).unwrap());
        let mut mine = pv("mine", "9Gi", "", &["ReadWriteOnce"]);
        mine.spec.as_mut().unwrap().claim_ref =
            Some(serde_json::from_value(json!({"namespace": "ns", "name": "c", "uid": "u1"})).unwrap());
        let free = pv("free", "2Gi", "", &["ReadWriteOnce"]);
        let c = pvc("1Gi", "", &["ReadWriteOnce"]);
        assert_eq!(
            find_matching_volume(&c, [&taken, &free, &mine], None).unwrap().metadata.name.as_deref(),
            Some("mine")
        );
        assert_eq!(
            find_matching_volume(&c, [&taken, &free], None).unwrap().metadata.name.as_deref(),
            Some("free")
        );
        // A claimRef with another uid is an older claim of the same name.
        mine.spec.as_mut().unwrap().claim_ref.as_mut().unwrap().uid = Some("old".into());
        assert!(!claim_ref_matches(&mine, &c));
    }

    #[test]
    fn node_affinity_limits_delayed_binding() {
        let mut local = pv("local", "1Gi", "", &["ReadWriteOnce"]);
        local.spec.as_mut().unwrap().node_affinity = Some(serde_json::from_value(json!({"required":
            {"nodeSelectorTerms": [{"matchExpressions": [{"key": HOSTNAME_LABEL, "operator": "In", "values": ["n1"]}]}]}}))
            .unwrap());
        let n1: BTreeMap<String, String> = [(HOSTNAME_LABEL.to_string(), "n1".to_string())].into();
        let n2: BTreeMap<String, String> = [(HOSTNAME_LABEL.to_string(), "n2".to_string())].into();
        assert!(volume_admits_node(&local, "n1", &n1));
        assert!(!volume_admits_node(&local, "n2", &n2));
        let c = pvc("1Gi", "", &["ReadWriteOnce"]);
        assert!(find_matching_volume(&c, [&local], Some(("n2", &n2))).is_none());
        assert!(find_matching_volume(&c, [&local], Some(("n1", &n1))).is_some());
    }

    #[test]
    fn default_class_is_the_annotated_one() {
        let a: StorageClass = serde_json::from_value(json!({"metadata": {"name": "a"}, "provisioner": "x"})).unwrap();
        let b: StorageClass = serde_json::from_value(json!({"metadata": {"name": "b",
            "annotations": {ANN_DEFAULT_CLASS: "true"}}, "provisioner": "x"})).unwrap();
        assert_eq!(default_class([&a, &b]).unwrap().metadata.name.as_deref(), Some("b"));
        assert!(default_class([&a]).is_none());
        assert_eq!(dynamic_provisioner(Some(&a)), Some("x"));
    }
}
