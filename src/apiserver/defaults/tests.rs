use serde_json::{json, Value};

use super::pod::pull_policy;
use crate::apiserver::admission::{AdmissionRequest, Operation};
use crate::apiserver::auth::UserInfo;

fn run(
    group: &str,
    version: &str,
    plural: &str,
    op: Operation,
    old: Option<&Value>,
    mut obj: Value,
) -> Value {
    let def = crate::apiserver::builtin::builtin_registry()
        .lookup(group, version, plural)
        .expect("a built-in kind");
    let user = UserInfo::default();
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    let req = AdmissionRequest {
        operation: op,
        ..AdmissionRequest::for_test(&def, Some("default"), &name, old, &user)
    };
    let mut out = obj.take();
    super::apply(&req, &mut out);
    out
}

fn create(group: &str, plural: &str, obj: Value) -> Value {
    let version = if group == "autoscaling" { "v2" } else { "v1" };
    run(group, version, plural, Operation::Create, None, obj)
}

#[test]
fn image_pull_policy_follows_the_tag() {
    assert_eq!(pull_policy("nginx"), "Always");
    assert_eq!(pull_policy("nginx:latest"), "Always");
    assert_eq!(pull_policy("nginx:1.27"), "IfNotPresent");
    assert_eq!(pull_policy("localhost:5000/app"), "Always");
    assert_eq!(pull_policy("localhost:5000/app:v1"), "IfNotPresent");
    assert_eq!(pull_policy("nginx@sha256:abcd"), "IfNotPresent");
}

#[test]
fn pod_defaults_match_kube() {
    let pod = create(
        "",
        "pods",
        json!({"metadata": {"name": "p"}, "spec": {
            "containers": [{"name": "c", "image": "nginx", "ports": [{"containerPort": 80}],
                "livenessProbe": {"httpGet": {"port": 80}},
                "env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}],
            "volumes": [{"name": "a"}, {"name": "b", "configMap": {"name": "x"}}, {"name": "h", "hostPath": {"path": "/x"}}]}}),
    );
    let s = &pod["spec"];
    assert_eq!(s["restartPolicy"], "Always");
    assert_eq!(s["dnsPolicy"], "ClusterFirst");
    assert_eq!(s["schedulerName"], "default-scheduler");
    assert_eq!(s["terminationGracePeriodSeconds"], 30);
    assert_eq!(s["securityContext"], json!({}));
    assert_eq!(s["enableServiceLinks"], true);
    assert_eq!(s["priority"], 0);
    assert_eq!(s["preemptionPolicy"], "PreemptLowerPriority");
    assert_eq!(s["tolerations"].as_array().unwrap().len(), 2);
    assert_eq!(s["tolerations"][0]["tolerationSeconds"], 300);
    let c = &s["containers"][0];
    assert_eq!(c["imagePullPolicy"], "Always");
    assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
    assert_eq!(c["terminationMessagePolicy"], "File");
    assert_eq!(c["ports"][0]["protocol"], "TCP");
    assert_eq!(
        c["livenessProbe"],
        json!({"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3})
    );
    assert_eq!(c["env"][0]["valueFrom"]["fieldRef"]["apiVersion"], "v1");
    assert_eq!(
        c["resources"]["requests"],
        json!({"cpu": "1", "memory": "1Gi"})
    );
    assert_eq!(s["volumes"][0]["emptyDir"], json!({}));
    assert_eq!(s["volumes"][1]["configMap"]["defaultMode"], 420);
    assert_eq!(s["volumes"][2]["hostPath"]["type"], "");
    assert_eq!(pod["status"]["qosClass"], "Guaranteed");
}

#[test]
fn qos_classes() {
    let pod = |res: Value| json!({"containers": [{"name": "c", "resources": res}]});
    assert_eq!(super::pod::qos_class(&pod(json!({}))), "BestEffort");
    assert_eq!(
        super::pod::qos_class(&pod(json!({"requests": {"cpu": "1"}}))),
        "Burstable"
    );
}

#[test]
fn deployment_defaults_match_kube() {
    let d = create(
        "apps",
        "deployments",
        json!({"metadata": {"name": "web"}, "spec": {"selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}]}}}}),
    );
    let s = &d["spec"];
    assert_eq!(s["replicas"], 1);
    assert_eq!(s["revisionHistoryLimit"], 10);
    assert_eq!(s["progressDeadlineSeconds"], 600);
    assert_eq!(
        s["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
    );
    let t = &s["template"];
    assert_eq!(t["metadata"]["creationTimestamp"], Value::Null);
    assert!(t["metadata"]
        .as_object()
        .unwrap()
        .contains_key("creationTimestamp"));
    assert_eq!(
        t["spec"]["containers"][0]["imagePullPolicy"],
        "IfNotPresent"
    );
    assert_eq!(t["spec"]["containers"][0]["resources"], json!({}));
    // Pod-only defaults stay off templates.
    assert!(t["spec"].get("enableServiceLinks").is_none());
    assert!(t["spec"].get("tolerations").is_none());
}

#[test]
fn workload_defaults() {
    let ds = create(
        "apps",
        "daemonsets",
        json!({"metadata": {"name": "d"}, "spec": {"template": {"spec": {"containers": []}}}}),
    );
    assert_eq!(
        ds["spec"]["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
    );
    let sts = create(
        "apps",
        "statefulsets",
        json!({"metadata": {"name": "s"}, "spec": {"template": {}, "volumeClaimTemplates": [{"metadata": {"name": "www"}, "spec": {}}]}}),
    );
    let s = &sts["spec"];
    assert_eq!(s["podManagementPolicy"], "OrderedReady");
    assert_eq!(
        s["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
    );
    assert_eq!(
        s["persistentVolumeClaimRetentionPolicy"],
        json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
    );
    let vct = &s["volumeClaimTemplates"][0];
    assert_eq!(vct["kind"], "PersistentVolumeClaim");
    assert_eq!(vct["spec"]["volumeMode"], "Filesystem");
    assert_eq!(vct["status"]["phase"], "Pending");
    let cj = create(
        "batch",
        "cronjobs",
        json!({"metadata": {"name": "c"}, "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {"containers": []}}}}}}),
    );
    assert_eq!(cj["spec"]["concurrencyPolicy"], "Allow");
    assert_eq!(cj["spec"]["successfulJobsHistoryLimit"], 3);
    assert_eq!(cj["spec"]["failedJobsHistoryLimit"], 1);
    assert_eq!(cj["spec"]["suspend"], false);
    assert!(cj["spec"]["jobTemplate"]["spec"]
        .get("backoffLimit")
        .is_none());
    let rc = create(
        "",
        "replicationcontrollers",
        json!({"metadata": {"name": "r"}, "spec": {"template": {"metadata": {"labels": {"a": "b"}}}}}),
    );
    assert_eq!(rc["spec"]["selector"], json!({"a": "b"}));
    assert_eq!(rc["metadata"]["labels"], json!({"a": "b"}));
    assert_eq!(rc["spec"]["replicas"], 1);
}

#[test]
fn job_gets_selector_and_labels() {
    let j = create(
        "batch",
        "jobs",
        json!({"metadata": {"name": "pi", "uid": "u-1"}, "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": []}}}}),
    );
    let s = &j["spec"];
    assert_eq!(s["completions"], 1);
    assert_eq!(s["parallelism"], 1);
    assert_eq!(s["backoffLimit"], 6);
    assert_eq!(s["completionMode"], "NonIndexed");
    assert_eq!(s["suspend"], false);
    assert_eq!(s["podReplacementPolicy"], "TerminatingOrFailed");
    assert_eq!(s["manualSelector"], false);
    assert_eq!(
        s["selector"],
        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u-1"}})
    );
    let labels = &s["template"]["metadata"]["labels"];
    assert_eq!(labels["job-name"], "pi");
    assert_eq!(labels["batch.kubernetes.io/job-name"], "pi");
    assert_eq!(labels["controller-uid"], "u-1");
    assert_eq!(&j["metadata"]["labels"], labels);
}

#[test]
fn service_defaults() {
    let svc = create(
        "",
        "services",
        json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}, {"port": 53, "protocol": "UDP", "targetPort": "dns"}]}}),
    );
    let s = &svc["spec"];
    assert_eq!(s["type"], "ClusterIP");
    assert_eq!(s["sessionAffinity"], "None");
    assert_eq!(s["internalTrafficPolicy"], "Cluster");
    assert_eq!(s["ipFamilyPolicy"], "SingleStack");
    assert_eq!(s["ipFamilies"], json!(["IPv4"]));
    assert!(s.get("externalTrafficPolicy").is_none());
    assert_eq!(
        s["ports"][0],
        json!({"port": 80, "protocol": "TCP", "targetPort": 80})
    );
    assert_eq!(s["ports"][1]["targetPort"], "dns");
    assert_eq!(svc["status"], json!({"loadBalancer": {}}));
    let lb = create(
        "",
        "services",
        json!({"metadata": {"name": "s"}, "spec": {"type": "LoadBalancer", "sessionAffinity": "ClientIP", "ports": [{"port": 80}]}}),
    );
    assert_eq!(lb["spec"]["externalTrafficPolicy"], "Cluster");
    assert_eq!(lb["spec"]["allocateLoadBalancerNodePorts"], true);
    assert_eq!(
        lb["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"],
        10800
    );
    let ext = create(
        "",
        "services",
        json!({"metadata": {"name": "s"}, "spec": {"type": "ExternalName", "externalName": "x.org"}}),
    );
    assert!(ext["spec"].get("ipFamilies").is_none());
    assert!(ext["spec"].get("internalTrafficPolicy").is_none());
    // An update without the allocated IP keeps it.
    let old = json!({"spec": {"type": "ClusterIP", "clusterIP": "10.43.0.9", "clusterIPs": ["10.43.0.9"]}});
    let upd = run(
        "",
        "v1",
        "services",
        Operation::Update,
        Some(&old),
        json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}}),
    );
    assert_eq!(upd["spec"]["clusterIP"], "10.43.0.9");
}

#[test]
fn other_kinds() {
    assert_eq!(
        create("", "secrets", json!({"metadata": {"name": "s"}}))["type"],
        "Opaque"
    );
    let pvc = create(
        "",
        "persistentvolumeclaims",
        json!({"metadata": {"name": "c"}, "spec": {}}),
    );
    assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");
    assert_eq!(pvc["status"]["phase"], "Pending");
    let np = create(
        "networking.k8s.io",
        "networkpolicies",
        json!({"metadata": {"name": "n"}, "spec": {"egress": [{"ports": [{"port": 53}]}]}}),
    );
    assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(np["spec"]["egress"][0]["ports"][0]["protocol"], "TCP");
    let ns = create("", "namespaces", json!({"metadata": {"name": "team"}}));
    assert_eq!(
        ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
        "team"
    );
    assert_eq!(ns["status"]["phase"], "Active");
    let hpa = create(
        "autoscaling",
        "horizontalpodautoscalers",
        json!({"metadata": {"name": "h"}, "spec": {"maxReplicas": 3}}),
    );
    assert_eq!(hpa["spec"]["minReplicas"], 1);
    assert_eq!(
        hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        80
    );
    let rb = create(
        "rbac.authorization.k8s.io",
        "rolebindings",
        json!({"metadata": {"name": "r"}, "roleRef": {"kind": "Role", "name": "x"}, "subjects": [{"kind": "User", "name": "u"}, {"kind": "ServiceAccount", "name": "d"}]}),
    );
    assert_eq!(rb["roleRef"]["apiGroup"], "rbac.authorization.k8s.io");
    assert_eq!(rb["subjects"][0]["apiGroup"], "rbac.authorization.k8s.io");
    assert_eq!(rb["subjects"][1]["apiGroup"], "");
}

#[test]
fn defaults_never_override_and_are_idempotent() {
    let spec = json!({"metadata": {"name": "p"}, "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x", "imagePullPolicy": "Never"}]}});
    let once = create("", "pods", spec);
    assert_eq!(once["spec"]["restartPolicy"], "Never");
    assert_eq!(once["spec"]["containers"][0]["imagePullPolicy"], "Never");
    let twice = run(
        "",
        "v1",
        "pods",
        Operation::Update,
        Some(&once),
        once.clone(),
    );
    assert_eq!(once["spec"], twice["spec"]);
}
