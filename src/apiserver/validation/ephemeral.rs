//! Updates through `pods/ephemeralcontainers`, as kube's
//! `ValidatePodEphemeralContainersUpdate`: each ephemeral container is
//! checked like a container (name, image, pull policy, env, mounts), its
//! name must be unique across every container of the pod, a
//! `targetContainerName` must name one of the pod's (init) containers, only
//! kube's allowed fields may be set (no ports, probes, resources,
//! lifecycle, resize or restart policy), volume mounts take no subPath; and
//! compared with the stored pod, existing ephemeral containers may be
//! neither removed nor changed. Static (mirror) pods take none.

use std::collections::HashSet;

use serde_json::Value;

use super::{quote, Errs};

const PATH: &str = "spec.ephemeralContainers";
const NOT_FOR_EPHEMERAL: &str = "cannot be set for an Ephemeral Container";

/// The fields of an `EphemeralContainerCommon` kube lets an ephemeral
/// container set (its `allowedEphemeralContainerFields`).
const ALLOWED: &[&str] = &[
    "name",
    "image",
    "command",
    "args",
    "workingDir",
    "env",
    "envFrom",
    "volumeMounts",
    "volumeDevices",
    "terminationMessagePath",
    "terminationMessagePolicy",
    "imagePullPolicy",
    "securityContext",
    "stdin",
    "stdinOnce",
    "tty",
    "targetContainerName",
];

/// A JSON value Go would see as its type's zero value (kube only refuses
/// fields that are set).
fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.values().all(is_zero),
        Value::Number(n) => n.as_f64() == Some(0.0),
    }
}

fn names(spec: &Value, list: &str) -> Vec<String> {
    spec[list]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(String::from))
        .collect()
}

pub(super) fn update(old: Option<&Value>, new: &Value, errs: &mut Errs) {
    if let Some(old) = old {
        if old
            .pointer("/metadata/annotations/kubernetes.io~1config.mirror")
            .is_some()
        {
            errs.forbidden("", "static pods do not support ephemeral containers");
            return;
        }
    }
    let spec = &new["spec"];
    let volumes: HashSet<String> = names(spec, "volumes").into_iter().collect();
    let others: HashSet<String> = names(spec, "containers")
        .into_iter()
        .chain(names(spec, "initContainers"))
        .collect();
    let mut all = others.clone();
    for (i, ec) in spec["ephemeralContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let path = format!("{PATH}[{i}]");
        // `container` also finds a name used twice (a Duplicate at `.name`).
        super::spec::container(&path, ec, &volumes, &mut all, errs);
        if let Some(t) = ec["targetContainerName"].as_str().filter(|t| !t.is_empty()) {
            if !others.contains(t) {
                errs.not_found(&format!("{path}.targetContainerName"), &quote(t));
            }
        }
        if let Some(fields) = ec.as_object() {
            for (k, v) in fields {
                if !ALLOWED.contains(&k.as_str()) && !is_zero(v) {
                    errs.forbidden(&format!("{path}.{k}"), NOT_FOR_EPHEMERAL);
                }
            }
        }
        for (j, m) in ec["volumeMounts"].as_array().into_iter().flatten().enumerate() {
            for k in ["subPath", "subPathExpr"] {
                if m[k].as_str().is_some_and(|s| !s.is_empty()) {
                    errs.forbidden(&format!("{path}.volumeMounts[{j}].{k}"), NOT_FOR_EPHEMERAL);
                }
            }
        }
    }
    let Some(old) = old else { return };
    let now: Vec<&Value> = spec["ephemeralContainers"].as_array().into_iter().flatten().collect();
    for before in old["spec"]["ephemeralContainers"].as_array().into_iter().flatten() {
        let name = before["name"].as_str().unwrap_or_default();
        match now.iter().find(|c| c["name"] == before["name"]) {
            None => errs.forbidden(
                PATH,
                &format!("existing ephemeral containers {} may not be removed\n", quote(name)),
            ),
            // kube appends a `cmp.Diff` of the two (whose format Go
            // declares unstable); the path keys the container by name.
            Some(after) if *after != before => errs.forbidden(
                &format!("{PATH}[{name}]"),
                &format!("existing ephemeral containers {} may not be changed\n", quote(name)),
            ),
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(ephemeral: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": {
            "containers": [{"name": "c", "image": "busybox"}],
            "initContainers": [{"name": "i", "image": "busybox"}],
            "ephemeralContainers": ephemeral}})
    }

    fn check(old: &Value, new: &Value) -> Vec<(String, String)> {
        let mut errs = Errs::default();
        update(Some(old), new, &mut errs);
        errs.0.into_iter().map(|c| (c.field, c.message)).collect()
    }

    #[test]
    fn an_addition_with_a_target_is_accepted() {
        let old = pod(json!([]));
        let new = pod(json!([{"name": "debugger", "image": "busybox",
            "targetContainerName": "c", "stdin": true, "tty": true, "resources": {},
            "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent"}]));
        assert_eq!(check(&old, &new), vec![]);
    }

    #[test]
    fn refused_fields_targets_and_names_are_worded_as_kube() {
        let old = pod(json!([]));
        let new = pod(json!([{"name": "c", "image": "busybox", "targetContainerName": "nope",
            "ports": [{"containerPort": 80}], "readinessProbe": {"exec": {"command": ["true"]}},
            "resources": {"limits": {"cpu": "1"}}, "lifecycle": {"preStop": {"exec": {"command": ["x"]}}}}]));
        let got = check(&old, &new);
        let p = "spec.ephemeralContainers[0]";
        assert!(got.contains(&(format!("{p}.name"), "Duplicate value: \"c\"".into())), "{got:?}");
        assert!(got.contains(&(format!("{p}.targetContainerName"), "Not found: \"nope\"".into())));
        for f in ["ports", "readinessProbe", "resources", "lifecycle"] {
            assert!(
                got.contains(&(format!("{p}.{f}"), format!("Forbidden: {NOT_FOR_EPHEMERAL}"))),
                "{f}: {got:?}"
            );
        }
        let init_named = pod(json!([{"name": "i", "image": "busybox", "targetContainerName": "i"}]));
        assert_eq!(
            check(&old, &init_named),
            vec![(format!("{p}.name"), "Duplicate value: \"i\"".into())]
        );
    }

    #[test]
    fn existing_ones_may_be_neither_removed_nor_changed() {
        let old = pod(json!([{"name": "d1", "image": "busybox"}, {"name": "d2", "image": "busybox"}]));
        let new = pod(json!([{"name": "d1", "image": "alpine"}]));
        assert_eq!(
            check(&old, &new),
            vec![
                (
                    "spec.ephemeralContainers[d1]".into(),
                    "Forbidden: existing ephemeral containers \"d1\" may not be changed\n".into()
                ),
                (
                    "spec.ephemeralContainers".into(),
                    "Forbidden: existing ephemeral containers \"d2\" may not be removed\n".into()
                ),
            ]
        );
    }

    #[test]
    fn no_sub_path_and_no_static_pods() {
        let mut old = pod(json!([]));
        old["spec"]["volumes"] = json!([{"name": "v", "emptyDir": {}}]);
        let mut new = old.clone();
        new["spec"]["ephemeralContainers"] = json!([{"name": "d", "image": "busybox",
            "volumeMounts": [{"name": "v", "mountPath": "/v", "subPath": "x"}]}]);
        assert_eq!(
            check(&old, &new),
            vec![(
                "spec.ephemeralContainers[0].volumeMounts[0].subPath".into(),
                format!("Forbidden: {NOT_FOR_EPHEMERAL}")
            )]
        );
        old["metadata"]["annotations"] = json!({"kubernetes.io/config.mirror": "x"});
        assert_eq!(
            check(&old, &new),
            vec![("".into(), "Forbidden: static pods do not support ephemeral containers".into())]
        );
    }
}
