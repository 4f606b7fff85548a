//! The etcd backend of [`Store`] (`--datastore-endpoint`): the same revisioned
//! model as SQLite, kept by an external etcd cluster so that several servers can
//! share one datastore.
//!
//! ## Mapping
//!
//! - **Keys** are stored as they are: the API server already forms them like
//!   kube-apiserver (`/registry/<resource>/<namespace>/<name>`; resources of a
//!   named group are spelt `<resource>.<group>`, e.g.
//!   `/registry/leases.coordination.k8s.io/kube-system/x`), so
//!   `etcdctl get --prefix /registry/pods/` finds the pods. Every store key
//!   starts with `/`: the "whole store" range is `["/", "0")`, which leaves out
//!   the bookkeeping key [`COMPACT_KEY`].
//! - **Revisions** are etcd's: `mod_revision` is the object's `resourceVersion`,
//!   `create_revision` etcd's. An empty etcd is at revision 1, not 0.
//! - **CAS**: create is a `Txn` on `create_revision == 0`; update and delete
//!   on `version > 0 && mod_revision == expected`; the else branch reads the
//!   key so a failure says `NotFound` or `Conflict { actual }`. A failed write
//!   consumes no revision (etcd does not bump the revision of a failed `Txn`).
//! - **Lists** are one `Range` at a revision (0 = latest, the response header
//!   tells which); `remaining` is etcd's `count` minus the page.
//! - **Watches** are etcd watches from `after + 1` with `prev_kv`; a PUT with
//!   `version == 1` is `Created`. A broken stream (an etcd member died) is
//!   re-opened from the last delivered revision, so no event is lost or
//!   repeated. A compacted start revision ends the watch with
//!   `StoreError::Compacted`, which the API server turns into 410 Gone, as on
//!   SQLite. A slow reader is not cut off here: the forwarding task waits for
//!   room in the channel (gRPC flow control holds etcd back), so it costs
//!   etcd's buffering, not ours.
//! - **Compaction**: [`COMPACT_KEY`] holds the compacted revision, as
//!   kube-apiserver's `compact_rev_key` does; a compactor on every server runs
//!   each `compact_interval` and compacts to the revision it saw at the
//!   previous tick, guarded by a CAS on the key's version so that several
//!   servers compact once per interval between them.
//! - **Volatile keys**: on SQLite, Leases and Events live in memory to spare the
//!   SD card. On etcd they are written like everything else: several servers
//!   must share Leases (leader election depends on it), and etcd is the
//!   datastore kube-apiserver writes them to. Events get an etcd lease of
//!   `event_ttl` (kube-apiserver's `--event-ttl`, 1 h) so that etcd deletes them
//!   itself; one etcd lease is shared by all Events written within a minute.
//!
//! ## Bridging a synchronous trait to an async client
//!
//! [`Store`] is synchronous (SQLite calls are short and blocking), and the
//! API server calls it from async tasks. The etcd client is async (tonic). The
//! store owns a small dedicated tokio runtime (`rk3s-etcd` threads) on which
//! every etcd call runs; a trait method spawns its future there and waits on a
//! std channel. Waiting never needs the caller's runtime, so it works from a
//! tokio worker, a `current_thread` test runtime, or a plain thread, and the
//! caller blocks exactly as it does for an fsync on SQLite. Watches are tasks on
//! that runtime forwarding into the tokio channel the caller receives from.
//! The runtime is shut down in the background on drop (never blocking a
//! caller's runtime).
//!
//! **Invariant:** every etcd RPC runs on the store's own runtime; no trait
//! method ever enters the caller's runtime.
//!
//! Partial: a write is retried only when no member received it (the
//! connection to a dead member was refused); after any other transport error
//! its outcome is unknown and the API client retries. Reads are retried a few
//! times while the client's balancer moves off a dead member.

mod local;
mod ops;
mod watch;

use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

pub use local::LocalEtcd;

use super::{ListOptions, ListPage, Record, Result, Revision, Store, StoreError, WatchReceiver};

/// The key holding the compacted revision (kube-apiserver's name for it).
pub const COMPACT_KEY: &str = "compact_rev_key";

/// TLS material for `https://` endpoints (k3s's `--datastore-cafile/-certfile/-keyfile`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EtcdTls {
    /// PEM of the CA that signed the etcd members' serving certificates.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM client certificate and key, for etcd's `--client-cert-auth`.
    pub cert_pem: Option<Vec<u8>>,
    pub key_pem: Option<Vec<u8>>,
}

/// How to reach etcd and how to keep it.
#[derive(Clone, Debug)]
pub struct EtcdOptions {
    /// `http://` or `https://` URLs of the members.
    pub endpoints: Vec<String>,
    pub tls: EtcdTls,
    /// Keys under these prefixes are written with an etcd lease of `event_ttl`.
    pub ttl_prefixes: Vec<String>,
    pub event_ttl: Duration,
    /// How often the compactor runs (`None`: never; compaction only on [`Store::compact`]).
    pub compact_interval: Option<Duration>,
    /// Per-watch channel size between the etcd stream and the caller.
    pub watch_buffer: usize,
    /// Timeout of one RPC.
    pub request_timeout: Duration,
}

impl EtcdOptions {
    pub fn new(endpoints: Vec<String>) -> EtcdOptions {
        EtcdOptions {
            endpoints,
            tls: EtcdTls::default(),
            ttl_prefixes: Vec::new(),
            event_ttl: Duration::from_secs(3600),
            compact_interval: Some(Duration::from_secs(300)),
            watch_buffer: 1024,
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// What every etcd call needs: the client and the revision marks seen so far.
pub(crate) struct Shared {
    pub client: Client,
    pub opts: EtcdOptions,
    /// The highest revision any response carried.
    pub seen: AtomicI64,
    /// The highest compacted revision known (from [`COMPACT_KEY`] or an error).
    pub compacted: AtomicI64,
    /// The etcd lease shared by TTL'd keys, and when it was granted.
    pub lease: std::sync::Mutex<Option<(i64, std::time::Instant)>>,
}

/// The largest response accepted: a full list is one Range, and tonic's
/// default of 4 MiB is 8 000 objects of 512 bytes (kube-apiserver's etcd client
/// also accepts up to `i32::MAX`).
pub(crate) const MAX_RESPONSE: usize = i32::MAX as usize;

impl Shared {
    /// A KV client that takes responses of any size up to [`MAX_RESPONSE`].
    pub fn kv(&self) -> etcd_client::KvClient {
        self.client.kv_client().max_decoding_message_size(MAX_RESPONSE)
    }
    pub fn saw(&self, revision: Revision) {
        self.seen.fetch_max(revision, Ordering::Relaxed);
    }
    pub fn saw_compacted(&self, revision: Revision) {
        self.compacted.fetch_max(revision, Ordering::Relaxed);
    }
}

/// A [`Store`] kept in an etcd cluster.
pub struct EtcdStore {
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
}

impl EtcdStore {
    /// Connects to the members and reads the revision marks. Blocking; call
    /// it from a plain thread or `spawn_blocking`.
    pub fn connect(opts: EtcdOptions) -> Result<EtcdStore> {
        if opts.endpoints.is_empty() {
            return Err(StoreError::Backend(
                "failed to connect to etcd: no endpoint given".into(),
            ));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("rk3s-etcd")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Backend(format!("failed to start the etcd client runtime: {e}")))?;
        let handle = runtime.handle().clone();
        let connect_opts = connect_options(&opts)?;
        let endpoints = opts.endpoints.clone();
        let client = wait(&handle, async move {
            Client::connect(endpoints, Some(connect_opts))
                .await
                .map_err(|e| StoreError::Backend(format!("failed to connect to etcd: {e}")))
        })?;
        let shared = Arc::new(Shared {
            client,
            opts,
            seen: AtomicI64::new(0),
            compacted: AtomicI64::new(0),
            lease: std::sync::Mutex::new(None),
        });
        let store = EtcdStore {
            shared,
            runtime: Some(runtime),
            handle,
        };
        // The first call proves the cluster answers and learns both marks.
        store.marks()?;
        if let Some(every) = store.shared.opts.compact_interval {
            store.handle.spawn(ops::compactor(store.shared.clone(), every));
        }
        Ok(store)
    }

    /// Runs `fut` on the store's runtime and waits for it.
    fn run<T, F>(&self, fut: impl FnOnce(Arc<Shared>) -> F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        wait(&self.handle, fut(self.shared.clone()))
    }

    /// The current and the compacted revision, read in one round trip.
    fn marks(&self) -> Result<(Revision, Revision)> {
        self.run(|s| async move { ops::marks(&s).await })
    }

    /// Whether nothing at all is stored under `/` (for `datastore migrate`).
    pub fn is_empty(&self) -> Result<bool> {
        let page = self.list(&ListOptions {
            prefix: String::new(),
            limit: Some(1),
            ..Default::default()
        })?;
        Ok(page.records.is_empty())
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Spawns `fut` on `handle` and blocks the calling thread until it is done.
fn wait<T: Send + 'static>(
    handle: &tokio::runtime::Handle,
    fut: impl Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    handle.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv()
        .map_err(|_| StoreError::Backend("failed to reach etcd: the client runtime stopped".into()))?
}

fn connect_options(opts: &EtcdOptions) -> Result<ConnectOptions> {
    let mut c = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(opts.request_timeout)
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
        .with_keep_alive_while_idle(true);
    let https = opts.endpoints.iter().any(|e| e.starts_with("https://"));
    if https {
        let mut tls = TlsOptions::new();
        if let Some(ca) = &opts.tls.ca_pem {
            tls = tls.ca_certificate(Certificate::from_pem(ca));
        }
        match (&opts.tls.cert_pem, &opts.tls.key_pem) {
            (Some(cert), Some(key)) => tls = tls.identity(Identity::from_pem(cert, key)),
            (None, None) => {}
            _ => {
                return Err(StoreError::Backend(
                    "failed to configure etcd TLS: a client certificate needs its key and the other way round".into(),
                ))
            }
        }
        c = c.with_tls(tls);
    }
    Ok(c)
}

impl Store for EtcdStore {
    fn current_revision(&self) -> Revision {
        match self.marks() {
            Ok((current, _)) => current,
            Err(e) => {
                tracing::warn!(error = %e, "failed to read etcd's revision; using the last one seen");
                self.shared.seen.load(Ordering::Relaxed)
            }
        }
    }

    fn compacted_revision(&self) -> Revision {
        match self.marks() {
            Ok((_, compacted)) => compacted,
            Err(_) => self.shared.compacted.load(Ordering::Relaxed),
        }
    }

    fn get(&self, key: &str) -> Result<Option<Record>> {
        let key = key.to_owned();
        self.run(move |s| async move { ops::get(&s, &key).await })
    }

    fn list(&self, opts: &ListOptions) -> Result<ListPage> {
        let opts = opts.clone();
        self.run(move |s| async move { ops::list(&s, &opts).await })
    }

    fn create(&self, key: &str, value: &[u8]) -> Result<Record> {
        let (key, value) = (key.to_owned(), value.to_vec());
        self.run(move |s| async move { ops::create(&s, key, value).await })
    }

    fn update(&self, key: &str, value: &[u8], expected: Revision) -> Result<Record> {
        let (key, value) = (key.to_owned(), value.to_vec());
        self.run(move |s| async move { ops::update(&s, key, value, expected).await })
    }

    fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Record> {
        let key = key.to_owned();
        self.run(move |s| async move { ops::delete(&s, key, expected).await })
    }

    fn watch(&self, prefix: &str, after: Revision) -> Result<WatchReceiver> {
        let (current, compacted) = self.marks()?;
        if after < compacted {
            return Err(StoreError::Compacted {
                requested: after,
                compacted,
            });
        }
        if after > current {
            return Err(StoreError::FutureRevision {
                requested: after,
                current,
            });
        }
        let (tx, rx) = tokio::sync::mpsc::channel(self.shared.opts.watch_buffer.max(1));
        self.handle
            .spawn(watch::forward(self.shared.clone(), prefix.to_owned(), after, tx));
        Ok(rx)
    }

    fn compact(&self, revision: Revision) -> Result<()> {
        self.run(move |s| async move { ops::compact(&s, revision).await })
    }
}

#[cfg(test)]
mod tests;
