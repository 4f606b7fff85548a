//! Datastore snapshots (k3s's `etcd-snapshot`, for the embedded SQLite
//! datastore): `rk3s snapshot save|ls|delete|restore` and the server's
//! scheduled snapshots ([`schedule`]).
//!
//! A snapshot is one gzip-compressed tar file, `<name>-<node>-<unix time>.tar.gz`
//! in the snapshot directory (default `<data-dir>/server/db/snapshots`, mode
//! 0600 because it holds keys), with a sidecar `<file>.sha256` in
//! `sha256sum` format (so `sha256sum -c` checks it too). The tar holds:
//! - `state.db`: a consistent copy of the datastore (`store::backup`,
//!   `VACUUM INTO`, taken while the server runs);
//! - `tls/`, `token`, `cred/`: the server's PKI, join token and secrets
//!   encryption keys. They belong with the data: ServiceAccount tokens in
//!   the datastore are signed by `tls/service.key`, agents pin the CA by the
//!   join token, and encrypted Secrets need their keys. With them, a restore
//!   onto a fresh SD card brings back a cluster the agents rejoin on their own.
//!
//! Restore (`rk3s snapshot restore FILE`, the server stopped) checks the
//! sidecar's SHA-256, unpacks into a staging directory, runs SQLite's
//! integrity check, then puts the datastore, PKI, token and keys in place.
//! Every object comes back byte for byte: same UIDs, same resourceVersions.
//!
//! Invariants: a snapshot whose checksum, archive or database does not check
//! out is refused before anything in the data directory changes; snapshots
//! are written to a temporary name and renamed, so `ls` never lists a half
//! one; retention deletes only scheduled snapshots of this node.
//!
//! Partial: no S3 upload; the SQLite datastore only (with `--datastore-endpoint`
//! naming etcd, use etcd's own snapshots).

pub mod schedule;

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::store::backup;

/// The name scheduled snapshots start with (k3s's `--etcd-snapshot-name` default).
pub const SCHEDULED_NAME: &str = "etcd-snapshot";
/// The name `rk3s snapshot save` uses without `--name` (k3s's).
pub const ON_DEMAND_NAME: &str = "on-demand";
const EXT: &str = ".tar.gz";
const SUM_EXT: &str = ".sha256";

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("failed to {action} {}: {source}", path.display())]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("refusing snapshot {}: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("failed to find snapshot {0:?} (see `rk3s snapshot ls`)")]
    NotFound(String),
    #[error("invalid snapshot name {0:?}: use letters, digits, '-', '_' and '.'")]
    BadName(String),
    #[error(
        "this server's datastore is not the embedded SQLite one ({0}); snapshots cover SQLite only: \
         use etcd's own snapshot tooling"
    )]
    NotSqlite(String),
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SnapshotError + 'a {
    move |source| SnapshotError::Io { action, path: path.to_path_buf(), source }
}

/// One snapshot on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The file name without `.tar.gz`.
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    /// Seconds since the epoch, from the name.
    pub created: u64,
}

/// Where a server's pieces live.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `<data-dir>/server`.
    pub server_dir: PathBuf,
    /// The snapshot directory.
    pub snapshot_dir: PathBuf,
}

impl Paths {
    pub fn new(data_dir: &Path, snapshot_dir: Option<&Path>) -> Self {
        let server_dir = data_dir.join("server");
        let snapshot_dir = snapshot_dir.map(Path::to_path_buf).unwrap_or_else(|| server_dir.join("db/snapshots"));
        Paths { server_dir, snapshot_dir }
    }
    fn db_dir(&self) -> PathBuf {
        self.server_dir.join("db")
    }
}

fn check_name(name: &str) -> Result<(), SnapshotError> {
    let ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok && !name.starts_with('.') {
        Ok(())
    } else {
        Err(SnapshotError::BadName(name.to_string()))
    }
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Hex SHA-256 of a file's bytes.
fn file_sha256(path: &Path) -> Result<String, SnapshotError> {
    let mut f = std::fs::File::open(path).map_err(io("open", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf).map_err(io("read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Takes a snapshot named `<name>-<node>-<now>` and returns it.
pub fn save(paths: &Paths, name: &str, node: &str) -> Result<SnapshotInfo, SnapshotError> {
    check_name(name)?;
    let db_dir = paths.db_dir();
    if !db_dir.join(crate::store::DB_FILE).is_file() {
        return Err(SnapshotError::NotSqlite(format!("no {} in {}", crate::store::DB_FILE, db_dir.display())));
    }
    std::fs::create_dir_all(&paths.snapshot_dir).map_err(io("create directory", &paths.snapshot_dir))?;
    let full = format!("{name}-{node}-{}", now_secs());
    let staging = paths.snapshot_dir.join(format!(".{full}.staging"));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(io("create directory", &staging))?;
    let result = (|| {
        let db_copy = staging.join(crate::store::DB_FILE);
        backup::backup(&db_dir, &db_copy)?;
        let tmp = paths.snapshot_dir.join(format!(".{full}{EXT}.tmp"));
        write_archive(&tmp, &db_copy, &paths.server_dir)?;
        let path = paths.snapshot_dir.join(format!("{full}{EXT}"));
        let sum = file_sha256(&tmp)?;
        let sum_path = paths.snapshot_dir.join(format!("{full}{EXT}{SUM_EXT}"));
        std::fs::write(&sum_path, format!("{sum}  {full}{EXT}\n")).map_err(io("write", &sum_path))?;
        std::fs::rename(&tmp, &path).map_err(io("rename", &tmp))?;
        let size = std::fs::metadata(&path).map_err(io("stat", &path))?.len();
        Ok(SnapshotInfo { name: full.clone(), path, size, created: now_secs() })
    })();
    let _ = std::fs::remove_dir_all(&staging);
    result
}

fn write_archive(dest: &Path, db_copy: &Path, server_dir: &Path) -> Result<(), SnapshotError> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dest)
        .map_err(io("create", dest))?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.append_path_with_name(db_copy, crate::store::DB_FILE).map_err(io("archive", db_copy))?;
    for sub in ["tls", "cred"] {
        let dir = server_dir.join(sub);
        if dir.is_dir() {
            tar.append_dir_all(sub, &dir).map_err(io("archive", &dir))?;
        }
    }
    let token = server_dir.join("token");
    if token.is_file() {
        tar.append_path_with_name(&token, "token").map_err(io("archive", &token))?;
    }
    let gz = tar.into_inner().map_err(io("finish", dest))?;
    let file = gz.finish().map_err(io("compress", dest))?;
    file.sync_all().map_err(io("sync", dest))?;
    Ok(())
}

/// The snapshots in the directory, oldest first.
pub fn list(paths: &Paths) -> Result<Vec<SnapshotInfo>, SnapshotError> {
    let entries = match std::fs::read_dir(&paths.snapshot_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(SnapshotError::Io { action: "read", path: paths.snapshot_dir.clone(), source: e }),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Ok(file) = entry.file_name().into_string() else { continue };
        let Some(name) = file.strip_suffix(EXT) else { continue };
        if name.starts_with('.') {
            continue;
        }
        let created = name.rsplit('-').next().and_then(|t| t.parse().ok()).unwrap_or(0);
        let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
        out.push(SnapshotInfo { name: name.to_string(), path: entry.path(), size, created });
    }
    out.sort_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)));
    Ok(out)
}

/// Finds a snapshot by name (with or without `.tar.gz`) or path.
pub fn find(paths: &Paths, name_or_path: &str) -> Result<PathBuf, SnapshotError> {
    let as_path = Path::new(name_or_path);
    if name_or_path.contains('/') {
        return if as_path.is_file() { Ok(as_path.to_path_buf()) } else { Err(SnapshotError::NotFound(name_or_path.into())) };
    }
    let bare = name_or_path.strip_suffix(EXT).unwrap_or(name_or_path);
    list(paths)?
        .into_iter()
        .find(|s| s.name == bare)
        .map(|s| s.path)
        .ok_or_else(|| SnapshotError::NotFound(name_or_path.into()))
}

/// Deletes snapshots (and their sidecars) by name.
pub fn delete(paths: &Paths, names: &[String]) -> Result<Vec<PathBuf>, SnapshotError> {
    let mut gone = Vec::new();
    for name in names {
        let path = find(paths, name)?;
        std::fs::remove_file(&path).map_err(io("delete", &path))?;
        let _ = std::fs::remove_file(sidecar(&path));
        gone.push(path);
    }
    Ok(gone)
}

/// Deletes the oldest scheduled snapshots of `node` beyond `retention`.
pub fn prune(paths: &Paths, node: &str, retention: usize) -> Result<Vec<String>, SnapshotError> {
    let prefix = format!("{SCHEDULED_NAME}-{node}-");
    let scheduled: Vec<_> = list(paths)?.into_iter().filter(|s| s.name.starts_with(&prefix)).collect();
    let excess = scheduled.len().saturating_sub(retention);
    let names: Vec<String> = scheduled.into_iter().take(excess).map(|s| s.name).collect();
    delete(paths, &names)?;
    Ok(names)
}

fn sidecar(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(SUM_EXT);
    PathBuf::from(s)
}

/// Checks a snapshot's sidecar checksum, archive and database, then puts its
/// datastore, PKI, token and keys into `paths.server_dir` (the server must
/// be stopped). Returns the datastore's revision.
pub fn restore(paths: &Paths, snapshot: &Path) -> Result<i64, SnapshotError> {
    let corrupt = |reason: String| SnapshotError::Corrupt { path: snapshot.to_path_buf(), reason };
    let sum_path = sidecar(snapshot);
    let recorded = std::fs::read_to_string(&sum_path)
        .map_err(|e| corrupt(format!("cannot read its checksum file {}: {e}", sum_path.display())))?;
    let recorded = recorded.split_whitespace().next().unwrap_or_default().to_string();
    let actual = file_sha256(snapshot)?;
    if recorded != actual {
        return Err(corrupt(format!(
            "its SHA-256 is {actual} but {} records {recorded}: the file is damaged or incomplete",
            sum_path.display()
        )));
    }
    let db_dir = paths.db_dir();
    std::fs::create_dir_all(&db_dir).map_err(io("create directory", &db_dir))?;
    if backup::in_use(&db_dir) {
        return Err(SnapshotError::Store(crate::store::StoreError::Backend(format!(
            "failed to restore: a server is running on {}; stop it first",
            db_dir.display()
        ))));
    }
    let staging = db_dir.join(format!(".restore-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(io("create directory", &staging))?;
    let result = (|| {
        let file = std::fs::File::open(snapshot).map_err(io("open", snapshot))?;
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
        tar.set_preserve_permissions(true);
        tar.unpack(&staging).map_err(|e| corrupt(format!("cannot unpack it: {e}")))?;
        let db = staging.join(crate::store::DB_FILE);
        if !db.is_file() {
            return Err(corrupt("it holds no state.db".into()));
        }
        let revision = backup::check(&db).map_err(|e| corrupt(e.to_string()))?;
        for sub in ["tls", "cred"] {
            let from = staging.join(sub);
            if from.is_dir() {
                let to = paths.server_dir.join(sub);
                let _ = std::fs::remove_dir_all(&to);
                copy_dir(&from, &to)?;
            }
        }
        let token = staging.join("token");
        if token.is_file() {
            let to = paths.server_dir.join("token");
            std::fs::copy(&token, &to).map_err(io("restore", &to))?;
        }
        backup::install(&db_dir, &db)?;
        Ok(revision)
    })();
    let _ = std::fs::remove_dir_all(&staging);
    result
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), SnapshotError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(to).map_err(io("create directory", to))?;
    for entry in std::fs::read_dir(from).map_err(io("read", from))?.flatten() {
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if src.is_dir() {
            copy_dir(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).map_err(io("restore", &dst))?;
        }
    }
    Ok(())
}

/// Whether a server runs on `data_dir` (it holds the datastore's lock).
pub fn server_running(data_dir: &Path) -> bool {
    backup::in_use(&data_dir.join("server/db"))
}

/// Prints a table as `rk3s snapshot ls` does (k3s's columns).
pub fn format_list(snapshots: &[SnapshotInfo]) -> String {
    let mut out = String::from("Name                                      Location                                                     Size      Created\n");
    for s in snapshots {
        let created = chrono::DateTime::from_timestamp(s.created as i64, 0)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_default();
        out.push_str(&format!("{:<41} {:<60} {:<9} {}\n", s.name, s.path.display(), s.size, created));
    }
    out
}

#[cfg(test)]
mod tests;
