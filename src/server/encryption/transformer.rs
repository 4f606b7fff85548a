//! [`EncryptingStore`]: a `Store` decorator that encrypts the values of keys
//! under one prefix (`/registry/secrets/`) on the way in and decrypts them on
//! the way out, so encryption at rest works over any backend (SQLite, etcd).
//!
//! Invariants: nothing under the prefix reaches the inner store in plaintext
//! while encryption is on; every record handed out (get, list, watch, and the
//! records writes return) is plaintext; a value that cannot be decrypted is
//! an error naming the key, never garbage. The key set is swapped atomically
//! (`set_keys`) so rotation needs no restart.

use std::sync::{Arc, RwLock};

use super::keys::KeySet;
use crate::store::{ListOptions, ListPage, Record, Result, Revision, Store, StoreError, WatchReceiver};

pub struct EncryptingStore {
    inner: Arc<dyn Store>,
    prefix: String,
    keys: Arc<RwLock<Arc<KeySet>>>,
}

impl EncryptingStore {
    pub fn new(inner: Arc<dyn Store>, prefix: &str, keys: KeySet) -> Self {
        EncryptingStore { inner, prefix: prefix.to_string(), keys: Arc::new(RwLock::new(Arc::new(keys))) }
    }

    pub fn keys(&self) -> Arc<KeySet> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_keys(&self, keys: KeySet) {
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
    }

    /// The undecorated store (for re-encryption, which reads raw values).
    pub fn inner(&self) -> &Arc<dyn Store> {
        &self.inner
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn covers(&self, key: &str) -> bool {
        key.starts_with(&self.prefix)
    }

    fn seal(&self, key: &str, value: &[u8]) -> Result<Vec<u8>> {
        if !self.covers(key) {
            return Ok(value.to_vec());
        }
        self.keys().encrypt(key, value).map_err(|e| StoreError::Backend(e.to_string()))
    }

    fn open(&self, mut r: Record) -> Result<Record> {
        if self.covers(&r.key) {
            r.value = self.keys().decrypt(&r.key, &r.value).map_err(|e| StoreError::Backend(e.to_string()))?;
        }
        Ok(r)
    }
}

impl Store for EncryptingStore {
    fn current_revision(&self) -> Revision {
        self.inner.current_revision()
    }
    fn compacted_revision(&self) -> Revision {
        self.inner.compacted_revision()
    }
    fn get(&self, key: &str) -> Result<Option<Record>> {
        self.inner.get(key)?.map(|r| self.open(r)).transpose()
    }
    fn list(&self, opts: &ListOptions) -> Result<ListPage> {
        let mut page = self.inner.list(opts)?;
        if self.covers(&opts.prefix) || self.prefix.starts_with(&opts.prefix) {
            page.records = page.records.into_iter().map(|r| self.open(r)).collect::<Result<_>>()?;
        }
        Ok(page)
    }
    fn create(&self, key: &str, value: &[u8]) -> Result<Record> {
        let mut r = self.inner.create(key, &self.seal(key, value)?)?;
        r.value = value.to_vec();
        Ok(r)
    }
    fn update(&self, key: &str, value: &[u8], expected: Revision) -> Result<Record> {
        let mut r = self.inner.update(key, &self.seal(key, value)?, expected)?;
        r.value = value.to_vec();
        Ok(r)
    }
    fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Record> {
        let r = self.inner.delete(key, expected)?;
        self.open(r)
    }
    fn watch(&self, prefix: &str, after: Revision) -> Result<WatchReceiver> {
        let mut rx = self.inner.watch(prefix, after)?;
        if !(prefix.starts_with(&self.prefix) || self.prefix.starts_with(prefix)) {
            return Ok(rx);
        }
        // Decrypt on a forwarding task; the channel keeps the inner one's bound,
        // and a closed receiver ends the task (and with it the inner watch).
        let (tx, out) = tokio::sync::mpsc::channel(rx.max_capacity().max(1));
        let this = Opener { prefix: self.prefix.clone(), keys: self.keys.clone() };
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| StoreError::Backend("failed to watch: no async runtime for decryption".into()))?;
        handle.spawn(async move {
            while let Some(item) = rx.recv().await {
                let item = item.and_then(|mut ev| {
                    ev.record = this.open(ev.record)?;
                    ev.prev = ev.prev.map(|p| this.open(p)).transpose()?;
                    Ok(ev)
                });
                if tx.send(item).await.is_err() {
                    return;
                }
            }
        });
        Ok(out)
    }
    fn compact(&self, revision: Revision) -> Result<()> {
        self.inner.compact(revision)
    }
}

/// What a watch's forwarding task needs to decrypt (the live key set, so a
/// rotation during a watch is seen).
struct Opener {
    prefix: String,
    keys: Arc<RwLock<Arc<KeySet>>>,
}

impl Opener {
    fn open(&self, mut r: Record) -> Result<Record> {
        if r.key.starts_with(&self.prefix) {
            let keys = self.keys.read().unwrap_or_else(|e| e.into_inner()).clone();
            r.value = keys.decrypt(&r.key, &r.value).map_err(|e| StoreError::Backend(e.to_string()))?;
        }
        Ok(r)
    }
}
