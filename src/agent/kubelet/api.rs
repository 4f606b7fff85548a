//! The kubelet's calls to the API server about pods, behind a seam so the
//! pod worker runs in unit tests against [`FakePodApi`].

#[cfg(test)]
use std::collections::BTreeMap;
#[cfg(test)]
use std::sync::Mutex;

use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod, Secret, ServiceAccount,
};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Client};
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("failed to {op}: {source}")]
    Kube {
        op: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("failed to {op}: {message}")]
    Other { op: String, message: String },
}

fn kube_err(op: impl Into<String>) -> impl FnOnce(kube::Error) -> ApiError {
    let op = op.into();
    move |e| ApiError::Kube {
        op,
        source: Box::new(e),
    }
}

fn is_404(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// A bound service-account token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub token: String,
    pub expires: Option<chrono::DateTime<chrono::Utc>>,
}

#[async_trait::async_trait]
pub trait PodApi: Send + Sync {
    async fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, ApiError>;
    async fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, ApiError>;
    /// Merge-patches `pods/status` with `{"status": status}`.
    async fn patch_status(&self, ns: &str, name: &str, status: &Value) -> Result<(), ApiError>;
    /// Deletes the pod object at once (grace 0), only if its uid is `uid`.
    async fn delete_pod(&self, ns: &str, name: &str, uid: &str) -> Result<(), ApiError>;
    /// `serviceaccounts/token` for the pod; `None` when the server has no
    /// such subresource (404).
    async fn request_token(
        &self,
        ns: &str,
        service_account: &str,
        audiences: Vec<String>,
        expiration_seconds: i64,
        pod: (&str, &str),
    ) -> Result<Option<Token>, ApiError>;
    /// A claim the pod names (storage; fakes without claims answer none).
    async fn claim(&self, _ns: &str, _name: &str) -> Result<Option<PersistentVolumeClaim>, ApiError> {
        Ok(None)
    }
    async fn volume(&self, _name: &str) -> Result<Option<PersistentVolume>, ApiError> {
        Ok(None)
    }
    /// A Warning Event on the pod (e.g. `FailedMount`); best effort.
    async fn warn_event(&self, _pod: &Pod, _reason: &str, _message: &str) {}
}

/// [`PodApi`] over a kube client.
pub struct KubePodApi {
    pub client: Client,
    events: crate::k8s::events::EventRecorder,
    /// `(pod uid, reason, message)` → last emitted, so a retry each second
    /// does not rewrite the Event each second.
    emitted: std::sync::Mutex<std::collections::HashMap<(String, String, String), std::time::Instant>>,
}

impl KubePodApi {
    pub fn new(client: Client) -> Self {
        KubePodApi {
            events: crate::k8s::events::EventRecorder::new(client.clone(), "kubelet"),
            client,
            emitted: Default::default(),
        }
    }
}

#[async_trait::async_trait]
impl PodApi for KubePodApi {
    async fn claim(&self, ns: &str, name: &str) -> Result<Option<PersistentVolumeClaim>, ApiError> {
        Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), ns)
            .get_opt(name)
            .await
            .map_err(kube_err(format!("get persistentvolumeclaim {ns}/{name}")))
    }

    async fn volume(&self, name: &str) -> Result<Option<PersistentVolume>, ApiError> {
        Api::<PersistentVolume>::all(self.client.clone())
            .get_opt(name)
            .await
            .map_err(kube_err(format!("get persistentvolume {name}")))
    }

    async fn warn_event(&self, pod: &Pod, reason: &str, message: &str) {
        let key = (
            pod.metadata.uid.clone().unwrap_or_default(),
            reason.to_string(),
            message.to_string(),
        );
        {
            let mut seen = self.emitted.lock().expect("not poisoned");
            let recent = std::time::Duration::from_secs(60);
            if seen.get(&key).is_some_and(|t| t.elapsed() < recent) {
                return;
            }
            seen.retain(|_, t| t.elapsed() < recent);
            seen.insert(key, std::time::Instant::now());
        }
        let obj = crate::k8s::events::object_ref(pod);
        self.events
            .record(&obj, crate::k8s::events::EventType::Warning, reason, message)
            .await;
    }

    async fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, ApiError> {
        Api::<ConfigMap>::namespaced(self.client.clone(), ns)
            .get_opt(name)
            .await
            .map_err(kube_err(format!("get configmap {ns}/{name}")))
    }

    async fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, ApiError> {
        Api::<Secret>::namespaced(self.client.clone(), ns)
            .get_opt(name)
            .await
            .map_err(kube_err(format!("get secret {ns}/{name}")))
    }

    async fn patch_status(&self, ns: &str, name: &str, status: &Value) -> Result<(), ApiError> {
        let body = serde_json::json!({ "status": status });
        Api::<Pod>::namespaced(self.client.clone(), ns)
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&body))
            .await
            .map(drop)
            .map_err(kube_err(format!("update the status of pod {ns}/{name}")))
    }

    async fn delete_pod(&self, ns: &str, name: &str, uid: &str) -> Result<(), ApiError> {
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match Api::<Pod>::namespaced(self.client.clone(), ns)
            .delete(name, &params)
            .await
        {
            Ok(_) => Ok(()),
            // Gone already, or replaced by a pod of the same name (409).
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(kube_err(format!("delete pod {ns}/{name}"))(e)),
        }
    }

    async fn request_token(
        &self,
        ns: &str,
        service_account: &str,
        audiences: Vec<String>,
        expiration_seconds: i64,
        pod: (&str, &str),
    ) -> Result<Option<Token>, ApiError> {
        let body = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": audiences,
                "expirationSeconds": expiration_seconds,
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod.0, "uid": pod.1},
            }
        });
        let api = Api::<ServiceAccount>::namespaced(self.client.clone(), ns);
        let result: Result<Value, kube::Error> = api
            .create_subresource("token", service_account, &PostParams::default(), &body)
            .await;
        match result {
            Ok(v) => {
                let token = v
                    .pointer("/status/token")
                    .and_then(Value::as_str)
                    .ok_or_else(|| ApiError::Other {
                        op: format!("request a token for {ns}/{service_account}"),
                        message: "the answer has no status.token".into(),
                    })?;
                let expires = v
                    .pointer("/status/expirationTimestamp")
                    .and_then(Value::as_str)
                    .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                    .map(|d| d.with_timezone(&chrono::Utc));
                Ok(Some(Token {
                    token: token.to_string(),
                    expires,
                }))
            }
            Err(e) if is_404(&e) => Ok(None),
            Err(e) => Err(kube_err(format!(
                "request a token for {ns}/{service_account}"
            ))(e)),
        }
    }
}

/// A recording [`PodApi`] for unit tests.
#[cfg(test)]
#[derive(Default)]
pub struct FakePodApi {
    pub config_maps: Mutex<BTreeMap<(String, String), ConfigMap>>,
    pub secrets: Mutex<BTreeMap<(String, String), Secret>>,
    /// Every status patched, in order.
    pub statuses: Mutex<Vec<Value>>,
    pub deleted: Mutex<Vec<String>>,
}

#[cfg(test)]
impl FakePodApi {
    pub fn add_config_map(&self, ns: &str, name: &str, data: &[(&str, &str)]) {
        let cm = ConfigMap {
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..ConfigMap::default()
        };
        self.config_maps
            .lock()
            .unwrap()
            .insert((ns.into(), name.into()), cm);
    }

    pub fn add_secret(&self, ns: &str, name: &str, data: &[(&str, &str)]) {
        let s = Secret {
            data: Some(
                data.iter()
                    .map(|(k, v)| {
                        (
                            k.to_string(),
                            k8s_openapi::ByteString(v.as_bytes().to_vec()),
                        )
                    })
                    .collect(),
            ),
            ..Secret::default()
        };
        self.secrets
            .lock()
            .unwrap()
            .insert((ns.into(), name.into()), s);
    }

    pub fn last_status(&self) -> Option<Value> {
        self.statuses.lock().unwrap().last().cloned()
    }
}

#[async_trait::async_trait]
#[cfg(test)]
impl PodApi for FakePodApi {
    async fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, ApiError> {
        Ok(self
            .config_maps
            .lock()
            .unwrap()
            .get(&(ns.into(), name.into()))
            .cloned())
    }

    async fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, ApiError> {
        Ok(self
            .secrets
            .lock()
            .unwrap()
            .get(&(ns.into(), name.into()))
            .cloned())
    }

    async fn patch_status(&self, _ns: &str, _name: &str, status: &Value) -> Result<(), ApiError> {
        self.statuses.lock().unwrap().push(status.clone());
        Ok(())
    }

    async fn delete_pod(&self, ns: &str, name: &str, _uid: &str) -> Result<(), ApiError> {
        self.deleted.lock().unwrap().push(format!("{ns}/{name}"));
        Ok(())
    }

    async fn request_token(
        &self,
        _ns: &str,
        _sa: &str,
        _audiences: Vec<String>,
        _expiration_seconds: i64,
        _pod: (&str, &str),
    ) -> Result<Option<Token>, ApiError> {
        Ok(None)
    }
}
