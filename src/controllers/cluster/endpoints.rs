//! The endpoints controllers: for every Service with a selector, the
//! `Endpoints` object of the same name and the EndpointSlices labelled
//! `kubernetes.io/service-name`, from the pods the selector picks.
//!
//! Ready pods are `addresses` (`conditions.ready`), others
//! `notReadyAddresses` (`ready: false`) unless the Service publishes not-ready
//! addresses; terminating pods are left out of Endpoints and shown as
//! `terminating` in slices. Named target ports are resolved per pod, so pods
//! that name the port differently land in different subsets/slices. A pod's
//! `hostname` is published when its `subdomain` is the Service's name.
//! Services without a selector (like `default/kubernetes`) are left alone.
//!
//! Both objects carry an ownerReference to the Service, so the garbage
//! collector removes them with it (kube's endpoints controller deletes the
//! Endpoints itself; the effect is the same). PARTIAL: one slice per
//! address family and port set, without kube's 100-endpoint slice limit;
//! no topology hints; dual-stack pods publish their first IP only.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;
use serde_json::{json, Value};

use super::super::Context;
use super::{Error, Result};

pub const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
pub const SERVICE_NAME: &str = "kubernetes.io/service-name";

/// One group of endpoints sharing a port set (a subset, or a slice).
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub ports: Vec<Value>,
    pub family: &'static str,
    pub ready: Vec<Value>,
    pub not_ready: Vec<Value>,
    pub slice_endpoints: Vec<Value>,
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

/// Resolves a Service port's targetPort against one pod.
fn target_port(port: &Value, pod: &Pod) -> Option<i64> {
    match port.get("targetPort") {
        None | Some(Value::Null) => port.get("port").and_then(Value::as_i64),
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(name)) => {
            if let Ok(n) = name.parse::<i64>() {
                return Some(n);
            }
            pod.spec
                .iter()
                .flat_map(|s| s.containers.iter())
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| i64::from(p.container_port))
        }
        _ => None,
    }
}

/// The Endpoints subsets and slice groups for `svc` over `pods` (pure).
pub fn desired(svc: &Value, pods: &[Arc<Pod>]) -> Vec<Group> {
    let svc_name = svc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let publish_not_ready = svc
        .pointer("/spec/publishNotReadyAddresses")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let svc_ports: Vec<Value> = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut groups: Vec<Group> = Vec::new();
    let mut sorted: Vec<&Arc<Pod>> = pods.iter().collect();
    sorted.sort_by_key(|p| p.metadata.name.clone());
    for pod in sorted {
        let status = pod.status.clone().unwrap_or_default();
        let Some(ip) = status.pod_ip.clone().filter(|i| !i.is_empty()) else {
            continue;
        };
        if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
            continue;
        }
        let mut ports = Vec::new();
        let mut missing = false;
        for sp in &svc_ports {
            match target_port(sp, pod) {
                Some(tp) => {
                    let mut p = json!({"port": tp,
                        "protocol": sp.get("protocol").cloned().unwrap_or(json!("TCP"))});
                    if let Some(n) = sp
                        .get("name")
                        .filter(|n| n.as_str().is_some_and(|s| !s.is_empty()))
                    {
                        p["name"] = n.clone();
                    }
                    if let Some(a) = sp.get("appProtocol") {
                        p["appProtocol"] = a.clone();
                    }
                    ports.push(p);
                }
                None => missing = true,
            }
        }
        if missing && ports.is_empty() && !svc_ports.is_empty() {
            continue;
        }
        let family = if ip.contains(':') { "IPv6" } else { "IPv4" };
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let ready = pod_ready(pod) && !terminating;
        let spec = pod.spec.clone().unwrap_or_default();
        let hostname = spec
            .hostname
            .clone()
            .filter(|_| spec.subdomain.as_deref() == Some(svc_name));
        let target_ref = json!({"kind": "Pod", "namespace": pod.namespace(), "name": pod.name_any(),
                                "uid": pod.metadata.uid});
        let mut address = json!({"ip": ip, "targetRef": target_ref});
        if let Some(n) = &spec.node_name {
            address["nodeName"] = json!(n);
        }
        if let Some(h) = &hostname {
            address["hostname"] = json!(h);
        }
        let mut ep = json!({"addresses": [ip],
            "conditions": {"ready": ready || (publish_not_ready && !terminating),
                           "serving": pod_ready(pod), "terminating": terminating},
            "targetRef": target_ref});
        if let Some(n) = &spec.node_name {
            ep["nodeName"] = json!(n);
        }
        if let Some(h) = &hostname {
            ep["hostname"] = json!(h);
        }
        let idx = match groups
            .iter()
            .position(|g| g.ports == ports && g.family == family)
        {
            Some(i) => i,
            None => {
                groups.push(Group {
                    ports: ports.clone(),
                    family,
                    ready: vec![],
                    not_ready: vec![],
                    slice_endpoints: vec![],
                });
                groups.len() - 1
            }
        };
        let g = &mut groups[idx];
        g.slice_endpoints.push(ep);
        if terminating {
            continue;
        }
        if ready || publish_not_ready {
            g.ready.push(address);
        } else {
            g.not_ready.push(address);
        }
    }
    groups
}

/// The `subsets` of the Endpoints object.
pub fn subsets(groups: &[Group]) -> Value {
    let list: Vec<Value> = groups
        .iter()
        .filter(|g| !g.ready.is_empty() || !g.not_ready.is_empty())
        .map(|g| {
            let mut s = json!({});
            if !g.ready.is_empty() {
                s["addresses"] = json!(g.ready);
            }
            if !g.not_ready.is_empty() {
                s["notReadyAddresses"] = json!(g.not_ready);
            }
            if !g.ports.is_empty() {
                s["ports"] = json!(g.ports);
            }
            s
        })
        .collect();
    json!(list)
}

fn selector_matches(sel: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn owner_ref(svc: &Service) -> Value {
    json!([{"apiVersion": "v1", "kind": "Service", "name": svc.name_any(),
            "uid": svc.metadata.uid, "controller": true, "blockOwnerDeletion": true}])
}

pub(crate) struct EndpointsCtx {
    ctx: Context,
    pods: Store<Pod>,
}

async fn reconcile(svc: Arc<Service>, c: Arc<EndpointsCtx>) -> Result<Action> {
    let selector = svc
        .spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .unwrap_or_default();
    if selector.is_empty() || svc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = svc.namespace().unwrap_or_default();
    let pods: Vec<Arc<Pod>> = c
        .pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()))
        .filter(|p| {
            selector_matches(
                &selector,
                p.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()),
            )
        })
        .collect();
    let svc_json = serde_json::to_value(svc.as_ref()).map_err(|e| Error::Encode(e.to_string()))?;
    let groups = desired(&svc_json, &pods);
    write_endpoints(&c.ctx.client, &svc, &groups).await?;
    write_slices(&c.ctx.client, &svc, &groups).await?;
    Ok(Action::requeue(Duration::from_secs(300)))
}

async fn write_endpoints(client: &kube::Client, svc: &Service, groups: &[Group]) -> Result<()> {
    let ns = svc.namespace().unwrap_or_default();
    let api: Api<Endpoints> = Api::namespaced(client.clone(), &ns);
    let subsets = subsets(groups);
    let labels = svc.metadata.labels.clone().unwrap_or_default();
    let mut want = json!({"apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": svc.name_any(), "namespace": ns, "labels": labels,
                     "ownerReferences": owner_ref(svc)}});
    if subsets.as_array().is_some_and(|a| !a.is_empty()) {
        want["subsets"] = subsets;
    }
    match api.get_opt(&svc.name_any()).await? {
        None => {
            let ep: Endpoints =
                serde_json::from_value(want).map_err(|e| Error::Encode(e.to_string()))?;
            match api.create(&PostParams::default(), &ep).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 => Err(Error::Retry),
                Err(e) => Err(e.into()),
            }
        }
        Some(cur) => {
            let cur_json = serde_json::to_value(&cur).map_err(|e| Error::Encode(e.to_string()))?;
            let same = cur_json.get("subsets").unwrap_or(&json!([]))
                == want.get("subsets").unwrap_or(&json!([]))
                && cur_json.pointer("/metadata/labels").unwrap_or(&json!({}))
                    == &want["metadata"]["labels"]
                && cur_json.pointer("/metadata/ownerReferences").is_some();
            if same {
                return Ok(());
            }
            want["metadata"]["resourceVersion"] = json!(cur.resource_version());
            let ep: Endpoints =
                serde_json::from_value(want).map_err(|e| Error::Encode(e.to_string()))?;
            api.replace(&svc.name_any(), &PostParams::default(), &ep)
                .await?;
            Ok(())
        }
    }
}

async fn write_slices(client: &kube::Client, svc: &Service, groups: &[Group]) -> Result<()> {
    let ns = svc.namespace().unwrap_or_default();
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);
    let lp = ListParams::default().labels(&format!(
        "{SERVICE_NAME}={},{MANAGED_BY}={CONTROLLER_NAME}",
        svc.name_any()
    ));
    let mut existing: Vec<EndpointSlice> = api.list(&lp).await?.items;
    existing.sort_by_key(|s| s.name_any());
    let mut wanted: Vec<(String, Vec<Value>, Vec<Value>)> = groups
        .iter()
        .filter(|g| !g.slice_endpoints.is_empty())
        .map(|g| {
            (
                g.family.to_string(),
                g.ports.clone(),
                g.slice_endpoints.clone(),
            )
        })
        .collect();
    if wanted.is_empty() {
        // kube keeps one empty placeholder slice.
        wanted.push(("IPv4".into(), vec![], vec![]));
    }
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    labels.insert(SERVICE_NAME.into(), svc.name_any());
    labels.insert(MANAGED_BY.into(), CONTROLLER_NAME.into());
    let mut unused: Vec<EndpointSlice> = Vec::new();
    let mut remaining = wanted;
    for cur in existing {
        let cur_json = serde_json::to_value(&cur).map_err(|e| Error::Encode(e.to_string()))?;
        let pos = remaining
            .iter()
            .position(|(fam, _, _)| cur.address_type == *fam);
        let Some(pos) = pos else {
            unused.push(cur);
            continue;
        };
        let (fam, ports, eps) = remaining.remove(pos);
        let same = cur_json.get("endpoints").unwrap_or(&json!([])) == &json!(eps)
            && cur_json.get("ports").unwrap_or(&json!([])) == &json!(ports)
            && cur.metadata.labels.as_ref() == Some(&labels);
        if same {
            continue;
        }
        let body = slice_json(svc, &labels, &fam, &ports, &eps, Some(&cur));
        let s: EndpointSlice =
            serde_json::from_value(body).map_err(|e| Error::Encode(e.to_string()))?;
        api.replace(&cur.name_any(), &PostParams::default(), &s)
            .await?;
    }
    for (fam, ports, eps) in remaining {
        let body = slice_json(svc, &labels, &fam, &ports, &eps, None);
        let s: EndpointSlice =
            serde_json::from_value(body).map_err(|e| Error::Encode(e.to_string()))?;
        api.create(&PostParams::default(), &s).await?;
    }
    for s in unused {
        match api.delete(&s.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn slice_json(
    svc: &Service,
    labels: &BTreeMap<String, String>,
    family: &str,
    ports: &[Value],
    eps: &[Value],
    cur: Option<&EndpointSlice>,
) -> Value {
    let mut meta = json!({"namespace": svc.namespace(), "labels": labels,
                          "ownerReferences": owner_ref(svc)});
    match cur {
        Some(c) => {
            meta["name"] = json!(c.name_any());
            meta["resourceVersion"] = json!(c.resource_version());
        }
        None => meta["generateName"] = json!(format!("{}-", svc.name_any())),
    }
    let mut v = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": meta, "addressType": family, "endpoints": eps});
    if !ports.is_empty() {
        v["ports"] = json!(ports);
    }
    v
}

fn error_policy(_svc: Arc<Service>, e: &Error, _c: Arc<EndpointsCtx>) -> Action {
    tracing::debug!("endpoints: {e}");
    Action::requeue(Duration::from_secs(2))
}

/// Runs the Endpoints/EndpointSlice controller until shutdown.
pub async fn run(ctx: Context) {
    let client = ctx.client.clone();
    let (reader, writer) = reflector::store::<Pod>();
    let pod_stream = reflector::reflector(
        writer,
        watcher::watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects();
    let shutdown = ctx.shutdown.clone();
    let feeder = tokio::spawn(async move {
        let mut s = std::pin::pin!(pod_stream);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                next = s.next() => if next.is_none() { return },
            }
        }
    });
    // A burst of pod changes (a rollout, a node going away) becomes one
    // reconcile per Service.
    let controller = Controller::new(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    )
    .with_config(kube::runtime::controller::Config::default().debounce(Duration::from_millis(200)));
    let services = controller.store();
    let c = Arc::new(EndpointsCtx {
        ctx: ctx.clone(),
        pods: reader,
    });
    controller
        .watches(
            Api::<Pod>::all(client),
            watcher::Config::default(),
            move |pod: Pod| {
                let ns = pod.namespace();
                services
                    .state()
                    .into_iter()
                    .filter(|s| s.namespace() == ns)
                    .filter(|s| {
                        s.spec
                            .as_ref()
                            .and_then(|s| s.selector.as_ref())
                            .is_some_and(|m| !m.is_empty())
                    })
                    .map(|s| ObjectRef::from_obj(s.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(ctx.shutdown.clone().cancelled_owned())
        .run(reconcile, error_policy, c)
        .for_each(|_| async {})
        .await;
    feeder.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ip: &str, ready: bool, extra: Value) -> Arc<Pod> {
        let mut v = json!({"metadata": {"name": name, "namespace": "default", "uid": format!("u-{name}")},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"podIP": ip, "phase": "Running",
                       "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}});
        if let (Some(a), Some(b)) = (v.as_object_mut(), extra.as_object()) {
            for (k, x) in b {
                if let (Some(ao), Some(bo)) =
                    (a.get_mut(k).and_then(Value::as_object_mut), x.as_object())
                {
                    for (kk, xx) in bo {
                        ao.insert(kk.clone(), xx.clone());
                    }
                } else {
                    a.insert(k.clone(), x.clone());
                }
            }
        }
        Arc::new(serde_json::from_value(v).unwrap())
    }

    fn svc(extra: Value) -> Value {
        let mut s = json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}});
        if let Some(o) = extra.as_object() {
            for (k, v) in o {
                s["spec"][k] = v.clone();
            }
        }
        s
    }

    #[test]
    fn ready_and_not_ready_addresses_with_named_ports() {
        let pods = vec![
            pod("a", "10.42.0.5", true, json!({})),
            pod("b", "10.42.0.6", false, json!({})),
        ];
        let g = desired(&svc(json!({})), &pods);
        assert_eq!(g.len(), 1);
        assert_eq!(
            g[0].ports,
            vec![json!({"name": "http", "port": 8080, "protocol": "TCP"})]
        );
        let s = subsets(&g);
        assert_eq!(s[0]["addresses"][0]["ip"], "10.42.0.5");
        assert_eq!(s[0]["addresses"][0]["nodeName"], "n1");
        assert_eq!(s[0]["addresses"][0]["targetRef"]["name"], "a");
        assert_eq!(s[0]["notReadyAddresses"][0]["ip"], "10.42.0.6");
        assert_eq!(g[0].slice_endpoints[1]["conditions"]["ready"], false);
        let published = desired(&svc(json!({"publishNotReadyAddresses": true})), &pods);
        assert_eq!(
            subsets(&published)[0]["addresses"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn pods_naming_the_port_differently_get_their_own_subset() {
        let other = pod(
            "c",
            "10.42.0.7",
            true,
            json!({"spec": {"containers": [
            {"name": "c", "ports": [{"name": "http", "containerPort": 9090}]}]}}),
        );
        let pods = vec![
            pod("a", "10.42.0.5", true, json!({})),
            other,
            pod("x", "", true, json!({})),
        ];
        let g = desired(&svc(json!({})), &pods);
        assert_eq!(g.len(), 2);
        assert_eq!(g[1].ports[0]["port"], 9090);
    }

    #[test]
    fn headless_hostnames_and_terminating_pods() {
        let named = pod(
            "web-0",
            "10.42.0.8",
            true,
            json!({"spec": {"hostname": "web-0", "subdomain": "web",
            "containers": [{"name": "c"}]}}),
        );
        let gone = pod(
            "old",
            "10.42.0.9",
            true,
            json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"}}),
        );
        let g = desired(
            &svc(json!({"clusterIP": "None", "ports": [{"port": 80}]})),
            &[named, gone],
        );
        let s = subsets(&g);
        assert_eq!(s[0]["addresses"].as_array().unwrap().len(), 1);
        assert_eq!(s[0]["addresses"][0]["hostname"], "web-0");
        assert_eq!(s[0]["ports"][0]["port"], 80);
        let term = g[0]
            .slice_endpoints
            .iter()
            .find(|e| e["targetRef"]["name"] == "old")
            .unwrap();
        assert_eq!(term["conditions"]["terminating"], true);
        assert_eq!(term["conditions"]["ready"], false);
    }
}
