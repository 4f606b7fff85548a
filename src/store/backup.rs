//! Consistent copies of the SQLite datastore, for `rk3s snapshot`.
//!
//! [`backup`] copies `<dir>/state.db` with `VACUUM INTO`, which reads the
//! whole database inside one read transaction: in WAL mode it runs while the
//! server keeps writing, sees exactly one committed state (WAL frames
//! included), and writes a compact, self-contained file with no WAL beside
//! it. (We use it rather than the page-by-page backup API, which would need
//! another rusqlite feature and gives the same guarantee.)
//! [`check`] opens a candidate file and runs `PRAGMA integrity_check`, and
//! [`install`] puts a checked file in place of a stopped server's database.
//!
//! Invariant: [`install`] refuses while a server holds `state.db.lock`, and
//! replaces the database by rename, so an interrupted restore leaves either
//! the old database or the new one.

use std::path::Path;

use super::{Result, StoreError, DB_FILE};

fn err(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("failed to {what}: {e}"))
}

/// Copies the database in `dir` to `dest` (which must not exist), consistently,
/// whether or not a server is running on it.
pub fn backup(dir: &Path, dest: &Path) -> Result<()> {
    let src = dir.join(DB_FILE);
    if !src.is_file() {
        return Err(err(
            "find the datastore",
            format!("{} does not exist (snapshots cover the embedded SQLite datastore)", src.display()),
        ));
    }
    let conn = rusqlite::Connection::open_with_flags(
        &src,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| err(&format!("open {}", src.display()), e))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(|e| err("set the busy timeout", e))?;
    let dest_str = dest.to_str().ok_or_else(|| err("name the snapshot file", "the path is not UTF-8"))?;
    conn.execute("VACUUM INTO ?1", [dest_str])
        .map_err(|e| err(&format!("copy the datastore to {}", dest.display()), e))?;
    Ok(())
}

/// Whether `file` is an intact rk3s database: SQLite's integrity check passes
/// and the store's tables are there. Returns its newest revision.
pub fn check(file: &Path) -> Result<i64> {
    let conn = rusqlite::Connection::open_with_flags(file, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| err(&format!("open {}", file.display()), e))?;
    let verdict: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(|e| err(&format!("check {}", file.display()), e))?;
    if verdict != "ok" {
        return Err(err(&format!("check {}", file.display()), verdict));
    }
    conn.query_row("SELECT COALESCE(MAX(rev), 0) FROM log", [], |r| r.get(0))
        .map_err(|e| err(&format!("read {} as an rk3s datastore", file.display()), e))
}

/// Whether a server holds the store in `dir` (its `state.db.lock`).
pub fn in_use(dir: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(file) = std::fs::File::open(dir.join(format!("{DB_FILE}.lock"))) else {
        return false;
    };
    // SAFETY: flock on a valid, owned descriptor; released when `file` drops.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    rc != 0
}

/// Replaces the database in `dir` with the checked file `db` (moved, same
/// filesystem expected: the caller stages it inside `dir`). Refuses while a
/// server runs on `dir`.
pub fn install(dir: &Path, db: &Path) -> Result<()> {
    if in_use(dir) {
        return Err(err(
            "restore the datastore",
            format!("a server is running on {}; stop it first", dir.display()),
        ));
    }
    for suffix in ["-wal", "-shm"] {
        let p = dir.join(format!("{DB_FILE}{suffix}"));
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(&format!("remove {}", p.display()), e)),
        }
    }
    let target = dir.join(DB_FILE);
    std::fs::rename(db, &target).map_err(|e| err(&format!("move the snapshot to {}", target.display()), e))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
