//! Ephemeral containers (`kubectl debug`): added to a running pod through
//! `pods/ephemeralcontainers`, each is started once in the pod's network
//! namespace, with the pod's files and volumes, and never restarted (the
//! worker's restart policy `Never`); it is reported in
//! `status.ephemeralContainerStatuses` (never ready, as kube). With
//! `targetContainerName` it joins the target container's PID and IPC
//! namespaces (`/proc/<pid>/ns/…` of the target's running process), so
//! `ps` in the debugger sees the target's processes (in a pod with
//! `shareProcessNamespace` it joins the pod's instead, see
//! `pid_namespace`). Attach, exec and logs
//! find it by its name label like any other container.
//!
//! Invariant: an ephemeral container shares its slot map with the pod's
//! other containers (names are unique across all of them: the API server
//! refuses duplicates), so adoption after an agent restart and termination
//! handle it without special cases.
//!
//! Partial: a target that is not running when the debugger starts is not
//! joined (the debugger gets namespaces of its own, with a warning);
//! containers of a pod share no IPC namespace otherwise.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Container, EphemeralContainer, Pod};
use serde_json::Value;

use super::PodWorker;
use crate::agent::runtime::ContainerSpec;

/// The pod's ephemeral containers as containers (the same fields, less
/// `targetContainerName`).
pub(super) fn ephemeral_containers(pod: &Pod) -> Vec<Container> {
    pod.spec
        .as_ref()
        .and_then(|s| s.ephemeral_containers.as_ref())
        .into_iter()
        .flatten()
        .filter_map(as_container)
        .collect()
}

fn as_container(ec: &EphemeralContainer) -> Option<Container> {
    let mut v = serde_json::to_value(ec).ok()?;
    v.as_object_mut()?.remove("targetContainerName");
    serde_json::from_value(v).ok()
}

/// The target an ephemeral container named `name` asks for, if any.
fn target_of<'a>(pod: &'a Pod, name: &str) -> Option<&'a str> {
    pod.spec
        .as_ref()?
        .ephemeral_containers
        .as_ref()?
        .iter()
        .find(|e| e.name == name)?
        .target_container_name
        .as_deref()
        .filter(|t| !t.is_empty())
}

impl PodWorker {
    /// Starts the ephemeral containers not yet started; notices their exit.
    pub(super) async fn sync_ephemeral(&mut self, pod: &Pod) {
        for c in ephemeral_containers(pod) {
            self.sync_container(pod, &c, "Never", false).await;
        }
    }

    /// Points `spec` at the target container's PID and IPC namespaces
    /// when `c` is an ephemeral container with a running target.
    pub(super) async fn join_target(&self, pod: &Pod, c: &Container, spec: &mut ContainerSpec) {
        let Some(target) = target_of(pod, &c.name) else {
            return;
        };
        let id = self.slots.get(target).and_then(|s| s.id.clone());
        let pid = match id {
            Some(id) => self.ctx.runtime.status(&id).await.ok().and_then(|s| s.pid),
            None => None,
        };
        let Some(pid) = pid else {
            tracing::warn!(pod = %self.pod_ref(), container = %c.name, target, "the target container is not running; the ephemeral container gets namespaces of its own");
            return;
        };
        spec.pid_ns_path = Some(PathBuf::from(format!("/proc/{pid}/ns/pid")));
        spec.ipc_ns_path = Some(PathBuf::from(format!("/proc/{pid}/ns/ipc")));
    }

    /// Adds `ephemeralContainerStatuses` to `status` when the pod has any.
    pub(super) fn add_ephemeral_statuses(&self, pod: &Pod, status: &mut Value) {
        let containers = ephemeral_containers(pod);
        if containers.is_empty() {
            return;
        }
        let statuses: Vec<Value> = self
            .views(&containers, false)
            .into_iter()
            .map(|mut v| {
                v.ready = false;
                v.to_json()
            })
            .collect();
        status["ephemeralContainerStatuses"] = Value::Array(statuses);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ephemeral_containers_become_containers_and_name_their_target() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}],
                     "ephemeralContainers": [
                        {"name": "debugger-1", "image": "busybox", "targetContainerName": "c",
                         "command": ["ps"], "stdin": true, "tty": true},
                        {"name": "debugger-2", "image": "busybox"}]}
        }))
        .unwrap();
        let cs = ephemeral_containers(&pod);
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[0].name, "debugger-1");
        assert_eq!(cs[0].command.as_deref(), Some(&["ps".to_string()][..]));
        assert_eq!(cs[0].stdin, Some(true));
        assert_eq!(target_of(&pod, "debugger-1"), Some("c"));
        assert_eq!(target_of(&pod, "debugger-2"), None);
        assert_eq!(target_of(&pod, "c"), None);
    }
}
