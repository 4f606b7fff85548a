//! Flag definitions (like k3s's `pkg/cli/cmds`): names, short forms,
//! environment variables, defaults and help. No run logic lives here.
//!
//! Server and agent values are *not* read from these structs: `cli::settings`
//! reads them generically from the matches (so each value keeps its source
//! and the config file can fill the gaps), and `config` parses and validates.
//! Every server/agent flag has an `RK3S_<UPPER_SNAKE>` variable and a
//! config file key equal to its long name.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand};

use crate::config::{
    DEFAULT_BIND_ADDRESS, DEFAULT_CLUSTER_CIDR, DEFAULT_CLUSTER_DNS, DEFAULT_CLUSTER_DOMAIN,
    DEFAULT_CONFIG_FILE, DEFAULT_CONTAINER_RUNTIME_ENDPOINT, DEFAULT_DATA_DIR,
    DEFAULT_FLANNEL_BACKEND, DEFAULT_HTTPS_LISTEN_PORT, DEFAULT_INGRESS_HTTPS_PORT,
    DEFAULT_INGRESS_HTTP_PORT, DEFAULT_PRIVATE_REGISTRY, DEFAULT_RUN_DIR,
    DEFAULT_SERVICE_CIDR, DEFAULT_SERVICE_NODE_PORT_RANGE, DEFAULT_WRITE_KUBECONFIG,
    DEFAULT_WRITE_KUBECONFIG_MODE,
};

/// rk3s: lightweight Kubernetes in a single binary, for Raspberry Pis and small Linux machines.
#[derive(Debug, Parser)]
#[command(name = "rk3s", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a control-plane node (API server, datastore, controllers, and an agent).
    Server(Box<ServerArgs>),
    /// Run a worker node that joins a server.
    Agent(Box<AgentArgs>),
    /// Manage the bootstrap tokens nodes join with.
    Token(TokenArgs),
    /// Manage the datastore (e.g. move a SQLite cluster to etcd).
    Datastore(DatastoreCmd),
    /// Check that this machine can run rk3s (kernel, cgroups, modules, ports, binaries).
    CheckConfig,
    /// Datastore snapshots: save, ls, delete, prune, restore (k3s's etcd-snapshot).
    #[command(alias = "etcd-snapshot")]
    Snapshot(super::habits_args::SnapshotArgs),
    /// Secrets encryption at rest: status, enable, disable, rotate-keys.
    SecretsEncrypt(super::habits_args::SecretsEncryptArgs),
    /// Certificate lifetimes: check, rotate.
    Certificate(super::habits_args::CertificateArgs),
    /// Remove the pod overlay from this machine: flannel.1, the routes into the cluster CIDR
    /// with a gateway, and the nftables table ip rk3s (for uninstall scripts; run with rk3s stopped).
    UninstallNetwork {
        /// The cluster's pod range (the server's --cluster-cidr).
        #[arg(long, default_value = DEFAULT_CLUSTER_CIDR)]
        cluster_cidr: String,
    },
    /// Run kubectl against this cluster (KUBECONFIG defaults to /etc/rk3s/rk3s.yaml).
    #[command(disable_help_flag = true, disable_version_flag = true)]
    Kubectl {
        /// Arguments passed to kubectl unchanged.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<OsString>,
    },
    /// Print a shell completion script, e.g. `rk3s completion bash > /etc/bash_completion.d/rk3s`.
    Completion {
        /// The shell to generate completions for.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Load flags from this YAML file (keys are the long flag names).
    #[arg(short = 'c', long, env = "RK3S_CONFIG_FILE", value_name = "FILE", default_value = DEFAULT_CONFIG_FILE)]
    pub config: PathBuf,
    /// Print the resolved configuration as YAML and exit.
    #[arg(long, hide = true)]
    pub print_config: bool,
    /// Directory holding all state.
    #[arg(short = 'd', long, env = "RK3S_DATA_DIR", value_name = "DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: String,
    /// Address the HTTPS listener binds to.
    #[arg(long, env = "RK3S_BIND_ADDRESS", value_name = "IP", default_value = DEFAULT_BIND_ADDRESS)]
    pub bind_address: String,
    /// Port of the HTTPS listener (API and join).
    #[arg(long, env = "RK3S_HTTPS_LISTEN_PORT", value_name = "PORT", default_value = DEFAULT_HTTPS_LISTEN_PORT)]
    pub https_listen_port: String,
    /// Address advertised to cluster members [default: the node IP].
    #[arg(long, env = "RK3S_ADVERTISE_ADDRESS", value_name = "IP")]
    pub advertise_address: Option<String>,
    /// Extra hostname or IP for the serving certificate (repeatable, or comma-separated).
    #[arg(long, env = "RK3S_TLS_SAN", value_name = "NAME", value_delimiter = ',')]
    pub tls_san: Vec<String>,
    /// Pod network range.
    #[arg(long, env = "RK3S_CLUSTER_CIDR", value_name = "CIDR", default_value = DEFAULT_CLUSTER_CIDR)]
    pub cluster_cidr: String,
    /// Service (ClusterIP) range.
    #[arg(long, env = "RK3S_SERVICE_CIDR", value_name = "CIDR", default_value = DEFAULT_SERVICE_CIDR)]
    pub service_cidr: String,
    /// Cluster DNS service address; must lie inside --service-cidr.
    #[arg(long, env = "RK3S_CLUSTER_DNS", value_name = "IP", default_value = DEFAULT_CLUSTER_DNS)]
    pub cluster_dns: String,
    /// Cluster DNS domain.
    #[arg(long, env = "RK3S_CLUSTER_DOMAIN", value_name = "DOMAIN", default_value = DEFAULT_CLUSTER_DOMAIN)]
    pub cluster_domain: String,
    /// Port range for NodePort services.
    #[arg(long, env = "RK3S_SERVICE_NODE_PORT_RANGE", value_name = "FIRST-LAST", default_value = DEFAULT_SERVICE_NODE_PORT_RANGE)]
    pub service_node_port_range: String,
    /// Shared secret nodes join with [default: generated, stored in DATA_DIR/server/token].
    #[arg(
        short = 't',
        long,
        env = "RK3S_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Read the token from this file.
    #[arg(long, env = "RK3S_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<String>,
    /// Join the cluster of this server (e.g. https://10.0.0.1:6443): with the same --token and
    /// --datastore-endpoint, this server takes the cluster's CAs from the datastore.
    #[arg(short = 's', long, env = "RK3S_URL", value_name = "URL")]
    pub server: Option<String>,
    /// Where to write the admin kubeconfig.
    #[arg(short = 'o', long, env = "RK3S_WRITE_KUBECONFIG", value_name = "FILE", default_value = DEFAULT_WRITE_KUBECONFIG)]
    pub write_kubeconfig: String,
    /// File mode of the admin kubeconfig, in octal (e.g. 0644 to let non-root users read it).
    #[arg(long, env = "RK3S_WRITE_KUBECONFIG_MODE", value_name = "MODE", default_value = DEFAULT_WRITE_KUBECONFIG_MODE)]
    pub write_kubeconfig_mode: String,
    /// Do not run a bundled component: traefik, servicelb, coredns, local-storage, metrics-server, network-policy
    /// (repeatable, or comma-separated).
    #[arg(
        long,
        env = "RK3S_DISABLE",
        value_name = "COMPONENT",
        value_delimiter = ','
    )]
    pub disable: Vec<String>,
    /// Run only the control plane; do not run workloads on this machine.
    #[arg(long, env = "RK3S_DISABLE_AGENT", value_parser = BoolishValueParser::new())]
    pub disable_agent: bool,
    /// Scheduled datastore snapshots, a five-field cron expression in UTC ("" turns them off).
    #[arg(long, env = "RK3S_SNAPSHOT_SCHEDULE_CRON", value_name = "CRON", default_value = crate::config::habits::DEFAULT_SNAPSHOT_SCHEDULE_CRON)]
    pub snapshot_schedule_cron: String,
    /// Scheduled snapshots to keep.
    #[arg(long, env = "RK3S_SNAPSHOT_RETENTION", value_name = "N", default_value = crate::config::habits::DEFAULT_SNAPSHOT_RETENTION)]
    pub snapshot_retention: String,
    /// Directory of datastore snapshots [default: DATA_DIR/server/db/snapshots].
    #[arg(long, env = "RK3S_SNAPSHOT_DIR", value_name = "DIR")]
    pub snapshot_dir: Option<String>,
    /// With --cluster-reset-restore-path: restore that snapshot into DATA_DIR, then exit.
    #[arg(long, env = "RK3S_CLUSTER_RESET", value_parser = BoolishValueParser::new())]
    pub cluster_reset: bool,
    /// The snapshot --cluster-reset restores (a path, or a name in --snapshot-dir).
    #[arg(long, env = "RK3S_CLUSTER_RESET_RESTORE_PATH", value_name = "FILE")]
    pub cluster_reset_restore_path: Option<String>,
    /// Encrypt Secrets at rest (keys in DATA_DIR/server/cred/encryption-config.json).
    #[arg(long, env = "RK3S_SECRETS_ENCRYPTION", value_parser = BoolishValueParser::new())]
    pub secrets_encryption: bool,
    /// Directory of the local-path volumes on every node [default: DATA_DIR/storage].
    #[arg(long, env = "RK3S_DEFAULT_LOCAL_STORAGE_PATH", value_name = "DIR")]
    pub default_local_storage_path: Option<String>,
    /// Pod network backend between nodes: vxlan, host-gw or none (agents learn it from the server).
    #[arg(long, env = "RK3S_FLANNEL_BACKEND", value_name = "BACKEND", default_value = DEFAULT_FLANNEL_BACKEND)]
    pub flannel_backend: String,
    #[command(flatten)]
    pub datastore: DatastoreArgs,
    #[command(flatten)]
    pub node: NodeArgs,
}

#[derive(Debug, Args)]
pub struct DatastoreCmd {
    #[command(subcommand)]
    pub command: DatastoreCommand,
}

#[derive(Debug, Subcommand)]
pub enum DatastoreCommand {
    /// Copy every object of this server's SQLite datastore into an empty etcd
    /// (stop the server first; then start it with the same --datastore-endpoint).
    Migrate {
        /// Directory holding all state (the SQLite datastore is DATA_DIR/server/db).
        #[arg(short = 'd', long, env = "RK3S_DATA_DIR", value_name = "DIR", default_value = DEFAULT_DATA_DIR)]
        data_dir: String,
        #[command(flatten)]
        datastore: DatastoreArgs,
    },
}

/// Where the cluster state lives (k3s's flag names).
#[derive(Debug, Args)]
pub struct DatastoreArgs {
    /// etcd members to keep the cluster state in, e.g. https://10.0.0.1:2379,https://10.0.0.2:2379
    /// [default: SQLite under DATA_DIR/server/db].
    #[arg(long, env = "RK3S_DATASTORE_ENDPOINT", value_name = "URLS")]
    pub datastore_endpoint: Option<String>,
    /// CA certificate of the etcd members (PEM).
    #[arg(long, env = "RK3S_DATASTORE_CAFILE", value_name = "FILE")]
    pub datastore_cafile: Option<String>,
    /// Client certificate for etcd (PEM).
    #[arg(long, env = "RK3S_DATASTORE_CERTFILE", value_name = "FILE")]
    pub datastore_certfile: Option<String>,
    /// Client key for etcd (PEM).
    #[arg(long, env = "RK3S_DATASTORE_KEYFILE", value_name = "FILE")]
    pub datastore_keyfile: Option<String>,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Load flags from this YAML file (keys are the long flag names).
    #[arg(short = 'c', long, env = "RK3S_CONFIG_FILE", value_name = "FILE", default_value = DEFAULT_CONFIG_FILE)]
    pub config: PathBuf,
    /// Print the resolved configuration as YAML and exit.
    #[arg(long, hide = true)]
    pub print_config: bool,
    /// Server to join, e.g. https://192.168.1.10:6443.
    #[arg(short = 's', long, env = "RK3S_URL", value_name = "URL")]
    pub server: Option<String>,
    /// Cluster token (on the server: /var/lib/rk3s/server/token).
    #[arg(
        short = 't',
        long,
        env = "RK3S_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Read the token from this file.
    #[arg(long, env = "RK3S_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<String>,
    /// Directory holding all state.
    #[arg(short = 'd', long, env = "RK3S_DATA_DIR", value_name = "DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: String,
    /// Local port of the agent's load balancer for the API servers (127.0.0.1).
    #[arg(long, env = "RK3S_LB_SERVER_PORT", value_name = "PORT", default_value = "6444")]
    pub lb_server_port: String,
    #[command(flatten)]
    pub node: NodeArgs,
}

/// Flags of the machine itself, shared by server and agent.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// Node name [default: the hostname].
    #[arg(long, env = "RK3S_NODE_NAME", value_name = "NAME")]
    pub node_name: Option<String>,
    /// IP address other nodes reach this one at [default: detected].
    #[arg(short = 'i', long, env = "RK3S_NODE_IP", value_name = "IP")]
    pub node_ip: Option<String>,
    /// Label set when the node registers, key=value (repeatable, or comma-separated).
    #[arg(
        long,
        env = "RK3S_NODE_LABEL",
        value_name = "KEY=VALUE",
        value_delimiter = ','
    )]
    pub node_label: Vec<String>,
    /// Taint set when the node registers, key=value:Effect with Effect NoSchedule, PreferNoSchedule or NoExecute
    /// (repeatable, or comma-separated).
    #[arg(
        long,
        env = "RK3S_NODE_TAINT",
        value_name = "KEY=VALUE:EFFECT",
        value_delimiter = ','
    )]
    pub node_taint: Vec<String>,
    /// Kubelet setting, KEY=VALUE (repeatable): image-gc-high-threshold,
    /// image-gc-low-threshold, minimum-image-ttl-duration.
    #[arg(
        long,
        env = "RK3S_KUBELET_ARG",
        value_name = "KEY=VALUE",
        value_delimiter = ','
    )]
    pub kubelet_arg: Vec<String>,
    /// External IP address of the node, published to the overlay as flannel's public-ip-overwrite.
    #[arg(long, env = "RK3S_NODE_EXTERNAL_IP", value_name = "IP")]
    pub node_external_ip: Option<String>,
    /// Interface the pod overlay runs over [default: the one holding the node IP].
    #[arg(long, env = "RK3S_FLANNEL_IFACE", value_name = "IFACE")]
    pub flannel_iface: Option<String>,
    /// CRI socket of the container runtime.
    #[arg(long, env = "RK3S_CONTAINER_RUNTIME_ENDPOINT", value_name = "SOCKET", default_value = DEFAULT_CONTAINER_RUNTIME_ENDPOINT)]
    pub container_runtime_endpoint: String,
    /// Private registry configuration file: mirrors, credentials and TLS for image pulls
    /// (k3s's registries.yaml format; a missing file means none).
    #[arg(long, env = "RK3S_PRIVATE_REGISTRY", value_name = "FILE", default_value = DEFAULT_PRIVATE_REGISTRY)]
    pub private_registry: String,
    /// Resolver file whose nameservers cluster DNS forwards to and pods with dnsPolicy Default use
    /// [default: /etc/resolv.conf, or systemd-resolved's upstream list when it names only the 127.0.0.53 stub].
    #[arg(long, env = "RK3S_RESOLV_CONF", value_name = "FILE")]
    pub resolv_conf: Option<String>,
    /// Port of the built-in ingress for HTTP (off with the server's --disable traefik).
    #[arg(long, env = "RK3S_INGRESS_HTTP_PORT", value_name = "PORT", default_value = DEFAULT_INGRESS_HTTP_PORT)]
    pub ingress_http_port: String,
    /// Port of the built-in ingress for HTTPS.
    #[arg(long, env = "RK3S_INGRESS_HTTPS_PORT", value_name = "PORT", default_value = DEFAULT_INGRESS_HTTPS_PORT)]
    pub ingress_https_port: String,
    /// Runtime directory (tmpfs): the own containerd's state and socket, container and exec FIFOs.
    #[arg(long, env = "RK3S_RUN_DIR", value_name = "DIR", default_value = DEFAULT_RUN_DIR)]
    pub run_dir: String,
    /// Log at debug level (RUST_LOG, when set, wins).
    #[arg(long, env = "RK3S_DEBUG", value_parser = BoolishValueParser::new())]
    pub debug: bool,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a bootstrap token (format [a-z0-9]{6}.[a-z0-9]{16}).
    Create {
        /// The token to create [default: generated].
        token: Option<String>,
        /// Lifetime, e.g. 24h; 0 means it never expires.
        #[arg(long, default_value = "24h")]
        ttl: String,
        /// Human-readable description.
        #[arg(long)]
        description: Option<String>,
        /// Allowed usages (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "signing,authentication")]
        usages: Vec<String>,
        /// Extra groups the token authenticates as (comma-separated).
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        #[command(flatten)]
        common: TokenCommon,
    },
    /// List bootstrap tokens.
    List {
        /// Output format.
        #[arg(short, long, default_value = "text", value_parser = ["text", "json", "yaml"])]
        output: String,
        #[command(flatten)]
        common: TokenCommon,
    },
    /// Delete bootstrap tokens.
    Delete {
        /// Tokens or token ids to delete.
        #[arg(required = true)]
        tokens: Vec<String>,
        #[command(flatten)]
        common: TokenCommon,
    },
    /// Print a new random bootstrap token without storing it.
    Generate,
}

#[derive(Debug, Args)]
pub struct TokenCommon {
    /// Directory holding all state.
    #[arg(short = 'd', long, env = "RK3S_DATA_DIR", value_name = "DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Kubeconfig of the cluster to act on [default: /etc/rk3s/rk3s.yaml].
    #[arg(long, env = "KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
}

impl TokenCommand {
    pub fn name(&self) -> &'static str {
        match self {
            TokenCommand::Create { .. } => "create",
            TokenCommand::List { .. } => "list",
            TokenCommand::Delete { .. } => "delete",
            TokenCommand::Generate => "generate",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_server_and_agent_flag_has_an_rk3s_env_var() {
        let cmd = Cli::command();
        for sub in ["server", "agent"] {
            for arg in cmd.find_subcommand(sub).unwrap().get_arguments() {
                let Some(long) = arg.get_long() else { continue };
                if matches!(long, "help" | "print-config" | "version") {
                    continue;
                }
                let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
                let expected = match long {
                    "server" => "RK3S_URL".to_string(),
                    "config" => "RK3S_CONFIG_FILE".to_string(),
                    _ => format!("RK3S_{}", long.to_uppercase().replace('-', "_")),
                };
                assert_eq!(env.as_deref(), Some(expected.as_str()), "{sub} --{long}");
            }
        }
    }
}
