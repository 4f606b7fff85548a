//! The node's Lease in `kube-node-lease`, renewed every [`RENEW_PERIOD`]:
//! the heartbeat the node lifecycle controller watches.

use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tokio_util::sync::CancellationToken;

pub const NAMESPACE: &str = "kube-node-lease";
pub const RENEW_PERIOD: Duration = Duration::from_secs(10);
pub const DURATION_SECONDS: i32 = 40;

fn micro_now() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// The Lease as first created, owned by the Node (so it goes with it).
pub fn build_lease(node: &str, node_uid: Option<&str>) -> serde_json::Value {
    let mut lease = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": node, "namespace": NAMESPACE},
        "spec": {
            "holderIdentity": node,
            "leaseDurationSeconds": DURATION_SECONDS,
            "renewTime": micro_now(),
        },
    });
    if let Some(uid) = node_uid {
        lease["metadata"]["ownerReferences"] =
            json!([{"apiVersion": "v1", "kind": "Node", "name": node, "uid": uid}]);
    }
    lease
}

/// Creates or renews the lease once.
pub async fn renew(client: &Client, node: &str, node_uid: Option<&str>) -> Result<(), kube::Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    let patch = json!({"spec": {"holderIdentity": node, "leaseDurationSeconds": DURATION_SECONDS, "renewTime": micro_now()}});
    match api
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => {
            let lease: Lease =
                serde_json::from_value(build_lease(node, node_uid)).expect("valid lease");
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// Renews the lease every [`RENEW_PERIOD`] until `shutdown`; failures are
/// logged and retried at the next tick.
pub async fn run(
    client: Client,
    node: String,
    node_uid: Option<String>,
    shutdown: CancellationToken,
) {
    loop {
        if let Err(e) = renew(&client, &node, node_uid.as_deref()).await {
            tracing::warn!(node = %node, error = %e, "failed to renew the node lease");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RENEW_PERIOD) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_is_owned_by_the_node() {
        let l = build_lease("n1", Some("uid-1"));
        assert_eq!(l["spec"]["holderIdentity"], "n1");
        assert_eq!(l["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        let _: Lease = serde_json::from_value(l).unwrap();
    }
}
