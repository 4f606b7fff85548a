//! `rk3s kubectl …`: runs the `kubectl` found on `PATH` with every argument
//! passed through unchanged, defaulting `KUBECONFIG` to the admin kubeconfig
//! the server writes. rk3s does not embed kubectl; when `kubectl` is a
//! symlink to rk3s itself, that entry is skipped so the lookup cannot loop.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitCode;

use super::DEFAULT_KUBECONFIG;

pub fn run(args: &[OsString]) -> ExitCode {
    let me = std::env::current_exe()
        .ok()
        .and_then(|p| p.canonicalize().ok());
    let Some(kubectl) = crate::hostos::find_on_path("kubectl", me.as_deref()) else {
        eprintln!(
            "error: kubectl was not found on PATH; rk3s uses the standard kubectl. Install it \
             (Debian: apt-get install kubectl from the Kubernetes apt repository, or see \
             https://kubernetes.io/docs/tasks/tools/) and try again"
        );
        return ExitCode::from(127);
    };
    let mut command = std::process::Command::new(&kubectl);
    command.args(args);
    if std::env::var_os("KUBECONFIG").is_none_or(|v| v.is_empty()) {
        command.env("KUBECONFIG", DEFAULT_KUBECONFIG);
    }
    match command.status() {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => ExitCode::from(code.clamp(0, 255) as u8),
            (None, Some(signal)) => ExitCode::from((128 + signal).clamp(0, 255) as u8),
            (None, None) => ExitCode::FAILURE,
        },
        Err(e) => {
            eprintln!("error: failed to run {}: {e}", kubectl.display());
            ExitCode::from(126)
        }
    }
}
