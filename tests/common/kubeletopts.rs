//! Options for a kubelet run in the test's own process (`kubelet::run`)
//! against a private containerd and an in-process API server, as
//! `tests/e2e_kubelet.rs` and the kubelet bench run it: the node at
//! 127.0.0.1, its `registries.yaml` and state under the test's dir, a node
//! kubeconfig signed by the server's CA. The caller sets what differs
//! (labels, log root, bridge).

use std::path::Path;

use rk3s::agent::kubelet::KubeletOptions;
use rk3s::agent::NodeCredentials;

use super::apiserver::TestServer;
use super::containerd::Containerd;

pub fn in_process_kubelet(
    server: &TestServer,
    containerd: &Containerd,
    dir: &Path,
    node: &str,
) -> KubeletOptions {
    let config = rk3s::config::NodeConfig {
        node_name: node.into(),
        node_ip: Some("127.0.0.1".parse().unwrap()),
        node_labels: Default::default(),
        node_taints: Vec::new(),
        container_runtime_endpoint: format!("unix://{}", containerd.socket().display()),
        private_registry: dir.join("registries.yaml"),
        kubelet_args: Default::default(),
        node_external_ip: None,
        flannel_iface: None,
        resolv_conf: None,
        ingress_http_port: 80,
        ingress_https_port: 443,
        run_dir: dir.join("run"),
    };
    let creds = NodeCredentials {
        node_name: node.into(),
        kubeconfig: server.node_kubeconfig(node),
        serving_cert: dir.join("unused.crt"),
        serving_key: dir.join("unused.key"),
    };
    KubeletOptions::new(config, creds, dir.join("agent"))
}
