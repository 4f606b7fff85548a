//! From a route's Service reference to the addresses of its ready
//! endpoints, through the Service's port (by number or name) and the
//! EndpointSlices the endpoint controller writes.
//!
//! The port chain is the Service's: the Ingress names a Service port; that
//! port's `name` is the name of the EndpointSlice port that carries the
//! target port of each endpoint (an unnamed single port is `""`).
//!
//! Invariant: an endpoint whose `ready` condition is false is never
//! chosen; a missing condition counts as ready (the API's rule).

use std::net::{IpAddr, SocketAddr};

use crate::svccache::{ObjKey, Snapshot};

use super::table::{PortRef, ServiceRef};

/// Why a Service reference has no addresses; the error page says which.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    #[error("service {0} does not exist")]
    NoService(String),
    #[error("service {service} has no port {port}")]
    NoPort { service: String, port: String },
    #[error("service {0} is of type ExternalName, which this ingress does not proxy to")]
    ExternalName(String),
    #[error("service {0} has no ready endpoints")]
    NoEndpoints(String),
}

/// The ready endpoints of `target`, in a stable order (the proxy rotates
/// its starting point per request).
pub fn resolve(view: &Snapshot, target: &ServiceRef) -> Result<Vec<SocketAddr>, Unavailable> {
    let name = format!("{}/{}", target.namespace, target.name);
    let key = ObjKey::new(target.namespace.clone(), target.name.clone());
    let svc = view
        .service(&key)
        .ok_or_else(|| Unavailable::NoService(name.clone()))?;
    let Some(spec) = svc.spec.as_ref() else {
        return Err(Unavailable::NoPort { service: name, port: target.port.to_string() });
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Err(Unavailable::ExternalName(name));
    }
    let port = spec
        .ports
        .iter()
        .flatten()
        .find(|p| match &target.port {
            PortRef::Number(n) => p.port == *n,
            PortRef::Name(n) => p.name.as_deref() == Some(n.as_str()),
        })
        .ok_or_else(|| Unavailable::NoPort {
            service: name.clone(),
            port: target.port.to_string(),
        })?;
    let port_name = port.name.clone().unwrap_or_default();
    let mut out = Vec::new();
    for slice in view.slices(&key) {
        let Some(number) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.clone().unwrap_or_default() == port_name)
            .and_then(|p| p.port)
        else {
            continue;
        };
        for ep in &slice.endpoints {
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if !ready {
                continue;
            }
            if let Some(ip) = ep.addresses.first().and_then(|a| a.parse::<IpAddr>().ok()) {
                out.push(SocketAddr::new(ip, number as u16));
            }
        }
    }
    out.sort();
    out.dedup();
    if out.is_empty() {
        return Err(Unavailable::NoEndpoints(name));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use serde_json::json;

    fn view() -> Snapshot {
        let (services, slices) = objects();
        Snapshot::from_objects(services, slices)
    }

    fn objects() -> (Vec<Service>, Vec<EndpointSlice>) {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"ports": [
                {"name": "http", "port": 80, "targetPort": 8080},
                {"name": "admin", "port": 9000, "targetPort": "admin"},
            ]}
        }))
        .unwrap();
        let ext: Service = serde_json::from_value(json!({
            "metadata": {"name": "ext", "namespace": "default"},
            "spec": {"type": "ExternalName", "externalName": "example.com"}
        }))
        .unwrap();
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "web-abc", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}, {"name": "admin", "port": 9901}],
            "endpoints": [
                {"addresses": ["10.42.0.5"], "conditions": {"ready": true}},
                {"addresses": ["10.42.1.7"]},
                {"addresses": ["10.42.1.9"], "conditions": {"ready": false}},
            ]
        }))
        .unwrap();
        (vec![svc, ext], vec![slice])
    }

    fn target(name: &str, port: PortRef) -> ServiceRef {
        ServiceRef { namespace: "default".into(), name: name.into(), port }
    }

    #[test]
    fn ports_resolve_by_number_and_by_name_to_ready_endpoints() {
        let v = view();
        let by_number = resolve(&v, &target("web", PortRef::Number(80))).unwrap();
        assert_eq!(
            by_number,
            vec!["10.42.0.5:8080".parse().unwrap(), "10.42.1.7:8080".parse().unwrap()]
        );
        let by_name = resolve(&v, &target("web", PortRef::Name("admin".into()))).unwrap();
        assert_eq!(
            by_name,
            vec!["10.42.0.5:9901".parse().unwrap(), "10.42.1.7:9901".parse().unwrap()]
        );
    }

    #[test]
    fn each_missing_piece_is_named() {
        let v = view();
        assert_eq!(
            resolve(&v, &target("nope", PortRef::Number(80))).unwrap_err().to_string(),
            "service default/nope does not exist"
        );
        assert_eq!(
            resolve(&v, &target("web", PortRef::Number(81))).unwrap_err().to_string(),
            "service default/web has no port 81"
        );
        assert!(matches!(
            resolve(&v, &target("ext", PortRef::Number(80))),
            Err(Unavailable::ExternalName(_)) | Err(Unavailable::NoPort { .. })
        ));
        let empty = Snapshot::from_objects(objects().0, vec![]);
        assert_eq!(
            resolve(&empty, &target("web", PortRef::Number(80))).unwrap_err(),
            Unavailable::NoEndpoints("default/web".into())
        );
    }
}
