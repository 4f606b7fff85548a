//! The cache's state machine, free of I/O: watch events in, snapshots out.
//!
//! Each kind goes through kube-runtime's watcher protocol: `Init`, then
//! `InitApply` for every listed object, then `InitDone`; afterwards `Apply`
//! and `Delete`. A (re)list is collected aside and swapped in whole at
//! `InitDone`, so objects deleted while the watch was down disappear and
//! nothing else flickers.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::Event;
use kube::ResourceExt;

/// The label an EndpointSlice names its Service by.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A namespaced object's name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjKey {
    pub namespace: String,
    pub name: String,
}

impl ObjKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for ObjKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What readers see: every Service and, per Service, its slices.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Moves on every published change.
    pub generation: u64,
    /// Both kinds have been listed at least once.
    pub synced: bool,
    pub services: BTreeMap<ObjKey, Arc<Service>>,
    /// Slices by the Service they name, ordered by slice name.
    slices: BTreeMap<ObjKey, Vec<Arc<EndpointSlice>>>,
}

impl Snapshot {
    /// The slices of Service `key` (none if it has none).
    pub fn slices(&self, key: &ObjKey) -> &[Arc<EndpointSlice>] {
        self.slices.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn service(&self, key: &ObjKey) -> Option<&Arc<Service>> {
        self.services.get(key)
    }

    /// Builds a snapshot from objects (for tests of the readers).
    pub fn from_objects(
        services: impl IntoIterator<Item = Service>,
        slices: impl IntoIterator<Item = EndpointSlice>,
    ) -> Self {
        let mut index = Index::default();
        index.apply_service(Event::Init);
        for s in services {
            index.apply_service(Event::InitApply(s));
        }
        index.apply_service(Event::InitDone);
        index.apply_slice(Event::Init);
        for s in slices {
            index.apply_slice(Event::InitApply(s));
        }
        index.apply_slice(Event::InitDone);
        index.snapshot()
    }
}

/// One kind's objects by key, plus a relist in progress.
#[derive(Debug)]
struct Kind<K> {
    objects: BTreeMap<ObjKey, Arc<K>>,
    relist: Option<BTreeMap<ObjKey, Arc<K>>>,
    listed: bool,
}

impl<K> Default for Kind<K> {
    fn default() -> Self {
        Kind {
            objects: BTreeMap::new(),
            relist: None,
            listed: false,
        }
    }
}

impl<K: kube::Resource> Kind<K> {
    /// Applies one event; true if the visible set changed.
    fn apply(&mut self, event: Event<K>) -> bool {
        match event {
            Event::Init => {
                self.relist = Some(BTreeMap::new());
                false
            }
            Event::InitApply(obj) => {
                let key = key_of(&obj);
                self.relist
                    .get_or_insert_with(BTreeMap::new)
                    .insert(key, Arc::new(obj));
                false
            }
            Event::InitDone => {
                self.objects = self.relist.take().unwrap_or_default();
                self.listed = true;
                true
            }
            Event::Apply(obj) => {
                let key = key_of(&obj);
                let same = self
                    .objects
                    .get(&key)
                    .is_some_and(|old| old.resource_version() == obj.resource_version());
                if same {
                    return false;
                }
                self.objects.insert(key, Arc::new(obj));
                true
            }
            Event::Delete(obj) => self.objects.remove(&key_of(&obj)).is_some(),
        }
    }
}

fn key_of<K: kube::Resource>(obj: &K) -> ObjKey {
    ObjKey::new(
        obj.meta().namespace.clone().unwrap_or_default(),
        obj.meta().name.clone().unwrap_or_default(),
    )
}

/// Services and slices as the watches delivered them.
#[derive(Debug, Default)]
pub struct Index {
    services: Kind<Service>,
    slices: Kind<EndpointSlice>,
    generation: u64,
}

impl Index {
    /// True if readers should get a new snapshot.
    pub fn apply_service(&mut self, event: Event<Service>) -> bool {
        self.bump(|i| i.services.apply(event))
    }

    /// True if readers should get a new snapshot.
    pub fn apply_slice(&mut self, event: Event<EndpointSlice>) -> bool {
        self.bump(|i| i.slices.apply(event))
    }

    fn bump(&mut self, f: impl FnOnce(&mut Self) -> bool) -> bool {
        let changed = f(self);
        if changed {
            self.generation += 1;
        }
        changed
    }

    /// The current state as an immutable snapshot.
    pub fn snapshot(&self) -> Snapshot {
        let mut slices: BTreeMap<ObjKey, Vec<Arc<EndpointSlice>>> = BTreeMap::new();
        for (key, slice) in &self.slices.objects {
            // A slice without the label belongs to no Service (kube-proxy
            // ignores such slices too).
            let Some(service) = slice.labels().get(SERVICE_NAME_LABEL) else {
                continue;
            };
            slices
                .entry(ObjKey::new(key.namespace.clone(), service.clone()))
                .or_default()
                .push(slice.clone());
        }
        Snapshot {
            generation: self.generation,
            synced: self.services.listed && self.slices.listed,
            services: self.services.objects.clone(),
            slices,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;

    fn service(ns: &str, name: &str, rv: &str) -> Service {
        Service {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn slice(ns: &str, name: &str, svc: Option<&str>) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                resource_version: Some("1".into()),
                labels: svc.map(|s| [(SERVICE_NAME_LABEL.to_string(), s.to_string())].into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: vec![],
            ports: None,
        }
    }

    #[test]
    fn nothing_is_synced_or_visible_until_both_lists_finish() {
        let mut i = Index::default();
        assert!(!i.apply_service(Event::Init));
        assert!(!i.apply_service(Event::InitApply(service("a", "web", "1"))));
        assert!(i.snapshot().services.is_empty());
        assert!(i.apply_service(Event::InitDone));
        let s = i.snapshot();
        assert_eq!(s.services.len(), 1);
        assert!(!s.synced, "slices are not listed yet");
        i.apply_slice(Event::Init);
        i.apply_slice(Event::InitDone);
        assert!(i.snapshot().synced);
    }

    #[test]
    fn a_relist_swaps_whole_and_drops_what_vanished() {
        let mut i = Index::default();
        i.apply_service(Event::Init);
        i.apply_service(Event::InitApply(service("a", "old", "1")));
        i.apply_service(Event::InitApply(service("a", "kept", "1")));
        i.apply_service(Event::InitDone);
        // A relist in progress shows the previous state.
        i.apply_service(Event::Init);
        i.apply_service(Event::InitApply(service("a", "kept", "2")));
        assert_eq!(i.snapshot().services.len(), 2);
        i.apply_service(Event::InitDone);
        let s = i.snapshot();
        assert_eq!(
            s.services.keys().map(|k| k.name.as_str()).collect::<Vec<_>>(),
            vec!["kept"]
        );
        assert_eq!(
            s.services[&ObjKey::new("a", "kept")]
                .metadata
                .resource_version
                .as_deref(),
            Some("2")
        );
    }

    #[test]
    fn an_unchanged_apply_publishes_nothing_and_deletes_do() {
        let mut i = Index::default();
        assert!(i.apply_service(Event::Apply(service("a", "web", "5"))));
        let g = i.snapshot().generation;
        assert!(!i.apply_service(Event::Apply(service("a", "web", "5"))));
        assert_eq!(i.snapshot().generation, g);
        assert!(i.apply_service(Event::Apply(service("a", "web", "6"))));
        assert!(i.apply_service(Event::Delete(service("a", "web", "6"))));
        assert!(!i.apply_service(Event::Delete(service("a", "web", "6"))));
        assert!(i.snapshot().services.is_empty());
    }

    #[test]
    fn slices_are_grouped_by_their_service_label_within_a_namespace() {
        let s = Snapshot::from_objects(
            [service("a", "web", "1"), service("b", "web", "1")],
            [
                slice("a", "web-x", Some("web")),
                slice("a", "web-y", Some("web")),
                slice("b", "web-z", Some("web")),
                slice("a", "stray", None),
            ],
        );
        let names = |ns: &str| {
            s.slices(&ObjKey::new(ns, "web"))
                .iter()
                .map(|s| s.metadata.name.clone().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(names("a"), vec!["web-x", "web-y"]);
        assert_eq!(names("b"), vec!["web-z"]);
        assert!(s.slices(&ObjKey::new("a", "none")).is_empty());
        assert!(s.synced);
    }
}
