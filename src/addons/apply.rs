//! Talking to the API: the `addons.k3s.cattle.io` CRD, server-side apply of a
//! manifest's objects, and the `Addon` object that records each file.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::{self, Scope};
use serde_json::{json, Value};

/// Our field manager for everything the deployer applies.
pub const FIELD_MANAGER: &str = "rk3s-deploy";
/// Where AddOns live, as in k3s.
pub const ADDON_NAMESPACE: &str = "kube-system";
pub const ADDON_GROUP: &str = "k3s.cattle.io";
pub const ADDON_VERSION: &str = "v1";
pub const ADDON_KIND: &str = "Addon";

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("failed to find the resource for {api_version} {kind}: {source}")]
    Discover { api_version: String, kind: String, source: kube::Error },
    #[error("failed to apply {kind} {name}: {source}")]
    Apply { kind: String, name: String, source: kube::Error },
    #[error("failed to register the Addon CRD: {0}")]
    Crd(kube::Error),
}

/// k3s's `addons.k3s.cattle.io` CRD (namespaced; spec.source, spec.checksum;
/// status.gvks, which rk3s fills with what the file applied).
pub fn addon_crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "addons.k3s.cattle.io"},
        "spec": {
            "group": ADDON_GROUP,
            "scope": "Namespaced",
            "names": {"kind": ADDON_KIND, "listKind": "AddonList", "plural": "addons", "singular": "addon"},
            "versions": [{
                "name": ADDON_VERSION, "served": true, "storage": true,
                "additionalPrinterColumns": [
                    {"name": "Source", "type": "string", "jsonPath": ".spec.source"},
                    {"name": "Checksum", "type": "string", "jsonPath": ".spec.checksum"}
                ],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {"type": "object", "properties": {
                            "source": {"type": "string"},
                            "checksum": {"type": "string"}
                        }},
                        "status": {"type": "object", "properties": {
                            "gvks": {"type": "array", "items": {"type": "object", "properties": {
                                "group": {"type": "string"}, "version": {"type": "string"}, "kind": {"type": "string"}
                            }}}
                        }}
                    }
                }}
            }]
        }
    }))
    .expect("the Addon CRD is well-formed")
}

/// Registers (or updates) the Addon CRD.
pub async fn ensure_crd(client: &kube::Client) -> Result<(), ApplyError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch("addons.k3s.cattle.io", &params, &Patch::Apply(&addon_crd()))
        .await
        .map_err(ApplyError::Crd)?;
    Ok(())
}

fn addon_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(ADDON_GROUP, ADDON_VERSION, ADDON_KIND),
        "addons",
    )
}

/// Applies one object with server-side apply (forcing ownership: the file is
/// the source of truth), defaulting the namespace of namespaced kinds to
/// `default`. Returns its group/version/kind.
pub async fn apply_object(client: &kube::Client, obj: &Value) -> Result<GroupVersionKind, ApplyError> {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default().to_string();
    let kind = obj["kind"].as_str().unwrap_or_default().to_string();
    let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), api_version.clone()),
    };
    let gvk = GroupVersionKind::gvk(&group, &version, &kind);
    let (resource, caps) = discovery::pinned_kind(client, &gvk)
        .await
        .map_err(|source| ApplyError::Discover { api_version: api_version.clone(), kind: kind.clone(), source })?;
    let api: Api<DynamicObject> = if caps.scope == Scope::Namespaced {
        let ns = obj["metadata"]["namespace"].as_str().filter(|s| !s.is_empty()).unwrap_or("default");
        Api::namespaced_with(client.clone(), ns, &resource)
    } else {
        Api::all_with(client.clone(), &resource)
    };
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&name, &params, &Patch::Apply(obj))
        .await
        .map_err(|source| ApplyError::Apply { kind: kind.clone(), name: name.clone(), source })?;
    Ok(gvk)
}

/// Records the file's AddOn (spec.source, spec.checksum and, once applied,
/// status.gvks) and returns a reference for Events about it.
pub async fn record_addon(
    client: &kube::Client,
    name: &str,
    source: &str,
    checksum: &str,
    gvks: Option<&[GroupVersionKind]>,
) -> Result<ObjectReference, ApplyError> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ADDON_NAMESPACE, &addon_resource());
    let mut body = json!({
        "apiVersion": format!("{ADDON_GROUP}/{ADDON_VERSION}"),
        "kind": ADDON_KIND,
        "metadata": {"name": name, "namespace": ADDON_NAMESPACE},
        "spec": {"source": source, "checksum": checksum},
    });
    if let Some(gvks) = gvks {
        let list: Vec<Value> = gvks
            .iter()
            .map(|g| json!({"group": g.group, "version": g.version, "kind": g.kind}))
            .collect();
        body["status"] = json!({"gvks": list});
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let stored = api
        .patch(name, &params, &Patch::Apply(&body))
        .await
        .map_err(|source| ApplyError::Apply { kind: ADDON_KIND.into(), name: name.into(), source })?;
    Ok(ObjectReference {
        api_version: Some(format!("{ADDON_GROUP}/{ADDON_VERSION}")),
        kind: Some(ADDON_KIND.into()),
        name: Some(name.into()),
        namespace: Some(ADDON_NAMESPACE.into()),
        uid: stored.metadata.uid,
        ..Default::default()
    })
}
