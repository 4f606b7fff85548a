//! An agent next to two API servers (`common::haservers`: two in-process
//! servers on one shared store and PKI) keeps working when its seed server
//! goes away:
//! - both servers list themselves in the `kubernetes` Endpoints;
//! - the agent (its load balancer on a local port, its tunnel pool and its
//!   server watch, the parts `rk3s agent` runs, with the node kubeconfig
//!   pointed at the balancer) opens a tunnel to each server, so the real
//!   kubectl reads a pod's logs through either server;
//! - when the seed server stops, it leaves the Endpoints, the agent's node
//!   Lease (renewed by the kubelet's own lease loop through the balancer)
//!   keeps being renewed through the other server, logs still work through
//!   it, and a balancer restarted with the remembered list reaches it even
//!   though the seed is dead.
//!
//! The servers stop gracefully here (in-process servers can't be killed);
//! the loss of a server without goodbye is the Lease expiry, unit-tested in
//! `apiserver_leases`, and the tunnel's dead-peer detection.

mod common;

use std::time::{Duration, Instant};

use common::haservers::{kubernetes_endpoints, HaAgent, HaServers};
use rk3s::agent::kubelet_api::KubeletApi;
use rk3s::agent::loadbalancer::{proxy, Balancer, STATE_FILE};

fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn cri(line: &str) -> String {
    format!(
        "{} stdout F {line}\n",
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
    )
}

#[test]
fn an_agent_keeps_its_api_and_tunnels_when_its_seed_server_stops() {
    let mut ha = HaServers::start();
    let (a, b) = (ha.servers[0].addr().to_string(), ha.servers[1].addr().to_string());
    let kubectl_b = ha.servers[1].kubectl();

    // Both servers list themselves (one store: either server shows it).
    let both = {
        let mut v = vec![a.clone(), b.clone()];
        v.sort();
        v
    };
    wait_for("both servers in the kubernetes Endpoints", 30, || {
        (kubernetes_endpoints(&kubectl_b) == both).then_some(())
    });

    // A pod on node1 with a log file the agent's kubelet API serves.
    let logs = tempfile::tempdir().unwrap();
    ha.servers[0].kubectl().run_with_stdin(&["apply", "-f", "-"], common::kubelet_tunnel::WEB_POD);
    let uid = kubectl_b.run_ok(&["get", "pod", "web", "-o", "jsonpath={.metadata.uid}"]);
    let dir = logs.path().join(format!("default_web_{uid}/app"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("0.log"), format!("{}{}", cri("hello from node1"), cri("bye"))).unwrap();

    let state = tempfile::tempdir().unwrap();
    let api = KubeletApi { log_root: logs.path().to_path_buf(), exec: None, liveness: None, port_forward: None };
    let agent = HaAgent::start(&ha, "node1", &a, state.path(), api);

    // One tunnel to each server: logs through either reach the agent.
    for s in &ha.servers {
        wait_for("the agent's tunnel to each server", 30, || {
            s.tunnels().connected().contains(&"node1".to_string()).then_some(())
        });
        let out = s.kubectl().run_ok(&["logs", "web"]);
        assert!(out.contains("hello from node1"), "{}: {out}", s.url());
    }
    assert_eq!(agent.balancer.servers(), [a.clone(), b.clone()]);
    let remembered = std::fs::read_to_string(state.path().join(STATE_FILE)).unwrap();
    assert!(remembered.contains(&b), "{remembered}");

    // The node Lease is renewed through the balancer.
    let renew_time = || {
        let out = kubectl_b.run(&["get", "lease", "-n", "kube-node-lease", "node1", "-o", "jsonpath={.spec.renewTime}"]);
        let t = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (!t.is_empty()).then_some(t)
    };
    let before = wait_for("the node lease", 30, renew_time);

    // The seed server stops.
    ha.servers[0].stop();
    wait_for("the stopped server to leave the Endpoints", 30, || {
        (kubernetes_endpoints(&kubectl_b) == [b.clone()]).then_some(())
    });
    // The lease loop renews every 10 s; through the balancer it now reaches b.
    wait_for("the node lease renewed through the other server", 45, || {
        renew_time().filter(|t| *t != before)
    });
    let out = kubectl_b.run_ok(&["logs", "web"]);
    assert!(out.contains("hello from node1"), "{out}");
    assert!(ha.servers[1].tunnels().connected().contains(&"node1".to_string()));
    assert!(!agent.lb_url.is_empty());

    // A restart with the seed dead: the remembered list reaches b.
    let restarted = Balancer::new(&a, Some(state.path().join(STATE_FILE)));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (reached, _, _) = rt
        .block_on(proxy::dial_best(&restarted, &proxy::TcpDialer))
        .expect("a remembered server answers");
    assert_eq!(reached, b);
    drop(agent);
}
