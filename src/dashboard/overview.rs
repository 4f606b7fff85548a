//! The dashboard's data, read with the viewer's own client: routers (from
//! the Ingresses this controller serves, with the health of each target's
//! endpoints), nodes, pods per node, and recent warning Events. Each
//! section carries either its rows or the API's refusal.

use k8s_openapi::api::core::v1::{Event, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::{Api, ListParams};
use serde::Serialize;

use crate::ingress::backends::{self, Unavailable};
use crate::ingress::class;
use crate::ingress::table::{PathKind, RouteTable};
use crate::svccache::Snapshot;

/// The token itself was refused (401): nothing can be shown.
pub struct Denied(pub String);

#[derive(Serialize, Default)]
pub struct Section<T> {
    pub items: Vec<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Serialize, Debug, PartialEq)]
pub struct RouterRow {
    pub ingress: String,
    pub host: String,
    pub path: String,
    pub path_type: &'static str,
    pub tls: bool,
    pub service: String,
    pub ready_endpoints: usize,
    /// Empty when healthy; else what is missing.
    pub problem: String,
}

#[derive(Serialize)]
pub struct NodeRow {
    pub name: String,
    pub ready: bool,
    pub roles: Vec<String>,
    pub address: String,
    pub cpu: String,
    pub memory: String,
    pub pods: String,
    pub version: String,
}

#[derive(Serialize)]
pub struct PodRow {
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub phase: String,
    pub ready: String,
    pub restarts: i32,
}

#[derive(Serialize)]
pub struct EventRow {
    pub namespace: String,
    pub object: String,
    pub reason: String,
    pub message: String,
    pub count: i32,
    pub last_seen: String,
}

#[derive(Serialize)]
pub struct Overview {
    pub routers: Section<RouterRow>,
    pub nodes: Section<NodeRow>,
    pub pods: Section<PodRow>,
    pub events: Section<EventRow>,
}

pub fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({})", s.message, s.code),
        other => other.to_string(),
    }
}

async fn list<K>(client: &kube::Client, lp: &ListParams) -> Result<Vec<K>, String>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
    K::DynamicType: Default,
{
    Api::<K>::all(client.clone()).list(lp).await.map(|l| l.items).map_err(|e| describe(&e))
}

fn unauthorized(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 401)
}

/// What the overview is made of: each kind's objects as the viewer may
/// read them, or the API's refusal.
pub struct Inputs {
    pub nodes: Result<Vec<Node>, String>,
    pub ingresses: Result<Vec<Ingress>, String>,
    /// Unreadable classes count as none (only the defaults are served).
    pub classes: Vec<IngressClass>,
    pub services: Result<Vec<Service>, String>,
    pub slices: Result<Vec<EndpointSlice>, String>,
    pub pods: Result<Vec<Pod>, String>,
    pub events: Result<Vec<Event>, String>,
}

/// The field selector for the events the overview shows.
pub const WARNINGS: &str = "type=Warning";

/// Routers from the objects, with the health of each target.
pub fn routers(ingresses: &[Ingress], classes: &[IngressClass], services: Snapshot) -> Vec<RouterRow> {
    let class_refs: Vec<&IngressClass> = classes.iter().collect();
    let served = ingresses.iter().filter(|i| class::serves(i, &class_refs));
    let table = RouteTable::build(served);
    let mut rows: Vec<RouterRow> = table
        .routes()
        .map(|r| (r.ingress.clone(), r.host.display(), r.path.clone(), r.kind, r.tls, r.backend.clone()))
        .chain(
            table
                .default_backend()
                .map(|(i, b)| (i.to_string(), "*".into(), "(default backend)".into(), PathKind::Prefix, false, b.clone())),
        )
        .map(|(ingress, host, path, kind, tls, backend)| {
            let (ready, problem) = match backends::resolve(&services, &backend) {
                Ok(e) => (e.len(), String::new()),
                Err(Unavailable::NoEndpoints(s)) => (0, format!("service {s} has no ready endpoints")),
                Err(e) => (0, e.to_string()),
            };
            RouterRow {
                ingress,
                host,
                path,
                path_type: match kind {
                    PathKind::Exact => "Exact",
                    PathKind::Prefix => "Prefix",
                },
                tls,
                service: backend.to_string(),
                ready_endpoints: ready,
                problem,
            }
        })
        .collect();
    rows.sort_by(|a, b| (&a.host, &a.path).cmp(&(&b.host, &b.path)));
    rows
}

fn node_row(n: &Node) -> NodeRow {
    let status = n.status.clone().unwrap_or_default();
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let alloc = status.allocatable.clone().unwrap_or_default();
    let q = |k: &str| alloc.get(k).map(|q| q.0.clone()).unwrap_or_default();
    let roles = n
        .metadata
        .labels
        .iter()
        .flatten()
        .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/").map(str::to_string))
        .collect();
    let address = status
        .addresses
        .iter()
        .flatten()
        .find(|a| a.type_ == "InternalIP")
        .map(|a| a.address.clone())
        .unwrap_or_default();
    NodeRow {
        name: n.metadata.name.clone().unwrap_or_default(),
        ready,
        roles,
        address,
        cpu: q("cpu"),
        memory: q("memory"),
        pods: q("pods"),
        version: status.node_info.map(|i| i.kubelet_version).unwrap_or_default(),
    }
}

fn pod_row(p: &Pod) -> PodRow {
    let status = p.status.clone().unwrap_or_default();
    let containers = status.container_statuses.unwrap_or_default();
    let ready = containers.iter().filter(|c| c.ready).count();
    let waiting = containers
        .iter()
        .find_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone());
    PodRow {
        namespace: p.metadata.namespace.clone().unwrap_or_default(),
        name: p.metadata.name.clone().unwrap_or_default(),
        node: p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default(),
        // As kubectl shows it: a pod being deleted is Terminating whatever its phase.
        phase: if p.metadata.deletion_timestamp.is_some() {
            "Terminating".into()
        } else {
            waiting.or(status.phase).unwrap_or_else(|| "Pending".into())
        },
        ready: format!("{ready}/{}", containers.len().max(p.spec.as_ref().map_or(0, |s| s.containers.len()))),
        restarts: containers.iter().map(|c| c.restart_count).sum(),
    }
}

fn event_row(e: &Event) -> EventRow {
    let last = e
        .last_timestamp
        .as_ref()
        .map(|t| t.0.to_string())
        .or_else(|| e.event_time.as_ref().map(|t| t.0.to_string()))
        .unwrap_or_default();
    EventRow {
        namespace: e.metadata.namespace.clone().unwrap_or_default(),
        object: format!(
            "{}/{}",
            e.involved_object.kind.clone().unwrap_or_default().to_lowercase(),
            e.involved_object.name.clone().unwrap_or_default()
        ),
        reason: e.reason.clone().unwrap_or_default(),
        message: e.message.clone().unwrap_or_default(),
        count: e.count.unwrap_or(1),
        last_seen: last,
    }
}

fn section<T, R>(r: Result<Vec<T>, String>, row: impl Fn(&T) -> R) -> Section<R> {
    match r {
        Ok(items) => Section { items: items.iter().map(row).collect(), error: None },
        Err(e) => Section { items: vec![], error: Some(e) },
    }
}

/// Builds the overview from what the viewer could read.
pub fn assemble(inputs: Inputs) -> Overview {
    let Inputs { nodes, ingresses, classes, services, slices, pods, events } = inputs;
    let routers = match (ingresses, services, slices) {
        (Ok(ing), Ok(svc), Ok(sl)) => {
            Section { items: routers(&ing, &classes, Snapshot::from_objects(svc, sl)), error: None }
        }
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Section { items: vec![], error: Some(e) },
    };
    let mut pods = section(pods, pod_row);
    pods.items.sort_by(|a, b| (&a.node, &a.namespace, &a.name).cmp(&(&b.node, &b.namespace, &b.name)));
    let events = events.map(|l| l.into_iter().filter(|e| e.type_.as_deref() == Some("Warning")).collect::<Vec<_>>());
    let mut events = section(events, event_row);
    events.items.sort_by(|a, b| b.last_seen.cmp(&a.last_seen));
    events.items.truncate(20);
    let mut nodes = section(nodes, node_row);
    nodes.items.sort_by(|a, b| a.name.cmp(&b.name));
    Overview { routers, nodes, pods, events }
}

/// Reads everything once with the viewer's client (`api/overview`).
pub async fn gather(client: kube::Client) -> Result<Overview, Denied> {
    let lp = ListParams::default();
    let nodes = Api::<Node>::all(client.clone()).list(&lp).await;
    let nodes = match nodes {
        Err(e) if unauthorized(&e) => {
            return Err(Denied(format!("the API server refused the token: {}", describe(&e))))
        }
        other => other.map(|l| l.items).map_err(|e| describe(&e)),
    };
    let warnings = ListParams::default().fields(WARNINGS);
    let (ingresses, classes, services, slices, pods, events) = tokio::join!(
        list::<Ingress>(&client, &lp),
        list::<IngressClass>(&client, &lp),
        list::<Service>(&client, &lp),
        list::<EndpointSlice>(&client, &lp),
        list::<Pod>(&client, &lp),
        list::<Event>(&client, &warnings),
    );
    Ok(assemble(Inputs { nodes, ingresses, classes: classes.unwrap_or_default(), services, slices, pods, events }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn routers_show_targets_and_endpoint_health() {
        let ing: Ingress = serde_json::from_value(json!({
            "metadata": {"name": "hello", "namespace": "default", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"tls": [{"hosts": ["hello.local"], "secretName": "t"}], "rules": [
                {"host": "hello.local", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "hello", "port": {"number": 80}}}},
                    {"path": "/down", "pathType": "Exact", "backend": {"service": {"name": "gone", "port": {"number": 80}}}},
                ]}}]}
        }))
        .unwrap();
        let other: Ingress = serde_json::from_value(json!({
            "metadata": {"name": "x", "namespace": "default"},
            "spec": {"ingressClassName": "nginx", "rules": [{"host": "n", "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "n", "port": {"number": 80}}}}]}}]}
        }))
        .unwrap();
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "hello", "namespace": "default"},
            "spec": {"ports": [{"port": 80, "targetPort": 8080}]}
        }))
        .unwrap();
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "hello-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "hello"}},
            "addressType": "IPv4",
            "ports": [{"port": 8080}],
            "endpoints": [{"addresses": ["10.42.0.4"]}, {"addresses": ["10.42.1.4"]}]
        }))
        .unwrap();
        let rows = routers(&[ing, other], &[], Snapshot::from_objects(vec![svc], vec![slice]));
        assert_eq!(rows.len(), 2, "the nginx-class Ingress is not ours: {rows:?}");
        assert_eq!(rows[0].host, "hello.local");
        assert_eq!(rows[0].path, "/");
        assert_eq!(rows[0].ready_endpoints, 2);
        assert!(rows[0].tls && rows[0].problem.is_empty());
        assert_eq!(rows[0].service, "default/hello:80");
        assert_eq!(rows[1].path_type, "Exact");
        assert_eq!(rows[1].problem, "service default/gone does not exist");
    }

    #[test]
    fn pods_show_their_state_as_kubectl_does() {
        let pod = |extra: serde_json::Value| -> Pod {
            let mut v = json!({
                "metadata": {"name": "p", "namespace": "default"},
                "spec": {"nodeName": "agent", "containers": [{"name": "c"}]},
                "status": {"phase": "Running", "containerStatuses": [{"name": "c", "image": "i", "imageID": "",
                    "ready": true, "restartCount": 2, "state": {"running": {}}}]}
            });
            if let Some(ts) = extra.get("deletionTimestamp") {
                v["metadata"]["deletionTimestamp"] = ts.clone();
            }
            serde_json::from_value(v).unwrap()
        };
        let running = pod_row(&pod(json!({})));
        assert_eq!((running.phase.as_str(), running.ready.as_str(), running.restarts), ("Running", "1/1", 2));
        let going = pod_row(&pod(json!({"deletionTimestamp": "2026-01-01T00:00:00Z"})));
        assert_eq!(going.phase, "Terminating");
    }
}
