//! The cluster zone: every name the Kubernetes DNS specification
//! (kubernetes/dns `docs/specification.md`, schema 1.1.0) defines under
//! `--cluster-domain`, built from Services and EndpointSlices into an
//! immutable table that answers a question without I/O.
//!
//! What it holds, for Service `web` in namespace `ns` and zone `cluster.local`:
//! - ClusterIP Services: `web.ns.svc.cluster.local` A/AAAA → the ClusterIPs;
//!   `_http._tcp.web.ns.svc…` SRV per named port (target the Service name);
//!   SRV for every port at the Service name; PTR for each ClusterIP.
//! - Headless Services: A/AAAA per ready endpoint address at the Service
//!   name; `<hostname>.web.ns.svc…` per endpoint (the endpoint's hostname,
//!   else its address with dashes, as CoreDNS does), SRV per named port
//!   targeting those names, PTR for each endpoint address.
//! - ExternalName Services: a CNAME to `spec.externalName`, for every type.
//! - `<a-b-c-d>.<ns>.pod.cluster.local` A (and the dashed IPv6 form for
//!   AAAA), answered for any well-formed address (CoreDNS's `pods insecure`,
//!   which k3s configures).
//! - `dns-version.cluster.local` TXT `"1.1.0"`; SOA and NS at the apex.
//!
//! Negative answers follow the spec and RFC 2308: a name that exists (it
//! holds records of another type, or it is an empty non-terminal such as
//! `svc.cluster.local` or `ns.svc.cluster.local`) answers NOERROR with no
//! records (NODATA); any other name in the zone answers NXDOMAIN. Both carry
//! the zone's SOA in the authority section, whose minimum (5 s) bounds how
//! long resolvers cache the denial. Every record has CoreDNS's default TTL, 5 s.
//!
//! Reverse names (`in-addr.arpa`, `ip6.arpa`) are answered when the address
//! belongs to a Service or an endpoint; otherwise [`Lookup::NotOurs`] sends
//! the question upstream, like k3s's `fallthrough in-addr.arpa ip6.arpa`.
//!
//! **Partial:** a namespace "exists" for NODATA purposes when it has a
//! Service (namespaces are not watched); any `<ns>.pod` name answers NODATA.
//! Wildcard queries (deprecated by the spec) are NXDOMAIN.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// CoreDNS kubernetes plugin's default TTL for every record it serves.
pub const TTL: u32 = 5;
/// The schema version `dns-version.<zone>` answers.
pub const SCHEMA_VERSION: &str = "1.1.0";

/// A Service with the EndpointSlices that belong to it.
pub struct ServiceEntry<'a> {
    pub service: &'a Service,
    pub slices: &'a [Arc<EndpointSlice>],
}

/// An answer from the zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The name is not in the cluster zone (nor a known reverse name).
    NotOurs,
    /// An authoritative answer: records, NODATA or NXDOMAIN.
    Answer(Reply),
}

/// The sections of an answer and its response code.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reply {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub authority: Vec<Record>,
    pub additionals: Vec<Record>,
}

/// The cluster zone, immutable once built.
pub struct Zone {
    apex: Name,
    apex_key: String,
    soa: Record,
    /// Owner name (lowercase, absolute, trailing dot) → its records.
    names: HashMap<String, Vec<Record>>,
    /// Names that exist without records of their own.
    empty_non_terminals: HashSet<String>,
    services: usize,
}

/// The lowercase absolute text of a name, the key of every table here.
pub fn key(name: &Name) -> String {
    let mut s = name.to_ascii().to_ascii_lowercase();
    if !s.ends_with('.') {
        s.push('.');
    }
    s
}

fn name(text: &str) -> Option<Name> {
    let mut n = Name::from_ascii(text).ok()?;
    n.set_fqdn(true);
    Some(n)
}

/// The reverse-lookup name of an address (`d.c.b.a.in-addr.arpa.`).
pub fn reverse_name(ip: IpAddr) -> Name {
    let mut n = Name::from(ip);
    n.set_fqdn(true);
    n
}

/// An address with its separators replaced by dashes (`10-42-0-5`), the
/// label the spec and CoreDNS use for pods and unnamed endpoints.
pub fn dashed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

fn undash(label: &str) -> Option<IpAddr> {
    if label.contains(':') || label.contains('.') {
        return None;
    }
    let v4 = label.replace('-', ".");
    if let Ok(ip) = v4.parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(ip));
    }
    label
        .replace('-', ":")
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

fn addr_record(owner: &Name, ip: IpAddr) -> Record {
    let data = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(owner.clone(), TTL, data)
}

fn wants(qtype: RecordType, rtype: RecordType) -> bool {
    qtype == rtype || qtype == RecordType::ANY
}

/// The ready addresses of `entry`'s slices, each with its endpoint hostname,
/// deduplicated (an address may sit in two slices while they are rewritten).
fn ready_endpoints(entry: &ServiceEntry<'_>) -> Vec<(IpAddr, Option<String>)> {
    let publish_not_ready = entry
        .service
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for slice in entry.slices {
        if slice.address_type == "FQDN" {
            continue;
        }
        for ep in &slice.endpoints {
            // A nil `ready` means ready (discovery/v1's contract).
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if !ready && !publish_not_ready {
                continue;
            }
            for a in &ep.addresses {
                if let Ok(ip) = a.parse::<IpAddr>() {
                    if seen.insert(ip) {
                        out.push((ip, ep.hostname.clone()));
                    }
                }
            }
        }
    }
    out
}

/// Named ports as `(name, protocol, port)`, from the Service for a
/// ClusterIP Service and from the slices (the endpoints' ports) otherwise.
fn named_ports(entry: &ServiceEntry<'_>, headless: bool) -> Vec<(String, String, u16)> {
    let mut out: Vec<(String, String, u16)> = Vec::new();
    let mut push = |name: &Option<String>, proto: &Option<String>, port: Option<i32>| {
        let (Some(name), Some(port)) = (name.as_deref(), port) else {
            return;
        };
        let Ok(port) = u16::try_from(port) else {
            return;
        };
        if name.is_empty() {
            return;
        }
        let proto = proto.as_deref().unwrap_or("TCP").to_ascii_lowercase();
        let item = (name.to_ascii_lowercase(), proto, port);
        if !out.contains(&item) {
            out.push(item);
        }
    };
    if headless {
        for slice in entry.slices {
            for p in slice.ports.iter().flatten() {
                push(&p.name, &p.protocol, p.port);
            }
        }
    } else if let Some(spec) = &entry.service.spec {
        for p in spec.ports.iter().flatten() {
            push(&p.name, &p.protocol, Some(p.port));
        }
    }
    out
}

struct Builder {
    names: HashMap<String, Vec<Record>>,
    /// Names that exist even with no records (a headless Service with no
    /// ready endpoint answers NODATA, not NXDOMAIN).
    exists: HashSet<String>,
}

impl Builder {
    fn add(&mut self, record: Record) {
        let list = self.names.entry(key(record.name())).or_default();
        if !list.contains(&record) {
            list.push(record);
        }
    }
}

impl Zone {
    /// Builds the zone `domain` (e.g. `cluster.local`) from `services`;
    /// `dns_ip` is the cluster DNS address (the apex NS's address) and
    /// `serial` the SOA serial (seconds since the epoch of the last change).
    pub fn build<'a>(
        domain: &str,
        dns_ip: IpAddr,
        serial: u32,
        services: impl IntoIterator<Item = ServiceEntry<'a>>,
    ) -> Zone {
        let apex = name(domain).unwrap_or_else(|| name("cluster.local").expect("valid"));
        let apex_key = key(&apex);
        let at = |prefix: &str| name(&format!("{prefix}.{apex_key}"));
        let ns_name = at("ns.dns").expect("valid");
        let soa = Record::from_rdata(
            apex.clone(),
            TTL,
            RData::SOA(SOA::new(
                ns_name.clone(),
                at("hostmaster").expect("valid"),
                serial,
                7200,
                1800,
                86400,
                TTL,
            )),
        );
        let mut b = Builder {
            names: HashMap::new(),
            exists: HashSet::new(),
        };
        b.add(soa.clone());
        b.add(Record::from_rdata(
            apex.clone(),
            TTL,
            RData::NS(NS(ns_name.clone())),
        ));
        b.add(addr_record(&ns_name, dns_ip));
        b.add(Record::from_rdata(
            at("dns-version").expect("valid"),
            TTL,
            RData::TXT(TXT::new(vec![SCHEMA_VERSION.to_string()])),
        ));
        let mut count = 0;
        for entry in services {
            count += 1;
            add_service(&mut b, &apex_key, &entry);
        }
        let mut empty_non_terminals: HashSet<String> = std::mem::take(&mut b.exists);
        let owners: Vec<String> = b
            .names
            .keys()
            .chain(empty_non_terminals.iter())
            .cloned()
            .collect();
        for fixed in ["svc", "pod"] {
            empty_non_terminals.insert(format!("{fixed}.{apex_key}"));
        }
        for owner in &owners {
            let Some(inside) = owner.strip_suffix(&apex_key) else {
                continue;
            };
            // Every proper ancestor of an owner, down to the apex, exists.
            let mut rest = inside;
            while let Some((_, parent)) = rest.split_once('.') {
                if parent.is_empty() {
                    break;
                }
                let full = format!("{parent}{apex_key}");
                if !b.names.contains_key(&full) {
                    empty_non_terminals.insert(full);
                }
                rest = parent;
            }
        }
        empty_non_terminals.retain(|n| !b.names.contains_key(n));
        Zone {
            apex,
            apex_key,
            soa,
            names: b.names,
            empty_non_terminals,
            services: count,
        }
    }

    /// How many Services the zone was built from.
    pub fn service_count(&self) -> usize {
        self.services
    }

    /// The zone's apex (`cluster.local.`).
    pub fn apex(&self) -> &Name {
        &self.apex
    }

    /// Answers `qname`/`qtype` from the zone.
    pub fn lookup(&self, qname: &Name, qtype: RecordType) -> Lookup {
        let k = key(qname);
        let in_zone = k == self.apex_key || k.ends_with(&format!(".{}", self.apex_key));
        if let Some(records) = self.names.get(&k) {
            return Lookup::Answer(self.answer_from(records, qtype));
        }
        if !in_zone {
            // Reverse names we don't know, and everything else, go upstream.
            return Lookup::NotOurs;
        }
        if let Some(reply) = self.pod_lookup(&k, qname, qtype) {
            return Lookup::Answer(reply);
        }
        if self.empty_non_terminals.contains(&k) || self.is_pod_namespace(&k) {
            return Lookup::Answer(self.negative(ResponseCode::NoError));
        }
        Lookup::Answer(self.negative(ResponseCode::NXDomain))
    }

    fn answer_from(&self, records: &[Record], qtype: RecordType) -> Reply {
        let cname = records
            .iter()
            .find(|r| r.record_type() == RecordType::CNAME);
        if let Some(cname) = cname {
            if qtype != RecordType::CNAME {
                let mut reply = Reply {
                    answers: vec![cname.clone()],
                    ..Reply::default()
                };
                // Follow a CNAME that stays in the zone (one level).
                if let RData::CNAME(CNAME(target)) = cname.data() {
                    if let Some(more) = self.names.get(&key(target)) {
                        let chased = self.answer_from(more, qtype);
                        if chased.answers.first().map(Record::record_type)
                            != Some(RecordType::CNAME)
                        {
                            reply.answers.extend(chased.answers);
                            reply.additionals = chased.additionals;
                        }
                    }
                }
                return reply;
            }
        }
        let answers: Vec<Record> = records
            .iter()
            .filter(|r| wants(qtype, r.record_type()))
            .cloned()
            .collect();
        if answers.is_empty() {
            return self.negative(ResponseCode::NoError);
        }
        let mut additionals = Vec::new();
        for r in &answers {
            let target = match r.data() {
                RData::SRV(srv) => srv.target(),
                RData::NS(NS(t)) => t,
                _ => continue,
            };
            for extra in self.names.get(&key(target)).into_iter().flatten() {
                let t = extra.record_type();
                if (t == RecordType::A || t == RecordType::AAAA) && !additionals.contains(extra) {
                    additionals.push(extra.clone());
                }
            }
        }
        Reply {
            rcode: ResponseCode::NoError,
            answers,
            authority: Vec::new(),
            additionals,
        }
    }

    /// NODATA (`NoError`) or NXDOMAIN, with the SOA for negative caching.
    fn negative(&self, rcode: ResponseCode) -> Reply {
        Reply {
            rcode,
            answers: Vec::new(),
            authority: vec![self.soa.clone()],
            additionals: Vec::new(),
        }
    }

    fn pod_suffix(&self) -> String {
        format!(".pod.{}", self.apex_key)
    }

    /// `<ns>.pod.<zone>`: any namespace may hold pods.
    fn is_pod_namespace(&self, k: &str) -> bool {
        k.strip_suffix(&self.pod_suffix())
            .is_some_and(|ns| !ns.is_empty() && !ns.contains('.'))
    }

    /// `<a-b-c-d>.<ns>.pod.<zone>`.
    fn pod_lookup(&self, k: &str, qname: &Name, qtype: RecordType) -> Option<Reply> {
        let inside = k.strip_suffix(&self.pod_suffix())?;
        let (label, ns) = inside.split_once('.')?;
        if ns.is_empty() || ns.contains('.') {
            return None;
        }
        let Some(ip) = undash(label) else {
            return Some(self.negative(ResponseCode::NXDomain));
        };
        let record = addr_record(qname, ip);
        if !wants(qtype, record.record_type()) {
            return Some(self.negative(ResponseCode::NoError));
        }
        Some(Reply {
            rcode: ResponseCode::NoError,
            answers: vec![record],
            ..Reply::default()
        })
    }
}

fn add_service(b: &mut Builder, apex_key: &str, entry: &ServiceEntry<'_>) {
    let meta = &entry.service.metadata;
    let (Some(svc), Some(ns)) = (meta.name.as_deref(), meta.namespace.as_deref()) else {
        return;
    };
    let Some(spec) = &entry.service.spec else {
        return;
    };
    let Some(base) = name(&format!("{svc}.{ns}.svc.{apex_key}")) else {
        return;
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        if let Some(target) = spec.external_name.as_deref().and_then(name) {
            b.add(Record::from_rdata(base, TTL, RData::CNAME(CNAME(target))));
        }
        return;
    }
    let cluster_ips: Vec<IpAddr> = match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => ips.iter().filter_map(|i| i.parse().ok()).collect(),
        _ => spec
            .cluster_ip
            .iter()
            .filter_map(|i| i.parse().ok())
            .collect(),
    };
    let headless = spec.cluster_ip.as_deref() == Some("None") || cluster_ips.is_empty();
    let ports = named_ports(entry, headless);
    if !headless {
        for ip in &cluster_ips {
            b.add(addr_record(&base, *ip));
            b.add(Record::from_rdata(
                reverse_name(*ip),
                TTL,
                RData::PTR(PTR(base.clone())),
            ));
        }
        for (port_name, proto, port) in &ports {
            let srv = RData::SRV(SRV::new(0, 100, *port, base.clone()));
            if let Some(owner) = name(&format!("_{port_name}._{proto}.{}", key(&base))) {
                b.add(Record::from_rdata(owner, TTL, srv.clone()));
            }
            b.add(Record::from_rdata(base.clone(), TTL, srv));
        }
        return;
    }
    b.exists.insert(key(&base));
    let endpoints = ready_endpoints(entry);
    let weight = if endpoints.is_empty() {
        100
    } else {
        (100 / endpoints.len()).max(1) as u16
    };
    let mut by_port: BTreeMap<(String, String, u16), Vec<Name>> = BTreeMap::new();
    for (ip, hostname) in &endpoints {
        let label = hostname.clone().unwrap_or_else(|| dashed(*ip));
        let Some(host) = name(&format!("{label}.{}", key(&base))) else {
            continue;
        };
        b.add(addr_record(&base, *ip));
        b.add(addr_record(&host, *ip));
        b.add(Record::from_rdata(
            reverse_name(*ip),
            TTL,
            RData::PTR(PTR(host.clone())),
        ));
        for p in &ports {
            by_port.entry(p.clone()).or_default().push(host.clone());
        }
    }
    for ((port_name, proto, port), hosts) in by_port {
        let owner = name(&format!("_{port_name}._{proto}.{}", key(&base)));
        for host in hosts {
            let srv = RData::SRV(SRV::new(0, weight, port, host));
            if let Some(owner) = &owner {
                b.add(Record::from_rdata(owner.clone(), TTL, srv.clone()));
            }
            b.add(Record::from_rdata(base.clone(), TTL, srv));
        }
    }
}

#[cfg(test)]
#[path = "zone_tests.rs"]
mod tests;
