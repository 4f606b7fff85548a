//! Streaming subresources proxied to a node's kubelet API through its
//! tunnel: `pods/log`, `pods/exec`, `pods/attach`, `pods/portforward`.
//! They get the raw request (upgrades need it), after authentication and
//! authorization (so RBAC is checked on `pods/exec` etc.) but before the
//! body is read.
//!
//! The API server is a plain HTTP/1.1 reverse proxy here, as
//! kube-apiserver is for kubelets: the request goes to the kubelet path
//! (`/containerLogs/…`, `/exec/…`, `/attach/…`, `/portForward/…`) with its
//! query, and an upgrade (websocket or SPDY) answered with 101 is spliced
//! byte for byte between kubectl and the kubelet. A node without a live
//! tunnel is a 503 naming the node, never a hang.
//!
//! `pods/proxy`, `services/proxy` and `nodes/proxy` are `super::proxy`'s,
//! over the same [`relay`].

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::keys;
use super::registry::ResourceDef;
use super::context::{store_err, AppState};
use super::status::{ApiStatus, Target};

/// Opens a byte stream to a node's kubelet API.
pub trait NodeDialer: Send + Sync {
    fn dial(&self, node: &str) -> Result<tokio::io::DuplexStream, String>;
}

/// Whether `sub` on `group_resource` is streamed through here.
pub fn is_streaming(group_resource: &str, sub: &str) -> bool {
    matches!(
        (group_resource, sub),
        ("pods", "log" | "exec" | "attach" | "portforward" | "proxy")
            | ("nodes", "proxy")
            | ("services", "proxy")
    )
}

/// One streaming request, already authorized.
pub struct StreamRequest {
    pub state: Arc<AppState>,
    pub def: Arc<ResourceDef>,
    pub namespace: Option<String>,
    pub name: String,
    pub sub: String,
    pub request: Request,
}

pub async fn handle(req: StreamRequest) -> Result<Response, ApiStatus> {
    if req.sub == "proxy" {
        return super::proxy::handle(req).await;
    }
    let ns = req.namespace.clone().unwrap_or_default();
    let key = keys::object_key(&req.def, Some(&ns), &req.name);
    let rec = req
        .state
        .store
        .get(&key)
        .map_err(store_err)?
        .ok_or_else(|| ApiStatus::not_found(Target::of(&req.def, &req.name)))?;
    let pod: Value =
        serde_json::from_slice(&rec.value).map_err(|e| ApiStatus::internal(e.to_string()))?;
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiStatus::bad_request(format!("pod {} does not have a host assigned", req.name))
        })?
        .to_string();
    let query = req.request.uri().query().unwrap_or("").to_string();
    let path = if req.sub == "portforward" {
        let uid = pod
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default();
        format!("/portForward/{ns}/{}/{uid}", req.name)
    } else {
        let container = pick_container(&pod, &req.name, &query)?;
        let prefix = match req.sub.as_str() {
            "log" => "containerLogs",
            "exec" => "exec",
            _ => "attach",
        };
        format!("/{prefix}/{ns}/{}/{container}", req.name)
    };
    let dialer = req.state.node_dialer.clone().ok_or_else(|| {
        ApiStatus::service_unavailable(format!(
            "no tunnel to node {node}: tunnels are not enabled on this server"
        ))
    })?;
    let stream = dialer.dial(&node).map_err(ApiStatus::service_unavailable)?;
    let uri = if query.is_empty() {
        path
    } else {
        format!("{path}?{query}")
    };
    let what = format!("the kubelet of node {node}");
    relay(req.request, TokioIo::new(stream), &uri, "kubelet", &what).await
}

/// The container a request names, or the only one; kube's wording otherwise.
fn pick_container(pod: &Value, name: &str, query: &str) -> Result<String, ApiStatus> {
    let names: Vec<String> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    // Init and ephemeral containers are valid when named.
    let init: Vec<String> = ["/spec/initContainers", "/spec/ephemeralContainers"]
        .iter()
        .filter_map(|p| pod.pointer(p).and_then(Value::as_array))
        .flatten()
        .filter_map(|c| c["name"].as_str().map(String::from))
        .collect();
    let asked = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "container")
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty());
    match asked {
        Some(c) if names.contains(&c) || init.contains(&c) => Ok(c),
        Some(c) => Err(ApiStatus::bad_request(format!(
            "container {c} is not valid for pod {name}"
        ))),
        None if names.len() == 1 => Ok(names[0].clone()),
        None => Err(ApiStatus::bad_request(format!(
            "a container name must be specified for pod {name}, choose one of: [{}]",
            names.join(" ")
        ))),
    }
}

/// Sends `incoming` over `io` (to a kubelet, or a pod for the proxies)
/// as `uri` with `Host: host`, and relays the answer; a 101 splices the two
/// upgraded connections together. `what` names the far end in errors
/// ("the kubelet of node n1", "pod default/web").
pub(super) async fn relay<IO>(
    mut incoming: Request,
    io: IO,
    uri: &str,
    host: &str,
    what: &str,
) -> Result<Response, ApiStatus>
where
    IO: hyper::rt::Read + hyper::rt::Write + Send + Unpin + 'static,
{
    let unreachable = |e: String| {
        ApiStatus::service_unavailable(format!("failed to reach {what}: {e}"))
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Body>(io)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!("kubelet proxy connection ended: {e}");
        }
    });
    let client_upgrade = hyper::upgrade::on(&mut incoming);
    let (parts, body) = incoming.into_parts();
    let mut out = http::Request::builder().method(parts.method).uri(uri);
    for (k, v) in parts.headers.iter() {
        if k == http::header::AUTHORIZATION || k == http::header::HOST {
            continue;
        }
        out = out.header(k, v);
    }
    let out = out
        .header(http::header::HOST, host)
        .body(body)
        .map_err(|e| ApiStatus::internal(e.to_string()))?;
    let mut response = sender
        .send_request(out)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        let kubelet_upgrade = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            match tokio::join!(client_upgrade, kubelet_upgrade) {
                (Ok(client), Ok(kubelet)) => {
                    let _ = tokio::io::copy_bidirectional(
                        &mut TokioIo::new(client),
                        &mut TokioIo::new(kubelet),
                    )
                    .await;
                }
                (c, k) => tracing::debug!(
                    "upgrade failed: client {:?}, kubelet {:?}",
                    c.err(),
                    k.err()
                ),
            }
        });
        let (parts, _) = response.into_parts();
        return Ok(Response::from_parts(parts, Body::empty()));
    }
    let (parts, body) = response.into_parts();
    Ok(Response::from_parts(parts, Body::new(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_choice_follows_kube() {
        let pod = serde_json::json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "i"}], "ephemeralContainers": [{"name": "debugger-x"}]}});
        assert_eq!(pick_container(&pod, "p", "container=b").unwrap(), "b");
        assert_eq!(pick_container(&pod, "p", "container=debugger-x").unwrap(), "debugger-x");
        assert_eq!(pick_container(&pod, "p", "container=i").unwrap(), "i");
        assert_eq!(
            pick_container(&pod, "p", "").unwrap_err().message,
            "a container name must be specified for pod p, choose one of: [a b]"
        );
        assert_eq!(
            pick_container(&pod, "p", "container=z")
                .unwrap_err()
                .message,
            "container z is not valid for pod p"
        );
        let one = serde_json::json!({"spec": {"containers": [{"name": "only"}]}});
        assert_eq!(pick_container(&one, "p", "follow=true").unwrap(), "only");
    }
}
