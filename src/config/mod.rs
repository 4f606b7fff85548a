//! The resolved configuration of `rk3s server` and `rk3s agent`: typed values
//! (addresses, CIDRs, ports, paths), validated as a whole, independent of
//! clap. The rest of the binary only ever sees these types.
//!
//! Input arrives as [`Settings`] (raw strings keyed by long flag name, each
//! with its [`Source`]); `cli` fills them from flags and `RK3S_*` variables,
//! [`Settings::layer_file`] adds `/etc/rk3s/config.yaml` underneath, and
//! [`ServerConfig::resolve`] / [`AgentConfig::resolve`] apply the defaults
//! and validate. Every error names the flag, the value, where it came from,
//! and what is wrong.
//!
//! Partial: no `config.yaml.d/` drop-in directory yet; only single-stack
//! (one CIDR each for pods and services).

mod cluster;
mod datastore;
pub mod habits;
mod kubelet_args;
mod node_password;
mod settings;
mod values;
mod yaml;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;

pub use cluster::ClusterSettings;
pub use datastore::{Datastore, EtcdEndpoints};
pub use node_password::{node_password_file, DEFAULT_NODE_PASSWORD_FILE, NODE_PASSWORD_FILE_ENV};
pub use kubelet_args::{
    parse_go_duration, parse_kubelet_arg, KubeletArg, KubeletArgs, SUPPORTED_KUBELET_ARGS,
};
pub use settings::{Kind, Setting, Settings, Source};
pub use values::{
    check_san, is_dns_subdomain, parse_cidr, parse_ip, parse_label, parse_mode, parse_port,
    Component, FlannelBackend, Labels, PortRange, Taint, TaintEffect, Token,
};
use values::{
    hostname, parse_bool, parse_domain, parse_endpoint, parse_iface, parse_node_name, parse_path,
    parse_server_url,
};

pub const DEFAULT_CONFIG_FILE: &str = "/etc/rk3s/config.yaml";
pub const DEFAULT_DATA_DIR: &str = "/var/lib/rk3s";
/// The agent's runtime dir (containerd's state, FIFOs): tmpfs, gone at reboot.
pub const DEFAULT_RUN_DIR: &str = "/run/rk3s";
pub const DEFAULT_BIND_ADDRESS: &str = "0.0.0.0";
pub const DEFAULT_HTTPS_LISTEN_PORT: &str = "6443";
pub const DEFAULT_CLUSTER_CIDR: &str = "10.42.0.0/16";
pub const DEFAULT_SERVICE_CIDR: &str = "10.43.0.0/16";
pub const DEFAULT_CLUSTER_DNS: &str = "10.43.0.10";
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";
pub const DEFAULT_SERVICE_NODE_PORT_RANGE: &str = "30000-32767";
pub const DEFAULT_WRITE_KUBECONFIG: &str = "/etc/rk3s/rk3s.yaml";
pub const DEFAULT_WRITE_KUBECONFIG_MODE: &str = "0600";
pub const DEFAULT_FLANNEL_BACKEND: &str = "vxlan";
pub const DEFAULT_CONTAINER_RUNTIME_ENDPOINT: &str = "unix:///run/containerd/containerd.sock";
pub const DEFAULT_INGRESS_HTTP_PORT: &str = "80";
pub const DEFAULT_INGRESS_HTTPS_PORT: &str = "443";
/// k3s's `/etc/rancher/k3s/registries.yaml`, under our name.
pub const DEFAULT_PRIVATE_REGISTRY: &str = "/etc/rk3s/registries.yaml";

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid value {value:?} for --{flag} (from {origin}): {reason}")]
    Invalid {
        flag: String,
        value: String,
        origin: Source,
        reason: String,
    },
    #[error("{0}")]
    Inconsistent(String),
    #[error("{0}")]
    Missing(String),
    #[error("failed to read config file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to parse config file {path}: {source}")]
    ParseFile {
        path: PathBuf,
        source: serde_yaml::Error,
    },
    #[error("config file {path} must be a mapping of flag names to values")]
    FileNotAMapping { path: PathBuf },
    #[error(
        "unknown key {key:?} in config file {path}: keys are the long flag names (see --help)"
    )]
    FileUnknownKey { key: String, path: PathBuf },
    #[error("wrong type for key {key:?} in config file {path}: expected {expected}")]
    FileWrongType {
        key: String,
        path: PathBuf,
        expected: String,
    },
}

/// Settings of the machine this process runs on, shared by server and agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// The Node object's name; defaults to the lowercased hostname.
    pub node_name: String,
    /// The address other nodes reach this one at; detected at run time when unset.
    pub node_ip: Option<IpAddr>,
    /// Applied when the node registers.
    pub node_labels: Labels,
    /// Applied when the node registers.
    pub node_taints: Vec<Taint>,
    /// The CRI socket of the container runtime (host containerd by default).
    pub container_runtime_endpoint: String,
    /// Mirrors, credentials and TLS for image pulls (k3s's registries.yaml
    /// format); a missing file means none.
    pub private_registry: PathBuf,
    /// `--kubelet-arg KEY=VALUE` items, validated.
    pub kubelet_args: KubeletArgs,
    /// `--node-external-ip`: published as flannel's `public-ip-overwrite`.
    pub node_external_ip: Option<IpAddr>,
    /// `--flannel-iface`: the interface the overlay runs over.
    pub flannel_iface: Option<String>,
    /// `--resolv-conf`: the node's upstream resolvers (None: detected).
    pub resolv_conf: Option<PathBuf>,
    /// Where the built-in ingress listens for HTTP and HTTPS.
    pub ingress_http_port: u16,
    pub ingress_https_port: u16,
    /// `--run-dir`: what lives only while the machine is up (containerd's
    /// state and socket, container and exec FIFOs); tmpfs by default.
    pub run_dir: PathBuf,
}

/// Everything `rk3s server` needs, resolved and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub bind_address: IpAddr,
    pub https_listen_port: u16,
    pub advertise_address: Option<IpAddr>,
    pub tls_san: Vec<String>,
    pub cluster_cidr: IpNet,
    pub service_cidr: IpNet,
    pub cluster_dns: IpAddr,
    pub cluster_domain: String,
    pub service_node_port_range: PortRange,
    /// The cluster join secret; generated and stored under the data dir when unset.
    pub token: Option<Token>,
    pub token_file: Option<PathBuf>,
    /// `--server` on `rk3s server`: the first server of the cluster this one
    /// joins (through the shared datastore, which holds the cluster's CAs).
    pub join_server: Option<http::Uri>,
    pub write_kubeconfig: PathBuf,
    pub write_kubeconfig_mode: u32,
    pub disable: BTreeSet<Component>,
    pub disable_agent: bool,
    /// `--default-local-storage-path`: where local-path volumes live on
    /// every node (`<data-dir>/storage` unless set).
    pub default_local_storage_path: PathBuf,
    pub flannel_backend: FlannelBackend,
    /// `--datastore-endpoint` and its TLS files: SQLite unless set.
    pub datastore: Datastore,
    pub node: NodeConfig,
    pub debug: bool,
    /// Snapshots and secrets encryption (issue 23).
    pub habits: habits::HabitsConfig,
}

/// How an agent proves it may join: the token itself or a file holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    Value(Token),
    File(PathBuf),
}

/// Everything `rk3s agent` needs, resolved and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// The server's supervisor URL, always `https://`.
    pub server: http::Uri,
    pub token: TokenSource,
    pub data_dir: PathBuf,
    pub node: NodeConfig,
    pub debug: bool,
    /// The node password file (`RK3S_NODE_PASSWORD_FILE`, see `node_password`).
    pub node_password_file: PathBuf,
    /// `--lb-server-port`: the agent's API server load balancer on 127.0.0.1.
    pub lb_server_port: u16,
}

/// Looks values up in [`Settings`] and turns parse failures into [`ConfigError::Invalid`].
struct Resolver<'a> {
    settings: &'a Settings,
}

impl Resolver<'_> {
    /// The single value of `flag`, or `default` (reported as coming from the command line's default).
    fn one<T>(
        &self,
        flag: &str,
        default: Option<&str>,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        let (value, source) = match self.settings.get(flag) {
            Some(setting) => match setting.values.last() {
                Some(v) => (v.clone(), setting.source.clone()),
                None => return Ok(None),
            },
            None => match default {
                Some(d) => (d.to_string(), Source::Flag),
                None => return Ok(None),
            },
        };
        parse(value.trim())
            .map(Some)
            .map_err(|reason| ConfigError::Invalid {
                flag: flag.to_string(),
                value,
                origin: source,
                reason,
            })
    }

    fn required<T>(
        &self,
        flag: &str,
        default: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        Ok(self
            .one(flag, Some(default), parse)?
            .expect("a default always yields a value"))
    }

    /// Every value of a repeatable `flag`, skipping empty items (`a,,b`).
    fn many<T>(
        &self,
        flag: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Vec<T>, ConfigError> {
        let Some(setting) = self.settings.get(flag) else {
            return Ok(Vec::new());
        };
        setting
            .values
            .iter()
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .map(|v| {
                parse(v).map_err(|reason| ConfigError::Invalid {
                    flag: flag.to_string(),
                    value: v.to_string(),
                    origin: setting.source.clone(),
                    reason,
                })
            })
            .collect()
    }

    fn flag(&self, flag: &str) -> Result<bool, ConfigError> {
        Ok(self.one(flag, Some("false"), parse_bool)?.unwrap_or(false))
    }

    fn node(&self) -> Result<NodeConfig, ConfigError> {
        let node_name = match self.one("node-name", None, parse_node_name)? {
            Some(name) => name,
            None => {
                let host = hostname().to_ascii_lowercase();
                parse_node_name(&host).map_err(|reason| {
                    ConfigError::Missing(format!(
                        "the hostname {host:?} is not a valid node name ({reason}); set --node-name"
                    ))
                })?
            }
        };
        let mut node_labels = Labels::new();
        for (k, v) in self.many("node-label", parse_label)? {
            node_labels.insert(k, v);
        }
        Ok(NodeConfig {
            node_name,
            node_ip: self.one("node-ip", None, parse_ip)?,
            node_labels,
            node_taints: self.many("node-taint", |t| t.parse())?,
            container_runtime_endpoint: self.required(
                "container-runtime-endpoint",
                DEFAULT_CONTAINER_RUNTIME_ENDPOINT,
                parse_endpoint,
            )?,
            private_registry: self.required(
                "private-registry",
                DEFAULT_PRIVATE_REGISTRY,
                parse_path,
            )?,
            kubelet_args: self.kubelet_args()?,
            node_external_ip: self.one("node-external-ip", None, parse_ip)?,
            flannel_iface: self.one("flannel-iface", None, parse_iface)?,
            resolv_conf: self.one("resolv-conf", None, parse_path)?,
            ingress_http_port: self.required("ingress-http-port", DEFAULT_INGRESS_HTTP_PORT, parse_port)?,
            ingress_https_port: self.required("ingress-https-port", DEFAULT_INGRESS_HTTPS_PORT, parse_port)?,
            run_dir: self.required("run-dir", DEFAULT_RUN_DIR, parse_path)?,
        })
    }

    fn kubelet_args(&self) -> Result<KubeletArgs, ConfigError> {
        let items = self.many("kubelet-arg", |s| {
            parse_kubelet_arg(s).map(|a| (s.to_string(), a))
        })?;
        let raw: Vec<String> = items.iter().map(|(r, _)| r.clone()).collect();
        KubeletArgs::from_items(items).map_err(|reason| ConfigError::Invalid {
            flag: "kubelet-arg".into(),
            value: raw.join(" "),
            origin: self
                .settings
                .get("kubelet-arg")
                .map(|s| s.source.clone())
                .unwrap_or(Source::Flag),
            reason,
        })
    }

    fn token_file(&self) -> Result<Option<PathBuf>, ConfigError> {
        self.one("token-file", None, parse_path)
    }

    fn token(&self) -> Result<Option<Token>, ConfigError> {
        self.one("token", None, |t| Token::new(t))
    }

    fn datastore(&self) -> Result<Datastore, ConfigError> {
        let files = [
            self.one("datastore-cafile", None, parse_path)?,
            self.one("datastore-certfile", None, parse_path)?,
            self.one("datastore-keyfile", None, parse_path)?,
        ];
        let Some(urls) = self.one("datastore-endpoint", None, datastore::parse_endpoints)? else {
            if files.iter().any(Option::is_some) {
                return Err(ConfigError::Inconsistent(
                    "--datastore-cafile/-certfile/-keyfile need --datastore-endpoint".into(),
                ));
            }
            return Ok(Datastore::Sqlite);
        };
        let [cafile, certfile, keyfile] = files;
        let e = EtcdEndpoints {
            urls,
            cafile,
            certfile,
            keyfile,
        };
        datastore::check(&e).map_err(ConfigError::Inconsistent)?;
        Ok(Datastore::Etcd(e))
    }
}

impl ServerConfig {
    pub fn resolve(settings: &Settings) -> Result<Self, ConfigError> {
        let r = Resolver { settings };
        let config = ServerConfig {
            data_dir: r.required("data-dir", DEFAULT_DATA_DIR, parse_path)?,
            bind_address: r.required("bind-address", DEFAULT_BIND_ADDRESS, parse_ip)?,
            https_listen_port: r.required(
                "https-listen-port",
                DEFAULT_HTTPS_LISTEN_PORT,
                parse_port,
            )?,
            advertise_address: r.one("advertise-address", None, parse_ip)?,
            tls_san: r.many("tls-san", |s| check_san(s).map(|()| s.to_string()))?,
            cluster_cidr: r.required("cluster-cidr", DEFAULT_CLUSTER_CIDR, parse_cidr)?,
            service_cidr: r.required("service-cidr", DEFAULT_SERVICE_CIDR, parse_cidr)?,
            cluster_dns: r.required("cluster-dns", DEFAULT_CLUSTER_DNS, parse_ip)?,
            cluster_domain: r.required("cluster-domain", DEFAULT_CLUSTER_DOMAIN, parse_domain)?,
            service_node_port_range: r.required(
                "service-node-port-range",
                DEFAULT_SERVICE_NODE_PORT_RANGE,
                |s| s.parse(),
            )?,
            token: r.token()?,
            token_file: r.token_file()?,
            join_server: r.one("server", None, parse_server_url)?,
            write_kubeconfig: r.required(
                "write-kubeconfig",
                DEFAULT_WRITE_KUBECONFIG,
                parse_path,
            )?,
            write_kubeconfig_mode: r.required(
                "write-kubeconfig-mode",
                DEFAULT_WRITE_KUBECONFIG_MODE,
                parse_mode,
            )?,
            disable: r.many("disable", |s| s.parse())?.into_iter().collect(),
            disable_agent: r.flag("disable-agent")?,
            default_local_storage_path: match r.one("default-local-storage-path", None, parse_path)? {
                Some(p) => p,
                None => r.required("data-dir", DEFAULT_DATA_DIR, parse_path)?.join("storage"),
            },
            flannel_backend: r
                .required("flannel-backend", DEFAULT_FLANNEL_BACKEND, |s| s.parse())?,
            datastore: r.datastore()?,
            node: r.node()?,
            debug: r.flag("debug")?,
            habits: habits::HabitsConfig::resolve(&r)?,
        };
        config.check_consistency()?;
        Ok(config)
    }

    /// Checks between flags, once each one is valid on its own.
    fn check_consistency(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Inconsistent(m));
        if !self.service_cidr.contains(&self.cluster_dns) {
            return bad(format!(
                "--cluster-dns {} is outside --service-cidr {}: pick an address inside the service range",
                self.cluster_dns, self.service_cidr
            ));
        }
        if self.cluster_dns == self.service_cidr.network() {
            return bad(format!(
                "--cluster-dns {} is the network address of --service-cidr {}",
                self.cluster_dns, self.service_cidr
            ));
        }
        if self.cluster_cidr.contains(&self.service_cidr.network())
            || self.service_cidr.contains(&self.cluster_cidr.network())
        {
            return bad(format!(
                "--cluster-cidr {} and --service-cidr {} overlap: pod and service addresses must be distinct",
                self.cluster_cidr, self.service_cidr
            ));
        }
        if self.cluster_cidr.addr().is_ipv4() != self.service_cidr.addr().is_ipv4() {
            return bad(format!(
                "--cluster-cidr {} and --service-cidr {} must be the same IP family",
                self.cluster_cidr, self.service_cidr
            ));
        }
        if self.token.is_some() && self.token_file.is_some() {
            return bad("--token and --token-file both set: give only one".into());
        }
        if let Some(first) = &self.join_server {
            if self.datastore == Datastore::Sqlite {
                return bad(format!(
                    "--server {first}: servers share their cluster through an external datastore; also set --datastore-endpoint to the etcd the first server uses"
                ));
            }
            if self.token.is_none() && self.token_file.is_none() {
                return bad(format!(
                    "--server {first}: set --token (or --token-file) to the first server's token (its <data-dir>/server/token)"
                ));
            }
        }
        Ok(())
    }
}

impl AgentConfig {
    pub fn resolve(settings: &Settings) -> Result<Self, ConfigError> {
        let r = Resolver { settings };
        let server = r.one("server", None, parse_server_url)?.ok_or_else(|| {
            ConfigError::Missing(
                "rk3s agent needs the server to join: set --server https://SERVER:6443 (or RK3S_URL)".into(),
            )
        })?;
        let token = match (r.token()?, r.token_file()?) {
            (Some(t), None) => TokenSource::Value(t),
            (None, Some(f)) => TokenSource::File(f),
            (Some(_), Some(_)) => {
                return Err(ConfigError::Inconsistent(
                    "--token and --token-file both set: give only one".into(),
                ))
            }
            (None, None) => return Err(ConfigError::Missing(
                "rk3s agent needs the cluster token: set --token (or RK3S_TOKEN) or --token-file; \
                     the server keeps it in /var/lib/rk3s/server/token"
                    .into(),
            )),
        };
        Ok(AgentConfig {
            server,
            token,
            data_dir: r.required("data-dir", DEFAULT_DATA_DIR, parse_path)?,
            node: r.node()?,
            debug: r.flag("debug")?,
            node_password_file: node_password_file(),
            lb_server_port: r.required("lb-server-port", "6444", parse_port)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        let mut s = Settings::new();
        s.set("node-name", vec!["pi-1".into()], Source::Flag);
        for (k, v) in pairs {
            s.set(k, v.split(',').map(str::to_string).collect(), Source::Flag);
        }
        s
    }

    fn server_err(pairs: &[(&str, &str)]) -> String {
        ServerConfig::resolve(&settings(pairs))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_joining_server_needs_the_shared_datastore_and_the_token() {
        let err = server_err(&[("server", "https://10.0.0.1:6443"), ("token", "t")]);
        assert!(err.contains("--datastore-endpoint"), "{err}");
        let err = server_err(&[("server", "https://10.0.0.1:6443"), ("datastore-endpoint", "http://10.0.0.1:2379")]);
        assert!(err.contains("--token"), "{err}");
        let c = ServerConfig::resolve(&settings(&[
            ("server", "https://10.0.0.1:6443"),
            ("token", "t"),
            ("datastore-endpoint", "http://10.0.0.1:2379"),
        ]))
        .unwrap();
        assert_eq!(c.join_server.unwrap().to_string(), "https://10.0.0.1:6443/");
    }

    #[test]
    fn server_defaults_match_k3s() {
        let c = ServerConfig::resolve(&settings(&[])).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/rk3s"));
        assert_eq!(c.https_listen_port, 6443);
        assert_eq!(c.cluster_cidr.to_string(), "10.42.0.0/16");
        assert_eq!(c.service_cidr.to_string(), "10.43.0.0/16");
        assert_eq!(c.cluster_dns.to_string(), "10.43.0.10");
        assert_eq!(
            c.service_node_port_range,
            PortRange {
                first: 30000,
                last: 32767
            }
        );
        assert_eq!(c.write_kubeconfig_mode, 0o600);
        assert_eq!(c.flannel_backend, FlannelBackend::Vxlan);
        assert!(c.disable.is_empty() && !c.disable_agent && !c.debug);
    }

    #[test]
    fn server_values_are_typed() {
        let c = ServerConfig::resolve(&settings(&[
            ("disable", "servicelb,coredns,traefik"),
            ("node-label", "a=b,example.com/c=d"),
            ("node-taint", "k=v:NoSchedule"),
            ("write-kubeconfig-mode", "0644"),
            ("debug", "true"),
        ]))
        .unwrap();
        assert_eq!(
            c.disable,
            [Component::ServiceLb, Component::Dns, Component::Ingress]
                .into_iter()
                .collect()
        );
        assert_eq!(
            c.node.node_labels.get("example.com/c").map(String::as_str),
            Some("d")
        );
        assert_eq!(c.node.node_taints[0].effect, TaintEffect::NoSchedule);
        assert_eq!(c.write_kubeconfig_mode, 0o644);
        assert!(c.debug);
    }

    #[test]
    fn kubelet_args_are_validated() {
        let c = ServerConfig::resolve(&settings(&[])).unwrap();
        assert_eq!(c.node.kubelet_args, KubeletArgs::default());
        let mut s = settings(&[]);
        s.set(
            "kubelet-arg",
            vec![
                "image-gc-high-threshold=90".into(),
                "minimum-image-ttl-duration=30s".into(),
            ],
            Source::Flag,
        );
        let c = AgentConfig::resolve(&{
            let mut a = s.clone();
            a.set("server", vec!["https://10.0.0.1:6443".into()], Source::Flag);
            a.set("token", vec!["secret".into()], Source::Flag);
            a
        })
        .unwrap();
        assert_eq!(c.node.kubelet_args.image_gc_high_threshold, 90);
        assert_eq!(c.node.kubelet_args.minimum_image_ttl.as_secs(), 30);
        let c = ServerConfig::resolve(&s).unwrap();
        assert_eq!(c.node.kubelet_args.image_gc_low_threshold, 80);
        assert!(c.to_yaml().contains("image-gc-high-threshold=90"));

        let err = server_err(&[("kubelet-arg", "max-pods=10")]);
        assert!(
            err.contains("--kubelet-arg")
                && err.contains("max-pods")
                && err.contains("minimum-image-ttl-duration"),
            "{err}"
        );
        let err = server_err(&[("kubelet-arg", "image-gc-low-threshold=90")]);
        assert!(
            err.contains("--kubelet-arg") && err.contains("lower than"),
            "{err}"
        );
    }

    #[test]
    fn errors_name_flag_value_and_source() {
        let err = server_err(&[("cluster-cidr", "10.42.0.0/33")]);
        assert!(
            err.contains("--cluster-cidr")
                && err.contains("at most 32")
                && err.contains("command line"),
            "{err}"
        );
        let mut s = settings(&[]);
        s.set(
            "https-listen-port",
            vec!["99999".into()],
            Source::Env("RK3S_HTTPS_LISTEN_PORT".into()),
        );
        let err = ServerConfig::resolve(&s).unwrap_err().to_string();
        assert!(
            err.contains("--https-listen-port") && err.contains("RK3S_HTTPS_LISTEN_PORT"),
            "{err}"
        );
        assert!(server_err(&[("disable", "ingress")]).contains("valid values are traefik"));
        assert!(server_err(&[("node-taint", "k=v:Never")]).contains("--node-taint"));
        assert!(server_err(&[("bind-address", "nowhere")]).contains("--bind-address"));
        assert!(server_err(&[("flannel-backend", "wireguard")]).contains("vxlan, host-gw, none"));
        let wg = server_err(&[("flannel-backend", "wireguard-native")]);
        assert!(wg.contains("not supported by rk3s yet") && wg.contains("vxlan, host-gw, none"), "{wg}");
        assert!(server_err(&[("flannel-iface", "eth0/1")]).contains("--flannel-iface"));
        assert!(server_err(&[("node-external-ip", "nope")]).contains("--node-external-ip"));
    }

    #[test]
    fn overlay_node_flags_resolve() {
        let c = ServerConfig::resolve(&settings(&[
            ("flannel-iface", "wlan0"),
            ("node-external-ip", "203.0.113.9"),
            ("flannel-backend", "host-gw"),
        ]))
        .unwrap();
        assert_eq!(c.node.flannel_iface.as_deref(), Some("wlan0"));
        assert_eq!(c.node.node_external_ip.unwrap().to_string(), "203.0.113.9");
        assert_eq!(c.flannel_backend, FlannelBackend::HostGw);
        let yaml = c.to_yaml();
        assert!(yaml.contains("flannel-iface: wlan0") && yaml.contains("node-external-ip: 203.0.113.9"), "{yaml}");
    }

    #[test]
    fn cross_flag_checks() {
        assert!(server_err(&[("cluster-dns", "10.44.0.10")]).contains("outside --service-cidr"));
        assert!(server_err(&[("cluster-cidr", "10.0.0.0/8")]).contains("overlap"));
        assert!(server_err(&[("service-node-port-range", "32767-30000")]).contains("lower"));
        assert!(server_err(&[("token", "a"), ("token-file", "/t")]).contains("only one"));
    }

    #[test]
    fn agent_requires_https_server_and_token() {
        let err = AgentConfig::resolve(&settings(&[("token", "t")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--server") && err.contains("RK3S_URL"),
            "{err}"
        );
        let err = AgentConfig::resolve(&settings(&[("server", "https://10.0.0.1:6443")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--token") && err.contains("RK3S_TOKEN"),
            "{err}"
        );
        let err = AgentConfig::resolve(&settings(&[
            ("server", "http://10.0.0.1:6443"),
            ("token", "t"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("https://"), "{err}");
        let c = AgentConfig::resolve(&settings(&[
            ("server", "https://10.0.0.1:6443"),
            ("token", "t"),
        ]))
        .unwrap();
        assert_eq!(c.token, TokenSource::Value(Token::new("t").unwrap()));
        assert!(!c.to_yaml().contains(": t\n"), "token must be masked");
    }

    #[test]
    fn yaml_dump_round_trips_through_the_file_format() {
        let c = ServerConfig::resolve(&settings(&[("tls-san", "a.example"), ("token", "s3cret")]))
            .unwrap();
        let yaml = c.to_yaml();
        assert!(
            yaml.contains("cluster-cidr: 10.42.0.0/16") && !yaml.contains("s3cret"),
            "{yaml}"
        );
        assert!(yaml.contains("- a.example"), "{yaml}");
    }
}
