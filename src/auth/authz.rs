//! The authorizer chain `rk3s server` uses, in kube-apiserver's order:
//! the `system:masters` group may do anything, then the Node authorizer
//! (for kubelets), then RBAC. The first that allows wins; none: 403.

use std::sync::Arc;

use crate::apiserver::auth::{Attributes, Authorizer, UserInfo};
use crate::store::Store;

use super::node::{node_name, NodeAuthorizer};
use super::rbac::rules::PolicyRule;
use super::rbac::RbacAuthorizer;

pub const MASTERS: &str = "system:masters";

pub struct ClusterAuthorizer {
    rbac: RbacAuthorizer,
    node: NodeAuthorizer,
}

impl ClusterAuthorizer {
    pub fn new(store: Arc<dyn Store>) -> Self {
        ClusterAuthorizer {
            rbac: RbacAuthorizer::new(store.clone()),
            node: NodeAuthorizer::new(store),
        }
    }
}

impl ClusterAuthorizer {
    /// The RBAC part (its index resolves role references).
    pub fn rbac(&self) -> &RbacAuthorizer {
        &self.rbac
    }
}

impl Authorizer for ClusterAuthorizer {
    fn authorize(&self, user: &UserInfo, attrs: &Attributes<'_>) -> bool {
        if user.groups.iter().any(|g| g == MASTERS) {
            return true;
        }
        if let Some(node) = node_name(user) {
            if self.node.allows(node, attrs) {
                return true;
            }
        }
        self.rbac.allows(user, attrs)
    }

    fn rules_in(&self, user: &UserInfo, namespace: &str) -> Option<(Vec<PolicyRule>, bool)> {
        let rules = self.rbac.index().rules_in(user, namespace);
        // The Node authorizer decides without rules, so a node's list is incomplete.
        Some((rules, node_name(user).is_some()))
    }
}
