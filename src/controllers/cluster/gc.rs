//! The garbage collector: ownerReferences as kube's garbage collector
//! applies them, from a graph kept by watches.
//!
//! - background: a dependent all of whose owners are gone (verified with a
//!   live GET by name and uid, since the graph may lag a just-created
//!   owner) is deleted; owners that are gone are dropped from a dependent
//!   that still has others;
//! - foreground: an owner carrying the `foregroundDeletion` finalizer has
//!   its dependents deleted (those with dependents of their own in the
//!   foreground too, so the wait is transitive; leaves in the background) and the finalizer removed as soon as no dependent with
//!   `blockOwnerDeletion` is left, letting the API remove the owner;
//! - orphan: an owner carrying the `orphan` finalizer has its reference
//!   removed from every dependent, then the finalizer removed.
//!
//! Shape: one watch per listable, deletable kind the API serves (discovered
//! at start, every [`REDISCOVER`] and soon after a CRD changes) feeds the
//! owner graph ([`graph`]); each event marks the objects whose decision may
//! change, and only those are looked at, so a deleted owner's dependents
//! go within a moment of its deletion and an idle cluster costs nothing.
//! Nothing is decided before every kind's first list is in (a foreground
//! owner must not lose its finalizer because its dependents' kind was not
//! listed yet). Every `gc_period` (10 min by default) all objects are
//! looked at again from the graph (no lists): the consistency check. A
//! restart rebuilds the graph from fresh lists and simply resumes.
//!
//! The watches are metadata-only (`Api<PartialObjectMeta<DynamicObject>>`:
//! lists and watches ask for `PartialObjectMetadata[List]`), so neither
//! the server nor the collector decodes whole objects for the graph.
//! Events are not watched (volatile, and they carry no ownerReferences in
//! practice).

mod graph;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use kube::core::{ApiResource, GroupVersionKind, PartialObjectMeta};
use kube::discovery::{Discovery, Scope};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::ResourceExt;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::super::Context;
use super::{Error, Result};
use graph::{Graph, Meta, Step};

/// How often the served kinds are discovered again (a CRD change also
/// triggers it).
const REDISCOVER: Duration = Duration::from_secs(300);
/// Events gathered into one round before deciding (deletions of many
/// dependents come in bursts).
const BATCH: usize = 512;
/// A failed write is retried after this long (the object stays dirty).
const RETRY: Duration = Duration::from_secs(2);

/// A listable, deletable kind.
#[derive(Clone, Debug)]
pub struct Kind {
    pub ar: ApiResource,
    pub namespaced: bool,
}

/// What the API serves, for listing and for resolving owner references.
#[derive(Clone, Debug, Default)]
pub struct Kinds {
    pub list: Vec<Kind>,
    pub by_gvk: HashMap<(String, String), Kind>,
}

/// Discovers every kind; `skip_events` leaves Events out of the list.
pub async fn discover(client: &kube::Client, skip_events: bool) -> Result<Kinds> {
    let d = Discovery::new(client.clone())
        .run()
        .await
        .map_err(|e| Error::Discovery(e.to_string()))?;
    let mut kinds = Kinds::default();
    for group in d.groups() {
        for version in group.versions() {
            for (ar, caps) in group.versioned_resources(version) {
                let k = Kind {
                    namespaced: caps.scope == Scope::Namespaced,
                    ar: ar.clone(),
                };
                kinds
                    .by_gvk
                    .insert((ar.api_version.clone(), ar.kind.clone()), k);
            }
        }
        for (ar, caps) in group.recommended_resources() {
            let listable = caps.supports_operation("list") && caps.supports_operation("delete");
            if !listable || (skip_events && ar.plural == "events") {
                continue;
            }
            kinds.list.push(Kind {
                namespaced: caps.scope == Scope::Namespaced,
                ar,
            });
        }
    }
    Ok(kinds)
}

/// The key of a watched kind: `apiVersion/plural`.
fn kind_key(ar: &ApiResource) -> String {
    format!("{}/{}", ar.api_version, ar.plural)
}

/// What a kind's watch reports.
enum Change {
    Applied(Meta),
    Deleted { kind: String, uid: String },
    Listed { kind: String, items: Vec<Meta> },
}

/// Watches one kind until aborted, sending metadata changes.
async fn watch_kind(client: kube::Client, kind: Kind, tx: mpsc::Sender<Change>) {
    let key = kind_key(&kind.ar);
    // Metadata only: the graph needs nothing else.
    let api: Api<PartialObjectMeta<DynamicObject>> = Api::all_with(client, &kind.ar);
    let mut events = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut listing = Vec::new();
    while let Some(ev) = events.next().await {
        let change = match ev {
            Ok(Event::Init) => {
                listing.clear();
                continue;
            }
            Ok(Event::InitApply(o)) => {
                listing.extend(Meta::of(&key, &o));
                continue;
            }
            Ok(Event::InitDone) => Change::Listed {
                kind: key.clone(),
                items: std::mem::take(&mut listing),
            },
            Ok(Event::Apply(o)) => match Meta::of(&key, &o) {
                Some(m) => Change::Applied(m),
                None => continue,
            },
            Ok(Event::Delete(o)) => match o.uid() {
                Some(uid) => Change::Deleted {
                    kind: key.clone(),
                    uid,
                },
                None => continue,
            },
            Err(e) => {
                tracing::debug!(kind = %key, "gc: watch failed; retrying: {e}");
                continue;
            }
        };
        if tx.send(change).await.is_err() {
            return;
        }
    }
}

/// A watch task that stops when dropped.
struct WatchTask(tokio::task::JoinHandle<()>);

impl Drop for WatchTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn api_for(client: &kube::Client, kind: &Kind, m: &Meta) -> Api<DynamicObject> {
    match (kind.namespaced, &m.namespace) {
        (true, Some(ns)) => Api::namespaced_with(client.clone(), ns, &kind.ar),
        _ => Api::all_with(client.clone(), &kind.ar),
    }
}

/// Whether the owner `r` of `dep` is really gone (a live GET by name, uid
/// compared); `None` when that cannot be told.
async fn owner_absent(
    client: &kube::Client,
    kinds: &Kinds,
    dep: &Meta,
    r: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
) -> Option<bool> {
    let kind = kinds
        .by_gvk
        .get(&(r.api_version.clone(), r.kind.clone()))
        .or_else(|| {
            // An owner named with another version of its group.
            let gvk = GroupVersionKind::try_from(&kube::core::TypeMeta {
                api_version: r.api_version.clone(),
                kind: r.kind.clone(),
            })
            .ok()?;
            kinds
                .by_gvk
                .values()
                .find(|k| k.ar.group == gvk.group && k.ar.kind == gvk.kind)
        })?;
    let api: Api<DynamicObject> = match (kind.namespaced, &dep.namespace) {
        (true, Some(ns)) => Api::namespaced_with(client.clone(), ns, &kind.ar),
        (true, None) => return None,
        (false, _) => Api::all_with(client.clone(), &kind.ar),
    };
    match api.get_opt(&r.name).await {
        Ok(None) => Some(true),
        Ok(Some(o)) => Some(o.uid().as_deref() != Some(r.uid.as_str())),
        Err(_) => None,
    }
}

fn without_finalizer(m: &Meta, f: &str) -> serde_json::Value {
    let rest: Vec<&String> = m.finalizers.iter().filter(|x| x.as_str() != f).collect();
    json!({"metadata": {"finalizers": if rest.is_empty() { serde_json::Value::Null } else { json!(rest) },
                        "resourceVersion": m.resource_version}})
}

fn without_owners(m: &Meta, gone: &HashSet<String>) -> serde_json::Value {
    let rest: Vec<_> = m.owners.iter().filter(|o| !gone.contains(&o.uid)).collect();
    json!({"metadata": {"ownerReferences": if rest.is_empty() { serde_json::Value::Null } else { json!(rest) },
                        "resourceVersion": m.resource_version}})
}

fn ignore_gone(r: std::result::Result<impl Sized, kube::Error>) -> Result<()> {
    match r {
        Ok(_) => Ok(()),
        // 409: someone changed it first; its watch event brings it back.
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn delete_params(m: &Meta, foreground: bool) -> DeleteParams {
    let mut dp = if foreground {
        DeleteParams::foreground()
    } else {
        DeleteParams::background()
    };
    dp.preconditions = Some(Preconditions {
        uid: Some(m.uid.clone()),
        resource_version: None,
    });
    dp
}

/// Makes one write of the plan.
async fn execute(
    client: &kube::Client,
    kinds: &Kinds,
    by_key: &HashMap<String, Kind>,
    step: Step,
) -> Result<()> {
    let pp = PatchParams::default();
    let kind_of = |m: &Meta| by_key.get(&m.kind).cloned();
    match step {
        Step::DropOwner { dep, owner } => {
            let Some(k) = kind_of(&dep) else {
                return Ok(());
            };
            let gone: HashSet<String> = [owner].into();
            ignore_gone(
                api_for(client, &k, &dep)
                    .patch(&dep.name, &pp, &Patch::Merge(without_owners(&dep, &gone)))
                    .await,
            )
        }
        Step::RemoveFinalizer { obj, finalizer } => {
            let Some(k) = kind_of(&obj) else {
                return Ok(());
            };
            tracing::debug!(name = %obj.name, finalizer, "gc: dependents handled; removing the finalizer");
            ignore_gone(
                api_for(client, &k, &obj)
                    .patch(
                        &obj.name,
                        &pp,
                        &Patch::Merge(without_finalizer(&obj, finalizer)),
                    )
                    .await,
            )
        }
        Step::DeleteDependent { dep, foreground } => {
            let Some(k) = kind_of(&dep) else {
                return Ok(());
            };
            ignore_gone(
                api_for(client, &k, &dep)
                    .delete(&dep.name, &delete_params(&dep, foreground))
                    .await,
            )
        }
        Step::CheckOwners { dep, missing } => {
            let Some(k) = kind_of(&dep) else {
                return Ok(());
            };
            let mut gone = HashSet::new();
            for r in &missing {
                if owner_absent(client, kinds, &dep, r).await == Some(true) {
                    gone.insert(r.uid.clone());
                }
            }
            if gone.is_empty() {
                return Ok(());
            }
            let api = api_for(client, &k, &dep);
            if gone.len() == dep.owners.len() {
                tracing::debug!(name = %dep.name, "gc: deleting a dependent whose owners are gone");
                ignore_gone(api.delete(&dep.name, &delete_params(&dep, false)).await)
            } else {
                ignore_gone(
                    api.patch(&dep.name, &pp, &Patch::Merge(without_owners(&dep, &gone)))
                        .await,
                )
            }
        }
    }
}

/// The collector's state between events.
struct Collector {
    ctx: Context,
    kinds: Kinds,
    by_key: HashMap<String, Kind>,
    watches: HashMap<String, WatchTask>,
    /// Kinds whose first list has not come in yet.
    unsynced: HashSet<String>,
    graph: Graph,
    tx: mpsc::Sender<Change>,
    retry: HashSet<String>,
}

impl Collector {
    /// Starts watches for new kinds and drops those of kinds gone.
    fn set_kinds(&mut self, kinds: Kinds) {
        let by_key: HashMap<String, Kind> = kinds
            .list
            .iter()
            .map(|k| (kind_key(&k.ar), k.clone()))
            .collect();
        for key in self.by_key.keys() {
            if !by_key.contains_key(key) {
                self.watches.remove(key);
                self.unsynced.remove(key);
                self.graph.drop_kind(key);
            }
        }
        for (key, k) in &by_key {
            if !self.watches.contains_key(key) {
                let task = tokio::spawn(watch_kind(
                    self.ctx.client.clone(),
                    k.clone(),
                    self.tx.clone(),
                ));
                self.watches.insert(key.clone(), WatchTask(task));
                self.unsynced.insert(key.clone());
            }
        }
        self.by_key = by_key;
        self.kinds = kinds;
    }

    /// Applies one change; true when it concerns CRDs (new kinds may exist).
    fn apply(&mut self, change: Change) -> bool {
        let kind = match change {
            Change::Applied(m) => {
                let k = m.kind.clone();
                self.graph.upsert(m);
                k
            }
            Change::Deleted { kind, uid } => {
                self.graph.remove(&uid);
                kind
            }
            Change::Listed { kind, items } => {
                self.unsynced.remove(&kind);
                self.graph.replace_kind(&kind, items);
                kind
            }
        };
        kind.ends_with("/customresourcedefinitions")
    }

    /// Decides and writes for every dirty object.
    async fn work(&mut self) {
        if !self.unsynced.is_empty() {
            return;
        }
        for uid in self.graph.take_dirty() {
            for step in self.graph.plan(&uid) {
                if let Err(e) = execute(&self.ctx.client, &self.kinds, &self.by_key, step).await {
                    tracing::debug!(uid = %uid, "gc: {e}");
                    self.retry.insert(uid.clone());
                    break;
                }
            }
        }
    }
}

/// Runs the garbage collector until shutdown.
pub async fn run(ctx: Context) {
    let (tx, mut rx) = mpsc::channel::<Change>(BATCH * 2);
    let mut c = Collector {
        ctx: ctx.clone(),
        kinds: Kinds::default(),
        by_key: HashMap::new(),
        watches: HashMap::new(),
        unsynced: HashSet::new(),
        graph: Graph::default(),
        tx,
        retry: HashSet::new(),
    };
    let mut discover_at = Instant::now();
    let mut discover_delay = Duration::from_secs(1);
    let mut consistency_at = Instant::now() + ctx.options.gc_period;
    let mut retry_at: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(discover_at) => {
                match discover(&ctx.client, true).await {
                    Ok(k) => {
                        c.set_kinds(k);
                        discover_delay = Duration::from_secs(1);
                        discover_at = Instant::now() + REDISCOVER;
                    }
                    Err(e) => {
                        tracing::debug!("gc: {e}");
                        discover_at = Instant::now() + discover_delay;
                        discover_delay = (discover_delay * 2).min(Duration::from_secs(30));
                    }
                }
            }
            _ = tokio::time::sleep_until(consistency_at) => {
                tracing::debug!(objects = c.graph.len(), "gc: consistency pass");
                c.graph.mark_all();
                consistency_at = Instant::now() + ctx.options.gc_period;
            }
            _ = async { tokio::time::sleep_until(retry_at.expect("guarded")).await }, if retry_at.is_some() => {
                retry_at = None;
                for uid in std::mem::take(&mut c.retry) {
                    c.graph.mark(&uid);
                }
            }
            Some(change) = rx.recv() => {
                let mut crd = c.apply(change);
                for _ in 0..BATCH {
                    match rx.try_recv() {
                        Ok(change) => crd |= c.apply(change),
                        Err(_) => break,
                    }
                }
                if crd && c.unsynced.is_empty() {
                    // A CRD changed: its kind is served a moment later.
                    discover_at = discover_at.min(Instant::now() + Duration::from_secs(1));
                }
            }
        }
        if c.graph.has_dirty() {
            c.work().await;
        }
        if !c.retry.is_empty() && retry_at.is_none() {
            retry_at = Some(Instant::now() + RETRY);
        }
    }
}
