//! Issue 18's "done when" for local-path, on a two-node cluster
//! ([`common::multinode`]: the server with its built-in agent, and
//! `agent1`), real agents and containerd:
//!
//! - the default class `local-path` exists; a StatefulSet of 2 with a
//!   `volumeClaimTemplates` (no class named: the default is assigned) runs,
//!   each claim bound only after its pod was scheduled, onto a volume whose
//!   node affinity and `selected-node` are the pod's node; the directory
//!   `<pv>_<ns>_<claim>` holds what the pod wrote; a deleted pod's successor
//!   sees the file;
//! - a claim deleted while a pod uses it stays Terminating until the pod goes;
//! - deleting the StatefulSet and the claims removes the directories
//!   (reclaim Delete); a `Retain` class keeps its directory and volume
//!   (Released);
//! - a WaitForFirstConsumer claim stays Pending (WaitForFirstConsumer
//!   Event) until a pod uses it, then binds on the pod's node;
//! - a pod whose claim is unbound on an Immediate class gets kube's
//!   FailedScheduling message, and runs once a matching hostPath volume
//!   appears.
//!
//! Root-only: skips without `RK3S_E2E=1`.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use common::multinode::Cluster;
use common::privilege::require_e2e;

static SERIAL: Mutex<()> = Mutex::new(());

const STATEFULSET: &str = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
spec:
  serviceName: web
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: docker.io/rk3s/busybox:test
        command: [sh, -c, "[ -f /data/first ] || echo $HOSTNAME-$(cat /proc/sys/kernel/random/uuid) > /data/first; exec sleep 1000000"]
        volumeMounts:
        - {name: data, mountPath: /data}
  volumeClaimTemplates:
  - metadata:
      name: data
    spec:
      accessModes: [ReadWriteOnce]
      resources:
        requests: {storage: 16Mi}
"#;

fn field(c: &Cluster, kind: &str, name: &str, jsonpath: &str) -> String {
    let o = c.kubectl(&["get", kind, name, "-o", &format!("jsonpath={jsonpath}")]);
    common::twonode::text(&o.stdout)
}

fn exists(c: &Cluster, kind: &str, name: &str) -> bool {
    c.kubectl(&["get", kind, name]).status.success()
}

/// The PV of a bound claim and its directory on the host.
fn claim_volume(c: &Cluster, claim: &str) -> (String, PathBuf) {
    let pv = c.wait_for(&format!("claim {claim} Bound"), 120, || {
        let v = field(c, "pvc", claim, "{.spec.volumeName}");
        (field(c, "pvc", claim, "{.status.phase}") == "Bound" && !v.is_empty()).then_some(v)
    });
    let path = field(c, "pv", &pv, "{.spec.hostPath.path}");
    (pv, PathBuf::from(path))
}

fn pv_node(c: &Cluster, pv: &str) -> String {
    field(c, "pv", pv, "{.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0].values[0]}")
}

fn events_of(c: &Cluster, name: &str) -> String {
    c.kubectl_ok(&["get", "events", "--field-selector", &format!("involvedObject.name={name}"),
        "-o", "custom-columns=REASON:.reason,MESSAGE:.message", "--no-headers"])
}

fn running(c: &Cluster, pod: &str) {
    c.wait_for(&format!("{pod} Running"), 120, || {
        (c.pod_field(pod, "{.status.phase}") == "Running").then_some(())
    });
    c.track_pod(pod);
}

#[test]
fn local_path_statefulset_reclaim_and_wait_for_first_consumer() {
    if !require_e2e("e2e_storage") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = Cluster::start(1, &[]);
    let storage = c.dir.path().join("server-data/storage");

    // The default class, as k3s ships it.
    let sc = c.kubectl_ok(&["get", "storageclass", "local-path"]);
    assert!(sc.contains("local-path (default)") && sc.contains("rancher.io/local-path")
        && sc.contains("Delete") && sc.contains("WaitForFirstConsumer"), "{sc}");

    // A StatefulSet of two with a claim template.
    c.apply(STATEFULSET);
    running(&c, "web-0");
    running(&c, "web-1");
    let mut dirs = Vec::new();
    for i in 0..2 {
        let pod = format!("web-{i}");
        let claim = format!("data-web-{i}");
        assert_eq!(field(&c, "pvc", &claim, "{.spec.storageClassName}"), "local-path");
        let (pv, dir) = claim_volume(&c, &claim);
        let node = c.pod_field(&pod, "{.spec.nodeName}");
        assert_eq!(pv_node(&c, &pv), node, "the volume is on the pod's node");
        assert_eq!(field(&c, "pvc", &claim, "{.metadata.annotations.volume\\.kubernetes\\.io/selected-node}"), node);
        assert_eq!(field(&c, "pvc", &claim, "{.metadata.annotations.pv\\.kubernetes\\.io/bind-completed}"), "yes");
        assert_eq!(dir, storage.join(format!("{pv}_default_{claim}")));
        let first = c.wait_for(&format!("{pod} wrote its file"), 60, || {
            std::fs::read_to_string(dir.join("first")).ok().filter(|s| !s.is_empty())
        });
        assert!(first.starts_with(&pod), "{first}");
        dirs.push((dir, first));
    }
    let table = c.kubectl_ok(&["get", "pv,pvc"]);
    for h in ["CAPACITY", "ACCESS MODES", "RECLAIM POLICY", "STATUS", "CLAIM", "STORAGECLASS", "VOLUME"] {
        assert!(table.contains(h), "{h} missing from\n{table}");
    }
    assert!(table.contains("default/data-web-0") && table.contains("RWO") && table.contains("Bound"), "{table}");

    // A deleted pod's successor (same node: the volume's) sees the file.
    let old_uid = c.pod_field("web-0", "{.metadata.uid}");
    let node0 = c.pod_field("web-0", "{.spec.nodeName}");
    c.kubectl_ok(&["delete", "pod", "web-0", "--wait=false"]);
    c.wait_for("a new web-0 Running", 120, || {
        let uid = c.pod_field("web-0", "{.metadata.uid}");
        (!uid.is_empty() && uid != old_uid && c.pod_field("web-0", "{.status.phase}") == "Running").then_some(())
    });
    c.track_pod("web-0");
    assert_eq!(c.pod_field("web-0", "{.spec.nodeName}"), node0);
    let seen = c.kubectl_ok(&["exec", "web-0", "--", "cat", "/data/first"]);
    assert_eq!(seen.trim(), dirs[0].1.trim(), "the new pod sees the old pod's file");

    // A claim in use stays Terminating until its pod goes.
    c.kubectl_ok(&["delete", "pvc", "data-web-1", "--wait=false"]);
    std::thread::sleep(std::time::Duration::from_secs(5));
    assert!(!field(&c, "pvc", "data-web-1", "{.metadata.deletionTimestamp}").is_empty());
    let pvcs = c.kubectl_ok(&["get", "pvc", "data-web-1"]);
    assert!(pvcs.contains("Terminating"), "{pvcs}");
    assert!(dirs[1].0.is_dir());

    // Deleting the StatefulSet and the claims removes the directories.
    c.kubectl_ok(&["delete", "statefulset", "web", "--wait=false"]);
    c.wait_for("the web pods gone", 120, || {
        (!exists(&c, "pod", "web-0") && !exists(&c, "pod", "web-1")).then_some(())
    });
    c.wait_for("data-web-1 gone with its pod", 60, || (!exists(&c, "pvc", "data-web-1")).then_some(()));
    c.kubectl_ok(&["delete", "pvc", "data-web-0", "--wait=false"]);
    for (dir, _) in &dirs {
        c.wait_for(&format!("{} removed", dir.display()), 90, || (!dir.exists()).then_some(()));
    }
    c.wait_for("the volumes deleted", 60, || {
        c.kubectl_ok(&["get", "pv", "-o", "name"]).trim().is_empty().then_some(())
    });

    // WaitForFirstConsumer, on a Retain class: no binding before the pod.
    c.apply(r#"
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: keep}
provisioner: rancher.io/local-path
reclaimPolicy: Retain
volumeBindingMode: WaitForFirstConsumer
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: kept}
spec:
  storageClassName: keep
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 8Mi}}
"#);
    c.wait_for("the WaitForFirstConsumer event", 60, || {
        events_of(&c, "kept").contains("waiting for first consumer to be created before binding").then_some(())
    });
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(field(&c, "pvc", "kept", "{.status.phase}"), "Pending");
    assert_eq!(field(&c, "pvc", "kept", "{.spec.volumeName}"), "");
    c.apply(r#"
apiVersion: v1
kind: Pod
metadata: {name: keeper}
spec:
  terminationGracePeriodSeconds: 1
  nodeSelector: {kubernetes.io/hostname: agent1}
  containers:
  - name: app
    image: docker.io/rk3s/busybox:test
    command: [sh, -c, "echo kept > /data/sub/f; exec sleep 1000000"]
    volumeMounts:
    - {name: data, mountPath: /data/sub, subPath: nested}
  volumes:
  - name: data
    persistentVolumeClaim: {claimName: kept}
"#);
    running(&c, "keeper");
    let (pv, dir) = claim_volume(&c, "kept");
    assert_eq!(pv_node(&c, &pv), "agent1");
    let f = dir.join("nested/f");
    c.wait_for("the subPath file", 30, || std::fs::read_to_string(&f).ok().filter(|s| s == "kept\n"));
    c.kubectl_ok(&["delete", "pod", "keeper", "--wait=true", "--timeout=90s"]);
    c.kubectl_ok(&["delete", "pvc", "kept", "--wait=true", "--timeout=60s"]);
    c.wait_for("the Retain volume Released", 60, || {
        (field(&c, "pv", &pv, "{.status.phase}") == "Released").then_some(())
    });
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(f.exists(), "a Retain volume keeps its directory");
    c.kubectl_ok(&["delete", "pv", &pv, "--wait=true", "--timeout=60s"]);
    assert!(dir.exists(), "deleting a Retain volume leaves its directory to the admin");

    // An unbound claim on an Immediate class: kube's FailedScheduling, then
    // a matching hand-made hostPath volume lets the pod run.
    let manual = c.dir.path().join("manual-pv");
    c.apply(r#"
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: manual}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: Immediate
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: static}
spec:
  storageClassName: manual
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: Pod
metadata: {name: waiter}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: docker.io/rk3s/busybox:test
    command: [sh, -c, "echo static > /data/f; exec sleep 1000000"]
    volumeMounts:
    - {name: data, mountPath: /data}
  volumes:
  - name: data
    persistentVolumeClaim: {claimName: static}
"#);
    c.wait_for("FailedScheduling for the unbound claim", 60, || {
        events_of(&c, "waiter")
            .contains("0/2 nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.")
            .then_some(())
    });
    c.apply(&format!(r#"
apiVersion: v1
kind: PersistentVolume
metadata: {{name: manual-pv}}
spec:
  storageClassName: manual
  capacity: {{storage: 2Gi}}
  accessModes: [ReadWriteOnce, ReadOnlyMany]
  persistentVolumeReclaimPolicy: Retain
  hostPath: {{path: {}, type: DirectoryOrCreate}}
"#, manual.display()));
    running(&c, "waiter");
    assert_eq!(claim_volume(&c, "static").0, "manual-pv");
    assert_eq!(field(&c, "pv", "manual-pv", "{.metadata.annotations.pv\\.kubernetes\\.io/bound-by-controller}"), "yes");
    c.wait_for("the static volume's file", 30, || {
        std::fs::read_to_string(manual.join("f")).ok().filter(|s| s == "static\n")
    });
    c.kubectl_ok(&["delete", "pod", "waiter", "--wait=true", "--timeout=90s"]);
    assert!(Path::new(&manual).join("f").exists());
}
