//! Flag definitions of `rk3s snapshot`, `rk3s secrets-encrypt` and
//! `rk3s certificate` (k3s's `etcd-snapshot`, `secrets-encrypt` and
//! `certificate`). Run logic is in `cli::habits`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::config::DEFAULT_DATA_DIR;

#[derive(Debug, Args)]
pub struct DataDirArg {
    /// Directory holding all state.
    #[arg(short = 'd', long, env = "RK3S_DATA_DIR", value_name = "DIR", default_value = DEFAULT_DATA_DIR, global = true)]
    pub data_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    pub command: SnapshotCommand,
    #[command(flatten)]
    pub data: DataDirArg,
    /// Directory of snapshots [default: DATA_DIR/server/db/snapshots].
    #[arg(long, env = "RK3S_SNAPSHOT_DIR", value_name = "DIR", global = true)]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Take a snapshot of the datastore now (also while the server runs).
    Save {
        /// Snapshot name prefix; the node name and a timestamp are appended.
        #[arg(long, default_value = crate::server::snapshot::ON_DEMAND_NAME)]
        name: String,
        /// Node name in the file name [default: the hostname].
        #[arg(long, env = "RK3S_NODE_NAME")]
        node_name: Option<String>,
    },
    /// List snapshots.
    #[command(alias = "list")]
    Ls,
    /// Delete snapshots by name.
    #[command(alias = "rm")]
    Delete {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Delete the oldest scheduled snapshots of this node beyond the retention.
    Prune {
        #[arg(long, default_value = crate::config::habits::DEFAULT_SNAPSHOT_RETENTION)]
        snapshot_retention: usize,
        /// Node name [default: the hostname].
        #[arg(long, env = "RK3S_NODE_NAME")]
        node_name: Option<String>,
    },
    /// Replace the datastore (and PKI, token, encryption keys) with a snapshot; the server must be stopped.
    Restore {
        /// Snapshot name (see `ls`) or path.
        snapshot: String,
    },
}

#[derive(Debug, Args)]
pub struct SecretsEncryptArgs {
    #[command(subcommand)]
    pub command: SecretsEncryptCommand,
    #[command(flatten)]
    pub data: DataDirArg,
}

#[derive(Debug, Subcommand)]
pub enum SecretsEncryptCommand {
    /// Print whether Secrets are encrypted, the rotation stage and the keys.
    Status {
        /// Output format.
        #[arg(short, long, default_value = "text", value_parser = ["text", "json"])]
        output: String,
    },
    /// Encrypt Secrets from now on and rewrite the stored ones.
    Enable,
    /// Store Secrets in plaintext from now on and rewrite the stored ones.
    Disable,
    /// Add a new key, re-encrypt every Secret with it, then drop the old key.
    RotateKeys,
}

#[derive(Debug, Args)]
pub struct CertificateArgs {
    #[command(subcommand)]
    pub command: CertificateCommand,
    #[command(flatten)]
    pub data: DataDirArg,
}

#[derive(Debug, Subcommand)]
pub enum CertificateCommand {
    /// List each certificate with its expiry.
    Check,
    /// Move leaf certificates aside so the next start issues new ones (CAs are kept).
    Rotate {
        /// Only these: admin, api-server, controller-manager, scheduler, rk3s-controller, kubelet
        /// (repeatable, or comma-separated) [default: all].
        #[arg(short, long, value_delimiter = ',')]
        service: Vec<String>,
    },
}
