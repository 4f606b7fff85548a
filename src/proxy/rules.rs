//! The nftables content of table `ip rk3s-proxy`: a fixed skeleton
//! ([`skeleton`]) and, per Service, its chains, affinity sets and map
//! elements ([`service_rules`]). Nothing here talks to the kernel.
//!
//! The skeleton follows kube-proxy's nftables mode:
//! - `nat-prerouting`/`nat-output` jump to `services`, which looks the
//!   packet up in two verdict maps: `service-ips` (ClusterIPs, external
//!   and LoadBalancer IPs: `addr . proto . port`) and, for packets to this
//!   node's IPs (set `nodeport-ips`), `service-nodeports` (`proto . port`);
//! - a Service port with endpoints has a chain `svc-…` (ClusterIP traffic)
//!   that picks an endpoint chain `ep-…` with `numgen random mod N vmap`;
//!   the endpoint chain DNATs. External traffic enters `ext-…`, which marks
//!   it for masquerade (or, with `externalTrafficPolicy: Local`, keeps the
//!   client's address and picks among local endpoints only);
//! - a Service port without endpoints sits in `no-endpoint-services` /
//!   `no-endpoint-nodeports` instead, checked in filter chains before NAT,
//!   and rejected at once (ICMP port unreachable: `connection refused`);
//! - `cluster-ips-check` rejects a ClusterIP on a port it does not serve;
//! - packets marked `0x4000` (`mark-for-masquerade`) are masqueraded with
//!   `fully-random` in `nat-postrouting`; the overlay's table `ip rk3s`
//!   leaves marked packets to us;
//! - `sessionAffinity: ClientIP`: one dynamic set per endpoint with the
//!   Service's timeout; the endpoint chain records the client, the service
//!   chain sends a recorded client back to the same endpoint.
//!
//! Chain and set names carry a short hash of the service port (and
//! endpoint) so they are unique and stable, plus the readable id.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use sha2::{Digest, Sha256};

use super::model::{Endpoint, ServicePort};
use crate::hostnet::nft::MASQUERADE_MARK;

/// The table the service proxy owns.
pub const TABLE: &str = "rk3s-proxy";

pub const SERVICE_IPS: &str = "service-ips";
pub const SERVICE_NODEPORTS: &str = "service-nodeports";
pub const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
pub const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";
pub const CLUSTER_IPS: &str = "cluster-ips";
pub const NODEPORT_IPS: &str = "nodeport-ips";
pub const FIREWALL_IPS: &str = "firewall-ips";

/// One element of a map or set: `(map or set name, key)`.
pub type ElementKey = (&'static str, String);

/// What one Service adds to the table. The maps' values are verdicts
/// (`goto svc-…`); set elements have an empty value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceRules {
    /// Chain name → its rules, in order.
    pub chains: BTreeMap<String, Vec<String>>,
    /// Affinity set name → its declaration body.
    pub sets: BTreeMap<String, String>,
    pub elements: BTreeMap<ElementKey, String>,
}

/// What the proxy knows about the node it runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    pub node_name: String,
    /// The addresses NodePorts (and the LoadBalancer ports of ServiceLB)
    /// answer on: the node's own IPs, not 127.0.0.1 unless listed.
    pub node_ips: Vec<Ipv4Addr>,
    /// The pod network: traffic from outside it to a ClusterIP is
    /// masqueraded; pod traffic to an `externalTrafficPolicy: Local`
    /// service short-circuits to all endpoints.
    pub cluster_cidr: Ipv4Net,
}

/// `svc-HASH-ns/name/proto/port` and friends: the hash keeps names unique
/// whatever the id contains, the id keeps them readable.
fn hashed(prefix: &str, id: &str) -> String {
    let digest = Sha256::digest(id.as_bytes());
    format!("{prefix}-{}-{id}", &hex::encode_upper(&digest[..4]))
}

pub fn service_chain(port: &ServicePort) -> String {
    hashed("svc", &port.id)
}

pub fn external_chain(port: &ServicePort) -> String {
    hashed("ext", &port.id)
}

pub fn endpoint_chain(port: &ServicePort, ep: &Endpoint) -> String {
    hashed("ep", &format!("{}__{}/{}", port.id, ep.ip, ep.port))
}

/// The timeout is part of the name: a new timeout is a new set, so the
/// rules that use it change too and the old set can go.
pub fn affinity_set(port: &ServicePort, ep: &Endpoint) -> String {
    let timeout = port.affinity_seconds.unwrap_or_default();
    hashed(
        "aff",
        &format!("{}__{}/{}__{timeout}s", port.id, ep.ip, ep.port),
    )
}

/// The maps and the set that hold Services' elements: `(name, (kind,
/// type))`. The incremental sync re-declares them to add elements (an
/// `add map … { elements = … }` needs no listing of the table).
const ELEMENT_HOLDERS: [(&str, (&str, &str)); 6] = [
    (
        SERVICE_IPS,
        ("map", "ipv4_addr . inet_proto . inet_service : verdict"),
    ),
    (
        NO_ENDPOINT_SERVICES,
        ("map", "ipv4_addr . inet_proto . inet_service : verdict"),
    ),
    (SERVICE_NODEPORTS, ("map", "inet_proto . inet_service : verdict")),
    (
        NO_ENDPOINT_NODEPORTS,
        ("map", "inet_proto . inet_service : verdict"),
    ),
    (CLUSTER_IPS, ("set", "ipv4_addr")),
    (
        FIREWALL_IPS,
        ("map", "ipv4_addr . inet_proto . inet_service : verdict"),
    ),
];

/// `("map" | "set", type)` of a map or set that holds Service elements.
pub fn element_holder(name: &str) -> Option<(&'static str, &'static str)> {
    ELEMENT_HOLDERS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, decl)| *decl)
}

/// The table with its fixed chains, maps and sets (no Service content),
/// as a block for `table ip rk3s-proxy { … }`.
pub fn skeleton(node: &NodeView) -> String {
    let mark = format!("{MASQUERADE_MARK:#x}");
    let mut s = String::new();
    for (name, (kind, ty)) in ELEMENT_HOLDERS {
        let _ = writeln!(s, "\t{kind} {name} {{ type {ty}; }}");
    }
    let _ = write!(s, "\tset {NODEPORT_IPS} {{ type ipv4_addr;");
    if !node.node_ips.is_empty() {
        let ips: Vec<String> = node.node_ips.iter().map(|ip| ip.to_string()).collect();
        let _ = write!(s, " elements = {{ {} }};", ips.join(", "));
    }
    s.push_str(" }\n");
    let chains: [(&str, &[&str]); 15] = [
        (
            "nat-prerouting",
            &[
                "type nat hook prerouting priority dstnat; policy accept;",
                "jump services",
            ],
        ),
        (
            "nat-output",
            &[
                "type nat hook output priority -100; policy accept;",
                "jump services",
            ],
        ),
        (
            "nat-postrouting",
            &[
                "type nat hook postrouting priority srcnat; policy accept;",
                "jump masquerading",
            ],
        ),
        // Filter chains before NAT see packets to Services without
        // endpoints still addressed to the Service.
        (
            "filter-input",
            &[
                "type filter hook input priority -110; policy accept;",
                "ct state new jump nodeport-endpoints-check",
                "ct state new jump service-endpoints-check",
            ],
        ),
        // `loadBalancerSourceRanges`: before the DNAT, while the packet
        // still carries the LoadBalancer IP (kube-proxy's firewall check).
        (
            "filter-prerouting",
            &[
                "type filter hook prerouting priority -110; policy accept;",
                "ct state new jump firewall-check",
            ],
        ),
        (
            "firewall-check",
            &["ip daddr . meta l4proto . th dport vmap @firewall-ips"],
        ),
        (
            "filter-forward",
            &[
                "type filter hook forward priority -110; policy accept;",
                "ct state new jump service-endpoints-check",
                "ct state new jump cluster-ips-check",
            ],
        ),
        (
            "filter-output",
            &[
                "type filter hook output priority -110; policy accept;",
                "ct state new jump service-endpoints-check",
            ],
        ),
        // After the output NAT hook (-100): a ClusterIP still unchanged
        // was not served on that port.
        (
            "filter-output-post-dnat",
            &[
                "type filter hook output priority -90; policy accept;",
                "ct state new jump cluster-ips-check",
            ],
        ),
        (
            "services",
            &[
                "ip daddr . meta l4proto . th dport vmap @service-ips",
                "ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports",
            ],
        ),
        (
            "service-endpoints-check",
            &["ip daddr . meta l4proto . th dport vmap @no-endpoint-services"],
        ),
        (
            "nodeport-endpoints-check",
            &["ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports"],
        ),
        ("cluster-ips-check", &["ip daddr @cluster-ips reject"]),
        ("reject-chain", &["reject"]),
        ("mark-for-masquerade", &[]),
    ];
    for (name, rules) in chains {
        let _ = writeln!(s, "\tchain {name} {{");
        for rule in rules {
            let _ = writeln!(s, "\t\t{rule}");
        }
        if name == "mark-for-masquerade" {
            let _ = writeln!(s, "\t\tmeta mark set meta mark | {mark}");
        }
        s.push_str("\t}\n");
    }
    let _ = writeln!(
        s,
        "\tchain masquerading {{\n\t\tmeta mark & {mark} == 0 return\n\t\tmeta mark set meta mark ^ {mark}\n\t\tmasquerade fully-random\n\t}}"
    );
    s
}

/// The rules of every port of one Service.
pub fn service_rules(ports: &[ServicePort], node: &NodeView) -> ServiceRules {
    let mut out = ServiceRules::default();
    for port in ports {
        add_port(&mut out, port, node);
    }
    out
}

fn add_port(out: &mut ServiceRules, port: &ServicePort, node: &NodeView) {
    let proto = port.protocol.nft();
    let cluster = node.cluster_cidr.trunc();
    out.elements
        .insert((CLUSTER_IPS, port.cluster_ip.to_string()), String::new());
    let internal = port.internal_endpoints();
    let external = port.external_endpoints();
    let any = !port.endpoints.is_empty();
    let cip_key = format!("{} . {proto} . {}", port.cluster_ip, port.port);

    // Endpoint chains for every endpoint some traffic can reach.
    let mut used: Vec<Endpoint> = internal.to_vec();
    if port.has_external() {
        used.extend(external);
        if port.external_local {
            // Pod and host traffic to an ETP Local service use all endpoints.
            used.extend(port.endpoints.iter().copied());
        }
    }
    used.sort();
    used.dedup();
    for ep in &used {
        let mut rules = vec![format!("ip saddr {} jump mark-for-masquerade", ep.ip)];
        if let Some(timeout) = port.affinity_seconds {
            let set = affinity_set(port, ep);
            out.sets.insert(
                set.clone(),
                format!("type ipv4_addr; flags dynamic,timeout; timeout {timeout}s;"),
            );
            rules.push(format!("update @{set} {{ ip saddr }}"));
        }
        rules.push(format!(
            "meta l4proto {proto} dnat to {}:{}",
            ep.ip, ep.port
        ));
        out.chains.insert(endpoint_chain(port, ep), rules);
    }

    // ClusterIP traffic.
    let svc_chain = service_chain(port);
    if !internal.is_empty() {
        let mut rules = vec![format!(
            "ip daddr {} {proto} dport {} ip saddr != {cluster} jump mark-for-masquerade",
            port.cluster_ip, port.port
        )];
        rules.extend(dispatch(port, internal));
        out.chains.insert(svc_chain.clone(), rules);
        out.elements
            .insert((SERVICE_IPS, cip_key), format!("goto {svc_chain}"));
    } else if any {
        // internalTrafficPolicy: Local without a local endpoint.
        out.elements
            .insert((NO_ENDPOINT_SERVICES, cip_key), "drop".into());
    } else {
        out.elements
            .insert((NO_ENDPOINT_SERVICES, cip_key), "goto reject-chain".into());
    }

    // External traffic: NodePort, external IPs, LoadBalancer IPs.
    if !port.has_external() {
        return;
    }
    if !port.source_ranges.is_empty() && !port.lb_ips.is_empty() {
        let fw_chain = hashed("fw", &port.id);
        let ranges: Vec<String> = port.source_ranges.iter().map(|r| r.to_string()).collect();
        out.chains.insert(
            fw_chain.clone(),
            vec![format!("ip saddr != {{ {} }} drop", ranges.join(", "))],
        );
        for ip in &port.lb_ips {
            out.elements.insert(
                (FIREWALL_IPS, format!("{ip} . {proto} . {}", port.port)),
                format!("goto {fw_chain}"),
            );
        }
    }
    let ext_chain = external_chain(port);
    let mut ext_keys: Vec<ElementKey> = port
        .external_ips
        .iter()
        .map(|ip| (SERVICE_IPS, format!("{ip} . {proto} . {}", port.port)))
        .collect();
    if let Some(np) = port.node_port {
        ext_keys.push((SERVICE_NODEPORTS, format!("{proto} . {np}")));
    }
    if !any {
        for (map, key) in ext_keys {
            let map = if map == SERVICE_NODEPORTS {
                NO_ENDPOINT_NODEPORTS
            } else {
                NO_ENDPOINT_SERVICES
            };
            out.elements.insert((map, key), "goto reject-chain".into());
        }
        return;
    }
    let mut rules = Vec::new();
    if port.external_local {
        // kube-proxy's short-circuits: pods and the node itself reach
        // every endpoint; only traffic from outside stays on this node,
        // unmasqueraded so the backend sees the client.
        let all_chain = hashed("all", &port.id);
        let mut all = Vec::new();
        all.extend(dispatch(port, &port.endpoints));
        out.chains.insert(all_chain.clone(), all);
        rules.push(format!("ip saddr {cluster} goto {all_chain}"));
        rules.push("fib saddr type local jump mark-for-masquerade".into());
        rules.push(format!("fib saddr type local goto {all_chain}"));
        if external.is_empty() {
            rules.push("drop".into());
        } else {
            rules.extend(dispatch(port, external));
        }
    } else {
        rules.push("jump mark-for-masquerade".into());
        rules.extend(dispatch(port, external));
    }
    out.chains.insert(ext_chain.clone(), rules);
    for key in ext_keys {
        out.elements.insert(key, format!("goto {ext_chain}"));
    }
}

/// Affinity look-ups, then a random pick among `eps` (non-empty).
fn dispatch(port: &ServicePort, eps: &[Endpoint]) -> Vec<String> {
    let mut rules = Vec::new();
    if port.affinity_seconds.is_some() {
        for ep in eps {
            rules.push(format!(
                "ip saddr @{} goto {}",
                affinity_set(port, ep),
                endpoint_chain(port, ep)
            ));
        }
    }
    let arms: Vec<String> = eps
        .iter()
        .enumerate()
        .map(|(i, ep)| format!("{i} : goto {}", endpoint_chain(port, ep)))
        .collect();
    rules.push(format!(
        "numgen random mod {} vmap {{ {} }}",
        eps.len(),
        arms.join(", ")
    ));
    rules
}
