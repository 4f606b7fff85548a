//! Which PID namespace a container joins, as kubelet's
//! `NamespacesForPod` decides it: `hostPID` → the node's; with
//! `shareProcessNamespace: true` → the pod's (CRI `NamespaceMode POD`: the
//! pause process is PID 1 and every container, init and ephemeral ones
//! included, sees the others' processes); otherwise its own, except an
//! ephemeral container with `targetContainerName`, which joins its
//! target's (CRI `TARGET` applies only where the mode would be
//! `CONTAINER`). Both joins go through the same `ContainerSpec::pid_ns_path`.
//!
//! Invariant: a pod that shares its PID namespace never starts a container
//! in a namespace of its own: when the pod's namespace cannot be had, the
//! container waits with `CreateContainerError` and is retried.

use k8s_openapi::api::core::v1::{Container, Pod};

use super::PodWorker;
use crate::agent::runtime::ContainerSpec;

/// `spec.shareProcessNamespace: true` (and not `hostPID`, which the API
/// server refuses together with it).
pub(super) fn shares_process_namespace(pod: &Pod) -> bool {
    pod.spec.as_ref().is_some_and(|s| {
        s.share_process_namespace == Some(true) && s.host_pid != Some(true)
    })
}

impl PodWorker {
    /// Points `spec` at the PID namespace container `c` belongs in.
    pub(super) async fn join_pid_namespace(
        &self,
        pod: &Pod,
        c: &Container,
        spec: &mut ContainerSpec,
    ) -> Result<(), String> {
        if spec.host_pid {
            return Ok(());
        }
        if shares_process_namespace(pod) {
            let path = self
                .ctx
                .runtime
                .pod_pid_namespace(&self.uid)
                .await
                .map_err(|e| e.to_string())?;
            spec.pid_ns_path = Some(path);
            return Ok(());
        }
        self.join_target(pod, c, spec).await;
        Ok(())
    }

    /// Stops the pod's pause process, if it had one (termination, after
    /// the containers are stopped; idempotent, so also after a restart
    /// that lost the pod object).
    pub(super) async fn release_pid_namespace(&self) {
        if let Err(e) = self.ctx.runtime.remove_pod_pid_namespace(&self.uid).await {
            tracing::warn!(pod = %self.pod_ref(), error = %e, "failed to stop the pod's pause process");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}, "spec": spec})).unwrap()
    }

    #[test]
    fn shares_only_with_the_flag_and_without_host_pid() {
        let c = serde_json::json!([{"name": "c"}]);
        assert!(shares_process_namespace(&pod(serde_json::json!({"containers": c, "shareProcessNamespace": true}))));
        assert!(!shares_process_namespace(&pod(serde_json::json!({"containers": c}))));
        assert!(!shares_process_namespace(&pod(serde_json::json!({"containers": c, "shareProcessNamespace": false}))));
        assert!(!shares_process_namespace(&pod(
            serde_json::json!({"containers": c, "shareProcessNamespace": true, "hostPID": true})
        )));
    }
}
