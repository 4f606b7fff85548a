//! `metrics.k8s.io` and `/metrics` with the real kubectl, against an
//! in-process server and a fake kubelet on the node tunnel that reports
//! fixed figures: the shapes `kubectl top` reads, discovery, selectors,
//! RBAC (`view` may read metrics, `/metrics` needs `system:monitoring`) and
//! `nodes/<node>/proxy/metrics`.

mod common;

use std::time::{Duration, Instant};

use chrono::Utc;
use common::apiserver::TestServer;
use common::kubectl::Kubectl;
use rk3s::metrics::summary::{ContainerStats, CpuStats, MemoryStats, NodeStats, PodRef, PodStats, Summary};
use rk3s::pki::{AgentCert, Kubeconfig};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

fn cpu(nanocores: u64) -> Option<CpuStats> {
    Some(CpuStats {
        time: Utc::now(),
        usage_nano_cores: nanocores,
        usage_core_nano_seconds: nanocores * 100,
        window_seconds: 10.0,
    })
}

fn mem(bytes: u64) -> Option<MemoryStats> {
    Some(MemoryStats { time: Utc::now(), working_set_bytes: bytes, usage_bytes: bytes })
}

fn pod(ns: &str, name: &str, containers: &[(&str, u64, u64)]) -> PodStats {
    PodStats {
        pod_ref: PodRef { name: name.into(), namespace: ns.into(), uid: format!("uid-{name}") },
        containers: containers
            .iter()
            .map(|(c, n, b)| ContainerStats { name: c.to_string(), cpu: cpu(*n), memory: mem(*b) })
            .collect(),
    }
}

/// What the fake kubelet of node1 reports.
fn fixed_summary() -> Summary {
    Summary {
        node: NodeStats { node_name: "node1".into(), cpu: cpu(1_000_000_000), memory: mem(1 << 30) },
        pods: vec![
            pod("default", "web", &[("app", 200_000_000, 40 << 20), ("side", 50_000_000, 10 << 20)]),
            pod("default", "db", &[("db", 5_000_000, 100 << 20)]),
            pod("kube-system", "sys", &[("sys", 1_000_000, 1 << 20)]),
            // A pod the API does not know (deleted since) is left out.
            pod("default", "ghost", &[("g", 1, 1)]),
        ],
    }
}

fn start_fake_kubelet(server: &TestServer, rt: &tokio::runtime::Runtime, shutdown: &CancellationToken) {
    let summary = fixed_summary();
    let router = axum::Router::new()
        .route(
            rk3s::metrics::SUMMARY_PATH,
            axum::routing::get(move || {
                let s = summary.clone();
                async move { axum::Json(s) }
            }),
        )
        .route("/metrics", axum::routing::get(|| async { "fake_kubelet_metric 1\n" }));
    rt.spawn(rk3s::tunnel::run_client(
        rk3s::tunnel::ClientOptions {
            server: server.url().parse().unwrap(),
            tls: common::apiserver::signed_client_tls(
                &server.pki(),
                AgentCert::KubeletClient { node_name: "node1".into() },
            ),
            handler: rk3s::agent::kubelet_api::tunnel_handler(router),
            session: Default::default(),
        },
        shutdown.clone(),
    ));
}

/// `kubectl get --raw path`, reading its output as it comes (a scrape is
/// larger than a pipe's buffer, which `Kubectl::run` would wait on).
fn raw(k: &Kubectl, path: &str) -> std::process::Output {
    k.spawn(&["get", "--raw", path]).wait_with_output().expect("run kubectl")
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The whitespace-separated rows of a kubectl table, header included.
fn rows(text: &str) -> Vec<Vec<String>> {
    text.lines().map(|l| l.split_whitespace().map(String::from).collect()).collect()
}

#[test]
fn kubectl_top_reads_metrics_served_from_the_nodes() {
    let server = TestServer::start();
    let admin = server.kubectl();
    admin.run_with_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: node1\n  labels: {role: worker}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {name: web, labels: {app: web}}\nspec:\n  nodeName: node1\n  containers: [{name: app, image: busybox}, {name: side, image: busybox}]\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {name: db, labels: {app: db}}\nspec:\n  nodeName: node1\n  containers: [{name: db, image: busybox}]\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {name: sys, namespace: kube-system}\nspec:\n  nodeName: node1\n  containers: [{name: sys, image: busybox}]\n",
    );
    admin.run_ok(&[
        "patch", "node", "node1", "--subresource=status", "--type=merge", "-p",
        r#"{"status":{"capacity":{"cpu":"2","memory":"4Gi"},"allocatable":{"cpu":"2","memory":"4Gi"}}}"#,
    ]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    start_fake_kubelet(&server, &rt, &shutdown);

    // Discovery lists the group kubectl top looks for.
    let resources = admin.run_ok(&["api-resources", "--api-group=metrics.k8s.io", "-o", "name"]);
    assert_eq!(resources.split_whitespace().collect::<Vec<_>>(), ["nodes.metrics.k8s.io", "pods.metrics.k8s.io"]);

    let deadline = Instant::now() + Duration::from_secs(20);
    let nodes = loop {
        let o = admin.run(&["top", "nodes", "--no-headers"]);
        if o.status.success() && stdout(&o).contains("node1") {
            break stdout(&o);
        }
        assert!(Instant::now() < deadline, "kubectl top nodes never worked: {}", stderr(&o));
        std::thread::sleep(Duration::from_millis(300));
    };
    // One core of two, 1 GiB of 4.
    assert_eq!(rows(&nodes), [["node1", "1000m", "50%", "1024Mi", "25%"]], "{nodes}");

    let pods = admin.run_ok(&["top", "pods", "--no-headers"]);
    assert_eq!(rows(&pods), [["db", "5m", "100Mi"], ["web", "250m", "50Mi"]], "{pods}");
    let containers = admin.run_ok(&["top", "pods", "web", "--containers", "--no-headers"]);
    assert_eq!(rows(&containers), [["web", "app", "200m", "40Mi"], ["web", "side", "50m", "10Mi"]]);
    let all = admin.run_ok(&["top", "pods", "-A", "--no-headers"]);
    let names: Vec<_> = rows(&all).into_iter().map(|r| format!("{}/{}", r[0], r[1])).collect();
    assert_eq!(names, ["default/db", "default/web", "kube-system/sys"]);
    let selected = admin.run_ok(&["top", "pods", "-l", "app=web", "--no-headers"]);
    assert_eq!(rows(&selected)[0][0], "web");
    assert_eq!(rows(&selected).len(), 1);
    let missing = admin.run(&["top", "pod", "nope"]);
    assert!(!missing.status.success());
    assert!(stderr(&missing).contains("not found"), "{}", stderr(&missing));

    // metrics-server's shapes.
    let node: Value = serde_json::from_str(&admin.run_ok(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes/node1"])).unwrap();
    assert_eq!(node["kind"], "NodeMetrics");
    assert_eq!(node["apiVersion"], "metrics.k8s.io/v1beta1");
    assert_eq!(node["metadata"]["labels"]["role"], "worker");
    assert_eq!(node["usage"], serde_json::json!({"cpu": "1", "memory": "1Gi"}));
    assert_eq!(node["window"], "10s");
    assert!(node["timestamp"].as_str().unwrap().ends_with('Z'));
    let list: Value = serde_json::from_str(&admin.run_ok(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods"])).unwrap();
    assert_eq!(list["kind"], "PodMetricsList");
    assert_eq!(list["items"][1]["containers"][0], serde_json::json!({"name": "app", "usage": {"cpu": "200m", "memory": "40Mi"}}));
    // Nothing can be written.
    let write = admin.run(&["delete", "--raw", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/web"]);
    assert!(!write.status.success() && stderr(&write).contains("not allow"), "{}", stderr(&write));

    // A ServiceAccount bound to `view` reads metrics (the aggregated
    // reader role), not /metrics until it is in system:monitoring.
    admin.run_ok(&["create", "serviceaccount", "viewer"]);
    admin.run_ok(&["create", "clusterrolebinding", "viewer", "--clusterrole=view", "--serviceaccount=default:viewer"]);
    let token = admin.run_ok(&["create", "token", "viewer"]).trim().to_string();
    let path = server.data_dir().join("viewer.kubeconfig");
    Kubeconfig::new(server.url()).ca_data(server.pki().ca_bundle_pem()).token(&token).write(&path, 0o600).unwrap();
    let viewer = Kubectl::new(&path);
    assert_eq!(rows(&viewer.run_ok(&["top", "pods", "--no-headers"])).len(), 2);
    let denied = raw(&viewer, "/metrics");
    assert!(!denied.status.success());
    assert!(stderr(&denied).contains("forbidden"), "{}", stderr(&denied));
    let proxied = viewer.run(&["get", "--raw", "/api/v1/nodes/node1/proxy/metrics"]);
    assert!(stderr(&proxied).contains("forbidden"), "{}", stderr(&proxied));
    admin.run_ok(&["create", "clusterrolebinding", "monitor", "--clusterrole=system:monitoring", "--serviceaccount=default:viewer"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let o = raw(&viewer, "/metrics");
        if o.status.success() {
            break stdout(&o);
        }
        assert!(Instant::now() < deadline, "{}", stderr(&o));
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(text.contains("# TYPE apiserver_request_total counter"), "{text}");
    let pods_listed = text
        .lines()
        .find(|l| l.starts_with("apiserver_request_total{verb=\"LIST\",group=\"metrics.k8s.io\",version=\"v1beta1\",resource=\"pods\"") && l.contains("code=\"200\""))
        .unwrap_or_else(|| panic!("no metrics pods LIST in {text}"));
    let count: f64 = pods_listed.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 1.0, "{pods_listed}");
    assert!(text.contains("# TYPE apiserver_request_duration_seconds histogram"));
    assert!(text.contains("rk3s_store_writes_total{operation=\"create\",resource=\"pods\"} 3"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("apiserver_storage_size_bytes{storage_cluster_id=\"sqlite\"} ") && !l.ends_with(" 0")));

    // The kubelet's own /metrics through nodes/proxy (admins).
    let kubelet = admin.run_ok(&["get", "--raw", "/api/v1/nodes/node1/proxy/metrics"]);
    assert_eq!(kubelet, "fake_kubelet_metric 1\n");
    // A watch in flight counts as a long-running request.
    let mut watch = admin.spawn(&["get", "pods", "-w"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = stdout(&raw(&admin, "/metrics"));
        if text.lines().any(|l| l.starts_with("apiserver_longrunning_requests{verb=\"WATCH\",group=\"\",version=\"v1\",resource=\"pods\"") && l.ends_with(" 1")) {
            break;
        }
        assert!(Instant::now() < deadline, "no open watch in {text}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = watch.kill();
    let _ = watch.wait();
}
