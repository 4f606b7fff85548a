//! `rk3s datastore migrate`: copies a server's SQLite datastore into an empty
//! etcd so that a one-server cluster can move to etcd without starting over.
//!
//! Every durable key is copied with its value unchanged, page by page at one
//! SQLite revision (a consistent snapshot; the server must be stopped, which
//! the SQLite lock enforces). Objects keep their UIDs, names, labels, owner
//! references and status: the stored JSON is the same. What changes is
//! `resourceVersion`: etcd gives each copied key a new revision, so a client
//! resuming a watch or a conditional update with an old resourceVersion gets
//! 409 Conflict or 410 Gone (or "too large resource version") and relists, as
//! after any etcd restore. Leases and Events (kept in memory on SQLite) are not
//! in the file: nodes renew their leases within seconds of the server's return.
//!
//! **Architecture invariant:** migrate refuses a non-empty etcd, so it never
//! overwrites or mixes clusters.

use std::path::Path;

use crate::config::EtcdEndpoints;
use crate::store::{ListOptions, Store, StoreError};

/// Keys per SQLite page while copying.
const PAGE: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("failed to open the SQLite datastore under {dir}/server/db (is the server still running?): {source}")]
    OpenSqlite { dir: String, source: StoreError },
    #[error("failed to connect to etcd: {0}")]
    OpenEtcd(StoreError),
    #[error("failed to migrate: etcd already holds keys under / (migrate only into an empty etcd)")]
    NotEmpty,
    #[error("failed to copy {key}: {source}")]
    Copy { key: String, source: StoreError },
    #[error("failed to read the SQLite datastore: {0}")]
    Read(StoreError),
}

/// Copies `<data_dir>/server/db` into the etcd at `target`; returns how many keys.
pub fn run(data_dir: &Path, target: &EtcdEndpoints) -> Result<usize, MigrateError> {
    let sqlite = super::datastore::open_sqlite(data_dir).map_err(|source| MigrateError::OpenSqlite {
        dir: data_dir.display().to_string(),
        source,
    })?;
    let etcd = super::datastore::open_etcd(target).map_err(MigrateError::OpenEtcd)?;
    if !etcd.is_empty().map_err(MigrateError::OpenEtcd)? {
        return Err(MigrateError::NotEmpty);
    }
    copy(&sqlite, &etcd)
}

/// Copies every key of `from` (at one revision) into `to` with `create`.
pub fn copy(from: &dyn Store, to: &dyn Store) -> Result<usize, MigrateError> {
    let revision = from.current_revision();
    let mut after: Option<String> = None;
    let mut copied = 0;
    loop {
        let page = from
            .list(&ListOptions {
                prefix: String::new(),
                start_after: after.clone(),
                limit: Some(PAGE),
                revision: Some(revision),
            })
            .map_err(MigrateError::Read)?;
        for r in &page.records {
            to.create(&r.key, &r.value).map_err(|source| MigrateError::Copy {
                key: r.key.clone(),
                source,
            })?;
            copied += 1;
        }
        match page.records.last() {
            Some(last) if page.remaining > 0 => after = Some(last.key.clone()),
            _ => break,
        }
    }
    tracing::info!(copied, revision, "copied the SQLite datastore");
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::etcd::LocalEtcd;

    /// 500 objects from a file-backed SQLite store land in an empty etcd with
    /// their values intact; a second run is refused.
    #[test]
    fn five_hundred_objects_move_to_an_empty_etcd() {
        if !LocalEtcd::available() {
            eprintln!("skipped: no etcd binary");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        {
            let s = super::super::datastore::open_sqlite(dir.path()).unwrap();
            for i in 0..500 {
                let key = format!("/registry/configmaps/ns{}/cm{i}", i % 7);
                let value = format!(r#"{{"metadata":{{"name":"cm{i}","uid":"uid-{i}"}}}}"#);
                s.create(&key, value.as_bytes()).unwrap();
            }
            // History and deletions are not copied, only what is live.
            s.delete("/registry/configmaps/ns0/cm0", None).unwrap();
            s.create("/registry/leases.coordination.k8s.io/kube-system/n", b"volatile")
                .unwrap();
        }
        let etcd = LocalEtcd::start().unwrap();
        let target = EtcdEndpoints::from_flags(&etcd.endpoint, None, None, None).unwrap();
        assert_eq!(run(dir.path(), &target).unwrap(), 499);
        let moved = super::super::datastore::open_etcd(&target).unwrap();
        let all = moved
            .list(&ListOptions {
                prefix: "/registry/configmaps/".into(),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(all.records.len(), 499);
        let one = moved.get("/registry/configmaps/ns3/cm3").unwrap().unwrap();
        assert_eq!(one.value, br#"{"metadata":{"name":"cm3","uid":"uid-3"}}"#);
        assert!(matches!(run(dir.path(), &target), Err(MigrateError::NotEmpty)));
    }
}
