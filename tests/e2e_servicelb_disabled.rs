//! `rk3s server --disable servicelb` leaves LoadBalancer Services pending,
//! as k3s does, so MetalLB or another controller can take them: no
//! `status.loadBalancer.ingress`, `<pending>` in `kubectl get svc`, while
//! the rest of the Service (ClusterIP, NodePort) is allocated as usual.
//! The enabled case is `e2e_proxy` (both nodes listed in the status).
//!
//! The same server runs with `--disable metrics-server`: `metrics.k8s.io`
//! is not served and `kubectl top` says so, as with k3s. And the agent's
//! own Prometheus metrics (tunnel, service proxy) are read through
//! `nodes/<node>/proxy/metrics`.

mod common;

use std::time::{Duration, Instant};

use common::privilege::{self, require_e2e};
use common::twonode::{text, Cluster};

const LB: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: lonely-lb}
spec:
  type: LoadBalancer
  selector: {app: nothing}
  ports: [{name: http, port: 8082, targetPort: 8080}]
"#;

#[test]
fn disabling_servicelb_leaves_load_balancers_pending() {
    if !require_e2e("disabling_servicelb_leaves_load_balancers_pending") {
        return;
    }
    privilege::require_tools("e2e_servicelb_disabled", &[("kubectl", "kubectl")]);
    let c = Cluster::start_with(&["--disable", "servicelb", "--disable", "metrics-server"]);
    // A Ready node is what ServiceLB would have put in the status.
    c.wait_for("node server Ready", 90, || c.node_ready("server").then_some(()));
    c.apply(LB);
    let node_port = c.wait_for("a NodePort allocated", 30, || {
        let o = c.kubectl(&[
            "get",
            "svc",
            "lonely-lb",
            "-o",
            "jsonpath={.spec.ports[0].nodePort}",
        ]);
        text(&o.stdout).parse::<u16>().ok()
    });
    assert!(node_port >= 30000, "nodePort {node_port}");
    // ServiceLB, when enabled, fills the status within a pass or two; give
    // a disabled one ample time to (wrongly) do so.
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        let o = c.kubectl(&[
            "get",
            "svc",
            "lonely-lb",
            "-o",
            "jsonpath={.status.loadBalancer.ingress}",
        ]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        assert_eq!(text(&o.stdout), "", "status.loadBalancer.ingress was written");
        std::thread::sleep(Duration::from_millis(500));
    }
    let table = c.kubectl_ok(&["get", "svc", "lonely-lb", "--no-headers"]);
    assert!(table.contains("<pending>"), "{table}");

    // --disable metrics-server: the group is gone from discovery.
    let groups = c.kubectl_ok(&["api-versions"]);
    assert!(!groups.contains("metrics.k8s.io"), "{groups}");
    let top = c.kubectl(&["top", "nodes"]);
    assert!(!top.status.success(), "kubectl top worked without the metrics API");
    assert!(text(&top.stderr).contains("Metrics API not available"), "{}", text(&top.stderr));

    // The node agent's own metrics (the server's built-in agent, node
    // `server`): its tunnel is up and its proxy has synced
    // (the LoadBalancer Service above is in its view).
    let deadline = Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        let o = c.kubectl(&["get", "--raw", "/api/v1/nodes/server/proxy/metrics"]);
        let t = text(&o.stdout);
        if t.contains("rk3s_proxy_syncs_total{result=\"success\",kind=\"full\"}") {
            break t;
        }
        let last = format!("{t}{}", text(&o.stderr));
        assert!(Instant::now() < deadline, "the agent's proxy counted no sync in 30 s; its metrics:\n{last}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(metrics.contains("rk3s_tunnel_connected 1"), "{metrics}");
    assert!(metrics.contains("rk3s_tunnel_connects_total{result=\"success\"}"), "{metrics}");
    assert!(metrics.contains("rk3s_proxy_sync_duration_seconds_count"), "{metrics}");
}
