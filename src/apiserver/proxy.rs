//! `pods/proxy`, `services/proxy` and `nodes/proxy`: an HTTP reverse proxy
//! to a pod, a Service's ready endpoint or a node's kubelet API, as
//! `kubectl proxy` users, dashboards and Prometheus' discovery use it.
//!
//! The URL forms are kube's: `…/pods/NAME[:PORT]/proxy/PATH`,
//! `…/pods/https:NAME:PORT/proxy/PATH` (likewise for services, where the
//! port is a service port's number or name), `/api/v1/nodes/NAME/proxy/PATH`.
//! Every verb goes through; upgrades (websockets to the pod) are spliced
//! byte for byte; bodies stream both ways. A path ending at `/proxy` is
//! redirected to `/proxy/`, as kube-apiserver does.
//!
//! The server never connects to a node: a pod is reached through its
//! node's tunnel, where the kubelet API opens the TCP connection inside the
//! pod's network namespace (`/rk3s/podDial/…`, an `rk3s-tcp` upgrade) and
//! the API server speaks HTTP (and TLS without verification for `https:`,
//! as kube's proxy transport does) over it. A Service is one of its ready
//! endpoints, picked at random, reached the same way through the pod its
//! endpoint names. A node is its kubelet API, through its tunnel.
//!
//! `nodes/NAME:PORT/proxy` to another port than the kubelet's (10250) is
//! the node's InternalIP (else ExternalIP) on that port, connected by the
//! node's own agent (`/rk3s/nodeDial/…`), which dials only its own
//! addresses.
//!
//! Partial: a Service endpoint that names no pod (a selector-less Service's
//! external address) cannot be reached; the kubelet API behind
//! `nodes/proxy` serves rk3s's routes (`/healthz`, logs, exec, …), not
//! kubelet's `/metrics` or `/stats`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::context::{store_err, AppState};
use super::keys;
use super::status::{ApiStatus, Target};
use super::streaming::{relay, StreamRequest};

/// The kubelet port kube names in `nodes/NAME:PORT/proxy`.
const KUBELET_PORT: &str = "10250";

/// A proxy target as kube's `SplitSchemeNamePort` reads it.
#[derive(Debug, PartialEq, Eq)]
struct Id<'a> {
    https: bool,
    name: &'a str,
    port: &'a str,
}

/// `name`, `name:port` or `scheme:name:port`, with scheme `http`, `https`
/// or empty; `None` for anything else.
fn split_scheme_name_port(id: &str) -> Option<Id<'_>> {
    let parts: Vec<&str> = id.split(':').collect();
    let (scheme, name, port) = match parts.as_slice() {
        [name] => ("", *name, ""),
        [name, port] => ("", *name, *port),
        [scheme, name, port] => (*scheme, *name, *port),
        _ => return None,
    };
    if name.is_empty() || !matches!(scheme, "" | "http" | "https") {
        return None;
    }
    Some(Id {
        https: scheme == "https",
        name,
        port,
    })
}

/// What follows `/{id}/proxy` in the request path: `None` when the path
/// ends at `/proxy` (kube redirects it to `/proxy/`).
fn rest_of_path(path: &str, id: &str) -> Option<String> {
    let marker = format!("/{id}/proxy");
    let at = path.find(&marker)? + marker.len();
    let rest = &path[at..];
    if rest.is_empty() {
        None
    } else {
        Some(rest.to_string())
    }
}

pub(super) async fn handle(req: StreamRequest) -> Result<Response, ApiStatus> {
    let path = req.request.uri().path().to_string();
    let query = req.request.uri().query().map(str::to_string);
    let Some(rest) = rest_of_path(&path, &req.name) else {
        let location = match &query {
            Some(q) => format!("{path}/?{q}"),
            None => format!("{path}/"),
        };
        return Ok(Response::builder()
            .status(http::StatusCode::MOVED_PERMANENTLY)
            .header(http::header::LOCATION, location)
            .body(Body::empty())
            .expect("valid response"));
    };
    let uri = match &query {
        Some(q) => format!("{rest}?{q}"),
        None => rest,
    };
    let resource = req.def.plural.clone();
    let id = split_scheme_name_port(&req.name).ok_or_else(|| {
        let what = match resource.as_str() {
            "pods" => "pod",
            "services" => "service",
            _ => "node",
        };
        ApiStatus::bad_request(format!("invalid {what} request {:?}", req.name))
    })?;
    let ns = req.namespace.clone().unwrap_or_default();
    match resource.as_str() {
        "pods" => {
            let pod = get_object(&req.state, "", "pods", Some(&ns), id.name)?;
            let port = if id.port.is_empty() {
                first_container_port(&pod).unwrap_or_default()
            } else {
                id.port.to_string()
            };
            let target = PodTarget::of(&pod, id.https, &port)?;
            to_pod(&req.state, req.request, &target, &uri).await
        }
        "services" => {
            let target = service_endpoint(&req.state, &ns, &id)?;
            to_pod(&req.state, req.request, &target, &uri).await
        }
        _ => {
            let node = get_object(&req.state, "", "nodes", None, id.name)?;
            if !id.port.is_empty() && id.port != KUBELET_PORT {
                let target = PodTarget::node(&node, id.name, id.https, id.port)?;
                return to_pod(&req.state, req.request, &target, &uri).await;
            }
            let stream = dial_node(&req.state, id.name)?;
            let what = format!("the kubelet of node {}", id.name);
            relay(req.request, TokioIo::new(stream), &uri, "kubelet", &what).await
        }
    }
}

/// A stored object of a built-in resource, or kube's 404.
fn get_object(
    state: &AppState,
    group: &str,
    plural: &str,
    ns: Option<&str>,
    name: &str,
) -> Result<Value, ApiStatus> {
    let def = state
        .registry
        .lookup(group, "v1", plural)
        .ok_or_else(|| ApiStatus::internal(format!("{plural} are not registered")))?;
    let rec = state
        .store
        .get(&keys::object_key(&def, ns, name))
        .map_err(store_err)?
        .ok_or_else(|| ApiStatus::not_found(Target::of(&def, name)))?;
    serde_json::from_slice(&rec.value).map_err(|e| ApiStatus::internal(e.to_string()))
}

/// The first declared container port, which kube proxies to when the
/// request names none.
fn first_container_port(pod: &Value) -> Option<String> {
    pod.pointer("/spec/containers")?
        .as_array()?
        .iter()
        .find_map(|c| c.pointer("/ports/0/containerPort")?.as_i64())
        .map(|p| p.to_string())
}

/// Where one proxied request goes: a pod's address on its node, or (no
/// uid) a node's own address.
#[derive(Debug, PartialEq, Eq)]
struct PodTarget {
    namespace: String,
    pod: String,
    uid: String,
    node: String,
    ip: std::net::IpAddr,
    port: u16,
    https: bool,
}

impl PodTarget {
    /// The pod's IP and node, and the port (empty: the scheme's default).
    fn of(pod: &Value, https: bool, port: &str) -> Result<Self, ApiStatus> {
        let s = |p: &str| pod.pointer(p).and_then(Value::as_str).unwrap_or_default();
        let ip: std::net::IpAddr = s("/status/podIP")
            .parse()
            .ok()
            .filter(is_global_unicast)
            .ok_or_else(|| ApiStatus::bad_request("address not allowed"))?;
        let port = match port {
            "" if https => 443,
            "" => 80,
            p => p.parse().map_err(|_| {
                ApiStatus::bad_request(format!("invalid port {p:?}: pods are proxied to a port number"))
            })?,
        };
        let node = s("/spec/nodeName");
        if node.is_empty() {
            return Err(ApiStatus::bad_request(format!(
                "pod {} does not have a host assigned",
                s("/metadata/name")
            )));
        }
        Ok(PodTarget {
            namespace: s("/metadata/namespace").to_string(),
            pod: s("/metadata/name").to_string(),
            uid: s("/metadata/uid").to_string(),
            node: node.to_string(),
            ip,
            port,
            https,
        })
    }

    /// A node's address on `port` (`nodes/NAME:PORT/proxy`): its
    /// InternalIP, else its ExternalIP, dialed by its own agent.
    fn node(node: &Value, name: &str, https: bool, port: &str) -> Result<Self, ApiStatus> {
        let addresses = node
            .pointer("/status/addresses")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let ip = ["InternalIP", "ExternalIP"]
            .iter()
            .find_map(|kind| {
                addresses
                    .iter()
                    .filter(|a| a["type"] == *kind)
                    .find_map(|a| a["address"].as_str()?.parse().ok())
            })
            .ok_or_else(|| {
                ApiStatus::service_unavailable(format!("no preferred addresses found; known addresses: {}", 
                    serde_json::to_string(&addresses).unwrap_or_default()))
            })?;
        let port = port.parse().map_err(|_| {
            ApiStatus::bad_request(format!("invalid port {port:?}: nodes are proxied to a port number"))
        })?;
        Ok(PodTarget {
            namespace: String::new(),
            pod: String::new(),
            uid: String::new(),
            node: name.to_string(),
            ip,
            port,
            https,
        })
    }

    /// Whether this is a node's own address rather than a pod's.
    fn is_node(&self) -> bool {
        self.uid.is_empty()
    }

    /// The kubelet API route that opens the connection.
    fn dial_path(&self) -> String {
        if self.is_node() {
            return format!("/rk3s/nodeDial/{}", self.addr());
        }
        format!("/rk3s/podDial/{}/{}/{}/{}", self.namespace, self.pod, self.uid, self.addr())
    }

    fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::new(self.ip, self.port)
    }
}

/// Go's `IP.IsGlobalUnicast`: not unspecified, loopback, multicast,
/// link-local or broadcast.
fn is_global_unicast(ip: &std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => {
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_multicast()
                || v4.is_link_local()
                || v4.is_broadcast())
        }
        std::net::IpAddr::V6(v6) => {
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

/// One ready endpoint of the Service, picked at random, as kube-apiserver's
/// service `ResourceLocation` picks it.
fn service_endpoint(state: &AppState, ns: &str, id: &Id<'_>) -> Result<PodTarget, ApiStatus> {
    let svc = get_object(state, "", "services", Some(ns), id.name)?;
    let mut port_name = id.port.to_string();
    if let Ok(number) = id.port.parse::<i64>() {
        port_name = svc
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .and_then(|ports| {
                ports
                    .iter()
                    .find(|p| p["port"].as_i64() == Some(number))
                    .map(|p| p["name"].as_str().unwrap_or_default().to_string())
            })
            .ok_or_else(|| {
                ApiStatus::service_unavailable(format!(
                    "no service port {number} found for service {:?}",
                    id.name
                ))
            })?;
    }
    let def = state
        .registry
        .lookup("discovery.k8s.io", "v1", "endpointslices")
        .ok_or_else(|| ApiStatus::internal("endpointslices are not registered"))?;
    let page = state
        .store
        .list(&crate::store::ListOptions {
            prefix: keys::collection_prefix(&def, Some(ns)),
            ..Default::default()
        })
        .map_err(store_err)?;
    let slices: Vec<Value> = page
        .records
        .iter()
        .filter_map(|r| serde_json::from_slice::<Value>(&r.value).ok())
        .filter(|s| {
            s.pointer("/metadata/labels/kubernetes.io~1service-name")
                .and_then(Value::as_str)
                == Some(id.name)
        })
        .collect();
    let candidates = ready_endpoints(&slices, &port_name);
    let no_endpoints =
        || ApiStatus::service_unavailable(format!("no endpoints available for service {:?}", id.name));
    if candidates.is_empty() {
        return Err(no_endpoints());
    }
    let (address, pod_name, port) = {
        use rand::seq::SliceRandom;
        candidates
            .choose(&mut rand::thread_rng())
            .cloned()
            .ok_or_else(no_endpoints)?
    };
    let pod_name = pod_name.ok_or_else(|| {
        ApiStatus::service_unavailable(format!(
            "endpoint {address} of service {:?} names no pod: rk3s reaches endpoints through their pod's node",
            id.name
        ))
    })?;
    let pod = get_object(state, "", "pods", Some(ns), &pod_name)?;
    let mut target = PodTarget::of(&pod, id.https, &port.to_string())?;
    // The endpoint's address is the one kube dials (the pod's, normally).
    if let Ok(ip) = address.parse() {
        target.ip = ip;
    }
    Ok(target)
}

/// The ready addresses (with their pod, if named) serving the slice port
/// called `port_name`.
fn ready_endpoints(slices: &[Value], port_name: &str) -> Vec<(String, Option<String>, u16)> {
    let mut out = Vec::new();
    for slice in slices {
        let Some(port) = slice
            .pointer("/ports")
            .and_then(Value::as_array)
            .and_then(|ports| {
                ports
                    .iter()
                    .find(|p| p["name"].as_str().unwrap_or_default() == port_name)
            })
            .and_then(|p| p["port"].as_u64())
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for ep in slice
            .pointer("/endpoints")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if ep.pointer("/conditions/ready").and_then(Value::as_bool) == Some(false) {
                continue;
            }
            let pod = ep
                .pointer("/targetRef")
                .filter(|r| r["kind"].as_str() == Some("Pod"))
                .and_then(|r| r["name"].as_str())
                .map(str::to_string);
            for address in ep
                .pointer("/addresses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                out.push((address.to_string(), pod.clone(), port));
            }
        }
    }
    out
}

fn dial_node(state: &AppState, node: &str) -> Result<tokio::io::DuplexStream, ApiStatus> {
    let dialer = state.node_dialer.clone().ok_or_else(|| {
        ApiStatus::service_unavailable(format!(
            "no tunnel to node {node}: tunnels are not enabled on this server"
        ))
    })?;
    dialer.dial(node).map_err(ApiStatus::service_unavailable)
}

/// Proxies `incoming` to the pod: a TCP connection through the node's
/// kubelet (`/rk3s/podDial/…`), then TLS for `https:`, then HTTP.
async fn to_pod(
    state: &Arc<AppState>,
    incoming: Request,
    target: &PodTarget,
    uri: &str,
) -> Result<Response, ApiStatus> {
    let stream = dial_node(state, &target.node)?;
    let conn = dial_pod(stream, target).await?;
    let host = target.addr().to_string();
    let what = if target.is_node() {
        format!("node {} at {host}", target.node)
    } else {
        format!("pod {}/{} at {host} on node {}", target.namespace, target.pod, target.node)
    };
    if target.https {
        let connector = tokio_rustls::TlsConnector::from(Arc::new(
            crate::pki::skip_verify::insecure_client_config(),
        ));
        let server_name = rustls::pki_types::ServerName::IpAddress(target.ip.into());
        let tls = connector
            .connect(server_name, TokioIo::new(conn))
            .await
            .map_err(|e| {
                ApiStatus::service_unavailable(format!(
                    "error trying to reach service: TLS handshake with {host} failed: {e}"
                ))
            })?;
        relay(incoming, TokioIo::new(tls), uri, &host, &what).await
    } else {
        relay(incoming, conn, uri, &host, &what).await
    }
}

/// Asks the pod's kubelet for a TCP connection to the pod; the upgraded
/// stream carries it.
async fn dial_pod(
    stream: tokio::io::DuplexStream,
    target: &PodTarget,
) -> Result<hyper::upgrade::Upgraded, ApiStatus> {
    let unreachable = |e: String| {
        ApiStatus::service_unavailable(format!(
            "error trying to reach service: {e}"
        ))
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Body>(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let request = http::Request::builder()
        .uri(target.dial_path())
        .header(http::header::HOST, "kubelet")
        .header(http::header::CONNECTION, "Upgrade")
        .header(http::header::UPGRADE, "rk3s-tcp")
        .body(Body::empty())
        .map_err(|e| ApiStatus::internal(e.to_string()))?;
    let mut response = sender
        .send_request(request)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    if response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_string())
            .unwrap_or_default();
        return Err(unreachable(body));
    }
    hyper::upgrade::on(&mut response)
        .await
        .map_err(|e| unreachable(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_follow_kubes_split_scheme_name_port() {
        let id = |s| split_scheme_name_port(s);
        assert_eq!(id("web"), Some(Id { https: false, name: "web", port: "" }));
        assert_eq!(id("web:8080"), Some(Id { https: false, name: "web", port: "8080" }));
        assert_eq!(id("https:web:443"), Some(Id { https: true, name: "web", port: "443" }));
        assert_eq!(id("http:web:"), Some(Id { https: false, name: "web", port: "" }));
        assert_eq!(id("ftp:web:21"), None);
        assert_eq!(id(":80"), None);
        assert_eq!(id("a:b:c:d"), None);
    }

    #[test]
    fn the_rest_of_the_path_follows_proxy() {
        let p = "/api/v1/namespaces/default/pods/web:80/proxy";
        assert_eq!(rest_of_path(p, "web:80"), None);
        assert_eq!(rest_of_path(&format!("{p}/"), "web:80").as_deref(), Some("/"));
        assert_eq!(
            rest_of_path(&format!("{p}/a/b/"), "web:80").as_deref(),
            Some("/a/b/")
        );
        assert_eq!(
            rest_of_path("/api/v1/nodes/n1/proxy/healthz", "n1").as_deref(),
            Some("/healthz")
        );
    }

    fn pod(ip: &str) -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
            "spec": {"nodeName": "n1", "containers": [{"name": "a"}, {"name": "b", "ports": [{"containerPort": 8080}]}]},
            "status": {"podIP": ip}
        })
    }

    #[test]
    fn a_pod_is_its_ip_and_first_declared_port() {
        let p = pod("10.42.0.7");
        let port = first_container_port(&p).unwrap();
        assert_eq!(port, "8080");
        let t = PodTarget::of(&p, false, &port).unwrap();
        assert_eq!(t.addr().to_string(), "10.42.0.7:8080");
        assert_eq!((t.node.as_str(), t.uid.as_str()), ("n1", "u1"));
        assert_eq!(PodTarget::of(&p, true, "").unwrap().port, 443);
        assert_eq!(PodTarget::of(&p, false, "").unwrap().port, 80);
        for bad in ["", "127.0.0.1", "0.0.0.0", "169.254.1.1"] {
            assert_eq!(
                PodTarget::of(&pod(bad), false, "80").unwrap_err().message,
                "address not allowed",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_node_port_is_its_internal_address() {
        let node = json!({"status": {"addresses": [
            {"type": "Hostname", "address": "n1"},
            {"type": "ExternalIP", "address": "198.51.100.2"},
            {"type": "InternalIP", "address": "192.168.1.7"}]}});
        let t = PodTarget::node(&node, "n1", false, "9100").unwrap();
        assert_eq!(t.dial_path(), "/rk3s/nodeDial/192.168.1.7:9100");
        assert!(t.is_node());
        assert_eq!(
            PodTarget::of(&pod("10.42.0.7"), false, "80").unwrap().dial_path(),
            "/rk3s/podDial/default/web/u1/10.42.0.7:80"
        );
        assert!(PodTarget::node(&json!({}), "n1", false, "9100").is_err());
        assert!(PodTarget::node(&node, "n1", false, "http").is_err());
    }

    #[test]
    fn only_ready_endpoints_of_the_named_port_are_candidates() {
        let slices = vec![json!({
            "ports": [{"name": "http", "port": 8080}, {"name": "metrics", "port": 9090}],
            "endpoints": [
                {"addresses": ["10.42.0.5"], "conditions": {"ready": true}, "targetRef": {"kind": "Pod", "name": "a"}},
                {"addresses": ["10.42.0.6"], "conditions": {"ready": false}, "targetRef": {"kind": "Pod", "name": "b"}},
                {"addresses": ["10.42.0.7"], "conditions": {}},
            ]
        })];
        assert_eq!(
            ready_endpoints(&slices, "http"),
            vec![
                ("10.42.0.5".to_string(), Some("a".to_string()), 8080),
                ("10.42.0.7".to_string(), None, 8080)
            ]
        );
        assert!(ready_endpoints(&slices, "").is_empty());
    }
}
