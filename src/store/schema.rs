//! The SQLite schema and the read queries shared by the store's connections.
//!
//! `log` is the history: one row per durable write, keyed by its revision.
//! Deletes are tombstone rows (`deleted = 1`, empty value, `prev_rev` points
//! at the row they removed). `current` maps each live key to its newest row,
//! so latest gets and lists never scan history.

use rusqlite::{params, Connection, OptionalExtension};

use super::options::SyncMode;
use super::{Record, Result, Revision, StoreError};

pub(crate) fn backend(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("failed to {what}: {e}"))
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log (
    rev INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    create_rev INTEGER NOT NULL,
    prev_rev INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    value BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS log_key_rev ON log(key, rev);
CREATE TABLE IF NOT EXISTS current (key TEXT PRIMARY KEY, rev INTEGER NOT NULL) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (name, value) VALUES ('compacted', 0), ('reserved', 0);
";

/// Set the pragmas of the writer connection and create the schema.
pub(crate) fn init_writer(conn: &Connection, sync: SyncMode, file_backed: bool) -> Result<()> {
    let err = |e| backend("initialise the database", e);
    // auto_vacuum only takes effect before the first table exists.
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")
        .map_err(err)?;
    if file_backed {
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(backend("switch to WAL mode", mode));
        }
        let sync = match sync {
            SyncMode::Full => "FULL",
            SyncMode::Normal => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", sync).map_err(err)?;
        // Checkpoint every 256 pages (1 MiB) and cut the WAL back to 1 MiB after
        // each reset, so the WAL can never grow without bound.
        conn.pragma_update(None, "wal_autocheckpoint", 256)
            .map_err(err)?;
        conn.pragma_update(None, "journal_size_limit", 1 << 20)
            .map_err(err)?;
    }
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(err)?;
    conn.execute_batch(SCHEMA).map_err(err)?;
    Ok(())
}

/// Free pages worth returning to the file system: at least 256 (1 MiB with
/// 4 KiB pages) and at least a quarter of the file.
const VACUUM_MIN_FREE_PAGES: i64 = 256;

/// Whether enough of the file is free for `incremental_vacuum` to be worth
/// its page moves.
pub(crate) fn worth_vacuuming(conn: &Connection) -> Result<bool> {
    let get = |pragma: &str| -> Result<i64> {
        conn.query_row(&format!("PRAGMA {pragma}"), [], |r| r.get(0))
            .map_err(|e| backend("read the free-page count", e))
    };
    let free = get("freelist_count")?;
    let pages = get("page_count")?;
    Ok(free >= VACUUM_MIN_FREE_PAGES && free * 4 >= pages)
}

pub(crate) fn meta(conn: &Connection, name: &str) -> Result<Revision> {
    conn.query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
        r.get(0)
    })
    .map_err(|e| backend("read store metadata", e))
}

pub(crate) fn set_meta(conn: &Connection, name: &str, value: Revision) -> Result<()> {
    conn.execute(
        "UPDATE meta SET value = ?2 WHERE name = ?1",
        params![name, value],
    )
    .map(|_| ())
    .map_err(|e| backend("write store metadata", e))
}

pub(crate) fn max_log_rev(conn: &Connection) -> Result<Revision> {
    conn.query_row("SELECT COALESCE(MAX(rev), 0) FROM log", [], |r| r.get(0))
        .map_err(|e| backend("read the newest revision", e))
}

/// How many durable writes (log rows) came after `rev`.
pub(crate) fn log_rows_after(conn: &Connection, rev: Revision) -> Result<i64> {
    conn.query_row("SELECT COUNT(*) FROM log WHERE rev > ?1", [rev], |r| r.get(0))
        .map_err(|e| backend("count the history", e))
}

/// The revision of the log row with `n` newer rows after it, if there are
/// that many: compacting to it keeps the newest `n` durable writes.
pub(crate) fn nth_newest_log_rev(conn: &Connection, n: i64) -> Result<Option<Revision>> {
    conn.query_row(
        "SELECT rev FROM log ORDER BY rev DESC LIMIT 1 OFFSET ?1",
        [n],
        |r| r.get(0),
    )
    .optional()
    .map_err(|e| backend("find the history to keep", e))
}

/// The smallest string greater than every string starting with `prefix`, if any.
pub(crate) fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = last as u32 + 1;
        if (0xD800..=0xDFFF).contains(&next) {
            next = 0xE000;
        }
        if let Some(c) = char::from_u32(next) {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// Key bounds `[lower, upper)` for a prefix and an optional exclusive start.
pub(crate) struct KeyRange {
    pub lower: String,
    pub lower_inclusive: bool,
    pub upper: Option<String>,
}

impl KeyRange {
    pub fn new(prefix: &str, start_after: Option<&str>) -> KeyRange {
        let upper = prefix_end(prefix);
        match start_after {
            Some(s) if s >= prefix => KeyRange {
                lower: s.to_owned(),
                lower_inclusive: false,
                upper,
            },
            _ => KeyRange {
                lower: prefix.to_owned(),
                lower_inclusive: true,
                upper,
            },
        }
    }

    pub fn contains(&self, key: &str) -> bool {
        let above = if self.lower_inclusive {
            key >= self.lower.as_str()
        } else {
            key > self.lower.as_str()
        };
        above && self.upper.as_deref().is_none_or(|u| key < u)
    }

    fn sql(&self, column: &str) -> String {
        let op = if self.lower_inclusive { ">=" } else { ">" };
        let upper = if self.upper.is_some() {
            format!(" AND {column} < ?2")
        } else {
            " AND ?2 IS NULL".into()
        };
        format!("{column} {op} ?1{upper}")
    }
}

pub(crate) fn get_latest(conn: &Connection, key: &str) -> Result<Option<Record>> {
    conn.prepare_cached(
        "SELECT l.create_rev, l.rev, l.value FROM current c JOIN log l ON l.rev = c.rev WHERE c.key = ?1",
    )
    .and_then(|mut s| {
        s.query_row([key], |r| {
            Ok(Record { key: key.to_owned(), create_revision: r.get(0)?, mod_revision: r.get(1)?, value: r.get(2)? })
        })
        .optional()
    })
    .map_err(|e| backend("read a key", e))
}

/// Latest records in `range`, at most `limit`, plus the count of further matches.
pub(crate) fn list_latest(
    conn: &Connection,
    range: &KeyRange,
    limit: Option<usize>,
) -> Result<(Vec<Record>, usize)> {
    let err = |e| backend("list keys", e);
    let sql = format!(
        "SELECT c.key, l.create_rev, l.rev, l.value FROM current c JOIN log l ON l.rev = c.rev \
         WHERE {} ORDER BY c.key LIMIT ?3",
        range.sql("c.key")
    );
    let lim = limit.map_or(-1, |l| l as i64);
    let mut stmt = conn.prepare_cached(&sql).map_err(err)?;
    let records = stmt
        .query_map(params![range.lower, range.upper, lim], |r| {
            Ok(Record {
                key: r.get(0)?,
                create_revision: r.get(1)?,
                mod_revision: r.get(2)?,
                value: r.get(3)?,
            })
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(err)?;
    let remaining = match (limit, records.last()) {
        (Some(l), Some(last)) if records.len() == l => {
            let rest = KeyRange {
                lower: last.key.clone(),
                lower_inclusive: false,
                upper: range.upper.clone(),
            };
            let sql = format!("SELECT COUNT(*) FROM current c WHERE {}", rest.sql("c.key"));
            conn.query_row(&sql, params![rest.lower, rest.upper], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(err)? as usize
        }
        _ => 0,
    };
    Ok((records, remaining))
}

/// Records in `range` as of revision `at` (from the history log), in key order.
pub(crate) fn list_at(conn: &Connection, range: &KeyRange, at: Revision) -> Result<Vec<Record>> {
    let err = |e| backend("list keys at a past revision", e);
    // SQLite returns the other columns of the row holding MAX(rev) in each group.
    let sql = format!(
        "SELECT key, MAX(rev), create_rev, deleted FROM log WHERE {} AND rev <= ?3 GROUP BY key ORDER BY key",
        range.sql("key")
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(err)?;
    let heads = stmt
        .query_map(params![range.lower, range.upper, at], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(err)?;
    let mut value = conn
        .prepare_cached("SELECT value FROM log WHERE rev = ?1")
        .map_err(err)?;
    let mut out = Vec::new();
    for (key, rev, create_rev, deleted) in heads {
        if deleted != 0 {
            continue;
        }
        let v: Vec<u8> = value.query_row([rev], |r| r.get(0)).map_err(err)?;
        out.push(Record {
            key,
            value: v,
            create_revision: create_rev,
            mod_revision: rev,
        });
    }
    Ok(out)
}

/// One durable history row with the value of the row it replaced.
pub(crate) struct LogRow {
    pub rev: Revision,
    pub key: String,
    pub create_rev: Revision,
    pub prev_rev: Revision,
    pub deleted: bool,
    pub value: Vec<u8>,
    pub prev_value: Option<Vec<u8>>,
}

/// Durable changes under `prefix` with `after < rev <= upto`, in revision order.
pub(crate) fn history(
    conn: &Connection,
    prefix: &str,
    after: Revision,
    upto: Revision,
) -> Result<Vec<LogRow>> {
    let err = |e| backend("read history", e);
    let range = KeyRange::new(prefix, None);
    let sql = format!(
        "SELECT l.rev, l.key, l.create_rev, l.prev_rev, l.deleted, l.value, p.value \
         FROM log l LEFT JOIN log p ON p.rev = l.prev_rev \
         WHERE {} AND l.rev > ?3 AND l.rev <= ?4 ORDER BY l.rev",
        range.sql("l.key")
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(err)?;
    stmt.query_map(params![range.lower, range.upper, after, upto], |r| {
        Ok(LogRow {
            rev: r.get(0)?,
            key: r.get(1)?,
            create_rev: r.get(2)?,
            prev_rev: r.get(3)?,
            deleted: r.get::<_, i64>(4)? != 0,
            value: r.get(5)?,
            prev_value: r.get(6)?,
        })
    })
    .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
    .map_err(err)
}
