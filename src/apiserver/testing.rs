//! `MemoryStore`: an in-memory [`Store`] with the trait's full semantics
//! (one global revision, compare-and-swap on `mod_revision`, snapshot lists at
//! past revisions, watches with history replay, compaction). A test double for
//! the SQLite store and the recording fake for API-server tests; it keeps all
//! history until [`Store::compact`] is called.

use std::collections::BTreeMap;
use std::sync::Mutex;

use tokio::sync::mpsc;

use crate::store::{
    EventKind, ListOptions, ListPage, Record, Result, Revision, Store, StoreError, WatchEvent,
    WatchReceiver,
};

/// Per-watcher buffer beyond the replayed history; a watcher that falls this
/// far behind is dropped (its stream ends and the client re-watches).
const WATCH_BUFFER: usize = 1024;

#[derive(Default)]
struct Inner {
    revision: Revision,
    compacted: Revision,
    current: BTreeMap<String, Record>,
    /// Every event after `compacted`, in revision order.
    log: Vec<WatchEvent>,
    watchers: Vec<(String, mpsc::Sender<Result<WatchEvent>>)>,
}

/// The in-memory store; see the module docs.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Inner {
    fn publish(&mut self, ev: WatchEvent) {
        self.watchers.retain(|(prefix, tx)| {
            if !ev.record.key.starts_with(prefix.as_str()) {
                return !tx.is_closed();
            }
            tx.try_send(Ok(ev.clone())).is_ok()
        });
        self.log.push(ev);
    }

    /// The live record at `key`, which must be at mod revision `expected`
    /// when one is given.
    fn live(&self, key: &str, expected: Option<Revision>) -> Result<Record> {
        let prev = self
            .current
            .get(key)
            .cloned()
            .ok_or_else(|| StoreError::NotFound { key: key.into() })?;
        match expected {
            Some(expected) if prev.mod_revision != expected => Err(StoreError::Conflict {
                key: key.into(),
                expected,
                actual: prev.mod_revision,
            }),
            _ => Ok(prev),
        }
    }

    /// Applies one change at the next revision (`record.mod_revision`) and
    /// tells the watchers: `record` replaces `prev`, or is gone after a delete.
    fn commit(&mut self, kind: EventKind, record: Record, prev: Option<Record>) -> Record {
        debug_assert_eq!(record.mod_revision, self.revision + 1);
        self.revision = record.mod_revision;
        if matches!(kind, EventKind::Deleted) {
            self.current.remove(&record.key);
        } else {
            self.current.insert(record.key.clone(), record.clone());
        }
        self.publish(WatchEvent {
            kind,
            revision: self.revision,
            record: record.clone(),
            prev,
        });
        record
    }

    /// The live keys as of `rev`, by undoing later events.
    fn snapshot(&self, rev: Revision) -> BTreeMap<String, Record> {
        let mut state = self.current.clone();
        for ev in self.log.iter().rev().take_while(|e| e.revision > rev) {
            match (&ev.kind, &ev.prev) {
                (EventKind::Created, _) => {
                    state.remove(&ev.record.key);
                }
                (_, Some(prev)) => {
                    state.insert(prev.key.clone(), prev.clone());
                }
                (_, None) => {}
            }
        }
        state
    }
}

impl Store for MemoryStore {
    fn current_revision(&self) -> Revision {
        self.inner.lock().expect("memory store lock").revision
    }

    fn compacted_revision(&self) -> Revision {
        self.inner.lock().expect("memory store lock").compacted
    }

    fn get(&self, key: &str) -> Result<Option<Record>> {
        Ok(self
            .inner
            .lock()
            .expect("memory store lock")
            .current
            .get(key)
            .cloned())
    }

    fn list(&self, opts: &ListOptions) -> Result<ListPage> {
        let inner = self.inner.lock().expect("memory store lock");
        let rev = opts.revision.unwrap_or(inner.revision);
        if rev < inner.compacted {
            return Err(StoreError::Compacted {
                requested: rev,
                compacted: inner.compacted,
            });
        }
        if rev > inner.revision {
            return Err(StoreError::FutureRevision {
                requested: rev,
                current: inner.revision,
            });
        }
        let state = if rev == inner.revision {
            inner.current.clone()
        } else {
            inner.snapshot(rev)
        };
        let matching: Vec<&Record> = state
            .range(opts.prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&opts.prefix))
            .filter(|(k, _)| {
                opts.start_after
                    .as_ref()
                    .is_none_or(|s| k.as_str() > s.as_str())
            })
            .map(|(_, r)| r)
            .collect();
        let take = opts.limit.unwrap_or(usize::MAX).min(matching.len());
        Ok(ListPage {
            records: matching[..take].iter().map(|r| (*r).clone()).collect(),
            revision: rev,
            remaining: matching.len() - take,
        })
    }

    fn create(&self, key: &str, value: &[u8]) -> Result<Record> {
        let mut inner = self.inner.lock().expect("memory store lock");
        if inner.current.contains_key(key) {
            return Err(StoreError::AlreadyExists { key: key.into() });
        }
        let revision = inner.revision + 1;
        let rec = Record {
            key: key.into(),
            value: value.to_vec(),
            create_revision: revision,
            mod_revision: revision,
        };
        Ok(inner.commit(EventKind::Created, rec, None))
    }

    fn update(&self, key: &str, value: &[u8], expected: Revision) -> Result<Record> {
        let mut inner = self.inner.lock().expect("memory store lock");
        let prev = inner.live(key, Some(expected))?;
        let rec = Record {
            key: key.into(),
            value: value.to_vec(),
            create_revision: prev.create_revision,
            mod_revision: inner.revision + 1,
        };
        Ok(inner.commit(EventKind::Updated, rec, Some(prev)))
    }

    fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Record> {
        let mut inner = self.inner.lock().expect("memory store lock");
        let prev = inner.live(key, expected)?;
        let rec = Record {
            mod_revision: inner.revision + 1,
            ..prev.clone()
        };
        Ok(inner.commit(EventKind::Deleted, rec, Some(prev)))
    }

    fn watch(&self, prefix: &str, after: Revision) -> Result<WatchReceiver> {
        let mut inner = self.inner.lock().expect("memory store lock");
        if after < inner.compacted {
            return Err(StoreError::Compacted {
                requested: after,
                compacted: inner.compacted,
            });
        }
        let replay: Vec<WatchEvent> = inner
            .log
            .iter()
            .filter(|e| e.revision > after && e.record.key.starts_with(prefix))
            .cloned()
            .collect();
        let (tx, rx) = mpsc::channel(replay.len() + WATCH_BUFFER);
        for ev in replay {
            tx.try_send(Ok(ev))
                .map_err(|e| StoreError::Backend(format!("failed to replay history: {e}")))?;
        }
        inner.watchers.push((prefix.to_string(), tx));
        Ok(rx)
    }

    fn compact(&self, revision: Revision) -> Result<()> {
        let mut inner = self.inner.lock().expect("memory store lock");
        let revision = revision.min(inner.revision);
        if revision <= inner.compacted {
            return Ok(());
        }
        inner.log.retain(|e| e.revision > revision);
        inner.compacted = revision;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_and_snapshots() {
        let s = MemoryStore::new();
        let a = s.create("/r/a", b"1").unwrap();
        assert!(matches!(
            s.create("/r/a", b"x"),
            Err(StoreError::AlreadyExists { .. })
        ));
        s.create("/r/b", b"2").unwrap();
        assert!(matches!(
            s.update("/r/a", b"3", 99),
            Err(StoreError::Conflict { .. })
        ));
        s.update("/r/a", b"3", a.mod_revision).unwrap();
        s.delete("/r/b", None).unwrap();
        let now = s
            .list(&ListOptions {
                prefix: "/r/".into(),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(now.records.len(), 1);
        assert_eq!(now.records[0].value, b"3");
        let then = s
            .list(&ListOptions {
                prefix: "/r/".into(),
                revision: Some(2),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            then.records
                .iter()
                .map(|r| r.value.clone())
                .collect::<Vec<_>>(),
            vec![b"1".to_vec(), b"2".to_vec()]
        );
        let page = s
            .list(&ListOptions {
                prefix: "/r/".into(),
                revision: Some(2),
                limit: Some(1),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(page.remaining, 1);
        s.compact(3).unwrap();
        assert!(matches!(
            s.list(&ListOptions {
                prefix: "/r/".into(),
                revision: Some(2),
                ..Default::default()
            }),
            Err(StoreError::Compacted { .. })
        ));
    }

    #[tokio::test]
    async fn watch_replays_history() {
        let s = MemoryStore::new();
        s.create("/r/a", b"1").unwrap();
        s.create("/q/a", b"1").unwrap();
        let mut rx = s.watch("/r/", 0).unwrap();
        s.delete("/r/a", None).unwrap();
        let first = rx.recv().await.unwrap().unwrap();
        assert_eq!(first.kind, EventKind::Created);
        let second = rx.recv().await.unwrap().unwrap();
        assert_eq!(second.kind, EventKind::Deleted);
        assert_eq!(second.revision, 3);
        assert!(second.prev.is_some());
    }
}
