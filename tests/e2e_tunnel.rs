//! `kubectl exec` end to end through the node tunnel, against a real
//! containerd: the API server proxies the v5 websocket to the agent's
//! kubelet API, which runs the command with containerd's Tasks.Exec.
//!
//! Root-only: skips without root unless `RK3S_E2E=1`.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::apiserver::TestServer;
use common::containerd::Containerd;
use common::image::DEFAULT_REFERENCE;
use common::nodekit::import_busybox;
use common::kubectl::Kubectl;
use common::loopback::free_port;
use common::kubelet_tunnel::{exec_until_it_works, running_web_pod, NetnsHttpd, WebPod};
use common::privilege::require_e2e;
use rk3s::agent::kubelet_api::exec::ContainerdExec;
use rk3s::agent::kubelet_api::KubeletApi;
use rk3s::agent::runtime::{ContainerRuntime, ContainerSpec, ContainerdRuntime};
use tokio_util::sync::CancellationToken;

#[test]
fn kubectl_exec_runs_in_the_container_through_the_tunnel() {
    if !require_e2e("kubectl_exec_runs_in_the_container_through_the_tunnel") {
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter("rk3s=debug")
        .with_test_writer()
        .try_init();
    let containerd = Containerd::start().expect("start containerd");
    import_busybox(&containerd);
    let server = TestServer::start();
    let kubectl = server.kubectl();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let WebPod { runtime, api, .. } = WebPod::start(&rt, &containerd, &kubectl);
    let shutdown = CancellationToken::new();
    common::kubelet_tunnel::spawn(&rt, &server, "node1", api, &shutdown);

    assert_eq!(exec_until_it_works(&kubectl, "hello"), "hello\n");

    // kubectl 1.32 speaks websockets (v5), 1.29 SPDY/3.1 (v4).
    let kubeconfig = server.kubeconfig().display().to_string();
    for minor in [32, 29] {
        let kubectl = Kubectl::new(server.kubeconfig()).release(minor);
        let o = kubectl.run(&["exec", "web", "-v=7", "--", "echo", "hello"]);
        let trace = String::from_utf8_lossy(&o.stderr);
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "hello\n",
            "1.{minor}: {o:?}"
        );
        // client-go's SPDY executor POSTs with X-Stream-Protocol-Version
        // headers; its websocket one GETs.
        let spdy = trace.contains("POST https") && trace.contains("X-Stream-Protocol-Version");
        assert_eq!(
            spdy,
            minor < 30,
            "1.{minor} used the expected transport: {trace}"
        );

        let o = kubectl.run_with_stdin(&["exec", "-i", "web", "--", "cat"], "input-line\nsecond\n");
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "input-line\nsecond\n",
            "1.{minor}: {o:?}"
        );

        let o = kubectl.run(&["exec", "web", "--", "sh", "-c", "echo oops >&2; exit 3"]);
        assert_eq!(o.status.code(), Some(3), "1.{minor}: {o:?}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("oops"),
            "1.{minor}: {o:?}"
        );

        // -it under a pty (`script` gives kubectl a terminal).
        let binary = format!("/usr/lib/google-cloud-sdk/bin/kubectl.1.{minor}");
        let out = std::process::Command::new("script")
            .args([
                "-qec",
                &format!("{binary} --kubeconfig {kubeconfig} exec -it web -- tty"),
                "/dev/null",
            ])
            .output()
            .expect("run script");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("/dev/pts/"), "1.{minor}: {text}");
    }

    // attach -i: a container started with `stdin: true` reads what the
    // client sends, and its stdin stays open after the session; with
    // `stdinOnce` the first session's end closes it.
    kubectl.run_with_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: talker\nspec:\n  nodeName: node1\n  containers:\n  - name: talk\n    image: busybox\n    stdin: true\n  - name: once\n    image: busybox\n    stdin: true\n    stdinOnce: true\n",
    );
    kubectl.mark_running("talker");
    let log_root = containerd.scratch().join("pods");
    for (name, once, script) in [
        (
            "talk",
            false,
            "while read l; do echo got:$l; done; echo talk-stdin-closed",
        ),
        ("once", true, "cat; echo once-stdin-closed; sleep 3600"),
    ] {
        let mut spec = ContainerSpec::new("uid-2", "talker", "default", name, DEFAULT_REFERENCE);
        spec.command = vec!["sh".into(), "-c".into(), script.into()];
        spec.stdin = true;
        spec.stdin_once = once;
        spec.log_path = log_root.join(format!("default_talker_uid-2/{name}/0.log"));
        std::fs::create_dir_all(spec.log_path.parent().unwrap()).unwrap();
        let id = rt
            .block_on(runtime.create_container(&spec))
            .expect("create");
        rt.block_on(runtime.start(&id)).expect("start");
    }
    let attach_and_read = |container: &str, input: &str, want: &str| {
        let mut child =
            kubectl.spawn_with_stdin(&["attach", "-i", "talker", "-c", container], input);
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut seen = Vec::new();
        while let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) {
            seen.push(line.clone());
            if line == want {
                break;
            }
        }
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        if seen.last().map(String::as_str) != Some(want) {
            let log = log_root.join(format!("default_talker_uid-2/{container}/0.log"));
            eprintln!(
                "attach -c {container}: {}\nlog: {:?}",
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(&log)
            );
        }
        seen
    };
    let seen = attach_and_read("talk", "hello\n", "got:hello");
    assert_eq!(
        seen.last().map(String::as_str),
        Some("got:hello"),
        "{seen:?}"
    );
    // A second session: stdin is still open (no "talk-stdin-closed").
    let seen = attach_and_read("talk", "again\n", "got:again");
    assert_eq!(seen, vec!["got:again"], "{seen:?}");
    let seen = attach_and_read("once", "only\n", "once-stdin-closed");
    assert_eq!(seen, vec!["only", "once-stdin-closed"], "{seen:?}");

    // Fail static: an agent restarted with the same run dir (a new
    // containerd connection, a new tunnel) finds the stdin FIFO of a
    // container it did not start, from the run dir and the id alone.
    shutdown.cancel();
    let shutdown = CancellationToken::new();
    let restarted = rt
        .block_on(ContainerdRuntime::connect(containerd.socket(), &containerd.scratch().join("stdio")))
        .expect("reconnect");
    let api = KubeletApi {
        liveness: None,
        log_root: log_root.clone(),
        exec: Some(Arc::new(ContainerdExec {
            runtime: Arc::new(restarted),
            fifo_root: containerd.scratch().join("exec"),
        })),
        port_forward: None,
    };
    common::kubelet_tunnel::spawn(&rt, &server, "node1", api, &shutdown);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = attach_and_read("talk", "after-restart\n", "got:after-restart");
        if seen.last().map(String::as_str) == Some("got:after-restart") {
            break;
        }
        assert!(Instant::now() < deadline, "attach after the restart: {seen:?}");
        std::thread::sleep(Duration::from_millis(500));
    }

    // The Kubernetes Python client's websocket exec (`kubernetes.stream`),
    // a second real client (it speaks v4.channel.k8s.io).
    let script = format!(
        "from kubernetes import config, client\nfrom kubernetes.stream import stream\n\
         config.load_kube_config(config_file='{kubeconfig}')\n\
         out = stream(client.CoreV1Api().connect_get_namespaced_pod_exec, 'web', 'default',\n\
         command=['sh', '-c', 'echo from-python'], stderr=True, stdin=False, stdout=True, tty=False)\n\
         print(out, end='')\n"
    );
    let out = std::process::Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .output()
        .expect("run python3");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "from-python\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A container that is not running: a clear error, not a hang.
    let o = kubectl.run(&["exec", "web", "-c", "missing", "--", "true"]);
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("missing"),
        "{o:?}"
    );

    shutdown.cancel();
    for c in rt.block_on(runtime.list(&BTreeMap::new())).unwrap() {
        let _ = rt.block_on(runtime.remove(&c.id));
    }
}

fn http_get(port: u16, path: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut s =
        std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the forwarded port");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read the answer");
    let body = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .unwrap_or(0);
    out.split_off(body)
}

#[test]
fn kubectl_port_forward_reaches_the_pod_through_the_tunnel() {
    if !require_e2e("kubectl_port_forward_reaches_the_pod_through_the_tunnel") {
        return;
    }
    let server = TestServer::start();
    let kubectl = server.kubectl();
    let uid = running_web_pod(&kubectl);
    let big: Vec<u8> = (0..32u32 << 20).map(|i| (i % 253) as u8).collect();
    let _httpd = NetnsHttpd::start(
        &format!("rk3s-{uid}"),
        &[("index.html", b"hello from the pod\n"), ("big", &big)],
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = common::kubelet_tunnel::pod_dialer();
    let shutdown = CancellationToken::new();
    common::kubelet_tunnel::spawn(&rt, &server, "node1", api, &shutdown);

    for (label, env) in [
        ("websocket", None),
        (
            "SPDY upgrade",
            Some(("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")),
        ),
    ] {
        let port = free_port();
        let mut cmd = std::process::Command::new("kubectl");
        cmd.args(["--kubeconfig"]).arg(server.kubeconfig()).args([
            "port-forward",
            "pod/web",
            &format!("{port}:8080"),
        ]);
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        // The tunnel may still be connecting: retry until kubectl forwards.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut child = loop {
            let mut child = cmd.spawn().expect("start kubectl port-forward");
            let mut line = String::new();
            use std::io::BufRead;
            let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
            let _ = out.read_line(&mut line);
            if line.contains("Forwarding from")
                && std::panic::catch_unwind(|| http_get(port, "/index.html")).is_ok()
            {
                std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
                break child;
            }
            let _ = child.kill();
            let _ = child.wait();
            assert!(
                Instant::now() < deadline,
                "{label}: kubectl port-forward never worked ({line})"
            );
            std::thread::sleep(Duration::from_millis(300));
        };
        assert_eq!(
            http_get(port, "/index.html"),
            b"hello from the pod\n",
            "{label}"
        );
        let parallel: Vec<_> = (0..2)
            .map(|_| std::thread::spawn(move || http_get(port, "/big")))
            .collect();
        for t in parallel {
            let body = t.join().unwrap();
            assert_eq!(body.len(), 32 << 20, "{label}: parallel transfer truncated");
            assert!(
                body.iter()
                    .enumerate()
                    .all(|(i, b)| *b == (i as u32 % 253) as u8),
                "{label}: bytes changed"
            );
        }
        let started = Instant::now();
        let n = http_get(port, "/big").len();
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "port-forward ({label}): {:.1} MB/s over {n} bytes",
            n as f64 / secs / 1e6
        );
        let _ = child.kill();
        let _ = child.wait();
    }
    shutdown.cancel();
}
