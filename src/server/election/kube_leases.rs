//! The election's Lease through the API (`coordination.k8s.io/v1`), with the
//! verbs kube's RBAC grants the control plane on its own Lease: `get`,
//! `create`, `update` (a `replace` carrying the `resourceVersion` read, so a
//! concurrent writer gets 409 Conflict).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::{Api, Client};

use super::{ElectionError, LeaseBackend, LeaseRecord};

/// One named Lease, read and written through `client`.
pub struct KubeLeases {
    api: Api<Lease>,
    name: String,
}

impl KubeLeases {
    pub fn new(client: Client, namespace: &str, name: &str) -> KubeLeases {
        KubeLeases { api: Api::namespaced(client, namespace), name: name.into() }
    }

    fn to_lease(&self, r: &LeaseRecord) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                resource_version: (!r.version.is_empty()).then(|| r.version.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(r.holder.clone()),
                lease_duration_seconds: Some(r.duration.as_secs().max(1) as i32),
                acquire_time: r.acquire_time.and_then(to_micro),
                renew_time: r.renew_time.and_then(to_micro),
                lease_transitions: Some(r.transitions),
                ..Default::default()
            }),
        }
    }
}

fn to_micro(t: chrono::DateTime<chrono::Utc>) -> Option<MicroTime> {
    k8s_openapi::jiff::Timestamp::from_microsecond(t.timestamp_micros()).ok().map(MicroTime)
}

fn from_micro(t: MicroTime) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp_micros(t.0.as_microsecond())
}

fn from_lease(l: Lease) -> LeaseRecord {
    let spec = l.spec.unwrap_or_default();
    LeaseRecord {
        holder: spec.holder_identity.unwrap_or_default(),
        duration: Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as u64),
        acquire_time: spec.acquire_time.and_then(from_micro),
        renew_time: spec.renew_time.and_then(from_micro),
        transitions: spec.lease_transitions.unwrap_or(0),
        version: l.metadata.resource_version.unwrap_or_default(),
    }
}

fn api_error(e: kube::Error) -> ElectionError {
    match &e {
        kube::Error::Api(s) if s.code == 409 => ElectionError::Conflict,
        _ => ElectionError::Api(e.to_string()),
    }
}

#[async_trait::async_trait]
impl LeaseBackend for KubeLeases {
    async fn get(&self) -> Result<Option<LeaseRecord>, ElectionError> {
        self.api.get_opt(&self.name).await.map(|l| l.map(from_lease)).map_err(api_error)
    }

    async fn create(&self, record: &LeaseRecord) -> Result<LeaseRecord, ElectionError> {
        match self.api.create(&PostParams::default(), &self.to_lease(record)).await {
            Ok(l) => Ok(from_lease(l)),
            Err(kube::Error::Api(s)) if s.code == 409 => Err(ElectionError::Exists),
            Err(e) => Err(api_error(e)),
        }
    }

    async fn update(&self, record: &LeaseRecord) -> Result<LeaseRecord, ElectionError> {
        self.api
            .replace(&self.name, &PostParams::default(), &self.to_lease(record))
            .await
            .map(from_lease)
            .map_err(api_error)
    }
}
