//! Leader election for the controllers and the scheduler, as
//! kube-controller-manager and kube-scheduler do it: a
//! `coordination.k8s.io/v1` Lease per component in `kube-system`
//! ([`CONTROLLER_MANAGER_LEASE`], [`SCHEDULER_LEASE`], the names k3s's
//! embedded components use), held by `<hostname>_<uuid>`, 15 s long, renewed
//! every 2 s and given up when no renewal succeeded for 10 s.
//!
//! ## Design
//!
//! [`Elector`] is a state machine ([`State`]: `Following` or `Leading`)
//! advanced by [`Elector::step`], one attempt to acquire or renew the Lease
//! per call. Time comes from a [`Clock`] and the Lease from a
//! [`LeaseBackend`], so the unit tests drive it with a fake clock and an
//! in-memory Lease; [`run`] is the driver the server uses, over the API
//! ([`KubeLeases`]).
//!
//! - Like client-go, an elector never trusts another server's wall clock: a
//!   Lease held by someone else counts as live until `leaseDurationSeconds`
//!   have passed *on our monotonic clock* since we last saw the Lease change.
//! - Writes are compare-and-swap on the Lease's `resourceVersion`, so of two
//!   servers that both find a Lease expired exactly one takes it.
//! - On a graceful stop the leader stops its workload, then releases the
//!   Lease (empty holder, 1 s), so a standby takes over at its next attempt
//!   instead of waiting for the Lease to expire.
//!
//! **Architecture invariant:** the workload runs only in `Leading`, and
//! `Leading` ends (the workload's token is cancelled and the workload awaited)
//! as soon as no renewal succeeded for `renew_deadline`, which is shorter
//! than `lease_duration`: the old leader stops before anyone else may start.
//!
//! Unlike kube-controller-manager, which exits when it loses its Lease, the
//! server stops the workload and goes back to `Following`; a workload is
//! started afresh (new caches, new watches) each time the Lease is won.
//!
//! On SQLite there is one server and no one to elect: the store's directory
//! lock keeps a second server off the same data. There the server runs the
//! workload with [`run_alone`], as kube-controller-manager and kube-scheduler
//! do with `--leader-elect=false`: no Lease, no renewal every 2 s (which on an
//! idle server would be two API round trips a second, and a store revision
//! each, for nothing).

mod kube_leases;
#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::k8s::lease::SeenChanging;

pub use kube_leases::KubeLeases;

/// The namespace of the control-plane Leases.
pub const NAMESPACE: &str = "kube-system";
/// The controllers' Lease (kube-controller-manager's name).
pub const CONTROLLER_MANAGER_LEASE: &str = "kube-controller-manager";
/// The scheduler's Lease (kube-scheduler's name).
pub const SCHEDULER_LEASE: &str = "kube-scheduler";

/// Why an attempt on the Lease failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ElectionError {
    #[error("failed to write the lease: someone else changed it first")]
    Conflict,
    #[error("failed to write the lease: it already exists")]
    Exists,
    #[error("failed to reach the lease: {0}")]
    Api(String),
}

/// The parts of a Lease the election reads and writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    /// Empty when released.
    pub holder: String,
    pub duration: Duration,
    pub acquire_time: Option<DateTime<Utc>>,
    pub renew_time: Option<DateTime<Utc>>,
    pub transitions: i32,
    /// The `resourceVersion` read (for the CAS of the next write).
    pub version: String,
}

/// Where the Lease lives: the API in the server, memory in unit tests.
#[async_trait::async_trait]
pub trait LeaseBackend: Send + Sync {
    async fn get(&self) -> Result<Option<LeaseRecord>, ElectionError>;
    /// Creates the Lease; [`ElectionError::Exists`] if someone did first.
    async fn create(&self, record: &LeaseRecord) -> Result<LeaseRecord, ElectionError>;
    /// Replaces the Lease if it is still at `record.version`, else
    /// [`ElectionError::Conflict`].
    async fn update(&self, record: &LeaseRecord) -> Result<LeaseRecord, ElectionError>;
}

/// Monotonic time for expiry, wall time for the Lease's timestamps.
pub trait Clock: Send + Sync {
    fn now(&self) -> Instant;
    fn wall(&self) -> DateTime<Utc>;
}

/// The real clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn wall(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Which Lease, who we are and the timings.
#[derive(Clone, Debug)]
pub struct ElectionConfig {
    pub namespace: String,
    pub name: String,
    /// `<hostname>_<uuid>`: unique per process, readable by a human.
    pub identity: String,
    /// How long a Lease is valid after its last renewal (15 s).
    pub lease_duration: Duration,
    /// A leader that could not renew for this long stops (10 s).
    pub renew_deadline: Duration,
    /// Time between attempts, and the bound of one attempt (2 s).
    pub retry_period: Duration,
}

impl ElectionConfig {
    /// kube-controller-manager's defaults for the Lease `name` in `kube-system`.
    pub fn new(name: &str, identity: &str) -> ElectionConfig {
        ElectionConfig {
            namespace: NAMESPACE.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// `<hostname>_<uuid>`, as client-go's callers form the holder identity.
pub fn identity(hostname: &str) -> String {
    format!("{hostname}_{}", uuid::Uuid::new_v4())
}

/// Where the elector stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Someone else holds the Lease, or we could not take it yet.
    Following,
    /// We hold the Lease; `renewed` is the last successful renewal.
    Leading { renewed: Instant },
}

/// What one [`Elector::step`] changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Start the workload.
    Elected,
    /// Stop the workload at once.
    Deposed,
    /// Nothing changed.
    Unchanged,
}

/// The outcome of one attempt on the Lease.
enum Attempt {
    Held,
    HeldByOther(String),
    Failed(ElectionError),
}

/// The election state machine for one Lease.
pub struct Elector {
    cfg: ElectionConfig,
    state: State,
    /// The Lease as last seen and when (on our clock) it last changed.
    observed: Option<SeenChanging<LeaseRecord>>,
}

impl Elector {
    pub fn new(cfg: ElectionConfig) -> Elector {
        Elector { cfg, state: State::Following, observed: None }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn config(&self) -> &ElectionConfig {
        &self.cfg
    }

    /// One attempt to acquire or renew, then the transition it implies.
    pub async fn step(&mut self, backend: &dyn LeaseBackend, clock: &dyn Clock) -> Transition {
        let attempt = match tokio::time::timeout(self.cfg.retry_period, self.attempt(backend, clock)).await {
            Ok(a) => a,
            Err(_) => Attempt::Failed(ElectionError::Api("timed out".into())),
        };
        let now = clock.now();
        match (self.state, attempt) {
            (State::Following, Attempt::Held) => {
                self.state = State::Leading { renewed: now };
                Transition::Elected
            }
            (State::Following, Attempt::HeldByOther(_)) => Transition::Unchanged,
            (State::Following, Attempt::Failed(e)) => {
                tracing::debug!(lease = %self.cfg.name, error = %e, "failed to acquire the lease");
                Transition::Unchanged
            }
            (State::Leading { .. }, Attempt::Held) => {
                self.state = State::Leading { renewed: now };
                Transition::Unchanged
            }
            (State::Leading { .. }, Attempt::HeldByOther(other)) => {
                tracing::error!(lease = %self.cfg.name, holder = %other, "the lease was taken over");
                self.state = State::Following;
                Transition::Deposed
            }
            (State::Leading { renewed }, Attempt::Failed(e)) => {
                if now.saturating_duration_since(renewed) >= self.cfg.renew_deadline {
                    tracing::error!(lease = %self.cfg.name, error = %e, "failed to renew the lease within the renew deadline");
                    self.state = State::Following;
                    Transition::Deposed
                } else {
                    tracing::warn!(lease = %self.cfg.name, error = %e, "failed to renew the lease (retrying)");
                    Transition::Unchanged
                }
            }
        }
    }

    /// client-go's `tryAcquireOrRenew`.
    async fn attempt(&mut self, backend: &dyn LeaseBackend, clock: &dyn Clock) -> Attempt {
        let me = self.cfg.identity.clone();
        let fresh = |acquired: Option<DateTime<Utc>>, transitions: i32, version: String| LeaseRecord {
            holder: me.clone(),
            duration: self.cfg.lease_duration,
            acquire_time: acquired.or(Some(clock.wall())),
            renew_time: Some(clock.wall()),
            transitions,
            version,
        };
        let current = match backend.get().await {
            Ok(c) => c,
            Err(e) => return Attempt::Failed(e),
        };
        let Some(current) = current else {
            return match backend.create(&fresh(None, 0, String::new())).await {
                Ok(rec) => self.saw(rec, clock.now(), Attempt::Held),
                Err(e) => Attempt::Failed(e),
            };
        };
        let now = clock.now();
        // client-go's rule, not the holder's renewTime: another server's
        // wall clock is never trusted (crate::k8s::lease).
        let seen = match &mut self.observed {
            Some(seen) => {
                seen.observe(current.clone(), now);
                seen
            }
            None => self.observed.insert(SeenChanging::new(current.clone(), now)),
        };
        let other_holds = !current.holder.is_empty() && current.holder != me;
        if other_holds && seen.live(current.duration, now) {
            return Attempt::HeldByOther(current.holder);
        }
        let next = if current.holder == me {
            fresh(current.acquire_time, current.transitions, current.version.clone())
        } else {
            fresh(None, current.transitions + 1, current.version.clone())
        };
        match backend.update(&next).await {
            Ok(rec) => self.saw(rec, clock.now(), Attempt::Held),
            Err(e) => Attempt::Failed(e),
        }
    }

    fn saw(&mut self, record: LeaseRecord, at: Instant, outcome: Attempt) -> Attempt {
        self.observed = Some(SeenChanging::new(record, at));
        outcome
    }

    /// Gives the Lease up if we hold it (empty holder, 1 s), so a standby
    /// takes it at its next attempt. Call it after the workload stopped.
    pub async fn release(&mut self, backend: &dyn LeaseBackend, clock: &dyn Clock) -> Result<(), ElectionError> {
        if !matches!(self.state, State::Leading { .. }) {
            return Ok(());
        }
        self.state = State::Following;
        let Some(current) = backend.get().await? else { return Ok(()) };
        if current.holder != self.cfg.identity {
            return Ok(());
        }
        let released = LeaseRecord {
            holder: String::new(),
            duration: Duration::from_secs(1),
            renew_time: Some(clock.wall()),
            ..current
        };
        backend.update(&released).await.map(|_| ())
    }
}

/// How long a deposed or stopping workload gets to finish.
const WORKLOAD_GRACE: Duration = Duration::from_secs(5);

/// Runs the election for `cfg` until `shutdown`: while this server leads,
/// `start(token)` runs the workload, which must end when `token` is
/// cancelled. On `shutdown` the workload is stopped and the Lease released.
pub async fn run<F>(cfg: ElectionConfig, backend: impl LeaseBackend, mut start: F, shutdown: CancellationToken)
where
    F: FnMut(CancellationToken) -> JoinHandle<()> + Send,
{
    let clock = SystemClock;
    let mut elector = Elector::new(cfg);
    let mut running: Option<(CancellationToken, JoinHandle<()>)> = None;
    tracing::info!(lease = %elector.cfg.name, identity = %elector.cfg.identity, "attempting to acquire the leader lease");
    loop {
        match elector.step(&backend, &clock).await {
            Transition::Elected => {
                tracing::info!(lease = %elector.cfg.name, identity = %elector.cfg.identity, "acquired the leader lease: starting");
                let token = shutdown.child_token();
                running = Some((token.clone(), start(token)));
            }
            Transition::Deposed => {
                tracing::error!(lease = %elector.cfg.name, "lost the leader lease: stopping");
                stop(running.take(), &elector.cfg.name).await;
            }
            Transition::Unchanged => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(elector.cfg.retry_period) => {}
        }
    }
    stop(running.take(), &elector.cfg.name).await;
    match elector.release(&backend, &clock).await {
        Ok(()) => tracing::info!(lease = %elector.cfg.name, "released the leader lease"),
        Err(e) => tracing::warn!(lease = %elector.cfg.name, error = %e, "failed to release the leader lease; it expires by itself"),
    }
}

/// Runs the workload without an election (kube's `--leader-elect=false`),
/// for a store only one server can use: started at once, stopped on
/// `shutdown` within [`WORKLOAD_GRACE`].
pub async fn run_alone<F>(name: &str, start: F, shutdown: CancellationToken)
where
    F: FnOnce(CancellationToken) -> JoinHandle<()> + Send,
{
    tracing::info!(component = name, "the only server on this datastore: starting without leader election");
    let token = shutdown.child_token();
    let running = Some((token.clone(), start(token)));
    shutdown.cancelled().await;
    stop(running, name).await;
}

/// Cancels the workload and waits for it, bounded by [`WORKLOAD_GRACE`].
async fn stop(running: Option<(CancellationToken, JoinHandle<()>)>, lease: &str) {
    let Some((token, mut task)) = running else { return };
    token.cancel();
    if tokio::time::timeout(WORKLOAD_GRACE, &mut task).await.is_err() {
        tracing::warn!(lease, "the workload did not stop within {WORKLOAD_GRACE:?}; aborting it");
        task.abort();
    }
}
