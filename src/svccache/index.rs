//! The cache's state machine, free of I/O: watch events in, snapshots out.
//!
//! Each kind goes through kube-runtime's watcher protocol: `Init`, then
//! `InitApply` for every listed object, then `InitDone`; afterwards `Apply`
//! and `Delete`. A (re)list is collected aside and swapped in whole at
//! `InitDone`, so objects deleted while the watch was down disappear and
//! nothing else flickers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::Event;
use kube::ResourceExt;

use super::changelog::{self, Log, Mark, Step, Touched};

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
    /// The index this snapshot came from (0: none, e.g. a default).
    lineage: u64,
    /// The change log up to `generation`.
    log: Option<Arc<Step>>,
}

impl Snapshot {
    /// The slices of Service `key` (none if it has none).
    pub fn slices(&self, key: &ObjKey) -> &[Arc<EndpointSlice>] {
        self.slices.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn service(&self, key: &ObjKey) -> Option<&Arc<Service>> {
        self.services.get(key)
    }

    /// Where a reader is after reading this snapshot.
    pub fn mark(&self) -> Mark {
        Mark {
            lineage: self.lineage,
            generation: self.generation,
        }
    }

    /// The keys of the Services whose Service or EndpointSlices changed
    /// since the snapshot a reader marked with `since` (a superset: some
    /// may have changed back), or `None` when the log cannot tell (another
    /// index, a relist in between, or `since` older than the log reaches):
    /// then the reader must look at every Service.
    pub fn changed_since(&self, since: Mark) -> Option<BTreeSet<ObjKey>> {
        changelog::changed_since(self.log.as_ref(), self.mark(), since)
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

/// What a visible change of one kind was.
enum Applied<K> {
    /// A relist swapped in whole.
    All,
    /// One object: before and after (`None`: absent).
    One(Option<Arc<K>>, Option<Arc<K>>),
}

impl<K: kube::Resource> Kind<K> {
    /// Applies one event; `Some` if the visible set changed.
    fn apply(&mut self, event: Event<K>) -> Option<Applied<K>> {
        match event {
            Event::Init => {
                self.relist = Some(BTreeMap::new());
                None
            }
            Event::InitApply(obj) => {
                let key = key_of(&obj);
                self.relist
                    .get_or_insert_with(BTreeMap::new)
                    .insert(key, Arc::new(obj));
                None
            }
            Event::InitDone => {
                self.objects = self.relist.take().unwrap_or_default();
                self.listed = true;
                Some(Applied::All)
            }
            Event::Apply(obj) => {
                let key = key_of(&obj);
                let same = self
                    .objects
                    .get(&key)
                    .is_some_and(|old| old.resource_version() == obj.resource_version());
                if same {
                    return None;
                }
                let new = Arc::new(obj);
                let old = self.objects.insert(key, new.clone());
                Some(Applied::One(old, Some(new)))
            }
            Event::Delete(obj) => self
                .objects
                .remove(&key_of(&obj))
                .map(|old| Applied::One(Some(old), None)),
        }
    }
}

/// The Service key a slice belongs to (none without the label).
fn service_of(slice: &EndpointSlice) -> Option<ObjKey> {
    slice.labels().get(SERVICE_NAME_LABEL).map(|service| {
        ObjKey::new(
            slice.metadata.namespace.clone().unwrap_or_default(),
            service.clone(),
        )
    })
}

fn key_of<K: kube::Resource>(obj: &K) -> ObjKey {
    ObjKey::new(
        obj.meta().namespace.clone().unwrap_or_default(),
        obj.meta().name.clone().unwrap_or_default(),
    )
}

/// Services and slices as the watches delivered them.
#[derive(Debug)]
pub struct Index {
    services: Kind<Service>,
    slices: Kind<EndpointSlice>,
    generation: u64,
    lineage: u64,
    log: Log,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            services: Kind::default(),
            slices: Kind::default(),
            generation: 0,
            lineage: changelog::new_lineage(),
            log: Log::default(),
        }
    }
}

impl Index {
    /// True if readers should get a new snapshot.
    pub fn apply_service(&mut self, event: Event<Service>) -> bool {
        let touched = match self.services.apply(event) {
            None => return false,
            Some(Applied::All) => Touched::Everything,
            Some(Applied::One(old, new)) => {
                Touched::Keys(vec![key_of(new.as_deref().or(old.as_deref()).expect("an object"))])
            }
        };
        self.bump(touched)
    }

    /// True if readers should get a new snapshot.
    pub fn apply_slice(&mut self, event: Event<EndpointSlice>) -> bool {
        let touched = match self.slices.apply(event) {
            None => return false,
            Some(Applied::All) => Touched::Everything,
            Some(Applied::One(old, new)) => {
                // Both Services when the slice's label moved.
                let mut keys: Vec<ObjKey> = [old, new]
                    .iter()
                    .flatten()
                    .filter_map(|s| service_of(s))
                    .collect();
                keys.dedup();
                Touched::Keys(keys)
            }
        };
        self.bump(touched)
    }

    fn bump(&mut self, touched: Touched) -> bool {
        self.generation += 1;
        self.log.push(self.generation, touched);
        true
    }

    /// The current state as an immutable snapshot.
    pub fn snapshot(&self) -> Snapshot {
        let mut slices: BTreeMap<ObjKey, Vec<Arc<EndpointSlice>>> = BTreeMap::new();
        for slice in self.slices.objects.values() {
            // A slice without the label belongs to no Service (kube-proxy
            // ignores such slices too).
            let Some(service) = service_of(slice) else {
                continue;
            };
            slices.entry(service).or_default().push(slice.clone());
        }
        Snapshot {
            generation: self.generation,
            synced: self.services.listed && self.slices.listed,
            services: self.services.objects.clone(),
            slices,
            lineage: self.lineage,
            log: self.log.head(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::svccache::LOG_LIMIT;
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

    fn names(keys: Option<BTreeSet<ObjKey>>) -> Option<Vec<String>> {
        keys.map(|k| k.into_iter().map(|k| k.to_string()).collect())
    }

    fn listed() -> Index {
        let mut i = Index::default();
        i.apply_service(Event::Init);
        i.apply_service(Event::InitApply(service("a", "web", "1")));
        i.apply_service(Event::InitApply(service("a", "db", "1")));
        i.apply_service(Event::InitDone);
        i.apply_slice(Event::Init);
        i.apply_slice(Event::InitApply(slice("a", "web-x", Some("web"))));
        i.apply_slice(Event::InitDone);
        i
    }

    #[test]
    fn the_change_log_names_the_services_whose_objects_changed() {
        let mut i = listed();
        let mark = i.snapshot().mark();
        assert_eq!(names(i.snapshot().changed_since(mark)), Some(vec![]));
        // An unchanged apply is no change.
        i.apply_service(Event::Apply(service("a", "web", "1")));
        assert_eq!(names(i.snapshot().changed_since(mark)), Some(vec![]));
        let mut moved = slice("a", "web-x", Some("db"));
        moved.metadata.resource_version = Some("2".into());
        i.apply_slice(Event::Apply(moved));
        let after_move = i.snapshot().mark();
        i.apply_service(Event::Apply(service("b", "new", "1")));
        i.apply_slice(Event::Apply(slice("a", "stray", None)));
        let s = i.snapshot();
        // The slice's label moved: both Services; a slice without the
        // label belongs to none.
        assert_eq!(
            names(s.changed_since(mark)),
            Some(vec!["a/db".into(), "a/web".into(), "b/new".into()])
        );
        assert_eq!(names(s.changed_since(after_move)), Some(vec!["b/new".into()]));
        i.apply_slice(Event::Delete(slice("a", "web-x", Some("db"))));
        i.apply_service(Event::Delete(service("a", "web", "1")));
        assert_eq!(
            names(i.snapshot().changed_since(s.mark())),
            Some(vec!["a/db".into(), "a/web".into()])
        );
    }

    #[test]
    fn the_change_log_says_everything_when_it_cannot_tell() {
        let mut i = listed();
        let before = i.snapshot();
        // The first list; another index; a mark from the future.
        assert_eq!(before.changed_since(Snapshot::default().mark()), None);
        assert_eq!(before.changed_since(listed().snapshot().mark()), None);
        i.apply_service(Event::Apply(service("a", "web", "2")));
        assert_eq!(before.changed_since(i.snapshot().mark()), None);
        // A relist in between.
        let mark = i.snapshot().mark();
        i.apply_service(Event::Init);
        i.apply_service(Event::InitDone);
        assert_eq!(i.snapshot().changed_since(mark), None);
        // Further behind than the log reaches, and just within it.
        let mark = i.snapshot().mark();
        for v in 0..LOG_LIMIT {
            i.apply_service(Event::Apply(service("a", "db", &format!("x{v}"))));
        }
        let within = i.snapshot();
        assert_eq!(names(within.changed_since(mark)), Some(vec!["a/db".into()]));
        i.apply_service(Event::Apply(service("a", "web", "3")));
        assert_eq!(i.snapshot().changed_since(mark), None);
        assert_eq!(names(i.snapshot().changed_since(within.mark())), Some(vec!["a/web".into()]));
        // A snapshot not from an index knows nothing.
        assert_eq!(Snapshot::default().changed_since(Snapshot::default().mark()), None);
    }
}
