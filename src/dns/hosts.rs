//! Names answered from tables rather than the cluster zone: the nodes
//! (k3s's `NodeHosts`: each Node's name → its InternalIP) and the extra
//! entries of the `kube-system/coredns-custom` ConfigMap, plus that
//! ConfigMap's per-domain forwarders.
//!
//! What rk3s reads of `coredns-custom` (k3s imports its `*.override` keys
//! into the main server block and its `*.server` keys as server blocks):
//! - in a `*.override` value, `hosts { … }` blocks: each `IP NAME [NAME…]`
//!   line becomes an entry (`fallthrough`, `ttl`, `reload`, `no_reverse`
//!   lines are accepted; the hosts TTL is k3s's 60 s); and a `forward . IP…`
//!   line replaces the node's upstream resolvers;
//! - in a `*.server` value, blocks `ZONE[:53] { forward . IP[:PORT]… }`:
//!   names in ZONE go to those resolvers.
//!
//! Everything else (other plugins, `hosts FILE`, `tls://` forwarders) is
//! skipped with a warning in the agent's log; it never stops the server.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::zone::{key, reverse_name};

/// k3s's NodeHosts and hosts-plugin TTL.
pub const HOSTS_TTL: u32 = 60;

/// Names → addresses, and the reverse.
#[derive(Debug, Default, Clone)]
pub struct HostTable {
    forward: HashMap<String, Vec<IpAddr>>,
    reverse: HashMap<String, Vec<Name>>,
}

impl HostTable {
    pub fn insert(&mut self, host: &str, ip: IpAddr) {
        let Ok(mut n) = Name::from_ascii(host) else {
            return;
        };
        n.set_fqdn(true);
        let ips = self.forward.entry(key(&n)).or_default();
        if !ips.contains(&ip) {
            ips.push(ip);
        }
        let names = self.reverse.entry(key(&reverse_name(ip))).or_default();
        if !names.contains(&n) {
            names.push(n);
        }
    }

    pub fn len(&self) -> usize {
        self.forward.len()
    }

    pub fn is_empty(&self) -> bool {
        self.forward.is_empty()
    }

    /// The records for `qname`/`qtype`: `None` when the table does not hold
    /// the name (the question goes on), `Some(vec![])` for NODATA.
    pub fn lookup(&self, qname: &Name, qtype: RecordType) -> Option<Vec<Record>> {
        let k = key(qname);
        if let Some(ips) = self.forward.get(&k) {
            return Some(
                ips.iter()
                    .filter_map(|ip| match (ip, qtype) {
                        (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => Some(RData::A(A(*v4))),
                        (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => {
                            Some(RData::AAAA(AAAA(*v6)))
                        }
                        _ => None,
                    })
                    .map(|d| Record::from_rdata(qname.clone(), HOSTS_TTL, d))
                    .collect(),
            );
        }
        let names = self.reverse.get(&k)?;
        if qtype != RecordType::PTR && qtype != RecordType::ANY {
            return Some(Vec::new());
        }
        Some(
            names
                .iter()
                .map(|n| Record::from_rdata(qname.clone(), HOSTS_TTL, RData::PTR(PTR(n.clone()))))
                .collect(),
        )
    }
}

/// What `coredns-custom` asks for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Custom {
    /// `hosts` entries from `*.override` keys.
    pub hosts: Vec<(IpAddr, String)>,
    /// `forward . …` from an `*.override` key: replaces the node's upstreams.
    pub upstreams: Option<Vec<SocketAddr>>,
    /// `*.server` blocks: (zone, resolvers), zone lowercase with a trailing dot.
    pub zones: Vec<(String, Vec<SocketAddr>)>,
    /// What was skipped, for the log.
    pub skipped: Vec<String>,
}

fn resolver(text: &str) -> Option<SocketAddr> {
    let text = text.strip_prefix("dns://").unwrap_or(text);
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, 53));
    }
    text.parse().ok()
}

fn forward_targets(words: &[&str], skipped: &mut Vec<String>) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for w in words {
        match resolver(w) {
            Some(a) => out.push(a),
            None => skipped.push(format!("forwarder {w:?} (only plain IP[:PORT] is read)")),
        }
    }
    out
}

/// Parses the ConfigMap's `data`.
pub fn parse_custom<'a>(data: impl IntoIterator<Item = (&'a String, &'a String)>) -> Custom {
    let mut c = Custom::default();
    for (k, v) in data {
        if k.ends_with(".override") {
            parse_override(v, &mut c);
        } else if k.ends_with(".server") {
            parse_server(v, &mut c);
        } else {
            c.skipped
                .push(format!("key {k:?} (only *.override and *.server are read)"));
        }
    }
    c
}

fn parse_override(text: &str, c: &mut Custom) {
    let mut in_hosts = false;
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        if in_hosts {
            if line == "}" {
                in_hosts = false;
            } else if let Ok(ip) = words[0].parse::<IpAddr>() {
                for name in &words[1..] {
                    c.hosts.push((ip, name.to_ascii_lowercase()));
                }
            } else if !["fallthrough", "ttl", "reload", "no_reverse"].contains(&words[0]) {
                c.skipped.push(format!("hosts line {line:?}"));
            }
            continue;
        }
        match words.as_slice() {
            ["hosts", "{"] => in_hosts = true,
            ["forward", ".", targets @ ..] => {
                let targets: Vec<&str> =
                    targets.iter().copied().take_while(|t| *t != "{").collect();
                c.upstreams = Some(forward_targets(&targets, &mut c.skipped));
            }
            _ => c.skipped.push(format!("override line {line:?}")),
        }
    }
}

fn parse_server(text: &str, c: &mut Custom) {
    let mut zone: Option<String> = None;
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        match (&zone, words.as_slice()) {
            (None, [z, "{"]) => {
                let z = z.strip_prefix("dns://").unwrap_or(z);
                let z = z.split(':').next().unwrap_or(z).trim_end_matches('.');
                zone = Some(format!("{}.", z.to_ascii_lowercase()));
            }
            (Some(_), ["}"]) => zone = None,
            (Some(z), ["forward", ".", targets @ ..]) => {
                let targets = forward_targets(targets, &mut c.skipped);
                if !targets.is_empty() {
                    c.zones.push((z.clone(), targets));
                }
            }
            _ => c.skipped.push(format!("server line {line:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::str::FromStr;

    use super::*;

    #[test]
    fn host_table_answers_forward_reverse_and_nodata() {
        let mut t = HostTable::default();
        t.insert("node-a", "192.168.1.5".parse().unwrap());
        let q = |n: &str, ty| t.lookup(&Name::from_str(n).unwrap(), ty);
        let a = q("NODE-A.", RecordType::A).unwrap();
        assert_eq!(a[0].data().to_string(), "192.168.1.5");
        assert_eq!(a[0].ttl(), HOSTS_TTL);
        assert_eq!(q("node-a.", RecordType::AAAA), Some(vec![]));
        let p = q("5.1.168.192.in-addr.arpa.", RecordType::PTR).unwrap();
        assert_eq!(p[0].data().to_string(), "node-a.");
        assert_eq!(q("node-b.", RecordType::A), None);
    }

    #[test]
    fn coredns_custom_hosts_forwarders_and_zones() {
        let data: BTreeMap<String, String> = [
            (
                "extra.override".to_string(),
                "hosts {\n  10.0.0.9 db.lan  db\n  fallthrough\n}\nforward . 9.9.9.9 1.1.1.1:5353\n".to_string(),
            ),
            (
                "corp.server".to_string(),
                "corp.example:53 {\n  errors\n  forward . 10.1.0.1\n}\n".to_string(),
            ),
            ("NodeHosts".to_string(), "1.2.3.4 x".to_string()),
        ]
        .into_iter()
        .collect();
        let c = parse_custom(&data);
        assert_eq!(
            c.hosts,
            vec![
                ("10.0.0.9".parse().unwrap(), "db.lan".to_string()),
                ("10.0.0.9".parse().unwrap(), "db".to_string())
            ]
        );
        assert_eq!(
            c.upstreams,
            Some(vec![
                "9.9.9.9:53".parse().unwrap(),
                "1.1.1.1:5353".parse().unwrap()
            ])
        );
        assert_eq!(
            c.zones,
            vec![(
                "corp.example.".to_string(),
                vec!["10.1.0.1:53".parse().unwrap()]
            )]
        );
        assert_eq!(c.skipped.len(), 2, "{:?}", c.skipped);
    }
}
