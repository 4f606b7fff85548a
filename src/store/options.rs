//! Tuning knobs of [`super::SqliteStore`].

use std::time::Duration;

/// How hard SQLite flushes a commit to stable storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// `synchronous=FULL`: the WAL is fsynced at every commit; survives power loss.
    Full,
    /// `synchronous=NORMAL`: survives a process crash, may lose the last commits on power loss.
    Normal,
}

/// Options for [`super::SqliteStore::open`].
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Keys under these prefixes live in memory only (same revisions, same watch stream).
    pub volatile_prefixes: Vec<String>,
    pub sync: SyncMode,
    /// History older than this goes at the next compaction (see below).
    pub history_window: Duration,
    /// At most this many revisions of history are kept (plus a tenth of it
    /// as slack: compactions are batched, so one runs every tenth of the cap).
    pub history_max_revisions: i64,
    /// Per-watcher buffer of live events; a watcher that falls further behind gets `Compacted`.
    pub watch_buffer: usize,
    /// Volatile writes reserve revisions in blocks of this size (one small durable write per block).
    pub reserve_step: i64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            volatile_prefixes: Vec::new(),
            sync: SyncMode::Full,
            history_window: Duration::from_secs(300),
            history_max_revisions: 1_000,
            watch_buffer: 1024,
            reserve_step: 10_000,
        }
    }
}

impl StoreOptions {
    pub(crate) fn is_volatile(&self, key: &str) -> bool {
        self.volatile_prefixes
            .iter()
            .any(|p| key.starts_with(p.as_str()))
    }

    /// Whether a prefix list or watch can see volatile keys.
    pub(crate) fn overlaps_volatile(&self, prefix: &str) -> bool {
        self.volatile_prefixes
            .iter()
            .any(|p| p.starts_with(prefix) || prefix.starts_with(p.as_str()))
    }
}
