//! The kubelet end to end: the rk3s API server in-process, a private
//! containerd, and `kubelet::run` in-process with a node certificate from
//! the server's PKI. Pods are created with kubectl with `spec.nodeName` set
//! (no scheduler here) and the test sets the Node's `spec.podCIDR` itself
//! (no controller here).
//!
//! Root-only: skips without root unless `RK3S_E2E=1`. It creates the bridge
//! `rk3sk0` (10.42.213.1/24), pod namespaces `rk3s-<uid>` and the nft
//! table `ip rk3s` on the host; the bridge is removed at the end.
//!
//! The CRI logger containerd spawns is the rk3s binary itself, as in
//! production.

mod common;
#[path = "common/registry.rs"]
#[allow(dead_code)] // the secured registry is e2e_registry's
mod registry;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::apiserver::TestServer;
use common::containerd::Containerd;
use common::image::{BusyboxImage, DEFAULT_REFERENCE, INDEX_HTML};
use common::nodekit::import_busybox;
use common::kubectl::condition;
use common::kubeletopts::in_process_kubelet;
use common::privilege::require_e2e;
use rk3s::agent::kubelet::{self, KubeletOptions};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const NODE: &str = "e2e-node";
const POD_CIDR: &str = "10.42.213.0/24";
const BRIDGE: &str = "rk3sk0";

struct Harness {
    server: TestServer,
    containerd: Containerd,
    opts: KubeletOptions,
    dir: tempfile::TempDir,
}

impl Harness {
    fn kubectl(&self, args: &[&str]) -> String {
        self.server.kubectl().run_ok(args)
    }

    fn apply(&self, yaml: &str) {
        let out = self
            .server
            .kubectl()
            .run_with_stdin(&["apply", "-f", "-"], yaml);
        assert!(
            out.status.success(),
            "kubectl apply failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn pod(&self, name: &str) -> Value {
        let out = self
            .server
            .kubectl()
            .run(&["get", "pod", name, "-o", "json"]);
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// Polls the pod until `check` holds; panics with the last status.
    fn wait_pod(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let p = self.pod(name);
            if check(&p) {
                return p;
            }
            if Instant::now() > deadline {
                panic!(
                    "pod {name}: {what} not reached within {timeout:?}; status: {:#}\ncontainerd log: {}",
                    p["status"],
                    self.containerd.log_tail(20)
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn start_kubelet(&self) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let token = CancellationToken::new();
        let opts = self.opts.clone();
        let t = token.clone();
        let handle = tokio::spawn(async move {
            if let Err(e) = kubelet::run(opts, t).await {
                panic!("kubelet failed: {e}");
            }
        });
        (token, handle)
    }

    fn log_file(&self, pod: &Value, container: &str, restart: u32) -> PathBuf {
        self.opts
            .log_root
            .join(format!(
                "default_{}_{}",
                pod["metadata"]["name"].as_str().unwrap(),
                pod["metadata"]["uid"].as_str().unwrap()
            ))
            .join(container)
            .join(format!("{restart}.log"))
    }

    fn wait_log(&self, path: &Path, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if text.contains(needle) || Instant::now() > deadline {
                return text;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn running(p: &Value) -> bool {
    p["status"]["phase"] == "Running" && p["status"]["podIP"].is_string()
}

fn first_state(p: &Value) -> &Value {
    &p["status"]["containerStatuses"][0]
}

fn http_get(ip: &str, port: u16) -> String {
    let mut s = std::net::TcpStream::connect_timeout(
        &format!("{ip}:{port}").parse().unwrap(),
        Duration::from_secs(5),
    )
    .expect("connect to the pod");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET / HTTP/1.0\r\nHost: {ip}\r\n\r\n").unwrap();
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body
}

fn pod_yaml(name: &str, body: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  nodeName: {NODE}\n  terminationGracePeriodSeconds: 2\n{body}"
    )
}

fn simple_pod(name: &str, image: &str, command: &str, extra: &str) -> String {
    pod_yaml(
        name,
        &format!(
            "  containers:\n  - name: c\n    image: {image}\n    imagePullPolicy: IfNotPresent\n    command: [\"sh\", \"-c\", {command:?}]\n{extra}"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubelet_runs_pods_on_containerd() {
    if !require_e2e("kubelet_runs_pods_on_containerd") {
        return;
    }
    let server = TestServer::start();
    let containerd = Containerd::start().expect("start containerd");
    import_busybox(&containerd);
    let dir = tempfile::tempdir().expect("temp dir");
    // A registry on loopback, and registries.yaml sending docker.io to it.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let registry = registry::DockerRegistry::start().await;
    let pushed = registry
        .push(
            &BusyboxImage::build(dir.path(), "docker.io/rk3s/pushed:1").expect("image"),
            "rk3s/pulled",
            "1",
        )
        .await;
    std::fs::write(
        dir.path().join("registries.yaml"),
        format!(
            "mirrors:\n  docker.io:\n    endpoint:\n      - http://{}\n",
            registry.host()
        ),
    )
    .unwrap();
    let mut opts = in_process_kubelet(&server, &containerd, dir.path(), NODE);
    opts.node.node_labels = [("example.com/role".to_string(), "e2e".to_string())].into();
    opts.log_root = dir.path().join("pods-logs");
    opts.bridge = BRIDGE.into();
    opts.log_shim = Some(PathBuf::from(env!("CARGO_BIN_EXE_rk3s")));
    let h = Harness {
        server,
        containerd,
        opts,
        dir,
    };
    let (token, task) = h.start_kubelet();

    // Registration, then the pod CIDR a controller would assign.
    let deadline = Instant::now() + Duration::from_secs(30);
    let node: Value = loop {
        let out = h.server.kubectl().run(&["get", "node", NODE, "-o", "json"]);
        if out.status.success() {
            break serde_json::from_slice(&out.stdout).unwrap();
        }
        assert!(Instant::now() < deadline, "the node did not register");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        node["metadata"]["labels"]["node.kubernetes.io/instance-type"],
        "rk3s"
    );
    assert_eq!(node["metadata"]["labels"]["example.com/role"], "e2e");
    assert_eq!(node["status"]["capacity"]["pods"], "110");
    h.kubectl(&[
        "patch",
        "node",
        NODE,
        "--type",
        "merge",
        "-p",
        &format!("{{\"spec\":{{\"podCIDR\":\"{POD_CIDR}\",\"podCIDRs\":[\"{POD_CIDR}\"]}}}}"),
    ]);
    let lease = h.kubectl(&[
        "get",
        "lease",
        "-n",
        "kube-node-lease",
        NODE,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    assert_eq!(lease.trim(), NODE);

    // Two httpd pods answer HTTP from the host on their pod IPs.
    for name in ["web1", "web2"] {
        h.apply(&simple_pod(
            name,
            DEFAULT_REFERENCE,
            "exec httpd -f -p 80 -h /www",
            "",
        ));
    }
    let mut web = Vec::new();
    for name in ["web1", "web2"] {
        let p = h.wait_pod(name, "Running", Duration::from_secs(60), running);
        let ip = p["status"]["podIP"].as_str().unwrap().to_string();
        assert!(
            ip.starts_with("10.42.213."),
            "pod IP {ip} outside {POD_CIDR}"
        );
        let p = h.wait_pod(name, "Ready", Duration::from_secs(20), |p| {
            first_state(p)["ready"] == true
        });
        assert!(
            http_get(&ip, 80).contains(INDEX_HTML.trim()),
            "no page from {name}"
        );
        web.push((
            name,
            ip,
            first_state(&p)["containerID"].as_str().unwrap().to_string(),
        ));
    }
    assert_ne!(web[0].1, web[1].1);
    let node_ready = h.kubectl(&[
        "get",
        "node",
        NODE,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
    ]);
    eprintln!("node Ready: {node_ready}");

    // Output lands in the CRI log file.
    h.apply(&simple_pod(
        "logger",
        DEFAULT_REFERENCE,
        "echo hello-cri-log; exec sleep 3600",
        "",
    ));
    let p = h.wait_pod("logger", "Running", Duration::from_secs(60), running);
    let text = h.wait_log(&h.log_file(&p, "c", 0), "hello-cri-log");
    assert!(text.contains(" stdout F hello-cri-log"), "log: {text:?}");

    // Env from a ConfigMap and a Secret, and both mounted as volumes.
    h.kubectl(&[
        "create",
        "configmap",
        "cm1",
        "--from-literal=k=from-configmap",
    ]);
    h.kubectl(&[
        "create",
        "secret",
        "generic",
        "s1",
        "--from-literal=pw=from-secret",
    ]);
    h.apply(&pod_yaml(
        "envpod",
        "  containers:\n  - name: c\n    image: docker.io/rk3s/busybox:test\n    command: [\"sh\", \"-c\", \"echo ENV=$CMV/$SV; echo FILE=$(cat /cm/k)/$(cat /sec/pw); exec sleep 3600\"]\n    env:\n    - name: CMV\n      valueFrom:\n        configMapKeyRef: {name: cm1, key: k}\n    - name: SV\n      valueFrom:\n        secretKeyRef: {name: s1, key: pw}\n    volumeMounts:\n    - {name: cm, mountPath: /cm}\n    - {name: sec, mountPath: /sec}\n  volumes:\n  - name: cm\n    configMap: {name: cm1}\n  - name: sec\n    secret: {secretName: s1}\n",
    ));
    let p = h.wait_pod("envpod", "Running", Duration::from_secs(60), running);
    let text = h.wait_log(&h.log_file(&p, "c", 0), "FILE=");
    assert!(
        text.contains("ENV=from-configmap/from-secret"),
        "log: {text:?}"
    );
    assert!(
        text.contains("FILE=from-configmap/from-secret"),
        "log: {text:?}"
    );

    // A ConfigMap update reaches the mounted volume (atomic `..data` swap).
    h.kubectl(&[
        "patch",
        "configmap",
        "cm1",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"k":"updated"}}"#,
    ]);
    let volume = h
        .opts
        .agent_dir
        .join("pods")
        .join(p["metadata"]["uid"].as_str().unwrap())
        .join("volumes/cm/k");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&volume).unwrap_or_default() != "updated" {
        assert!(
            Instant::now() < deadline,
            "the configMap volume did not follow the update"
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // A container exiting 1 ends in CrashLoopBackOff with growing restarts.
    h.apply(&simple_pod("crash", DEFAULT_REFERENCE, "exit 1", ""));
    let p = h.wait_pod("crash", "CrashLoopBackOff", Duration::from_secs(60), |p| {
        first_state(p)["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    });
    assert_eq!(first_state(&p)["lastState"]["terminated"]["exitCode"], 1);
    let msg = first_state(&p)["state"]["waiting"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(msg.starts_with("back-off 10s"), "message: {msg}");
    let p = h.wait_pod("crash", "a longer back-off", Duration::from_secs(60), |p| {
        first_state(p)["state"]["waiting"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("back-off 20s"))
    });
    assert!(first_state(&p)["restartCount"].as_u64().unwrap() >= 2);

    // A failing readiness probe keeps the pod out of Ready; a failing
    // liveness probe restarts the container.
    let probe = |kind: &str| {
        format!("    {kind}:\n      tcpSocket: {{port: 81}}\n      periodSeconds: 1\n      failureThreshold: 1\n")
    };
    h.apply(&simple_pod(
        "unready",
        DEFAULT_REFERENCE,
        "exec httpd -f -p 80 -h /www",
        &probe("readinessProbe"),
    ));
    h.apply(&simple_pod(
        "unlive",
        DEFAULT_REFERENCE,
        "exec httpd -f -p 80 -h /www",
        &probe("livenessProbe"),
    ));
    h.wait_pod("unready", "Running", Duration::from_secs(60), running);
    std::thread::sleep(Duration::from_secs(4));
    let p = h.pod("unready");
    assert_eq!(first_state(&p)["ready"], false);
    let ready = condition(&p, "Ready").unwrap().clone();
    assert_eq!(ready["status"], "False");
    h.wait_pod(
        "unlive",
        "a liveness restart",
        Duration::from_secs(60),
        |p| first_state(p)["restartCount"].as_u64().unwrap_or(0) >= 1,
    );

    // An exec readiness probe runs inside the container.
    h.apply(&simple_pod(
        "execready",
        DEFAULT_REFERENCE,
        "touch /tmp/ready; exec sleep 3600",
        "    readinessProbe:\n      exec: {command: [\"cat\", \"/tmp/ready\"]}\n      periodSeconds: 1\n",
    ));
    h.wait_pod(
        "execready",
        "Ready through an exec probe",
        Duration::from_secs(60),
        |p| first_state(p)["ready"] == true,
    );

    // A memory limit is enforced.
    h.apply(&pod_yaml(
        "hog",
        "  restartPolicy: Never\n  containers:\n  - name: c\n    image: docker.io/rk3s/busybox:test\n    command: [\"sh\", \"-c\", \"x=$(head -c 256m /dev/zero | tr '\\\\0' a); echo survived\"]\n    resources:\n      limits: {memory: 32Mi}\n",
    ));
    let p = h.wait_pod("hog", "terminated", Duration::from_secs(60), |p| {
        first_state(p)["state"]["terminated"].is_object()
    });
    assert_eq!(
        first_state(&p)["state"]["terminated"]["reason"],
        "OOMKilled",
        "{:#}",
        p["status"]
    );

    // A wrong image: ErrImagePull, then ImagePullBackOff.
    h.apply(&simple_pod(
        "badimage",
        "docker.io/rk3s/no-such-image:1",
        "true",
        "",
    ));
    h.wait_pod("badimage", "ErrImagePull", Duration::from_secs(30), |p| {
        first_state(p)["state"]["waiting"]["reason"] == "ErrImagePull"
    });
    h.wait_pod(
        "badimage",
        "ImagePullBackOff",
        Duration::from_secs(30),
        |p| first_state(p)["state"]["waiting"]["reason"] == "ImagePullBackOff",
    );

    // An image tarball dropped in the images folder, without a restart.
    let images = h.opts.agent_dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    BusyboxImage::new("docker.io/rk3s/dropped:1")
        .write(&images)
        .expect("write the dropped image");
    h.apply(&simple_pod(
        "dropped",
        "docker.io/rk3s/dropped:1",
        "exec sleep 3600",
        "",
    ));
    h.wait_pod("dropped", "Running", Duration::from_secs(60), running);

    // Pulled from the registry: by its own name, and through the mirror.
    for (name, image) in [
        ("pulled", format!("{}/rk3s/pulled:1", registry.host())),
        ("mirrored", "docker.io/rk3s/pulled:1".to_string()),
    ] {
        h.apply(&simple_pod(name, &image, "exec sleep 3600", ""));
        let p = h.wait_pod(name, "Running", Duration::from_secs(60), running);
        let image_id = first_state(&p)["imageID"]
            .as_str()
            .unwrap_or("")
            .to_string();
        assert!(
            image_id.ends_with(&format!("@{pushed}")),
            "{name}: imageID {image_id} names the pushed manifest {pushed}"
        );
    }

    // Fail static: a stopped kubelet leaves pods running; a new one adopts
    // them with the same containers and IPs.
    token.cancel();
    task.await.expect("kubelet task");
    for (_, ip, _) in &web {
        assert!(
            http_get(ip, 80).contains(INDEX_HTML.trim()),
            "pod {ip} stopped with the agent"
        );
    }
    h.kubectl(&["delete", "pod", "logger", "--wait=false"]);
    let (token, task) = h.start_kubelet();
    std::thread::sleep(Duration::from_secs(5));
    for (name, ip, id) in &web {
        let p = h.wait_pod(
            name,
            "Running after restart",
            Duration::from_secs(30),
            running,
        );
        assert_eq!(p["status"]["podIP"].as_str().unwrap(), ip);
        assert_eq!(
            first_state(&p)["containerID"].as_str().unwrap(),
            id,
            "{name} was restarted"
        );
        assert_eq!(first_state(&p)["restartCount"], 0);
    }
    // The pod deleted while the agent was down is finished off.
    let deadline = Instant::now() + Duration::from_secs(30);
    while h
        .server
        .kubectl()
        .run(&["get", "pod", "logger"])
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "logger was not cleaned up");
        std::thread::sleep(Duration::from_millis(300));
    }

    // `kubectl delete pod` completes: stop, network down, object deleted.
    let uid = h.pod("web2")["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(Path::new(&format!("/var/run/netns/rk3s-{uid}")).exists());
    let out = h
        .server
        .kubectl()
        .run(&["delete", "pod", "web2", "--timeout=30s"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !Path::new(&format!("/var/run/netns/rk3s-{uid}")).exists(),
        "web2's netns is left"
    );

    // Clean up everything the kubelet made on the host.
    let pods = h.kubectl(&["get", "pods", "-o", "name"]);
    for p in pods.lines() {
        h.server.kubectl().run(&["delete", p, "--wait=false"]);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !h.kubectl(&["get", "pods", "-o", "name"]).trim().is_empty() && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(500));
    }
    token.cancel();
    task.await.expect("kubelet task");
    let _ = std::process::Command::new("ip")
        .args(["link", "del", BRIDGE])
        .status();
    let _ = std::process::Command::new("nft")
        .args(["delete", "table", "ip", "rk3s"])
        .status();
    drop(h.dir);
}

/// Pids whose command line mentions `needle`.
fn pids_with_arg(needle: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .expect("read /proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid: &i32| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_is_supervised_and_outlives_the_agent() {
    if !require_e2e("containerd_is_supervised_and_outlives_the_agent") {
        return;
    }
    use rk3s::agent::containerd_supervisor::{self as supervisor, ContainerdPaths};
    let dir = tempfile::tempdir().expect("temp dir");
    let paths = ContainerdPaths {
        dir: dir.path().join("agent/containerd"),
        state: dir.path().join("state"),
        socket: dir.path().join("run/containerd.sock"),
    };
    let config = paths.config().display().to_string();
    let token = CancellationToken::new();
    supervisor::start(paths.clone(), token.clone())
        .await
        .expect("start containerd");
    assert!(supervisor::is_serving(&paths.socket).await);
    let first = pids_with_arg(&config);
    assert_eq!(first.len(), 1, "one containerd");
    assert!(std::fs::read_to_string(paths.config())
        .unwrap()
        .contains("io.containerd.grpc.v1.cri"));

    // Killed: restarted after the back-off.
    unsafe { libc::kill(first[0], libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(30);
    let second = loop {
        let now: Vec<i32> = pids_with_arg(&config)
            .into_iter()
            .filter(|p| *p != first[0])
            .collect();
        if !now.is_empty() && supervisor::is_serving(&paths.socket).await {
            break now[0];
        }
        assert!(Instant::now() < deadline, "containerd was not restarted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // The agent stops: containerd keeps running, and a new agent adopts it.
    token.cancel();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        supervisor::is_serving(&paths.socket).await,
        "containerd died with the agent"
    );
    let token = CancellationToken::new();
    supervisor::start(paths.clone(), token.clone())
        .await
        .expect("adopt");
    assert_eq!(
        pids_with_arg(&config),
        vec![second],
        "a second containerd was started"
    );
    token.cancel();
    unsafe { libc::kill(second, libc::SIGTERM) };
    tokio::time::sleep(Duration::from_millis(500)).await;
    common::containerd::unmount_under(dir.path());
}
