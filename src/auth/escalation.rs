//! RBAC escalation prevention, as kube-apiserver's RBAC storage enforces
//! it: nobody grants permissions they do not hold.
//!
//! - Creating or updating a Role or ClusterRole needs every permission in
//!   its rules (in the Role's namespace, or cluster-wide for a
//!   ClusterRole), or the `escalate` verb on it. An `aggregationRule`
//!   always needs `escalate` (it can pull in any rule).
//! - Creating or updating a RoleBinding or ClusterRoleBinding needs every
//!   permission of the referenced role (which must exist), or the `bind`
//!   verb on that role.
//!
//! Updates that leave `rules`, `aggregationRule`, `roleRef` and `subjects`
//! unchanged are not checked (the garbage collector edits metadata only).
//!
//! A rule is held when each of its (verb, group, resource, name) or
//! (verb, URL) combinations is authorized for the requester, wildcards
//! taken literally (so granting `*` needs `*`), as kube's `Covers`.

use std::sync::Arc;

use serde_json::Value;

use crate::apiserver::admission::{Admission, AdmissionRequest};
use crate::apiserver::auth::{Attributes, Authorizer, UserInfo};
use crate::apiserver::status::{ApiStatus, Target};

use super::authz::ClusterAuthorizer;
use super::rbac::rules::PolicyRule;

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

pub struct RbacEscalation {
    authorizer: Arc<ClusterAuthorizer>,
}

impl RbacEscalation {
    pub fn new(authorizer: Arc<ClusterAuthorizer>) -> Self {
        RbacEscalation { authorizer }
    }

    fn may(
        &self,
        user: &UserInfo,
        verb: &str,
        resource: &str,
        ns: Option<&str>,
        name: &str,
    ) -> bool {
        self.authorizer.authorize(
            user,
            &Attributes::resource(
                verb,
                RBAC_GROUP,
                resource,
                None,
                ns,
                Some(name).filter(|n| !n.is_empty()),
            ),
        )
    }

    /// The rules (of `rules`) `user` does not fully hold in `ns`.
    fn not_held(&self, user: &UserInfo, ns: Option<&str>, rules: &[PolicyRule]) -> Vec<PolicyRule> {
        rules
            .iter()
            .filter(|r| !self.holds(user, ns, r))
            .cloned()
            .collect()
    }

    fn holds(&self, user: &UserInfo, ns: Option<&str>, rule: &PolicyRule) -> bool {
        let check = |a: Attributes<'_>| self.authorizer.authorize(user, &a);
        for verb in &rule.verbs {
            for url in &rule.non_resource_urls {
                if !check(Attributes::non_resource(verb, url)) {
                    return false;
                }
            }
            for group in &rule.api_groups {
                for res in &rule.resources {
                    let (resource, sub) = match res.split_once('/') {
                        Some((r, s)) => (r, Some(s)),
                        None => (res.as_str(), None),
                    };
                    let names: Vec<Option<&str>> = if rule.resource_names.is_empty() {
                        vec![None]
                    } else {
                        rule.resource_names
                            .iter()
                            .map(|n| Some(n.as_str()))
                            .collect()
                    };
                    for name in names {
                        if !check(Attributes::resource(verb, group, resource, sub, ns, name)) {
                            return false;
                        }
                    }
                }
            }
        }
        true
    }
}

fn describe(rules: &[PolicyRule]) -> String {
    rules
        .iter()
        .map(|r| r.to_json().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

impl Admission for RbacEscalation {
    fn name(&self) -> &'static str {
        "RBACEscalation"
    }

    fn admit(
        &self,
        req: &AdmissionRequest<'_>,
        obj: &mut Value,
        _warnings: &mut Vec<String>,
    ) -> Result<(), ApiStatus> {
        if req.def.group != RBAC_GROUP {
            return Ok(());
        }
        // An update that leaves the granting fields alone (labels, owner
        // references, finalizers: what the garbage collector touches) grants
        // nothing new, as kube's IsOnlyMutatingGCFields.
        if let Some(old) = req.old {
            let same = |f: &str| old.get(f) == obj.get(f);
            if same("rules") && same("aggregationRule") && same("roleRef") && same("subjects") {
                return Ok(());
            }
        }
        let user = req.user;
        let plural = req.def.plural.as_str();
        let ns = req.namespace;
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or(req.name)
            .to_string();
        let forbid = |why: String| {
            ApiStatus::forbidden(
                Target {
                    group: RBAC_GROUP,
                    resource: plural,
                    name: &name,
                },
                &format!(
                    "user \"{}\" (groups={:?}) is attempting to grant RBAC permissions not currently held:\n{why}",
                    user.name, user.groups
                ),
            )
        };
        match plural {
            "roles" | "clusterroles" => {
                if self.may(user, "escalate", plural, ns, &name) {
                    return Ok(());
                }
                if obj.get("aggregationRule").is_some_and(|a| !a.is_null()) {
                    return Err(forbid(
                        "an aggregationRule (needs the escalate verb)".into(),
                    ));
                }
                let missing = self.not_held(user, ns, &PolicyRule::list_from(obj));
                if !missing.is_empty() {
                    return Err(forbid(describe(&missing)));
                }
            }
            "rolebindings" | "clusterrolebindings" => {
                let kind = obj
                    .pointer("/roleRef/kind")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let role = obj
                    .pointer("/roleRef/name")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let role_resource = if kind == "Role" {
                    "roles"
                } else {
                    "clusterroles"
                };
                let role_ns = if kind == "Role" { ns } else { None };
                // kube checks `bind` on the role in the binding's namespace.
                if self.may(user, "bind", role_resource, ns, role) {
                    return Ok(());
                }
                let Some(rules) = self
                    .authorizer
                    .rbac()
                    .index()
                    .role_rules(kind, role_ns, role)
                else {
                    return Err(forbid(format!(
                        "{kind} \"{role}\" (not found, so its rules cannot be checked)"
                    )));
                };
                let missing = self.not_held(user, ns, &rules);
                if !missing.is_empty() {
                    return Err(forbid(describe(&missing)));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::admission::FieldValidation;
    use crate::apiserver::testing::MemoryStore;
    use crate::store::Store;
    use serde_json::json;

    fn setup() -> RbacEscalation {
        let store = Arc::new(MemoryStore::new());
        crate::auth::bootstrap::ensure_default_rbac(
            store.as_ref(),
            &crate::apiserver::builtin::builtin_registry(),
        )
        .unwrap();
        // bob administers namespace dev.
        let rb = json!({"metadata": {"name": "bob", "namespace": "dev"},
            "roleRef": {"kind": "ClusterRole", "name": "admin"},
            "subjects": [{"kind": "User", "name": "bob"}]});
        store
            .create(
                "/registry/rolebindings.rbac.authorization.k8s.io/dev/bob",
                rb.to_string().as_bytes(),
            )
            .unwrap();
        RbacEscalation::new(Arc::new(ClusterAuthorizer::new(store)))
    }

    fn admit(
        e: &RbacEscalation,
        plural: &str,
        ns: Option<&str>,
        mut obj: Value,
    ) -> Result<(), u16> {
        let reg = crate::apiserver::builtin::builtin_registry();
        let def = reg.lookup(RBAC_GROUP, "v1", plural).unwrap();
        let bob = UserInfo {
            name: "bob".into(),
            groups: vec!["system:authenticated".into()],
            ..Default::default()
        };
        let req = AdmissionRequest {
            field_validation: FieldValidation::Warn,
            ..AdmissionRequest::for_test(&def, ns, "", None, &bob)
        };
        e.admit(&req, &mut obj, &mut Vec::new()).map_err(|s| s.code)
    }

    #[test]
    fn roles_within_held_rights_only() {
        let e = setup();
        let role = |rules: Value| json!({"metadata": {"name": "r"}, "rules": rules});
        let pods = json!([{"verbs": ["get", "delete"], "apiGroups": [""], "resources": ["pods"]}]);
        assert_eq!(admit(&e, "roles", Some("dev"), role(pods.clone())), Ok(()));
        // Not in another namespace, not cluster-wide, not wildcards.
        assert_eq!(
            admit(&e, "roles", Some("prod"), role(pods.clone())),
            Err(403)
        );
        assert_eq!(admit(&e, "clusterroles", None, role(pods)), Err(403));
        let all = json!([{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]);
        assert_eq!(admit(&e, "roles", Some("dev"), role(all)), Err(403));
        let nodes = json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["nodes"]}]);
        assert_eq!(admit(&e, "roles", Some("dev"), role(nodes)), Err(403));
    }

    #[test]
    fn bindings_to_held_roles_only() {
        let e = setup();
        let binding = |kind: &str, role: &str| {
            json!({"metadata": {"name": "b"}, "roleRef": {"kind": kind, "name": role},
                "subjects": [{"kind": "User", "name": "carol"}]})
        };
        assert_eq!(
            admit(
                &e,
                "rolebindings",
                Some("dev"),
                binding("ClusterRole", "view")
            ),
            Ok(())
        );
        assert_eq!(
            admit(
                &e,
                "rolebindings",
                Some("dev"),
                binding("ClusterRole", "edit")
            ),
            Ok(())
        );
        assert_eq!(
            admit(
                &e,
                "rolebindings",
                Some("dev"),
                binding("ClusterRole", "cluster-admin")
            ),
            Err(403)
        );
        assert_eq!(
            admit(
                &e,
                "rolebindings",
                Some("prod"),
                binding("ClusterRole", "view")
            ),
            Err(403)
        );
        assert_eq!(
            admit(
                &e,
                "clusterrolebindings",
                None,
                binding("ClusterRole", "view")
            ),
            Err(403)
        );
        assert_eq!(
            admit(&e, "rolebindings", Some("dev"), binding("Role", "missing")),
            Err(403)
        );
    }
}
