//! The `rk3s` command line: parse, resolve the configuration, build the
//! tokio runtime and hand over to `server`, `agent`, `check_config` or kubectl.
//!
//! Flag definitions live in [`args`]; this module holds the run logic.
//! Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error.
//! `rk3s token …` lives in [`token`].

pub mod args;
mod habits;
pub mod habits_args;
mod kubectl;
pub mod token;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, CommandFactory, FromArgMatches};
use tokio_util::sync::CancellationToken;

pub use args::Cli;
use args::Command;

use crate::config::{AgentConfig, ConfigError, Kind, ServerConfig, Settings, Source};
use crate::process;

/// Exit code for usage and configuration errors (clap uses 2 as well).
const USAGE_ERROR: u8 = 2;

/// Flags that steer the command itself and are not configuration.
const NOT_CONFIG: [&str; 4] = ["config", "print-config", "help", "version"];

/// The binary's entry point.
pub fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    // Installed as a `kubectl` symlink: behave as `rk3s kubectl`.
    if argv
        .first()
        .and_then(|a| Path::new(a).file_name())
        .is_some_and(|n| n == "kubectl")
    {
        return kubectl::run(&argv[1..]);
    }
    let matches = match Cli::command().try_get_matches_from(&argv) {
        Ok(m) => m,
        Err(e) => e.exit(),
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let sub = matches.subcommand().map(|(_, m)| m);
    match cli.command {
        Command::Server(a) => {
            let sub = sub.expect("the server subcommand matched");
            match resolve("server", sub, &a.config).and_then(|s| ServerConfig::resolve(&s)) {
                Ok(c) if a.print_config => print_and_exit(c.to_yaml()),
                Ok(c) => run_server(c),
                Err(e) => usage_error(&e),
            }
        }
        Command::Agent(a) => {
            let sub = sub.expect("the agent subcommand matched");
            match resolve("agent", sub, &a.config).and_then(|s| AgentConfig::resolve(&s)) {
                Ok(c) if a.print_config => print_and_exit(c.to_yaml()),
                Ok(c) => run_agent(c),
                Err(e) => usage_error(&e),
            }
        }
        Command::Token(t) => token::run(t.command),
        Command::Datastore(d) => datastore_command(d.command),
        Command::CheckConfig => crate::check_config::main(),
        Command::Snapshot(a) => habits::snapshot(a),
        Command::SecretsEncrypt(a) => habits::secrets_encrypt(a),
        Command::Certificate(a) => habits::certificate(a),
        Command::UninstallNetwork { cluster_cidr } => crate::overlay::uninstall::main(&cluster_cidr),
        Command::Kubectl { args } => kubectl::run(&args),
        Command::Completion { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "rk3s", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
    }
}

fn print_and_exit(yaml: String) -> ExitCode {
    print!("{yaml}");
    ExitCode::SUCCESS
}

fn usage_error(e: &ConfigError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(USAGE_ERROR)
}

/// Builds the layered settings of subcommand `name`: flags and environment
/// from `matches`, then the config file underneath.
fn resolve(name: &str, matches: &ArgMatches, config_file: &Path) -> Result<Settings, ConfigError> {
    let cmd = Cli::command();
    let sub = cmd.find_subcommand(name).expect("the subcommand exists");
    let mut settings = Settings::new();
    let mut known = BTreeMap::new();
    for arg in sub.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if NOT_CONFIG.contains(&long) {
            continue;
        }
        let kind = match arg.get_action() {
            ArgAction::SetTrue => Kind::Bool,
            ArgAction::Append => Kind::Repeated,
            _ => Kind::Single,
        };
        known.insert(long.to_string(), kind);
        let id = arg.get_id().as_str();
        let source = match matches.value_source(id) {
            Some(ValueSource::CommandLine) => Source::Flag,
            Some(ValueSource::EnvVariable) => Source::Env(
                arg.get_env()
                    .map(|e| e.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ),
            // Defaults are applied by `config`, below the file.
            _ => continue,
        };
        let values = if kind == Kind::Bool {
            vec![matches.get_flag(id).to_string()]
        } else {
            matches
                .get_raw(id)
                .into_iter()
                .flatten()
                .map(|v| v.to_string_lossy().into_owned())
                .collect()
        };
        settings.set(long, values, source);
    }
    let explicit = matches!(
        matches.value_source("config"),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    );
    settings.layer_file(config_file, explicit, &known)?;
    Ok(settings)
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("rk3s")
        .build()
}

/// Runs `work` on a fresh runtime with logging and the signal handler set up.
fn run_service<E: std::fmt::Display>(
    debug: bool,
    work: impl FnOnce(
        CancellationToken,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), E>> + Send>>,
) -> ExitCode {
    process::init_logging(debug);
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: failed to start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    let result = rt.block_on(async {
        if let Err(e) = process::spawn_signal_handler(shutdown.clone(), process::SHUTDOWN_GRACE) {
            eprintln!("error: failed to install signal handlers: {e}");
            return Err(None);
        }
        work(shutdown.clone()).await.map_err(Some)
    });
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Some(e)) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
        Err(None) => ExitCode::FAILURE,
    }
}

fn run_server(config: ServerConfig) -> ExitCode {
    run_service(config.debug, |shutdown| {
        Box::pin(crate::server::run(config, shutdown))
    })
}

fn run_agent(config: AgentConfig) -> ExitCode {
    run_service(config.debug, |shutdown| {
        Box::pin(crate::agent::run(config, shutdown))
    })
}

/// `rk3s datastore …`.
fn datastore_command(command: args::DatastoreCommand) -> ExitCode {
    let args::DatastoreCommand::Migrate { data_dir, datastore: d } = command;
    let Some(endpoint) = d.datastore_endpoint.as_deref() else {
        eprintln!("error: --datastore-endpoint is required: the etcd to copy the SQLite datastore into");
        return ExitCode::from(USAGE_ERROR);
    };
    let target = match crate::config::EtcdEndpoints::from_flags(
        endpoint,
        d.datastore_cafile.as_deref(),
        d.datastore_certfile.as_deref(),
        d.datastore_keyfile.as_deref(),
    ) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(USAGE_ERROR);
        }
    };
    process::init_logging(false);
    match crate::server::migrate::run(Path::new(&data_dir), &target) {
        Ok(n) => {
            println!("copied {n} objects from {data_dir}/server/db into etcd; start the server with --datastore-endpoint {endpoint}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The default kubeconfig `rk3s kubectl` uses when `KUBECONFIG` is unset.
pub const DEFAULT_KUBECONFIG: &str = crate::config::DEFAULT_WRITE_KUBECONFIG;


#[cfg(test)]
mod tests {
    use super::*;

    fn settings_for(argv: &[&str], file: Option<&str>) -> Result<Settings, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        if let Some(text) = file {
            std::fs::write(&path, text).unwrap();
        }
        let matches = Cli::command().try_get_matches_from(argv).unwrap();
        let (name, sub) = matches.subcommand().unwrap();
        resolve(name, sub, &path)
    }

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let s = settings_for(
            &[
                "rk3s",
                "server",
                "--cluster-cidr",
                "10.9.0.0/16",
                "--disable",
                "coredns,servicelb",
                "--debug",
            ],
            Some("cluster-cidr: 10.1.0.0/16\nservice-cidr: 10.2.0.0/16\ncluster-dns: 10.2.0.10\n"),
        )
        .unwrap();
        let c = ServerConfig::resolve(&s).unwrap();
        assert_eq!(c.cluster_cidr.to_string(), "10.9.0.0/16");
        assert_eq!(c.service_cidr.to_string(), "10.2.0.0/16");
        assert_eq!(c.disable.len(), 2);
        assert!(c.debug);
        assert_eq!(c.https_listen_port, 6443);
    }

    #[test]
    fn file_keys_are_checked_against_the_subcommand() {
        let err =
            settings_for(&["rk3s", "agent"], Some("cluster-cidr: 10.1.0.0/16\n")).unwrap_err();
        assert!(
            err.to_string().contains("unknown key \"cluster-cidr\""),
            "{err}"
        );
        let err = settings_for(&["rk3s", "server"], Some("config: /x\n")).unwrap_err();
        assert!(err.to_string().contains("unknown key \"config\""), "{err}");
        let err = settings_for(&["rk3s", "server"], Some("debug: maybe\n")).unwrap_err();
        assert!(err.to_string().contains("true or false"), "{err}");
    }

    #[test]
    fn repeatable_flags_accumulate() {
        let s = settings_for(
            &[
                "rk3s",
                "server",
                "--tls-san",
                "a.example",
                "--tls-san",
                "b.example,c.example",
            ],
            None,
        )
        .unwrap();
        assert_eq!(s.get("tls-san").unwrap().values.len(), 3);
    }
}
