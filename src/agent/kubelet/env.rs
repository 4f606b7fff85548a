//! A container's environment from its pod spec: `env` (values,
//! `configMapKeyRef`, `secretKeyRef`, `fieldRef`, `resourceFieldRef`),
//! `envFrom`, and `$(VAR)` expansion as the kubelet does it.
//!
//! Errors become the container's `CreateContainerConfigError` message.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};

use super::api::PodApi;
use super::quantity;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EnvError(pub String);

/// What `fieldRef`/`resourceFieldRef` read besides the pod itself.
#[derive(Debug, Clone, Default)]
pub struct EnvFacts {
    pub pod_ip: Option<String>,
    pub host_ip: String,
    /// Node allocatable, the default for missing limits.
    pub node_cpu_millis: i64,
    pub node_memory_bytes: i64,
}

/// `$(NAME)` replaced by earlier variables; `$$` escapes; unknown names stay.
pub fn expand(text: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('(') {
            match body.find(')') {
                Some(end) => {
                    let name = &body[..end];
                    match vars.get(name) {
                        Some(v) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &body[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = body;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn field_value(pod: &Pod, path: &str, facts: &EnvFacts) -> Result<String, EnvError> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let map_key = |prefix: &str| -> Option<String> {
        path.strip_prefix(prefix)?
            .strip_suffix("']")
            .map(str::to_string)
    };
    if let Some(k) = map_key("metadata.labels['") {
        return Ok(meta
            .labels
            .as_ref()
            .and_then(|m| m.get(&k))
            .cloned()
            .unwrap_or_default());
    }
    if let Some(k) = map_key("metadata.annotations['") {
        return Ok(meta
            .annotations
            .as_ref()
            .and_then(|m| m.get(&k))
            .cloned()
            .unwrap_or_default());
    }
    let v = match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into()),
        "status.hostIP" | "status.hostIPs" => facts.host_ip.clone(),
        "status.podIP" | "status.podIPs" => facts.pod_ip.clone().unwrap_or_default(),
        other => {
            return Err(EnvError(format!(
                "unsupported fieldRef fieldPath {other:?}"
            )))
        }
    };
    Ok(v)
}

fn resource_value(
    container: &Container,
    resource: &str,
    divisor: Option<&str>,
    facts: &EnvFacts,
) -> Result<String, EnvError> {
    let res = container.resources.as_ref();
    let get = |limits: bool, name: &str| -> Option<String> {
        let map = if limits {
            res.and_then(|r| r.limits.as_ref())
        } else {
            res.and_then(|r| r.requests.as_ref())
        };
        map.and_then(|m| m.get(name)).map(|q| q.0.clone())
    };
    let divisor = divisor.and_then(quantity::parse).filter(|d| *d > 0.0);
    let (value, default_divisor): (f64, f64) = match resource {
        "limits.cpu" => (
            get(true, "cpu")
                .and_then(|q| quantity::parse(&q))
                .unwrap_or(facts.node_cpu_millis as f64 / 1000.0),
            1.0,
        ),
        "requests.cpu" => (
            get(false, "cpu")
                .and_then(|q| quantity::parse(&q))
                .unwrap_or(0.0),
            1.0,
        ),
        "limits.memory" => (
            get(true, "memory")
                .and_then(|q| quantity::parse(&q))
                .unwrap_or(facts.node_memory_bytes as f64),
            1.0,
        ),
        "requests.memory" => (
            get(false, "memory")
                .and_then(|q| quantity::parse(&q))
                .unwrap_or(0.0),
            1.0,
        ),
        other => {
            return Err(EnvError(format!(
                "unsupported resourceFieldRef resource {other:?}"
            )))
        }
    };
    let d = divisor.unwrap_or(default_divisor);
    Ok(((value / d).ceil() as i64).to_string())
}

/// The resolved environment of `container`, in spec order (`envFrom`
/// first, then `env`, later names overriding earlier ones).
pub async fn resolve(
    api: &dyn PodApi,
    pod: &Pod,
    container: &Container,
    facts: &EnvFacts,
) -> Result<Vec<(String, String)>, EnvError> {
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let mut out: Vec<(String, String)> = Vec::new();
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let set = |out: &mut Vec<(String, String)>,
               vars: &mut BTreeMap<String, String>,
               k: String,
               v: String| {
        out.retain(|(n, _)| n != &k);
        vars.insert(k.clone(), v.clone());
        out.push((k, v));
    };
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match api
                .config_map(&ns, &r.name)
                .await
                .map_err(|e| EnvError(e.to_string()))?
            {
                Some(cm) => {
                    for (k, v) in cm.data.unwrap_or_default() {
                        set(&mut out, &mut vars, format!("{prefix}{k}"), v);
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(EnvError(format!("configmap \"{}\" not found", r.name))),
            }
        }
        if let Some(r) = &from.secret_ref {
            match api
                .secret(&ns, &r.name)
                .await
                .map_err(|e| EnvError(e.to_string()))?
            {
                Some(s) => {
                    for (k, v) in secret_strings(&s) {
                        set(&mut out, &mut vars, format!("{prefix}{k}"), v);
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(EnvError(format!("secret \"{}\" not found", r.name))),
            }
        }
    }
    for e in container.env.iter().flatten() {
        let value = if let Some(v) = &e.value {
            expand(v, &vars)
        } else if let Some(src) = &e.value_from {
            if let Some(r) = &src.config_map_key_ref {
                let cm = api
                    .config_map(&ns, &r.name)
                    .await
                    .map_err(|e| EnvError(e.to_string()))?;
                match cm.and_then(|c| c.data).and_then(|d| d.get(&r.key).cloned()) {
                    Some(v) => v,
                    None if r.optional == Some(true) => continue,
                    None => {
                        return Err(EnvError(format!(
                            "couldn't find key {} in ConfigMap {ns}/{}",
                            r.key, r.name
                        )))
                    }
                }
            } else if let Some(r) = &src.secret_key_ref {
                let s = api
                    .secret(&ns, &r.name)
                    .await
                    .map_err(|e| EnvError(e.to_string()))?;
                match s.and_then(|s| secret_strings(&s).remove(&r.key)) {
                    Some(v) => v,
                    None if r.optional == Some(true) => continue,
                    None => {
                        return Err(EnvError(format!(
                            "couldn't find key {} in Secret {ns}/{}",
                            r.key, r.name
                        )))
                    }
                }
            } else if let Some(f) = &src.field_ref {
                field_value(pod, &f.field_path, facts)?
            } else if let Some(r) = &src.resource_field_ref {
                resource_value(
                    container,
                    &r.resource,
                    r.divisor.as_ref().map(|q| q.0.as_str()),
                    facts,
                )?
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        set(&mut out, &mut vars, e.name.clone(), value);
    }
    Ok(out)
}

/// A Secret's values as strings (`stringData` is folded in by the API server).
pub fn secret_strings(s: &k8s_openapi::api::core::v1::Secret) -> BTreeMap<String, String> {
    let mut m: BTreeMap<String, String> = s
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
        .collect();
    for (k, v) in s.string_data.iter().flatten() {
        m.insert(k.clone(), v.clone());
    }
    m
}

#[cfg(test)]
mod tests {
    use super::super::api::FakePodApi;
    use super::*;

    fn pod(container: serde_json::Value) -> (Pod, Container) {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [container]},
        }))
        .unwrap();
        let c = pod.spec.as_ref().unwrap().containers[0].clone();
        (pod, c)
    }

    #[test]
    fn expands_references() {
        let vars = BTreeMap::from([("A".to_string(), "x".to_string())]);
        assert_eq!(expand("$(A)-$(B)-$$(A)-$", &vars), "x-$(B)-$(A)-$");
    }

    #[tokio::test]
    async fn resolves_every_source() {
        let api = FakePodApi::default();
        api.add_config_map("ns", "cm", &[("k", "from-cm"), ("other", "o")]);
        api.add_secret("ns", "s", &[("pw", "hunter2")]);
        let (pod, c) = pod(serde_json::json!({
            "name": "c", "image": "i",
            "resources": {"limits": {"memory": "64Mi"}},
            "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}],
            "env": [
                {"name": "PLAIN", "value": "v"},
                {"name": "EXP", "value": "$(PLAIN)/$(CM_k)"},
                {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}},
                {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}},
                {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
                {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "x", "optional": true}}},
            ],
        }));
        let facts = EnvFacts {
            pod_ip: Some("10.42.0.5".into()),
            host_ip: "192.168.1.2".into(),
            node_cpu_millis: 4000,
            node_memory_bytes: 1 << 30,
        };
        let env: BTreeMap<_, _> = resolve(&api, &pod, &c, &facts)
            .await
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(env["CM_k"], "from-cm");
        assert_eq!(env["EXP"], "v/from-cm");
        assert_eq!(env["FROM_CM"], "from-cm");
        assert_eq!(env["FROM_SECRET"], "hunter2");
        assert_eq!(env["NAME"], "p");
        assert_eq!(env["APP"], "web");
        assert_eq!(env["IP"], "10.42.0.5");
        assert_eq!(env["MEM"], "64");
        assert_eq!(env["CPU"], "4");
        assert!(!env.contains_key("OPT"));
    }

    #[tokio::test]
    async fn missing_key_is_a_config_error() {
        let api = FakePodApi::default();
        let (pod, c) = pod(serde_json::json!({
            "name": "c", "image": "i",
            "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}],
        }));
        let err = resolve(&api, &pod, &c, &EnvFacts::default())
            .await
            .unwrap_err();
        assert_eq!(err.0, "couldn't find key k in ConfigMap ns/cm");
    }
}
