//! The nftables content of table `ip rk3s-proxy`: a fixed skeleton
//! ([`skeleton`]) and, per Service, its chains, affinity sets and map
//! elements ([`service_rules`]). Nothing here talks to the kernel.
//!
//! The skeleton follows kube-proxy's nftables mode:
//! - `nat-prerouting`/`nat-output` jump to `services`, which looks the
//!   packet up in two verdict maps: `service-ips` (ClusterIPs, external
//!   and LoadBalancer IPs: `addr . proto . port`) and, for packets to this
//!   node's IPs (set `nodeport-ips`), `service-nodeports` (`proto . port`);
//! - every Service port has a chain `svc-…` (ClusterIP traffic), for as
//!   long as the Service exists, whatever its endpoints: the dispatch maps
//!   change when Services come and go, never on an endpoint change;
//! - the service chain DNATs with one rule, `dnat ip to numgen random mod
//!   2^20 map @epa-…`: a *data* map (no verdicts) from slot ranges to
//!   `endpoint . port`, one range of equal width per endpoint. An endpoint
//!   change rewrites only that map's elements: no rule, no jump, so the
//!   kernel has no jump graph to re-validate and `nft` is not needed
//!   ([`super::elements`] writes them over netlink). External traffic
//!   enters `ext-…`, which marks it for masquerade (or, with
//!   `externalTrafficPolicy: Local`, keeps the client's address and picks
//!   from `epl-…`, the local endpoints, else drops);
//! - a Service port without endpoints has its key in the plain sets
//!   `no-endpoint-services` / `no-endpoint-nodeports` (reject) or
//!   `no-endpoint-drop`, checked in filter chains before NAT, and is
//!   rejected at once (ICMP port unreachable: `connection refused`);
//! - `cluster-ips-check` rejects a ClusterIP on a port it does not serve;
//! - hairpin (a pod reaching itself through its Service) is caught after
//!   DNAT in `nat-postrouting`: `ct status dnat` and `saddr . daddr` in the
//!   set `hairpin` (`ep . ep` for every endpoint address);
//! - packets marked `0x4000` (`mark-for-masquerade`) are masqueraded with
//!   `fully-random` in `nat-postrouting`; the overlay's table `ip rk3s`
//!   leaves marked packets to us;
//! - `sessionAffinity: ClientIP` keeps kube-proxy's shape: one endpoint
//!   chain `ep-…` and one dynamic set per endpoint with the Service's
//!   timeout; the endpoint chain records the client, the service chain
//!   sends a recorded client back to the same endpoint, else picks with
//!   `numgen random mod N vmap`. Its endpoint changes rewrite chains
//!   (partial: not flat, see `sync`).
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
pub const NO_ENDPOINT_DROP: &str = "no-endpoint-drop";
pub const HAIRPIN: &str = "hairpin";
/// Random slots of an endpoint map: `numgen random mod SLOTS`, split in
/// equal ranges (the last takes the remainder, < n / 2^20 of the load).
pub const SLOTS: u32 = 1 << 20;
/// The declaration of an endpoint map (slot → `ip . port`).
pub const ENDPOINT_MAP_DECL: &str =
    "typeof numgen random mod 1 : ip daddr . tcp dport; flags interval;";
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
///
/// `maps` are the Service's endpoint maps, each with the endpoints its
/// slots are split among (see [`map_elements`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceRules {
    /// Chain name → its rules, in order.
    pub chains: BTreeMap<String, Vec<String>>,
    /// Affinity set name → its declaration body.
    pub sets: BTreeMap<String, String>,
    pub elements: BTreeMap<ElementKey, String>,
    pub maps: BTreeMap<String, Vec<Endpoint>>,
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
const ELEMENT_HOLDERS: [(&str, (&str, &str)); 8] = [
    (
        SERVICE_IPS,
        ("map", "ipv4_addr . inet_proto . inet_service : verdict"),
    ),
    (
        NO_ENDPOINT_SERVICES,
        ("set", "ipv4_addr . inet_proto . inet_service"),
    ),
    (
        NO_ENDPOINT_DROP,
        ("set", "ipv4_addr . inet_proto . inet_service"),
    ),
    (SERVICE_NODEPORTS, ("map", "inet_proto . inet_service : verdict")),
    (NO_ENDPOINT_NODEPORTS, ("set", "inet_proto . inet_service")),
    (CLUSTER_IPS, ("set", "ipv4_addr")),
    (HAIRPIN, ("set", "ipv4_addr . ipv4_addr")),
    (
        FIREWALL_IPS,
        ("map", "ipv4_addr . inet_proto . inet_service : verdict"),
    ),
];

/// Whether `name` holds plain data (no verdicts): its elements change with
/// endpoints and are written over netlink, never through `nft`.
pub fn is_data_holder(name: &str) -> bool {
    element_holder(name).is_some_and(|(kind, _)| kind == "set")
}

/// The slot ranges of an endpoint map with `n` endpoints: `n` ranges of
/// equal width covering `0..SLOTS`.
pub fn slot_ranges(n: usize) -> Vec<(u32, u32)> {
    let n = n as u32;
    if n == 0 {
        return Vec::new();
    }
    let step = SLOTS / n;
    (0..n)
        .map(|i| (i * step, if i + 1 == n { SLOTS - 1 } else { (i + 1) * step - 1 }))
        .collect()
}

/// The kernel elements of an endpoint map holding `eps`.
pub fn map_elements(eps: &[Endpoint]) -> Vec<super::elements::Element> {
    slot_ranges(eps.len())
        .into_iter()
        .zip(eps)
        .flat_map(|((lo, hi), ep)| super::elements::range_elements(lo, hi, ep.ip, ep.port))
        .collect()
}

/// The same elements as nft text (`lo-hi : ip . port, …`).
pub fn map_elements_text(eps: &[Endpoint]) -> String {
    slot_ranges(eps.len())
        .into_iter()
        .zip(eps)
        .map(|((lo, hi), ep)| format!("{lo}-{hi} : {} . {}", ep.ip, ep.port))
        .collect::<Vec<_>>()
        .join(", ")
}

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
    let chains: [(&str, &[&str]); 14] = [
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
                "ct status dnat ip saddr . ip daddr @hairpin jump mark-for-masquerade",
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
            &[
                "ip daddr . meta l4proto . th dport @no-endpoint-services reject",
                "ip daddr . meta l4proto . th dport @no-endpoint-drop drop",
            ],
        ),
        (
            "nodeport-endpoints-check",
            &["ip daddr @nodeport-ips meta l4proto . th dport @no-endpoint-nodeports reject"],
        ),
        ("cluster-ips-check", &["ip daddr @cluster-ips reject"]),
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

/// Which endpoints an endpoint map holds.
#[derive(Clone, Copy)]
enum Role {
    All,
    Local,
}

pub fn endpoint_map(port: &ServicePort, local: bool) -> String {
    hashed(if local { "epl" } else { "epa" }, &port.id)
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
    let role = |local: bool| if local { Role::Local } else { Role::All };

    // Every endpoint some traffic can reach: hairpin pairs, and with
    // affinity one endpoint chain each.
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
        out.elements
            .insert((HAIRPIN, format!("{} . {}", ep.ip, ep.ip)), String::new());
    }
    if let Some(timeout) = port.affinity_seconds {
        for ep in &used {
            let set = affinity_set(port, ep);
            out.sets.insert(
                set.clone(),
                format!("type ipv4_addr; flags dynamic,timeout; timeout {timeout}s;"),
            );
            let rules = vec![
                format!("update @{set} {{ ip saddr }}"),
                format!("meta l4proto {proto} dnat to {}:{}", ep.ip, ep.port),
            ];
            out.chains.insert(endpoint_chain(port, ep), rules);
        }
    }

    // ClusterIP traffic: the chain and its dispatch element stay while the
    // Service does; without (local) endpoints the filter sets catch it.
    let svc_chain = service_chain(port);
    let mut rules = vec![format!(
        "ip daddr {} {proto} dport {} ip saddr != {cluster} jump mark-for-masquerade",
        port.cluster_ip, port.port
    )];
    rules.extend(dispatch(out, port, role(port.internal_local), internal));
    out.chains.insert(svc_chain.clone(), rules);
    out.elements
        .insert((SERVICE_IPS, cip_key.clone()), format!("goto {svc_chain}"));
    if internal.is_empty() {
        // internalTrafficPolicy: Local without a local endpoint drops.
        let holder = if any { NO_ENDPOINT_DROP } else { NO_ENDPOINT_SERVICES };
        out.elements.insert((holder, cip_key), String::new());
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
    for (map, key) in &ext_keys {
        out.elements
            .insert((*map, key.clone()), format!("goto {ext_chain}"));
        if !any {
            let holder = if *map == SERVICE_NODEPORTS {
                NO_ENDPOINT_NODEPORTS
            } else {
                NO_ENDPOINT_SERVICES
            };
            out.elements.insert((holder, key.clone()), String::new());
        }
    }
    let mut rules = Vec::new();
    if port.external_local {
        // kube-proxy's short-circuits: pods and the node itself reach
        // every endpoint; only traffic from outside stays on this node,
        // unmasqueraded so the backend sees the client, or is dropped
        // when this node has no endpoint (the map misses: next rule).
        let all_chain = hashed("all", &port.id);
        let all = dispatch(out, port, Role::All, &port.endpoints);
        out.chains.insert(all_chain.clone(), all);
        rules.push(format!("ip saddr {cluster} goto {all_chain}"));
        rules.push("fib saddr type local jump mark-for-masquerade".into());
        rules.push(format!("fib saddr type local goto {all_chain}"));
        rules.extend(dispatch(out, port, Role::Local, external));
        rules.push("drop".into());
    } else {
        rules.push("jump mark-for-masquerade".into());
        rules.extend(dispatch(out, port, Role::All, external));
    }
    out.chains.insert(ext_chain, rules);
}

/// The rules that pick one of `eps` and DNAT to it. Without affinity: one
/// rule over the endpoint map of `role` (recorded in `out.maps` with
/// `eps`), the same whatever `eps` holds. With affinity: look-ups of the
/// recorded clients, then a random pick among the endpoint chains (none
/// when `eps` is empty).
fn dispatch(out: &mut ServiceRules, port: &ServicePort, role: Role, eps: &[Endpoint]) -> Vec<String> {
    if port.affinity_seconds.is_none() {
        let map = endpoint_map(port, matches!(role, Role::Local));
        out.maps.insert(map.clone(), eps.to_vec());
        return vec![format!(
            "meta l4proto {} dnat ip to numgen random mod {SLOTS} map @{map}",
            port.protocol.nft()
        )];
    }
    if eps.is_empty() {
        return Vec::new();
    }
    let mut rules = Vec::new();
    for ep in eps {
        rules.push(format!(
            "ip saddr @{} goto {}",
            affinity_set(port, ep),
            endpoint_chain(port, ep)
        ));
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
