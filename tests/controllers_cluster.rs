//! The scheduler and the cluster controllers against the in-process API
//! server, with simulated nodes and the real kubectl: spreading, scheduling
//! failures, Service IPs and endpoints, node lifecycle, namespace deletion,
//! garbage collection, ServiceAccounts and root CA, pod CIDRs.
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::kubectl::condition;
use common::simnodes::ClusterHarness;
use serde_json::Value;

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn get_json(k: &common::kubectl::Kubectl, args: &[&str]) -> Option<Value> {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-o", "json"]);
    let out = k.run(&a);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

/// `kubectl describe pod <pod>` once it mentions `word` (within 30 s).
fn describe_until(k: &common::kubectl::Kubectl, pod: &str, word: &str, what: &str) -> String {
    wait_for(what, Duration::from_secs(30), || {
        let d = k.run_ok(&["describe", "pod", pod]);
        d.contains(word).then_some(d)
    })
}

fn apply(k: &common::kubectl::Kubectl, yaml: &str) {
    let out = k.run_with_stdin(&["create", "-f", "-"], yaml);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pod_yaml(name: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels:\n    app: web\nspec:\n  containers:\n  - name: c\n    image: x\n    ports:\n    - name: http\n      containerPort: 8080\n{extra_spec}"
    )
}

#[test]
fn pods_spread_across_nodes_and_unschedulable_pods_say_why() {
    let h = ClusterHarness::start(|_| {});
    let _nodes = h.nodes(3);
    let k = h.kubectl();
    for i in 0..6 {
        apply(&k, &pod_yaml(&format!("p{i}"), ""));
    }
    let per_node = wait_for("6 pods bound", Duration::from_secs(60), || {
        let list = get_json(&k, &["pods"])?;
        let mut per: BTreeMap<String, usize> = BTreeMap::new();
        for p in list["items"].as_array()? {
            let n = p["spec"]["nodeName"].as_str()?;
            *per.entry(n.to_string()).or_default() += 1;
        }
        (per.values().sum::<usize>() == 6).then_some(per)
    });
    assert_eq!(per_node.len(), 3, "{per_node:?}");
    assert!(per_node.values().all(|n| *n == 2), "{per_node:?}");
    let describe = describe_until(&k, "p0", "Scheduled", "the Scheduled event");
    assert!(
        describe.contains("Successfully assigned default/p0 to node-"),
        "{describe}"
    );

    // Default tolerations from the DefaultTolerationSeconds admission plug-in.
    let p0 = get_json(&k, &["pod", "p0"]).unwrap();
    let tolerations = p0["spec"]["tolerations"].as_array().unwrap();
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        assert!(
            tolerations.iter().any(|t| t["key"] == key
                && t["effect"] == "NoExecute"
                && t["tolerationSeconds"] == 300),
            "{tolerations:?}"
        );
    }

    // Another scheduler's pod is left alone; binding it by hand works once.
    apply(
        &k,
        &pod_yaml("manual", "  schedulerName: other-scheduler\n"),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(get_json(&k, &["pod", "manual"]).unwrap()["spec"]["nodeName"].is_null());
    let binding = r#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"manual"},"target":{"kind":"Node","name":"node-2"}}"#;
    let path = "/api/v1/namespaces/default/pods/manual/binding";
    let out = k.run_with_stdin(&["create", "--raw", path, "-f", "-"], binding);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manual = get_json(&k, &["pod", "manual"]).unwrap();
    assert_eq!(manual["spec"]["nodeName"], "node-2");
    assert!(manual["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["type"] == "PodScheduled" && c["status"] == "True"));
    let again = k.run_with_stdin(&["create", "--raw", path, "-f", "-"], binding);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("already assigned to node"), "{err}");

    apply(
        &k,
        &pod_yaml(
            "big",
            "    resources:\n      requests:\n        cpu: \"100\"\n",
        ),
    );
    let d = describe_until(&k, "big", "FailedScheduling", "FailedScheduling");
    assert!(
        d.contains("0/3 nodes are available: 3 Insufficient cpu."),
        "{d}"
    );
    let pod = get_json(&k, &["pod", "big"]).unwrap();
    let cond = condition(&pod, "PodScheduled").unwrap().clone();
    assert_eq!(cond["status"], "False");
    assert_eq!(cond["reason"], "Unschedulable");
    let events = k.run_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=big",
    ]);
    assert!(events.contains("FailedScheduling"), "{events}");

    apply(&k, &pod_yaml("picky", "  nodeSelector:\n    disk: ssd\n"));
    let d = describe_until(&k, "picky", "FailedScheduling", "FailedScheduling for picky");
    assert!(
        d.contains("0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."),
        "{d}"
    );
    // A node that matches makes it schedulable without any other change.
    k.run_ok(&["label", "node", "node-1", "disk=ssd"]);
    wait_for("picky bound to node-1", Duration::from_secs(30), || {
        let p = get_json(&k, &["pod", "picky"])?;
        (p["spec"]["nodeName"] == "node-1").then_some(())
    });
}

#[test]
fn services_get_ips_ports_and_endpoints_that_follow_readiness() {
    let h = ClusterHarness::start(|_| {});
    let _nodes = h.nodes(2);
    let k = h.kubectl();
    let kube_svc = get_json(&k, &["svc", "kubernetes"]).unwrap();
    assert_eq!(kube_svc["spec"]["clusterIP"], "10.43.0.1");

    apply(&k, &pod_yaml("web-a", ""));
    apply(&k, &pod_yaml("web-b", ""));
    apply(
        &k,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector:\n    app: web\n  ports:\n  - name: http\n    port: 80\n    targetPort: http\n",
    );
    let svc = get_json(&k, &["svc", "web"]).unwrap();
    let ip: std::net::Ipv4Addr = svc["spec"]["clusterIP"].as_str().unwrap().parse().unwrap();
    assert_eq!(&ip.octets()[..2], &[10, 43], "{ip}");
    assert_ne!(ip.to_string(), "10.43.0.1");

    let ready_count = |k: &common::kubectl::Kubectl| -> Option<(usize, usize)> {
        let slices = get_json(
            k,
            &["endpointslices", "-l", "kubernetes.io/service-name=web"],
        )?;
        let items = slices["items"].as_array()?;
        let slice = items.first()?;
        if slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"]
            != "endpointslice-controller.k8s.io"
        {
            return None;
        }
        let eps = slice["endpoints"].as_array().cloned().unwrap_or_default();
        let ready = eps
            .iter()
            .filter(|e| e["conditions"]["ready"] == true)
            .count();
        if slice["ports"][0]["port"] != 8080 {
            return None;
        }
        Some((ready, eps.len()))
    };
    wait_for("two ready endpoints", Duration::from_secs(60), || {
        (ready_count(&k)? == (2, 2)).then_some(())
    });
    let eps = get_json(&k, &["endpoints", "web"]).unwrap();
    assert_eq!(eps["subsets"][0]["addresses"].as_array().unwrap().len(), 2);

    k.run_ok(&[
        "patch",
        "pod",
        "web-a",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"conditions":[{"type":"Ready","status":"False"}]}}"#,
    ]);
    wait_for("one ready endpoint", Duration::from_secs(30), || {
        (ready_count(&k)? == (1, 2)).then_some(())
    });
    wait_for(
        "web-a in notReadyAddresses",
        Duration::from_secs(30),
        || {
            let eps = get_json(&k, &["endpoints", "web"])?;
            (eps["subsets"][0]["notReadyAddresses"][0]["targetRef"]["name"] == "web-a")
                .then_some(())
        },
    );
    k.run_ok(&["delete", "pod", "web-b"]);
    wait_for("web-b gone from the slice", Duration::from_secs(30), || {
        (ready_count(&k)? == (0, 1)).then_some(())
    });

    apply(
        &k,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: np\nspec:\n  type: NodePort\n  selector:\n    app: web\n  ports:\n  - port: 80\n",
    );
    let np = get_json(&k, &["svc", "np"]).unwrap();
    let port = np["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    assert!((30000..=32767).contains(&port), "{port}");

    let dup = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: dup\nspec:\n  clusterIP: {ip}\n  ports:\n  - port: 80\n"
    );
    let out = k.run_with_stdin(&["create", "-f", "-"], &dup);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("provided IP is already allocated"), "{err}");

    // Deleting the Service releases its IP and takes its endpoints along.
    k.run_ok(&["delete", "svc", "web"]);
    k.run_with_stdin(&["create", "-f", "-"], &dup);
    assert_eq!(
        get_json(&k, &["svc", "dup"]).unwrap()["spec"]["clusterIP"],
        ip.to_string()
    );
    wait_for("web's endpoints collected", Duration::from_secs(30), || {
        let s = get_json(
            &k,
            &["endpointslices", "-l", "kubernetes.io/service-name=web"],
        )?;
        let gone =
            s["items"].as_array()?.is_empty() && get_json(&k, &["endpoints", "web"]).is_none();
        gone.then_some(())
    });
}

#[test]
fn a_silent_node_turns_unknown_and_its_pods_are_evicted_after_their_toleration() {
    let h = ClusterHarness::start(|o| {
        o.node_monitor_grace = Duration::from_secs(3);
        o.node_monitor_period = Duration::from_millis(500);
    });
    let nodes = h.nodes(1);
    let k = h.kubectl();
    let tol = |secs: &str| {
        format!("  tolerations:\n  - key: node.kubernetes.io/unreachable\n    operator: Exists\n    effect: NoExecute\n{secs}")
    };
    apply(&k, &pod_yaml("short", &tol("    tolerationSeconds: 2\n")));
    apply(&k, &pod_yaml("forever", &tol("")));
    wait_for("pods running", Duration::from_secs(60), || {
        let l = get_json(&k, &["pods"])?;
        let running = l["items"]
            .as_array()?
            .iter()
            .filter(|p| p["status"]["phase"] == "Running")
            .count();
        (running == 2).then_some(())
    });
    nodes[0].stop();
    let node = wait_for(
        "the node Unknown and tainted",
        Duration::from_secs(30),
        || {
            let n = get_json(&k, &["node", "node-0"])?;
            let ready = condition(&n, "Ready")?.clone();
            let taints = n["spec"]["taints"].as_array().cloned().unwrap_or_default();
            (ready["status"] == "Unknown" && taints.len() == 2).then_some(n)
        },
    );
    let ready = condition(&node, "Ready").unwrap().clone();
    assert_eq!(ready["message"], "Kubelet stopped posting node status.");
    let taints: Vec<String> = node["spec"]["taints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            format!(
                "{}:{}",
                t["key"].as_str().unwrap(),
                t["effect"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        taints.contains(&"node.kubernetes.io/unreachable:NoSchedule".to_string()),
        "{taints:?}"
    );
    assert!(
        taints.contains(&"node.kubernetes.io/unreachable:NoExecute".to_string()),
        "{taints:?}"
    );
    let nodes_out = k.run_ok(&["get", "nodes"]);
    assert!(nodes_out.contains("NotReady"), "{nodes_out}");
    wait_for("short evicted", Duration::from_secs(30), || {
        let p = get_json(&k, &["pod", "short"]);
        match p {
            None => Some(()),
            Some(p) => p["metadata"]["deletionTimestamp"].is_string().then_some(()),
        }
    });
    std::thread::sleep(Duration::from_secs(3));
    let forever = get_json(&k, &["pod", "forever"]).unwrap();
    assert!(
        forever["metadata"]["deletionTimestamp"].is_null(),
        "{forever}"
    );
    let ready = condition(&forever, "Ready").unwrap().clone();
    assert_eq!(ready["status"], "False");

    // The node comes back: Ready again, taints gone, its terminating pod finished.
    let _back = h.node("node-0", 0, "4", "8Gi");
    wait_for(
        "the node Ready without taints",
        Duration::from_secs(30),
        || {
            let n = get_json(&k, &["node", "node-0"])?;
            let ready = n["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            (ready && n["spec"]["taints"].as_array().is_none_or(|t| t.is_empty())).then_some(())
        },
    );
    wait_for(
        "short removed by its kubelet",
        Duration::from_secs(30),
        || get_json(&k, &["pod", "short"]).is_none().then_some(()),
    );
}

#[test]
fn namespaces_get_defaults_and_are_emptied_on_delete() {
    let h = ClusterHarness::start(|_| {});
    let _nodes = h.nodes(1);
    let k = h.kubectl();
    k.run_ok(&["create", "namespace", "team"]);
    wait_for("default SA and root CA", Duration::from_secs(30), || {
        let sa = get_json(&k, &["sa", "default", "-n", "team"])?;
        let cm = get_json(&k, &["cm", "kube-root-ca.crt", "-n", "team"])?;
        (sa["metadata"]["name"] == "default"
            && cm["data"]["ca.crt"].as_str()?.contains("BEGIN CERTIFICATE"))
        .then_some(())
    });
    // A deleted default SA comes back.
    k.run_ok(&["delete", "sa", "default", "-n", "team"]);
    wait_for("default SA recreated", Duration::from_secs(30), || {
        get_json(&k, &["sa", "default", "-n", "team"]).map(|_| ())
    });
    k.run_ok(&["create", "configmap", "c1", "-n", "team"]);
    k.run_ok(&["create", "secret", "generic", "s1", "-n", "team"]);
    apply(
        &k,
        &pod_yaml("p", "").replace("name: p\n", "name: p\n  namespace: team\n"),
    );
    wait_for("pod bound", Duration::from_secs(30), || {
        get_json(&k, &["pod", "p", "-n", "team"])?["spec"]["nodeName"]
            .as_str()
            .map(|_| ())
    });
    k.run_ok(&["delete", "namespace", "team", "--timeout=60s"]);
    wait_for("namespace gone", Duration::from_secs(60), || {
        get_json(&k, &["namespace", "team"]).is_none().then_some(())
    });
    for kind in ["pods", "configmaps", "secrets", "serviceaccounts"] {
        let l = get_json(&k, &[kind, "-n", "team"]).unwrap();
        assert!(l["items"].as_array().unwrap().is_empty(), "{kind}: {l}");
    }
}

fn owner_with_dependents(k: &common::kubectl::Kubectl, owner: &str) -> String {
    k.run_ok(&["create", "configmap", owner]);
    let uid = get_json(k, &["cm", owner]).unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    for i in 0..2 {
        apply(
            k,
            &format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {owner}-dep{i}\n  ownerReferences:\n  - apiVersion: v1\n    kind: ConfigMap\n    name: {owner}\n    uid: {uid}\n    blockOwnerDeletion: true\n"
            ),
        );
    }
    uid
}

fn exists(k: &common::kubectl::Kubectl, name: &str) -> bool {
    get_json(k, &["cm", name]).is_some()
}

#[test]
fn garbage_collection_follows_the_propagation_policy() {
    let h = ClusterHarness::start(|_| {});
    let k = h.kubectl();

    owner_with_dependents(&k, "bg");
    k.run_ok(&["delete", "cm", "bg"]);
    wait_for(
        "background dependents deleted",
        Duration::from_secs(30),
        || (!exists(&k, "bg-dep0") && !exists(&k, "bg-dep1")).then_some(()),
    );

    owner_with_dependents(&k, "fg");
    k.run_ok(&["delete", "cm", "fg", "--cascade=foreground", "--wait=false"]);
    let held = get_json(&k, &["cm", "fg"]);
    if let Some(o) = held {
        // Held until its blocking dependents are gone.
        assert!(o["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| f.contains(&Value::from("foregroundDeletion"))));
    }
    wait_for(
        "foreground owner and dependents gone",
        Duration::from_secs(30),
        || (!exists(&k, "fg") && !exists(&k, "fg-dep0") && !exists(&k, "fg-dep1")).then_some(()),
    );

    owner_with_dependents(&k, "or");
    k.run_ok(&["delete", "cm", "or", "--cascade=orphan"]);
    wait_for("orphan owner gone", Duration::from_secs(30), || {
        (!exists(&k, "or")).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    for dep in ["or-dep0", "or-dep1"] {
        let d = get_json(&k, &["cm", dep]).expect("orphaned dependents stay");
        assert!(d["metadata"]["ownerReferences"].is_null(), "{d}");
    }
}

#[test]
fn nodes_get_distinct_pod_cidrs() {
    let h = ClusterHarness::start(|_| {});
    let _nodes = h.nodes(3);
    let k = h.kubectl();
    let cidrs = wait_for("pod CIDRs", Duration::from_secs(30), || {
        let l = get_json(&k, &["nodes"])?;
        let c: Vec<String> = l["items"]
            .as_array()?
            .iter()
            .filter_map(|n| n["spec"]["podCIDR"].as_str().map(String::from))
            .collect();
        (c.len() == 3).then_some(c)
    });
    let mut unique = cidrs.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 3, "{cidrs:?}");
    for c in &cidrs {
        assert!(c.starts_with("10.42.") && c.ends_with(".0/24"), "{c}");
    }
    // A deleted node frees its CIDR for the next node.
    let cidr_of = |name: &str| {
        get_json(&k, &["node", name]).and_then(|n| n["spec"]["podCIDR"].as_str().map(String::from))
    };
    let freed = cidr_of("node-1").unwrap();
    _nodes[1].stop();
    k.run_ok(&["delete", "node", "node-1"]);
    let _new = h.node("node-9", 9, "4", "8Gi");
    let got = wait_for("node-9's CIDR", Duration::from_secs(30), || {
        cidr_of("node-9")
    });
    assert_eq!(got, freed);
}

#[test]
fn concurrent_service_creates_never_collide() {
    use k8s_openapi::api::core::v1::Service;
    use kube::api::{Api, PostParams};
    let h = ClusterHarness::start(|_| {});
    let client = h.client.clone();
    let services: Vec<Service> = h.rt.block_on(async move {
        let api: Api<Service> = Api::namespaced(client, "default");
        let creates = (0..40).map(|i| {
            let api = api.clone();
            async move {
                let svc: Service = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("s{i}")},
                    "spec": {"type": "NodePort", "selector": {"app": "x"}, "ports": [{"port": 80}]}}))
                .unwrap();
                api.create(&PostParams::default(), &svc).await.expect("create")
            }
        });
        futures::future::join_all(creates).await
    });
    let ips: std::collections::HashSet<String> = services
        .iter()
        .map(|s| s.spec.as_ref().unwrap().cluster_ip.clone().unwrap())
        .collect();
    let ports: std::collections::HashSet<i32> = services
        .iter()
        .map(|s| {
            s.spec.as_ref().unwrap().ports.as_ref().unwrap()[0]
                .node_port
                .unwrap()
        })
        .collect();
    assert_eq!(ips.len(), 40);
    assert_eq!(ports.len(), 40);
    assert!(!ips.contains("10.43.0.1"));
}

#[test]
fn work_done_while_the_controllers_were_down_is_picked_up_after_a_restart() {
    let mut h = ClusterHarness::start(|_| {});
    let _nodes = h.nodes(2);
    let k = h.kubectl();
    wait_for("pod CIDRs", Duration::from_secs(30), || {
        let l = get_json(&k, &["nodes"])?;
        l["items"]
            .as_array()?
            .iter()
            .all(|n| n["spec"]["podCIDR"].is_string())
            .then_some(())
    });
    h.stop_controllers();
    std::thread::sleep(Duration::from_secs(1));
    apply(&k, &pod_yaml("late", ""));
    apply(
        &k,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: late\nspec:\n  selector:\n    app: web\n  ports:\n  - port: 80\n    targetPort: http\n",
    );
    k.run_ok(&["create", "namespace", "later"]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(get_json(&k, &["pod", "late"]).unwrap()["spec"]["nodeName"].is_null());
    assert!(get_json(&k, &["sa", "default", "-n", "later"]).is_none());
    h.start_controllers();
    wait_for(
        "late bound and in its Service's endpoints",
        Duration::from_secs(60),
        || {
            let eps = get_json(&k, &["endpoints", "late"])?;
            (eps["subsets"][0]["addresses"][0]["targetRef"]["name"] == "late").then_some(())
        },
    );
    wait_for(
        "the new namespace's default SA",
        Duration::from_secs(30),
        || get_json(&k, &["sa", "default", "-n", "later"]).map(|_| ()),
    );
    // Nothing was done twice: still one slice.
    let slices = get_json(
        &k,
        &["endpointslices", "-l", "kubernetes.io/service-name=late"],
    )
    .unwrap();
    assert_eq!(slices["items"].as_array().unwrap().len(), 1);
}
