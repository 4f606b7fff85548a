//! A kubelet API served through a real tunnel client, as an agent serves
//! it, for tests that drive the API server's streaming and proxy paths
//! without a whole agent.

use std::sync::Arc;

use rk3s::agent::kubelet_api::{self, KubeletApi};
use rk3s::pki::AgentCert;
use rk3s::tunnel::{self, ClientOptions};
use tokio_util::sync::CancellationToken;

use super::apiserver::TestServer;

/// Connects `api` to `server` as node `node`'s tunnel, on `rt`, until
/// `shutdown` is cancelled.
pub fn spawn(
    rt: &tokio::runtime::Runtime,
    server: &TestServer,
    node: &str,
    api: KubeletApi,
    shutdown: &CancellationToken,
) {
    rt.spawn(tunnel::run_client(
        ClientOptions {
            server: server.url().parse().unwrap(),
            tls: super::apiserver::signed_client_tls(
                &server.pki(),
                AgentCert::KubeletClient {
                    node_name: node.into(),
                },
            ),
            handler: kubelet_api::tunnel_handler(kubelet_api::router_with(api)),
            session: Default::default(),
        },
        shutdown.clone(),
    ));
}

/// A kubelet API that only connects to pods, inside the network namespaces
/// under `/var/run/netns` (`rk3s-<uid>`), for port-forward and the proxies.
pub fn pod_dialer() -> KubeletApi {
    KubeletApi {
        liveness: None,
        log_root: std::env::temp_dir(),
        exec: None,
        port_forward: Some(Arc::new(
            kubelet_api::portforward::NetnsPortForward {
                netns_dir: "/var/run/netns".into(),
            },
        )),
    }
}
