use super::*;
use crate::apiserver::builtin::builtin_registry;
use std::sync::Arc;

fn now() -> DateTime<Utc> {
    util::parse_time("2024-05-01T12:00:00Z").expect("time")
}

fn def(group: &str, version: &str, plural: &str) -> Arc<ResourceDef> {
    builtin_registry()
        .lookup(group, version, plural)
        .expect("builtin kind")
}

fn cells(group: &str, version: &str, plural: &str, obj: Value) -> Vec<Value> {
    let d = def(group, version, plural);
    let table = to_table_at(now(), &d, &[obj], "1", None, None, IncludeObject::None);
    let cells = table["rows"][0]["cells"].as_array().expect("cells").clone();
    assert_eq!(cells.len(), d.columns.len(), "one cell per column");
    cells
}

fn crashloop_pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "default", "creationTimestamp": "2024-05-01T11:00:00Z",
                     "resourceVersion": "42", "uid": "u1"},
        "spec": {"nodeName": "node1", "containers": [{"name": "app", "image": "app:1"}, {"name": "side", "image": "side:1"}]},
        "status": {
            "phase": "Running",
            "podIP": "10.42.0.7", "podIPs": [{"ip": "10.42.0.7"}],
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [
                {"name": "app", "ready": false, "restartCount": 5,
                 "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                 "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": "2024-05-01T11:55:00Z"}}},
                {"name": "side", "ready": true, "restartCount": 0, "state": {"running": {"startedAt": "2024-05-01T11:00:05Z"}}}
            ]
        }
    })
}

#[test]
fn crashlooping_pod_prints_like_kubectl() {
    let c = cells("", "v1", "pods", crashloop_pod());
    assert_eq!(
        c,
        vec![
            json!("web-1"),
            json!("1/2"),
            json!("CrashLoopBackOff"),
            json!("5 (5m ago)"),
            json!("60m"),
            json!("10.42.0.7"),
            json!("node1"),
            json!("<none>"),
            json!("<none>"),
        ]
    );
}

#[test]
fn initialising_pod_shows_init_progress() {
    let pod = json!({
        "metadata": {"name": "db", "creationTimestamp": "2024-05-01T11:59:30Z"},
        "spec": {"initContainers": [{"name": "migrate"}, {"name": "seed"}], "containers": [{"name": "db"}]},
        "status": {"phase": "Pending",
            "conditions": [{"type": "Initialized", "status": "False"}],
            "initContainerStatuses": [
                {"name": "migrate", "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                {"name": "seed", "restartCount": 0, "state": {"running": {}}}
            ],
            "containerStatuses": [{"name": "db", "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}]}
    });
    let c = cells("", "v1", "pods", pod);
    assert_eq!(c[1], json!("0/1"));
    assert_eq!(c[2], json!("Init:1/2"));
    assert_eq!(c[3], json!("0"));
    assert_eq!(c[4], json!("30s"));
    assert_eq!(c[5], json!("<none>"));
    assert_eq!(c[6], json!("<none>"));

    let failed_init = json!({
        "metadata": {"name": "db"},
        "spec": {"initContainers": [{"name": "migrate"}], "containers": [{"name": "db"}]},
        "status": {"phase": "Pending", "initContainerStatuses": [
            {"name": "migrate", "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
             "lastState": {"terminated": {"exitCode": 2, "finishedAt": "2024-05-01T11:58:00Z"}}}]}
    });
    let c = cells("", "v1", "pods", failed_init);
    assert_eq!(c[2], json!("Init:CrashLoopBackOff"));
    assert_eq!(c[3], json!("3 (2m ago)"));
    assert_eq!(c[4], json!("<unknown>"));
}

#[test]
fn completed_and_terminating_pods() {
    let done = json!({
        "metadata": {"name": "job-x", "creationTimestamp": "2024-05-01T10:00:00Z"},
        "spec": {"containers": [{"name": "main"}]},
        "status": {"phase": "Succeeded", "containerStatuses": [
            {"name": "main", "ready": false, "restartCount": 0,
             "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}
    });
    let d = def("", "v1", "pods");
    let table = to_table_at(now(), &d, &[done], "", None, None, IncludeObject::None);
    let row = &table["rows"][0];
    assert_eq!(row["cells"][1], json!("0/1"));
    assert_eq!(row["cells"][2], json!("Completed"));
    assert_eq!(row["conditions"][0]["type"], json!("Completed"));
    assert_eq!(row["conditions"][0]["reason"], json!("Succeeded"));

    let mut deleting = crashloop_pod();
    deleting["metadata"]["deletionTimestamp"] = json!("2024-05-01T11:59:00Z");
    assert_eq!(
        cells("", "v1", "pods", deleting.clone())[2],
        json!("Terminating")
    );
    deleting["status"]["reason"] = json!("NodeLost");
    assert_eq!(cells("", "v1", "pods", deleting)[2], json!("Unknown"));

    let signalled = json!({
        "metadata": {"name": "k"}, "spec": {"containers": [{"name": "a"}]},
        "status": {"phase": "Running", "containerStatuses": [
            {"name": "a", "restartCount": 0, "state": {"terminated": {"exitCode": 137, "signal": 9}}}]}
    });
    assert_eq!(cells("", "v1", "pods", signalled)[2], json!("Signal:9"));
}

#[test]
fn sidecar_containers_count_as_containers() {
    let pod = json!({
        "metadata": {"name": "mesh"},
        "spec": {"initContainers": [{"name": "proxy", "restartPolicy": "Always"}], "containers": [{"name": "app"}]},
        "status": {"phase": "Running",
            "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}],
            "initContainerStatuses": [{"name": "proxy", "ready": true, "started": true, "restartCount": 1,
                "state": {"running": {}}}],
            "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0, "state": {"running": {}}}]}
    });
    let c = cells("", "v1", "pods", pod);
    assert_eq!(c[1], json!("2/2"));
    assert_eq!(c[2], json!("Running"));
    assert_eq!(c[3], json!("1"));
}

#[test]
fn node_with_roles_and_addresses() {
    let node = json!({
        "metadata": {"name": "pi-1", "creationTimestamp": "2024-04-29T12:00:00Z",
            "labels": {"node-role.kubernetes.io/control-plane": "true", "node-role.kubernetes.io/master": "true",
                       "kubernetes.io/hostname": "pi-1"}},
        "spec": {"unschedulable": true},
        "status": {
            "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
            "addresses": [{"type": "InternalIP", "address": "192.168.1.10"}, {"type": "Hostname", "address": "pi-1"}],
            "nodeInfo": {"kubeletVersion": "v1.32.0+rk3s1", "osImage": "Debian GNU/Linux 12 (bookworm)",
                         "kernelVersion": "6.6.20+rpt-rpi-v8", "containerRuntimeVersion": "containerd://1.7.20"}
        }
    });
    let c = cells("", "v1", "nodes", node);
    assert_eq!(
        c,
        vec![
            json!("pi-1"),
            json!("Ready,SchedulingDisabled"),
            json!("control-plane,master"),
            json!("2d"),
            json!("v1.32.0+rk3s1"),
            json!("192.168.1.10"),
            json!("<none>"),
            json!("Debian GNU/Linux 12 (bookworm)"),
            json!("6.6.20+rpt-rpi-v8"),
            json!("containerd://1.7.20"),
        ]
    );
    let bare = json!({"metadata": {"name": "n2"}, "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
    let c = cells("", "v1", "nodes", bare);
    assert_eq!(c[1], json!("NotReady"));
    assert_eq!(c[2], json!("<none>"));
    assert_eq!(c[7], json!("<unknown>"));
}

#[test]
fn services_print_type_ips_and_ports() {
    let node_port = json!({
        "metadata": {"name": "web", "creationTimestamp": "2024-05-01T11:57:00Z"},
        "spec": {"type": "NodePort", "clusterIP": "10.43.12.7", "clusterIPs": ["10.43.12.7"],
                 "selector": {"app": "web"},
                 "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}
    });
    assert_eq!(
        cells("", "v1", "services", node_port),
        vec![
            json!("web"),
            json!("NodePort"),
            json!("10.43.12.7"),
            json!("<none>"),
            json!("80:30080/TCP,53/UDP"),
            json!("3m"),
            json!("app=web"),
        ]
    );
    let lb = json!({"metadata": {"name": "lb"},
        "spec": {"type": "LoadBalancer", "clusterIPs": ["10.43.0.9"], "ports": [{"port": 443, "nodePort": 31443, "protocol": "TCP"}]}});
    let c = cells("", "v1", "services", lb.clone());
    assert_eq!(c[3], json!("<pending>"));
    assert_eq!(c[6], json!("<none>"));
    let mut ready = lb;
    ready["status"] = json!({"loadBalancer": {"ingress": [{"ip": "192.168.1.240"}]}});
    assert_eq!(
        cells("", "v1", "services", ready)[3],
        json!("192.168.1.240")
    );
    let headless =
        json!({"metadata": {"name": "db"}, "spec": {"type": "ClusterIP", "clusterIPs": ["None"]}});
    let c = cells("", "v1", "services", headless);
    assert_eq!(
        (c[2].clone(), c[4].clone()),
        (json!("None"), json!("<none>"))
    );
}

#[test]
fn workloads_print_readiness_and_containers() {
    let deploy = json!({
        "metadata": {"name": "nginx", "creationTimestamp": "2024-05-01T11:00:00Z"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "nginx"}},
                 "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}]}}},
        "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}
    });
    assert_eq!(
        cells("apps", "v1", "deployments", deploy),
        vec![
            json!("nginx"),
            json!("2/3"),
            json!(3),
            json!(2),
            json!("60m"),
            json!("nginx"),
            json!("nginx:1.27"),
            json!("app=nginx")
        ]
    );
    let job = json!({
        "metadata": {"name": "pi", "creationTimestamp": "2024-05-01T11:50:00Z"},
        "spec": {"completions": 1, "template": {"spec": {"containers": [{"name": "pi", "image": "perl"}]}},
                 "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "abc"}}},
        "status": {"succeeded": 1, "startTime": "2024-05-01T11:50:00Z", "completionTime": "2024-05-01T11:50:42Z",
                   "conditions": [{"type": "Complete", "status": "True"}]}
    });
    let c = cells("batch", "v1", "jobs", job);
    assert_eq!(c[1..4], [json!("Complete"), json!("1/1"), json!("42s")]);
    let cj = json!({"metadata": {"name": "nightly"}, "spec": {"schedule": "0 3 * * *", "suspend": false,
        "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "busybox"}]}}}}}});
    let c = cells("batch", "v1", "cronjobs", cj);
    assert_eq!(
        c[1..6],
        [
            json!("0 3 * * *"),
            json!("<none>"),
            json!("False"),
            json!(0),
            json!("<none>")
        ]
    );
}

#[test]
fn replica_kinds_print_counts_containers_and_selectors() {
    let template = json!({"spec": {"nodeSelector": {"role": "edge", "arch": "arm64"},
        "containers": [{"name": "web", "image": "web:2"}, {"name": "log", "image": "fluent"}]}});
    let rs = json!({
        "metadata": {"name": "web-7d9", "creationTimestamp": "2024-05-01T11:30:00Z"},
        "spec": {"replicas": 3, "template": template,
                 "selector": {"matchLabels": {"app": "web"},
                              "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}]}},
        "status": {"replicas": 2, "readyReplicas": 1}
    });
    assert_eq!(
        cells("apps", "v1", "replicasets", rs),
        vec![
            json!("web-7d9"),
            json!(3),
            json!(2),
            json!(1),
            json!("30m"),
            json!("web,log"),
            json!("web:2,fluent"),
            json!("app=web,tier in (a,b)")
        ]
    );
    // A ReplicationController's selector is a plain map, printed as labels.
    let rc = json!({
        "metadata": {"name": "legacy", "creationTimestamp": "2024-05-01T11:59:30Z"},
        "spec": {"replicas": 1, "selector": {"b": "2", "a": "1"}, "template": template},
        "status": {"replicas": 1}
    });
    assert_eq!(
        cells("", "v1", "replicationcontrollers", rc),
        vec![
            json!("legacy"),
            json!(1),
            json!(1),
            json!(0),
            json!("30s"),
            json!("web,log"),
            json!("web:2,fluent"),
            json!("a=1,b=2")
        ]
    );
    let ds = json!({
        "metadata": {"name": "agent", "creationTimestamp": "2024-04-30T12:00:00Z"},
        "spec": {"template": template},
        "status": {"desiredNumberScheduled": 4, "currentNumberScheduled": 4, "numberReady": 3,
                   "updatedNumberScheduled": 2, "numberAvailable": 3}
    });
    assert_eq!(
        cells("apps", "v1", "daemonsets", ds),
        vec![
            json!("agent"),
            json!(4),
            json!(4),
            json!(3),
            json!(2),
            json!(3),
            json!("arch=arm64,role=edge"),
            json!("24h"),
            json!("web,log"),
            json!("web:2,fluent"),
            json!("<none>")
        ]
    );
    let sts = json!({
        "metadata": {"name": "db", "creationTimestamp": "2024-05-01T10:00:00Z"},
        "spec": {"replicas": 2, "template": template, "selector": {"matchLabels": {"app": "db"}}},
        "status": {"readyReplicas": 2}
    });
    assert_eq!(
        cells("apps", "v1", "statefulsets", sts),
        vec![
            json!("db"),
            json!("2/2"),
            json!("120m"),
            json!("web,log"),
            json!("web:2,fluent")
        ]
    );
}

#[test]
fn events_print_object_and_source() {
    let ev = json!({
        "metadata": {"name": "web-1.17a", "creationTimestamp": "2024-05-01T11:58:00Z"},
        "involvedObject": {"kind": "Pod", "name": "web-1", "fieldPath": "spec.containers{app}"},
        "reason": "BackOff", "type": "Warning", "message": "Back-off restarting failed container\n",
        "source": {"component": "kubelet", "host": "node1"},
        "firstTimestamp": "2024-05-01T11:50:00Z", "lastTimestamp": "2024-05-01T11:58:00Z", "count": 7
    });
    assert_eq!(
        cells("", "v1", "events", ev),
        vec![
            json!("2m"),
            json!("Warning"),
            json!("BackOff"),
            json!("pod/web-1"),
            json!("spec.containers{app}"),
            json!("kubelet, node1"),
            json!("Back-off restarting failed container"),
            json!("10m"),
            json!(7),
            json!("web-1.17a"),
        ]
    );
    let new_style = json!({"metadata": {"name": "e"}, "regarding": {"kind": "Node", "name": "n1"},
        "note": "ready", "reason": "NodeReady", "type": "Normal", "eventTime": "2024-05-01T11:59:00.000000Z",
        "reportingController": "rk3s-node"});
    let c = cells("events.k8s.io", "v1", "events", new_style);
    assert_eq!(c[0], json!("60s"));
    assert_eq!(c[3], json!("node/n1"));
    assert_eq!(c[5], json!("rk3s-node"));
    assert_eq!(c[8], json!(1));
}

#[test]
fn small_kinds_print_counts() {
    let cm = json!({"metadata": {"name": "cfg"}, "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}});
    assert_eq!(cells("", "v1", "configmaps", cm)[1], json!(3));
    let secret = json!({"metadata": {"name": "tls"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}});
    assert_eq!(
        cells("", "v1", "secrets", secret)[1..3],
        [json!("kubernetes.io/tls"), json!(2)]
    );
    let ns = json!({"metadata": {"name": "default", "creationTimestamp": "2024-05-01T11:59:55Z"}, "status": {"phase": "Active"}});
    assert_eq!(
        cells("", "v1", "namespaces", ns),
        vec![json!("default"), json!("Active"), json!("5s")]
    );
    let pvc = json!({"metadata": {"name": "data"}, "spec": {"volumeName": "pv-1", "storageClassName": "local-path"},
        "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"]}});
    assert_eq!(
        cells("", "v1", "persistentvolumeclaims", pvc)[1..7],
        [
            json!("Bound"),
            json!("pv-1"),
            json!("1Gi"),
            json!("RWO"),
            json!("local-path"),
            json!("<unset>")
        ]
    );
    let sc = json!({"metadata": {"name": "local-path", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": "rancher.io/local-path", "volumeBindingMode": "WaitForFirstConsumer"});
    assert_eq!(
        cells("storage.k8s.io", "v1", "storageclasses", sc)[..5],
        [
            json!("local-path (default)"),
            json!("rancher.io/local-path"),
            json!("Delete"),
            json!("WaitForFirstConsumer"),
            json!(false)
        ]
    );
    let eps = json!({"metadata": {"name": "web-abc"}, "addressType": "IPv4", "ports": [{"port": 80}],
        "endpoints": [{"addresses": ["10.42.0.5"]}, {"addresses": ["10.42.0.6"]}]});
    assert_eq!(
        cells("discovery.k8s.io", "v1", "endpointslices", eps)[1..4],
        [json!("IPv4"), json!("80"), json!("10.42.0.5,10.42.0.6")]
    );
    let ep = json!({"metadata": {"name": "web"}, "subsets": [{"addresses": [{"ip": "10.42.0.5"}, {"ip": "10.42.0.6"}],
        "ports": [{"port": 80}, {"port": 443}]}]});
    assert_eq!(
        cells("", "v1", "endpoints", ep)[1],
        json!("10.42.0.5:80,10.42.0.6:80,10.42.0.5:443 + 1 more...")
    );
}

#[test]
fn kinds_without_printer_use_the_default_convertor() {
    let d = def("rbac.authorization.k8s.io", "v1", "roles");
    assert_eq!(
        d.columns
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["Name", "Created At"]
    );
    assert_eq!(d.columns[1].type_, "date");
    let role = json!({"metadata": {"name": "reader", "creationTimestamp": "2024-05-01T10:00:00Z"}});
    let table = to_table_at(now(), &d, &[role], "7", None, None, IncludeObject::None);
    assert_eq!(
        table["rows"][0]["cells"],
        json!(["reader", "2024-05-01T10:00:00Z"])
    );
    let crd = def("apiextensions.k8s.io", "v1", "customresourcedefinitions");
    assert_eq!(crd.columns[1].name, "Created At");
}

#[test]
fn table_envelope_and_include_object() {
    let d = def("", "v1", "pods");
    let pod = crashloop_pod();
    let t = to_table_at(
        now(),
        &d,
        std::slice::from_ref(&pod),
        "1234",
        Some("tok"),
        Some(3),
        IncludeObject::Metadata,
    );
    assert_eq!(t["kind"], "Table");
    assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(
        t["metadata"],
        json!({"resourceVersion": "1234", "continue": "tok", "remainingItemCount": 3})
    );
    let cols = t["columnDefinitions"].as_array().expect("columns");
    assert_eq!(cols.len(), 9);
    assert_eq!(
        cols[0],
        json!({"name": "Name", "type": "string", "format": "name",
        "description": descriptions::META_NAME, "priority": 0})
    );
    assert_eq!(cols[5]["name"], "IP");
    assert_eq!(cols[5]["priority"], 1);
    let obj = &t["rows"][0]["object"];
    assert_eq!(obj["kind"], "PartialObjectMetadata");
    assert_eq!(obj["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(obj["metadata"], pod["metadata"]);

    let full = to_table_at(
        now(),
        &d,
        std::slice::from_ref(&pod),
        "1",
        None,
        None,
        IncludeObject::Object,
    );
    assert_eq!(full["rows"][0]["object"], pod);
    assert_eq!(full["metadata"], json!({"resourceVersion": "1"}));
    let none = to_table_at(now(), &d, &[pod], "", None, None, IncludeObject::None);
    assert!(none["rows"][0].get("object").is_none());
    assert_eq!(none["metadata"], json!({}));

    let mut watch_event = none;
    strip_column_definitions(&mut watch_event);
    assert!(watch_event["columnDefinitions"].is_null());
    let empty = to_table_at(now(), &d, &[], "9", None, None, IncludeObject::Metadata);
    assert_eq!(empty["rows"], json!([]));
}

#[test]
fn include_object_parses_query_values() {
    assert_eq!(IncludeObject::from_query(None), Ok(IncludeObject::Metadata));
    assert_eq!(
        IncludeObject::from_query(Some("None")),
        Ok(IncludeObject::None)
    );
    assert_eq!(
        IncludeObject::from_query(Some("Object")),
        Ok(IncludeObject::Object)
    );
    let err = IncludeObject::from_query(Some("Everything")).expect_err("rejected");
    assert_eq!(
        err.to_string(),
        "unrecognized includeObject value: \"Everything\""
    );
    assert_eq!(IncludeObject::default().to_string(), "Metadata");
}

#[test]
fn custom_resources_get_name_and_age() {
    let d = ResourceDef {
        kind: "Widget".into(),
        singular: "widget".into(),
        columns: custom_resource_columns(),
        ..ResourceDef::for_test("example.com", "widgets", true)
    };
    let w = json!({"metadata": {"name": "w1", "creationTimestamp": "2024-05-01T11:00:00Z"}});
    let t = to_table_at(now(), &d, &[w], "", None, None, IncludeObject::None);
    assert_eq!(t["rows"][0]["cells"], json!(["w1", "60m"]));
}

#[test]
fn api_services_show_backing_service_and_availability() {
    let local = json!({"metadata": {"name": "v1.apps"}, "spec": {"group": "apps", "version": "v1"},
        "status": {"conditions": [{"type": "Available", "status": "True", "reason": "Local"}]}});
    let c = cells("apiregistration.k8s.io", "v1", "apiservices", local);
    assert_eq!(c[1..3], [json!("Local"), json!("True")]);
    let remote = json!({"metadata": {"name": "v1beta1.metrics.k8s.io"},
        "spec": {"service": {"namespace": "kube-system", "name": "metrics-server"}},
        "status": {"conditions": [{"type": "Available", "status": "False", "reason": "MissingEndpoints"}]}});
    let c = cells("apiregistration.k8s.io", "v1", "apiservices", remote);
    assert_eq!(
        c[1..3],
        [
            json!("kube-system/metrics-server"),
            json!("False (MissingEndpoints)")
        ]
    );
    let no_reason = json!({"metadata": {"name": "v1.x"}, "status": {"conditions": [{"type": "Available", "status": "False"}]}});
    assert_eq!(
        cells("apiregistration.k8s.io", "v1", "apiservices", no_reason)[2],
        json!("False")
    );
}
