//! `kubectl exec` through either of two API servers reaches a container on
//! the agent, and keeps working through the survivor when the agent's seed
//! server stops: the agent holds a tunnel to each server (issue 21).
//!
//! Two in-process servers share one store and PKI (`common::haservers`;
//! the join of a second `rk3s server` process is the `ha` work); the agent's
//! API side (load balancer, tunnel pool, server watch, node lease) runs as
//! `rk3s agent` runs it, over a real containerd and a busybox container.
//!
//! Root-only: skips without root unless `RK3S_E2E=1`.

mod common;

use std::time::{Duration, Instant};

use common::containerd::Containerd;
use common::haservers::{kubernetes_endpoints, HaAgent, HaServers};
use common::nodekit::import_busybox;
use common::kubelet_tunnel::{exec_until_it_works, WebPod};
use common::privilege::require_e2e;
use rk3s::agent::runtime::ContainerRuntime;

#[test]
fn kubectl_exec_reaches_the_agent_through_either_server() {
    if !require_e2e("kubectl_exec_reaches_the_agent_through_either_server") {
        return;
    }
    let containerd = Containerd::start().expect("start containerd");
    import_busybox(&containerd);
    let mut ha = HaServers::start();
    let (a, b) = (ha.servers[0].addr().to_string(), ha.servers[1].addr().to_string());
    let (kubectl_a, kubectl_b) = (ha.servers[0].kubectl(), ha.servers[1].kubectl());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let WebPod { runtime, id, api } = WebPod::start(&rt, &containerd, &kubectl_a);
    let state = tempfile::tempdir().unwrap();
    let agent = HaAgent::start(&ha, "node1", &a, state.path(), api);

    assert_eq!(exec_until_it_works(&kubectl_a, "via-a"), "via-a\n");
    assert_eq!(exec_until_it_works(&kubectl_b, "via-b"), "via-b\n");

    ha.servers[0].stop();
    let deadline = Instant::now() + Duration::from_secs(30);
    while kubernetes_endpoints(&kubectl_b) != [b.clone()] {
        assert!(Instant::now() < deadline, "the stopped server stayed in the Endpoints");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(exec_until_it_works(&kubectl_b, "after"), "after\n");
    // The agent's API connections went over to the survivor.
    let deadline = Instant::now() + Duration::from_secs(30);
    while agent.balancer.health(&a) != Some(rk3s::agent::loadbalancer::Health::Down) {
        assert!(Instant::now() < deadline, "the stopped server was never marked down");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(agent);
    let _ = rt.block_on(runtime.stop(&id, Duration::from_secs(1)));
    let _ = rt.block_on(runtime.remove(&id));
}
