//! What the proxy programs, derived from a Service and its EndpointSlices:
//! one [`ServicePort`] per port of a proxied Service, with the endpoints
//! already chosen the way kube-proxy chooses them.
//!
//! Endpoint choice (kube-proxy's `CategorizeEndpoints`): ready endpoints
//! when there are any; otherwise the ones that are serving and terminating
//! (a rolling update's last pods keep serving rather than every connection
//! failing). The same rule is applied separately to the endpoints on this
//! node, for `externalTrafficPolicy`/`internalTrafficPolicy: Local`.
//!
//! Not proxied: ExternalName Services (DNS answers them), headless
//! Services (no ClusterIP), Services with the `rk3s.io/node-local: "true"`
//! annotation (the node answers their ClusterIP itself: cluster DNS) and
//! Services labelled `service.kubernetes.io/service-proxy-name` (another
//! proxy's, as kube-proxy skips them). IPv4 only.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The annotation of Services the node answers itself (cluster DNS).
pub const NODE_LOCAL_ANNOTATION: &str = "rk3s.io/node-local";
/// Services with this label belong to another proxy (kube-proxy's rule).
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// The default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 hours).
pub const DEFAULT_AFFINITY_SECONDS: u32 = 10_800;

/// A transport protocol as nftables names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn parse(s: Option<&str>) -> Option<Self> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    pub fn nft(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// One backend address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
}

/// One port of a proxied Service, with its chosen endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// `namespace/name/protocol/port-name` (port number when unnamed).
    pub id: String,
    pub protocol: Protocol,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    pub node_port: Option<u16>,
    /// `spec.externalIPs` and `status.loadBalancer.ingress[].ip`: served
    /// on `port` like a NodePort (the external traffic policy applies).
    pub external_ips: Vec<Ipv4Addr>,
    /// The LoadBalancer ingress IPs (also in `external_ips`) and the
    /// `spec.loadBalancerSourceRanges` allowed to reach them (empty: all).
    pub lb_ips: Vec<Ipv4Addr>,
    pub source_ranges: Vec<ipnet::Ipv4Net>,
    /// `sessionAffinity: ClientIP`: the timeout in seconds.
    pub affinity_seconds: Option<u32>,
    pub external_local: bool,
    pub internal_local: bool,
    /// Usable endpoints cluster-wide.
    pub endpoints: Vec<Endpoint>,
    /// Usable endpoints on this node.
    pub local_endpoints: Vec<Endpoint>,
}

impl ServicePort {
    /// The endpoints ClusterIP traffic goes to.
    pub fn internal_endpoints(&self) -> &[Endpoint] {
        if self.internal_local {
            &self.local_endpoints
        } else {
            &self.endpoints
        }
    }

    /// The endpoints external traffic (NodePort, external and LB IPs) goes to.
    pub fn external_endpoints(&self) -> &[Endpoint] {
        if self.external_local {
            &self.local_endpoints
        } else {
            &self.endpoints
        }
    }

    /// Whether any traffic arrives from outside (NodePort, external IPs).
    pub fn has_external(&self) -> bool {
        self.node_port.is_some() || !self.external_ips.is_empty()
    }
}

/// Whether the proxy programs rules for `svc` at all.
pub fn is_proxied(svc: &Service) -> bool {
    let meta = &svc.metadata;
    if meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(NODE_LOCAL_ANNOTATION))
        .is_some_and(|v| v == "true")
    {
        return false;
    }
    if meta
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(SERVICE_PROXY_NAME_LABEL))
    {
        return false;
    }
    let Some(spec) = &svc.spec else { return false };
    if spec.type_.as_deref() == Some("ExternalName") {
        return false;
    }
    cluster_ip(svc).is_some()
}

fn cluster_ip(svc: &Service) -> Option<Ipv4Addr> {
    let spec = svc.spec.as_ref()?;
    spec.cluster_ip.as_deref()?.parse().ok()
}

/// One endpoint address as a slice states it.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    ep: Endpoint,
    ready: bool,
    serving: bool,
    terminating: bool,
    local: bool,
}

/// kube-proxy's choice: ready ones, else serving and terminating ones.
fn usable(candidates: impl Iterator<Item = Candidate> + Clone) -> Vec<Endpoint> {
    let ready: Vec<Endpoint> = candidates
        .clone()
        .filter(|c| c.ready)
        .map(|c| c.ep)
        .collect();
    if !ready.is_empty() {
        return ready;
    }
    candidates
        .filter(|c| c.serving && c.terminating)
        .map(|c| c.ep)
        .collect()
}

/// The ports of `svc` (already [`is_proxied`]) with their endpoints from
/// `slices`, as seen from node `node_name`.
pub fn service_ports(
    svc: &Service,
    slices: &[impl AsRef<EndpointSlice>],
    node_name: &str,
) -> Vec<ServicePort> {
    let Some(spec) = &svc.spec else {
        return Vec::new();
    };
    let Some(cluster_ip) = cluster_ip(svc) else {
        return Vec::new();
    };
    let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
    let name = svc.metadata.name.as_deref().unwrap_or_default();
    let mut external_ips: Vec<Ipv4Addr> = spec
        .external_ips
        .iter()
        .flatten()
        .filter_map(|ip| ip.parse().ok())
        .collect();
    let mut lb_ips = Vec::new();
    if spec.type_.as_deref() == Some("LoadBalancer") {
        let ingress = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref());
        lb_ips.extend(
            ingress
                .into_iter()
                .flatten()
                .filter_map(|i| i.ip.as_deref()?.parse::<Ipv4Addr>().ok()),
        );
        external_ips.extend(lb_ips.iter().copied());
    }
    lb_ips.sort();
    lb_ips.dedup();
    // Unparseable ranges are left out; kube-proxy's validation rejects
    // them at the API, so only IPv6 ranges land here.
    let source_ranges: Vec<ipnet::Ipv4Net> = spec
        .load_balancer_source_ranges
        .iter()
        .flatten()
        .filter_map(|r| r.trim().parse::<ipnet::Ipv4Net>().ok())
        .map(|n| n.trunc())
        .collect();
    external_ips.sort();
    external_ips.dedup();
    let affinity_seconds = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .filter(|t| *t > 0)
            .unwrap_or(DEFAULT_AFFINITY_SECONDS)
    });
    let external_local = spec.external_traffic_policy.as_deref() == Some("Local")
        && matches!(
            spec.type_.as_deref(),
            Some("NodePort") | Some("LoadBalancer")
        );
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");

    let mut out = Vec::new();
    for port in spec.ports.iter().flatten() {
        let Some(protocol) = Protocol::parse(port.protocol.as_deref()) else {
            continue;
        };
        let Ok(number) = u16::try_from(port.port) else {
            continue;
        };
        let port_name = port.name.clone().unwrap_or_default();
        let candidates = candidates(slices, &port_name, protocol, node_name);
        let all = candidates.values().copied();
        let endpoints = usable(all.clone());
        let local_endpoints = usable(all.filter(|c| c.local));
        let label = if port_name.is_empty() {
            number.to_string()
        } else {
            port_name
        };
        out.push(ServicePort {
            id: format!("{ns}/{name}/{}/{label}", protocol.nft()),
            protocol,
            cluster_ip,
            port: number,
            node_port: port
                .node_port
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p > 0),
            external_ips: external_ips.clone(),
            lb_ips: lb_ips.clone(),
            source_ranges: source_ranges.clone(),
            affinity_seconds,
            external_local,
            internal_local,
            endpoints,
            local_endpoints,
        });
    }
    out
}

/// Every IPv4 address of the slices serving the port named `port_name`,
/// deduplicated (a pod in two slices during a move counts once).
fn candidates(
    slices: &[impl AsRef<EndpointSlice>],
    port_name: &str,
    protocol: Protocol,
    node_name: &str,
) -> BTreeMap<Endpoint, Candidate> {
    let mut out = BTreeMap::new();
    for slice in slices.iter().map(AsRef::as_ref) {
        if slice.address_type != "IPv4" {
            continue;
        }
        let Some(port) = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or_default() == port_name
                && Protocol::parse(p.protocol.as_deref()) == Some(protocol)
        }) else {
            continue;
        };
        let Some(number) = port.port.and_then(|p| u16::try_from(p).ok()) else {
            continue;
        };
        for ep in &slice.endpoints {
            let cond = ep.conditions.as_ref();
            // kube: a nil `ready` means ready; nil `serving` follows ready.
            let ready = cond.and_then(|c| c.ready).unwrap_or(true);
            let serving = cond.and_then(|c| c.serving).unwrap_or(ready);
            let terminating = cond.and_then(|c| c.terminating).unwrap_or(false);
            let local = ep.node_name.as_deref() == Some(node_name);
            for addr in &ep.addresses {
                let Ok(ip) = addr.parse::<Ipv4Addr>() else {
                    continue;
                };
                let key = Endpoint { ip, port: number };
                let c = Candidate {
                    ep: key,
                    ready,
                    serving,
                    terminating,
                    local,
                };
                out.entry(key)
                    .and_modify(|old: &mut Candidate| {
                        old.ready |= ready;
                        old.serving |= serving;
                        old.local |= local;
                    })
                    .or_insert(c);
            }
        }
    }
    out
}
