//! The overlay controller: prepares the local side once at start (so a
//! kernel without vxlan stops the agent with a clear error), publishes
//! flannel's annotations on the node's own Node, then watches Nodes and
//! runs a reconcile pass on every change and every [`RESYNC_PERIOD`].
//!
//! A pass re-checks the local device (re-creating a deleted `flannel.1`
//! with the same MAC) and then [`peers::sync`]s every remote node's
//! entries. Passes only start once the Node list is complete
//! (`InitDone`): a partial list would make the entries of not-yet-listed
//! nodes look stale and cut their flows after a restart.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Client;
use tokio_util::sync::CancellationToken;

use super::linux::LinuxOverlayOps;
use super::ops::{Mac, OverlayOps, VxlanSpec};
use super::peers::{self, Scope, SyncOutcome, Target};
use super::{annotations, device};
use super::{
    FlannelBackend, OverlayConfig, OverlayError, VNI, VXLAN_DEVICE, VXLAN_OVERHEAD, VXLAN_PORT,
};

/// How often a pass runs without any Node change (device repair, entries
/// someone removed by hand).
pub const RESYNC_PERIOD: Duration = Duration::from_secs(10);

/// The overlay of one node over a kernel seam.
pub struct Overlay {
    config: OverlayConfig,
    ops: Arc<dyn OverlayOps>,
    /// The VTEP MAC, chosen by [`Overlay::prepare`].
    mac: Mutex<Option<Mac>>,
}

impl Overlay {
    pub fn new(config: OverlayConfig, ops: Arc<dyn OverlayOps>) -> Result<Self, OverlayError> {
        config.validate()?;
        Ok(Self {
            config,
            ops,
            mac: Mutex::new(None),
        })
    }

    pub fn config(&self) -> &OverlayConfig {
        &self.config
    }

    /// Sets up the local side and returns the annotations to publish.
    /// `own` is this node's Node as the API has it (for a MAC published by
    /// an earlier run whose state file is gone).
    pub async fn prepare(
        &self,
        own: Option<&Node>,
    ) -> Result<BTreeMap<String, String>, OverlayError> {
        let mac = match self.config.backend {
            FlannelBackend::Vxlan => {
                let candidate = device::load_mac(&self.config.state_dir)
                    .or_else(|| own.and_then(annotations::published_vtep_mac))
                    .unwrap_or_else(Mac::random);
                *self.mac.lock().unwrap_or_else(|e| e.into_inner()) = Some(candidate);
                let link = self.ensure_device().await?;
                // A kept device keeps its MAC: that is the one peers know.
                *self.mac.lock().unwrap_or_else(|e| e.into_inner()) = Some(link.0);
                device::save_mac(&self.config.state_dir, link.0)?;
                Some(link.0)
            }
            _ => {
                self.ops
                    .uplink(self.config.iface.as_deref(), self.config.node_ip)
                    .await?;
                None
            }
        };
        Ok(annotations::own(
            self.config.backend,
            mac,
            self.config.public_ip(),
            self.config.external_ip,
        ))
    }

    /// Makes `flannel.1` right; returns its MAC and index.
    async fn ensure_device(&self) -> Result<(Mac, u32, u32), OverlayError> {
        let uplink = self
            .ops
            .uplink(self.config.iface.as_deref(), self.config.node_ip)
            .await?;
        let mac = self
            .mac
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .ok_or_else(|| OverlayError::Config("the overlay was not prepared".into()))?;
        let spec = VxlanSpec {
            name: VXLAN_DEVICE.to_string(),
            vni: VNI,
            port: VXLAN_PORT,
            local: self.config.node_ip,
            uplink: uplink.index,
            mtu: uplink.mtu.saturating_sub(VXLAN_OVERHEAD),
            mac,
        };
        let link = device::ensure(self.ops.as_ref(), &spec, self.config.vtep_address()).await?;
        Ok((link.mac, link.index, uplink.index))
    }

    /// One reconcile pass over the full Node list.
    pub async fn sync(&self, nodes: &[Node]) -> Result<SyncOutcome, OverlayError> {
        let (target, links) = match self.config.backend {
            FlannelBackend::Vxlan => {
                let (_, device, uplink) = self.ensure_device().await?;
                (Target::Vxlan { device }, [Some(device), Some(uplink)])
            }
            FlannelBackend::HostGw => {
                let uplink = self
                    .ops
                    .uplink(self.config.iface.as_deref(), self.config.node_ip)
                    .await?;
                // A leftover VXLAN device's routes are stale under host-gw.
                let vxlan = self.ops.link(VXLAN_DEVICE).await?.map(|l| l.index);
                (
                    Target::HostGw {
                        uplink: uplink.index,
                    },
                    [Some(uplink.index), vxlan],
                )
            }
            FlannelBackend::None => return Ok(SyncOutcome::default()),
        };
        let scope = Scope {
            cluster_cidr: self.config.cluster_cidr,
            own_subnet: self.config.pod_cidr,
            links,
        };
        let mut list = Vec::new();
        for n in nodes {
            if n.metadata.name.as_deref() == Some(self.config.node_name.as_str()) {
                continue;
            }
            match annotations::peer(n, self.config.backend) {
                Ok(p) => list.push(p),
                Err(why) => tracing::debug!(node = ?n.metadata.name, "not an overlay peer: {why}"),
            }
        }
        peers::sync(self.ops.as_ref(), target, &scope, &list).await
    }
}

/// Starts the overlay for this node: prepares it now (errors stop the
/// agent: a missing vxlan module is reported here) and spawns the
/// controller until `shutdown`. Does nothing for backend `none`.
pub async fn start(
    config: OverlayConfig,
    client: Client,
    shutdown: CancellationToken,
) -> Result<(), OverlayError> {
    if config.backend == FlannelBackend::None {
        tracing::info!("flannel backend none: rk3s sets up no overlay between nodes");
        return Ok(());
    }
    let ops = LinuxOverlayOps::connect(config.host_netns.clone()).await?;
    let overlay = Overlay::new(config, Arc::new(ops))?;
    let api: Api<Node> = Api::all(client);
    let name = overlay.config.node_name.clone();
    let own = api
        .get_opt(&name)
        .await
        .map_err(|source| OverlayError::Api {
            action: format!("read node {name}"),
            source,
        })?;
    let wanted = overlay.prepare(own.as_ref()).await?;
    tracing::info!(node = %name, backend = overlay.config.backend.name(), pod_cidr = %overlay.config.pod_cidr,
        public_ip = %overlay.config.public_ip(), "overlay ready");
    tokio::spawn(run(overlay, api, wanted, shutdown));
    Ok(())
}

async fn run(
    overlay: Overlay,
    api: Api<Node>,
    wanted: BTreeMap<String, String>,
    shutdown: CancellationToken,
) {
    let name = overlay.config.node_name.clone();
    let mut events = watcher::watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    let mut staging: BTreeMap<String, Node> = BTreeMap::new();
    let mut listed = false;
    let mut dirty = false;
    let mut tick = tokio::time::interval(RESYNC_PERIOD);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => dirty = true,
            ev = events.next() => match ev {
                None => return,
                Some(Err(e)) => tracing::warn!(error = %e, "node watch failed; retrying"),
                Some(Ok(Event::Init)) => staging.clear(),
                Some(Ok(Event::InitApply(n))) => { staging.insert(n.metadata.name.clone().unwrap_or_default(), n); }
                Some(Ok(Event::InitDone)) => {
                    nodes = std::mem::take(&mut staging);
                    listed = true;
                    dirty = true;
                }
                Some(Ok(Event::Apply(n))) => {
                    nodes.insert(n.metadata.name.clone().unwrap_or_default(), n);
                    dirty = true;
                }
                Some(Ok(Event::Delete(n))) => {
                    nodes.remove(n.metadata.name.as_deref().unwrap_or_default());
                    dirty = true;
                }
            }
        }
        if !(dirty && listed) {
            continue;
        }
        dirty = false;
        if let Some(own) = nodes.get(&name) {
            if !annotations::up_to_date(own, &wanted) {
                publish(&api, &name, &wanted).await;
            }
        }
        let all: Vec<Node> = nodes.values().cloned().collect();
        match overlay.sync(&all).await {
            Ok(out) => log_outcome(&out),
            Err(e) => tracing::warn!(error = %e, "overlay pass failed; retrying"),
        }
    }
}

async fn publish(api: &Api<Node>, name: &str, wanted: &BTreeMap<String, String>) {
    let patch = serde_json::json!({"metadata": {"annotations": wanted}});
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => tracing::info!(node = %name, "published the flannel annotations"),
        Err(e) => {
            tracing::warn!(node = %name, error = %e, "failed to publish the flannel annotations; retrying")
        }
    }
}

fn log_outcome(out: &SyncOutcome) {
    for e in &out.removed {
        tracing::info!(entry = ?e, "removed an overlay entry");
    }
    for e in &out.added {
        tracing::info!(entry = ?e, "added an overlay entry");
    }
    for (node, e) in &out.failed {
        tracing::warn!(%node, error = %e, "failed to set up the overlay to a node (rolled back; retrying)");
    }
    for node in &out.conflicts {
        tracing::warn!(%node, "skipped a node whose pod CIDR another node (or this one) already has");
    }
}

/// The node IP as IPv4, or a configuration error saying what to fix.
pub fn ipv4(ip: std::net::IpAddr, what: &str) -> Result<Ipv4Addr, OverlayError> {
    match ip {
        std::net::IpAddr::V4(v4) => Ok(v4),
        std::net::IpAddr::V6(v6) => Err(OverlayError::Config(format!(
            "{what} {v6} is IPv6; the overlay is IPv4 only for now"
        ))),
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
