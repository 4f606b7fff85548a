//! API-server side allocation and defaulting for the cluster's addresses:
//! Service ClusterIPs and node ports (`services`), kube's
//! DefaultTolerationSeconds pod plug-in (`tolerations`), the CIDR arithmetic
//! both these and the pod-CIDR controller use (`crate::cidr`), and the bootstrap of
//! the `default/kubernetes` Service with its Endpoints and EndpointSlice,
//! which `apiserver_leases` then keeps listing every live API server.
//!
//! Invariant: the `kubernetes` Service owns the first address of the service
//! CIDR (10.43.0.1); dynamic allocation never hands it out.

pub mod apiserver_leases;
pub mod kube_dns;
pub mod reservations;
pub mod services;
pub mod tolerations;

use serde_json::{json, Value};

use crate::apiserver::objects;
use crate::apiserver::registry::Registry;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("failed to write {key}: {source}")]
    Write {
        key: String,
        #[source]
        source: StoreError,
    },
    #[error(
        "failed to bootstrap the kubernetes Service: the service CIDR {0} has no first address"
    )]
    NoFirstAddress(ipnet::IpNet),
}

/// The `default/kubernetes` Service, Endpoints and EndpointSlice: created on
/// the first start, their endpoint corrected when the advertise address or
/// port changed; anything else users did to them is kept.
pub fn bootstrap_kubernetes_service(
    store: &dyn Store,
    _registry: &Registry,
    settings: &crate::config::ClusterSettings,
) -> Result<(), BootstrapError> {
    let ip = crate::cidr::nth(&settings.service_cidr, 1)
        .ok_or(BootstrapError::NoFirstAddress(settings.service_cidr))?;
    let family = if ip.is_ipv6() { "IPv6" } else { "IPv4" };
    let labels = json!({"component": "apiserver", "provider": "kubernetes"});
    let service = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": labels},
        "spec": {"type": "ClusterIP", "clusterIP": ip.to_string(), "clusterIPs": [ip.to_string()],
                 "ipFamilies": [family], "ipFamilyPolicy": "SingleStack", "sessionAffinity": "None",
                 "internalTrafficPolicy": "Cluster",
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": settings.https_port}]},
        "status": {"loadBalancer": {}}});
    ensure(
        store,
        "/registry/services/default/kubernetes",
        service,
        None,
    )?;
    // This server and every other live one (their Leases), so a server
    // starting next to others never drops them from the list.
    let me = apiserver_leases::ServerEndpoint {
        ip: settings.advertise_address,
        port: settings.https_port,
    };
    let write = |source| BootstrapError::Write {
        key: "/registry/endpoints/default/kubernetes".into(),
        source,
    };
    let set = apiserver_leases::live_servers(store, me, chrono::Utc::now(), true).map_err(write)?;
    apiserver_leases::sync_endpoints(store, &set).map_err(write)
}

/// Creates `obj` at `key`; if it exists and `field` differs, rewrites that
/// field (and the ports next to it) only.
fn ensure(
    store: &dyn Store,
    key: &str,
    mut obj: Value,
    field: Option<&str>,
) -> Result<(), BootstrapError> {
    let err = |source| BootstrapError::Write {
        key: key.to_string(),
        source,
    };
    for _ in 0..5 {
        match store.get(key).map_err(err)? {
            None => {
                let m = objects::meta_mut(&mut obj);
                m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
                m.insert("creationTimestamp".into(), json!(objects::now_rfc3339()));
                match store.create(key, &objects::to_stored(&obj)) {
                    Ok(_) => return Ok(()),
                    Err(StoreError::AlreadyExists { .. }) => continue,
                    Err(e) => return Err(err(e)),
                }
            }
            Some(rec) => {
                let Some(field) = field else { return Ok(()) };
                let mut cur: Value = serde_json::from_slice(&rec.value).unwrap_or(Value::Null);
                if cur.get(field) == obj.get(field) || !cur.is_object() {
                    return Ok(());
                }
                cur[field] = obj[field].clone();
                if obj.get("ports").is_some() {
                    cur["ports"] = obj["ports"].clone();
                }
                match store.update(key, &objects::to_stored(&cur), rec.mod_revision) {
                    Ok(_) => return Ok(()),
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(err(e)),
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_service_is_bootstrapped_and_its_endpoint_follows_the_address() {
        let store = crate::apiserver::testing::MemoryStore::new();
        let reg = crate::apiserver::builtin::builtin_registry();
        let mut settings = crate::config::ClusterSettings::defaults();
        bootstrap_kubernetes_service(&store, &reg, &settings).unwrap();
        bootstrap_kubernetes_service(&store, &reg, &settings).unwrap();
        let svc: Value = serde_json::from_slice(
            &store
                .get("/registry/services/default/kubernetes")
                .unwrap()
                .unwrap()
                .value,
        )
        .unwrap();
        assert_eq!(svc["spec"]["clusterIP"], "10.43.0.1");
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 6443);
        settings.advertise_address = "192.168.1.5".parse().unwrap();
        bootstrap_kubernetes_service(&store, &reg, &settings).unwrap();
        let eps: Value = serde_json::from_slice(
            &store
                .get("/registry/endpoints/default/kubernetes")
                .unwrap()
                .unwrap()
                .value,
        )
        .unwrap();
        assert_eq!(eps["subsets"][0]["addresses"][0]["ip"], "192.168.1.5");
        let slice: Value = serde_json::from_slice(
            &store
                .get("/registry/endpointslices.discovery.k8s.io/default/kubernetes")
                .unwrap()
                .unwrap()
                .value,
        )
        .unwrap();
        assert_eq!(slice["endpoints"][0]["addresses"][0], "192.168.1.5");
    }
}
