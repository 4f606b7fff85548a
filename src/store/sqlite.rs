//! [`SqliteStore`]: the [`Store`] on one SQLite file, with volatile keys in memory.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OpenFlags, TransactionBehavior};
use tokio::sync::mpsc;

use super::options::StoreOptions;
use super::schema::{self, backend, KeyRange};
use super::{
    EventKind, ListOptions, ListPage, Record, Result, Revision, Store, StoreError, WatchEvent,
    WatchReceiver,
};

/// The database file inside the directory given to [`SqliteStore::open`].
pub const DB_FILE: &str = "state.db";

struct Subscriber {
    prefix: String,
    tx: mpsc::Sender<Result<WatchEvent, StoreError>>,
}

/// Everything the write path owns; one mutex serialises writers.
struct Inner {
    conn: Connection,
    /// The newest revision assigned (and committed, for durable keys).
    current: Revision,
    compacted: Revision,
    reserved: Revision,
    /// Durable writes (log rows) after `compacted`: what the count cap counts.
    durable_since: i64,
    /// Volatile keys, and their recent changes in `ring`.
    volatile: BTreeMap<String, Record>,
    ring: VecDeque<WatchEvent>,
    /// Volatile history before this revision is gone: lost at the last
    /// restart, or trimmed from `ring` (in memory, never on disk).
    volatile_floor: Revision,
    subscribers: Vec<Subscriber>,
    /// (time, revision) samples for the time-based history window.
    marks: VecDeque<(Instant, Revision)>,
    last_compact: Instant,
}

/// The SQLite-backed store. See the module docs of [`super`].
pub struct SqliteStore {
    inner: Mutex<Inner>,
    /// A second connection for reads, so lists never wait for a commit; `None` in memory.
    reader: Option<Mutex<Connection>>,
    opts: StoreOptions,
    current: AtomicI64,
    compacted: AtomicI64,
    path: Option<PathBuf>,
    _lock: Option<std::fs::File>,
}

impl SqliteStore {
    /// Open (or create) `dir/state.db`.
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<SqliteStore> {
        std::fs::create_dir_all(dir)
            .map_err(|e| backend(&format!("create {}", dir.display()), e))?;
        let lock = lock_dir(dir)?;
        let path = dir.join(DB_FILE);
        let conn =
            Connection::open(&path).map_err(|e| backend(&format!("open {}", path.display()), e))?;
        schema::init_writer(&conn, opts.sync, true)?;
        let reader = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| backend(&format!("open {}", path.display()), e))?;
        reader
            .busy_timeout(Duration::from_secs(10))
            .map_err(|e| backend("configure the reader", e))?;
        Self::from_conn(conn, Some(reader), opts, Some(path), Some(lock))
    }

    /// A store with no file at all, for tests elsewhere in the crate.
    pub fn open_in_memory(opts: StoreOptions) -> Result<SqliteStore> {
        let conn =
            Connection::open_in_memory().map_err(|e| backend("open an in-memory database", e))?;
        schema::init_writer(&conn, opts.sync, false)?;
        Self::from_conn(conn, None, opts, None, None)
    }

    fn from_conn(
        conn: Connection,
        reader: Option<Connection>,
        opts: StoreOptions,
        path: Option<PathBuf>,
        lock: Option<std::fs::File>,
    ) -> Result<SqliteStore> {
        // Durable keys under a volatile prefix (from an older configuration) are dropped.
        for p in &opts.volatile_prefixes {
            let range = KeyRange::new(p, None);
            conn.execute(
                "DELETE FROM current WHERE key >= ?1 AND (?2 IS NULL OR key < ?2)",
                params![range.lower, range.upper],
            )
            .map_err(|e| backend("drop stale volatile keys", e))?;
        }
        let compacted = schema::meta(&conn, "compacted")?;
        let reserved = schema::meta(&conn, "reserved")?;
        let current = schema::max_log_rev(&conn)?.max(compacted).max(reserved);
        let durable_since = schema::log_rows_after(&conn, compacted)?;
        let inner = Inner {
            conn,
            current,
            compacted,
            reserved,
            durable_since,
            volatile: BTreeMap::new(),
            ring: VecDeque::new(),
            volatile_floor: current,
            subscribers: Vec::new(),
            marks: VecDeque::new(),
            last_compact: Instant::now(),
        };
        Ok(SqliteStore {
            inner: Mutex::new(inner),
            reader: reader.map(Mutex::new),
            opts,
            current: AtomicI64::new(current),
            compacted: AtomicI64::new(compacted),
            path,
            _lock: lock,
        })
    }

    /// The database file, if the store has one.
    pub fn db_path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Bytes of the database file plus its WAL (0 in memory).
    pub fn disk_size(&self) -> u64 {
        let Some(p) = &self.path else { return 0 };
        let wal = PathBuf::from(format!("{}-wal", p.display()));
        [p.clone(), wal]
            .iter()
            .filter_map(|f| std::fs::metadata(f).ok())
            .map(|m| m.len())
            .sum()
    }

    /// Fold the WAL into the database file and truncate it.
    pub fn checkpoint(&self) -> Result<()> {
        let inner = self.lock();
        inner
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(|e| backend("checkpoint the WAL", e))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self, key: &str, op: Op<'_>) -> Result<Record> {
        let mut inner = self.lock();
        let rev = inner.current + 1;
        let volatile = self.opts.is_volatile(key);
        let event = if volatile {
            let event = volatile_change(&inner.volatile, key, op, rev)?;
            if rev > inner.reserved {
                let mark = rev + self.opts.reserve_step.max(1);
                schema::set_meta(&inner.conn, "reserved", mark)?;
                inner.reserved = mark;
            }
            match event.kind {
                EventKind::Deleted => inner.volatile.remove(key),
                _ => inner.volatile.insert(key.to_owned(), event.record.clone()),
            };
            inner.ring.push_back(event.clone());
            event
        } else {
            let event = durable_change(&mut inner.conn, key, op, rev)?;
            inner.durable_since += 1;
            event
        };
        inner.current = rev;
        self.current.store(rev, Ordering::Release);
        publish(&mut inner.subscribers, &event);
        let now = Instant::now();
        self.mark_time(&mut inner, now);
        if volatile {
            self.trim_ring(&mut inner);
        } else {
            self.maybe_compact(&mut inner, now);
        }
        Ok(event.record)
    }

    /// Samples (time, revision) at most once a second, keeping just enough
    /// samples to find the revision of `history_window` ago.
    fn mark_time(&self, inner: &mut Inner, now: Instant) {
        if inner
            .marks
            .back()
            .is_none_or(|(t, _)| now.duration_since(*t) >= Duration::from_secs(1))
        {
            inner.marks.push_back((now, inner.current));
        }
        let cutoff = now.checked_sub(self.opts.history_window);
        while inner.marks.len() > 1 && cutoff.is_some_and(|c| inner.marks[1].0 <= c) {
            inner.marks.pop_front();
        }
    }

    /// Keeps the volatile ring within the count cap (plus its slack), in
    /// memory only: volatile writes never start a compaction, so Lease
    /// renewals on an idle node never make the store write.
    fn trim_ring(&self, inner: &mut Inner) {
        let max = self.opts.history_max_revisions.max(1) as usize;
        if inner.ring.len() < max + (max / 10).max(1) {
            return;
        }
        while inner.ring.len() > max {
            if let Some(gone) = inner.ring.pop_front() {
                inner.volatile_floor = inner.volatile_floor.max(gone.revision);
            }
        }
    }

    /// Compaction on the durable write path, batched: once a tenth of the
    /// count cap (`slack`) of durable writes has accumulated since the last
    /// compaction, history is cut back to the cap's worth of durable writes,
    /// or further to what is older than `history_window`. Both rules bound
    /// history (by count, and by age once writes keep coming); an idle store
    /// compacts at most once per `slack` durable writes, however many Leases
    /// it renews, and nothing runs while nothing durable is written.
    fn maybe_compact(&self, inner: &mut Inner, now: Instant) {
        let max = self.opts.history_max_revisions.max(1);
        let slack = (max / 10).max(1);
        if inner.durable_since < slack {
            return;
        }
        let mut target = 0;
        if inner.durable_since >= max + slack {
            match schema::nth_newest_log_rev(&inner.conn, max) {
                Ok(Some(r)) => target = r,
                Ok(None) => {}
                Err(e) => tracing::warn!("{e}"),
            }
        }
        // At most once per window, as kube-apiserver's compactor ticks: a
        // burst of writes then ages out in one compaction rather than in a
        // slice (one transaction, the same index pages rewritten) a minute.
        if now.duration_since(inner.last_compact) >= self.opts.history_window {
            let cutoff = now.checked_sub(self.opts.history_window);
            if let (Some(c), Some((t, r))) = (cutoff, inner.marks.front()) {
                if *t <= c {
                    target = target.max(*r);
                }
            }
        }
        if target > inner.compacted {
            if let Err(e) = self.compact_locked(inner, target) {
                tracing::warn!("{e}");
            }
        }
    }

    fn compact_locked(&self, inner: &mut Inner, target: Revision) -> Result<()> {
        let from = inner.compacted;
        if target <= from {
            return Ok(());
        }
        let err = |e| backend("compact history", e);
        let has_rows: bool = inner
            .conn
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM log WHERE rev > ?1 AND rev <= ?2)",
                params![from, target],
                |r| r.get(0),
            )
            .map_err(err)?;
        // Volatile-only ranges touch nothing on disk: an idle cluster renewing leases writes nothing.
        if has_rows {
            let tx = inner
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(err)?;
            // A row is gone once a newer row of its key is itself at or before the target;
            // tombstones at or before the target go too. The value each key had at `target`
            // stays, so reads at `target` and the `prev` of later events still work.
            tx.execute(
                "DELETE FROM log WHERE rev IN (SELECT prev_rev FROM log WHERE rev > ?1 AND rev <= ?2 AND prev_rev > 0)",
                params![from, target],
            )
            .map_err(err)?;
            tx.execute(
                "DELETE FROM log WHERE rev > ?1 AND rev <= ?2 AND deleted = 1",
                params![from, target],
            )
            .map_err(err)?;
            schema::set_meta(&tx, "compacted", target)?;
            tx.commit().map_err(err)?;
            // Freed pages are reused by the next writes; the file is shrunk
            // (and the WAL folded and truncated) only once a good share of it
            // is free, because moving pages costs writes: a small compaction
            // on an idle node would otherwise rewrite a dozen pages twice.
            if schema::worth_vacuuming(&inner.conn)? {
                inner
                    .conn
                    .execute_batch("PRAGMA incremental_vacuum;")
                    .map_err(err)?;
                if self.path.is_some() {
                    inner
                        .conn
                        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                        .map_err(err)?;
                }
            }
        }
        while inner.ring.front().is_some_and(|e| e.revision <= target) {
            inner.ring.pop_front();
        }
        inner.durable_since = schema::log_rows_after(&inner.conn, target)?;
        inner.compacted = target;
        inner.last_compact = Instant::now();
        self.compacted.store(target, Ordering::Release);
        Ok(())
    }

    fn check_readable(&self, inner: &Inner, prefix: &str, rev: Revision) -> Result<()> {
        if rev > inner.current {
            return Err(StoreError::FutureRevision {
                requested: rev,
                current: inner.current,
            });
        }
        let floor = if self.opts.overlaps_volatile(prefix) {
            inner.compacted.max(inner.volatile_floor)
        } else {
            inner.compacted
        };
        if rev < floor {
            return Err(StoreError::Compacted {
                requested: rev,
                compacted: floor,
            });
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Op<'a> {
    Create(&'a [u8]),
    Update(&'a [u8], Revision),
    Delete(Option<Revision>),
}

fn volatile_change(
    map: &BTreeMap<String, Record>,
    key: &str,
    op: Op<'_>,
    rev: Revision,
) -> Result<WatchEvent> {
    let old = map.get(key).cloned();
    change(key, old, op, rev)
}

/// The event an operation produces against the key's current record, or why it fails.
fn change(key: &str, old: Option<Record>, op: Op<'_>, rev: Revision) -> Result<WatchEvent> {
    let key_s = || key.to_owned();
    match (op, old) {
        (Op::Create(_), Some(_)) => Err(StoreError::AlreadyExists { key: key_s() }),
        (Op::Create(v), None) => Ok(WatchEvent {
            kind: EventKind::Created,
            revision: rev,
            record: Record {
                key: key_s(),
                value: v.to_vec(),
                create_revision: rev,
                mod_revision: rev,
            },
            prev: None,
        }),
        (Op::Update(..) | Op::Delete(_), None) => Err(StoreError::NotFound { key: key_s() }),
        (Op::Update(_, exp) | Op::Delete(Some(exp)), Some(old)) if old.mod_revision != exp => {
            Err(StoreError::Conflict {
                key: key_s(),
                expected: exp,
                actual: old.mod_revision,
            })
        }
        (Op::Update(v, _), Some(old)) => Ok(WatchEvent {
            kind: EventKind::Updated,
            revision: rev,
            record: Record {
                key: key_s(),
                value: v.to_vec(),
                create_revision: old.create_revision,
                mod_revision: rev,
            },
            prev: Some(old),
        }),
        (Op::Delete(_), Some(old)) => Ok(WatchEvent {
            kind: EventKind::Deleted,
            revision: rev,
            record: Record {
                mod_revision: rev,
                ..old.clone()
            },
            prev: Some(old),
        }),
    }
}

/// One durable write: one SQLite transaction, committed before returning.
fn durable_change(
    conn: &mut Connection,
    key: &str,
    op: Op<'_>,
    rev: Revision,
) -> Result<WatchEvent> {
    let err = |e| backend(&format!("write {key}"), e);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err)?;
    let old = schema::get_latest(&tx, key)?;
    let event = change(key, old, op, rev)?;
    let prev_rev = event.prev.as_ref().map_or(0, |p| p.mod_revision);
    let deleted = event.kind == EventKind::Deleted;
    let value: &[u8] = if deleted { &[] } else { &event.record.value };
    tx.execute(
        "INSERT INTO log (rev, key, create_rev, prev_rev, deleted, value) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![rev, key, event.record.create_revision, prev_rev, deleted as i64, value],
    )
    .map_err(err)?;
    if deleted {
        tx.execute("DELETE FROM current WHERE key = ?1", [key])
            .map_err(err)?;
    } else {
        tx.execute(
            "INSERT OR REPLACE INTO current (key, rev) VALUES (?1, ?2)",
            params![key, rev],
        )
        .map_err(err)?;
    }
    tx.commit().map_err(err)?;
    Ok(event)
}

/// Push one event to every matching subscriber without ever blocking the writer.
fn publish(subscribers: &mut Vec<Subscriber>, event: &WatchEvent) {
    subscribers.retain(|s| {
        if !event.record.key.starts_with(s.prefix.as_str()) {
            return !s.tx.is_closed();
        }
        // The last slot is kept for the error that ends a watcher that fell behind.
        if s.tx.capacity() > 1 {
            s.tx.try_send(Ok(event.clone())).is_ok()
        } else {
            let _ = s.tx.try_send(Err(StoreError::Compacted {
                requested: event.revision,
                compacted: event.revision,
            }));
            false
        }
    });
}

fn lock_dir(dir: &Path) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let path = dir.join(format!("{DB_FILE}.lock"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| backend(&format!("open {}", path.display()), e))?;
    // SAFETY: flock on a valid, owned descriptor.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(backend(
            &format!("lock {}", path.display()),
            "another rk3s server uses this data directory",
        ));
    }
    Ok(file)
}

fn event_from_row(row: schema::LogRow) -> WatchEvent {
    let prev = row.prev_value.map(|v| Record {
        key: row.key.clone(),
        value: v,
        create_revision: row.create_rev,
        mod_revision: row.prev_rev,
    });
    let (kind, value) = match (row.deleted, &prev) {
        (true, Some(p)) => (EventKind::Deleted, p.value.clone()),
        (true, None) => (EventKind::Deleted, Vec::new()),
        (false, _) if row.prev_rev == 0 => (EventKind::Created, row.value),
        (false, _) => (EventKind::Updated, row.value),
    };
    WatchEvent {
        kind,
        revision: row.rev,
        record: Record {
            key: row.key,
            value,
            create_revision: row.create_rev,
            mod_revision: row.rev,
        },
        prev,
    }
}

/// Undo volatile changes after `at` to get the volatile records in `range` as of `at`.
fn volatile_at(inner: &Inner, range: &KeyRange, at: Revision) -> BTreeMap<String, Record> {
    let mut map: BTreeMap<String, Record> = inner
        .volatile
        .iter()
        .filter(|(k, _)| range.contains(k))
        .map(|(k, r)| (k.clone(), r.clone()))
        .collect();
    for ev in inner.ring.iter().rev().take_while(|e| e.revision > at) {
        if !range.contains(&ev.record.key) {
            continue;
        }
        match &ev.prev {
            Some(p) => map.insert(p.key.clone(), p.clone()),
            None => map.remove(&ev.record.key),
        };
    }
    map
}

impl Store for SqliteStore {
    fn current_revision(&self) -> Revision {
        self.current.load(Ordering::Acquire)
    }

    fn compacted_revision(&self) -> Revision {
        self.compacted.load(Ordering::Acquire)
    }

    fn get(&self, key: &str) -> Result<Option<Record>> {
        if self.opts.is_volatile(key) {
            return Ok(self.lock().volatile.get(key).cloned());
        }
        match &self.reader {
            Some(r) => schema::get_latest(&r.lock().unwrap_or_else(|p| p.into_inner()), key),
            None => schema::get_latest(&self.lock().conn, key),
        }
    }

    fn list(&self, opts: &ListOptions) -> Result<ListPage> {
        let range = KeyRange::new(&opts.prefix, opts.start_after.as_deref());
        let limit = opts.limit;
        let inner = self.lock();
        let revision = opts.revision.unwrap_or(inner.current);
        self.check_readable(&inner, &opts.prefix, revision)?;
        let volatile = if self.opts.overlaps_volatile(&opts.prefix) {
            volatile_at(&inner, &range, revision)
        } else {
            BTreeMap::new()
        };
        // Durable rows: latest from `current`, past from the log, each read in a snapshot
        // taken while writers are held off, so it is exactly the state at `revision`.
        let (mut records, durable_rest) = match &self.reader {
            Some(r) => {
                let conn = r.lock().unwrap_or_else(|p| p.into_inner());
                read_durable(
                    &conn,
                    move || drop(inner),
                    &range,
                    opts.revision.map(|_| revision),
                    limit,
                )?
            }
            None => read_durable(
                &inner.conn,
                || (),
                &range,
                opts.revision.map(|_| revision),
                limit,
            )?,
        };
        if volatile.is_empty() {
            return Ok(ListPage {
                records,
                revision,
                remaining: durable_rest,
            });
        }
        // Merge the two key-ordered sources. Durable keys not fetched sort after every
        // fetched one, so the first `limit` merged records are the true first page.
        records.extend(volatile.into_values());
        records.sort_by(|a, b| a.key.cmp(&b.key));
        let total = records.len() + durable_rest;
        records.truncate(limit.unwrap_or(usize::MAX));
        let remaining = total - records.len();
        Ok(ListPage {
            records,
            revision,
            remaining,
        })
    }

    fn create(&self, key: &str, value: &[u8]) -> Result<Record> {
        self.write(key, Op::Create(value))
    }

    fn update(&self, key: &str, value: &[u8], expected: Revision) -> Result<Record> {
        self.write(key, Op::Update(value, expected))
    }

    fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Record> {
        self.write(key, Op::Delete(expected))
    }

    fn watch(&self, prefix: &str, after: Revision) -> Result<WatchReceiver> {
        let mut inner = self.lock();
        self.check_readable(&inner, prefix, after)?;
        // Registration and the history read happen under the writer lock: no event can
        // slip between them, and none is sent twice.
        let mut backlog: Vec<WatchEvent> =
            schema::history(&inner.conn, prefix, after, inner.current)?
                .into_iter()
                .map(event_from_row)
                .collect();
        if self.opts.overlaps_volatile(prefix) {
            backlog.extend(
                inner
                    .ring
                    .iter()
                    .filter(|e| e.revision > after && e.record.key.starts_with(prefix))
                    .cloned(),
            );
            backlog.sort_by_key(|e| e.revision);
        }
        let (tx, rx) = mpsc::channel(backlog.len() + self.opts.watch_buffer.max(2));
        for ev in backlog {
            let _ = tx.try_send(Ok(ev));
        }
        inner.subscribers.push(Subscriber {
            prefix: prefix.to_owned(),
            tx,
        });
        Ok(rx)
    }

    fn compact(&self, revision: Revision) -> Result<()> {
        let mut inner = self.lock();
        if revision > inner.current {
            return Err(StoreError::FutureRevision {
                requested: revision,
                current: inner.current,
            });
        }
        self.compact_locked(&mut inner, revision)
    }
}

/// Read durable records in one read transaction; `release` runs once the snapshot is fixed.
fn read_durable(
    conn: &Connection,
    release: impl FnOnce(),
    range: &KeyRange,
    at: Option<Revision>,
    limit: Option<usize>,
) -> Result<(Vec<Record>, usize)> {
    let tx = conn
        .unchecked_transaction()
        .map_err(|e| backend("start a read", e))?;
    let compacted = schema::meta(&tx, "compacted")?; // the first read fixes the snapshot
    release();
    match at {
        None => schema::list_latest(&tx, range, limit),
        Some(rev) if rev < compacted => Err(StoreError::Compacted {
            requested: rev,
            compacted,
        }),
        Some(rev) => {
            let mut all = schema::list_at(&tx, range, rev)?;
            let keep = limit.unwrap_or(usize::MAX).min(all.len());
            let rest = all.len() - keep;
            all.truncate(keep);
            Ok((all, rest))
        }
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        let inner = self.inner.get_mut().unwrap_or_else(|p| p.into_inner());
        inner.subscribers.clear();
        if self.path.is_some() {
            let _ = inner
                .conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        }
    }
}

#[allow(dead_code)]
fn assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<SqliteStore>();
}
