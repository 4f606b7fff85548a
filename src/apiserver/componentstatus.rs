//! `componentstatuses` (`kubectl get cs`): deprecated since 1.19 but still
//! served by kube-apiserver and k3s, and read by tutorials and client
//! libraries' tests. Answered, never stored: `scheduler`,
//! `controller-manager` and `etcd-0`, each with one `Healthy` condition,
//! as kube's `pkg/registry/core/componentstatus` builds them, and kube's
//! deprecation `Warning` on every answer.
//!
//! kube-apiserver probes the other daemons' `/healthz`; here the scheduler
//! and the controllers run in the server's process, so `server::run`
//! registers each one's [`Liveness`] in [`Components`] when it starts it
//! and the guard, dropped when the task ends (returns, panics or is
//! aborted), marks it not running. `etcd-0` is the store answering a read.
//!
//! Invariant: a component nobody registered (disabled, or a test server
//! without controllers) is reported Unhealthy, never assumed healthy.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::response::Response;
use http::{Method, StatusCode};
use serde_json::{json, Value};

use super::context::Ctx;
use super::status::ApiStatus;

/// kube's deprecation warning for `v1 ComponentStatus`.
pub const DEPRECATION_WARNING: &str = "v1 ComponentStatus is deprecated in v1.19+";

/// The components kube lists besides the datastore, in the order we print.
pub const SCHEDULER: &str = "scheduler";
pub const CONTROLLER_MANAGER: &str = "controller-manager";
const ETCD: &str = "etcd-0";

/// The in-process components and whether each is running.
#[derive(Default)]
pub struct Components {
    running: Mutex<BTreeMap<String, Arc<AtomicBool>>>,
}

/// Held by a running component's task; dropping it marks the component
/// stopped.
pub struct Liveness(Arc<AtomicBool>);

impl Drop for Liveness {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

impl Components {
    /// Marks `name` running until the returned guard is dropped.
    pub fn register(&self, name: &str) -> Liveness {
        let flag = Arc::new(AtomicBool::new(true));
        self.running
            .lock()
            .expect("component registry")
            .insert(name.to_string(), flag.clone());
        Liveness(flag)
    }

    fn is_running(&self, name: &str) -> bool {
        self.running
            .lock()
            .expect("component registry")
            .get(name)
            .is_some_and(|f| f.load(Ordering::SeqCst))
    }
}

/// One `ComponentStatus` (v1) with its single `Healthy` condition.
fn status_object(name: &str, healthy: bool, message: &str, error: &str) -> Value {
    let mut condition = json!({"type": "Healthy", "status": if healthy { "True" } else { "False" }});
    if !message.is_empty() {
        condition["message"] = json!(message);
    }
    if !error.is_empty() {
        condition["error"] = json!(error);
    }
    json!({
        "kind": "ComponentStatus",
        "apiVersion": "v1",
        "metadata": {"name": name, "creationTimestamp": null},
        "conditions": [condition]
    })
}

/// Every component's status, probed now.
pub(crate) fn statuses(ctx: &Ctx) -> Vec<Value> {
    let mut out = Vec::new();
    for name in [SCHEDULER, CONTROLLER_MANAGER] {
        if ctx.state.components.is_running(name) {
            out.push(status_object(name, true, "ok", ""));
        } else {
            out.push(status_object(
                name,
                false,
                &format!("the {name} is not running in this server"),
                "",
            ));
        }
    }
    let probe = ctx.state.store.list(&crate::store::ListOptions {
        prefix: "/registry/namespaces/".into(),
        limit: Some(1),
        ..Default::default()
    });
    out.push(match probe {
        Ok(_) => status_object(ETCD, true, "ok", ""),
        Err(e) => status_object(ETCD, false, "", &format!("failed to read the datastore: {e}")),
    });
    out
}

/// GET of the collection or of one component; other verbs are refused as
/// kube refuses them (the resource serves only get and list).
pub(crate) fn handle(ctx: &Ctx, method: &Method, watch: bool) -> Result<Response, ApiStatus> {
    if *method != Method::GET || watch {
        let verb = if watch { "WATCH" } else { method.as_str() };
        return Err(ApiStatus::method_not_allowed(verb));
    }
    let all = statuses(ctx);
    let mut resp = match &ctx.name {
        Some(name) => {
            let obj = all
                .into_iter()
                .find(|s| s["metadata"]["name"] == name.as_str())
                .ok_or_else(|| ApiStatus::not_found(ctx.target(name)))?;
            super::rest::render_one(ctx, obj)?
        }
        None => {
            let sel = ctx.selectors()?;
            let items: Vec<Value> = all.into_iter().filter(|o| sel.matches(o)).collect();
            super::rest::render_list(ctx, items, json!({}))?
        }
    };
    super::admission::add_warning_headers(resp.headers_mut(), &[DEPRECATION_WARNING.to_string()]);
    *resp.status_mut() = StatusCode::OK;
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_ends_with_its_guard() {
        let c = Components::default();
        assert!(!c.is_running(SCHEDULER));
        let guard = c.register(SCHEDULER);
        assert!(c.is_running(SCHEDULER));
        drop(guard);
        assert!(!c.is_running(SCHEDULER));
    }

    #[test]
    fn objects_are_shaped_like_kubes() {
        assert_eq!(
            status_object("etcd-0", true, "ok", ""),
            json!({"kind": "ComponentStatus", "apiVersion": "v1", "metadata": {"name": "etcd-0", "creationTimestamp": null}, "conditions": [{"type": "Healthy", "status": "True", "message": "ok"}]})
        );
        let down = status_object("scheduler", false, "", "boom");
        assert_eq!(down["conditions"][0]["status"], "False");
        assert_eq!(down["conditions"][0]["error"], "boom");
    }
}
