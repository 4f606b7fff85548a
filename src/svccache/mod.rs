//! A node's view of Services and their EndpointSlices, kept from two
//! watches through the API and shared by the node subsystems that route to
//! Services: the service proxy, cluster DNS and the ingress.
//!
//! One cache per agent means one pair of watches per node, however many
//! subsystems read it, and every subsystem sees the same state.
//!
//! Shape:
//! - [`ServiceCache::start`] spawns [`run`], which drives a kube-runtime
//!   watcher per kind into an [`Index`];
//! - readers take a [`Snapshot`] ([`ServiceCache::snapshot`]): immutable,
//!   cheap to hold, with `Arc`s of the objects as the API returned them;
//! - [`ServiceCache::changes`] is a `watch` channel of snapshots (each
//!   with a `generation` that moves on every change), so a reader wakes,
//!   takes the latest snapshot and diffs what it cares about; a burst of
//!   events already waiting is applied before one snapshot is published.
//!
//! Invariants:
//! - Nothing is published during a (re)list until it is complete: a reader
//!   never sees a half-listed cluster, so a restart or a relist never makes
//!   Services look deleted for a moment (fail static for the proxy's rules).
//! - A snapshot is consistent with itself: slices are indexed by the
//!   `kubernetes.io/service-name` label of the slice, as kube-proxy does.
//! - The cache talks to the API only, through `kube::Client`.
//!
//! Building a snapshot costs one `Arc` clone per object, done at most once
//! per published generation. Readers either diff by `resourceVersion` /
//! `Arc` identity, or keep the snapshot's [`Mark`] and ask the next one
//! which Services changed since ([`Snapshot::changed_since`], a bounded
//! change log, `None` meaning "look at everything").

mod changelog;
mod index;

use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use self::changelog::{Mark, LOG_LIMIT};
pub use self::index::{Index, ObjKey, Snapshot, SERVICE_NAME_LABEL};

/// A handle to the shared cache; clones share it.
#[derive(Clone)]
pub struct ServiceCache {
    snapshot: watch::Receiver<Arc<Snapshot>>,
}

impl ServiceCache {
    /// Starts watching Services and EndpointSlices in every namespace.
    /// The watches end when `shutdown` is cancelled.
    pub fn start(client: Client, shutdown: CancellationToken) -> Self {
        let (tx, rx) = watch::channel(Arc::new(Snapshot::default()));
        tokio::spawn(run(client, tx, shutdown));
        ServiceCache { snapshot: rx }
    }

    /// A cache fed by hand (for tests of the subsystems that read it):
    /// publish with the returned sender.
    pub fn manual() -> (watch::Sender<Arc<Snapshot>>, Self) {
        let (tx, rx) = watch::channel(Arc::new(Snapshot::default()));
        (tx, ServiceCache { snapshot: rx })
    }

    /// The latest published snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// A receiver that changes whenever a new snapshot is published; call
    /// `changed().await` on it, then [`ServiceCache::snapshot`].
    pub fn changes(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshot.clone()
    }

    /// Waits until both kinds have been listed once (or the cache stopped).
    pub async fn ready(&self) {
        let mut rx = self.snapshot.clone();
        let _ = rx.wait_for(|s| s.synced).await;
    }
}

/// One event from either watch.
enum Change {
    Service(Event<Service>),
    Slice(Event<EndpointSlice>),
}

/// Feeds both watches into one [`Index`] and publishes snapshots until
/// `shutdown`. Watch errors are retried with kube-runtime's default
/// back-off; the last good snapshot stays published meanwhile.
pub async fn run(
    client: Client,
    publish: watch::Sender<Arc<Snapshot>>,
    shutdown: CancellationToken,
) {
    let services = watcher::watcher(Api::<Service>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .map(|e| e.map(Change::Service));
    let slices = watcher::watcher(
        Api::<EndpointSlice>::all(client),
        watcher::Config::default(),
    )
    .default_backoff()
    .map(|e| e.map(Change::Slice));
    let mut events = futures::stream::select(services, slices).boxed();
    let mut index = Index::default();
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => return,
            next = events.next() => next,
        };
        let Some(first) = next else { return };
        let mut changed = apply(&mut index, first);
        // Publish once per burst: apply every event already waiting first.
        while let Some(Some(more)) = events.next().now_or_never() {
            changed |= apply(&mut index, more);
        }
        if changed {
            publish.send_replace(Arc::new(index.snapshot()));
        }
    }
}

fn apply(index: &mut Index, event: Result<Change, watcher::Error>) -> bool {
    match event {
        Err(e) => {
            tracing::warn!(error = %e, "service cache: watch failed; retrying");
            false
        }
        Ok(Change::Service(ev)) => index.apply_service(ev),
        Ok(Change::Slice(ev)) => index.apply_slice(ev),
    }
}
