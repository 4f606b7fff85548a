//! Shared cluster secrets in the datastore (k3s's "bootstrap data"), so that
//! every server on one etcd serves with the same PKI.
//!
//! What is shared: the server and client CAs (certificate and key), the
//! service-account signing key and the secrets-encryption config
//! ([`SHARED_FILES`], paths under `<data-dir>/server/`). The join token's
//! secret is the passphrase, so it is shared by construction: a server that
//! can read the record was given the same token. Not shared: each server's
//! serving certificate (its own IPs and SANs) and its client certificates,
//! issued locally from the shared CAs.
//!
//! Format: one key, `/bootstrap/<first 12 hex of sha256(secret)>` (k3s's
//! layout), holding JSON `{version, salt, nonce, ciphertext}`; the plaintext
//! is a JSON map from file path to base64 content, sealed with AES-256-GCM
//! under a key derived from the token secret with PBKDF2-HMAC-SHA256
//! ([`PBKDF2_ROUNDS`], random salt); the record's key is the AAD.
//!
//! At start, on etcd only (one SQLite server has nobody to share with):
//! 1. [`download`] before the PKI loads: if the record exists, its files
//!    replace the local ones; when a CA changed, the local leaf certificates
//!    it signed are removed so the PKI issues them afresh. A record that does
//!    not open with this token, or another cluster's record, is a clear error.
//! 2. [`publish`] once the PKI and the encryption config exist: creates the
//!    record, or updates it (CAS) when this start added a shared file.
//!
//! **Architecture invariant:** the datastore never holds a shared secret in
//! clear, and the datastore's copy wins over a server's local files at start.
//!
//! Two first servers starting at once: one `create` wins; the other gets a
//! clear error and, restarted (systemd does), takes the winner's PKI.
//! Partial: a secrets-encryption key rotated on one server reaches the others
//! at their next start.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::Path;

use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use serde::{Deserialize, Serialize};

use crate::store::{ListOptions, Store, StoreError};

/// Where every cluster's bootstrap record lives.
pub const PREFIX: &str = "/bootstrap/";

/// Files (under `<data-dir>/server/`) every server must share.
pub const SHARED_FILES: &[&str] = &[
    "tls/server-ca.crt",
    "tls/server-ca.key",
    "tls/client-ca.crt",
    "tls/client-ca.key",
    "tls/service.key",
    "cred/encryption-config.json",
];

/// PBKDF2 rounds: about 0.1 s on a Raspberry Pi 4, once per start.
pub const PBKDF2_ROUNDS: u32 = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("failed to read the cluster's bootstrap data: {0}")]
    Store(#[from] StoreError),
    #[error("failed to open the cluster's bootstrap data in the datastore: --token does not match the token of the servers already using this datastore (give the token in <data-dir>/server/token of the first server)")]
    WrongToken,
    #[error("failed to {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("failed to publish the bootstrap data: another server initialised this datastore at the same time; restart this server to take its certificates")]
    Raced,
    #[error("failed to decode the bootstrap data: {0}")]
    Corrupt(String),
}

/// The stored record.
#[derive(Serialize, Deserialize)]
struct Sealed {
    version: u32,
    salt: String,
    nonce: String,
    ciphertext: String,
}

/// The record's key for a token secret.
pub fn key_for(secret: &str) -> String {
    use sha2::Digest;
    let hash = hex::encode(sha2::Sha256::digest(secret.as_bytes()));
    format!("{PREFIX}{}", &hash[..12])
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn derive(secret: &str, salt: &[u8]) -> LessSafeKey {
    let mut key = [0u8; 32];
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA256,
        NonZeroU32::new(PBKDF2_ROUNDS).expect("nonzero"),
        salt,
        secret.as_bytes(),
        &mut key,
    );
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).expect("a 32-byte key"))
}

fn random_bytes<const N: usize>() -> [u8; N] {
    use ring::rand::SecureRandom;
    let mut out = [0u8; N];
    ring::rand::SystemRandom::new().fill(&mut out).expect("the OS random source failed");
    out
}

/// Seals `files` (path → content) for `secret`.
pub fn seal(secret: &str, files: &BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    let plain: BTreeMap<&String, String> = files.iter().map(|(k, v)| (k, b64().encode(v))).collect();
    let mut buf = serde_json::to_vec(&plain).expect("a map serializes");
    let salt = random_bytes::<16>();
    let nonce = random_bytes::<12>();
    derive(secret, &salt)
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(key_for(secret).as_bytes()),
            &mut buf,
        )
        .expect("sealing cannot fail for a small buffer");
    let sealed = Sealed {
        version: 1,
        salt: b64().encode(salt),
        nonce: b64().encode(nonce),
        ciphertext: b64().encode(buf),
    };
    serde_json::to_vec(&sealed).expect("serializes")
}

/// Opens a record sealed by [`seal`]; a wrong secret is [`BootstrapError::WrongToken`].
pub fn open(secret: &str, value: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, BootstrapError> {
    let corrupt = |e: &dyn std::fmt::Display| BootstrapError::Corrupt(e.to_string());
    let sealed: Sealed = serde_json::from_slice(value).map_err(|e| corrupt(&e))?;
    let salt = b64().decode(&sealed.salt).map_err(|e| corrupt(&e))?;
    let nonce: [u8; 12] = b64()
        .decode(&sealed.nonce)
        .map_err(|e| corrupt(&e))?
        .try_into()
        .map_err(|_| corrupt(&"a nonce of the wrong length"))?;
    let mut buf = b64().decode(&sealed.ciphertext).map_err(|e| corrupt(&e))?;
    let plain = derive(secret, &salt)
        .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(key_for(secret).as_bytes()), &mut buf)
        .map_err(|_| BootstrapError::WrongToken)?;
    let map: BTreeMap<String, String> = serde_json::from_slice(plain).map_err(|e| corrupt(&e))?;
    map.into_iter()
        .map(|(k, v)| Ok((k, b64().decode(v).map_err(|e| corrupt(&e))?)))
        .collect()
}

/// The shared files present under `server_dir`.
fn local_files(server_dir: &Path) -> Result<BTreeMap<String, Vec<u8>>, BootstrapError> {
    let mut out = BTreeMap::new();
    for rel in SHARED_FILES {
        let path = server_dir.join(rel);
        match std::fs::read(&path) {
            Ok(body) => {
                out.insert(rel.to_string(), body);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(BootstrapError::Io { action: "read", path, source }),
        }
    }
    Ok(out)
}

/// What [`download`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Downloaded {
    /// No record yet: this server founds the cluster's PKI.
    Nothing,
    /// The record's files are in place (`changed`: some differed locally).
    Applied { changed: bool },
}

/// Step 1: takes the cluster's shared files from the datastore, if any.
pub fn download(store: &dyn Store, secret: &str, server_dir: &Path) -> Result<Downloaded, BootstrapError> {
    let key = key_for(secret);
    let Some(rec) = store.get(&key)? else {
        let others = store.list(&ListOptions { prefix: PREFIX.into(), limit: Some(1), ..Default::default() })?;
        if !others.records.is_empty() {
            return Err(BootstrapError::WrongToken);
        }
        return Ok(Downloaded::Nothing);
    };
    let files = open(secret, &rec.value)?;
    let local = local_files(server_dir)?;
    let ca_changed = files
        .iter()
        .any(|(k, v)| k.starts_with("tls/") && k.contains("-ca.") && local.get(k) != Some(v));
    if ca_changed {
        remove_leaf_certificates(&server_dir.join("tls"))?;
    }
    let mut changed = false;
    for (rel, body) in &files {
        if !SHARED_FILES.contains(&rel.as_str()) || local.get(rel) == Some(body) {
            continue;
        }
        let path = server_dir.join(rel);
        let mode = if rel.ends_with(".crt") { 0o644 } else { 0o600 };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| BootstrapError::Io { action: "create", path: dir.into(), source })?;
        }
        crate::pki::files::write_atomic(&path, body, mode).map_err(|e| BootstrapError::Io {
            action: "write",
            path: path.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        changed = true;
    }
    if changed {
        tracing::info!(key = %key, "took the cluster's CAs and keys from the datastore");
    }
    Ok(Downloaded::Applied { changed })
}

/// Removes every certificate and key in `tls` that is not shared (the
/// serving and client leaves signed by a CA that is being replaced).
fn remove_leaf_certificates(tls: &Path) -> Result<(), BootstrapError> {
    let Ok(entries) = std::fs::read_dir(tls) else { return Ok(()) };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let shared = SHARED_FILES.iter().any(|f| f.strip_prefix("tls/") == Some(name.as_str()));
        let cert_or_key = name.ends_with(".crt") || name.ends_with(".key") || name.ends_with(".pub");
        if cert_or_key && !shared {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(|source| BootstrapError::Io { action: "remove", path, source })?;
        }
    }
    Ok(())
}

/// Step 2: stores the shared files, creating the record or bringing it up to
/// date with what this start added (CAS on the record's revision).
pub fn publish(store: &dyn Store, secret: &str, server_dir: &Path) -> Result<(), BootstrapError> {
    let key = key_for(secret);
    let local = local_files(server_dir)?;
    match store.get(&key)? {
        None => match store.create(&key, &seal(secret, &local)) {
            Ok(_) => {
                tracing::info!(key = %key, "stored the cluster's CAs and keys in the datastore (encrypted with the token)");
                Ok(())
            }
            Err(StoreError::AlreadyExists { .. }) => Err(BootstrapError::Raced),
            Err(e) => Err(e.into()),
        },
        Some(rec) => {
            let stored = open(secret, &rec.value)?;
            let ca_differs = stored
                .iter()
                .any(|(k, v)| k.contains("-ca.") && local.get(k).is_some_and(|l| l != v));
            if ca_differs {
                return Err(BootstrapError::Raced);
            }
            let mut merged = stored.clone();
            merged.extend(local);
            if merged == stored {
                return Ok(());
            }
            match store.update(&key, &seal(secret, &merged), rec.mod_revision) {
                Ok(_) => Ok(()),
                Err(StoreError::Conflict { .. }) => Err(BootstrapError::Raced),
                Err(e) => Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{SqliteStore, StoreOptions};

    fn store(dir: &Path) -> SqliteStore {
        SqliteStore::open(&dir.join("db"), StoreOptions::default()).unwrap()
    }

    fn write(dir: &Path, rel: &str, body: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }

    #[test]
    fn sealed_data_opens_with_the_token_only_and_never_holds_secrets_in_clear() {
        let files: BTreeMap<String, Vec<u8>> = [("tls/server-ca.key".to_string(), b"PRIVATE KEY".to_vec())].into();
        let sealed = seal("s3cret", &files);
        assert!(!String::from_utf8_lossy(&sealed).contains("PRIVATE"));
        assert_eq!(open("s3cret", &sealed).unwrap(), files);
        assert!(matches!(open("other", &sealed), Err(BootstrapError::WrongToken)));
        assert!(key_for("s3cret").starts_with("/bootstrap/") && key_for("s3cret").len() == PREFIX.len() + 12);
    }

    #[test]
    fn a_second_server_takes_the_first_servers_cas_and_drops_its_stale_leaves() {
        let tmp = tempfile::tempdir().unwrap();
        let db = store(tmp.path());
        let (first, second) = (tmp.path().join("a"), tmp.path().join("b"));
        for f in SHARED_FILES.iter().take(5) {
            write(&first, f, &format!("first {f}"));
        }
        assert_eq!(download(&db, "tok", &first).unwrap(), Downloaded::Nothing);
        publish(&db, "tok", &first).unwrap();

        write(&second, "tls/server-ca.crt", "second's own CA");
        write(&second, "tls/serving-kube-apiserver.crt", "signed by second's CA");
        assert_eq!(download(&db, "tok", &second).unwrap(), Downloaded::Applied { changed: true });
        for f in SHARED_FILES.iter().take(5) {
            assert_eq!(std::fs::read_to_string(second.join(f)).unwrap(), format!("first {f}"));
        }
        assert!(!second.join("tls/serving-kube-apiserver.crt").exists());
        // An encryption config added later reaches the record.
        write(&second, "cred/encryption-config.json", "{}");
        publish(&db, "tok", &second).unwrap();
        let rec = db.get(&key_for("tok")).unwrap().unwrap();
        assert!(open("tok", &rec.value).unwrap().contains_key("cred/encryption-config.json"));
        assert_eq!(download(&db, "tok", &first).unwrap(), Downloaded::Applied { changed: true });
        assert_eq!(download(&db, "tok", &first).unwrap(), Downloaded::Applied { changed: false });
    }

    #[test]
    fn a_wrong_token_or_a_racing_founder_gets_a_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        let db = store(tmp.path());
        let (first, second) = (tmp.path().join("a"), tmp.path().join("b"));
        write(&first, "tls/server-ca.crt", "A");
        publish(&db, "tok", &first).unwrap();
        let err = download(&db, "not-the-token", &second).unwrap_err();
        assert!(matches!(err, BootstrapError::WrongToken), "{err}");
        assert!(err.to_string().contains("--token does not match"), "{err}");
        write(&second, "tls/server-ca.crt", "B");
        assert!(matches!(publish(&db, "tok", &second), Err(BootstrapError::Raced)));
    }
}
