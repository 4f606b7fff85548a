//! local-path, built in: what rancher's local-path-provisioner does in a
//! k3s cluster, without its pod. The server side (the provisioner in
//! `controllers::storage`) creates, for a claim of a `rancher.io/local-path`
//! class whose pod was scheduled (`volume.kubernetes.io/selected-node`), a
//! hostPath PV `pvc-<claim uid>` pre-bound to the claim, with node affinity
//! on the node's `kubernetes.io/hostname` and the path
//! `<storage dir>/<pv>_<namespace>_<claim>`. The node side
//! ([`NodeDirs`]) runs in each agent: it watches PVs, creates the directory
//! of every local-path PV whose affinity admits its node, and for a
//! Released PV with reclaim `Delete` removes the directory, then the PV.
//!
//! Invariant: the agent only ever removes a directory that is the
//! `hostPath.path` of a local-path PV of its own node, whose last component
//! starts with `<pv name>_`; nothing else under the storage dir is touched.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::binding::{self, ANN_DEFAULT_CLASS, ANN_PROVISIONED_BY, HOSTNAME_LABEL, PV_PROTECTION};

pub const PROVISIONER: &str = "rancher.io/local-path";
pub const CLASS_NAME: &str = "local-path";

/// The default StorageClass k3s ships.
pub fn default_class() -> StorageClass {
    serde_json::from_value(json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": CLASS_NAME, "annotations": {ANN_DEFAULT_CLASS: "true"}},
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
    }))
    .expect("a valid StorageClass")
}

/// `<pv>_<namespace>_<claim>`, local-path's directory name.
pub fn dir_name(pv: &str, namespace: &str, claim: &str) -> String {
    format!("{pv}_{namespace}_{claim}")
}

/// The PV local-path creates for `claim` on `node` (whose hostname label is
/// `hostname`), under `base`.
pub fn provisioned_volume(
    claim: &PersistentVolumeClaim,
    class: &StorageClass,
    hostname: &str,
    base: &Path,
) -> PersistentVolume {
    let uid = claim.metadata.uid.clone().unwrap_or_default();
    let name = format!("pvc-{uid}");
    let ns = claim.metadata.namespace.clone().unwrap_or_default();
    let claim_name = claim.metadata.name.clone().unwrap_or_default();
    let spec = claim.spec.clone().unwrap_or_default();
    let storage = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| q.0.clone())
        .unwrap_or_else(|| "0".into());
    let path = base.join(dir_name(&name, &ns, &claim_name));
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name, "annotations": {ANN_PROVISIONED_BY: PROVISIONER},
                     "finalizers": [PV_PROTECTION]},
        "spec": {
            "capacity": {"storage": storage},
            "accessModes": spec.access_modes.unwrap_or_default(),
            "persistentVolumeReclaimPolicy": class.reclaim_policy.clone().unwrap_or_else(|| "Delete".into()),
            "storageClassName": class.metadata.name,
            "volumeMode": spec.volume_mode.unwrap_or_else(|| "Filesystem".into()),
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": ns,
                         "name": claim_name, "uid": uid,
                         "resourceVersion": claim.metadata.resource_version},
            "hostPath": {"path": path.to_string_lossy(), "type": "DirectoryOrCreate"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": HOSTNAME_LABEL, "operator": "In", "values": [hostname]}]}]}},
            "mountOptions": class.mount_options,
        },
    }))
    .expect("a valid PersistentVolume")
}

/// What the node does for one PV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirAction {
    None,
    Create(PathBuf),
    /// Remove the directory, then delete the PV.
    Remove(PathBuf),
}

/// The node's action for `pv` (pure; see the module's invariant).
pub fn dir_action(pv: &PersistentVolume, node: &str, labels: &BTreeMap<String, String>) -> DirAction {
    let ours = pv
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANN_PROVISIONED_BY))
        .is_some_and(|p| p == PROVISIONER);
    let Some(spec) = pv.spec.as_ref() else {
        return DirAction::None;
    };
    let Some(path) = spec.host_path.as_ref().map(|h| PathBuf::from(&h.path)) else {
        return DirAction::None;
    };
    let name = pv.metadata.name.as_deref().unwrap_or("");
    let well_named = !name.is_empty()
        && path.is_absolute()
        && path
            .file_name()
            .is_some_and(|f| f.to_string_lossy().starts_with(&format!("{name}_")));
    if !ours || !well_named || !binding::volume_admits_node(pv, node, labels) {
        return DirAction::None;
    }
    let released = binding::volume_phase(pv) == "Released";
    let delete = spec.persistent_volume_reclaim_policy.as_deref() == Some("Delete");
    if released && delete {
        DirAction::Remove(path)
    } else if pv.metadata.deletion_timestamp.is_none() && binding::volume_phase(pv) != "Released" {
        DirAction::Create(path)
    } else {
        DirAction::None
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to call the API: {0}")]
    Api(#[from] kube::Error),
    #[error("failed to {0} {1}: {2}")]
    Io(&'static str, PathBuf, std::io::Error),
}

fn create_dir(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    if path.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(path).map_err(|e| Error::Io("create", path.into(), e))?;
    // local-path makes its directories world-writable (0777).
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777))
        .map_err(|e| Error::Io("chmod", path.into(), e))
}

/// The agent's half of local-path: see the module docs.
pub struct NodeDirs {
    client: kube::Client,
    node: String,
}

impl NodeDirs {
    pub fn new(client: kube::Client, node: &str) -> Self {
        NodeDirs { client, node: node.to_string() }
    }

    async fn labels(&self) -> BTreeMap<String, String> {
        match Api::<Node>::all(self.client.clone()).get_opt(&self.node).await {
            Ok(Some(n)) => n.metadata.labels.unwrap_or_default(),
            _ => [(HOSTNAME_LABEL.to_string(), self.node.clone())].into(),
        }
    }

    /// One PV: create or remove its directory.
    pub async fn reconcile(&self, pv: &PersistentVolume, labels: &BTreeMap<String, String>) -> Result<(), Error> {
        match dir_action(pv, &self.node, labels) {
            DirAction::None => Ok(()),
            DirAction::Create(path) => create_dir(&path),
            DirAction::Remove(path) => {
                match std::fs::remove_dir_all(&path) {
                    Ok(()) => tracing::info!(pv = ?pv.metadata.name, path = %path.display(), "local-path directory removed"),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::Io("remove", path, e)),
                }
                if pv.metadata.deletion_timestamp.is_some() {
                    // Asked once already; deleting again would rewrite it.
                    return Ok(());
                }
                let name = pv.metadata.name.clone().unwrap_or_default();
                match Api::<PersistentVolume>::all(self.client.clone())
                    .delete(&name, &DeleteParams::default())
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// Watches PVs until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let labels = self.labels().await;
        let api = Api::<PersistentVolume>::all(self.client.clone());
        let mut events = watcher::watcher(api, Default::default())
            .default_backoff()
            .touched_objects()
            .boxed();
        loop {
            let pv = tokio::select! {
                _ = shutdown.cancelled() => return,
                ev = events.next() => match ev {
                    Some(Ok(pv)) => pv,
                    Some(Err(e)) => { tracing::debug!("local-path PV watch: {e}"); continue }
                    None => return,
                },
            };
            if let Err(e) = self.reconcile(&pv, &labels).await {
                tracing::warn!(pv = ?pv.metadata.name, "local-path: {e}");
            }
        }
    }
}

/// Creates the default class (once; a user's edits or deletion afterwards
/// are theirs, as k3s's addon is re-applied only when its file changes).
pub async fn ensure_default_class(client: kube::Client) -> Result<(), kube::Error> {
    let api = Api::<StorageClass>::all(client);
    match api.create(&PostParams::default(), &default_class()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim() -> PersistentVolumeClaim {
        serde_json::from_value(json!({"metadata": {"name": "data-web-0", "namespace": "default", "uid": "abc",
            "resourceVersion": "7"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                     "storageClassName": "local-path"}})).unwrap()
    }

    #[test]
    fn provisions_a_hostpath_volume_named_as_local_path() {
        let pv = provisioned_volume(&claim(), &default_class(), "n1", Path::new("/var/lib/rk3s/storage"));
        assert_eq!(pv.metadata.name.as_deref(), Some("pvc-abc"));
        let spec = pv.spec.as_ref().unwrap();
        assert_eq!(spec.host_path.as_ref().unwrap().path, "/var/lib/rk3s/storage/pvc-abc_default_data-web-0");
        assert_eq!(spec.persistent_volume_reclaim_policy.as_deref(), Some("Delete"));
        assert_eq!(spec.claim_ref.as_ref().unwrap().uid.as_deref(), Some("abc"));
        let n1: BTreeMap<String, String> = [(HOSTNAME_LABEL.into(), "n1".into())].into();
        let n2: BTreeMap<String, String> = [(HOSTNAME_LABEL.into(), "n2".into())].into();
        assert!(binding::volume_admits_node(&pv, "n1", &n1));
        assert!(!binding::volume_admits_node(&pv, "n2", &n2));
        assert!(binding::unsatisfied_by(&pv, &claim()).is_none());
    }

    #[test]
    fn node_creates_then_removes_only_its_own_directories() {
        let mut pv = provisioned_volume(&claim(), &default_class(), "n1", Path::new("/s"));
        let n1: BTreeMap<String, String> = [(HOSTNAME_LABEL.into(), "n1".into())].into();
        let n2: BTreeMap<String, String> = [(HOSTNAME_LABEL.into(), "n2".into())].into();
        let path = PathBuf::from("/s/pvc-abc_default_data-web-0");
        assert_eq!(dir_action(&pv, "n1", &n1), DirAction::Create(path.clone()));
        assert_eq!(dir_action(&pv, "n2", &n2), DirAction::None);
        pv.status = Some(serde_json::from_value(json!({"phase": "Released"})).unwrap());
        assert_eq!(dir_action(&pv, "n1", &n1), DirAction::Remove(path));
        pv.spec.as_mut().unwrap().persistent_volume_reclaim_policy = Some("Retain".into());
        assert_eq!(dir_action(&pv, "n1", &n1), DirAction::None);
        // A path that is not `<pv>_…` is never removed.
        pv.spec.as_mut().unwrap().persistent_volume_reclaim_policy = Some("Delete".into());
        pv.spec.as_mut().unwrap().host_path.as_mut().unwrap().path = "/s".into();
        assert_eq!(dir_action(&pv, "n1", &n1), DirAction::None);
        // Nor one a user made by hand.
        let mut manual = provisioned_volume(&claim(), &default_class(), "n1", Path::new("/s"));
        manual.metadata.annotations = None;
        assert_eq!(dir_action(&manual, "n1", &n1), DirAction::None);
    }
}
