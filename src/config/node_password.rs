//! Where the agent keeps its node password: `/etc/rk3s/node/password`
//! (k3s: `/etc/rancher/node/password`), or wherever `RK3S_NODE_PASSWORD_FILE`
//! points (tests, several agents on one machine). An environment setting
//! only, as in k3s, read here with the rest of the configuration.

use std::path::PathBuf;

/// Where the node password is kept unless `RK3S_NODE_PASSWORD_FILE` says otherwise.
pub const DEFAULT_NODE_PASSWORD_FILE: &str = "/etc/rk3s/node/password";
/// The environment variable that moves the node password file.
pub const NODE_PASSWORD_FILE_ENV: &str = "RK3S_NODE_PASSWORD_FILE";

/// The node password file this process uses.
pub fn node_password_file() -> PathBuf {
    std::env::var_os(NODE_PASSWORD_FILE_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_NODE_PASSWORD_FILE))
}
