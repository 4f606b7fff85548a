//! Container lifecycle hooks the kubelet runs. `preStop` runs before a
//! container is stopped: an exec in the container or an HTTP GET to the
//! pod, every app container's at once, all within the pod's grace period
//! (kubelet's order: the hooks first, then SIGTERM).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

use super::probe;
use crate::agent::runtime::{ContainerId, ContainerRuntime};

/// Runs the preStop hooks of `pod`'s app containers that are `running`
/// (container name → id), concurrently, within `grace`. A failing hook is
/// logged and never stops the termination.
pub async fn run_pre_stop(
    runtime: &Arc<dyn ContainerRuntime>,
    pod: &Pod,
    running: &HashMap<String, ContainerId>,
    pod_ip: Option<IpAddr>,
    grace: Duration,
) {
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.clone())
        .unwrap_or_default();
    let mut hooks = Vec::new();
    for c in &containers {
        let Some(hook) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.clone()) else {
            continue;
        };
        let Some(id) = running.get(&c.name).cloned() else {
            continue;
        };
        let runtime = runtime.clone();
        let name = c.name.clone();
        let container = c.clone();
        hooks.push(async move {
            if let Some(exec) = &hook.exec {
                let argv = exec.command.clone().unwrap_or_default();
                match runtime.exec(&id, &argv, grace).await {
                    Ok(0) => {}
                    Ok(code) => {
                        tracing::warn!(container = %name, code, "preStop hook exited non-zero")
                    }
                    Err(e) => {
                        tracing::warn!(container = %name, error = %e, "preStop hook failed")
                    }
                }
            } else if let (Some(get), Some(ip)) = (&hook.http_get, pod_ip) {
                let probe = k8s_openapi::api::core::v1::Probe {
                    http_get: Some(get.clone()),
                    timeout_seconds: Some(grace.as_secs().max(1) as i32),
                    ..Default::default()
                };
                if probe::run(&probe, &container, ip, runtime.as_ref(), &id).await
                    != probe::Outcome::Success
                {
                    tracing::warn!(container = %name, "preStop httpGet hook failed");
                }
            }
        });
    }
    let _ = tokio::time::timeout(grace, futures::future::join_all(hooks)).await;
}
