use serde_json::json;

use super::*;
use crate::apiserver::strategic::supports_strategic;

const DEPLOYMENT: TypeKey = TypeKey {
    group: "apps",
    version: "v1",
    kind: "Deployment",
};
const POD: TypeKey = TypeKey {
    group: "",
    version: "v1",
    kind: "Pod",
};
const SERVICE: TypeKey = TypeKey {
    group: "",
    version: "v1",
    kind: "Service",
};

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "nginx-deployment", "namespace": "default", "labels": {"app": "nginx"}, "finalizers": ["a"]},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "nginx"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {"metadata": {"labels": {"app": "nginx"}}, "spec": {
                "containers": [
                    {"name": "nginx", "image": "nginx:1.14.2", "ports": [{"containerPort": 80, "protocol": "TCP"}],
                     "env": [{"name": "A", "value": "1"}, {"name": "X", "value": "2"}],
                     "imagePullPolicy": "IfNotPresent", "terminationMessagePath": "/dev/termination-log"},
                    {"name": "sidecar", "image": "busybox"}
                ],
                "volumes": [{"name": "data", "emptyDir": {}}],
                "restartPolicy": "Always"
            }}
        }
    })
}

#[test]
fn kubectl_apply_update_body_keeps_other_container_fields() {
    let patch = json!({"metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
        "spec": {"replicas": 3, "template": {"spec": {
            "$setElementOrder/containers": [{"name": "nginx"}],
            "containers": [{"image": "nginx:1.16.1", "name": "nginx"}]}}}});
    let got = strategic_merge(&DEPLOYMENT, &deployment(), &patch).unwrap();
    assert_eq!(got["spec"]["replicas"], 3);
    let containers = got["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 2, "the server-only sidecar stays");
    assert_eq!(containers[0]["name"], "nginx");
    assert_eq!(containers[0]["image"], "nginx:1.16.1");
    assert_eq!(containers[0]["imagePullPolicy"], "IfNotPresent");
    assert_eq!(
        containers[0]["ports"],
        json!([{"containerPort": 80, "protocol": "TCP"}])
    );
    assert_eq!(
        got["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
        "{}"
    );
    assert_eq!(got["metadata"]["labels"]["app"], "nginx");
    assert!(got["spec"]["template"]["spec"]
        .get("$setElementOrder/containers")
        .is_none());
}

#[test]
fn env_var_is_removed_by_delete_directive_and_ports_are_merged_by_container_port() {
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "nginx",
        "env": [{"name": "X", "$patch": "delete"}],
        "ports": [{"containerPort": 443}, {"containerPort": 80, "name": "http"}]}]}}}});
    let got = strategic_merge(&DEPLOYMENT, &deployment(), &patch).unwrap();
    let c = &got["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["env"], json!([{"name": "A", "value": "1"}]));
    assert_eq!(
        c["ports"],
        json!([{"containerPort": 80, "protocol": "TCP", "name": "http"}, {"containerPort": 443}])
    );
}

#[test]
fn retain_keys_clears_the_old_strategy_fields() {
    let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null}}});
    let got = strategic_merge(&DEPLOYMENT, &deployment(), &patch).unwrap();
    assert_eq!(got["spec"]["strategy"], json!({"type": "Recreate"}));
}

#[test]
fn volumes_merge_by_name_and_replace_directive_replaces_a_list() {
    let patch = json!({"spec": {"template": {"spec": {"volumes": [{"name": "cache", "emptyDir": {"medium": "Memory"}}, {"name": "data", "$retainKeys": ["name", "hostPath"], "hostPath": {"path": "/srv"}}]}}}});
    let got = strategic_merge(&DEPLOYMENT, &deployment(), &patch).unwrap();
    assert_eq!(
        got["spec"]["template"]["spec"]["volumes"],
        json!([{"name": "data", "hostPath": {"path": "/srv"}}, {"name": "cache", "emptyDir": {"medium": "Memory"}}])
    );

    let patch = json!({"spec": {"template": {"spec": {"containers": [{"$patch": "replace"}, {"name": "only", "image": "x"}]}}}});
    let got = strategic_merge(&DEPLOYMENT, &deployment(), &patch).unwrap();
    assert_eq!(
        got["spec"]["template"]["spec"]["containers"],
        json!([{"name": "only", "image": "x"}])
    );
}

#[test]
fn untagged_lists_are_replaced_and_null_deletes_keys() {
    let pod =
        json!({"spec": {"tolerations": [{"key": "a"}], "nodeSelector": {"x": "1", "y": "2"}}});
    let patch = json!({"spec": {"tolerations": [{"key": "b"}], "nodeSelector": {"x": null}}});
    let got = strategic_merge(&POD, &pod, &patch).unwrap();
    assert_eq!(
        got,
        json!({"spec": {"tolerations": [{"key": "b"}], "nodeSelector": {"y": "2"}}})
    );
}

#[test]
fn primitive_merge_lists_are_sets_with_delete_and_order_directives() {
    let patch = json!({"metadata": {"finalizers": ["b", "a"], "$deleteFromPrimitiveList/finalizers": ["a"]}});
    let got = strategic_merge(&DEPLOYMENT, &deployment(), &patch).unwrap();
    assert_eq!(got["metadata"]["finalizers"], json!(["b", "a"]));
    let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}});
    let got = strategic_merge(&DEPLOYMENT, &deployment(), &patch).unwrap();
    assert_eq!(got["metadata"]["finalizers"], json!([]));
    let orig = json!({"metadata": {"finalizers": ["a", "b", "c"]}});
    let patch = json!({"metadata": {"$setElementOrder/finalizers": ["c", "a"]}});
    let got = strategic_merge(&DEPLOYMENT, &orig, &patch).unwrap();
    // apimachinery's mergeSortedSlice: the server-only "b" sits before "c"
    // because "b" precedes "c" in the live list.
    assert_eq!(got["metadata"]["finalizers"], json!(["b", "c", "a"]));
    let patch = json!({"metadata": {"$setElementOrder/finalizers": ["c", "b", "a"]}});
    let got = strategic_merge(&DEPLOYMENT, &orig, &patch).unwrap();
    assert_eq!(got["metadata"]["finalizers"], json!(["c", "b", "a"]));
}

#[test]
fn service_ports_merge_by_port() {
    let svc = json!({"spec": {"ports": [{"name": "http", "port": 80, "targetPort": 80}], "type": "ClusterIP"}});
    let patch = json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443, "name": "https"}]}});
    let got = strategic_merge(&SERVICE, &svc, &patch).unwrap();
    assert_eq!(
        got["spec"]["ports"],
        json!([{"name": "http", "port": 80, "targetPort": 8080}, {"port": 443, "name": "https"}])
    );
}

#[test]
fn errors_for_missing_merge_keys_and_custom_kinds() {
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}});
    assert!(matches!(
        strategic_merge(&DEPLOYMENT, &deployment(), &patch),
        Err(PatchError::Invalid(_))
    ));
    let widget = TypeKey {
        group: "example.com",
        version: "v1",
        kind: "Widget",
    };
    assert!(!supports_strategic(&widget));
    assert!(supports_strategic(&DEPLOYMENT));
    let err = strategic_merge(&widget, &json!({}), &json!({})).unwrap_err();
    assert_eq!(err.http_code(), 415);
}
