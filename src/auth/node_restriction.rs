//! NodeRestriction admission: what the Node authorizer cannot see because
//! it lies in the body. A kubelet (`system:node:<name>`) may create or
//! update only the Node, node Lease and CSINode named after itself, and may
//! not set, change or remove labels under `node-restriction.kubernetes.io/`
//! on its Node (those are for admins to steer workloads, so a compromised
//! node must not claim them).
//!
//! PARTIAL: kube's other NodeRestriction checks (mirror pods, taints on
//! self-registration, pod status of other nodes' pods, which the Node
//! authorizer already refuses) are not here.

use serde_json::Value;

use crate::apiserver::admission::{Admission, AdmissionRequest};
use crate::apiserver::status::{ApiStatus, Target};

use super::node::node_name;

const RESTRICTED_LABELS: &str = "node-restriction.kubernetes.io/";
const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

pub struct NodeRestriction;

fn restricted_labels(obj: Option<&Value>) -> Vec<(String, Value)> {
    obj.and_then(|o| o.pointer("/metadata/labels"))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter(|(k, _)| k.starts_with(RESTRICTED_LABELS))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

impl Admission for NodeRestriction {
    fn name(&self) -> &'static str {
        "NodeRestriction"
    }

    fn admit(
        &self,
        req: &AdmissionRequest<'_>,
        obj: &mut Value,
        _warnings: &mut Vec<String>,
    ) -> Result<(), ApiStatus> {
        let Some(node) = node_name(req.user) else {
            return Ok(());
        };
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or(req.name)
            .to_string();
        let deny = |what: &str| {
            ApiStatus::forbidden(
                Target {
                    group: &req.def.group,
                    resource: &req.def.plural,
                    name: &name,
                },
                &format!("node \"{node}\" is not allowed to modify {what}"),
            )
        };
        match (req.def.group.as_str(), req.def.plural.as_str()) {
            ("", "nodes") => {
                if name != node {
                    return Err(deny(&format!("node \"{name}\"")));
                }
                if restricted_labels(req.old) != restricted_labels(Some(obj)) {
                    return Err(deny(&format!("labels under {RESTRICTED_LABELS}")));
                }
            }
            ("coordination.k8s.io", "leases")
                if req.namespace == Some(NODE_LEASE_NAMESPACE) && name != node =>
            {
                return Err(deny(&format!("node lease \"{name}\"")));
            }
            ("storage.k8s.io", "csinodes") if name != node => {
                return Err(deny(&format!("CSINode \"{name}\"")));
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
    use crate::apiserver::auth::UserInfo;
    use serde_json::json;

    fn check(
        user: &str,
        plural: &str,
        ns: Option<&str>,
        old: Option<&Value>,
        mut obj: Value,
    ) -> Result<(), u16> {
        let reg = crate::apiserver::builtin::builtin_registry();
        let group = if plural == "leases" {
            "coordination.k8s.io"
        } else {
            ""
        };
        let def = reg.lookup(group, "v1", plural).unwrap();
        let user = UserInfo {
            name: user.into(),
            groups: vec!["system:nodes".into()],
            ..Default::default()
        };
        let req = AdmissionRequest {
            field_validation: FieldValidation::Warn,
            ..AdmissionRequest::for_test(&def, ns, "", old, &user)
        };
        NodeRestriction
            .admit(&req, &mut obj, &mut Vec::new())
            .map_err(|e| e.code)
    }

    #[test]
    fn own_objects_only() {
        let node = |n: &str| json!({"metadata": {"name": n}});
        assert_eq!(
            check("system:node:a", "nodes", None, None, node("a")),
            Ok(())
        );
        assert_eq!(
            check("system:node:a", "nodes", None, None, node("b")),
            Err(403)
        );
        assert_eq!(
            check(
                "system:node:a",
                "leases",
                Some("kube-node-lease"),
                None,
                node("b")
            ),
            Err(403)
        );
        assert_eq!(
            check(
                "system:node:a",
                "leases",
                Some("kube-node-lease"),
                None,
                node("a")
            ),
            Ok(())
        );
        // Not a node: not this plug-in's business.
        assert_eq!(check("bob", "nodes", None, None, node("b")), Ok(()));
    }

    #[test]
    fn restricted_labels_stay() {
        let old = json!({"metadata": {"name": "a", "labels": {"node-restriction.kubernetes.io/pool": "gpu"}}});
        let same = json!({"metadata": {"name": "a", "labels": {"node-restriction.kubernetes.io/pool": "gpu", "x": "y"}}});
        let changed = json!({"metadata": {"name": "a", "labels": {"node-restriction.kubernetes.io/pool": "cpu"}}});
        let removed = json!({"metadata": {"name": "a"}});
        assert_eq!(
            check("system:node:a", "nodes", None, Some(&old), same),
            Ok(())
        );
        assert_eq!(
            check("system:node:a", "nodes", None, Some(&old), changed),
            Err(403)
        );
        assert_eq!(
            check("system:node:a", "nodes", None, Some(&old), removed),
            Err(403)
        );
    }
}
