//! Overlay figures on a real two-to-three-node cluster
//! ([`common::multinode`]: every node a network namespace on one bridge):
//!
//! - TCP throughput (iperf3, 5 s) from a pod on the server to a pod on
//!   agent1, beside node-to-node throughput over the same link, and their
//!   ratio, for the vxlan and host-gw backends. iperf3 runs in the pods'
//!   network namespaces from the host, so the pod path is the real one
//!   (veth, cni0, flannel.1 or the route, the bridge, and back up);
//! - the time from a newly joined node turning Ready to its pod subnet
//!   being reachable from another node's pod (its cni0 address answers a
//!   ping sent from the server's pod through the overlay).
//!
//! Prints figures only; asserts nothing about them. Needs root,
//! `RK3S_E2E=1`, iperf3 and kubectl.
//! Run: `RK3S_E2E=1 cargo bench --bench overlay`.

#[path = "../tests/common/mod.rs"]
#[allow(dead_code)]
mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::multinode::Cluster;
use common::privilege::{self, require_e2e, require_tools};
use common::twonode::text;

fn sleeper(node: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: bench-{node}\nspec:\n  nodeName: {node}\n  containers:\n  - name: app\n    image: docker.io/rk3s/busybox:test\n    command: [sleep, \"1000000\"]\n"
    )
}

/// A pod on `node`: its IP and network namespace path.
fn pod(c: &Cluster, node: &str) -> (String, String) {
    let name = format!("bench-{node}");
    c.apply(&sleeper(node));
    c.track_pod(&name);
    c.wait_for(&format!("{name} Running"), 120, || {
        (c.pod_field(&name, "{.status.phase}") == "Running").then_some(())
    });
    let uid = c.pod_field(&name, "{.metadata.uid}");
    (
        c.pod_field(&name, "{.status.podIP}"),
        format!("/var/run/netns/rk3s-{uid}"),
    )
}

fn in_ns(netns: &str, argv: &[&str]) -> Command {
    let mut c = Command::new(privilege::tool("nsenter"));
    c.arg(format!("--net={netns}")).args(argv);
    c
}

struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// iperf3 from `client_ns` to `ip` (server in `server_ns`): Gbit/s.
fn iperf(server_ns: &str, client_ns: &str, ip: &str) -> f64 {
    let _server = Server(
        in_ns(server_ns, &["iperf3", "-s", "-1", "-p", "5299"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start iperf3 -s"),
    );
    std::thread::sleep(Duration::from_millis(500));
    let o = privilege::output_within(
        &mut in_ns(
            client_ns,
            &["iperf3", "-c", ip, "-p", "5299", "-t", "5", "-J"],
        ),
        Duration::from_secs(30),
    )
    .expect("iperf3 -c");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("iperf3 output: {e}: {}", text(&o.stdout)));
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0)
        / 1e9
}

fn throughput(backend: &str) {
    let c = Cluster::start(1, &["--flannel-backend", backend]);
    let (_, server_pod) = pod(&c, "server");
    let (agent_ip, agent_pod) = pod(&c, "agent1");
    let server_ns = format!("/var/run/netns/{}", c.server_node.netns());
    let agent_ns = format!("/var/run/netns/{}", c.node("agent1").netns());
    let node = iperf(&agent_ns, &server_ns, &c.node("agent1").ip().to_string());
    let pods = iperf(&agent_pod, &server_pod, &agent_ip);
    println!(
        "overlay/{backend}: node-to-node {node:.2} Gbit/s, pod-to-pod across nodes {pods:.2} Gbit/s, ratio {:.2}",
        pods / node
    );
}

fn time_to_reachable() {
    let mut c = Cluster::start(1, &[]);
    let (_, server_pod) = pod(&c, "server");
    let started = Instant::now();
    let name = c.add_agent();
    c.wait_for(&format!("{name} Ready"), 120, || {
        c.node_ready(name).then_some(())
    });
    let ready = Instant::now();
    let cidr = c.kubectl_ok(&["get", "node", name, "-o", "jsonpath={.spec.podCIDR}"]);
    let gateway = cidr.replace(".0/24", ".1");
    c.wait_for(&format!("{name}'s pod subnet reachable"), 120, || {
        let o = privilege::output_within(
            &mut in_ns(
                &server_pod,
                &["busybox", "ping", "-c", "1", "-W", "1", &gateway],
            ),
            Duration::from_secs(5),
        );
        o.is_ok_and(|o| o.status.success()).then_some(())
    });
    let reachable = Instant::now();
    println!(
        "overlay/vxlan: agent start to Ready {:.2} s; Ready to its pod subnet reachable from another node's pod {:.2} s",
        (ready - started).as_secs_f64(),
        (reachable - ready).as_secs_f64()
    );
}

fn main() {
    // `cargo test --all-targets` runs bench targets without `--bench`:
    // figures only mean something from `cargo bench --bench overlay`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("overlay bench: skipped outside `cargo bench --bench overlay`");
        return;
    }
    if !require_e2e("overlay bench") {
        return;
    }
    require_tools(
        "overlay bench",
        &[("iperf3", "iperf3"), ("kubectl", "kubectl")],
    );
    throughput("vxlan");
    throughput("host-gw");
    time_to_reachable();
}
