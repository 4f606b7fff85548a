//! The tunnel across real network isolation: `rk3s server` in one network
//! namespace, an agent's tunnel client (with the kubelet API) in another
//! whose firewall drops every new inbound connection. kubectl, run beside
//! the server, still reads logs and port-forwards to the agent's pod: the
//! agent dialled out, and the server never connects to it.
//!
//! Root-only: skips without root unless `RK3S_E2E=1`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::netns::{Network, Node};
use common::privilege::require_e2e;
use rk3s::agent::kubelet_api::{self, KubeletApi};
use rk3s::pki::{AgentCert, Pki, PkiOptions};
use rk3s::tunnel::{self, ClientOptions};
use tokio_util::sync::CancellationToken;

const RK3S: &str = env!("CARGO_BIN_EXE_rk3s");

fn kubectl(node: &Node, kubeconfig: &Path, args: &[&str]) -> std::process::Output {
    let mut argv = vec!["kubectl", "--kubeconfig", kubeconfig.to_str().unwrap()];
    argv.extend_from_slice(args);
    node.exec(&argv)
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs `fut`'s tunnel client on a thread inside network namespace `netns`.
fn run_in_netns(
    netns: &str,
    opts: ClientOptions,
    token: CancellationToken,
) -> std::thread::JoinHandle<()> {
    let path = format!("/var/run/netns/{netns}");
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open(&path).expect("open the agent netns");
        assert_eq!(
            unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) },
            0,
            "setns"
        );
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(tunnel::run_client(opts, token));
    })
}

#[test]
fn the_server_reaches_a_firewalled_agent_only_through_its_tunnel() {
    if !require_e2e("the_server_reaches_a_firewalled_agent_only_through_its_tunnel") {
        return;
    }
    let net = Network::new("tn").expect("network");
    let server_node = net.add_node("server").expect("server node");
    let agent_node = net.add_node("agent").expect("agent node");
    // The agent's namespace drops every new inbound connection.
    for rule in [
        "add table inet rk3stest",
        "add chain inet rk3stest input { type filter hook input priority 0 ; policy accept ; }",
        "add rule inet rk3stest input ct state new drop",
    ] {
        let mut argv = vec!["nft"];
        argv.extend(rule.split(' '));
        let o = agent_node.exec(&argv);
        assert!(
            o.status.success(),
            "nft {rule}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let (data, kubeconfig) = (dir.path().join("data"), dir.path().join("rk3s.yaml"));
    let server_ip = server_node.ip().to_string();
    let mut server = server_node
        .command(RK3S)
        .args([
            "server",
            "--node-name",
            "s",
            "--node-ip",
            &server_ip,
            "--disable-agent",
        ])
        .arg("--data-dir")
        .arg(&data)
        .arg("--write-kubeconfig")
        .arg(&kubeconfig)
        .env("RK3S_CONFIG_FILE", "/dev/null")
        .env_remove("NOTIFY_SOCKET")
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start rk3s server");
    wait_for("the server", || {
        kubectl(&server_node, &kubeconfig, &["get", "ns"])
            .status
            .success()
    });

    // The firewall works: from the server's side nothing connects in.
    let probe = server_node.exec_within(
        &[
            common::privilege::BUSYBOX,
            "nc",
            "-w",
            "2",
            &agent_node.ip().to_string(),
            "22",
        ],
        Duration::from_secs(10),
    );
    assert!(
        probe.map(|o| !o.status.success()).unwrap_or(true),
        "the agent namespace accepted a connection"
    );

    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  nodeName: agent\n  containers:\n  - name: app\n    image: busybox\n";
    std::fs::write(dir.path().join("pod.yaml"), pod).unwrap();
    let o = kubectl(
        &server_node,
        &kubeconfig,
        &["apply", "-f", dir.path().join("pod.yaml").to_str().unwrap()],
    );
    assert!(o.status.success(), "{o:?}");
    let uid = String::from_utf8(
        kubectl(
            &server_node,
            &kubeconfig,
            &["get", "pod", "web", "-o", "jsonpath={.metadata.uid}"],
        )
        .stdout,
    )
    .unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log_dir = logs.path().join(format!("default_web_{uid}/app"));
    std::fs::create_dir_all(&log_dir).unwrap();
    let stamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    std::fs::write(
        log_dir.join("0.log"),
        format!("{stamp} stdout F hello across namespaces\n"),
    )
    .unwrap();

    // The agent: node certificate from the server's PKI, tunnel from its namespace.
    let mut opts = PkiOptions::new("s");
    opts.node_ips = vec![server_node.ip().into()];
    let pki = Pki::load_or_create(&data.join("server/tls"), &opts).unwrap();
    let tls = common::apiserver::signed_client_tls(
        &pki,
        AgentCert::KubeletClient {
            node_name: "agent".into(),
        },
    );
    let api = KubeletApi {
        log_root: logs.path().to_path_buf(),
        exec: None,
        port_forward: None,
    };
    let client = ClientOptions {
        server: format!("https://{server_ip}:6443").parse().unwrap(),
        tls,
        handler: kubelet_api::tunnel_handler(kubelet_api::router_with(api)),
        session: Default::default(),
    };
    let token = CancellationToken::new();
    let agent = run_in_netns(agent_node.netns(), client, token.clone());

    wait_for("logs through the tunnel", || {
        let o = kubectl(&server_node, &kubeconfig, &["logs", "web"]);
        o.status.success() && o.stdout == b"hello across namespaces\n"
    });

    token.cancel();
    let _ = agent.join();
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    let _ = server.wait();
}
