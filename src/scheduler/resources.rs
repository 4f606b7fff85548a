//! Resource quantities as the scheduler counts them: a pod's requests
//! (containers summed, init containers as a maximum, plus overhead) and a
//! node's allocatable, in integer milli-units per resource name.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Milli-units per resource name (`cpu` in millicores, `memory` in
/// milli-bytes, `pods` in milli-pods), so every resource is one integer.
pub type Resources = BTreeMap<String, i128>;

/// What kube-scheduler assumes for a container without requests when
/// scoring (not filtering): 100m CPU and 200 MiB.
pub const DEFAULT_MILLI_CPU: i128 = 100;
pub const DEFAULT_MEMORY: i128 = 200 * 1024 * 1024;

/// Parses a Kubernetes quantity into milli-units; `None` when it is not one.
pub fn parse_milli(q: &str) -> Option<i128> {
    crate::quantity::milli(q)
}

fn add_quantities(into: &mut Resources, from: Option<&BTreeMap<String, Quantity>>) {
    for (k, v) in from.into_iter().flatten() {
        if let Some(m) = parse_milli(&v.0) {
            *into.entry(k.clone()).or_default() += m;
        }
    }
}

/// A container's requests; limits stand in for missing requests, as the
/// API's defaulting does.
fn container_requests(c: &Container) -> Resources {
    let mut r = Resources::new();
    let res = c.resources.as_ref();
    add_quantities(&mut r, res.and_then(|r| r.requests.as_ref()));
    let mut limits = Resources::new();
    add_quantities(&mut limits, res.and_then(|r| r.limits.as_ref()));
    for (k, v) in limits {
        r.entry(k).or_insert(v);
    }
    r
}

/// The pod's effective requests, one `pods` included; with `non_zero`,
/// containers without CPU/memory requests count the scoring defaults.
pub fn pod_requests(pod: &Pod, non_zero: bool) -> Resources {
    let mut total = Resources::new();
    let Some(spec) = pod.spec.as_ref() else {
        return total;
    };
    for c in &spec.containers {
        let mut r = container_requests(c);
        if non_zero {
            r.entry("cpu".into()).or_insert(DEFAULT_MILLI_CPU);
            r.entry("memory".into()).or_insert(DEFAULT_MEMORY * 1000);
        }
        for (k, v) in r {
            *total.entry(k).or_default() += v;
        }
    }
    for c in spec.init_containers.iter().flatten() {
        for (k, v) in container_requests(c) {
            let e = total.entry(k).or_default();
            *e = (*e).max(v);
        }
    }
    add_quantities(&mut total, spec.overhead.as_ref());
    total.insert("pods".into(), 1000);
    total
}

/// The node's allocatable (capacity when allocatable is missing).
pub fn node_allocatable(node: &Node) -> Resources {
    let mut r = Resources::new();
    let status = node.status.as_ref();
    let alloc = status
        .and_then(|s| s.allocatable.as_ref())
        .or_else(|| status.and_then(|s| s.capacity.as_ref()));
    add_quantities(&mut r, alloc);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_requests_sum_containers_and_take_the_init_maximum() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "containers": [
                    {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}},
                    {"name": "b", "resources": {"limits": {"cpu": "200m"}}},
                    {"name": "c"}],
                "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "1"}}}]}}))
        .unwrap();
        let r = pod_requests(&pod, false);
        assert_eq!(r["cpu"], 1000);
        assert_eq!(r["memory"], 64 * 1024 * 1024 * 1000);
        assert_eq!(r["pods"], 1000);
        let nz = pod_requests(&pod, true);
        assert_eq!(nz["memory"], (64 * 1024 * 1024 + 2 * DEFAULT_MEMORY) * 1000);
    }
}
