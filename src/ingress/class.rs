//! The IngressClass `rk3s`: which Ingresses this controller serves, and the
//! switch that turns the ingress on for every node.
//!
//! The server creates the class at start (marked default, as k3s's Traefik
//! chart does for `traefik`) unless `--disable traefik`, in which case it
//! deletes the class it made. Agents serve while the class exists, so the
//! server's `--disable traefik` reaches standalone agents without a flag
//! of theirs.
//!
//! Served: Ingresses whose class is `rk3s` or `traefik` (manifests written
//! for k3s), or any class whose `spec.controller` is [`CONTROLLER`]; and
//! Ingresses with no class unless another controller's class is the
//! default (the DefaultIngressClass admission plug-in would have given
//! them that class).

use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::{Api, DeleteParams, PostParams};

pub const CLASS_NAME: &str = "rk3s";
pub const CONTROLLER: &str = "rk3s.io/ingress";
/// The class name k3s's Traefik uses; served too.
pub const TRAEFIK_CLASS: &str = "traefik";
const DEFAULT_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
const MANAGED_LABEL: &str = "app.kubernetes.io/managed-by";

/// The class the server creates.
pub fn default_class() -> IngressClass {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {
            "name": CLASS_NAME,
            "annotations": {DEFAULT_ANNOTATION: "true"},
            "labels": {MANAGED_LABEL: "rk3s"},
        },
        "spec": {"controller": CONTROLLER},
    }))
    .expect("a static IngressClass is valid")
}

fn is_default(class: &IngressClass) -> bool {
    class
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DEFAULT_ANNOTATION))
        .is_some_and(|v| v == "true")
}

fn ours(class: &IngressClass) -> bool {
    let name = class.metadata.name.as_deref().unwrap_or("");
    name == CLASS_NAME
        || name == TRAEFIK_CLASS
        || class.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(CONTROLLER)
}

/// Whether this controller serves `ing`, given every IngressClass.
pub fn serves(ing: &Ingress, classes: &[&IngressClass]) -> bool {
    let named = ing
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.clone())
        .or_else(|| {
            ing.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(LEGACY_CLASS_ANNOTATION).cloned())
        });
    match named {
        Some(name) if name == CLASS_NAME || name == TRAEFIK_CLASS => true,
        Some(name) => classes
            .iter()
            .any(|c| c.metadata.name.as_deref() == Some(name.as_str()) && ours(c)),
        None => !classes.iter().any(|c| is_default(c) && !ours(c)),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("failed to {action} IngressClass {CLASS_NAME}: {source}")]
pub struct ClassError {
    action: &'static str,
    source: kube::Error,
}

/// Server side: creates the class (enabled) or deletes the one rk3s made
/// (disabled). An existing class is left as the user may have edited it.
pub async fn ensure(client: kube::Client, enabled: bool) -> Result<(), ClassError> {
    let api: Api<IngressClass> = Api::all(client);
    if enabled {
        match api.create(&PostParams::default(), &default_class()).await {
            Ok(_) => tracing::info!("created IngressClass {CLASS_NAME} (default)"),
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(source) => return Err(ClassError { action: "create", source }),
        }
        return Ok(());
    }
    match api.get_opt(CLASS_NAME).await {
        Ok(Some(c)) if c.metadata.labels.as_ref().and_then(|l| l.get(MANAGED_LABEL)).is_some_and(|v| v == "rk3s") => {
            api.delete(CLASS_NAME, &DeleteParams::default())
                .await
                .map_err(|source| ClassError { action: "delete", source })?;
            tracing::info!("--disable traefik: deleted IngressClass {CLASS_NAME}");
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(source) => Err(ClassError { action: "read", source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ing(spec_class: Option<&str>, annotation: Option<&str>) -> Ingress {
        let mut v = json!({"metadata": {"name": "i", "namespace": "default"}, "spec": {}});
        if let Some(c) = spec_class {
            v["spec"]["ingressClassName"] = json!(c);
        }
        if let Some(a) = annotation {
            v["metadata"]["annotations"] = json!({LEGACY_CLASS_ANNOTATION: a});
        }
        serde_json::from_value(v).unwrap()
    }

    fn class(name: &str, controller: &str, default: bool) -> IngressClass {
        let mut v = json!({"metadata": {"name": name}, "spec": {"controller": controller}});
        if default {
            v["metadata"]["annotations"] = json!({DEFAULT_ANNOTATION: "true"});
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn classes_served() {
        let rk3s = default_class();
        let nginx = class("nginx", "k8s.io/ingress-nginx", false);
        let mine = class("internal", CONTROLLER, false);
        let classes = [&rk3s, &nginx, &mine];
        assert!(serves(&ing(None, None), &classes));
        assert!(serves(&ing(Some("rk3s"), None), &classes));
        assert!(serves(&ing(Some("traefik"), None), &classes), "k3s manifests keep working");
        assert!(serves(&ing(None, Some("traefik")), &classes), "the legacy annotation counts");
        assert!(serves(&ing(Some("internal"), None), &classes));
        assert!(!serves(&ing(Some("nginx"), None), &classes));
        assert!(!serves(&ing(Some("unknown"), None), &classes));
        // Another controller's default class takes the class-less Ingresses.
        let nginx_default = class("nginx", "k8s.io/ingress-nginx", true);
        assert!(!serves(&ing(None, None), &[&rk3s, &nginx_default]));
    }

    #[test]
    fn the_default_class_is_marked_default() {
        let c = default_class();
        assert!(is_default(&c) && ours(&c));
        assert_eq!(c.spec.unwrap().controller.as_deref(), Some(CONTROLLER));
    }
}
