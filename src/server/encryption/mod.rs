//! Secrets encryption at rest (`--secrets-encryption`, `rk3s secrets-encrypt
//! status|enable|disable|rotate-keys`, as k3s has them).
//!
//! Design:
//! - [`transformer::EncryptingStore`] wraps whatever `Store` the server opened
//!   and encrypts values under `/registry/secrets/` with the first provider of
//!   the key set ([`keys`]): AES-256-GCM in kube's `k8s:enc:aesgcm:v1:<key>:`
//!   format. The API server above it never sees ciphertext.
//! - The keys live in `<data-dir>/server/cred/encryption-config.json` (0600,
//!   kube's `EncryptionConfiguration`). `--secrets-encryption` creates it with
//!   a fresh key on the first start; from then on the file decides, so
//!   `enable`/`disable` work without changing flags. No file: plaintext.
//! - The server polls the file (every 2 s, a `stat`): when it changes, the new
//!   key set is swapped in, every Secret not written with the current primary
//!   is rewritten through a compare-and-swap on the inner store (a conflicting
//!   write by a client just means that Secret was rewritten already; it is
//!   re-read and checked again), then keys no longer needed are dropped from
//!   the file and `encryption-state.json` records the stage. The API keeps
//!   serving throughout: rotation needs no restart.
//! - The CLI only edits the file and, when a server is running, waits for the
//!   state file to say the server finished.
//!
//! Invariant: a key leaves the configuration only after no stored Secret
//! uses it.
//!
//! Partial: k3s's staged `prepare`/`rotate`/`reencrypt` subcommands are folded
//! into `rotate-keys`; AES-CBC and KMS providers are not offered (AES-GCM with
//! random nonces: rotate before a key has written ~2^32 values).

pub mod keys;
pub mod transformer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use keys::KeySet;
use transformer::EncryptingStore;

use crate::store::{ListOptions, StoreError};

/// The storage prefix of Secrets.
pub const SECRETS_PREFIX: &str = "/registry/secrets/";
pub const CONFIG_FILE: &str = "encryption-config.json";
pub const STATE_FILE: &str = "encryption-state.json";
const POLL: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum EncryptionError {
    #[error("failed to {action} {}: {reason}", path.display())]
    File { action: &'static str, path: PathBuf, reason: String },
    #[error("{0}")]
    Keys(#[from] keys::KeyError),
    #[error("failed to re-encrypt secrets: {0}")]
    Store(#[from] StoreError),
}

/// `<data-dir>/server/cred/`.
pub fn cred_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("server/cred")
}

/// The key set in `dir`, or `None` when there is no configuration file.
pub fn load(dir: &Path) -> Result<Option<KeySet>, EncryptionError> {
    let path = dir.join(CONFIG_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(KeySet::from_json(&text).map_err(|e| EncryptionError::File {
            action: "read",
            path,
            reason: e.to_string(),
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(EncryptionError::File { action: "read", path, reason: e.to_string() }),
    }
}

/// Writes the key set (0600, atomically).
pub fn save(dir: &Path, keys: &KeySet) -> Result<(), EncryptionError> {
    let path = dir.join(CONFIG_FILE);
    crate::pki::files::write_atomic(&path, keys.to_json().as_bytes(), crate::pki::files::SECRET_MODE)
        .map_err(|e| EncryptionError::File { action: "write", path, reason: e.to_string() })
}

/// What the server last finished, for `status` and the CLI's wait.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// `reencrypt_request` while rewriting, then `reencrypt_finished`.
    pub stage: String,
    /// The primary key name, or `identity`.
    pub primary: String,
    /// Secrets rewritten by the last pass.
    pub rewritten: usize,
}

pub fn read_state(dir: &Path) -> Option<State> {
    serde_json::from_slice(&std::fs::read(dir.join(STATE_FILE)).ok()?).ok()
}

fn write_state(dir: &Path, state: &State) {
    let body = serde_json::to_vec_pretty(state).expect("JSON serialises");
    if let Err(e) = crate::pki::files::write_atomic(&dir.join(STATE_FILE), &body, 0o600) {
        tracing::warn!("failed to record the encryption state: {e}");
    }
}

/// The name `status` prints for a key set's primary.
pub fn primary_name(keys: &KeySet) -> String {
    keys.primary().map(|k| k.name.clone()).unwrap_or_else(|| "identity".into())
}

/// Decides the server's key set at start: the file when present; else, with
/// `--secrets-encryption`, a new file with a fresh key; else plaintext.
pub fn startup_keys(dir: &Path, flag: bool) -> Result<KeySet, EncryptionError> {
    if let Some(keys) = load(dir)? {
        return Ok(keys);
    }
    if !flag {
        return Ok(KeySet::default());
    }
    let keys = KeySet::generate();
    std::fs::create_dir_all(dir).map_err(|e| EncryptionError::File {
        action: "create",
        path: dir.to_path_buf(),
        reason: e.to_string(),
    })?;
    save(dir, &keys)?;
    tracing::info!(file = %dir.join(CONFIG_FILE).display(), "secrets encryption on: created a key");
    Ok(keys)
}

/// Rewrites every Secret not stored with the current primary key. Returns
/// how many were rewritten. Safe while clients write: each rewrite is a CAS.
pub fn reencrypt(store: &EncryptingStore) -> Result<usize, EncryptionError> {
    let inner = store.inner();
    let mut rewritten = 0;
    let mut start_after = None;
    loop {
        let page = inner.list(&ListOptions {
            prefix: store.prefix().to_string(),
            start_after: start_after.clone(),
            limit: Some(200),
            revision: None,
        })?;
        for rec in &page.records {
            let mut current = Some(rec.clone());
            for _ in 0..10 {
                let Some(r) = current.take() else { break };
                let keys = store.keys();
                if keys.is_current(&r.value) {
                    break;
                }
                let plain = keys.decrypt(&r.key, &r.value)?;
                match inner.update(&r.key, &keys.encrypt(&r.key, &plain)?, r.mod_revision) {
                    Ok(_) => rewritten += 1,
                    Err(StoreError::Conflict { .. }) => current = inner.get(&r.key)?,
                    Err(StoreError::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        start_after = page.records.last().map(|r| r.key.clone());
        if page.remaining == 0 || start_after.is_none() {
            return Ok(rewritten);
        }
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Applies a changed key set: swap, rewrite, drop unneeded keys, record.
fn apply(store: &EncryptingStore, dir: &Path, keys: KeySet) -> Result<(), EncryptionError> {
    let primary = primary_name(&keys);
    write_state(dir, &State { stage: "reencrypt_request".into(), primary: primary.clone(), rewritten: 0 });
    store.set_keys(keys.clone());
    let rewritten = reencrypt(store)?;
    let pruned = keys.pruned();
    if pruned != keys {
        save(dir, &pruned)?;
        store.set_keys(pruned);
    }
    tracing::info!(primary = %primary, rewritten, "secrets re-encrypted");
    write_state(dir, &State { stage: "reencrypt_finished".into(), primary, rewritten });
    Ok(())
}

/// The server's loop: a pass at start, then one whenever the file changes.
pub async fn run(store: Arc<EncryptingStore>, dir: PathBuf, shutdown: CancellationToken) {
    let path = dir.join(CONFIG_FILE);
    let mut seen: Option<Option<SystemTime>> = None;
    loop {
        let now = modified(&path);
        if seen != Some(now) {
            seen = Some(now);
            let (s, d) = (store.clone(), dir.clone());
            let result = tokio::task::spawn_blocking(move || {
                match load(&d)? {
                    Some(keys) => apply(&s, &d, keys),
                    None => Ok(()),
                }
            })
            .await;
            match result {
                Ok(Ok(())) => seen = Some(modified(&path)),
                Ok(Err(e)) => tracing::error!("secrets encryption: {e}"),
                Err(e) => tracing::error!("secrets encryption task failed: {e}"),
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

#[cfg(test)]
mod tests;
