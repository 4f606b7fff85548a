//! Typed values of the configuration and their parsers. Each parser returns a
//! plain reason string ("prefix length must be at most 32"); the caller adds
//! the flag name and where the value came from.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Serialize, Serializer};

/// Parses `ADDRESS/PREFIX`, normalising host bits away (`10.42.0.1/16` → `10.42.0.0/16`),
/// as Go's `net.ParseCIDR` does for k3s.
pub fn parse_cidr(text: &str) -> Result<IpNet, String> {
    let (addr, prefix) = text
        .split_once('/')
        .ok_or_else(|| "expected ADDRESS/PREFIX, e.g. 10.42.0.0/16".to_string())?;
    let addr = parse_ip(addr)?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix: u8 = prefix
        .parse()
        .map_err(|_| format!("prefix length {prefix:?} is not a number between 0 and {max}"))?;
    if prefix > max {
        return Err(format!("prefix length must be at most {max}, got {prefix}"));
    }
    let net = IpNet::new(addr, prefix).map_err(|e| e.to_string())?;
    Ok(net.trunc())
}

pub fn parse_ip(text: &str) -> Result<IpAddr, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not an IPv4 or IPv6 address"))
}

pub fn parse_port(text: &str) -> Result<u16, String> {
    match text.parse::<u32>() {
        Ok(port @ 1..=65535) => Ok(port as u16),
        _ => Err(format!("{text:?} is not a port number between 1 and 65535")),
    }
}

/// An inclusive port range `A-B` such as the NodePort range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl FromStr for PortRange {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let (a, b) = text
            .split_once('-')
            .ok_or_else(|| "expected FIRST-LAST, e.g. 30000-32767".to_string())?;
        let (first, last) = (parse_port(a.trim())?, parse_port(b.trim())?);
        if first >= last {
            return Err(format!(
                "the first port ({first}) must be lower than the last ({last})"
            ));
        }
        Ok(PortRange { first, last })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// Bundled components that `--disable` can turn off, under k3s's names
/// (`traefik` is rk3s's built-in ingress, `coredns` its built-in DNS), so
/// a k3s user's `--disable traefik` means the same here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    Ingress,
    ServiceLb,
    Dns,
    LocalStorage,
    MetricsServer,
    NetworkPolicy,
}

impl Component {
    pub const ALL: [Component; 6] = [
        Component::Ingress,
        Component::ServiceLb,
        Component::Dns,
        Component::LocalStorage,
        Component::MetricsServer,
        Component::NetworkPolicy,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Component::Ingress => "traefik",
            Component::ServiceLb => "servicelb",
            Component::Dns => "coredns",
            Component::LocalStorage => "local-storage",
            Component::MetricsServer => "metrics-server",
            Component::NetworkPolicy => "network-policy",
        }
    }
}

impl FromStr for Component {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        Component::ALL
            .into_iter()
            .find(|c| c.name() == text)
            .ok_or_else(|| {
                let valid: Vec<_> = Component::ALL.iter().map(|c| c.name()).collect();
                format!(
                    "unknown component {text:?}; valid values are {}",
                    valid.join(", ")
                )
            })
    }
}

/// A network interface name, as the kernel accepts it.
pub(crate) fn parse_iface(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text.len() <= 15
        && text.bytes().all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
    if ok {
        Ok(text.to_string())
    } else {
        Err("an interface name is 1-15 printable characters without '/' or ':' (e.g. eth0, wlan0)".into())
    }
}

/// How flannel carries pod traffic between nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlannelBackend {
    Vxlan,
    HostGw,
    /// No pod network is set up; the user brings their own CNI.
    None,
}

impl FlannelBackend {
    pub fn name(self) -> &'static str {
        match self {
            FlannelBackend::Vxlan => "vxlan",
            FlannelBackend::HostGw => "host-gw",
            FlannelBackend::None => "none",
        }
    }
}

impl FromStr for FlannelBackend {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "vxlan" => Ok(FlannelBackend::Vxlan),
            "host-gw" => Ok(FlannelBackend::HostGw),
            "none" => Ok(FlannelBackend::None),
            "wireguard-native" => Err(
                "backend \"wireguard-native\" is not supported by rk3s yet (the overlay is tested only \
                 where the kernel has no wireguard module); valid values are vxlan, host-gw, none"
                    .into(),
            ),
            _ => Err(format!(
                "unknown backend {text:?}; valid values are vxlan, host-gw, none"
            )),
        }
    }
}

/// What a taint does to pods that do not tolerate it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

impl TaintEffect {
    pub fn name(self) -> &'static str {
        match self {
            TaintEffect::NoSchedule => "NoSchedule",
            TaintEffect::PreferNoSchedule => "PreferNoSchedule",
            TaintEffect::NoExecute => "NoExecute",
        }
    }
}

/// A node taint `key[=value]:Effect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taint {
    pub key: String,
    pub value: Option<String>,
    pub effect: TaintEffect,
}

impl FromStr for Taint {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let (kv, effect) = text.rsplit_once(':').ok_or_else(|| {
            format!(
                "{text:?} has no effect; expected key=value:Effect, e.g. dedicated=gpu:NoSchedule"
            )
        })?;
        let effect = match effect {
            "NoSchedule" => TaintEffect::NoSchedule,
            "PreferNoSchedule" => TaintEffect::PreferNoSchedule,
            "NoExecute" => TaintEffect::NoExecute,
            _ => {
                return Err(format!(
                    "effect {effect:?} is not one of NoSchedule, PreferNoSchedule, NoExecute"
                ))
            }
        };
        let (key, value) = match kv.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (kv, None),
        };
        check_label_key(key)?;
        if let Some(value) = value {
            check_label_value(value)?;
        }
        Ok(Taint {
            key: key.to_string(),
            value: value.map(str::to_string),
            effect,
        })
    }
}

impl fmt::Display for Taint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}={}:{}", self.key, v, self.effect.name()),
            None => write!(f, "{}:{}", self.key, self.effect.name()),
        }
    }
}

/// Parses a node label `key=value` and checks both halves as Kubernetes does.
pub fn parse_label(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not key=value"))?;
    check_label_key(key)?;
    check_label_value(value)?;
    Ok((key.to_string(), value.to_string()))
}

/// A label or taint key: `[prefix/]name`, the prefix a DNS subdomain.
fn check_label_key(key: &str) -> Result<(), String> {
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            if !is_dns_subdomain(prefix) {
                return Err(format!(
                    "key prefix {prefix:?} must be a lowercase DNS subdomain (e.g. example.com) of at most 253 characters"
                ));
            }
            name
        }
        None => key,
    };
    if !is_qualified_name(name) {
        return Err(format!(
            "key name {name:?} must be 1-63 characters of letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_qualified_name(value) {
        Ok(())
    } else {
        Err(format!(
            "value {value:?} must be at most 63 characters of letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ))
    }
}

fn is_qualified_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
}

/// A lowercase RFC 1123 DNS subdomain, as Kubernetes requires for object and node names.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// A subject alternative name for the serving certificate: an IP or a DNS
/// name (a leading `*.` wildcard is allowed, as in k3s).
pub fn check_san(text: &str) -> Result<(), String> {
    if text.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let name = text.strip_prefix("*.").unwrap_or(text).to_ascii_lowercase();
    if is_dns_subdomain(&name) {
        Ok(())
    } else {
        Err(format!("{text:?} is neither an IP address nor a DNS name"))
    }
}

/// A file mode written in octal, e.g. `0644` or `600`.
pub fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o7777 => Ok(mode),
        _ => Err(format!(
            "{text:?} is not an octal file mode such as 0600 or 0644"
        )),
    }
}

/// A shared secret; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn new(secret: impl Into<String>) -> Result<Self, String> {
        let secret = secret.into();
        let trimmed = secret.trim();
        if trimmed.is_empty() {
            return Err("the token is empty".into());
        }
        Ok(Token(trimmed.to_string()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(********)")
    }
}

impl Serialize for Token {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("********")
    }
}

/// Node labels, sorted by key.
pub type Labels = BTreeMap<String, String>;

pub(super) fn parse_bool(text: &str) -> Result<bool, String> {
    match text {
        "true" | "1" => Ok(true),
        "false" | "0" | "" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

pub(super) fn parse_path(text: &str) -> Result<PathBuf, String> {
    if text.is_empty() {
        Err("the path is empty".into())
    } else {
        Ok(PathBuf::from(text))
    }
}

pub(super) fn parse_node_name(text: &str) -> Result<String, String> {
    if is_dns_subdomain(text) {
        Ok(text.to_string())
    } else {
        Err("a node name must be a lowercase DNS name: letters, digits, '-' and '.', at most 253 characters".into())
    }
}

pub(super) fn parse_domain(text: &str) -> Result<String, String> {
    if is_dns_subdomain(text) {
        Ok(text.to_string())
    } else {
        Err("expected a lowercase DNS domain such as cluster.local".into())
    }
}

/// A CRI endpoint: `unix:///path` or a bare absolute socket path.
pub(super) fn parse_endpoint(text: &str) -> Result<String, String> {
    if text.starts_with("unix:///") || text.starts_with('/') {
        Ok(text.to_string())
    } else {
        Err("expected a unix socket, e.g. unix:///run/containerd/containerd.sock".into())
    }
}

pub(super) fn parse_server_url(text: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = text
        .parse()
        .map_err(|_| "not a URL; expected https://SERVER:6443".to_string())?;
    if uri.scheme_str() != Some("https") {
        return Err(
            "the server URL must start with https://, e.g. https://192.168.1.10:6443".into(),
        );
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("the server URL has no host; expected https://SERVER:6443".into());
    }
    Ok(uri)
}

/// This machine's hostname, the default node name.
pub(super) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_normalise() {
        assert_eq!(
            parse_cidr("10.42.0.0/16").unwrap().to_string(),
            "10.42.0.0/16"
        );
        assert_eq!(
            parse_cidr("10.42.7.1/16").unwrap().to_string(),
            "10.42.0.0/16"
        );
        assert_eq!(parse_cidr("fd00::/64").unwrap().to_string(), "fd00::/64");
    }

    #[test]
    fn bad_cidrs_say_why() {
        assert!(parse_cidr("10.42.0.0/33")
            .unwrap_err()
            .contains("at most 32"));
        assert!(parse_cidr("fd00::/129")
            .unwrap_err()
            .contains("at most 128"));
        assert!(parse_cidr("10.42.0.0")
            .unwrap_err()
            .contains("ADDRESS/PREFIX"));
        assert!(parse_cidr("10.42.0/16")
            .unwrap_err()
            .contains("not an IPv4"));
        assert!(parse_cidr("10.42.0.0/x")
            .unwrap_err()
            .contains("not a number"));
    }

    #[test]
    fn ports_and_ranges() {
        assert_eq!(parse_port("6443"), Ok(6443));
        assert!(parse_port("0").is_err());
        assert!(parse_port("65536").is_err());
        let r: PortRange = "30000-32767".parse().unwrap();
        assert!(r.contains(30000) && r.contains(32767) && !r.contains(32768));
        assert!("32767-30000"
            .parse::<PortRange>()
            .unwrap_err()
            .contains("lower"));
        assert!("30000".parse::<PortRange>().is_err());
        assert!("0-10".parse::<PortRange>().is_err());
    }

    #[test]
    fn components_list_valid_values_on_error() {
        assert_eq!("servicelb".parse::<Component>(), Ok(Component::ServiceLb));
        assert_eq!("traefik".parse::<Component>(), Ok(Component::Ingress));
        assert_eq!("coredns".parse::<Component>(), Ok(Component::Dns));
        let err = "ingress".parse::<Component>().unwrap_err();
        assert!(
            err.contains("\"ingress\"") && err.contains("traefik, servicelb, coredns"),
            "{err}"
        );
    }

    #[test]
    fn taints() {
        let t: Taint = "dedicated=gpu:NoSchedule".parse().unwrap();
        assert_eq!(
            (t.key.as_str(), t.value.as_deref(), t.effect),
            ("dedicated", Some("gpu"), TaintEffect::NoSchedule)
        );
        assert_eq!(t.to_string(), "dedicated=gpu:NoSchedule");
        let t: Taint = "example.com/maintenance:NoExecute".parse().unwrap();
        assert_eq!(t.value, None);
        assert!("dedicated=gpu"
            .parse::<Taint>()
            .unwrap_err()
            .contains("no effect"));
        assert!("dedicated=gpu:Sometimes"
            .parse::<Taint>()
            .unwrap_err()
            .contains("NoSchedule, PreferNoSchedule, NoExecute"));
        assert!("-bad=x:NoSchedule".parse::<Taint>().is_err());
    }

    #[test]
    fn labels() {
        assert_eq!(
            parse_label("example.com/role=edge"),
            Ok(("example.com/role".into(), "edge".into()))
        );
        assert_eq!(parse_label("empty="), Ok(("empty".into(), String::new())));
        assert!(parse_label("novalue").is_err());
        assert!(parse_label("Bad_Prefix.COM/x=y")
            .unwrap_err()
            .contains("prefix"));
        assert!(parse_label("k=has space").unwrap_err().contains("value"));
        assert!(parse_label(&format!("{}=v", "a".repeat(64))).is_err());
    }

    #[test]
    fn sans_modes_tokens() {
        assert!(check_san("10.0.0.1").is_ok());
        assert!(check_san("*.example.com").is_ok());
        assert!(check_san("not a name").is_err());
        assert_eq!(parse_mode("0644"), Ok(0o644));
        assert_eq!(parse_mode("600"), Ok(0o600));
        assert!(parse_mode("0999").is_err());
        assert!(Token::new("  ").is_err());
        assert_eq!(
            format!("{:?}", Token::new("s3cret").unwrap()),
            "Token(********)"
        );
    }
}
