//! The defaulting admission plug-in: fills in what kube-apiserver 1.32's
//! defaulters (`SetDefaults_*` in `pkg/apis/*/v1/defaults.go`), registry
//! strategies (`PrepareForCreate`) and default-on admission plug-ins
//! (`Priority`, `DefaultTolerationSeconds`) set on the built-in kinds, so
//! that `kubectl get -o yaml` shows what a real cluster shows.
//!
//! Defaults apply on create and on every update of the main resource (kube
//! defaults the whole decoded object each time); they only fill fields that
//! are absent or null, so they never override what the client sent.
//! Serialization artifacts kube shows are reproduced too: `resources: {}` on
//! containers, `creationTimestamp: null` in templates, a Service's
//! `status.loadBalancer: {}`, `divisor: "0"` on resource field refs.
//!
//! Map: `pod` (pod specs, containers, volumes, probes; pods and every pod
//! template), `workloads` (apps, batch, ReplicationController, PodTemplate),
//! `other` (Service, Namespace, PVC/PV, Secret, Endpoints, networking,
//! autoscaling, storage, scheduling, RBAC, CRDs).
//!
//! Partial: no ServiceAccount admission (`serviceAccountName: default` and
//! the `kube-api-access-*` token volume), no LimitRanger defaults, pod
//! `priority` only for the built-in `system-*` priority classes (others are
//! left unset), no webhook-configuration or flow-control defaults, and
//! `ipFamilies`/`ipFamilyPolicy` are always IPv4 SingleStack (rk3s serves
//! single-stack IPv4).

mod other;
mod pod;
mod workloads;

use serde_json::{Map, Value};

use super::admission::{Admission, AdmissionRequest, Operation};
use super::status::ApiStatus;

/// The defaulting plug-in; put it first in the chain (after field pruning).
pub struct Defaults;

impl Admission for Defaults {
    fn name(&self) -> &'static str {
        "defaults"
    }

    fn admit(
        &self,
        req: &AdmissionRequest<'_>,
        obj: &mut Value,
        _warnings: &mut Vec<String>,
    ) -> Result<(), ApiStatus> {
        if req
            .subresource
            .is_some_and(|s| s != "status" && s != "ephemeralcontainers")
        {
            return Ok(());
        }
        apply(req, obj);
        Ok(())
    }
}

/// Applies the defaults of `req.def`'s kind to `obj`.
pub fn apply(req: &AdmissionRequest<'_>, obj: &mut Value) {
    let create = req.operation == Operation::Create;
    let gr = req.def.group_resource();
    match gr.as_str() {
        "pods" => pod::pod(obj, create, req.old),
        "podtemplates" => pod::template_at(obj, "template"),
        "replicationcontrollers" => workloads::replication_controller(obj),
        "deployments.apps" => workloads::deployment(obj),
        "replicasets.apps" => workloads::replica_set(obj),
        "daemonsets.apps" => workloads::daemon_set(obj),
        "statefulsets.apps" => workloads::stateful_set(obj),
        "jobs.batch" => workloads::job(obj, create, req.name),
        "cronjobs.batch" => workloads::cron_job(obj),
        "services" => other::service(obj, req.old),
        "namespaces" => other::namespace(obj),
        "persistentvolumeclaims" => other::pvc(obj),
        "persistentvolumes" => other::pv(obj),
        "secrets" => other::secret(obj),
        "endpoints" => other::endpoints(obj),
        "endpointslices.discovery.k8s.io" => other::endpoint_slice(obj),
        "networkpolicies.networking.k8s.io" => other::network_policy(obj),
        "ingressclasses.networking.k8s.io" => other::ingress_class(obj),
        "horizontalpodautoscalers.autoscaling" => other::hpa(obj, &req.def.version),
        "priorityclasses.scheduling.k8s.io" => other::priority_class(obj),
        "storageclasses.storage.k8s.io" => other::storage_class(obj),
        "rolebindings.rbac.authorization.k8s.io"
        | "clusterrolebindings.rbac.authorization.k8s.io" => other::role_binding(obj),
        "customresourcedefinitions.apiextensions.k8s.io" => other::crd(obj),
        _ => {}
    }
}

/// `v[key]` as an object, created when absent or null; `None` when it holds
/// something else (a type error validation reports).
pub(crate) fn child<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Map<String, Value>> {
    let m = v.as_object_mut()?;
    let slot = m.entry(key.to_string()).or_insert(Value::Null);
    if slot.is_null() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut()
}

/// `v[key]` as an object when it exists.
pub(crate) fn existing<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    v.get_mut(key).filter(|x| x.is_object())
}

/// Sets `m[key] = value` unless a non-null value is there.
pub(crate) fn default(m: &mut Map<String, Value>, key: &str, value: Value) {
    match m.get(key) {
        Some(v) if !v.is_null() => {}
        _ => {
            m.insert(key.to_string(), value);
        }
    }
}

/// Like [`default`], but also replaces an empty string (Go's zero value).
pub(crate) fn default_str(m: &mut Map<String, Value>, key: &str, value: &str) {
    if m.get(key).and_then(Value::as_str).is_none_or(str::is_empty) {
        m.insert(key.to_string(), Value::String(value.to_string()));
    }
}

/// Like [`default`], but also replaces 0 (Go's zero value of a non-pointer int).
pub(crate) fn default_int(m: &mut Map<String, Value>, key: &str, value: i64) {
    if m.get(key).and_then(Value::as_i64).is_none_or(|n| n == 0) {
        m.insert(key.to_string(), Value::from(value));
    }
}

/// Each element of the array at `v[key]`, if any.
pub(crate) fn each<'a>(v: &'a mut Value, key: &str) -> impl Iterator<Item = &'a mut Value> {
    v.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flat_map(|a| a.iter_mut())
}

#[cfg(test)]
mod tests;
