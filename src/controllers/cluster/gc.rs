//! The garbage collector: ownerReferences as kube's garbage collector
//! applies them.
//!
//! - background: a dependent all of whose owners are gone (verified with a
//!   live GET by name and uid, not just a stale list) is deleted; owners that
//!   are gone are dropped from a dependent that still has others;
//! - foreground: an owner carrying the `foregroundDeletion` finalizer has
//!   its dependents deleted (in the foreground too, so the wait is
//!   transitive) and the finalizer removed once no dependent with
//!   `blockOwnerDeletion` is left, letting the API remove the owner;
//! - orphan: an owner carrying the `orphan` finalizer has its reference
//!   removed from every dependent, then the finalizer removed.
//!
//! Shape: a level-triggered pass every `gc_period` over every listable,
//! deletable kind the API serves (discovered, refreshed each minute), so a
//! restart simply resumes. PARTIAL: polling, not kube's watch-built graph
//! (deletions lag by up to one period and each pass lists every object);
//! Events are not collected (they carry no ownerReferences in practice).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::{Discovery, Scope};
use kube::ResourceExt;
use serde_json::json;

use super::super::Context;
use super::{Error, Result};

const REDISCOVER: Duration = Duration::from_secs(60);

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

/// One object as the collector sees it.
#[derive(Clone, Debug)]
struct Item {
    kind: Kind,
    obj: DynamicObject,
}

impl Item {
    fn uid(&self) -> String {
        self.obj.uid().unwrap_or_default()
    }
    fn deleting(&self) -> bool {
        self.obj.metadata.deletion_timestamp.is_some()
    }
    fn api(&self, client: &kube::Client) -> Api<DynamicObject> {
        match (self.kind.namespaced, self.obj.namespace()) {
            (true, Some(ns)) => Api::namespaced_with(client.clone(), &ns, &self.kind.ar),
            _ => Api::all_with(client.clone(), &self.kind.ar),
        }
    }
}

async fn list_all(client: &kube::Client, kinds: &Kinds) -> Vec<Item> {
    let mut out = Vec::new();
    for k in &kinds.list {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &k.ar);
        match api.list(&ListParams::default()).await {
            Ok(list) => out.extend(list.items.into_iter().map(|obj| Item {
                kind: k.clone(),
                obj,
            })),
            Err(e) => tracing::debug!(kind = %k.ar.kind, "gc: failed to list: {e}"),
        }
    }
    out
}

/// Whether the owner `r` of `dep` is really gone (a live GET by name, uid compared).
async fn owner_absent(
    client: &kube::Client,
    kinds: &Kinds,
    dep: &Item,
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
    let api: Api<DynamicObject> = match (kind.namespaced, dep.obj.namespace()) {
        (true, Some(ns)) => Api::namespaced_with(client.clone(), &ns, &kind.ar),
        (true, None) => return None,
        (false, _) => Api::all_with(client.clone(), &kind.ar),
    };
    match api.get_opt(&r.name).await {
        Ok(None) => Some(true),
        Ok(Some(o)) => Some(o.uid().as_deref() != Some(r.uid.as_str())),
        Err(_) => None,
    }
}

fn without_finalizer(item: &Item, f: &str) -> serde_json::Value {
    let rest: Vec<String> = item
        .obj
        .finalizers()
        .iter()
        .filter(|x| x.as_str() != f)
        .cloned()
        .collect();
    json!({"metadata": {"finalizers": if rest.is_empty() { serde_json::Value::Null } else { json!(rest) },
                        "resourceVersion": item.obj.resource_version()}})
}

fn without_owners(item: &Item, gone: &HashSet<String>) -> serde_json::Value {
    let rest: Vec<_> = item
        .obj
        .owner_references()
        .iter()
        .filter(|o| !gone.contains(&o.uid))
        .cloned()
        .collect();
    json!({"metadata": {"ownerReferences": if rest.is_empty() { serde_json::Value::Null } else { json!(rest) },
                        "resourceVersion": item.obj.resource_version()}})
}

fn ignore_gone(r: std::result::Result<impl Sized, kube::Error>) -> Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// One collection pass over `items`.
async fn pass(client: &kube::Client, kinds: &Kinds) -> Result<()> {
    let items = list_all(client, kinds).await;
    let uids: HashSet<String> = items.iter().map(Item::uid).collect();
    let mut dependents: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, it) in items.iter().enumerate() {
        for o in it.obj.owner_references() {
            dependents.entry(o.uid.clone()).or_default().push(i);
        }
    }
    let pp = PatchParams::default();
    for owner in items.iter().filter(|i| i.deleting()) {
        let deps = dependents.get(&owner.uid()).cloned().unwrap_or_default();
        let fins = owner.obj.finalizers();
        if fins.iter().any(|f| f == "orphan") {
            let gone: HashSet<String> = [owner.uid()].into();
            for d in &deps {
                let dep = &items[*d];
                ignore_gone(
                    dep.api(client)
                        .patch(
                            &dep.obj.name_any(),
                            &pp,
                            &Patch::Merge(without_owners(dep, &gone)),
                        )
                        .await,
                )?;
            }
            ignore_gone(
                owner
                    .api(client)
                    .patch(
                        &owner.obj.name_any(),
                        &pp,
                        &Patch::Merge(without_finalizer(owner, "orphan")),
                    )
                    .await,
            )?;
        } else if fins.iter().any(|f| f == "foregroundDeletion") {
            let mut blocking = 0;
            for d in &deps {
                let dep = &items[*d];
                let blocks = dep
                    .obj
                    .owner_references()
                    .iter()
                    .any(|o| o.uid == owner.uid() && o.block_owner_deletion == Some(true));
                if blocks {
                    blocking += 1;
                }
                if !dep.deleting() {
                    ignore_gone(
                        dep.api(client)
                            .delete(&dep.obj.name_any(), &DeleteParams::foreground())
                            .await,
                    )?;
                }
            }
            if blocking == 0 {
                ignore_gone(
                    owner
                        .api(client)
                        .patch(
                            &owner.obj.name_any(),
                            &pp,
                            &Patch::Merge(without_finalizer(owner, "foregroundDeletion")),
                        )
                        .await,
                )?;
            }
        }
    }
    for dep in items
        .iter()
        .filter(|i| !i.obj.owner_references().is_empty() && !i.deleting())
    {
        let refs = dep.obj.owner_references();
        let mut gone = HashSet::new();
        for r in refs.iter().filter(|r| !uids.contains(&r.uid)) {
            if owner_absent(client, kinds, dep, r).await == Some(true) {
                gone.insert(r.uid.clone());
            }
        }
        if gone.is_empty() {
            continue;
        }
        if gone.len() == refs.len() {
            tracing::debug!(name = %dep.obj.name_any(), "gc: deleting a dependent whose owners are gone");
            ignore_gone(
                dep.api(client)
                    .delete(&dep.obj.name_any(), &DeleteParams::background())
                    .await,
            )?;
        } else {
            ignore_gone(
                dep.api(client)
                    .patch(
                        &dep.obj.name_any(),
                        &pp,
                        &Patch::Merge(without_owners(dep, &gone)),
                    )
                    .await,
            )?;
        }
    }
    Ok(())
}

/// Runs the garbage collector until shutdown.
pub async fn run(ctx: Context) {
    let mut kinds: Option<(Instant, Kinds)> = None;
    let mut delay = ctx.options.gc_period;
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        if kinds.as_ref().is_none_or(|(t, _)| t.elapsed() > REDISCOVER) {
            match discover(&ctx.client, true).await {
                Ok(k) => kinds = Some((Instant::now(), k)),
                Err(e) => tracing::debug!("gc: {e}"),
            }
        }
        let Some((_, k)) = kinds.as_ref() else {
            delay = (delay * 2).min(Duration::from_secs(30));
            continue;
        };
        match pass(&ctx.client, k).await {
            Ok(()) => delay = ctx.options.gc_period,
            Err(e) => {
                tracing::debug!("gc: {e}");
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}
