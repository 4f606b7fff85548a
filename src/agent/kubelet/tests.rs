//! The pod worker's state machine over the runtime, network and API fakes.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

use super::api::FakePodApi;
use super::images::ImageManager;
use super::worker::{Context, Flow, PodWorker};
use crate::agent::network::fake::{FakeFirewall, FakeNetOps};
use crate::agent::network::{NetworkConfig, PodNetwork};
use crate::agent::runtime::{
    ContainerId, ContainerRuntime, ExitReason, FakeCall, FakeRuntime, ImageInfo,
};

struct Env {
    rt: Arc<FakeRuntime>,
    api: Arc<FakePodApi>,
    ctx: Arc<Context>,
    _dir: tempfile::TempDir,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let rt = Arc::new(FakeRuntime::new());
    rt.add_image(ImageInfo {
        reference: "docker.io/library/busybox:1".into(),
        id: "sha256:img".into(),
        digest: "sha256:m".into(),
        chain_id: "sha256:l".into(),
        config: Default::default(),
    });
    let mut cfg = NetworkConfig::new("10.42.0.0/24".parse().unwrap(), dir.path().join("net"));
    cfg.netns_dir = dir.path().join("netns");
    let net = PodNetwork::with_ops(
        cfg,
        Arc::new(FakeNetOps::new()),
        Arc::new(FakeFirewall::new()),
    )
    .unwrap();
    net.ensure_host().await.unwrap();
    let api = Arc::new(FakePodApi::default());
    let ctx = Arc::new(Context {
        runtime: rt.clone(),
        network: Arc::new(net),
        api: api.clone(),
        images: Arc::new(ImageManager::new(rt.clone(), dir.path().join("images"))),
        fs: Arc::new(crate::hostos::fake::FakeFsOps::new()),
        node_name: "n1".into(),
        host_ip: "192.168.1.2".parse().unwrap(),
        cluster_dns: "10.43.0.10".parse().unwrap(),
        cluster_domain: "cluster.local".into(),
        resolv_conf: dir.path().join("resolv.conf"),
        pods_dir: dir.path().join("pods"),
        log_root: dir.path().join("logs"),
        node_cpu_millis: 4000,
        node_memory_bytes: 1 << 30,
    });
    Env {
        rt,
        api,
        ctx,
        _dir: dir,
    }
}

fn pod(extra: serde_json::Value) -> Pod {
    let mut v = serde_json::json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "0b3c5a4e-0000-4000-8000-000000000001"},
        "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": "busybox:1", "command": ["httpd"], "env": [{"name": "A", "value": "1"}]}]},
    });
    if let serde_json::Value::Object(m) = extra {
        for (k, val) in m {
            v["spec"][k] = val;
        }
    }
    serde_json::from_value(v).unwrap()
}

fn created(rt: &FakeRuntime) -> Vec<ContainerId> {
    rt.calls()
        .into_iter()
        .filter_map(|c| match c {
            FakeCall::Start(id) => Some(id),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn starts_the_pod_and_reports_running() {
    let e = env().await;
    let p = pod(serde_json::json!({}));
    let mut w = PodWorker::new(e.ctx.clone(), &p);
    assert_eq!(w.sync(Some(&p)).await, Flow::Continue);
    let ids = created(&e.rt);
    assert_eq!(ids.len(), 1);
    let spec = e.rt.spec_of(&ids[0]).unwrap();
    assert_eq!(spec.command, vec!["httpd"]);
    assert!(spec
        .netns_path
        .unwrap()
        .ends_with("rk3s-0b3c5a4e-0000-4000-8000-000000000001"));
    for file in ["/etc/resolv.conf", "/etc/hostname", "/etc/hosts"] {
        assert!(spec.mounts.iter().any(|m| m.destination == file), "{file}");
    }
    assert!(spec
        .log_path
        .ends_with("default_web_0b3c5a4e-0000-4000-8000-000000000001/app/0.log"));
    let s = e.api.last_status().unwrap();
    assert_eq!(s["phase"], "Running");
    assert!(s["podIP"].as_str().unwrap().starts_with("10.42.0."));
    assert_eq!(s["containerStatuses"][0]["ready"], true);
    assert_eq!(
        s["containerStatuses"][0]["imageID"],
        "docker.io/library/busybox@sha256:m"
    );
    // Level-triggered: a second pass changes nothing.
    w.sync(Some(&p)).await;
    assert_eq!(created(&e.rt).len(), 1);
}

#[tokio::test]
async fn crashing_container_backs_off() {
    let e = env().await;
    let p = pod(serde_json::json!({}));
    let mut w = PodWorker::new(e.ctx.clone(), &p);
    w.sync(Some(&p)).await;
    let first = created(&e.rt)[0].clone();
    e.rt.exit(&first, 1, ExitReason::Completed);
    w.sync(Some(&p)).await;
    // The first restart is immediate.
    let ids = created(&e.rt);
    assert_eq!(ids.len(), 2);
    assert_eq!(e.rt.spec_of(&ids[1]).unwrap().restart_count, 1);
    e.rt.exit(&ids[1], 1, ExitReason::Completed);
    w.sync(Some(&p)).await;
    assert_eq!(created(&e.rt).len(), 2, "the second restart waits 10 s");
    let s = e.api.last_status().unwrap();
    let cs = &s["containerStatuses"][0];
    assert_eq!(cs["state"]["waiting"]["reason"], "CrashLoopBackOff");
    assert!(cs["state"]["waiting"]["message"]
        .as_str()
        .unwrap()
        .starts_with("back-off 10s"));
    assert_eq!(cs["lastState"]["terminated"]["exitCode"], 1);
    assert_eq!(cs["lastState"]["terminated"]["reason"], "Error");
    assert_eq!(cs["restartCount"], 1);
    assert_eq!(s["phase"], "Running");
}

#[tokio::test]
async fn oom_and_never_restart() {
    let e = env().await;
    let p = pod(serde_json::json!({"restartPolicy": "Never"}));
    let mut w = PodWorker::new(e.ctx.clone(), &p);
    w.sync(Some(&p)).await;
    let id = created(&e.rt)[0].clone();
    e.rt.exit(&id, 137, ExitReason::OomKilled);
    w.sync(Some(&p)).await;
    let s = e.api.last_status().unwrap();
    assert_eq!(
        s["containerStatuses"][0]["state"]["terminated"]["reason"],
        "OOMKilled"
    );
    assert_eq!(s["phase"], "Failed");
    assert_eq!(created(&e.rt).len(), 1);
}

#[tokio::test]
async fn missing_image_is_err_image_pull_then_backoff() {
    let e = env().await;
    let mut p = pod(serde_json::json!({}));
    p.spec.as_mut().unwrap().containers[0].image = Some("nope:1".into());
    let mut w = PodWorker::new(e.ctx.clone(), &p);
    w.sync(Some(&p)).await;
    let s = e.api.last_status().unwrap();
    assert_eq!(
        s["containerStatuses"][0]["state"]["waiting"]["reason"],
        "ErrImagePull"
    );
    assert_eq!(s["phase"], "Pending");
    w.sync(Some(&p)).await;
    let s = e.api.last_status().unwrap();
    assert_eq!(
        s["containerStatuses"][0]["state"]["waiting"]["reason"],
        "ErrImagePull"
    );
    tokio::time::sleep(Duration::from_millis(4100)).await;
    w.sync(Some(&p)).await;
    let s = e.api.last_status().unwrap();
    assert_eq!(
        s["containerStatuses"][0]["state"]["waiting"]["reason"],
        "ImagePullBackOff"
    );
}

#[tokio::test]
async fn init_containers_run_first_in_order() {
    let e = env().await;
    let p = pod(serde_json::json!({"initContainers": [
        {"name": "i1", "image": "busybox:1"},
        {"name": "i2", "image": "busybox:1"},
    ]}));
    let mut w = PodWorker::new(e.ctx.clone(), &p);
    w.sync(Some(&p)).await;
    let ids = created(&e.rt);
    assert_eq!(ids.len(), 1);
    assert_eq!(e.rt.spec_of(&ids[0]).unwrap().container_name, "i1");
    assert_eq!(e.api.last_status().unwrap()["phase"], "Pending");
    e.rt.exit(&ids[0], 0, ExitReason::Completed);
    w.sync(Some(&p)).await;
    let ids = created(&e.rt);
    assert_eq!(e.rt.spec_of(&ids[1]).unwrap().container_name, "i2");
    e.rt.exit(&ids[1], 0, ExitReason::Completed);
    w.sync(Some(&p)).await;
    let ids = created(&e.rt);
    assert_eq!(e.rt.spec_of(&ids[2]).unwrap().container_name, "app");
    let s = e.api.last_status().unwrap();
    assert_eq!(
        s["initContainerStatuses"][1]["state"]["terminated"]["reason"],
        "Completed"
    );
    assert_eq!(s["phase"], "Running");
}

#[tokio::test]
async fn env_and_config_errors() {
    let e = env().await;
    let mut p = pod(serde_json::json!({}));
    p.spec.as_mut().unwrap().containers[0].env = Some(vec![serde_json::from_value(
        serde_json::json!({"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "k"}}}),
    ).unwrap()]);
    let mut w = PodWorker::new(e.ctx.clone(), &p);
    w.sync(Some(&p)).await;
    let s = e.api.last_status().unwrap();
    assert_eq!(
        s["containerStatuses"][0]["state"]["waiting"]["reason"],
        "CreateContainerConfigError"
    );
    e.api.add_config_map("default", "cfg", &[("k", "v")]);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    w.sync(Some(&p)).await;
    let id = created(&e.rt)[0].clone();
    assert!(e
        .rt
        .spec_of(&id)
        .unwrap()
        .env
        .contains(&("X".into(), "v".into())));
}

#[tokio::test]
async fn deletion_stops_tears_down_and_deletes() {
    let e = env().await;
    let mut p = pod(serde_json::json!({}));
    let mut w = PodWorker::new(e.ctx.clone(), &p);
    w.sync(Some(&p)).await;
    let id = created(&e.rt)[0].clone();
    // The container's log directory, as the log shim would have made it.
    let logs = e.ctx.log_root.join(format!(
        "default_web_{}",
        p.metadata.uid.clone().unwrap_or_default()
    ));
    std::fs::create_dir_all(logs.join("app")).unwrap();
    p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    p.metadata.deletion_grace_period_seconds = Some(7);
    assert_eq!(w.sync(Some(&p)).await, Flow::Finished);
    // The grace left after preStop hooks (none here): just under 7 s.
    assert!(e.rt.calls().iter().any(|c| matches!(c, FakeCall::Stop(s, g)
        if *s == id && *g <= Duration::from_secs(7) && *g > Duration::from_secs(6))));
    assert!(e.rt.list(&Default::default()).await.unwrap().is_empty());
    assert_eq!(
        e.api.deleted.lock().unwrap().clone(),
        vec!["default/web".to_string()]
    );
    assert!(!logs.exists(), "the deleted pod's logs are removed");
}

#[tokio::test]
async fn restarted_worker_adopts_without_restarting() {
    let e = env().await;
    let p = pod(serde_json::json!({}));
    let mut w = PodWorker::new(e.ctx.clone(), &p);
    w.sync(Some(&p)).await;
    let ip = e.api.last_status().unwrap()["podIP"].clone();
    drop(w);
    // A new agent: containers by labels, network by recover().
    let found = e.rt.list(&Default::default()).await.unwrap();
    let recovery = e.ctx.network.recover().await.unwrap();
    let mut w = PodWorker::new(e.ctx.clone(), &p);
    w.adopt(&found);
    let (_, info) = recovery.live[0].clone();
    w.adopt_network(std::net::IpAddr::V4(info.ip), info.netns_path);
    w.sync(Some(&p)).await;
    assert_eq!(created(&e.rt).len(), 1, "nothing restarted");
    let s = e.api.last_status().unwrap();
    assert_eq!(s["podIP"], ip);
    assert_eq!(
        s["containerStatuses"][0]["containerID"],
        format!("containerd://{}", found[0].id)
    );
}

#[tokio::test]
async fn exec_liveness_failure_restarts_and_pre_stop_runs() {
    let e = env().await;
    let mut p = pod(serde_json::json!({}));
    let c = &mut p.spec.as_mut().unwrap().containers[0];
    c.liveness_probe = Some(
        serde_json::from_value(serde_json::json!({
            "exec": {"command": ["check"]}, "periodSeconds": 1, "failureThreshold": 1,
        }))
        .unwrap(),
    );
    c.lifecycle = Some(
        serde_json::from_value(serde_json::json!({
            "preStop": {"exec": {"command": ["drain"]}},
        }))
        .unwrap(),
    );
    let mut w = PodWorker::new(e.ctx.clone(), &p);
    w.sync(Some(&p)).await;
    let id = created(&e.rt)[0].clone();
    w.sync(Some(&p)).await;
    assert!(e
        .rt
        .calls()
        .contains(&FakeCall::Exec(id.clone(), vec!["check".into()])));
    e.rt.script_exec(&id, 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    w.sync(Some(&p)).await;
    assert!(
        e.rt.calls()
            .iter()
            .any(|c| matches!(c, FakeCall::Stop(s, _) if *s == id)),
        "liveness failure stops the container"
    );
    w.sync(Some(&p)).await;
    let ids = created(&e.rt);
    assert_eq!(ids.len(), 2, "restarted after the liveness failure");
    p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    assert_eq!(w.sync(Some(&p)).await, Flow::Finished);
    assert!(e
        .rt
        .calls()
        .contains(&FakeCall::Exec(ids[1].clone(), vec!["drain".into()])));
}

#[tokio::test]
async fn an_ephemeral_container_runs_once_in_its_targets_namespaces() {
    let e = env().await;
    let mut p = pod(serde_json::json!({}));
    let mut w = PodWorker::new(e.ctx.clone(), &p);
    w.sync(Some(&p)).await;
    let app = created(&e.rt)[0].clone();
    let app_pid = e.rt.status(&app).await.unwrap().pid.unwrap();
    p.spec.as_mut().unwrap().ephemeral_containers = Some(vec![serde_json::from_value(
        serde_json::json!({"name": "debugger-x", "image": "busybox:1", "command": ["ps"],
                           "targetContainerName": "app"}),
    )
    .unwrap()]);
    w.sync(Some(&p)).await;
    let ids = created(&e.rt);
    assert_eq!(ids.len(), 2);
    let spec = e.rt.spec_of(&ids[1]).unwrap();
    assert_eq!(spec.container_name, "debugger-x");
    assert_eq!(spec.command, vec!["ps"]);
    assert_eq!(
        spec.pid_ns_path.unwrap().to_str().unwrap(),
        format!("/proc/{app_pid}/ns/pid")
    );
    assert_eq!(spec.netns_path, e.rt.spec_of(&app).unwrap().netns_path);
    let s = e.api.last_status().unwrap();
    let es = &s["ephemeralContainerStatuses"][0];
    assert_eq!(es["name"], "debugger-x");
    assert!(es["state"]["running"].is_object(), "{s}");
    assert_eq!(es["ready"], false);
    // It exits and is never restarted; the pod keeps running.
    e.rt.exit(&ids[1], 0, ExitReason::Completed);
    w.sync(Some(&p)).await;
    w.sync(Some(&p)).await;
    assert_eq!(created(&e.rt).len(), 2);
    let s = e.api.last_status().unwrap();
    assert_eq!(
        s["ephemeralContainerStatuses"][0]["state"]["terminated"]["exitCode"],
        0
    );
    assert_eq!(s["phase"], "Running");
    assert_eq!(s["containerStatuses"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn share_process_namespace_puts_every_container_in_the_pods_pid_namespace() {
    let e = env().await;
    let two = serde_json::json!([
        {"name": "a", "image": "busybox:1", "command": ["sleep", "3600"]},
        {"name": "b", "image": "busybox:1", "command": ["sleep", "3600"]}]);
    let init = serde_json::json!([{"name": "i", "image": "busybox:1", "command": ["true"]}]);
    let mut p = pod(serde_json::json!({"containers": two, "initContainers": init,
                                       "shareProcessNamespace": true}));
    let uid = p.metadata.uid.clone().unwrap();
    let mut w = PodWorker::new(e.ctx.clone(), &p);
    w.sync(Some(&p)).await;
    e.rt.exit(&created(&e.rt)[0], 0, ExitReason::Completed);
    w.sync(Some(&p)).await;
    let ids = created(&e.rt);
    assert_eq!(ids.len(), 3, "the init container, then a and b");
    let pause = format!("/proc/fake-pause-{uid}/ns/pid");
    for id in &ids {
        let spec = e.rt.spec_of(id).unwrap();
        let path = spec.pid_ns_path.as_ref().map(|p| p.display().to_string());
        assert_eq!(path.as_deref(), Some(pause.as_str()), "{}", spec.container_name);
        assert!(!spec.host_pid);
    }
    // An ephemeral container with a target joins the pod's namespace too
    // (CRI's TARGET mode applies only where each container has its own).
    p.spec.as_mut().unwrap().ephemeral_containers = Some(vec![serde_json::from_value(
        serde_json::json!({"name": "debugger", "image": "busybox:1", "targetContainerName": "a"}),
    )
    .unwrap()]);
    w.sync(Some(&p)).await;
    let debugger = e.rt.spec_of(created(&e.rt).last().unwrap()).unwrap();
    assert_eq!(debugger.container_name, "debugger");
    assert_eq!(debugger.pid_ns_path.unwrap().display().to_string(), pause);
    // Termination stops the pause after the containers.
    w.terminate(Duration::from_secs(1)).await;
    let calls = e.rt.calls();
    let released = calls
        .iter()
        .position(|c| *c == FakeCall::RemovePodPidNamespace(uid.clone()))
        .expect("the pause is stopped");
    let last_stop = calls
        .iter()
        .rposition(|c| matches!(c, FakeCall::Stop(..)))
        .unwrap();
    assert!(released > last_stop, "{calls:?}");
}

#[tokio::test]
async fn without_share_process_namespace_each_container_has_its_own() {
    let e = env().await;
    let two = serde_json::json!([
        {"name": "a", "image": "busybox:1"}, {"name": "b", "image": "busybox:1"}]);
    let p = pod(serde_json::json!({"containers": two}));
    let mut w = PodWorker::new(e.ctx.clone(), &p);
    w.sync(Some(&p)).await;
    let ids = created(&e.rt);
    assert_eq!(ids.len(), 2);
    for id in &ids {
        assert_eq!(e.rt.spec_of(id).unwrap().pid_ns_path, None);
    }
    assert!(!e
        .rt
        .calls()
        .iter()
        .any(|c| matches!(c, FakeCall::PodPidNamespace(_))));
}

#[tokio::test]
async fn a_pause_that_cannot_start_keeps_the_container_waiting() {
    let e = env().await;
    let p = pod(serde_json::json!({"shareProcessNamespace": true}));
    e.rt.fail_next("pod_pid_namespace", "no pause for you");
    let mut w = PodWorker::new(e.ctx.clone(), &p);
    w.sync(Some(&p)).await;
    assert!(created(&e.rt).is_empty(), "no container in a namespace of its own");
    let s = e.api.last_status().unwrap();
    let waiting = &s["containerStatuses"][0]["state"]["waiting"];
    assert_eq!(waiting["reason"], "CreateContainerError", "{s}");
    assert!(waiting["message"].as_str().unwrap().contains("no pause for you"));
}
