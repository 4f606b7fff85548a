//! The `kube-system/kube-dns` Service: the cluster DNS address as a
//! Service, so tools that look for it (and the `kubernetes.io/cluster-service`
//! convention) find it. Agents answer its ClusterIP themselves (see
//! `crate::dns`): it has no selector and carries `rk3s.io/node-local: "true"`,
//! which tells the service proxy to program nothing for it.
//!
//! Created at every start unless `--disable coredns`; with `--disable
//! coredns` a copy carrying the annotation is deleted, so agents release the
//! address for a self-managed DNS. A Service users created under that name
//! without the annotation is never touched.

use serde_json::{json, Value};

use crate::store::{Store, StoreError};

use super::BootstrapError;

const KEY: &str = "/registry/services/kube-system/kube-dns";
const NODE_LOCAL: &str = "rk3s.io/node-local";

fn service(ip: std::net::IpAddr) -> Value {
    let family = if ip.is_ipv6() { "IPv6" } else { "IPv4" };
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kube-dns", "namespace": "kube-system",
            "labels": {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true",
                       "kubernetes.io/name": "CoreDNS"},
            "annotations": {NODE_LOCAL: "true", "prometheus.io/port": "9153", "prometheus.io/scrape": "true"}},
        "spec": {"type": "ClusterIP", "clusterIP": ip.to_string(), "clusterIPs": [ip.to_string()],
                 "ipFamilies": [family], "ipFamilyPolicy": "SingleStack", "sessionAffinity": "None",
                 "internalTrafficPolicy": "Cluster",
                 "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                           {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                           {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153}]},
        "status": {"loadBalancer": {}}})
}

/// Creates the Service when `enabled` and missing; deletes our copy when
/// not `enabled`.
pub fn bootstrap_kube_dns_service(
    store: &dyn Store,
    settings: &crate::config::ClusterSettings,
    enabled: bool,
) -> Result<(), BootstrapError> {
    let err = |source| BootstrapError::Write {
        key: KEY.to_string(),
        source,
    };
    if enabled {
        return super::ensure(store, KEY, service(settings.cluster_dns), None);
    }
    let Some(rec) = store.get(KEY).map_err(err)? else {
        return Ok(());
    };
    let cur: Value = serde_json::from_slice(&rec.value).unwrap_or(Value::Null);
    if cur["metadata"]["annotations"][NODE_LOCAL] != "true" {
        return Ok(());
    }
    match store.delete(KEY, Some(rec.mod_revision)) {
        Ok(_) | Err(StoreError::NotFound { .. }) | Err(StoreError::Conflict { .. }) => Ok(()),
        Err(e) => Err(err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_has_kube_dns_ports_no_selector_and_the_node_local_annotation() {
        let s = service("10.43.0.10".parse().unwrap());
        assert_eq!(s["spec"]["clusterIP"], "10.43.0.10");
        assert!(s["spec"].get("selector").is_none());
        assert_eq!(s["metadata"]["annotations"][NODE_LOCAL], "true");
        let ports: Vec<String> = s["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                format!(
                    "{}/{}/{}",
                    p["name"].as_str().unwrap(),
                    p["port"],
                    p["protocol"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(ports, ["dns/53/UDP", "dns-tcp/53/TCP", "metrics/9153/TCP"]);
    }
}
