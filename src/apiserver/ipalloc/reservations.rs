//! ClusterIPs and node ports handed out but not stored yet, shared by every
//! API server on the datastore through one record, [`RANGES_KEY`], written
//! with the store's compare-and-swap.
//!
//! Why a record at all: admission runs before the Service is written, so
//! between the two another server (or another request of this one) could
//! pick the same address from the same list of stored Services. kube keeps a
//! bitmap of the whole range (`/registry/ranges/serviceips`) and a repair
//! loop; here the stored Services stay the truth for what is allocated (a
//! delete frees by itself, nothing to repair) and the record only holds the
//! *in-flight* allocations, each with an expiry ([`RESERVATION_TTL`]):
//!
//! 1. read the record (its `mod_revision` is the CAS guard), then list the
//!    Services;
//! 2. drop reservations that expired or that the Services now show;
//! 3. allocate against Services ∪ reservations;
//! 4. write the record with the new reservations *iff it is still at the
//!    revision read*; on a conflict start again from 1.
//!
//! Two allocators racing for the same address both read revision R; one
//! write wins, the other re-reads, sees the winner's reservation and picks
//! something else. **Architecture invariant:** an address is handed to a
//! Service only after a CAS write recorded it (or it was already that
//! Service's); dryRun writes nothing and so reserves nothing.
//!
//! The record is an internal value (JSON, not a Kubernetes object) outside
//! every resource prefix, so no list or watch of the API shows it. A create
//! that failed after admission holds its address until the reservation
//! expires. Clocks: expiry is wall-clock seconds; servers whose clocks
//! differ by less than the TTL agree well enough (a skew only lengthens or
//! shortens how long an abandoned reservation lingers).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::services::InUse;
use crate::store::{Revision, Store, StoreError};

/// Where the in-flight allocations live (beside kube's `/registry/ranges/...`).
pub const RANGES_KEY: &str = "/registry/ranges/services";

/// How long an allocation handed to a create is held before it must show up
/// among the stored Services.
pub const RESERVATION_TTL: Duration = Duration::from_secs(60);

/// The record: what is reserved and until when (unix seconds).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservations {
    #[serde(default, rename = "serviceips")]
    pub ips: BTreeMap<IpAddr, u64>,
    /// `"<port>/<protocol>"`.
    #[serde(default, rename = "servicenodeports")]
    pub ports: BTreeMap<String, u64>,
}

pub fn port_key(port: u16, proto: &str) -> String {
    format!("{port}/{proto}")
}

fn parse_port_key(k: &str) -> Option<(u16, String)> {
    let (port, proto) = k.split_once('/')?;
    Some((port.parse().ok()?, proto.to_string()))
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Reservations {
    /// Drops what expired by `now` or what `stored` shows (it is allocated
    /// for good now, and freed when that Service goes).
    pub fn prune(&mut self, now: u64, stored: &InUse) {
        self.ips.retain(|ip, until| *until > now && !stored.ips.contains(ip));
        self.ports.retain(|k, until| {
            *until > now && parse_port_key(k).is_none_or(|p| !stored.ports.contains(&p))
        });
    }

    /// Adds every reservation to `used`.
    pub fn mark_used(&self, used: &mut InUse) {
        used.ips.extend(self.ips.keys().copied());
        used.ports.extend(self.ports.keys().filter_map(|k| parse_port_key(k)));
    }

    /// Records `took` until `until`.
    pub fn reserve(&mut self, took: &InUse, until: u64) {
        for ip in &took.ips {
            self.ips.insert(*ip, until);
        }
        for (port, proto) in &took.ports {
            self.ports.insert(port_key(*port, proto), until);
        }
    }
}

/// The record as read, with the revision its CAS write must match.
pub struct Read {
    pub reservations: Reservations,
    /// `None`: the record does not exist yet (the write creates it).
    pub revision: Option<Revision>,
}

/// Reads [`RANGES_KEY`]; an unreadable value counts as empty (the Services
/// stay the truth, only in-flight reservations would be forgotten).
pub fn read(store: &dyn Store) -> Result<Read, StoreError> {
    Ok(match store.get(RANGES_KEY)? {
        None => Read { reservations: Reservations::default(), revision: None },
        Some(rec) => Read {
            reservations: serde_json::from_slice(&rec.value).unwrap_or_else(|e| {
                tracing::warn!(key = RANGES_KEY, error = %e, "unreadable allocation record; starting it afresh");
                Reservations::default()
            }),
            revision: Some(rec.mod_revision),
        },
    })
}

/// Writes `next` if the record is still at `read_at`. `Ok(false)`: someone
/// else wrote first (read again and retry).
pub fn write(store: &dyn Store, read_at: Option<Revision>, next: &Reservations) -> Result<bool, StoreError> {
    let body = serde_json::to_vec(next).expect("reservations serialize");
    let result = match read_at {
        None => store.create(RANGES_KEY, &body).map(|_| ()),
        Some(rev) => store.update(RANGES_KEY, &body, rev).map(|_| ()),
    };
    match result {
        Ok(()) => Ok(true),
        Err(StoreError::AlreadyExists { .. } | StoreError::Conflict { .. } | StoreError::NotFound { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{json, Value};

    use crate::apiserver::admission::{Admission, AdmissionRequest};
    use crate::apiserver::ipalloc::services::ServiceAllocator;
    use crate::apiserver::auth::UserInfo;
    use crate::config::PortRange;
    use crate::store::{SqliteStore, Store, StoreOptions};

    use super::*;

    /// Two allocators on one store: two API servers on one datastore.
    fn two_servers(dir: &std::path::Path, net: &str, ports: (u16, u16)) -> (Arc<dyn Store>, ServiceAllocator, ServiceAllocator) {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir, StoreOptions::default()).unwrap());
        let range = PortRange { first: ports.0, last: ports.1 };
        let mk = || ServiceAllocator::new(store.clone(), net.parse().unwrap(), range);
        let (a, b) = (mk(), mk());
        (store, a, b)
    }

    fn admit(alloc: &ServiceAllocator, name: &str, spec: Value, dry_run: bool) -> Result<Value, u16> {
        let def = crate::apiserver::builtin::builtin_registry().lookup("", "v1", "services").unwrap();
        let user = UserInfo::default();
        let req = AdmissionRequest {
            dry_run,
            ..AdmissionRequest::for_test(&def, Some("default"), name, None, &user)
        };
        let mut obj = json!({"metadata": {"name": name, "namespace": "default"}, "spec": spec});
        alloc.admit(&req, &mut obj, &mut Vec::new()).map(|_| obj).map_err(|s| s.code)
    }

    fn store_service(store: &dyn Store, svc: &Value) {
        let key = format!("/registry/services/default/{}", svc["metadata"]["name"].as_str().unwrap());
        store.create(&key, &serde_json::to_vec(svc).unwrap()).unwrap();
    }

    #[test]
    fn two_servers_allocating_before_either_stores_never_collide() {
        let dir = tempfile::tempdir().unwrap();
        // A /29 has 5 assignable service IPs; three node ports.
        let (store, a, b) = two_servers(dir.path(), "10.0.0.0/29", (30000, 30002));
        let mut ips = std::collections::HashSet::new();
        let mut ports = std::collections::HashSet::new();
        for i in 0..3 {
            let alloc = if i % 2 == 0 { &a } else { &b };
            let svc = admit(alloc, &format!("s{i}"), json!({"type": "NodePort", "ports": [{"port": 80}]}), false).unwrap();
            assert!(ips.insert(svc["spec"]["clusterIP"].as_str().unwrap().to_string()), "{svc}");
            assert!(ports.insert(svc["spec"]["ports"][0]["nodePort"].as_u64().unwrap()), "{svc}");
        }
        // Every node port is in flight: both servers say the range is full.
        assert_eq!(admit(&a, "x", json!({"type": "NodePort", "ports": [{"port": 80}]}), false), Err(500));
        assert_eq!(admit(&b, "x", json!({"type": "NodePort", "ports": [{"port": 80}]}), false), Err(500));
        let rec = read(store.as_ref()).unwrap().reservations;
        assert_eq!((rec.ips.len(), rec.ports.len()), (3, 3));
    }

    #[test]
    fn concurrent_allocators_on_threads_hand_out_distinct_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, a, b) = two_servers(dir.path(), "10.0.0.0/26", (30000, 30100));
        let (a, b) = (Arc::new(a), Arc::new(b));
        let handles: Vec<_> = [a, b]
            .into_iter()
            .enumerate()
            .map(|(n, alloc)| {
                std::thread::spawn(move || {
                    (0..20)
                        .map(|i| {
                            let svc = admit(&alloc, &format!("t{n}-{i}"), json!({}), false).unwrap();
                            svc["spec"]["clusterIP"].as_str().unwrap().to_string()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let all: Vec<String> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
        let distinct: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(distinct.len(), 40, "{all:?}");
    }

    #[test]
    fn dry_run_reserves_nothing_and_stored_services_release_their_reservation() {
        let dir = tempfile::tempdir().unwrap();
        let (store, a, b) = two_servers(dir.path(), "10.0.0.0/29", (30000, 30000));
        let spec = json!({"type": "NodePort", "ports": [{"port": 80}]});
        admit(&a, "dry", spec.clone(), true).unwrap();
        assert!(store.get(RANGES_KEY).unwrap().is_none(), "a dry run wrote the record");
        let svc = admit(&a, "one", spec.clone(), false).unwrap();
        store_service(store.as_ref(), &svc);
        // The only port is taken by a stored Service; the next allocation
        // prunes the reservation the Service now covers.
        assert_eq!(admit(&b, "two", spec.clone(), false), Err(500));
        assert!(read(store.as_ref()).unwrap().reservations.ports.is_empty());
        // Deleting the Service frees its port for the other server.
        store.delete("/registry/services/default/one", None).unwrap();
        let two = admit(&b, "two", spec, false).unwrap();
        assert_eq!(two["spec"]["ports"][0]["nodePort"], 30000);
    }

    #[test]
    fn expired_reservations_are_dropped() {
        let mut r = Reservations::default();
        let took = InUse {
            ips: ["10.0.0.2".parse().unwrap()].into_iter().collect(),
            ports: [(30000, "TCP".to_string())].into_iter().collect(),
        };
        r.reserve(&took, 100);
        r.prune(99, &InUse::default());
        assert_eq!((r.ips.len(), r.ports.len()), (1, 1));
        let mut used = InUse::default();
        r.mark_used(&mut used);
        assert!(used.ports.contains(&(30000, "TCP".into())) && used.ips.len() == 1);
        r.prune(100, &InUse::default());
        assert_eq!(r, Reservations::default());
    }
}
