//! The Service allocation admission plug-in: ClusterIPs from the service CIDR
//! and node ports from the node-port range, on create (and on an update that
//! newly needs them).
//!
//! No collisions, across every server on the datastore: allocations are
//! derived from the Services in the store plus the in-flight allocations
//! recorded with compare-and-swap in the shared reservation record
//! (`reservations`, which states the protocol and its invariant). Deleting
//! a Service releases its IP and ports by itself, since the stored Services
//! are the truth; a create that failed after admission holds its IP only
//! until its reservation expires ([`PENDING_TTL`]). dryRun requests get an
//! address but reserve nothing. PARTIAL: `healthCheckNodePort` is not
//! allocated; IPv4 or IPv6 single-stack only.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use ipnet::IpNet;
use rand::Rng;
use serde_json::{json, Value};

use crate::cidr;
use crate::apiserver::admission::{Admission, AdmissionRequest, Operation};
use crate::apiserver::status::{ApiStatus, Cause};
use crate::config::PortRange;
use crate::store::{ListOptions, Store};

pub use super::reservations::RESERVATION_TTL as PENDING_TTL;
use super::reservations::{self, RESERVATION_TTL};

/// What is taken now.
#[derive(Default, Debug)]
pub struct InUse {
    pub ips: HashSet<IpAddr>,
    pub ports: HashSet<(u16, String)>,
}

pub struct ServiceAllocator {
    store: Arc<dyn Store>,
    service_cidr: IpNet,
    ports: PortRange,
    local: Mutex<()>,
}

impl ServiceAllocator {
    pub fn new(store: Arc<dyn Store>, service_cidr: IpNet, ports: PortRange) -> Self {
        ServiceAllocator {
            store,
            service_cidr,
            ports,
            local: Mutex::new(()),
        }
    }

    /// The IPs and ports of every stored Service except `skip` (ns/name).
    fn stored(&self, skip: Option<(&str, &str)>) -> Result<InUse, ApiStatus> {
        let page = self
            .store
            .list(&ListOptions {
                prefix: "/registry/services/".into(),
                ..Default::default()
            })
            .map_err(|e| ApiStatus::internal(format!("failed to list services: {e}")))?;
        let mut used = InUse::default();
        for rec in page.records {
            let Ok(svc) = serde_json::from_slice::<Value>(&rec.value) else {
                continue;
            };
            let ns = svc.pointer("/metadata/namespace").and_then(Value::as_str);
            let name = svc.pointer("/metadata/name").and_then(Value::as_str);
            if skip.is_some_and(|(sn, s)| ns == Some(sn) && name == Some(s)) {
                continue;
            }
            collect(&svc, &mut used);
        }
        Ok(used)
    }
}

/// Adds one Service's IPs and node ports to `used`.
pub fn collect(svc: &Value, used: &mut InUse) {
    for ip in cluster_ips(svc) {
        if let Ok(ip) = ip.parse() {
            used.ips.insert(ip);
        }
    }
    for p in ports(svc) {
        if let Some(np) = p.get("nodePort").and_then(Value::as_u64) {
            used.ports.insert((np as u16, protocol(p)));
        }
    }
}

fn cluster_ips(svc: &Value) -> Vec<String> {
    let mut out = crate::apiserver::objects::string_list(svc.pointer("/spec/clusterIPs"));
    if out.is_empty() {
        if let Some(ip) = svc
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            out.push(ip.to_string());
        }
    }
    out
}

fn ports(svc: &Value) -> Vec<&Value> {
    svc.pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

fn protocol(p: &Value) -> String {
    p.get("protocol")
        .and_then(Value::as_str)
        .unwrap_or("TCP")
        .to_string()
}

fn svc_type(svc: &Value) -> &str {
    svc.pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
}

fn needs_node_ports(svc: &Value) -> bool {
    match svc_type(svc) {
        "NodePort" => true,
        "LoadBalancer" => svc
            .pointer("/spec/allocateLoadBalancerNodePorts")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        _ => false,
    }
}

fn invalid(name: &str, field: &str, reason: &str, message: String) -> ApiStatus {
    ApiStatus::invalid(
        "Service",
        "",
        name,
        vec![Cause {
            reason: reason.into(),
            message,
            field: field.into(),
        }],
    )
}

/// Picks a free offset in `range`, starting at a random place.
fn pick_ip(net: &IpNet, used: &InUse) -> Option<IpAddr> {
    let range = cidr::dynamic_range(net);
    let len = range.end.checked_sub(range.start)?;
    if len == 0 {
        return None;
    }
    let start = rand::thread_rng().gen_range(0..len);
    // Large IPv6 ranges are effectively never full: bound the scan.
    let scan = len.min(1 << 20);
    (0..scan)
        .map(|i| range.start + (start + i) % len)
        .filter_map(|o| cidr::nth(net, o))
        .find(|ip| !used.ips.contains(ip))
}

fn pick_port(range: &PortRange, proto: &str, used: &InUse) -> Option<u16> {
    let len = u32::from(range.last) - u32::from(range.first) + 1;
    let start = rand::thread_rng().gen_range(0..len);
    (0..len)
        .map(|i| (u32::from(range.first) + (start + i) % len) as u16)
        .find(|p| !used.ports.contains(&(*p, proto.to_string())))
}

/// Fills `spec.clusterIP(s)`, `ipFamilies` and node ports of `svc` (pure:
/// `used` is what is taken; returns what it took).
pub fn allocate(
    svc: &mut Value,
    old: Option<&Value>,
    net: &IpNet,
    range: &PortRange,
    used: &InUse,
) -> Result<InUse, ApiStatus> {
    let name = svc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let mut took = InUse::default();
    if !svc["spec"].is_object() {
        svc["spec"] = json!({});
    }
    let kind = svc_type(svc).to_string();
    if svc.pointer("/spec/type").is_none() {
        svc["spec"]["type"] = json!("ClusterIP");
    }
    if kind == "ExternalName" {
        if let Some(s) = svc["spec"].as_object_mut() {
            for k in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
                s.remove(k);
            }
        }
    } else {
        allocate_ip(svc, old, net, used, &mut took, &name)?;
    }
    if needs_node_ports(svc) {
        allocate_ports(svc, old, range, used, &mut took, &name)?;
        if svc.pointer("/spec/externalTrafficPolicy").is_none() {
            svc["spec"]["externalTrafficPolicy"] = json!("Cluster");
        }
    } else if let Some(ps) = svc.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
        for (i, p) in ps.iter_mut().enumerate() {
            if p.get("nodePort").is_some() {
                let was_there = old.is_some_and(|o| needs_node_ports(o));
                if was_there {
                    p.as_object_mut().map(|m| m.remove("nodePort"));
                } else {
                    return Err(invalid(
                        &name,
                        &format!("spec.ports[{i}].nodePort"),
                        "FieldValueForbidden",
                        format!("Forbidden: may not be used when `type` is '{kind}'"),
                    ));
                }
            }
        }
    }
    Ok(took)
}

fn allocate_ip(
    svc: &mut Value,
    old: Option<&Value>,
    net: &IpNet,
    used: &InUse,
    took: &mut InUse,
    name: &str,
) -> Result<(), ApiStatus> {
    let requested = cluster_ips(svc).into_iter().next();
    let previous = old.and_then(|o| cluster_ips(o).into_iter().next());
    let ip_text = match (requested, previous) {
        (None, Some(prev)) => prev,
        (Some(req), Some(prev)) if req != prev => {
            return Err(invalid(
                name,
                "spec.clusterIPs[0]",
                "FieldValueInvalid",
                format!("Invalid value: []string{{\"{req}\"}}: may not change once set"),
            ))
        }
        (Some(req), Some(_)) => req,
        (Some(req), None) if req == "None" => req,
        (Some(req), None) => {
            let ip: IpAddr = req.parse().map_err(|_| {
                invalid(
                    name,
                    "spec.clusterIPs[0]",
                    "FieldValueInvalid",
                    format!("Invalid value: \"{req}\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"),
                )
            })?;
            if !cidr::valid_service_ip(net, ip) {
                return Err(invalid(
                    name,
                    "spec.clusterIPs",
                    "FieldValueInvalid",
                    format!("Invalid value: []string{{\"{req}\"}}: failed to allocate IP {req}: provided IP is not in the valid range. The range of valid IPs is {net}"),
                ));
            }
            if used.ips.contains(&ip) {
                return Err(invalid(
                    name,
                    "spec.clusterIPs",
                    "FieldValueInvalid",
                    format!("Invalid value: []string{{\"{req}\"}}: failed to allocate IP {req}: provided IP is already allocated"),
                ));
            }
            took.ips.insert(ip);
            ip.to_string()
        }
        (None, None) => {
            let ip = pick_ip(net, used).ok_or_else(|| {
                ApiStatus::internal(format!(
                    "failed to allocate a serviceIP: range is full (the range of valid IPs is {net})"
                ))
            })?;
            took.ips.insert(ip);
            ip.to_string()
        }
    };
    svc["spec"]["clusterIP"] = json!(ip_text);
    svc["spec"]["clusterIPs"] = json!([ip_text]);
    let family = if matches!(net, IpNet::V6(_)) {
        "IPv6"
    } else {
        "IPv4"
    };
    if svc.pointer("/spec/ipFamilies").is_none() {
        svc["spec"]["ipFamilies"] = json!([family]);
    }
    if svc.pointer("/spec/ipFamilyPolicy").is_none() {
        svc["spec"]["ipFamilyPolicy"] = json!("SingleStack");
    }
    Ok(())
}

fn allocate_ports(
    svc: &mut Value,
    old: Option<&Value>,
    range: &PortRange,
    used: &InUse,
    took: &mut InUse,
    name: &str,
) -> Result<(), ApiStatus> {
    let old_ports: Vec<Value> = old
        .filter(|o| needs_node_ports(o))
        .map(|o| ports(o).into_iter().cloned().collect())
        .unwrap_or_default();
    let Some(ps) = svc.pointer_mut("/spec/ports").and_then(Value::as_array_mut) else {
        return Ok(());
    };
    for (i, p) in ps.iter_mut().enumerate() {
        let proto = protocol(p);
        let field = format!("spec.ports[{i}].nodePort");
        let before = old_ports
            .iter()
            .find(|op| {
                protocol(op) == proto
                    && (op.get("port") == p.get("port")
                        || (op.get("name").is_some() && op.get("name") == p.get("name")))
            })
            .and_then(|op| op.get("nodePort").and_then(Value::as_u64));
        let chosen = match p.get("nodePort").and_then(Value::as_u64) {
            Some(np) if Some(np) == before => np as u16,
            Some(np) => {
                let np16 = u16::try_from(np).ok().filter(|n| range.contains(*n));
                let Some(np16) = np16 else {
                    return Err(invalid(name, &field, "FieldValueInvalid", format!(
                        "Invalid value: {np}: provided port is not in the valid range. The range of valid ports is {}-{}",
                        range.first, range.last
                    )));
                };
                let key = (np16, proto.clone());
                if used.ports.contains(&key) || took.ports.contains(&key) {
                    return Err(invalid(
                        name,
                        &field,
                        "FieldValueInvalid",
                        format!("Invalid value: {np}: provided port is already allocated"),
                    ));
                }
                took.ports.insert(key);
                np16
            }
            None => match before {
                Some(b) => b as u16,
                None => {
                    let mut all = InUse::default();
                    all.ports.extend(used.ports.iter().cloned());
                    all.ports.extend(took.ports.iter().cloned());
                    let np = pick_port(range, &proto, &all).ok_or_else(|| {
                        ApiStatus::internal(format!(
                            "failed to allocate a nodePort: range is full ({}-{})",
                            range.first, range.last
                        ))
                    })?;
                    took.ports.insert((np, proto.clone()));
                    np
                }
            },
        };
        p["nodePort"] = json!(chosen);
    }
    Ok(())
}

/// How often an allocation is retried when other allocators keep winning
/// the CAS on the reservation record.
const MAX_ATTEMPTS: usize = 16;

impl Admission for ServiceAllocator {
    fn name(&self) -> &'static str {
        "service-ip-and-port-allocation"
    }

    fn admit(
        &self,
        req: &AdmissionRequest<'_>,
        obj: &mut Value,
        _warnings: &mut Vec<String>,
    ) -> Result<(), ApiStatus> {
        if req.def.group_resource() != "services" || req.subresource.is_some() {
            return Ok(());
        }
        let old = match req.operation {
            Operation::Create => None,
            Operation::Update => req.old,
        };
        // Within one process, allocations queue here rather than on CAS
        // conflicts; across servers the CAS on the record decides.
        let _local = self.local.lock().unwrap_or_else(|e| e.into_inner());
        let skip = old.map(|_| (req.namespace.unwrap_or(""), req.name));
        let store_err = |e: crate::store::StoreError| ApiStatus::internal(format!("failed to allocate: {e}"));
        for _ in 0..MAX_ATTEMPTS {
            // Record first, Services second: a reservation dropped because a
            // Service shows it is covered by that same Service.
            let read = reservations::read(self.store.as_ref()).map_err(store_err)?;
            let mut used = self.stored(skip)?;
            let now = reservations::unix_now();
            let mut next = read.reservations.clone();
            next.prune(now, &used);
            next.mark_used(&mut used);
            let pruned = next != read.reservations;
            let mut candidate = obj.clone();
            let took = match allocate(&mut candidate, old, &self.service_cidr, &self.ports, &used) {
                Ok(took) => took,
                Err(refused) => {
                    // Best effort: what the Services now show need not stay
                    // reserved (a full range may have room after this write).
                    if pruned && !req.dry_run {
                        let _ = reservations::write(self.store.as_ref(), read.revision, &next);
                    }
                    return Err(refused);
                }
            };
            let nothing_new = took.ips.is_empty() && took.ports.is_empty();
            if req.dry_run || (nothing_new && !pruned) {
                *obj = candidate;
                return Ok(());
            }
            next.reserve(&took, now + RESERVATION_TTL.as_secs());
            if reservations::write(self.store.as_ref(), read.revision, &next).map_err(store_err)? {
                *obj = candidate;
                return Ok(());
            }
            tracing::debug!("allocation record changed under us (another server allocated); retrying");
        }
        Err(ApiStatus::internal(
            "failed to allocate a ClusterIP or node port: too many concurrent allocations; try again".to_string(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> IpNet {
        "10.43.0.0/16".parse().unwrap()
    }
    fn range() -> PortRange {
        PortRange {
            first: 30000,
            last: 30002,
        }
    }

    #[test]
    fn cluster_ip_is_allocated_honoured_or_refused() {
        let mut used = InUse::default();
        let mut svc = json!({"metadata": {"name": "a"}, "spec": {"ports": [{"port": 80}]}});
        let took = allocate(&mut svc, None, &net(), &range(), &used).unwrap();
        let ip: IpAddr = svc["spec"]["clusterIP"].as_str().unwrap().parse().unwrap();
        assert!(cidr::valid_service_ip(&net(), ip));
        assert_ne!(ip.to_string(), "10.43.0.1");
        assert_eq!(svc["spec"]["clusterIPs"], json!([ip.to_string()]));
        assert_eq!(svc["spec"]["ipFamilies"], json!(["IPv4"]));
        assert_eq!(svc["spec"]["type"], "ClusterIP");
        assert!(took.ips.contains(&ip));
        used.ips.insert(ip);

        let mut again = json!({"metadata": {"name": "b"}, "spec": {"clusterIP": ip.to_string()}});
        let e = allocate(&mut again, None, &net(), &range(), &used).unwrap_err();
        assert_eq!(e.code, 422);
        assert!(
            e.message.contains("provided IP is already allocated"),
            "{}",
            e.message
        );

        let mut outside = json!({"metadata": {"name": "c"}, "spec": {"clusterIP": "10.0.0.9"}});
        let e = allocate(&mut outside, None, &net(), &range(), &used).unwrap_err();
        assert!(
            e.message.contains("not in the valid range"),
            "{}",
            e.message
        );

        let mut chosen = json!({"metadata": {"name": "d"}, "spec": {"clusterIP": "10.43.0.10"}});
        allocate(&mut chosen, None, &net(), &range(), &used).unwrap();
        assert_eq!(chosen["spec"]["clusterIPs"], json!(["10.43.0.10"]));

        let mut headless = json!({"metadata": {"name": "h"}, "spec": {"clusterIP": "None"}});
        let took = allocate(&mut headless, None, &net(), &range(), &used).unwrap();
        assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));
        assert!(took.ips.is_empty());
    }

    #[test]
    fn a_full_range_is_an_error_not_a_collision() {
        let tiny: IpNet = "10.0.0.0/30".parse().unwrap();
        let mut used = InUse::default();
        let mut a = json!({"metadata": {"name": "a"}, "spec": {}});
        allocate(&mut a, None, &tiny, &range(), &used).unwrap();
        assert_eq!(a["spec"]["clusterIP"], "10.0.0.2");
        used.ips.insert("10.0.0.2".parse().unwrap());
        let mut b = json!({"metadata": {"name": "b"}, "spec": {}});
        assert_eq!(
            allocate(&mut b, None, &tiny, &range(), &used)
                .unwrap_err()
                .code,
            500
        );
    }

    #[test]
    fn node_ports_are_allocated_in_range_without_collisions() {
        let mut used = InUse::default();
        used.ports.insert((30000, "TCP".into()));
        let mut svc = json!({"metadata": {"name": "np"}, "spec": {"type": "NodePort",
            "ports": [{"port": 80}, {"port": 81}]}});
        let took = allocate(&mut svc, None, &net(), &range(), &used).unwrap();
        let a = svc["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
        let b = svc["spec"]["ports"][1]["nodePort"].as_u64().unwrap();
        assert_ne!(a, b);
        assert!([30001, 30002].contains(&a) && [30001, 30002].contains(&b));
        assert_eq!(took.ports.len(), 2);
        assert_eq!(svc["spec"]["externalTrafficPolicy"], "Cluster");
        used.ports.extend(took.ports);
        let mut full = json!({"metadata": {"name": "f"}, "spec": {"type": "NodePort", "ports": [{"port": 1}]}});
        assert_eq!(
            allocate(&mut full, None, &net(), &range(), &used)
                .unwrap_err()
                .code,
            500
        );
        let mut taken = json!({"metadata": {"name": "t"}, "spec": {"type": "NodePort",
            "ports": [{"port": 1, "nodePort": 30000}]}});
        let e = allocate(&mut taken, None, &net(), &range(), &used).unwrap_err();
        assert!(
            e.message.contains(
                "spec.ports[0].nodePort: Invalid value: 30000: provided port is already allocated"
            ),
            "{}",
            e.message
        );
        let mut out = json!({"metadata": {"name": "o"}, "spec": {"type": "NodePort",
            "ports": [{"port": 1, "nodePort": 80}]}});
        let e = allocate(&mut out, None, &net(), &range(), &InUse::default()).unwrap_err();
        assert!(
            e.message
                .contains("The range of valid ports is 30000-30002"),
            "{}",
            e.message
        );
        let mut udp = json!({"metadata": {"name": "u"}, "spec": {"type": "NodePort",
            "ports": [{"port": 1, "nodePort": 30000, "protocol": "UDP"}]}});
        allocate(&mut udp, None, &net(), &range(), &used).unwrap();
    }

    #[test]
    fn updates_keep_what_was_allocated() {
        let used = InUse::default();
        let old = json!({"metadata": {"name": "s"}, "spec": {"type": "NodePort", "clusterIP": "10.43.0.7",
            "clusterIPs": ["10.43.0.7"], "ports": [{"name": "http", "port": 80, "nodePort": 30001}]}});
        let mut new = json!({"metadata": {"name": "s"}, "spec": {"type": "NodePort",
            "ports": [{"name": "http", "port": 80}]}});
        let took = allocate(&mut new, Some(&old), &net(), &range(), &used).unwrap();
        assert!(took.ips.is_empty() && took.ports.is_empty());
        assert_eq!(new["spec"]["clusterIP"], "10.43.0.7");
        assert_eq!(new["spec"]["ports"][0]["nodePort"], 30001);
        let mut changed = json!({"metadata": {"name": "s"}, "spec": {"clusterIP": "10.43.0.8"}});
        let e = allocate(&mut changed, Some(&old), &net(), &range(), &used).unwrap_err();
        assert!(
            e.message.contains("may not change once set"),
            "{}",
            e.message
        );
        let mut to_cluster_ip = json!({"metadata": {"name": "s"}, "spec": {"type": "ClusterIP",
            "ports": [{"name": "http", "port": 80, "nodePort": 30001}]}});
        allocate(&mut to_cluster_ip, Some(&old), &net(), &range(), &used).unwrap();
        assert!(to_cluster_ip["spec"]["ports"][0].get("nodePort").is_none());
        let mut external = json!({"metadata": {"name": "e"}, "spec": {"type": "ExternalName",
            "externalName": "example.com"}});
        let took = allocate(&mut external, None, &net(), &range(), &used).unwrap();
        assert!(took.ips.is_empty());
        assert!(external["spec"].get("clusterIP").is_none());
    }
}
