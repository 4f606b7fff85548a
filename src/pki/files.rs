//! Crash-safe file writes for keys, certificates, tokens and kubeconfigs.
//!
//! Invariant: a reader of a path written here sees either the old contents or the complete new
//! contents, never a prefix. We write a temporary file in the same directory, set its mode before
//! any secret byte lands in it, fsync it, rename it over the target and fsync the directory so the
//! rename itself survives a power cut (SD cards on a Raspberry Pi lose power often).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::PkiError;

/// Mode for private keys and secrets.
pub const SECRET_MODE: u32 = 0o600;
/// Mode for certificates and other public material.
pub const PUBLIC_MODE: u32 = 0o644;

/// Atomically replaces `path` with `contents`, with exactly `mode` (the umask does not apply),
/// creating missing parent directories.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(|e| PkiError::io("create directory", &dir, e))?;
    let file_name = path
        .file_name()
        .ok_or_else(|| PkiError::io("write", path, io::Error::other("path has no file name")))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = write_then_rename(&tmp, path, contents, mode);
    if result.is_err() {
        // Best effort: a stale temp file is harmless but untidy.
        let _ = fs::remove_file(&tmp);
    }
    result?;
    // Persist the rename. Some filesystems refuse fsync on a directory; the data is safe anyway.
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn write_then_rename(tmp: &Path, path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(tmp)
        .map_err(|e| PkiError::io("create", tmp, e))?;
    // The open mode is filtered by the umask; set it exactly before writing any secret.
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| PkiError::io("set permissions on", tmp, e))?;
    f.write_all(contents)
        .map_err(|e| PkiError::io("write", tmp, e))?;
    f.sync_all().map_err(|e| PkiError::io("sync", tmp, e))?;
    fs::rename(tmp, path).map_err(|e| PkiError::io("rename into place", path, e))
}

/// Reads a file, mapping "does not exist" to `None`.
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, PkiError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(PkiError::io("read", path, e)),
    }
}

/// Reads a UTF-8 text file, mapping "does not exist" to `None`.
pub fn read_optional_string(path: &Path) -> Result<Option<String>, PkiError> {
    match read_optional(path)? {
        None => Ok(None),
        Some(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| PkiError::parse(path.display().to_string(), "file is not UTF-8 text")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_with_exact_mode_and_replaces_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/secret.key");
        write_atomic(&path, b"one", SECRET_MODE).unwrap();
        write_atomic(&path, b"two", SECRET_MODE).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        write_atomic(&path, b"three", PUBLIC_MODE).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        // No temp files left behind.
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("secret.key")]);
    }

    #[test]
    fn missing_file_reads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_optional(&dir.path().join("nope")).unwrap(), None);
    }
}
