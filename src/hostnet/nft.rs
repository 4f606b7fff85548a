//! The nftables boundary: a [`Firewall`] applies an `nft -f` script as one
//! transaction. [`NftFirewall`] runs the `nft` binary inside a chosen
//! network namespace; `FakeFirewall` records scripts for unit tests (it is
//! compiled only for them).
//!
//! Each subsystem owns its own table and never touches another's, so a
//! script replaces or edits exactly one table.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
#[cfg(test)]
use std::sync::Mutex;

use async_trait::async_trait;

use super::netns;

/// The mark kube-proxy (and our service proxy) sets on packets it will
/// masquerade itself; the overlay's masquerade rules leave them alone.
pub const MASQUERADE_MARK: u32 = 0x4000;

/// Why an nftables transaction failed.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("failed to run {binary} -f -: {source}")]
    Spawn {
        binary: String,
        #[source]
        source: io::Error,
    },
    #[error("failed to apply the nftables ruleset: nft exited with {status}: {stderr}")]
    Rejected { status: String, stderr: String },
}

/// The firewall boundary: apply a script.
#[async_trait]
pub trait Firewall: Send + Sync {
    /// Applies `script` (nft syntax) as one transaction.
    async fn apply(&self, script: &str) -> Result<(), NftError>;
}

/// [`Firewall`] through the `nft` binary, run inside a given network
/// namespace (the process's own when `None`).
#[derive(Debug, Clone)]
pub struct NftFirewall {
    host_netns: Option<PathBuf>,
    binary: PathBuf,
}

impl NftFirewall {
    pub fn new(host_netns: Option<PathBuf>) -> Self {
        Self {
            host_netns,
            binary: PathBuf::from("nft"),
        }
    }

    /// Uses `binary` instead of `nft` from PATH.
    pub fn with_binary(mut self, binary: PathBuf) -> Self {
        self.binary = binary;
        self
    }
}

#[async_trait]
impl Firewall for NftFirewall {
    async fn apply(&self, script: &str) -> Result<(), NftError> {
        let binary = self.binary.clone();
        let script = script.to_string();
        // The child inherits the namespace of the thread that spawns it.
        let output = netns::run_in(self.host_netns.clone(), move || {
            let mut child = Command::new(&binary)
                .args(["-f", "-"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()?;
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(script.as_bytes())?;
            }
            child.wait_with_output()
        })
        .await
        .map_err(|source| NftError::Spawn {
            binary: self.binary.display().to_string(),
            source,
        })?;
        if !output.status.success() {
            return Err(NftError::Rejected {
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        Ok(())
    }
}

/// A [`Firewall`] that records every script it is given (unit tests only).
#[cfg(test)]
#[derive(Default)]
pub struct FakeFirewall {
    applied: Mutex<Vec<String>>,
}

#[cfg(test)]
impl FakeFirewall {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every script applied, in order.
    pub fn applied(&self) -> Vec<String> {
        self.applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[cfg(test)]
#[async_trait]
impl Firewall for FakeFirewall {
    async fn apply(&self, script: &str) -> Result<(), NftError> {
        self.applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(script.to_string());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failing_nft_reports_its_stderr() {
        let fw = NftFirewall::new(None).with_binary(PathBuf::from("/bin/sh"));
        // `sh -f -` reads the script from stdin: make it fail loudly.
        let err = fw
            .apply("echo 'syntax error, unexpected junk' >&2; exit 1")
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("syntax error, unexpected junk"), "{msg}");
    }

    #[tokio::test]
    async fn the_fake_records_scripts_in_order() {
        let fw = FakeFirewall::new();
        fw.apply("a").await.unwrap();
        fw.apply("b").await.unwrap();
        assert_eq!(fw.applied(), vec!["a".to_string(), "b".to_string()]);
    }
}
