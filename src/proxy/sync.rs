//! Turning a snapshot of Services and EndpointSlices into nftables
//! transactions: a full replace of the table the first time (and after a
//! failed transaction), then only the difference.
//!
//! [`Syncer`] remembers, per Service, the objects it last programmed from
//! (held as `Arc`s, so pointer identity means "unchanged") and the
//! [`ServiceRules`] it applied, and the [`Mark`] of the last synced
//! snapshot. A sync looks only at the Services the snapshot's change log
//! names since that mark (all of them, in one ordered walk, when the log
//! cannot tell), recomputes those whose objects changed and writes one
//! transaction with exactly their changed
//! chains, sets and map elements: its size is proportional to the change,
//! not to the number of Services.
//!
//! Map and set elements are *claimed*: two Services may ask for the same
//! key (the same external IP and port); the first claimant in key order
//! holds it, and when it lets go the next one gets it, so a transaction
//! never adds an element twice.
//!
//! Within a transaction the order keeps references valid: elements that
//! go are deleted first, changed and removed chains are flushed, sets are
//! declared, new chains declared empty, then filled, then (when collected)
//! emptied chains and sets deleted, and new elements added.
//!
//! Two writers, in this order within a sync: `nft -f` for structure
//! (chains, sets, endpoint maps a Service gains, verdict-map elements,
//! garbage), then one netlink batch ([`super::elements`]) for the rest:
//! the elements of data maps and plain sets. An endpoint change, the
//! common case (pods replaced, a Deployment scaled, a Service losing its
//! last or gaining its first endpoint), changes only such elements, so
//! it is one netlink batch and no `nft` at all. Nothing in it is
//! proportional to the table but nf_tables' own list walks (every chain
//! at commit, the sets to find one by name: ~0.3 µs per Service): no listing (`nft` 1.0.6 fetches the elements of every
//! set before it adds or deletes one), no rule and no jump (the kernel
//! re-validates the jump graph of the whole table when a transaction
//! adds a rule or a jump/goto element), no fork. When `nft` runs anyway,
//! data elements that are added ride in its script (atomic with the
//! chains that need them); deletions always go by netlink.
//!
//! The `nft` script is written only in forms `nft` applies without first
//! listing the kernel's chains and sets (`flush chain`, `add chain X {
//! rules }`, `add set`, `add map M { type …; elements = { … } }`), except
//! deletions of verdict-map elements (a Service added, removed or
//! changing its ports), which make it list the table once; that
//! transaction also deletes the chains, sets and maps earlier changes
//! left unused (the garbage). Partial: Services with `sessionAffinity:
//! ClientIP` keep per-endpoint chains, so their endpoint changes go
//! through `nft` (flat for `nft`, but the kernel re-validates the table).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::model::{is_proxied, service_ports};
use super::drift::{GenerationProbe, Ownership};
use super::elements::{set_element, ElementError, ElementOp, ElementWriter};
use super::model::Endpoint;
use super::rules::{
    element_holder, is_data_holder, map_elements, map_elements_text, service_rules, skeleton,
    ElementKey, NodeView, ServiceRules, ENDPOINT_MAP_DECL, TABLE,
};
use crate::hostnet::nft::{Firewall, NftError};
use crate::svccache::{Mark, ObjKey, Snapshot};

/// `(namespace, name)` of a Service.
pub type ServiceKey = ObjKey;

/// The objects a Service's rules were computed from.
#[derive(Clone)]
struct Inputs {
    service: Arc<Service>,
    slices: Vec<Arc<EndpointSlice>>,
}

impl Inputs {
    fn same(&self, service: &Arc<Service>, slices: &[Arc<EndpointSlice>]) -> bool {
        Arc::ptr_eq(&self.service, service)
            && self.slices.len() == slices.len()
            && self
                .slices
                .iter()
                .zip(slices)
                .all(|(a, b)| Arc::ptr_eq(a, b))
    }
}

/// What one sync did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncStats {
    pub full: bool,
    /// Services whose objects were compared (all of them on a full walk,
    /// only those the change log names otherwise).
    pub services_looked_at: usize,
    pub services_changed: usize,
    /// Bytes of `nft` script (0: `nft` did not run).
    pub script_bytes: usize,
    /// Element changes written over netlink.
    pub element_ops: usize,
}

impl SyncStats {
    /// Whether the sync changed nothing.
    pub fn unchanged(&self) -> bool {
        self.script_bytes == 0 && self.element_ops == 0
    }
}

/// Why a sync failed; the next sync replaces the whole table.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Nft(#[from] NftError),
    #[error(transparent)]
    Elements(#[from] ElementError),
}

/// Applies snapshots to the table through a [`Firewall`].
pub struct Syncer {
    firewall: Arc<dyn Firewall>,
    elements: Arc<dyn ElementWriter>,
    node: NodeView,
    /// `false` until a full replace succeeds, and after a failed
    /// transaction: the next sync replaces the whole table.
    installed: bool,
    inputs: BTreeMap<ServiceKey, Inputs>,
    applied: BTreeMap<ServiceKey, ServiceRules>,
    /// Element → its claimants in order, each with its value.
    claims: HashMap<ElementKey, Vec<(ServiceKey, String)>>,
    /// Chains and sets no rule or element refers to any more, emptied
    /// but not yet deleted (deleting them needs a listing of the table).
    garbage_chains: BTreeSet<String>,
    garbage_sets: BTreeSet<String>,
    /// Endpoint maps no rule uses any more, with what they still hold.
    garbage_maps: BTreeMap<String, Vec<Endpoint>>,
    /// The snapshot the table was last brought to: the next sync asks the
    /// next snapshot which Services changed since (`None`: walk them all).
    synced: Option<Mark>,
    /// Reads nf_tables' generation, for [`Syncer::check`] (`None`: no
    /// drift detection).
    probe: Option<Arc<dyn GenerationProbe>>,
    /// Whether the kernel's generation is the one our last write left.
    ownership: Ownership,
}

/// Emptied chains and sets wait for deletion until a transaction deletes
/// elements anyway, or until this many wait.
pub const GARBAGE_LIMIT: usize = 512;

impl Syncer {
    pub fn new(
        firewall: Arc<dyn Firewall>,
        elements: Arc<dyn ElementWriter>,
        node: NodeView,
    ) -> Self {
        Syncer {
            firewall,
            elements,
            node,
            installed: false,
            inputs: BTreeMap::new(),
            applied: BTreeMap::new(),
            claims: HashMap::new(),
            garbage_chains: BTreeSet::new(),
            garbage_sets: BTreeSet::new(),
            garbage_maps: BTreeMap::new(),
            synced: None,
            probe: None,
            ownership: Ownership::default(),
        }
    }

    /// Lets [`Syncer::check`] notice writes by others (see [`super::drift`]).
    /// Each write of ours then reads the generation before and after.
    pub fn with_probe(mut self, probe: Arc<dyn GenerationProbe>) -> Self {
        self.probe = Some(probe);
        self
    }

    async fn generation(&self) -> Option<u32> {
        match &self.probe {
            Some(p) => p.generation().await.ok(),
            None => None,
        }
    }

    /// The periodic resync: one read of nf_tables' generation; when it is
    /// the one our last write left, nothing happened in the namespace and
    /// nothing is written (`Ok(None)`). Otherwise someone else committed
    /// (perhaps to our table) and the table is replaced from `snap`.
    /// Without a probe, or before the first replace, it does nothing.
    pub async fn check(&mut self, snap: &Snapshot) -> Result<Option<SyncStats>, SyncError> {
        let Some(probe) = self.probe.clone() else {
            return Ok(None);
        };
        if !self.installed {
            return Ok(None);
        }
        if self.ownership.unchanged(probe.generation().await?) {
            return Ok(None);
        }
        self.installed = false;
        self.resync(snap).await.map(Some)
    }

    /// A new view of the node (its IPs changed): the next sync replaces
    /// the table.
    pub fn set_node(&mut self, node: NodeView) {
        if node != self.node {
            self.node = node;
            self.installed = false;
        }
    }

    /// Brings the table to `snap`: everything at first, then the change.
    ///
    /// Which Services to look at comes from the snapshot's change log
    /// (only those named since the last synced snapshot: the cost is
    /// proportional to the change); when the log cannot tell (another
    /// cache, a relist, too far behind) every Service is walked beside
    /// what was programmed. Both give the same result.
    pub async fn sync(&mut self, snap: &Snapshot) -> Result<SyncStats, SyncError> {
        let result = self.sync_inner(snap).await;
        self.synced = result.as_ref().ok().map(|_| snap.mark());
        result
    }

    /// Like [`Syncer::sync`], but walks every Service whatever the change
    /// log says (the resync path).
    pub async fn resync(&mut self, snap: &Snapshot) -> Result<SyncStats, SyncError> {
        self.synced = None;
        self.sync(snap).await
    }

    async fn sync_inner(&mut self, snap: &Snapshot) -> Result<SyncStats, SyncError> {
        if !self.installed {
            return self.replace(snap).await;
        }
        let mut changed: BTreeMap<ServiceKey, ServiceRules> = BTreeMap::new();
        let mut new_inputs = Vec::new();
        let mut gone: Vec<ServiceKey> = Vec::new();
        let looked_at;
        match self.synced.and_then(|mark| snap.changed_since(mark)) {
            Some(keys) => {
                // Only the Services the log names: a look-up each.
                looked_at = keys.len();
                for key in &keys {
                    match snap.service(key) {
                        Some(svc) => self.consider(snap, key, svc, &mut changed, &mut new_inputs),
                        None if self.inputs.contains_key(key) => gone.push(key.clone()),
                        None => {}
                    }
                }
            }
            None => {
                // One ordered walk of the snapshot beside what was
                // programmed (both maps are sorted by key): a pointer
                // comparison per Service, no look-ups, no rule computation
                // for Services that did not change.
                looked_at = snap.services.len();
                let mut last = self.inputs.iter().peekable();
                for (key, svc) in &snap.services {
                    while let Some((k, _)) = last.next_if(|(k, _)| *k < key) {
                        gone.push(k.clone());
                    }
                    let before = last.next_if(|(k, _)| *k == key).map(|(_, i)| i);
                    if before.is_some_and(|i| i.same(svc, snap.slices(key))) {
                        continue;
                    }
                    self.consider(snap, key, svc, &mut changed, &mut new_inputs);
                }
                gone.extend(last.map(|(k, _)| k.clone()));
            }
        }
        for key in &gone {
            changed.insert(key.clone(), ServiceRules::default());
        }
        let (script, ops) = self.diff_script(&changed);
        let stats = SyncStats {
            full: false,
            services_looked_at: looked_at,
            services_changed: changed.len(),
            script_bytes: script.len(),
            element_ops: ops.len(),
        };
        let commits = u32::from(!script.is_empty()) + u32::from(!ops.is_empty());
        let before = if commits > 0 { self.generation().await } else { None };
        if !script.is_empty() {
            if let Err(e) = self.firewall.apply(&script).await {
                // Our view of the kernel is no longer trustworthy.
                self.installed = false;
                self.ownership.forget();
                return Err(e.into());
            }
        }
        if !ops.is_empty() {
            if let Err(e) = self.elements.apply(TABLE, &ops).await {
                self.installed = false;
                self.ownership.forget();
                return Err(e.into());
            }
        }
        if commits > 0 {
            let after = self.generation().await;
            self.ownership.after_change(before, after, commits);
        }
        for key in gone {
            self.inputs.remove(&key);
        }
        for (key, inputs) in new_inputs {
            self.inputs.insert(key, inputs);
        }
        for (key, rules) in changed {
            if rules == ServiceRules::default() {
                self.applied.remove(&key);
            } else {
                self.applied.insert(key, rules);
            }
        }
        Ok(stats)
    }

    /// Recomputes Service `key` unless its objects are the ones last
    /// programmed; collects its new inputs and, if they differ, its rules.
    fn consider(
        &self,
        snap: &Snapshot,
        key: &ServiceKey,
        svc: &Arc<Service>,
        changed: &mut BTreeMap<ServiceKey, ServiceRules>,
        new_inputs: &mut Vec<(ServiceKey, Inputs)>,
    ) {
        let slices = snap.slices(key);
        if self.inputs.get(key).is_some_and(|i| i.same(svc, slices)) {
            return;
        }
        let rules = self.rules_for(svc, slices);
        new_inputs.push((
            key.clone(),
            Inputs {
                service: svc.clone(),
                slices: slices.to_vec(),
            },
        ));
        if self.applied.get(key) != Some(&rules) {
            changed.insert(key.clone(), rules);
        }
    }

    fn rules_for(&self, svc: &Service, slices: &[Arc<EndpointSlice>]) -> ServiceRules {
        if !is_proxied(svc) {
            return ServiceRules::default();
        }
        service_rules(
            &service_ports(svc, slices, &self.node.node_name),
            &self.node,
        )
    }

    /// One transaction that declares, deletes and redefines the table:
    /// there is no moment without rules, whatever was there before.
    async fn replace(&mut self, snap: &Snapshot) -> Result<SyncStats, SyncError> {
        let mut inputs = BTreeMap::new();
        let mut applied = BTreeMap::new();
        let mut claims: HashMap<ElementKey, Vec<(ServiceKey, String)>> = HashMap::new();
        for (key, svc) in &snap.services {
            let slices = snap.slices(key);
            let rules = self.rules_for(svc, slices);
            for (el, value) in &rules.elements {
                claims
                    .entry(el.clone())
                    .or_default()
                    .push((key.clone(), value.clone()));
            }
            inputs.insert(
                key.clone(),
                Inputs {
                    service: svc.clone(),
                    slices: slices.to_vec(),
                },
            );
            if rules != ServiceRules::default() {
                applied.insert(key.clone(), rules);
            }
        }
        let mut s = format!(
            "table ip {TABLE}\ndelete table ip {TABLE}\ntable ip {TABLE} {{\n{}}}\n",
            skeleton(&self.node)
        );
        let all: Vec<&ServiceRules> = applied.values().collect();
        for rules in &all {
            for (name, decl) in &rules.sets {
                let _ = writeln!(s, "add set ip {TABLE} {name} {{ {decl} }}");
            }
            for (name, eps) in &rules.maps {
                declare_map(&mut s, name, Some(eps));
            }
            for name in rules.chains.keys() {
                let _ = writeln!(s, "add chain ip {TABLE} {name}");
            }
        }
        for rules in &all {
            for (name, chain) in &rules.chains {
                for rule in chain {
                    let _ = writeln!(s, "add rule ip {TABLE} {name} {rule}");
                }
            }
        }
        let mut adds: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
        let mut keys: Vec<&ElementKey> = claims.keys().collect();
        keys.sort();
        for el in keys {
            let (_, value) = &claims[el][0];
            adds.entry(el.0).or_default().push(element(&el.1, value));
        }
        write_elements(&mut s, "add", &adds);
        let stats = SyncStats {
            full: true,
            services_looked_at: snap.services.len(),
            services_changed: applied.len(),
            script_bytes: s.len(),
            element_ops: 0,
        };
        let before = self.generation().await;
        if let Err(e) = self.firewall.apply(&s).await {
            self.ownership.forget();
            return Err(e.into());
        }
        let after = self.generation().await;
        self.ownership.after_replace(before, after);
        self.inputs = inputs;
        self.applied = applied;
        self.claims = claims;
        self.garbage_chains.clear();
        self.garbage_sets.clear();
        self.garbage_maps.clear();
        self.installed = true;
        Ok(stats)
    }

    /// The `nft` script and the netlink element batch taking the `changed`
    /// Services from what was applied to their new rules (empty rules: the
    /// Service is gone). Updates the claims and the garbage; the caller
    /// commits both in that order or, on failure, forces a full replace
    /// (which also drops the garbage).
    ///
    /// The script is written in the forms `nft` applies without reading
    /// the table first (see the module docs): `flush chain`, `add chain X
    /// { rules }`, `add set`, and `add map M { type …; elements = … }`.
    /// Only deleting verdict-map elements makes `nft` list the table, so
    /// chains, sets and maps that go are emptied (or left unused) now and
    /// deleted in the next transaction that pays for a listing anyway (or
    /// once [`GARBAGE_LIMIT`] of them wait).
    fn diff_script(
        &mut self,
        changed: &BTreeMap<ServiceKey, ServiceRules>,
    ) -> (String, Vec<ElementOp>) {
        let empty = ServiceRules::default();
        let mut del_elements: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
        let mut add_elements: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
        let mut del_data: Vec<ElementOp> = Vec::new();
        let mut add_data: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
        let mut map_ops: Vec<ElementOp> = Vec::new();
        let mut flush = BTreeSet::new();
        let mut new_chains = BTreeSet::new();
        let mut fill: Vec<(&String, &Vec<String>)> = Vec::new();
        let mut gone_chains = BTreeSet::new();
        let mut sets: BTreeMap<String, String> = BTreeMap::new();
        let mut gone_sets = BTreeSet::new();
        // Endpoint maps to declare: `Some(elements)` for maps new to the
        // kernel, `None` for existing ones that rewritten rules name.
        let mut maps: BTreeMap<&String, Option<&Vec<Endpoint>>> = BTreeMap::new();
        for (key, new) in changed {
            let old = self.applied.get(key).unwrap_or(&empty);
            let filled_before = fill.len();
            for (name, rules) in &new.chains {
                match old.chains.get(name) {
                    Some(before) if before == rules => {}
                    Some(_) => {
                        flush.insert(name.clone());
                        fill.push((name, rules));
                    }
                    None => {
                        // An emptied chain waiting for deletion is reused.
                        if self.garbage_chains.remove(name) {
                            flush.insert(name.clone());
                        }
                        new_chains.insert(name.clone());
                        fill.push((name, rules));
                    }
                }
            }
            for name in old.chains.keys().filter(|n| !new.chains.contains_key(*n)) {
                flush.insert(name.clone());
                gone_chains.insert(name.clone());
            }
            // Every set the new rules name is declared again: the rules
            // are checked against sets `nft` knows, and it lists none.
            for (name, decl) in &new.sets {
                self.garbage_sets.remove(name);
                sets.insert(name.clone(), decl.clone());
            }
            for name in old.sets.keys().filter(|n| !new.sets.contains_key(*n)) {
                gone_sets.insert(name.clone());
            }
            let rewrites_rules = fill.len() > filled_before;
            for (name, eps) in &new.maps {
                let before = old
                    .maps
                    .get(name)
                    .cloned()
                    .or_else(|| self.garbage_maps.remove(name));
                match before {
                    None => {
                        maps.insert(name, Some(eps));
                    }
                    Some(before) => {
                        if &before != eps {
                            map_ops.extend(map_diff(name, &before, eps));
                        }
                        if rewrites_rules {
                            maps.insert(name, None);
                        }
                    }
                }
            }
            for (name, eps) in &old.maps {
                if !new.maps.contains_key(name) {
                    self.garbage_maps.insert(name.clone(), eps.clone());
                }
            }
            let touched: BTreeSet<&ElementKey> =
                old.elements.keys().chain(new.elements.keys()).collect();
            for el in touched {
                let before = self.active(el);
                let claimants = self.claims.entry(el.clone()).or_default();
                let pos = claimants.iter().position(|(k, _)| k == key);
                match (pos, new.elements.get(el)) {
                    (Some(i), Some(v)) => claimants[i].1 = v.clone(),
                    (Some(i), None) => {
                        claimants.remove(i);
                    }
                    (None, Some(v)) => claimants.push((key.clone(), v.clone())),
                    (None, None) => {}
                }
                if claimants.is_empty() {
                    self.claims.remove(el);
                }
                let after = self.active(el);
                if before == after {
                    continue;
                }
                if is_data_holder(el.0) {
                    if before.is_some() {
                        del_data.push(ElementOp {
                            set: el.0.to_string(),
                            delete: true,
                            element: set_element(&el.1),
                        });
                    }
                    if after.is_some() {
                        add_data.entry(el.0).or_default().push(el.1.clone());
                    }
                    continue;
                }
                if before.is_some() {
                    del_elements.entry(el.0).or_default().push(el.1.clone());
                }
                if let Some(v) = after {
                    add_elements
                        .entry(el.0)
                        .or_default()
                        .push(element(&el.1, &v));
                }
            }
        }
        self.garbage_chains.extend(gone_chains);
        self.garbage_sets.extend(gone_sets);
        let collect = !del_elements.is_empty()
            || self.garbage_chains.len() + self.garbage_sets.len() + self.garbage_maps.len()
                > GARBAGE_LIMIT;
        let mut s = String::new();
        write_elements(&mut s, "delete", &del_elements);
        for name in &flush {
            let _ = writeln!(s, "flush chain ip {TABLE} {name}");
        }
        for (name, decl) in &sets {
            let _ = writeln!(s, "add set ip {TABLE} {name} {{ {decl} }}");
        }
        for (name, eps) in &maps {
            declare_map(&mut s, name, *eps);
        }
        // Declared empty first, so rules may jump to any of them.
        for name in &new_chains {
            let _ = writeln!(s, "add chain ip {TABLE} {name}");
        }
        for (name, rules) in fill {
            if !rules.is_empty() {
                let _ = writeln!(s, "add chain ip {TABLE} {name} {{");
                for rule in rules {
                    let _ = writeln!(s, "\t{rule}");
                }
                s.push_str("}\n");
            }
        }
        if collect {
            for name in std::mem::take(&mut self.garbage_chains) {
                let _ = writeln!(s, "delete chain ip {TABLE} {name}");
            }
            for name in std::mem::take(&mut self.garbage_sets) {
                let _ = writeln!(s, "delete set ip {TABLE} {name}");
            }
            for name in std::mem::take(&mut self.garbage_maps).into_keys() {
                let _ = writeln!(s, "delete map ip {TABLE} {name}");
            }
        }
        write_holders(&mut s, &add_elements);
        // Data elements that come ride along when `nft` runs anyway (atomic
        // with the chains that need them); otherwise netlink adds them.
        // Deletions first, then additions.
        let (map_adds, map_dels): (Vec<ElementOp>, Vec<ElementOp>) =
            map_ops.into_iter().partition(|op| !op.delete);
        let mut ops = del_data;
        ops.extend(map_dels);
        if s.is_empty() {
            for (holder, keys) in &add_data {
                ops.extend(keys.iter().map(|k| ElementOp {
                    set: holder.to_string(),
                    delete: false,
                    element: set_element(k),
                }));
            }
        } else {
            write_holders(&mut s, &add_data);
        }
        ops.extend(map_adds);
        (s, ops)
    }

    fn active(&self, el: &ElementKey) -> Option<String> {
        self.claims
            .get(el)
            .and_then(|c| c.first())
            .map(|(_, v)| v.clone())
    }
}

fn element(key: &str, value: &str) -> String {
    if value.is_empty() {
        key.to_string()
    } else {
        format!("{key} : {value}")
    }
}

/// `add map|set X { type …; elements = { … }; }`: adds elements to the
/// fixed holders without `nft` listing the table.
fn write_holders(s: &mut String, by_holder: &BTreeMap<&'static str, Vec<String>>) {
    for (holder, elements) in by_holder {
        let Some((kind, ty)) = element_holder(holder) else {
            continue;
        };
        let _ = writeln!(
            s,
            "add {kind} ip {TABLE} {holder} {{ type {ty}; elements = {{ {} }}; }}",
            elements.join(", ")
        );
    }
}

/// Declares an endpoint map, with its elements when it is new.
fn declare_map(s: &mut String, name: &str, eps: Option<&Vec<Endpoint>>) {
    match eps {
        Some(eps) if !eps.is_empty() => {
            let _ = writeln!(
                s,
                "add map ip {TABLE} {name} {{ {ENDPOINT_MAP_DECL} elements = {{ {} }}; }}",
                map_elements_text(eps)
            );
        }
        _ => {
            let _ = writeln!(s, "add map ip {TABLE} {name} {{ {ENDPOINT_MAP_DECL} }}");
        }
    }
}

/// The element changes taking endpoint map `name` from `old` to `new`:
/// every old element, then every new one, each range as start then end,
/// in ascending order, as `nft` writes them. (The kernel's interval tree
/// refuses some other orders: deleting a range's start and then the end
/// element of the previous range, which shares its key, fails with
/// ENOENT on 6.18.) The map is small (one range per endpoint).
fn map_diff(name: &str, old: &[Endpoint], new: &[Endpoint]) -> Vec<ElementOp> {
    let op = |delete: bool, element: super::elements::Element| ElementOp {
        set: name.to_string(),
        delete,
        element,
    };
    let mut ops: Vec<ElementOp> = map_elements(old).into_iter().map(|e| op(true, e)).collect();
    ops.extend(map_elements(new).into_iter().map(|e| op(false, e)));
    ops
}

fn write_elements(s: &mut String, verb: &str, by_map: &BTreeMap<&'static str, Vec<String>>) {
    for (map, elements) in by_map {
        if !elements.is_empty() {
            let _ = writeln!(
                s,
                "{verb} element ip {TABLE} {map} {{ {} }}",
                elements.join(", ")
            );
        }
    }
}

/// The script that removes the table (nothing if it is absent).
pub fn uninstall_script() -> String {
    format!("table ip {TABLE}\ndelete table ip {TABLE}\n")
}
