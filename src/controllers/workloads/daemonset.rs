//! The DaemonSet controller: one pod per eligible node. A node is eligible
//! when the template's `nodeSelector` and required node affinity match it and
//! every NoSchedule/NoExecute taint is tolerated, counting the tolerations
//! kube adds to every daemon pod (not-ready, unreachable, disk/memory/pid
//! pressure, unschedulable, and network-unavailable for host-network pods).
//! Pods get the required node affinity `matchFields metadata.name In [node]`
//! and the scheduler binds them; a node added later gets its pod because
//! node events requeue every DaemonSet.
//!
//! Updates: RollingUpdate deletes old pods within `maxUnavailable` (replacing
//! unavailable old pods first), OnDelete waits for the user; revisions are
//! ControllerRevisions (`kubectl rollout history ds`), the pods' label
//! `controller-revision-hash` is the revision's hash.
//!
//! Partial: `maxSurge` is treated as 0 (kube's default); failed daemon pods
//! are replaced at once, without kube's per-node back-off.

use crate::k8s::scheduling::{requirement_matches, tolerates};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodTemplateSpec, Toleration,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams};
use kube::runtime::controller::Action;
use kube::ResourceExt;

use super::common::*;
use super::history;
use super::rollout::scaled_value;

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

fn created(p: &Pod) -> (i64, String) {
    (
        p.metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second())
            .unwrap_or(0),
        p.name_any(),
    )
}

/// Reconciles one DaemonSet.
pub async fn reconcile(ds: Arc<DaemonSet>, shared: Arc<Shared>) -> Result<Action> {
    let ns = ds.namespace().unwrap_or_default();
    let name = ds.name_any();
    let spec = ds.spec.clone().unwrap_or_default();
    let old = ds.status.clone().unwrap_or_default();
    if ds.metadata.deletion_timestamp.is_some() {
        // Being deleted: the garbage collector removes pods and revisions;
        // writing a new revision now would only race it.
        return Ok(Action::await_change());
    }
    let mut collision = old.collision_count;
    let hist = history::sync(
        &shared,
        ds.as_ref(),
        &spec.selector,
        &spec.template,
        &mut collision,
    )
    .await?;
    let hash = hist.update_hash.clone();

    let nodes: Api<Node> = Api::all(shared.client());
    let nodes = list_all(&nodes, "nodes").await?;
    let pods_api: Api<Pod> = Api::namespaced(shared.client(), &ns);
    let all = list_all(&pods_api, "pods").await?;
    let owned = claim(&pods_api, ds.as_ref(), all, |p| {
        selector_matches(&spec.selector, &labels_of(&p.metadata))
    })
    .await?;
    let mut by_node: BTreeMap<String, Vec<Pod>> = BTreeMap::new();
    let mut to_delete: Vec<Pod> = Vec::new();
    for p in owned
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        if pod_phase(&p) == "Failed" {
            to_delete.push(p);
            continue;
        }
        match target_node(&p) {
            Some(n) => by_node.entry(n).or_default().push(p),
            None => to_delete.push(p),
        }
    }
    for pods in by_node.values_mut() {
        pods.sort_by_key(created);
    }
    let min_ready = or_default(spec.min_ready_seconds, 0);
    let now = shared.now();
    let is_updated = |p: &Pod| p.labels().get(history::HASH_LABEL) == Some(&hash);

    let mut st = DaemonSetStatus {
        observed_generation: ds.metadata.generation,
        collision_count: collision,
        conditions: old.conditions.clone(),
        ..Default::default()
    };
    let (mut available, mut updated) = (0, 0);
    let mut to_create: Vec<String> = Vec::new();
    let node_names: Vec<String> = nodes.iter().map(|n| n.name_any()).collect();
    for node in &nodes {
        let nname = node.name_any();
        let pods = by_node.get(&nname).cloned().unwrap_or_default();
        if should_run(node, &spec.template) {
            st.desired_number_scheduled += 1;
            if pods.is_empty() {
                to_create.push(nname);
                continue;
            }
            st.current_number_scheduled += 1;
            let p = &pods[0];
            if is_ready(p) {
                st.number_ready += 1;
                if is_available(p, min_ready, now) {
                    available += 1;
                }
            }
            if is_updated(p) {
                updated += 1;
            }
            to_delete.extend(pods.into_iter().skip(1));
        } else if !pods.is_empty() {
            st.number_misscheduled += 1;
            to_delete.extend(pods);
        }
    }
    // Pods for nodes that no longer exist.
    for (n, pods) in &by_node {
        if !node_names.contains(n) {
            to_delete.extend(pods.iter().cloned());
        }
    }
    let opt = |n: i32| (n != 0).then_some(n);
    st.number_available = opt(available);
    st.updated_number_scheduled = opt(updated);
    st.number_unavailable = opt(st.desired_number_scheduled - available);

    if ds.metadata.deletion_timestamp.is_none() {
        // Rolling update: old pods go within maxUnavailable, unavailable ones first.
        let rolling = spec
            .update_strategy
            .as_ref()
            .and_then(|u| u.type_.as_deref())
            != Some("OnDelete");
        if rolling {
            let max_unavailable = spec
                .update_strategy
                .as_ref()
                .and_then(|u| u.rolling_update.as_ref())
                .and_then(|r| r.max_unavailable.clone())
                .unwrap_or(IntOrString::Int(1));
            let max_unavailable = scaled_value(&max_unavailable, st.desired_number_scheduled, true)
                .map_err(|message| Error::Invalid {
                    field: "spec.updateStrategy.rollingUpdate.maxUnavailable".into(),
                    message,
                })?
                .max(1);
            let mut unavailable = to_create.len() as i32;
            let mut replace = Vec::new();
            let mut candidates = Vec::new();
            for node in nodes.iter().filter(|n| should_run(n, &spec.template)) {
                let Some(pods) = by_node.get(&node.name_any()) else {
                    continue;
                };
                let p = &pods[0];
                if is_updated(p) {
                    if !is_available(p, min_ready, now) {
                        unavailable += 1;
                    }
                } else if !is_available(p, min_ready, now) {
                    replace.push(p.clone());
                } else if unavailable < max_unavailable {
                    candidates.push(p.clone());
                }
            }
            let room = (max_unavailable - unavailable).max(0) as usize;
            to_delete.extend(replace);
            to_delete.extend(candidates.into_iter().take(room));
        }
        for p in &to_delete {
            let pname = p.name_any();
            delete_quiet(&pods_api, &pname, &DeleteParams::default()).await?;
            shared
                .event(
                    ds.as_ref(),
                    false,
                    "SuccessfulDelete",
                    format!("Deleted pod: {pname}"),
                )
                .await;
        }
        for node in &to_create {
            let mut template = spec.template.clone();
            pin_to_node(&mut template, node);
            let mut extra = BTreeMap::new();
            extra.insert(history::HASH_LABEL.to_string(), hash.clone());
            if let Some(g) = ds.metadata.generation {
                extra.insert("pod-template-generation".to_string(), g.to_string());
            }
            let mut pod = pod_from_template(ds.as_ref(), &template, &extra);
            pod.metadata.generate_name = Some(format!("{name}-"));
            match create_pod(&pods_api, &pod).await {
                Ok(p) => {
                    shared
                        .event(
                            ds.as_ref(),
                            false,
                            "SuccessfulCreate",
                            format!("Created pod: {}", p.name_any()),
                        )
                        .await
                }
                Err(e) => {
                    shared
                        .event(
                            ds.as_ref(),
                            true,
                            "FailedCreate",
                            format!("Error creating: {e}"),
                        )
                        .await;
                    return Err(e).ctx(|| format!("create a daemon pod for node {node}"));
                }
            }
        }
        let in_use: Vec<String> = by_node
            .values()
            .flatten()
            .filter_map(|p| p.labels().get(history::HASH_LABEL).cloned())
            .collect();
        history::truncate(
            &shared,
            &ns,
            &hist,
            &in_use,
            spec.revision_history_limit.unwrap_or(10),
        )
        .await?;
    }
    let api: Api<DaemonSet> = Api::namespaced(shared.client(), &ns);
    patch_status(
        &api,
        &name,
        &serde_json::to_value(&old).unwrap_or_default(),
        &serde_json::to_value(&st).unwrap_or_default(),
    )
    .await?;
    let requeue = if st.number_ready > available {
        Duration::from_secs(min_ready.max(1) as u64)
    } else {
        Duration::from_secs(300)
    };
    Ok(Action::requeue(requeue))
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
