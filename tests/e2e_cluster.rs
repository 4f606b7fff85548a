//! The whole single-node cluster as a user runs it: the real `rk3s server`
//! binary (API, controllers, scheduler and the built-in agent) in its own
//! network namespace, on a private containerd. `kubectl create deployment`
//! gives Running pods with IPs from the node's pod CIDR that answer HTTP,
//! and `kubectl logs` and `kubectl exec` reach them through the tunnel.
//!
//! Root-only: skips without root unless `RK3S_E2E=1`.

mod common;

use std::path::Path;

use common::containerd::Containerd;
use common::image::DEFAULT_REFERENCE;
use common::netns::{Network, Node};
use common::nodekit::{import_busybox, wait_for};
use common::privilege::require_e2e;

const RK3S: &str = env!("CARGO_BIN_EXE_rk3s");

fn kubectl(node: &Node, kubeconfig: &Path, args: &[&str]) -> std::process::Output {
    let mut argv = vec!["kubectl", "--kubeconfig", kubeconfig.to_str().unwrap()];
    argv.extend_from_slice(args);
    node.exec(&argv)
}

fn out(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn a_deployment_runs_on_the_servers_built_in_agent() {
    if !require_e2e("a_deployment_runs_on_the_servers_built_in_agent") {
        return;
    }
    let containerd = Containerd::start().expect("containerd");
    import_busybox(&containerd);
    let net = Network::new("ec").expect("network");
    let node = net.add_node("one").expect("node");
    let dir = tempfile::tempdir().unwrap();
    let (data, kubeconfig) = (dir.path().join("data"), dir.path().join("rk3s.yaml"));
    let endpoint = format!("unix://{}", containerd.socket().display());
    // nsenter, not `ip netns exec`: the latter gives the server a private
    // mount namespace, where the pod namespaces it binds under
    // /var/run/netns would be invisible to containerd and runc.
    let mut server = std::process::Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{}", node.netns()))
        .arg(RK3S)
        .args([
            "server",
            "--node-name",
            "one",
            "--node-ip",
            &node.ip().to_string(),
        ])
        .args(["--container-runtime-endpoint", &endpoint])
        .arg("--data-dir")
        .arg(&data)
        .arg("--run-dir")
        .arg(dir.path().join("run"))
        .arg("--write-kubeconfig")
        .arg(&kubeconfig)
        .env("RK3S_CONFIG_FILE", "/dev/null")
        .env_remove("NOTIFY_SOCKET")
        .stderr(std::fs::File::create(dir.path().join("server.log")).unwrap())
        .spawn()
        .expect("start rk3s server");
    let log = || std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
    wait_for("the API", 30, || {
        kubectl(&node, &kubeconfig, &["get", "ns"])
            .status
            .success()
            .then_some(())
    });
    wait_for("the node to be Ready", 60, || {
        let o = kubectl(
            &node,
            &kubeconfig,
            &[
                "get",
                "node",
                "one",
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ],
        );
        (out(&o) == "True").then_some(())
    });

    let o = kubectl(
        &node,
        &kubeconfig,
        &["create", "deployment", "web", &format!("--image={DEFAULT_REFERENCE}"), "--replicas=2", "--",
          "sh", "-c", "echo serving; mkdir -p /www; echo hello > /www/index.html; exec httpd -f -p 80 -h /www"],
    );
    assert!(o.status.success(), "{o:?}");
    let diag = || {
        let o = kubectl(&node, &kubeconfig, &["get", "pods,rs,events", "-o", "wide"]);
        let d = kubectl(&node, &kubeconfig, &["describe", "pods"]);
        let l = log();
        let tail: String = l
            .lines()
            .filter(|x| x.contains("WARN") || x.contains("ERROR"))
            .take(30)
            .collect::<Vec<_>>()
            .join("\n");
        let _ = (&o, &d);
        let m = kubectl(
            &node,
            &kubeconfig,
            &[
                "get",
                "pods",
                "-o",
                "jsonpath={.items[*].status.containerStatuses[*].state}",
            ],
        );
        eprintln!("{}\nSTATE {}", tail, out(&m));
    };
    let mut tries = 0;
    let ips = wait_for("two Running pods", 120, || {
        tries += 1;
        if tries == 25 {
            diag();
        }
        let o = kubectl(
            &node,
            &kubeconfig,
            &[
                "get",
                "pods",
                "-l",
                "app=web",
                "-o",
                "jsonpath={range .items[*]}{.status.phase} {.status.podIP}{\"\\n\"}{end}",
            ],
        );
        let lines: Vec<String> = out(&o).lines().map(String::from).collect();
        (lines.len() == 2 && lines.iter().all(|l| l.starts_with("Running 10.42.")))
            .then(|| lines.iter().map(|l| l[8..].to_string()).collect::<Vec<_>>())
    });
    for ip in &ips {
        let page = wait_for("the page", 30, || {
            let o = node.exec(&[
                common::privilege::BUSYBOX,
                "wget",
                "-q",
                "-O",
                "-",
                &format!("http://{ip}/"),
            ]);
            o.status.success().then(|| out(&o))
        });
        assert_eq!(page, "hello\n");
    }
    let pod = out(&kubectl(
        &node,
        &kubeconfig,
        &[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ],
    ));
    let logs = wait_for("logs through the tunnel", 30, || {
        let o = kubectl(&node, &kubeconfig, &["logs", &pod]);
        o.status.success().then(|| out(&o))
    });
    assert_eq!(logs, "serving\n", "{}", log());
    let o = kubectl(
        &node,
        &kubeconfig,
        &["exec", &pod, "--", "cat", "/www/index.html"],
    );
    assert_eq!(out(&o), "hello\n", "{o:?}");

    // Scale down: the controllers and the kubelet remove a pod.
    kubectl(
        &node,
        &kubeconfig,
        &["scale", "deployment", "web", "--replicas=1"],
    );
    wait_for("one pod", 60, || {
        let o = kubectl(
            &node,
            &kubeconfig,
            &["get", "pods", "-l", "app=web", "-o", "name"],
        );
        (out(&o).lines().count() == 1).then_some(())
    });
    kubectl(
        &node,
        &kubeconfig,
        &["delete", "deployment", "web", "--wait=true"],
    );
    wait_for("no pods", 60, || {
        let o = kubectl(&node, &kubeconfig, &["get", "pods", "-o", "name"]);
        out(&o).trim().is_empty().then_some(())
    });
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    let _ = server.wait();
}
