//! The Deployment, ReplicaSet, ReplicationController, DaemonSet, StatefulSet,
//! Job and CronJob controllers (kube-controller-manager's workload half).
//!
//! Each is a kube-runtime `Controller` whose `reconcile(obj, shared)` reads
//! the world from the API (owned objects found through controller
//! ownerReferences and the selector, never from memory), writes the
//! difference and returns the next `Action`; errors retry through
//! [`common::error_policy`]. Status fields, conditions and Events follow
//! kube's, so `kubectl get|describe|rollout` read them as on a real cluster.
//!
//! There is no expectations cache: every pass lists the pods it owns from
//! the API, which costs a list per pass but makes a restart or a stale
//! watch harmless (a pass never acts on a cache older than its own writes).
//! Reconciles are debounced (100 ms) so a burst of pod events is one pass.
//! Children are watched in full and mapped to their controller through the
//! controller ownerReference ([`owner_of`]).
//!
//! Partial: each pass lists its namespace's pods, O(pods) per pass; with
//! thousands of pods a shared informer plus kube's expectations would be cheaper.

pub mod common;
pub mod cron;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod history;
pub mod job;
pub mod replicaset;
pub mod rollout;
pub mod statefulset;

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Node, Pod, ReplicationController};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

use self::common::{error_policy, Clock, Error, Shared, SystemClock};
use super::Context;

/// Runs these controllers until `ctx.shutdown`, on the wall clock.
pub async fn run(ctx: Context) {
    run_with_clock(ctx, Arc::new(SystemClock)).await
}

/// Runs these controllers until `ctx.shutdown`; CronJobs read `clock`.
pub async fn run_with_clock(ctx: Context, clock: Arc<dyn Clock>) {
    let client = ctx.client.clone();
    let rs = {
        let shared = Shared::new(ctx.clone(), "replicaset-controller", Arc::new(SystemClock));
        let c = Controller::new(
            Api::<ReplicaSet>::all(client.clone()),
            watcher::Config::default(),
        )
        .watches(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default(),
            owner_of,
        );
        drive(c, replicaset::reconcile, shared, &ctx)
    };
    let rc = {
        let shared = Shared::new(ctx.clone(), "replication-controller", Arc::new(SystemClock));
        let c = Controller::new(
            Api::<ReplicationController>::all(client.clone()),
            watcher::Config::default(),
        )
        .watches(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default(),
            owner_of,
        );
        drive(c, replicaset::reconcile_rc, shared, &ctx)
    };
    let deploy = {
        let shared = Shared::new(ctx.clone(), "deployment-controller", Arc::new(SystemClock));
        let c = Controller::new(
            Api::<Deployment>::all(client.clone()),
            watcher::Config::default(),
        )
        .watches(
            Api::<ReplicaSet>::all(client.clone()),
            watcher::Config::default(),
            owner_of,
        );
        drive(c, deployment::reconcile, shared, &ctx)
    };
    let ds = {
        let shared = Shared::new(ctx.clone(), "daemonset-controller", Arc::new(SystemClock));
        let c = Controller::new(
            Api::<DaemonSet>::all(client.clone()),
            watcher::Config::default(),
        )
        .watches(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default(),
            owner_of,
        );
        // Any node change may change where daemon pods belong.
        let store = c.store();
        let c = c.watches(
            Api::<Node>::all(client.clone()),
            watcher::Config::default(),
            move |_node| {
                store
                    .state()
                    .iter()
                    .map(|ds| ObjectRef::from_obj(ds.as_ref()))
                    .collect::<Vec<_>>()
            },
        );
        drive(c, daemonset::reconcile, shared, &ctx)
    };
    let sts = {
        let shared = Shared::new(ctx.clone(), "statefulset-controller", Arc::new(SystemClock));
        let c = Controller::new(
            Api::<StatefulSet>::all(client.clone()),
            watcher::Config::default(),
        )
        .watches(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default(),
            owner_of,
        );
        drive(c, statefulset::reconcile, shared, &ctx)
    };
    let job = {
        let shared = Shared::new(ctx.clone(), "job-controller", Arc::new(SystemClock));
        let c = Controller::new(Api::<Job>::all(client.clone()), watcher::Config::default())
            .watches(
                Api::<Pod>::all(client.clone()),
                watcher::Config::default(),
                owner_of,
            );
        drive(c, job::reconcile, shared, &ctx)
    };
    let cronjob = {
        let shared = Shared::new(ctx.clone(), "cronjob-controller", clock);
        let c = Controller::new(
            Api::<CronJob>::all(client.clone()),
            watcher::Config::default(),
        )
        .watches(
            Api::<Job>::all(client.clone()),
            watcher::Config::default(),
            owner_of,
        );
        drive(c, cronjob::reconcile, shared, &ctx)
    };
    tokio::join!(rs, rc, deploy, ds, sts, job, cronjob);
}

/// Maps a child to its controller, as `Controller::owns` does; `owns` in
/// kube-runtime 5 watches `PartialObjectMetadata`, which our API server
/// does not render yet, so the children are watched in full.
fn owner_of<K, C>(child: C) -> Option<ObjectRef<K>>
where
    K: Resource<DynamicType = ()>,
    C: Resource,
{
    let r = child
        .meta()
        .owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))?;
    if r.kind != K::kind(&()) || r.api_version != K::api_version(&()) {
        return None;
    }
    let obj = ObjectRef::new(&r.name);
    Some(match child.meta().namespace.as_deref() {
        Some(ns) => obj.within(ns),
        None => obj,
    })
}

/// Runs one controller until shutdown, logging each reconcile's outcome.
async fn drive<K, F, Fut>(c: Controller<K>, mut reconcile: F, shared: Arc<Shared>, ctx: &Context)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    F: FnMut(Arc<K>, Arc<Shared>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Action, Error>> + Send + 'static,
{
    // A successful pass resets the object's retry back-off.
    let reconcile = move |obj: Arc<K>, shared: Arc<Shared>| {
        let key = common::object_key(obj.as_ref());
        let pass = reconcile(obj, shared.clone());
        async move {
            let result = pass.await;
            if result.is_ok() {
                shared.succeeded(&key);
            }
            result
        }
    };
    let token = ctx.shutdown.clone();
    // A burst of pod events (a rollout, a node going away) becomes one pass
    // per owner instead of one per event; every pass lists what it owns.
    let config = controller::Config::default()
        .debounce(Duration::from_millis(100))
        .concurrency(4);
    c.with_config(config)
        .graceful_shutdown_on(async move { token.cancelled().await })
        .run(reconcile, error_policy, shared)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "workload controller event");
            }
        })
        .await;
}
