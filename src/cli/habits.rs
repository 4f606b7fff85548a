//! Run logic of `rk3s snapshot`, `rk3s secrets-encrypt` and `rk3s certificate`.
//! Each works on the data directory's files; the snapshot and key-file work
//! itself is `server::snapshot`'s and `server::encryption`'s.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::habits_args::*;
use crate::server::encryption::{self, keys::KeySet};
use crate::server::snapshot::{self, Paths};

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::FAILURE
}

fn node_name(given: Option<String>) -> String {
    given.unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_ascii_lowercase())
            .unwrap_or_else(|_| "node".into())
    })
}

pub fn snapshot(a: SnapshotArgs) -> ExitCode {
    let paths = Paths::new(&a.data.data_dir, a.dir.as_deref());
    match a.command {
        SnapshotCommand::Save { name, node_name: node } => match snapshot::save(&paths, &name, &node_name(node)) {
            Ok(info) => {
                println!("Snapshot {} saved to {} ({} bytes)", info.name, info.path.display(), info.size);
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        SnapshotCommand::Ls => match snapshot::list(&paths) {
            Ok(list) => {
                print!("{}", snapshot::format_list(&list));
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        SnapshotCommand::Delete { names } => match snapshot::delete(&paths, &names) {
            Ok(gone) => {
                for p in gone {
                    println!("Removed {}", p.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        SnapshotCommand::Prune { snapshot_retention, node_name: node } => {
            match snapshot::prune(&paths, &node_name(node), snapshot_retention.max(1)) {
                Ok(gone) => {
                    for n in gone {
                        println!("Removed {n}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        SnapshotCommand::Restore { snapshot: which } => {
            let path = match snapshot::find(&paths, &which) {
                Ok(p) => p,
                Err(e) => return fail(e),
            };
            match snapshot::restore(&paths, &path) {
                Ok(rev) => {
                    println!(
                        "Restored {} (revision {rev}) into {}; start the server: agents reconnect on their own",
                        path.display(),
                        paths.server_dir.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
    }
}

pub fn secrets_encrypt(a: SecretsEncryptArgs) -> ExitCode {
    let dir = encryption::cred_dir(&a.data.data_dir);
    let current = match encryption::load(&dir) {
        Ok(k) => k,
        Err(e) => return fail(e),
    };
    let next = match (&a.command, &current) {
        (SecretsEncryptCommand::Status { output }, _) => {
            return status(&dir, current.as_ref(), output == "json");
        }
        (SecretsEncryptCommand::Enable, None) => KeySet::generate(),
        (SecretsEncryptCommand::Enable, Some(k)) => k.enable(),
        (SecretsEncryptCommand::Disable, None) => {
            println!("secrets encryption is already disabled");
            return ExitCode::SUCCESS;
        }
        (SecretsEncryptCommand::Disable, Some(k)) => k.disable(),
        (SecretsEncryptCommand::RotateKeys, None) => {
            return fail("secrets encryption is not enabled: run `rk3s secrets-encrypt enable` first");
        }
        (SecretsEncryptCommand::RotateKeys, Some(k)) if !k.enabled() => {
            return fail("secrets encryption is disabled: run `rk3s secrets-encrypt enable` first");
        }
        (SecretsEncryptCommand::RotateKeys, Some(k)) => k.with_new_primary(),
    };
    if let Err(e) = std::fs::create_dir_all(&dir).map_err(|e| e.to_string()).and_then(|_| {
        encryption::save(&dir, &next).map_err(|e| e.to_string())
    }) {
        return fail(e);
    }
    let want = encryption::primary_name(&next);
    if !snapshot::server_running(&a.data.data_dir) {
        println!("Wrote {}; the server re-encrypts every Secret when it next starts", dir.join(encryption::CONFIG_FILE).display());
        return ExitCode::SUCCESS;
    }
    // The running server notices the file within seconds and rewrites every Secret.
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline {
        if let Some(s) = encryption::read_state(&dir) {
            if s.primary == want && s.stage == "reencrypt_finished" {
                println!("Secrets re-encrypted with {want} ({} rewritten)", s.rewritten);
                return ExitCode::SUCCESS;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    fail(format!("the server has not finished re-encrypting with {want} after 5 minutes; see its log"))
}

fn status(dir: &std::path::Path, keys: Option<&KeySet>, json: bool) -> ExitCode {
    let default = KeySet::default();
    let keys = keys.unwrap_or(&default);
    let state = encryption::read_state(dir);
    let stage = state.as_ref().map(|s| s.stage.clone()).unwrap_or_else(|| "start".into());
    let primary = encryption::primary_name(keys);
    let in_sync = state.as_ref().is_none_or(|s| s.primary == primary);
    if json {
        let v = serde_json::json!({
            "enable": keys.enabled(),
            "stage": stage,
            "activeKey": primary,
            "keys": keys.all_keys().iter().map(|k| k.name.clone()).collect::<Vec<_>>(),
            "inSync": in_sync,
        });
        println!("{}", serde_json::to_string_pretty(&v).expect("JSON serialises"));
        return ExitCode::SUCCESS;
    }
    println!("Encryption Status: {}", if keys.enabled() { "Enabled" } else { "Disabled" });
    println!("Current Rotation Stage: {stage}");
    println!(
        "Server Encryption Hashes: {}",
        if in_sync { "All hashes match" } else { "the server has not applied the key file yet" }
    );
    println!();
    println!("Active  Key Type  Name");
    println!("------  --------  ----");
    for k in keys.all_keys() {
        let mark = if Some(&k.name) == keys.primary().map(|p| &p.name) { " *" } else { "  " };
        println!("{mark:<7} AES-GCM   {}", k.name);
    }
    ExitCode::SUCCESS
}

pub fn certificate(a: CertificateArgs) -> ExitCode {
    use crate::pki::lifetimes;
    match a.command {
        CertificateCommand::Check => match lifetimes::check(&a.data.data_dir) {
            Ok(certs) if certs.is_empty() => fail(format!("no certificates under {}", a.data.data_dir.display())),
            Ok(certs) => {
                print!("{}", lifetimes::format_check(&certs, time::OffsetDateTime::now_utc()));
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        CertificateCommand::Rotate { service } => match lifetimes::rotate(&a.data.data_dir, &service) {
            Ok(backups) if backups.is_empty() => fail("no certificates to rotate"),
            Ok(backups) => {
                for b in backups {
                    println!("Moved the old certificates to {}", b.display());
                }
                println!("Restart rk3s (server or agent) to issue new certificates");
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
    }
}
