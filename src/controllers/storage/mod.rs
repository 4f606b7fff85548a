//! The storage controllers (kube-controller-manager's persistentvolume-binder,
//! pvc-protection and pv-protection, plus rancher's local-path provisioner
//! built in), each in its file:
//!
//! - `binder`: claims ↔ volumes, phases, bind annotations, reclaim;
//! - `protection`: the `kubernetes.io/pvc-protection` and
//!   `kubernetes.io/pv-protection` finalizers;
//! - `provisioner`: local-path volumes for claims whose pod was scheduled.
//!
//! Shape: one loop watches claims, volumes, classes, nodes and pods; any
//! change (debounced) or a 15 s tick runs one level-triggered pass over a
//! fresh list of everything, so a restart or a missed event loses nothing.
//! The pure decisions live in `crate::storage::binding`.

pub mod binder;
pub mod protection;
pub mod provisioner;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, ListParams};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;

use super::Context;
use crate::k8s::events::{object_ref, EventRecorder, EventType};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to call the API: {0}")]
    Api(#[from] kube::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the storage controllers are told at start.
#[derive(Clone, Debug)]
pub struct StorageOptions {
    /// The built-in local-path provisioner runs and the default class is
    /// created (off with `--disable local-storage`).
    pub local_storage: bool,
    /// `--default-local-storage-path` (`<data-dir>/storage`).
    pub local_storage_path: PathBuf,
}

/// One pass's view of the world.
pub struct World {
    pub claims: Vec<PersistentVolumeClaim>,
    pub volumes: Vec<PersistentVolume>,
    pub classes: Vec<StorageClass>,
    pub nodes: Vec<Node>,
    pub pods: Vec<Pod>,
}

impl World {
    pub fn class(&self, name: &str) -> Option<&StorageClass> {
        self.classes.iter().find(|c| c.metadata.name.as_deref() == Some(name))
    }

    pub fn volume(&self, name: &str) -> Option<&PersistentVolume> {
        self.volumes.iter().find(|v| v.metadata.name.as_deref() == Some(name))
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.metadata.name.as_deref() == Some(name))
    }
}

/// Events, at most one per object, reason and message a minute (each pass
/// would otherwise repeat them).
pub struct Events {
    recorder: EventRecorder,
    last: Mutex<HashMap<(String, String, String), Instant>>,
}

impl Events {
    fn new(client: kube::Client) -> Self {
        Events {
            recorder: EventRecorder::new(client, "persistentvolume-controller"),
            last: Mutex::new(HashMap::new()),
        }
    }

    pub async fn emit<K>(&self, obj: &K, kind: EventType, reason: &str, message: &str)
    where
        K: kube::Resource<DynamicType = ()>,
    {
        let key = (
            obj.meta().uid.clone().unwrap_or_default(),
            reason.to_string(),
            message.to_string(),
        );
        {
            let mut last = self.last.lock().expect("not poisoned");
            if last.get(&key).is_some_and(|t| t.elapsed() < Duration::from_secs(60)) {
                return;
            }
            last.retain(|_, t| t.elapsed() < Duration::from_secs(600));
            last.insert(key, Instant::now());
        }
        self.recorder.record(&object_ref(obj), kind, reason, message).await;
    }
}

async fn list_world(client: &kube::Client) -> Result<World> {
    let lp = ListParams::default();
    Ok(World {
        claims: Api::<PersistentVolumeClaim>::all(client.clone()).list(&lp).await?.items,
        volumes: Api::<PersistentVolume>::all(client.clone()).list(&lp).await?.items,
        classes: Api::<StorageClass>::all(client.clone()).list(&lp).await?.items,
        nodes: Api::<Node>::all(client.clone()).list(&lp).await?.items,
        pods: Api::<Pod>::all(client.clone()).list(&lp).await?.items,
    })
}

async fn pass(ctx: &Context, events: &Events, storage: &StorageOptions) -> Result<()> {
    let world = list_world(&ctx.client).await?;
    protection::reconcile(&ctx.client, &world).await?;
    binder::reconcile(&ctx.client, events, &world).await?;
    if storage.local_storage {
        provisioner::reconcile(&ctx.client, events, &world, &storage.local_storage_path).await?;
    }
    Ok(())
}

fn changes<K>(client: &kube::Client) -> futures::stream::BoxStream<'static, ()>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher::watcher(Api::<K>::all(client.clone()), Default::default())
        .default_backoff()
        .map(|_| ())
        .boxed()
}

/// Runs the storage controllers until `ctx.shutdown`.
pub async fn run(ctx: Context) {
    let storage = ctx.options.storage.clone();
    if storage.local_storage {
        for _ in 0..30 {
            match crate::storage::local_path::ensure_default_class(ctx.client.clone()).await {
                Ok(()) => break,
                Err(e) => tracing::warn!("failed to create the local-path StorageClass: {e} (retrying)"),
            }
            tokio::select! {
                _ = ctx.shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    }
    let events = Events::new(ctx.client.clone());
    let mut all = futures::stream::select_all([
        changes::<PersistentVolumeClaim>(&ctx.client),
        changes::<PersistentVolume>(&ctx.client),
        changes::<StorageClass>(&ctx.client),
        changes::<Pod>(&ctx.client),
        changes::<Node>(&ctx.client),
    ]);
    let mut dirty = true;
    loop {
        if dirty {
            dirty = false;
            if let Err(e) = pass(&ctx, &events, &storage).await {
                tracing::warn!("storage controllers: {e}");
                dirty = true;
            }
        }
        let tick = tokio::time::sleep(if dirty { Duration::from_secs(1) } else { Duration::from_secs(15) });
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            ev = all.next() => {
                if ev.is_none() { return; }
                // Debounce: take what else arrives within 100 ms.
                let until = tokio::time::Instant::now() + Duration::from_millis(100);
                while let Ok(Some(_)) = tokio::time::timeout_at(until, all.next()).await {}
                dirty = true;
            }
            _ = tick => dirty = true,
        }
    }
}
