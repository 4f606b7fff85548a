//! Which nodes a DaemonSet's pods belong on, and how a pod is pinned to its
//! node: the template's `nodeSelector` and required node affinity must match
//! and every NoSchedule/NoExecute taint must be tolerated, counting the
//! tolerations kube adds to every daemon pod.

use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodTemplateSpec, Toleration,
};
use kube::ResourceExt;

use crate::k8s::scheduling::{requirement_matches, tolerates};

/// The tolerations kube adds to every daemon pod.
pub fn default_tolerations(host_network: bool) -> Vec<Toleration> {
    let t = |key: &str, effect: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    };
    let mut v = vec![
        t("node.kubernetes.io/not-ready", "NoExecute"),
        t("node.kubernetes.io/unreachable", "NoExecute"),
        t("node.kubernetes.io/disk-pressure", "NoSchedule"),
        t("node.kubernetes.io/memory-pressure", "NoSchedule"),
        t("node.kubernetes.io/pid-pressure", "NoSchedule"),
        t("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if host_network {
        v.push(t("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    v
}

fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or(&[]);
    let fields = term.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let labels = node.labels();
    let name = node.name_any();
    exprs
        .iter()
        .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields
            .iter()
            .all(|r| r.key == "metadata.name" && requirement_matches(r, Some(name.as_str())))
}

/// Whether a daemon pod from `template` should run on `node`.
pub fn should_run(node: &Node, template: &PodTemplateSpec) -> bool {
    let spec = template.spec.clone().unwrap_or_default();
    let labels = node.labels();
    if spec
        .node_selector
        .iter()
        .flatten()
        .any(|(k, v)| labels.get(k) != Some(v))
    {
        return false;
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    if let Some(req) = required {
        if !req
            .node_selector_terms
            .iter()
            .any(|t| term_matches(t, node))
        {
            return false;
        }
    }
    let mut tolerations = spec.tolerations.clone().unwrap_or_default();
    tolerations.extend(default_tolerations(spec.host_network.unwrap_or(false)));
    node.spec
        .iter()
        .flat_map(|s| s.taints.iter().flatten())
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|taint| tolerations.iter().any(|t| tolerates(t, taint)))
}

/// The node a daemon pod is for: where it is bound, or its matchFields target.
pub fn target_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = &spec.node_name {
        return Some(n.clone());
    }
    let req = spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?;
    req.node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find_map(|r| {
            (r.key == "metadata.name" && r.operator == "In")
                .then(|| r.values.as_ref()?.first().cloned())
                .flatten()
        })
}

/// Pins a pod to a node the way kube's DaemonSet controller does.
pub fn pin_to_node(template: &mut PodTemplateSpec, node: &str) {
    let spec = template.spec.get_or_insert_with(Default::default);
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let na = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    na.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec![node.into()]),
            }]),
        }],
    });
    let mut tolerations = spec.tolerations.clone().unwrap_or_default();
    for t in default_tolerations(spec.host_network.unwrap_or(false)) {
        if !tolerations
            .iter()
            .any(|x| x.key == t.key && x.effect == t.effect)
        {
            tolerations.push(t);
        }
    }
    spec.tolerations = Some(tolerations);
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeSpec, PodSpec, Taint};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str, labels: &[(&str, &str)], taints: Vec<Taint>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: Some(taints),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn taint(key: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            ..Default::default()
        }
    }

    #[test]
    fn eligibility_follows_selectors_affinity_and_taints() {
        let plain = PodTemplateSpec {
            spec: Some(PodSpec::default()),
            ..Default::default()
        };
        assert!(should_run(&node("a", &[], vec![]), &plain));
        // A cordoned or not-ready node still gets its daemon pod.
        assert!(should_run(
            &node(
                "a",
                &[],
                vec![taint("node.kubernetes.io/unschedulable", "NoSchedule")]
            ),
            &plain
        ));
        assert!(should_run(
            &node(
                "a",
                &[],
                vec![taint("node.kubernetes.io/not-ready", "NoExecute")]
            ),
            &plain
        ));
        // A control-plane taint keeps it off unless tolerated; PreferNoSchedule never does.
        assert!(!should_run(
            &node(
                "a",
                &[],
                vec![taint("node-role.kubernetes.io/control-plane", "NoSchedule")]
            ),
            &plain
        ));
        assert!(should_run(
            &node("a", &[], vec![taint("x", "PreferNoSchedule")]),
            &plain
        ));
        let mut tolerant = plain.clone();
        tolerant.spec.as_mut().unwrap().tolerations = Some(vec![Toleration {
            operator: Some("Exists".into()),
            ..Default::default()
        }]);
        assert!(should_run(
            &node(
                "a",
                &[],
                vec![taint("node-role.kubernetes.io/control-plane", "NoSchedule")]
            ),
            &tolerant
        ));

        let mut selective = plain.clone();
        selective.spec.as_mut().unwrap().node_selector =
            Some([("disk".to_string(), "ssd".to_string())].into());
        assert!(should_run(
            &node("a", &[("disk", "ssd")], vec![]),
            &selective
        ));
        assert!(!should_run(
            &node("a", &[("disk", "hdd")], vec![]),
            &selective
        ));

        let mut pinned = plain.clone();
        pin_to_node(&mut pinned, "b");
        assert!(should_run(&node("b", &[], vec![]), &pinned));
        assert!(!should_run(&node("a", &[], vec![]), &pinned));
        let pod = Pod {
            spec: pinned.spec.clone(),
            ..Default::default()
        };
        assert_eq!(target_node(&pod).as_deref(), Some("b"));
    }
}
