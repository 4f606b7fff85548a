//! Issue 13's "done when" on a three-node cluster ([`common::multinode`]):
//! the real `rk3s server` (with its built-in agent) and two `rk3s agent`s,
//! each in its own network namespace with its own containerd, on one
//! bridge.
//!
//! - pods on the three nodes reach each other by pod IP, ICMP and HTTP, in
//!   every direction; a pod reaches the server's node IP and the bridge's
//!   outside address (which has no route back to pod IPs: only a
//!   masqueraded packet gets an answer); the receiving side sees the
//!   sending pod's IP;
//! - the annotations and the neighbour, FDB and route entries read back
//!   with `ip` and `bridge` match flannel's;
//! - a long-running cross-node transfer survives restarts of both agents;
//!   a deleted `flannel.1` comes back; deleting a Node object removes its
//!   entries on the others;
//! - host-gw passes the same connectivity checks.
//!
//! Root-only: skips without `RK3S_E2E=1`.

mod common;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use common::multinode::Cluster;
use common::privilege::{require_e2e, require_tools};
use common::twonode::text;

/// One cluster at a time: each is six daemons on a small machine.
static SERIAL: Mutex<()> = Mutex::new(());

fn web_pod(node: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: web-{node}
spec:
  nodeName: {node}
  containers:
  - name: app
    image: docker.io/rk3s/busybox:test
    command:
    - sh
    - -c
    - |
      mkdir -p /srv
      echo hello from {node} > /srv/index.html
      httpd -p 8080 -h /srv
      while true; do nc -l -p 9000 -e netstat -tn; done &
      sleep 1000000 | nc -l -p 9001 > /tmp/rx &
      exec sleep 1000000
"#
    )
}

fn ip_lines(c: &Cluster, node: &str, argv: &[&str]) -> String {
    text(&c.node(node).exec(argv).stdout)
}

/// Creates a web pod on every node and checks pod-to-pod and pod-to-outside
/// traffic; returns the pod IPs by node.
fn check_connectivity(c: &Cluster) -> BTreeMap<String, String> {
    let nodes = c.node_names();
    for n in &nodes {
        c.apply(&web_pod(n));
        c.track_pod(&format!("web-{n}"));
    }
    let mut ips = BTreeMap::new();
    for n in &nodes {
        let pod = format!("web-{n}");
        c.wait_for(&format!("{pod} Running"), 120, || {
            (c.pod_field(&pod, "{.status.phase}") == "Running").then_some(())
        });
        ips.insert(n.clone(), c.pod_field(&pod, "{.status.podIP}"));
    }
    for from in &nodes {
        let pod = format!("web-{from}");
        for (to, ip) in &ips {
            if to == from {
                continue;
            }
            // ICMP, retried briefly: a fresh node's peers learn it within a pass.
            c.wait_for(&format!("ping {from} → {to} ({ip})"), 30, || {
                c.kubectl(&["exec", &pod, "--", "ping", "-c", "1", "-W", "2", ip])
                    .status
                    .success()
                    .then_some(())
            });
            let body = c.kubectl_ok(&[
                "exec",
                &pod,
                "--",
                "sh",
                "-c",
                &format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {ip} 8080"),
            ]);
            assert!(
                body.contains(&format!("hello from {to}")),
                "HTTP {from} → {to}: {body}"
            );
            // The receiver's own view of the connection: the sender's pod IP.
            let seen = c.kubectl_ok(&[
                "exec",
                &pod,
                "--",
                "sh",
                "-c",
                &format!("nc -w 5 {ip} 9000 </dev/null"),
            ]);
            let from_ip = &ips[from];
            assert!(
                seen.lines().any(
                    |l| l.contains(&format!("{ip}:9000")) && l.contains(&format!("{from_ip}:"))
                ),
                "{to} did not see {from}'s pod IP {from_ip}: {seen}"
            );
        }
        // Outside the cluster: the server's node IP and the bridge's address.
        for target in [c.server_node.ip().to_string(), c.net.gateway().to_string()] {
            let o = c.kubectl(&["exec", &pod, "--", "ping", "-c", "1", "-W", "3", &target]);
            assert!(
                o.status.success(),
                "ping {from} → {target}: {}",
                text(&o.stderr)
            );
        }
    }
    ips
}

fn annotations(c: &Cluster, node: &str) -> serde_json::Value {
    let raw = c.kubectl_ok(&[
        "get",
        "node",
        node,
        "-o",
        "jsonpath={.metadata.annotations}",
    ]);
    serde_json::from_str(&raw).unwrap()
}

fn pod_cidr(c: &Cluster, node: &str) -> String {
    c.kubectl_ok(&["get", "node", node, "-o", "jsonpath={.spec.podCIDR}"])
}

#[test]
fn vxlan_connects_three_nodes_like_flannel() {
    if !require_e2e("vxlan_connects_three_nodes_like_flannel") {
        return;
    }
    require_tools(
        "e2e_overlay",
        &[("kubectl", "kubectl"), ("bridge", "iproute2")],
    );
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = Cluster::start(2, &[]);
    let ips = check_connectivity(&c);

    // Annotations and kernel entries, as flannel has them.
    for node in c.node_names() {
        let a = annotations(&c, &node);
        let mac = ip_lines(&c, &node, &["cat", "/sys/class/net/flannel.1/address"]);
        let mac = mac.trim();
        assert_eq!(a["flannel.alpha.coreos.com/backend-type"], "vxlan");
        assert_eq!(a["flannel.alpha.coreos.com/kube-subnet-manager"], "true");
        assert_eq!(
            a["flannel.alpha.coreos.com/public-ip"],
            c.node(&node).ip().to_string()
        );
        let data: serde_json::Value =
            serde_json::from_str(a["flannel.alpha.coreos.com/backend-data"].as_str().unwrap())
                .unwrap();
        assert_eq!(data, serde_json::json!({"VNI": 1, "VtepMAC": mac}));
        let cidr = pod_cidr(&c, &node);
        let vtep = cidr.replace("/24", "");
        for other in c.node_names().iter().filter(|o| **o != node) {
            let neigh = ip_lines(&c, other, &["ip", "neigh", "show", "dev", "flannel.1"]);
            assert!(
                neigh.contains(&format!("{vtep} lladdr {mac} PERMANENT")),
                "{other}: {neigh}"
            );
            let fdb = ip_lines(&c, other, &["bridge", "fdb", "show", "dev", "flannel.1"]);
            assert!(
                fdb.contains(&format!("{mac} dst {} self permanent", c.node(&node).ip())),
                "{other}: {fdb}"
            );
            let route = ip_lines(&c, other, &["ip", "route", "show", &cidr]);
            assert_eq!(
                route.trim(),
                format!("{cidr} via {vtep} dev flannel.1 onlink"),
                "{other}"
            );
        }
        let link = ip_lines(&c, &node, &["ip", "-d", "link", "show", "flannel.1"]);
        assert!(
            link.contains("vxlan id 1")
                && link.contains("dstport 8472")
                && link.contains("nolearning"),
            "{link}"
        );
        assert!(
            link.contains(&format!("local {}", c.node(&node).ip())),
            "{link}"
        );
    }

    // A long-running transfer from agent1's pod to agent2's (whose one-shot
    // listener on 9001 accepts a single connection) survives both agents
    // restarting: the byte count only grows if that connection lives.
    let rx_ip = &ips["agent2"];
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: sender
spec:
  nodeName: agent1
  containers:
  - name: app
    image: docker.io/rk3s/busybox:test
    command: [sh, -c, "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.2; done | nc {rx_ip} 9001; sleep 1000000"]
"#
    ));
    c.track_pod("sender");
    let received = |c: &Cluster| -> u64 {
        let out = text(
            &c.kubectl(&["exec", "web-agent2", "--", "sh", "-c", "wc -c < /tmp/rx"])
                .stdout,
        );
        out.trim().parse().unwrap_or(0)
    };
    c.wait_for("the transfer to start", 90, || {
        (received(&c) > 100).then_some(())
    });
    let ifindex =
        |c: &Cluster, n: &str| ip_lines(c, n, &["cat", "/sys/class/net/flannel.1/ifindex"]);
    let index_before = ifindex(&c, "agent1");
    for agent in ["agent1", "agent2"] {
        let a = c.agent_mut(agent);
        a.daemon.stop();
        a.daemon.spawn();
        // The log is appended across runs: the second "overlay ready" is this run's.
        c.wait_for(&format!("{agent}'s overlay to start again"), 120, || {
            let a = c.agents.iter().find(|a| a.name == agent).unwrap();
            (a.daemon.log_tail(100_000).matches("overlay ready").count() >= 2).then_some(())
        });
        c.wait_for(&format!("{agent} Ready again"), 120, || {
            c.node_ready(agent).then_some(())
        });
    }
    // Fail static: the restarted agent adopted the device instead of re-creating it.
    assert_eq!(
        ifindex(&c, "agent1"),
        index_before,
        "flannel.1 was re-created by a restart"
    );
    std::thread::sleep(Duration::from_secs(3));
    let before = received(&c);
    c.wait_for("the same transfer to go on after the restarts", 30, || {
        (received(&c) > before + 50).then_some(())
    });

    // A deleted flannel.1 comes back, and traffic with it.
    let agent1 = c.node("agent1");
    assert!(agent1
        .exec(&["ip", "link", "del", "flannel.1"])
        .status
        .success());
    c.wait_for("flannel.1 re-created", 60, || {
        c.node("agent1")
            .exec(&["ip", "link", "show", "flannel.1"])
            .status
            .success()
            .then_some(())
    });
    let server_pod_ip = &ips["server"];
    c.wait_for("agent1 → server pod after the repair", 60, || {
        c.kubectl(&[
            "exec",
            "web-agent1",
            "--",
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            server_pod_ip,
        ])
        .status
        .success()
        .then_some(())
    });

    // Deleting a Node object removes its entries on the others.
    let gone_cidr = pod_cidr(&c, "agent2");
    c.agent_mut("agent2").daemon.stop();
    c.kubectl_ok(&["delete", "node", "agent2"]);
    for other in ["server", "agent1"] {
        c.wait_for(&format!("{other} to drop agent2's route"), 60, || {
            ip_lines(&c, other, &["ip", "route", "show", &gone_cidr])
                .trim()
                .is_empty()
                .then_some(())
        });
        let neigh = ip_lines(&c, other, &["ip", "neigh", "show", "dev", "flannel.1"]);
        assert!(
            !neigh.contains(&gone_cidr.replace("/24", " ")),
            "{other}: {neigh}"
        );
        assert_eq!(
            ip_lines(&c, other, &["bridge", "fdb", "show", "dev", "flannel.1"])
                .lines()
                .count(),
            1,
            "{other} keeps only the remaining peer's FDB entry"
        );
    }
}

#[test]
fn host_gw_connects_three_nodes() {
    if !require_e2e("host_gw_connects_three_nodes") {
        return;
    }
    require_tools("e2e_overlay", &[("kubectl", "kubectl")]);
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = Cluster::start(2, &["--flannel-backend", "host-gw"]);
    check_connectivity(&c);
    for node in c.node_names() {
        assert_eq!(
            annotations(&c, &node)["flannel.alpha.coreos.com/backend-type"],
            "host-gw"
        );
        for other in c.node_names().iter().filter(|o| **o != node) {
            let cidr = pod_cidr(&c, other);
            let route = ip_lines(&c, &node, &["ip", "route", "show", &cidr]);
            assert_eq!(
                route.trim(),
                format!("{cidr} via {} dev eth0", c.node(other).ip()),
                "{node}"
            );
        }
        assert!(!c
            .node(&node)
            .exec(&["ip", "link", "show", "flannel.1"])
            .status
            .success());
    }
}
