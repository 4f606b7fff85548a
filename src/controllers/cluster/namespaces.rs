//! The namespace controllers.
//!
//! Active namespaces get a `default` ServiceAccount and the
//! `kube-root-ca.crt` ConfigMap (the cluster CA, `ControllerOptions::
//! root_ca_pem`), recreated if deleted and corrected if edited, as kube's
//! serviceaccount and root-ca-cert-publisher controllers do.
//!
//! Terminating namespaces are emptied through the API (so finalizers and
//! graceful pod deletion apply) and carry kube's five deletion conditions
//! (`NamespaceDeletionDiscoveryFailure`, `NamespaceDeletionGroupVersionParsingFailure`,
//! `NamespaceDeletionContentFailure`, `NamespaceContentRemaining`,
//! `NamespaceFinalizersRemaining`). When nothing is left the namespace is
//! deleted again, which resumes the API's own finaliser (see
//! `apiserver::namespaces::finish_namespace`) even after a server restart.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::ResourceExt;
use serde_json::json;
use tokio::sync::Mutex;

use super::super::Context;
use super::gc::{discover, Kinds};
use super::{Error, Result};

pub const ROOT_CA: &str = "kube-root-ca.crt";

struct NsCtx {
    ctx: Context,
    kinds: Mutex<Option<(Instant, Kinds)>>,
}

impl NsCtx {
    async fn kinds(&self) -> Result<Kinds> {
        let mut k = self.kinds.lock().await;
        if let Some((t, kinds)) = k.as_ref() {
            if t.elapsed() < Duration::from_secs(30) {
                return Ok(kinds.clone());
            }
        }
        let fresh = discover(&self.ctx.client, false).await?;
        *k = Some((Instant::now(), fresh.clone()));
        Ok(fresh)
    }
}

async fn ensure_service_account(client: &kube::Client, ns: &str) -> Result<()> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    if api.get_opt("default").await?.is_some() {
        return Ok(());
    }
    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "default"}}))
        .map_err(|e| Error::Encode(e.to_string()))?;
    match api.create(&PostParams::default(), &sa).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 403 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn ensure_root_ca(client: &kube::Client, ns: &str, pem: &str) -> Result<()> {
    if pem.is_empty() {
        return Ok(());
    }
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let data: BTreeMap<String, String> = [("ca.crt".to_string(), pem.to_string())].into();
    match api.get_opt(ROOT_CA).await? {
        Some(cm) if cm.data.as_ref() == Some(&data) => Ok(()),
        Some(cm) => {
            let patch = json!({"metadata": {"resourceVersion": cm.resource_version(),
                "annotations": {"kubernetes.io/description": DESCRIPTION}}, "data": data});
            api.patch(ROOT_CA, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            Ok(())
        }
        None => {
            let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": ROOT_CA,
                "annotations": {"kubernetes.io/description": DESCRIPTION}}, "data": data}))
            .map_err(|e| Error::Encode(e.to_string()))?;
            match api.create(&PostParams::default(), &cm).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 || s.code == 403 => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
    }
}

const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

/// kube's namespace deletion conditions from what is left.
pub fn deletion_conditions(
    remaining: &BTreeMap<String, usize>,
    finalizers: &BTreeMap<String, usize>,
    discovery_failed: Option<&str>,
    content_failed: Option<&str>,
) -> serde_json::Value {
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let cond = |t: &str, status: bool, reason: &str, message: String| {
        json!({"type": t, "status": if status {"True"} else {"False"}, "lastTransitionTime": now,
               "reason": reason, "message": message})
    };
    let content_remaining = if remaining.is_empty() {
        cond(
            "NamespaceContentRemaining",
            false,
            "ContentRemoved",
            "All content successfully removed".into(),
        )
    } else {
        let parts: Vec<String> = remaining
            .iter()
            .map(|(k, n)| format!("{k} has {n} resource instances"))
            .collect();
        cond(
            "NamespaceContentRemaining",
            true,
            "SomeResourcesRemain",
            format!("Some resources are remaining: {}", parts.join(", ")),
        )
    };
    let finalizers_remaining = if finalizers.is_empty() {
        cond(
            "NamespaceFinalizersRemaining",
            false,
            "ContentHasNoFinalizers",
            "All content-preserving finalizers finished".into(),
        )
    } else {
        let parts: Vec<String> = finalizers
            .iter()
            .map(|(k, n)| format!("{k} in {n} resource instances"))
            .collect();
        cond(
            "NamespaceFinalizersRemaining",
            true,
            "SomeFinalizersRemain",
            format!(
                "Some content in the namespace has finalizers remaining: {}",
                parts.join(", ")
            ),
        )
    };
    json!([
        match discovery_failed {
            Some(m) => cond(
                "NamespaceDeletionDiscoveryFailure",
                true,
                "DiscoveryFailed",
                m.to_string()
            ),
            None => cond(
                "NamespaceDeletionDiscoveryFailure",
                false,
                "ResourcesDiscovered",
                "All resources successfully discovered".into()
            ),
        },
        cond(
            "NamespaceDeletionGroupVersionParsingFailure",
            false,
            "ParsedGroupVersions",
            "All legacy kube types successfully parsed".into()
        ),
        match content_failed {
            Some(m) => cond(
                "NamespaceDeletionContentFailure",
                true,
                "ContentDeletionFailed",
                m.to_string()
            ),
            None => cond(
                "NamespaceDeletionContentFailure",
                false,
                "ContentDeleted",
                "All content successfully deleted, may be waiting on finalization".into()
            ),
        },
        content_remaining,
        finalizers_remaining,
    ])
}

async fn empty_namespace(c: &NsCtx, ns: &Namespace) -> Result<Action> {
    let name = ns.name_any();
    let client = &c.ctx.client;
    let (kinds, discovery_failed) = match c.kinds().await {
        Ok(k) => (k, None),
        Err(e) => (Kinds::default(), Some(e.to_string())),
    };
    let mut remaining: BTreeMap<String, usize> = BTreeMap::new();
    let mut finalizers: BTreeMap<String, usize> = BTreeMap::new();
    let mut content_failed = None;
    for k in kinds.list.iter().filter(|k| k.namespaced) {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &name, &k.ar);
        let items = match api.list(&ListParams::default()).await {
            Ok(l) => l.items,
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 405 => continue,
            Err(e) => {
                content_failed = Some(format!(
                    "Failed to delete all resource types, 1 remaining: {e}"
                ));
                continue;
            }
        };
        if items.is_empty() {
            continue;
        }
        let label = if k.ar.group.is_empty() {
            k.ar.plural.clone()
        } else {
            format!("{}.{}", k.ar.plural, k.ar.group)
        };
        *remaining.entry(label).or_default() += items.len();
        for it in &items {
            for f in it.finalizers() {
                *finalizers.entry(f.clone()).or_default() += 1;
            }
            if it.metadata.deletion_timestamp.is_none() {
                if let Err(e) = api
                    .delete(&it.name_any(), &DeleteParams::background())
                    .await
                {
                    if !matches!(&e, kube::Error::Api(s) if s.code == 404 || s.code == 409) {
                        content_failed = Some(format!(
                            "Failed to delete all resource types, 1 remaining: {e}"
                        ));
                    }
                }
            }
        }
    }
    let conds = deletion_conditions(
        &remaining,
        &finalizers,
        discovery_failed.as_deref(),
        content_failed.as_deref(),
    );
    let same = ns
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cur| {
            cur.len() == 5
                && cur
                    .iter()
                    .zip(conds.as_array().into_iter().flatten())
                    .all(|(a, b)| {
                        a.type_ == b["type"]
                            && a.status == b["status"]
                            && a.message.as_deref() == b["message"].as_str()
                    })
        });
    let api: Api<Namespace> = Api::all(client.clone());
    if !same {
        let patch = json!({"status": {"phase": "Terminating", "conditions": conds}});
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }
    if remaining.is_empty() {
        // Resumes the API's finaliser, which removes the empty namespace.
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Action::requeue(Duration::from_secs(2)))
}

async fn reconcile(ns: Arc<Namespace>, c: Arc<NsCtx>) -> Result<Action> {
    if ns.metadata.deletion_timestamp.is_some() {
        return empty_namespace(&c, &ns).await;
    }
    let name = ns.name_any();
    ensure_service_account(&c.ctx.client, &name).await?;
    ensure_root_ca(&c.ctx.client, &name, &c.ctx.options.root_ca_pem).await?;
    Ok(Action::requeue(Duration::from_secs(600)))
}

fn error_policy(_ns: Arc<Namespace>, e: &Error, _c: Arc<NsCtx>) -> Action {
    tracing::debug!("namespaces: {e}");
    Action::requeue(Duration::from_secs(3))
}

/// Runs the namespace, ServiceAccount and root-CA controllers until shutdown.
pub async fn run(ctx: Context) {
    let client = ctx.client.clone();
    let c = Arc::new(NsCtx {
        ctx: ctx.clone(),
        kinds: Mutex::new(None),
    });
    let to_ns = |ns: Option<String>| ns.map(|n| ObjectRef::<Namespace>::new(&n));
    Controller::new(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(
        Api::<ServiceAccount>::all(client.clone()),
        watcher::Config::default().fields("metadata.name=default"),
        move |sa: ServiceAccount| to_ns(sa.namespace()),
    )
    .watches(
        Api::<ConfigMap>::all(client),
        watcher::Config::default().fields(&format!("metadata.name={ROOT_CA}")),
        move |cm: ConfigMap| to_ns(cm.namespace()),
    )
    .graceful_shutdown_on(ctx.shutdown.clone().cancelled_owned())
    .run(reconcile, error_policy, c)
    .for_each(|_| async {})
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_say_what_is_left_as_kube_does() {
        let remaining: BTreeMap<String, usize> = [("pods".to_string(), 2)].into();
        let fins: BTreeMap<String, usize> = [("example.com/hold".to_string(), 1)].into();
        let c = deletion_conditions(&remaining, &fins, None, None);
        let c = c.as_array().unwrap();
        assert_eq!(c.len(), 5);
        assert_eq!(c[3]["type"], "NamespaceContentRemaining");
        assert_eq!(c[3]["status"], "True");
        assert_eq!(
            c[3]["message"],
            "Some resources are remaining: pods has 2 resource instances"
        );
        assert_eq!(
            c[4]["message"],
            "Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances"
        );
        let done = deletion_conditions(&BTreeMap::new(), &BTreeMap::new(), None, None);
        assert_eq!(done[3]["status"], "False");
        assert_eq!(done[3]["reason"], "ContentRemoved");
        assert_eq!(done[0]["reason"], "ResourcesDiscovered");
    }
}
