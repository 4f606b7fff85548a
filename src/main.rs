//! The `rk3s` binary: parse the command line, then hand over to the library.
fn main() -> std::process::ExitCode {
    // containerd spawns this binary as the log shim of every container
    // (`rk3s _RK3S_LOG_SHIM <path>`), so that logs keep flowing while the
    // agent is down. It is caught before clap and before any runtime starts.
    let args: Vec<String> = std::env::args().collect();
    if rk3s::agent::runtime::cri_log::is_log_shim_invocation(&args) {
        return match rk3s::agent::runtime::cri_log::run_log_shim(&args[1..]) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    // `shareProcessNamespace` pods: the agent starts `rk3s _RK3S_PAUSE
    // <pod uid>`, which forks the init of the pod's PID namespace.
    if rk3s::agent::runtime::pause::is_pause_invocation(&args) {
        return match rk3s::agent::runtime::pause::run_pause(&args) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    rk3s::cli::main()
}
