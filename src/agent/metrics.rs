//! Wires `crate::metrics::collector` into a node: the containers come from
//! the container runtime's list (its labels name the pod, the container and
//! the cgroup), the figures from the host's cgroups and `/proc`, and
//! `/stats/summary` and `/metrics` are served on the kubelet API.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::metrics::cgroup::RealHost;
use crate::metrics::collector::{Collector, ContainerLister, ContainerRef};
use crate::metrics::summary::PodRef;

use super::runtime::{labels, ContainerRuntime, ContainerdRuntime};

/// Lists containers through a runtime.
pub struct RuntimeLister<R: ?Sized>(pub Arc<R>);

#[async_trait]
impl<R: ContainerRuntime + ?Sized + 'static> ContainerLister for RuntimeLister<R> {
    async fn running(&self) -> Result<Vec<ContainerRef>, String> {
        let all = self.0.list(&BTreeMap::new()).await.map_err(|e| e.to_string())?;
        Ok(all.iter().filter_map(container_ref).collect())
    }
}

fn container_ref(c: &super::runtime::ContainerSummary) -> Option<ContainerRef> {
    Some(ContainerRef {
        pod: PodRef {
            name: c.label(labels::POD_NAME)?.to_string(),
            namespace: c.label(labels::POD_NAMESPACE)?.to_string(),
            uid: c.label(labels::POD_UID)?.to_string(),
        },
        container: c.label(labels::CONTAINER_NAME)?.to_string(),
        cgroup: c.label(labels::CGROUP_PATH)?.to_string(),
    })
}

/// containerd, connected on first use (the kubelet may still be starting it).
struct LazyContainerd {
    socket: PathBuf,
    run: super::run_dir::RunDir,
    runtime: tokio::sync::OnceCell<Arc<ContainerdRuntime>>,
}

#[async_trait]
impl ContainerLister for LazyContainerd {
    async fn running(&self) -> Result<Vec<ContainerRef>, String> {
        let runtime = self
            .runtime
            .get_or_try_init(|| async {
                ContainerdRuntime::connect(&self.socket, &self.run.stdio_fifos()).await.map(Arc::new).map_err(|e| e.to_string())
            })
            .await?;
        RuntimeLister(runtime.clone()).running().await
    }
}

/// Starts sampling this node's containerd containers; returns the routes to
/// merge into the kubelet API.
pub fn start(opts: &super::kubelet::KubeletOptions, shutdown: &CancellationToken) -> Router {
    let run = opts.run_dir();
    let socket = super::kubelet::external_socket(&opts.node.container_runtime_endpoint)
        .unwrap_or_else(|| run.containerd_socket());
    let lister = Arc::new(LazyContainerd { socket, run, runtime: tokio::sync::OnceCell::new() });
    let collector = Arc::new(Collector::new(
        &opts.node.node_name,
        Arc::new(RealHost::default()),
        lister,
        opts.metrics.clone(),
    ));
    tokio::spawn(collector.clone().run(shutdown.clone()));
    collector.routes()
}
