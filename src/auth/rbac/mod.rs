//! The RBAC authorizer: Roles, ClusterRoles (with `aggregationRule`),
//! RoleBindings and ClusterRoleBindings read from the store.
//!
//! Every binding is resolved once into an index keyed by subject (user name
//! or group; a ServiceAccount subject becomes its
//! `system:serviceaccount:<ns>:<name>` user), each entry holding the rules it
//! grants and the namespace they apply in (`None` for ClusterRoleBindings).
//! A request then costs one lookup per user name and group and a scan of the
//! few rules found there.
//!
//! The index is rebuilt only when an RBAC object changed: it keeps a store
//! watch on each of the four RBAC prefixes and, on each request, drains them
//! without blocking (`try_recv`); any event, or a watch the store closed
//! (a slow reader), marks the index stale and the next request rebuilds it
//! from fresh lists and fresh watches. So it needs no background task, and
//! a request made right after an RBAC write always sees it.
//!
//! Aggregated ClusterRoles get the union of the rules of every ClusterRole
//! their `clusterRoleSelectors` match, transitively (as kube's aggregation
//! controller computes them); the index always uses the union. The stored
//! objects' `rules` are rewritten to it at each start (`bootstrap`).
//! PARTIAL: between starts, a newly labelled ClusterRole is effective at
//! once but the aggregated role's stored `rules` show it only after the
//! next start (there is no aggregation controller).

pub mod rules;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::mpsc::error::TryRecvError;

use crate::apiserver::auth::{Attributes, UserInfo};
use crate::store::{ListOptions, Store, WatchReceiver};
use rules::PolicyRule;

pub const CLUSTER_ROLES: &str = "/registry/clusterroles.rbac.authorization.k8s.io/";
pub const CLUSTER_ROLE_BINDINGS: &str = "/registry/clusterrolebindings.rbac.authorization.k8s.io/";
pub const ROLES: &str = "/registry/roles.rbac.authorization.k8s.io/";
pub const ROLE_BINDINGS: &str = "/registry/rolebindings.rbac.authorization.k8s.io/";
const PREFIXES: [&str; 4] = [CLUSTER_ROLES, CLUSTER_ROLE_BINDINGS, ROLES, ROLE_BINDINGS];

/// Rules granted to a subject by one binding.
#[derive(Clone, Debug)]
pub struct Grant {
    /// Where the rules apply: `None` everywhere (ClusterRoleBinding), or one namespace.
    pub namespace: Option<String>,
    pub rules: Arc<Vec<PolicyRule>>,
}

/// Bindings resolved by subject.
#[derive(Debug, Default)]
pub struct RbacIndex {
    by_user: HashMap<String, Vec<Grant>>,
    by_group: HashMap<String, Vec<Grant>>,
    /// Effective rules of each ClusterRole (aggregation applied).
    cluster_roles: HashMap<String, Arc<Vec<PolicyRule>>>,
    /// Rules of each Role, by (namespace, name).
    roles: HashMap<(String, String), Arc<Vec<PolicyRule>>>,
}

/// The label selector of an `aggregationRule.clusterRoleSelectors` entry
/// (an empty one selects every ClusterRole, as kube's aggregation controller
/// converts it with `LabelSelectorAsSelector`).
fn selector_matches(sel: &Value, labels: Option<&serde_json::Map<String, Value>>) -> bool {
    crate::k8s::selector::json_matches(sel, labels)
}

/// The effective rules of every ClusterRole, aggregation applied.
pub fn resolve_cluster_roles(
    roles: &BTreeMap<String, Value>,
) -> HashMap<String, Arc<Vec<PolicyRule>>> {
    fn effective(
        name: &str,
        roles: &BTreeMap<String, Value>,
        done: &mut HashMap<String, Arc<Vec<PolicyRule>>>,
        visiting: &mut HashSet<String>,
    ) -> Arc<Vec<PolicyRule>> {
        if let Some(r) = done.get(name) {
            return r.clone();
        }
        let Some(role) = roles.get(name) else {
            return Arc::new(Vec::new());
        };
        let selectors = role
            .pointer("/aggregationRule/clusterRoleSelectors")
            .and_then(Value::as_array);
        let rules = match selectors {
            None => PolicyRule::list_from(role),
            Some(sels) => {
                // A cycle contributes the stored rules only.
                if !visiting.insert(name.to_string()) {
                    return Arc::new(PolicyRule::list_from(role));
                }
                let mut out: Vec<PolicyRule> = Vec::new();
                for (other, obj) in roles {
                    if other == name {
                        continue;
                    }
                    let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
                    if sels.iter().any(|s| selector_matches(s, labels)) {
                        for r in effective(other, roles, done, visiting).iter() {
                            if !out.contains(r) {
                                out.push(r.clone());
                            }
                        }
                    }
                }
                visiting.remove(name);
                out
            }
        };
        let rules = Arc::new(rules);
        done.insert(name.to_string(), rules.clone());
        rules
    }
    let mut done = HashMap::new();
    for name in roles.keys() {
        effective(name, roles, &mut done, &mut HashSet::new());
    }
    done
}

impl RbacIndex {
    /// Builds the index from the four RBAC collections (stored JSON objects).
    pub fn build(
        cluster_roles: &[Value],
        cluster_role_bindings: &[Value],
        roles: &[Value],
        role_bindings: &[Value],
    ) -> RbacIndex {
        let name_of = |v: &Value| {
            v.pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let ns_of = |v: &Value| {
            v.pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let by_name: BTreeMap<String, Value> = cluster_roles
            .iter()
            .map(|r| (name_of(r), r.clone()))
            .collect();
        let cluster = resolve_cluster_roles(&by_name);
        let namespaced: HashMap<(String, String), Arc<Vec<PolicyRule>>> = roles
            .iter()
            .map(|r| ((ns_of(r), name_of(r)), Arc::new(PolicyRule::list_from(r))))
            .collect();
        let mut index = RbacIndex {
            cluster_roles: cluster.clone(),
            roles: namespaced.clone(),
            ..Default::default()
        };
        let bindings = cluster_role_bindings
            .iter()
            .map(|b| (b, None))
            .chain(role_bindings.iter().map(|b| (b, Some(ns_of(b)))));
        for (binding, namespace) in bindings {
            let kind = binding.pointer("/roleRef/kind").and_then(Value::as_str);
            let role = binding
                .pointer("/roleRef/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let rules = match (kind, &namespace) {
                (Some("ClusterRole"), _) => cluster.get(role).cloned(),
                (Some("Role"), Some(ns)) => {
                    namespaced.get(&(ns.clone(), role.to_string())).cloned()
                }
                _ => None,
            };
            let Some(rules) = rules else { continue };
            let grant = Grant {
                namespace: namespace.clone(),
                rules,
            };
            for s in binding
                .get("subjects")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let name = s.get("name").and_then(Value::as_str).unwrap_or_default();
                match s.get("kind").and_then(Value::as_str) {
                    Some("User") => index
                        .by_user
                        .entry(name.into())
                        .or_default()
                        .push(grant.clone()),
                    Some("Group") => index
                        .by_group
                        .entry(name.into())
                        .or_default()
                        .push(grant.clone()),
                    Some("ServiceAccount") => {
                        let sa_ns = s
                            .get("namespace")
                            .and_then(Value::as_str)
                            .filter(|n| !n.is_empty())
                            .map(str::to_string)
                            .or_else(|| namespace.clone())
                            .unwrap_or_default();
                        index
                            .by_user
                            .entry(format!("system:serviceaccount:{sa_ns}:{name}"))
                            .or_default()
                            .push(grant.clone());
                    }
                    _ => {}
                }
            }
        }
        index
    }

    /// The rules a `roleRef` names (`kind` Role in `namespace`, or
    /// ClusterRole); `None` if it does not exist.
    pub fn role_rules(
        &self,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Arc<Vec<PolicyRule>>> {
        match (kind, namespace) {
            ("ClusterRole", _) => self.cluster_roles.get(name).cloned(),
            ("Role", Some(ns)) => self.roles.get(&(ns.to_string(), name.to_string())).cloned(),
            _ => None,
        }
    }

    /// Every grant that applies to `user`.
    pub fn grants<'a>(&'a self, user: &'a UserInfo) -> impl Iterator<Item = &'a Grant> + 'a {
        self.by_user.get(&user.name).into_iter().flatten().chain(
            user.groups
                .iter()
                .filter_map(|g| self.by_group.get(g))
                .flatten(),
        )
    }

    /// Whether any rule bound to `user` allows the request.
    pub fn allows(&self, user: &UserInfo, a: &Attributes<'_>) -> bool {
        self.grants(user).any(|g| {
            let in_scope = match &g.namespace {
                None => true,
                Some(ns) => a.resource_request && a.namespace == Some(ns.as_str()),
            };
            in_scope && g.rules.iter().any(|r| r.allows(a))
        })
    }

    /// The rules `user` has in `namespace` (cluster-wide ones included), for
    /// SelfSubjectRulesReview.
    pub fn rules_in(&self, user: &UserInfo, namespace: &str) -> Vec<PolicyRule> {
        let mut out: Vec<PolicyRule> = Vec::new();
        for g in self.grants(user) {
            if g.namespace.as_deref().is_some_and(|n| n != namespace) {
                continue;
            }
            for r in g.rules.iter() {
                if !out.contains(r) {
                    out.push(r.clone());
                }
            }
        }
        out
    }
}

struct CacheState {
    index: Option<Arc<RbacIndex>>,
    watches: Vec<WatchReceiver>,
}

/// RBAC over the store, with the watch-invalidated index described above.
pub struct RbacAuthorizer {
    store: Arc<dyn Store>,
    state: Mutex<CacheState>,
}

impl RbacAuthorizer {
    pub fn new(store: Arc<dyn Store>) -> Self {
        RbacAuthorizer {
            store,
            state: Mutex::new(CacheState {
                index: None,
                watches: Vec::new(),
            }),
        }
    }

    /// The current index, rebuilt first if an RBAC object changed.
    pub fn index(&self) -> Arc<RbacIndex> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut stale = st.index.is_none();
        for w in st.watches.iter_mut() {
            loop {
                match w.try_recv() {
                    Ok(Ok(_)) => stale = true,
                    Ok(Err(_)) | Err(TryRecvError::Disconnected) => {
                        stale = true;
                        break;
                    }
                    Err(TryRecvError::Empty) => break,
                }
            }
        }
        if stale {
            match self.load() {
                Ok((index, watches)) => {
                    st.index = Some(Arc::new(index));
                    st.watches = watches;
                }
                Err(e) => {
                    // Keep what we had (or nothing) and try again next request.
                    tracing::warn!("failed to load RBAC objects: {e}");
                    st.watches.clear();
                    let index = st.index.take().unwrap_or_default();
                    return index;
                }
            }
        }
        st.index.clone().unwrap_or_default()
    }

    fn load(&self) -> Result<(RbacIndex, Vec<WatchReceiver>), crate::store::StoreError> {
        let mut lists: Vec<Vec<Value>> = Vec::new();
        let mut watches = Vec::new();
        for prefix in PREFIXES {
            let page = self.store.list(&ListOptions {
                prefix: prefix.into(),
                ..Default::default()
            })?;
            lists.push(
                page.records
                    .iter()
                    .filter_map(|r| serde_json::from_slice(&r.value).ok())
                    .collect(),
            );
            watches.push(self.store.watch(prefix, page.revision)?);
        }
        Ok((
            RbacIndex::build(&lists[0], &lists[1], &lists[2], &lists[3]),
            watches,
        ))
    }

    pub fn allows(&self, user: &UserInfo, a: &Attributes<'_>) -> bool {
        self.index().allows(user, a)
    }
}

#[cfg(test)]
mod tests;
