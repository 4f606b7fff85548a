//! The local-path provisioner, built in: for an unbound claim whose class
//! is `rancher.io/local-path`'s and which the scheduler gave a node
//! (`volume.kubernetes.io/selected-node`) and the binder the
//! `storage-provisioner` annotation, it creates the PV
//! `storage::local_path::provisioned_volume` describes, pre-bound to the
//! claim; the binder then binds them and the node's agent makes the
//! directory. Deleting is the agent's (it owns the directory).

use std::path::Path;

use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{Api, PostParams};

use super::{Events, Result, World};
use crate::k8s::events::EventType;
use crate::storage::binding::{self as b, ANN_SELECTED_NODE, ANN_STORAGE_PROVISIONER, HOSTNAME_LABEL};
use crate::storage::local_path::{provisioned_volume, PROVISIONER};

pub async fn reconcile(client: &kube::Client, events: &Events, w: &World, base: &Path) -> Result<()> {
    for c in &w.claims {
        let ann = |k: &str| c.metadata.annotations.as_ref().and_then(|a| a.get(k)).cloned();
        if c.metadata.deletion_timestamp.is_some()
            || !b::claim_volume_name(c).is_empty()
            || ann(ANN_STORAGE_PROVISIONER).as_deref() != Some(PROVISIONER)
        {
            continue;
        }
        let Some(class) = w.class(b::claim_class(c)).filter(|k| k.provisioner == PROVISIONER) else {
            continue;
        };
        let Some(node) = ann(ANN_SELECTED_NODE) else {
            continue;
        };
        let uid = c.metadata.uid.clone().unwrap_or_default();
        if w.volume(&format!("pvc-{uid}")).is_some() {
            continue;
        }
        let hostname = w
            .node(&node)
            .and_then(|n| n.metadata.labels.as_ref())
            .and_then(|l| l.get(HOSTNAME_LABEL).cloned())
            .unwrap_or(node.clone());
        let pv = provisioned_volume(c, class, &hostname, base);
        let name = pv.metadata.name.clone().unwrap_or_default();
        events.emit(c, EventType::Normal, "Provisioning",
            &format!("External provisioner is provisioning volume for claim \"{}\"", b::claim_key(c))).await;
        let created = Api::<PersistentVolume>::all(client.clone()).create(&PostParams::default(), &pv).await;
        match created {
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Ok(_) => {
                tracing::info!(claim = %b::claim_key(c), volume = %name, node = %node, "local-path volume provisioned");
                events.emit(c, EventType::Normal, "ProvisioningSucceeded",
                    &format!("Successfully provisioned volume {name}")).await;
            }
            Err(e) => {
                events.emit(c, EventType::Warning, "ProvisioningFailed",
                    &format!("failed to provision volume with StorageClass \"{}\": {e}", b::claim_class(c))).await;
            }
        }
    }
    Ok(())
}
