//! Deployments, ReplicaSets, ReplicationControllers, DaemonSets and StatefulSets.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams};
use kube::ResourceExt;

use super::harness::*;

#[test]
fn deployment_creates_rolls_within_bounds_undoes_and_scales() {
    let c = Cluster::start(&["n1", "n2", "n3"]);
    c.kubectl
        .run_ok(&["create", "deployment", "web", "--image=x", "--replicas=3"]);
    wait_for("3 ready pods", 60, || {
        let pods = live(c.pods("app=web"));
        (pods.len() == 3 && pods.iter().all(ready)).then_some(())
    });
    let out = c
        .kubectl
        .run_ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(
        out.contains("deployment \"web\" successfully rolled out"),
        "{out}"
    );

    // Ownership: Deployment -> ReplicaSet -> pods, controller refs that block owner deletion.
    let d: Deployment = c.get("web");
    let rss: Vec<ReplicaSet> = c.list();
    assert_eq!(rss.len(), 1);
    let rs = &rss[0];
    let oref = &rs.owner_references()[0];
    assert_eq!(
        (oref.kind.as_str(), oref.uid.as_str()),
        ("Deployment", d.uid().unwrap().as_str())
    );
    assert_eq!(
        (oref.controller, oref.block_owner_deletion),
        (Some(true), Some(true))
    );
    let hash = rs
        .labels()
        .get("pod-template-hash")
        .cloned()
        .expect("pod-template-hash label");
    assert_eq!(rs.name_any(), format!("web-{hash}"));
    assert_eq!(
        rs.annotations()
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("1")
    );
    for p in live(c.pods("app=web")) {
        let r = &p.owner_references()[0];
        assert_eq!(
            (r.kind.as_str(), r.uid.as_str(), r.controller),
            ("ReplicaSet", rs.uid().unwrap().as_str(), Some(true))
        );
        assert!(p.name_any().starts_with(&format!("web-{hash}-")));
    }
    let st = d.status.clone().unwrap();
    assert_eq!(
        (
            st.replicas,
            st.ready_replicas,
            st.available_replicas,
            st.updated_replicas
        ),
        (Some(3), Some(3), Some(3), Some(3))
    );
    let conds = st.conditions.unwrap();
    assert!(conds.iter().any(|c| c.type_ == "Available"
        && c.status == "True"
        && c.reason.as_deref() == Some("MinimumReplicasAvailable")));
    assert!(
        conds
            .iter()
            .any(|c| c.type_ == "Progressing"
                && c.reason.as_deref() == Some("NewReplicaSetAvailable"))
    );

    let described = c.kubectl.run_ok(&["describe", "deployment", "web"]);
    assert!(
        described.contains("ScalingReplicaSet") && described.contains("Scaled up replica set"),
        "{described}"
    );

    // A rolling update with 3 replicas: maxSurge 1, maxUnavailable 0 (25% each, kube's rounding).
    let watching = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (client, watching) = (c.client.clone(), watching.clone());
        let handle = c.rt.handle().clone();
        std::thread::spawn(move || {
            let api: Api<Pod> = Api::namespaced(client, "default");
            let (mut max_pods, mut min_ready) = (0, usize::MAX);
            while watching.load(std::sync::atomic::Ordering::SeqCst) {
                if let Ok(l) = handle.block_on(api.list(&ListParams::default().labels("app=web"))) {
                    let pods = live(l.items);
                    max_pods = max_pods.max(pods.len());
                    min_ready = min_ready.min(pods.iter().filter(|p| ready(p)).count());
                }
                std::thread::sleep(Duration::from_millis(30));
            }
            (max_pods, min_ready)
        })
    };
    c.kubectl.run_ok(&["set", "image", "deployment/web", "x=y"]);
    let out = c
        .kubectl
        .run_ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    watching.store(false, std::sync::atomic::Ordering::SeqCst);
    let (max_pods, min_ready) = sampler.join().unwrap();
    assert!(
        max_pods <= 4,
        "more than replicas + maxSurge pods at once: {max_pods}"
    );
    assert!(
        min_ready >= 3,
        "fewer than replicas - maxUnavailable ready pods at once: {min_ready}"
    );
    wait_for("only new pods", 30, || {
        let pods = live(c.pods("app=web"));
        (pods.len() == 3 && pods.iter().all(|p| image(p) == "y")).then_some(())
    });
    assert_eq!(c.list::<ReplicaSet>().len(), 2);
    let history = c.kubectl.run_ok(&["rollout", "history", "deployment/web"]);
    assert!(history.contains('1') && history.contains('2'), "{history}");

    // Undo goes back to the first template, as revision 3 of the first ReplicaSet.
    c.kubectl.run_ok(&["rollout", "undo", "deployment/web"]);
    let out = c
        .kubectl
        .run_ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    wait_for("old image back", 30, || {
        let pods = live(c.pods("app=web"));
        (pods.len() == 3 && pods.iter().all(|p| image(p) == "x")).then_some(())
    });
    let first: ReplicaSet = c.get(&rs.name_any());
    assert_eq!(
        first
            .annotations()
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("3")
    );
    assert_eq!(first.spec.unwrap().replicas, Some(3));

    // Scale through the scale subresource, or a patch if it is not served yet.
    if !c
        .kubectl
        .run(&["scale", "deployment/web", "--replicas=5"])
        .status
        .success()
    {
        c.kubectl.run_ok(&[
            "patch",
            "deployment/web",
            "-p",
            r#"{"spec":{"replicas":5}}"#,
        ]);
    }
    wait_for("5 ready pods", 60, || {
        let pods = live(c.pods("app=web"));
        (pods.len() == 5 && pods.iter().all(ready)).then_some(())
    });
    c.kubectl
        .run_ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);

    // A restart rolls every pod onto a new ReplicaSet.
    c.kubectl.run_ok(&["rollout", "restart", "deployment/web"]);
    let out = c
        .kubectl
        .run_ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    assert_eq!(c.list::<ReplicaSet>().len(), 3);

    // Pause holds a template change back; resume lets it through.
    c.kubectl.run_ok(&["rollout", "pause", "deployment/web"]);
    c.kubectl.run_ok(&["set", "image", "deployment/web", "x=z"]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(live(c.pods("app=web")).iter().all(|p| image(p) != "z"));
    let d: Deployment = c.get("web");
    assert!(d
        .status
        .unwrap()
        .conditions
        .unwrap()
        .iter()
        .any(|c| c.reason.as_deref() == Some("DeploymentPaused")));
    c.kubectl.run_ok(&["rollout", "resume", "deployment/web"]);
    c.kubectl
        .run_ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    wait_for("image z everywhere", 30, || {
        let pods = live(c.pods("app=web"));
        (pods.len() == 5 && pods.iter().all(|p| image(p) == "z")).then_some(())
    });
}

#[test]
fn deployment_past_its_progress_deadline_reports_it() {
    let c = Cluster::start(&["n1"]);
    c.apply(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: stuck}
spec:
  replicas: 2
  progressDeadlineSeconds: 2
  selector: {matchLabels: {app: stuck}}
  template:
    metadata: {labels: {app: stuck, sim: hang}}
    spec: {containers: [{name: c, image: a}]}
"#,
    );
    let d: Deployment = wait_for("ProgressDeadlineExceeded", 60, || {
        let d: Deployment = c.get("stuck");
        let conds = d.status.as_ref()?.conditions.as_ref()?;
        conds
            .iter()
            .any(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded"))
            .then_some(d.clone())
    });
    let conds = d.status.unwrap().conditions.unwrap();
    let progressing = conds.iter().find(|c| c.type_ == "Progressing").unwrap();
    assert_eq!(progressing.status, "False");
    let rs = &c.list::<ReplicaSet>()[0];
    assert_eq!(
        progressing.message.as_deref(),
        Some(
            format!(
                "ReplicaSet \"{}\" has timed out progressing.",
                rs.name_any()
            )
            .as_str()
        )
    );
    let available = conds.iter().find(|c| c.type_ == "Available").unwrap();
    assert_eq!(
        (available.status.as_str(), available.reason.as_deref()),
        ("False", Some("MinimumReplicasUnavailable"))
    );
    let out = c
        .kubectl
        .run(&["rollout", "status", "deployment/stuck", "--timeout=20s"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("exceeded its progress deadline"), "{err}");
}

#[test]
fn statefulset_rolls_from_the_highest_ordinal() {
    let c = Cluster::start(&["n1"]);
    c.apply(
        r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  replicas: 3
  serviceName: db
  updateStrategy: {type: RollingUpdate}
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: c, image: a}]}
"#,
    );
    c.kubectl
        .run_ok(&["rollout", "status", "sts/db", "--timeout=60s"]);
    let uids = |name: &str| -> Option<String> {
        c.pods("app=db")
            .into_iter()
            .find(|p| p.name_any() == name)?
            .uid()
    };
    let before: Vec<_> = ["db-0", "db-1", "db-2"].iter().map(|n| uids(n)).collect();
    c.kubectl.run_ok(&["set", "image", "sts/db", "c=b"]);
    c.kubectl
        .run_ok(&["rollout", "status", "sts/db", "--timeout=60s"]);
    let pods = wait_for("all db pods on image b", 60, || {
        let pods = live(c.pods("app=db"));
        (pods.len() == 3 && pods.iter().all(|p| image(p) == "b" && ready(p))).then_some(pods)
    });
    let after: Vec<_> = ["db-0", "db-1", "db-2"].iter().map(|n| uids(n)).collect();
    assert!(
        before.iter().zip(&after).all(|(b, a)| b != a),
        "every pod was replaced"
    );
    let created = |n: &str| {
        pods.iter()
            .find(|p| p.name_any() == n)
            .unwrap()
            .metadata
            .creation_timestamp
            .clone()
            .unwrap()
            .0
    };
    assert!(created("db-2") <= created("db-1") && created("db-1") <= created("db-0"));
    let history = c.kubectl.run_ok(&["rollout", "history", "sts/db"]);
    assert!(history.contains('1') && history.contains('2'), "{history}");
    let sts: StatefulSet = c.get("db");
    let st = sts.status.unwrap();
    assert_eq!(st.current_revision, st.update_revision);
}

#[test]
fn recreate_deployment_replaces_all_pods_at_once() {
    let c = Cluster::start(&["n1"]);
    c.apply(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: db}
spec:
  replicas: 2
  strategy: {type: Recreate}
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: db, image: a}]}
"#,
    );
    c.kubectl
        .run_ok(&["rollout", "status", "deployment/db", "--timeout=60s"]);
    c.kubectl.run_ok(&["set", "image", "deployment/db", "db=b"]);
    c.kubectl
        .run_ok(&["rollout", "status", "deployment/db", "--timeout=60s"]);
    wait_for("two pods of image b", 30, || {
        let pods = live(c.pods("app=db"));
        (pods.len() == 2 && pods.iter().all(|p| image(p) == "b" && ready(p))).then_some(())
    });
}

#[test]
fn replicaset_adopts_orphans_and_replaces_deleted_pods() {
    let c = Cluster::start(&["n1"]);
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: orphan, labels: {app: rs}}
spec: {containers: [{name: c, image: a}]}
"#,
    );
    c.apply(
        r#"
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: rs}
spec:
  replicas: 2
  selector: {matchLabels: {app: rs}}
  template:
    metadata: {labels: {app: rs}}
    spec: {containers: [{name: c, image: a}]}
"#,
    );
    let pods = wait_for("2 ready pods", 60, || {
        let pods = live(c.pods("app=rs"));
        (pods.len() == 2 && pods.iter().all(ready)).then_some(pods)
    });
    let orphan = pods
        .iter()
        .find(|p| p.name_any() == "orphan")
        .expect("the orphan stays and is adopted");
    assert_eq!(orphan.owner_references()[0].name, "rs");
    let rs: ReplicaSet = wait_for("rs status", 30, || {
        let rs: ReplicaSet = c.get("rs");
        (rs.status.as_ref().and_then(|s| s.ready_replicas) == Some(2)).then_some(rs)
    });
    assert_eq!(
        rs.status.as_ref().unwrap().observed_generation,
        rs.metadata.generation
    );
    // A controller restart neither duplicates nor loses pods.
    c.restart_controllers();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(live(c.pods("app=rs")).len(), 2);
    c.kubectl.run_ok(&["delete", "pod", "orphan"]);
    wait_for("a replacement pod", 60, || {
        let pods = live(c.pods("app=rs"));
        (pods.len() == 2 && pods.iter().all(|p| p.name_any() != "orphan")).then_some(())
    });
    // Relabelled pods are released.
    let victim = live(c.pods("app=rs"))[0].name_any();
    c.kubectl
        .run_ok(&["label", "pod", &victim, "app=other", "--overwrite"]);
    wait_for("the relabelled pod released", 60, || {
        let p: Pod = c.get(&victim);
        (p.owner_references().is_empty() && live(c.pods("app=rs")).len() == 2).then_some(())
    });
    // A ReplicationController does the same with its equality selector.
    c.apply(
        r#"
apiVersion: v1
kind: ReplicationController
metadata: {name: rc}
spec:
  replicas: 2
  selector: {app: rc}
  template:
    metadata: {labels: {app: rc}}
    spec: {containers: [{name: c, image: a}]}
"#,
    );
    wait_for("2 ready rc pods", 60, || {
        let pods = live(c.pods("app=rc"));
        (pods.len() == 2 && pods.iter().all(ready)).then_some(())
    });
    wait_for("rc status", 30, || {
        let rc: k8s_openapi::api::core::v1::ReplicationController = c.get("rc");
        (rc.status?.available_replicas == Some(2)).then_some(())
    });
    let events = c.kubectl.run_ok(&["get", "events"]);
    assert!(events.contains("SuccessfulCreate"), "{events}");
}

#[test]
fn daemonset_runs_one_pod_per_node_including_later_nodes() {
    let c = Cluster::start(&["n1", "n2"]);
    c.apply(
        r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  updateStrategy: {type: RollingUpdate}
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec: {containers: [{name: a, image: a}]}
"#,
    );
    let on_nodes = |n: usize| {
        wait_for(&format!("{n} daemon pods"), 60, || {
            let pods = live(c.pods("app=agent"));
            let mut nodes: Vec<String> = pods
                .iter()
                .filter_map(|p| p.spec.as_ref()?.node_name.clone())
                .collect();
            nodes.sort();
            nodes.dedup();
            (pods.len() == n && nodes.len() == n && pods.iter().all(ready)).then_some(nodes)
        })
    };
    assert_eq!(on_nodes(2), ["n1", "n2"]);
    c.add_node("n3");
    assert_eq!(on_nodes(3), ["n1", "n2", "n3"]);
    let ds: DaemonSet = wait_for("daemonset status", 30, || {
        let ds: DaemonSet = c.get("agent");
        (ds.status.as_ref().is_some_and(|s| s.number_ready == 3)).then_some(ds)
    });
    let st = ds.status.unwrap();
    assert_eq!(
        (
            st.desired_number_scheduled,
            st.current_number_scheduled,
            st.number_misscheduled
        ),
        (3, 3, 0)
    );
    assert_eq!(st.updated_number_scheduled, Some(3));
    // A template change rolls node by node; the history has two revisions.
    c.kubectl.run_ok(&["set", "image", "ds/agent", "a=b"]);
    c.kubectl
        .run_ok(&["rollout", "status", "ds/agent", "--timeout=60s"]);
    wait_for("updated daemon pods", 60, || {
        let pods = live(c.pods("app=agent"));
        (pods.len() == 3 && pods.iter().all(|p| image(p) == "b" && ready(p))).then_some(())
    });
    let history = c.kubectl.run_ok(&["rollout", "history", "ds/agent"]);
    assert!(history.contains('1') && history.contains('2'), "{history}");
    // Undo copies revision 1's template back; it becomes revision 3.
    c.kubectl.run_ok(&["rollout", "undo", "ds/agent"]);
    c.kubectl
        .run_ok(&["rollout", "status", "ds/agent", "--timeout=60s"]);
    wait_for("daemon pods back on image a", 60, || {
        let pods = live(c.pods("app=agent"));
        (pods.len() == 3 && pods.iter().all(|p| image(p) == "a" && ready(p))).then_some(())
    });
    let revisions: Vec<i64> = c
        .list::<k8s_openapi::api::apps::v1::ControllerRevision>()
        .iter()
        .map(|r| r.revision)
        .collect();
    assert!(revisions.contains(&3), "{revisions:?}");
}

#[test]
fn statefulset_creates_pods_in_order_with_claims() {
    let c = Cluster::start(&["n1", "n2"]);
    c.apply(
        r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  replicas: 3
  serviceName: web
  selector: {matchLabels: {app: sts}}
  template:
    metadata: {labels: {app: sts}}
    spec: {containers: [{name: c, image: a}]}
  volumeClaimTemplates:
  - metadata: {name: data}
    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
"#,
    );
    let pods = wait_for("3 ready stateful pods", 60, || {
        let pods = live(c.pods("app=sts"));
        (pods.len() == 3 && pods.iter().all(ready)).then_some(pods)
    });
    let by_name = |n: &str| {
        pods.iter()
            .find(|p| p.name_any() == n)
            .unwrap_or_else(|| panic!("{n} missing"))
            .clone()
    };
    let ready_at = |p: &Pod| {
        p.status
            .as_ref()
            .unwrap()
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap()
            .last_transition_time
            .clone()
            .unwrap()
            .0
            .as_second()
    };
    // creationTimestamp has whole seconds.
    let created = |p: &Pod| p.metadata.creation_timestamp.clone().unwrap().0.as_second();
    let (w0, w1, w2) = (by_name("web-0"), by_name("web-1"), by_name("web-2"));
    assert!(
        created(&w1) >= ready_at(&w0),
        "web-1 was created before web-0 was ready"
    );
    assert!(
        created(&w2) >= ready_at(&w1),
        "web-2 was created before web-1 was ready"
    );
    for (i, p) in [&w0, &w1, &w2].into_iter().enumerate() {
        let l = p.labels();
        assert_eq!(
            l.get("statefulset.kubernetes.io/pod-name"),
            Some(&format!("web-{i}"))
        );
        assert_eq!(l.get("apps.kubernetes.io/pod-index"), Some(&i.to_string()));
        assert!(l
            .get("controller-revision-hash")
            .is_some_and(|h| h.starts_with("web-")));
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(
            (spec.hostname.clone(), spec.subdomain.clone()),
            (Some(format!("web-{i}")), Some("web".to_string()))
        );
        let claim = spec
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "data")
            .unwrap();
        assert_eq!(
            claim.persistent_volume_claim.as_ref().unwrap().claim_name,
            format!("data-web-{i}")
        );
    }
    let claims: Vec<String> = c
        .list::<PersistentVolumeClaim>()
        .iter()
        .map(|p| p.name_any())
        .collect();
    assert_eq!(claims.len(), 3, "{claims:?}");
    let sts: StatefulSet = wait_for("statefulset status", 30, || {
        let s: StatefulSet = c.get("web");
        (s.status.as_ref().and_then(|s| s.ready_replicas) == Some(3)).then_some(s)
    });
    let st = sts.status.unwrap();
    assert_eq!(
        (st.replicas, st.current_replicas, st.updated_replicas),
        (3, Some(3), Some(3))
    );
    assert_eq!(st.current_revision, st.update_revision);
    // Scale down removes the highest ordinal and keeps its claim.
    if !c
        .kubectl
        .run(&["scale", "sts/web", "--replicas=2"])
        .status
        .success()
    {
        c.kubectl
            .run_ok(&["patch", "sts/web", "-p", r#"{"spec":{"replicas":2}}"#]);
    }
    wait_for("web-2 gone", 60, || {
        let names: Vec<String> = live(c.pods("app=sts"))
            .iter()
            .map(|p| p.name_any())
            .collect();
        (names.len() == 2 && !names.contains(&"web-2".to_string())).then_some(())
    });
    assert_eq!(c.list::<PersistentVolumeClaim>().len(), 3);
}
