//! `rk3s server` as a plain local process on loopback (no agent, no network
//! namespace): the real binary started as a user starts it, for tests that
//! stop, restart or signal it.

use std::path::Path;
use std::process::Command;

/// The binary under test.
pub const RK3S: &str = env!("CARGO_BIN_EXE_rk3s");

/// A TCP port on 127.0.0.1 that was free when asked.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `rk3s server --disable-agent` (node `t1`) on 127.0.0.1:`port`, its data
/// dir `data`, writing its admin kubeconfig to `kubeconfig`, with `extra`
/// flags. The settings a developer's environment may carry (config file,
/// token, datastore endpoint, systemd's NOTIFY_SOCKET) are cleared, so the
/// flags alone decide. The caller sets stdio and spawns it.
pub fn server_command(data: &Path, kubeconfig: &Path, port: u16, extra: &[&str]) -> Command {
    let mut cmd = Command::new(RK3S);
    cmd.args(["server", "--node-name", "t1", "--bind-address", "127.0.0.1", "--disable-agent"])
        .args(["--https-listen-port", &port.to_string()])
        .arg("--data-dir")
        .arg(data)
        .arg("--write-kubeconfig")
        .arg(kubeconfig)
        .args(extra)
        .env("RK3S_CONFIG_FILE", "/dev/null")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("RK3S_TOKEN")
        .env_remove("RK3S_TOKEN_FILE")
        .env_remove("RK3S_DATASTORE_ENDPOINT");
    cmd
}
