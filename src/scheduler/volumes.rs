//! kube-scheduler's VolumeBinding plug-in, without capacity tracking:
//!
//! - PreFilter (`pre_filter`): every claim the pod names must exist and not
//!   be deleted, and an unbound claim must be on a WaitForFirstConsumer
//!   class (else `pod has unbound immediate PersistentVolumeClaims`).
//! - Filter (`filter`): a bound claim's volume must admit the node (its
//!   node affinity: `node(s) had volume node affinity conflict`); a delayed
//!   claim needs an available volume that admits the node or a class with
//!   a provisioner (`node(s) didn't find available persistent volumes to
//!   bind`).
//! - PreBind (`plan`, run by the bind task before `pods/binding`): a
//!   delayed claim is pre-bound to the chosen static volume (its
//!   `claimRef`), or gets `volume.kubernetes.io/selected-node` for its
//!   provisioner; the pod is bound only once every claim is bound.
//!
//! The state comes from three watches kept by the scheduler loop.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::filter::NodeInfo;
use crate::storage::binding::{self as b, ANN_BOUND_BY_CONTROLLER, ANN_SELECTED_NODE};

pub const UNBOUND_IMMEDIATE: &str = "pod has unbound immediate PersistentVolumeClaims";
pub const NODE_CONFLICT: &str = "node(s) had volume node affinity conflict";
pub const BIND_CONFLICT: &str = "node(s) didn't find available persistent volumes to bind";
pub const PV_NOT_EXIST: &str = "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)";

/// Claims, volumes and classes as the watches last said.
#[derive(Default)]
pub struct VolumeState {
    pub claims: HashMap<String, Arc<PersistentVolumeClaim>>,
    pub volumes: BTreeMap<String, Arc<PersistentVolume>>,
    pub classes: HashMap<String, Arc<StorageClass>>,
}

/// The maps of [`VolumeState`], fed by `Scheduler::on_volume_event`.
pub trait ObjMap<K> {
    fn begin_init(&mut self);
    fn put(&mut self, key: String, obj: Arc<K>);
    fn drop_key(&mut self, key: &str);
}

impl<K> ObjMap<K> for HashMap<String, Arc<K>> {
    fn begin_init(&mut self) {
        self.clear();
    }
    fn put(&mut self, key: String, obj: Arc<K>) {
        self.insert(key, obj);
    }
    fn drop_key(&mut self, key: &str) {
        self.remove(key);
    }
}

impl<K> ObjMap<K> for BTreeMap<String, Arc<K>> {
    fn begin_init(&mut self) {
        self.clear();
    }
    fn put(&mut self, key: String, obj: Arc<K>) {
        self.insert(key, obj);
    }
    fn drop_key(&mut self, key: &str) {
        self.remove(key);
    }
}

/// What one of the pod's claims needs from a node.
#[derive(Clone)]
pub enum ClaimNeed {
    /// Bound: its volume (None: missing) must admit the node.
    Bound(Option<Arc<PersistentVolume>>),
    /// WaitForFirstConsumer, not bound yet.
    Delayed(Arc<PersistentVolumeClaim>, Option<Arc<StorageClass>>),
}

/// A step before the pod's bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Pre-bind volume `pv` to the claim `namespace/name` (uid).
    PreBind { pv: String, namespace: String, claim: String, uid: String },
    /// Annotate the claim with the chosen node for its provisioner.
    SelectNode { namespace: String, claim: String, node: String },
}

pub fn pre_filter(pod: &Pod, st: &VolumeState) -> Result<Vec<ClaimNeed>, String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut needs = Vec::new();
    for name in b::pod_claims(pod) {
        let Some(c) = st.claims.get(&format!("{ns}/{name}")) else {
            return Err(format!("persistentvolumeclaim \"{name}\" not found"));
        };
        if c.metadata.deletion_timestamp.is_some() {
            return Err(format!("persistentvolumeclaim \"{name}\" is being deleted"));
        }
        let volume = b::claim_volume_name(c);
        if !volume.is_empty() {
            needs.push(ClaimNeed::Bound(st.volumes.get(volume).cloned()));
            continue;
        }
        let class = st.classes.get(b::claim_class(c)).cloned();
        if !b::is_wait_for_first_consumer(class.as_deref()) {
            return Err(UNBOUND_IMMEDIATE.into());
        }
        needs.push(ClaimNeed::Delayed(c.clone(), class));
    }
    Ok(needs)
}

fn node_labels(node: &NodeInfo) -> BTreeMap<String, String> {
    node.node.metadata.labels.clone().unwrap_or_default()
}

fn static_match<'a>(st: &'a VolumeState, c: &PersistentVolumeClaim, node: &NodeInfo) -> Option<&'a PersistentVolume> {
    let labels = node_labels(node);
    b::find_matching_volume(c, st.volumes.values().map(|v| v.as_ref()), Some((&node.name, &labels)))
}

pub fn filter(needs: &[ClaimNeed], st: &VolumeState, node: &NodeInfo) -> Result<(), String> {
    let labels = node_labels(node);
    for need in needs {
        match need {
            ClaimNeed::Bound(None) => return Err(PV_NOT_EXIST.into()),
            ClaimNeed::Bound(Some(v)) => {
                if !b::volume_admits_node(v, &node.name, &labels) {
                    return Err(NODE_CONFLICT.into());
                }
            }
            ClaimNeed::Delayed(c, class) => {
                if static_match(st, c, node).is_none() && b::dynamic_provisioner(class.as_deref()).is_none() {
                    return Err(BIND_CONFLICT.into());
                }
            }
        }
    }
    Ok(())
}

/// The PreBind steps for the pod on `node`.
pub fn plan(needs: &[ClaimNeed], st: &VolumeState, node: &NodeInfo) -> Vec<Action> {
    let mut out = Vec::new();
    for need in needs {
        let ClaimNeed::Delayed(c, _) = need else { continue };
        let namespace = c.metadata.namespace.clone().unwrap_or_default();
        let claim = c.metadata.name.clone().unwrap_or_default();
        match static_match(st, c, node) {
            Some(v) => out.push(Action::PreBind {
                pv: v.metadata.name.clone().unwrap_or_default(),
                namespace,
                claim,
                uid: c.metadata.uid.clone().unwrap_or_default(),
            }),
            None => out.push(Action::SelectNode { namespace, claim, node: node.name.clone() }),
        }
    }
    out
}

/// Runs the steps, then waits (up to `timeout`) until every claim is bound.
pub async fn pre_bind(client: &kube::Client, actions: &[Action], timeout: Duration) -> Result<(), String> {
    let pp = PatchParams::default();
    for a in actions {
        let r = match a {
            Action::PreBind { pv, namespace, claim, uid } => {
                let body = json!({"metadata": {"annotations": {ANN_BOUND_BY_CONTROLLER: "yes"}},
                    "spec": {"claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                        "namespace": namespace, "name": claim, "uid": uid}}});
                Api::<PersistentVolume>::all(client.clone()).patch(pv, &pp, &Patch::Merge(&body)).await.map(drop)
            }
            Action::SelectNode { namespace, claim, node } => {
                let body = json!({"metadata": {"annotations": {ANN_SELECTED_NODE: node}}});
                Api::<PersistentVolumeClaim>::namespaced(client.clone(), namespace)
                    .patch(claim, &pp, &Patch::Merge(&body))
                    .await
                    .map(drop)
            }
        };
        r.map_err(|e| format!("failed to bind volumes: {e}"))?;
    }
    let deadline = tokio::time::Instant::now() + timeout;
    for a in actions {
        let (namespace, claim) = match a {
            Action::PreBind { namespace, claim, .. } | Action::SelectNode { namespace, claim, .. } => (namespace, claim),
        };
        let api = Api::<PersistentVolumeClaim>::namespaced(client.clone(), namespace);
        loop {
            match api.get_opt(claim).await {
                Ok(Some(c)) if !b::claim_volume_name(&c).is_empty() && b::claim_phase(&c) == "Bound" => break,
                Ok(None) => return Err(format!("persistentvolumeclaim \"{claim}\" not found")),
                _ => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err("binding volumes: context deadline exceeded".into());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> NodeInfo {
        NodeInfo::new(Arc::new(serde_json::from_value(json!({"metadata": {"name": name,
            "labels": {"kubernetes.io/hostname": name}}})).unwrap()))
    }

    fn state(class_mode: &str, provisioner: &str) -> VolumeState {
        let mut st = VolumeState::default();
        let c: PersistentVolumeClaim = serde_json::from_value(json!({"metadata": {"name": "data", "namespace": "ns", "uid": "u"},
            "spec": {"storageClassName": "local", "accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Gi"}}}})).unwrap();
        st.claims.insert("ns/data".into(), Arc::new(c));
        let sc: StorageClass = serde_json::from_value(json!({"metadata": {"name": "local"},
            "provisioner": provisioner, "volumeBindingMode": class_mode})).unwrap();
        st.classes.insert("local".into(), Arc::new(sc));
        st
    }

    fn pod() -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": {"containers": [],
            "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]}})).unwrap()
    }

    fn pv_on(name: &str, node: &str) -> PersistentVolume {
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"], "storageClassName": "local", "local": {"path": "/x"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}},
            "status": {"phase": "Available"}})).unwrap()
    }

    #[test]
    fn unbound_immediate_and_missing_claims_stop_the_pod() {
        let st = state("Immediate", "x");
        assert_eq!(pre_filter(&pod(), &st).err().as_deref(), Some(UNBOUND_IMMEDIATE));
        let empty = VolumeState::default();
        assert_eq!(pre_filter(&pod(), &empty).err().as_deref(), Some("persistentvolumeclaim \"data\" not found"));
    }

    #[test]
    fn delayed_static_claims_follow_the_volume_and_dynamic_ones_select_the_node() {
        let mut st = state("WaitForFirstConsumer", b::NO_PROVISIONER);
        st.volumes.insert("pv1".into(), Arc::new(pv_on("pv1", "n2")));
        let needs = pre_filter(&pod(), &st).unwrap();
        assert_eq!(filter(&needs, &st, &node("n1")).err().as_deref(), Some(BIND_CONFLICT));
        assert!(filter(&needs, &st, &node("n2")).is_ok());
        assert_eq!(plan(&needs, &st, &node("n2")),
            vec![Action::PreBind { pv: "pv1".into(), namespace: "ns".into(), claim: "data".into(), uid: "u".into() }]);
        let st = state("WaitForFirstConsumer", "rancher.io/local-path");
        let needs = pre_filter(&pod(), &st).unwrap();
        assert!(filter(&needs, &st, &node("n1")).is_ok());
        assert_eq!(plan(&needs, &st, &node("n1")),
            vec![Action::SelectNode { namespace: "ns".into(), claim: "data".into(), node: "n1".into() }]);
    }

    #[test]
    fn a_bound_volume_pins_the_pod_to_its_node() {
        let mut st = state("WaitForFirstConsumer", "x");
        let mut c = (*st.claims["ns/data"]).clone();
        c.spec.as_mut().unwrap().volume_name = Some("pv1".into());
        st.claims.insert("ns/data".into(), Arc::new(c));
        st.volumes.insert("pv1".into(), Arc::new(pv_on("pv1", "n2")));
        let needs = pre_filter(&pod(), &st).unwrap();
        assert_eq!(filter(&needs, &st, &node("n1")).err().as_deref(), Some(NODE_CONFLICT));
        assert!(filter(&needs, &st, &node("n2")).is_ok());
        assert!(plan(&needs, &st, &node("n2")).is_empty());
    }
}
