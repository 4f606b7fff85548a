//! The owner graph the garbage collector keeps from its watches, and the
//! decisions it takes from it (pure: no API calls, so every rule is tested
//! without a server).
//!
//! Invariants: `dependents[o]` holds exactly the uids of the known objects
//! that name `o` in their ownerReferences; every change marks the objects
//! whose decision may change (the object, its owners, and on removal its
//! dependents) dirty, and only dirty objects are looked at.

use std::collections::{BTreeSet, HashMap, HashSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;

pub const ORPHAN: &str = "orphan";
pub const FOREGROUND: &str = "foregroundDeletion";

/// What the collector keeps of an object: its metadata, nothing else.
#[derive(Clone, Debug, PartialEq)]
pub struct Meta {
    /// The watched kind's key (see `gc::kind_key`).
    pub kind: String,
    pub name: String,
    pub namespace: Option<String>,
    pub uid: String,
    pub resource_version: Option<String>,
    pub owners: Vec<OwnerReference>,
    pub finalizers: Vec<String>,
    pub deleting: bool,
}

impl Meta {
    pub fn of<K: kube::Resource>(kind: &str, obj: &K) -> Option<Self> {
        Some(Self {
            kind: kind.to_string(),
            name: obj.name_any(),
            namespace: obj.namespace(),
            uid: obj.uid()?,
            resource_version: obj.resource_version(),
            owners: obj.owner_references().to_vec(),
            finalizers: obj.finalizers().to_vec(),
            deleting: obj.meta().deletion_timestamp.is_some(),
        })
    }

    fn has_finalizer(&self, f: &str) -> bool {
        self.finalizers.iter().any(|x| x == f)
    }
}

/// One write the collector makes.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Orphaning: drop `owner` from `dep`'s ownerReferences.
    DropOwner { dep: Meta, owner: String },
    /// The collector's part of a deletion is done.
    RemoveFinalizer { obj: Meta, finalizer: &'static str },
    /// Foreground: the dependent goes, itself in the foreground when it
    /// has dependents of its own (so the wait is transitive); a leaf goes in
    /// the background, which spares it a finalizer round trip.
    DeleteDependent { dep: Meta, foreground: bool },
    /// These owners of `dep` are not in the graph: the executor confirms
    /// each with a live GET (the graph may lag a just-created owner), then
    /// deletes `dep` if all its owners are gone or drops the gone ones.
    CheckOwners {
        dep: Meta,
        missing: Vec<OwnerReference>,
    },
}

#[derive(Default)]
pub struct Graph {
    nodes: HashMap<String, Meta>,
    dependents: HashMap<String, HashSet<String>>,
    dirty: BTreeSet<String>,
}

impl Graph {
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn link(&mut self, m: &Meta) {
        for o in &m.owners {
            self.dependents
                .entry(o.uid.clone())
                .or_default()
                .insert(m.uid.clone());
            self.dirty.insert(o.uid.clone());
        }
    }

    fn unlink(&mut self, m: &Meta) {
        for o in &m.owners {
            if let Some(set) = self.dependents.get_mut(&o.uid) {
                set.remove(&m.uid);
                if set.is_empty() {
                    self.dependents.remove(&o.uid);
                }
            }
            self.dirty.insert(o.uid.clone());
        }
    }

    /// An object was added or changed.
    pub fn upsert(&mut self, m: Meta) {
        if let Some(old) = self.nodes.remove(&m.uid) {
            self.unlink(&old);
        }
        self.link(&m);
        self.dirty.insert(m.uid.clone());
        self.nodes.insert(m.uid.clone(), m);
    }

    /// An object is gone: its dependents and owners may have work now.
    pub fn remove(&mut self, uid: &str) {
        if let Some(old) = self.nodes.remove(uid) {
            self.unlink(&old);
        }
        if let Some(deps) = self.dependents.get(uid) {
            self.dirty.extend(deps.iter().cloned());
        }
    }

    /// A kind was (re)listed: what it held and is no longer listed is gone.
    pub fn replace_kind(&mut self, kind: &str, items: Vec<Meta>) {
        let listed: HashSet<&str> = items.iter().map(|m| m.uid.as_str()).collect();
        let stale: Vec<String> = self
            .nodes
            .values()
            .filter(|m| m.kind == kind && !listed.contains(m.uid.as_str()))
            .map(|m| m.uid.clone())
            .collect();
        for uid in stale {
            self.remove(&uid);
        }
        for m in items {
            if self.nodes.get(&m.uid) != Some(&m) {
                self.upsert(m);
            }
        }
    }

    /// Forgets every object of a kind the API no longer serves.
    pub fn drop_kind(&mut self, kind: &str) {
        self.replace_kind(kind, Vec::new());
    }

    /// The consistency pass: every object is looked at again.
    pub fn mark_all(&mut self) {
        self.dirty.extend(self.nodes.keys().cloned());
    }

    pub fn mark(&mut self, uid: &str) {
        self.dirty.insert(uid.to_string());
    }

    pub fn has_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    pub fn take_dirty(&mut self) -> Vec<String> {
        std::mem::take(&mut self.dirty).into_iter().collect()
    }

    #[cfg(test)]
    pub fn get(&self, uid: &str) -> Option<&Meta> {
        self.nodes.get(uid)
    }

    fn dependents_of(&self, uid: &str) -> Vec<&Meta> {
        let mut out: Vec<&Meta> = self
            .dependents
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|d| self.nodes.get(d))
            .collect();
        out.sort_by(|a, b| a.uid.cmp(&b.uid));
        out
    }

    /// The writes that object `uid` needs now, in order (the executor stops
    /// at the first failure; the object stays dirty).
    pub fn plan(&self, uid: &str) -> Vec<Step> {
        let Some(obj) = self.nodes.get(uid) else {
            return Vec::new();
        };
        let mut steps = Vec::new();
        if obj.deleting && obj.has_finalizer(ORPHAN) {
            for dep in self.dependents_of(uid) {
                steps.push(Step::DropOwner {
                    dep: dep.clone(),
                    owner: uid.to_string(),
                });
            }
            steps.push(Step::RemoveFinalizer {
                obj: obj.clone(),
                finalizer: ORPHAN,
            });
            return steps;
        }
        if obj.deleting && obj.has_finalizer(FOREGROUND) {
            let mut blocking = 0;
            for dep in self.dependents_of(uid) {
                let blocks = dep
                    .owners
                    .iter()
                    .any(|o| o.uid == uid && o.block_owner_deletion == Some(true));
                if blocks {
                    blocking += 1;
                }
                if !dep.deleting {
                    steps.push(Step::DeleteDependent {
                        dep: dep.clone(),
                        foreground: self.dependents.contains_key(&dep.uid),
                    });
                }
            }
            if blocking == 0 {
                steps.push(Step::RemoveFinalizer {
                    obj: obj.clone(),
                    finalizer: FOREGROUND,
                });
            }
            return steps;
        }
        if !obj.deleting {
            let missing: Vec<OwnerReference> = obj
                .owners
                .iter()
                .filter(|o| !self.nodes.contains_key(&o.uid))
                .cloned()
                .collect();
            if !missing.is_empty() {
                steps.push(Step::CheckOwners {
                    dep: obj.clone(),
                    missing,
                });
            }
        }
        steps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(uid: &str, block: bool) -> OwnerReference {
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: format!("o-{uid}"),
            uid: uid.into(),
            block_owner_deletion: block.then_some(true),
            controller: Some(true),
        }
    }

    fn meta(uid: &str, owners: Vec<OwnerReference>) -> Meta {
        Meta {
            kind: "v1/pods".into(),
            name: uid.into(),
            namespace: Some("default".into()),
            uid: uid.into(),
            resource_version: Some("1".into()),
            owners,
            finalizers: vec![],
            deleting: false,
        }
    }

    fn deleting(mut m: Meta, fin: &str) -> Meta {
        m.deleting = true;
        m.finalizers = vec![fin.to_string()];
        m
    }

    #[test]
    fn a_deleted_owner_makes_its_dependents_dirty_and_checked() {
        let mut g = Graph::default();
        g.upsert(meta("rs", vec![]));
        g.upsert(meta("p1", vec![owner("rs", true)]));
        g.upsert(meta("p2", vec![owner("rs", true)]));
        g.take_dirty();
        assert!(g.plan("p1").is_empty(), "owner present: nothing to do");
        g.remove("rs");
        let dirty = g.take_dirty();
        assert_eq!(dirty, vec!["p1".to_string(), "p2".to_string()]);
        match &g.plan("p1")[..] {
            [Step::CheckOwners { dep, missing }] => {
                assert_eq!(dep.uid, "p1");
                assert_eq!(missing[0].uid, "rs");
            }
            other => panic!("unexpected plan {other:?}"),
        }
    }

    #[test]
    fn foreground_deletes_dependents_then_finishes_when_the_last_goes() {
        let mut g = Graph::default();
        g.upsert(deleting(meta("rs", vec![]), FOREGROUND));
        g.upsert(meta("p1", vec![owner("rs", true)]));
        g.upsert(meta("p2", vec![owner("rs", false)]));
        let plan = g.plan("rs");
        assert_eq!(
            plan.len(),
            2,
            "two deletions, no finalizer removal: {plan:?}"
        );
        assert!(plan
            .iter()
            .all(|s| matches!(s, Step::DeleteDependent { foreground, .. } if !foreground)));
        // p1 is going (no new delete), p2 is gone: p1 still blocks.
        g.upsert(deleting(meta("p1", vec![owner("rs", true)]), FOREGROUND));
        g.remove("p2");
        assert!(g.plan("rs").is_empty());
        g.take_dirty();
        g.remove("p1");
        assert!(
            g.take_dirty().contains(&"rs".to_string()),
            "the owner is woken"
        );
        assert_eq!(
            g.plan("rs"),
            vec![Step::RemoveFinalizer {
                obj: g.get("rs").unwrap().clone(),
                finalizer: FOREGROUND
            }]
        );
    }

    #[test]
    fn a_dependent_with_dependents_of_its_own_goes_in_the_foreground() {
        let mut g = Graph::default();
        g.upsert(deleting(meta("deploy", vec![]), FOREGROUND));
        g.upsert(meta("rs", vec![owner("deploy", true)]));
        g.upsert(meta("p1", vec![owner("rs", true)]));
        assert!(matches!(&g.plan("deploy")[..],
            [Step::DeleteDependent { dep, foreground: true }] if dep.uid == "rs"));
    }

    #[test]
    fn orphaning_drops_the_reference_from_every_dependent_first() {
        let mut g = Graph::default();
        g.upsert(deleting(meta("rs", vec![]), ORPHAN));
        g.upsert(meta("p1", vec![owner("rs", true)]));
        let plan = g.plan("rs");
        assert!(
            matches!(&plan[0], Step::DropOwner { dep, owner } if dep.uid == "p1" && owner == "rs")
        );
        assert!(
            matches!(&plan[1], Step::RemoveFinalizer { finalizer, .. } if *finalizer == ORPHAN)
        );
    }

    #[test]
    fn a_relist_removes_what_it_no_longer_holds() {
        let mut g = Graph::default();
        g.upsert(meta("rs", vec![]));
        g.upsert(meta("p1", vec![owner("rs", true)]));
        g.take_dirty();
        let mut rs = meta("rs", vec![]);
        rs.kind = "apps/v1/replicasets".into();
        g.nodes.get_mut("rs").unwrap().kind = rs.kind.clone();
        g.replace_kind("apps/v1/replicasets", vec![]);
        assert!(g.get("rs").is_none());
        assert_eq!(g.take_dirty(), vec!["p1".to_string()]);
        // An unchanged relist marks nothing.
        g.replace_kind("v1/pods", vec![meta("p1", vec![owner("rs", true)])]);
        assert!(!g.has_dirty());
        assert_eq!(g.len(), 1);
        assert!(g.dependents.contains_key("rs"));
        g.drop_kind("v1/pods");
        assert!(g.is_empty() && g.dependents.is_empty());
    }
}
