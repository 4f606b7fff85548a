//! The node's resolver configuration: the upstream resolvers cluster DNS
//! forwards to, and what pods with `dnsPolicy: Default` inherit.
//!
//! Like kubelet, a `resolv.conf` whose only nameserver is systemd-resolved's
//! stub (127.0.0.53) is replaced by `/run/systemd/resolve/resolv.conf`,
//! which lists the real upstreams (the stub answers on the host's loopback
//! only, so pods could not use it, and forwarding to it would only add a hop).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// The host's resolver configuration file.
pub const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";
/// systemd-resolved's list of real upstream servers.
pub const SYSTEMD_RESOLVED_CONF: &str = "/run/systemd/resolve/resolv.conf";
const SYSTEMD_STUB: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 53));

/// A parsed `resolv.conf`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<IpAddr>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

impl ResolvConf {
    pub fn parse(text: &str) -> ResolvConf {
        let mut r = ResolvConf::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("").trim();
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    // A zone index (fe80::1%eth0) cannot be used from pods; skip it.
                    if let Some(Ok(ip)) = words.next().map(str::parse::<IpAddr>) {
                        r.nameservers.push(ip);
                    }
                }
                // The last search/domain line wins, as in glibc.
                Some("search") | Some("domain") => r.search = words.map(str::to_string).collect(),
                Some("options") => r.options.extend(words.map(str::to_string)),
                _ => {}
            }
        }
        r
    }

    /// The upstreams as socket addresses (port 53).
    pub fn upstreams(&self) -> Vec<SocketAddr> {
        self.nameservers
            .iter()
            .map(|ip| SocketAddr::new(*ip, 53))
            .collect()
    }

    fn is_systemd_stub(&self) -> bool {
        !self.nameservers.is_empty() && self.nameservers.iter().all(|ip| *ip == SYSTEMD_STUB)
    }
}

/// Which file to read: `configured` (`--resolv-conf`) as given; otherwise
/// the host's, or systemd-resolved's real list when the host's only names
/// the stub.
pub fn choose(configured: Option<&Path>) -> PathBuf {
    if let Some(p) = configured {
        return p.to_path_buf();
    }
    let host = Path::new(HOST_RESOLV_CONF);
    let stub = std::fs::read_to_string(host)
        .map(|t| ResolvConf::parse(&t).is_systemd_stub())
        .unwrap_or(false);
    if stub && Path::new(SYSTEMD_RESOLVED_CONF).exists() {
        PathBuf::from(SYSTEMD_RESOLVED_CONF)
    } else {
        host.to_path_buf()
    }
}

/// Reads and parses `path` (an unreadable file reads as empty).
pub fn load(path: &Path) -> ResolvConf {
    match std::fs::read_to_string(path) {
        Ok(text) => ResolvConf::parse(&text),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "failed to read the resolver configuration");
            ResolvConf::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nameservers_search_and_options() {
        let r = ResolvConf::parse(
            "# comment\nnameserver 192.168.1.1\nnameserver fe80::1%eth0\nnameserver 2001:db8::1 ; x\ndomain a.example\nsearch lan example.com\noptions edns0 ndots:2\n",
        );
        assert_eq!(
            r.nameservers,
            vec![
                "192.168.1.1".parse::<IpAddr>().unwrap(),
                "2001:db8::1".parse().unwrap()
            ]
        );
        assert_eq!(r.search, ["lan", "example.com"]);
        assert_eq!(r.options, ["edns0", "ndots:2"]);
        assert_eq!(r.upstreams()[0], "192.168.1.1:53".parse().unwrap());
    }

    #[test]
    fn systemd_stub_is_recognised() {
        assert!(
            ResolvConf::parse("nameserver 127.0.0.53\noptions edns0 trust-ad\n").is_systemd_stub()
        );
        assert!(
            !ResolvConf::parse("nameserver 127.0.0.53\nnameserver 1.1.1.1\n").is_systemd_stub()
        );
        assert!(!ResolvConf::parse("").is_systemd_stub());
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("r");
        assert_eq!(choose(Some(&f)), f);
    }
}
