//! Opens the datastore the configuration names: the embedded SQLite under
//! `<data-dir>/server/db/` (default) or an external etcd (`--datastore-endpoint`).
//!
//! On SQLite, Leases and Events are kept in memory (`VOLATILE_PREFIXES`) to
//! spare the SD card. On etcd they are written like any key (several servers
//! share them: leader election needs it), and Events carry an etcd lease of one
//! hour so that etcd expires them, as kube-apiserver's `--event-ttl` does.

use std::path::Path;
use std::sync::Arc;

use crate::config::{Datastore, EtcdEndpoints};
use crate::store::{EtcdOptions, EtcdStore, EtcdTls, SqliteStore, Store, StoreError, StoreOptions};

use super::VOLATILE_PREFIXES;

/// The prefix of Events, which etcd expires after an hour.
pub const EVENTS_PREFIX: &str = "/registry/events/";

/// Opens the datastore (blocking: SQLite opens a file, etcd connects).
/// Several servers may share one etcd: they elect a leader for the
/// controllers (`server::election`), allocate with CAS (`apiserver::ipalloc`)
/// and share the cluster's CAs (`server::bootstrap`).
pub fn open(
    data_dir: &Path,
    datastore: &Datastore,
    node_name: &str,
) -> Result<Arc<dyn Store>, StoreError> {
    match datastore {
        Datastore::Sqlite => Ok(Arc::new(open_sqlite(data_dir)?)),
        Datastore::Etcd(e) => {
            tracing::info!(endpoints = %e.urls.join(","), "using etcd as the datastore");
            tracing::debug!(server = node_name, "servers on this etcd share it");
            Ok(Arc::new(open_etcd(e)?))
        }
    }
}

pub fn open_sqlite(data_dir: &Path) -> Result<SqliteStore, StoreError> {
    let options = StoreOptions {
        volatile_prefixes: VOLATILE_PREFIXES.iter().map(|p| p.to_string()).collect(),
        ..StoreOptions::default()
    };
    SqliteStore::open(&data_dir.join("server/db"), options)
}

pub fn open_etcd(e: &EtcdEndpoints) -> Result<EtcdStore, StoreError> {
    let read = |what: &str, p: &Option<std::path::PathBuf>| -> Result<Option<Vec<u8>>, StoreError> {
        p.as_ref()
            .map(|p| {
                std::fs::read(p).map_err(|err| {
                    StoreError::Backend(format!("failed to read --datastore-{what} {}: {err}", p.display()))
                })
            })
            .transpose()
    };
    let tls = EtcdTls {
        ca_pem: read("cafile", &e.cafile)?,
        cert_pem: read("certfile", &e.certfile)?,
        key_pem: read("keyfile", &e.keyfile)?,
    };
    EtcdStore::connect(EtcdOptions {
        tls,
        ttl_prefixes: vec![EVENTS_PREFIX.into()],
        ..EtcdOptions::new(e.urls.clone())
    })
}
