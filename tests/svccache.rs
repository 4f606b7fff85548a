//! The node's service cache against the in-process server, as an agent uses
//! it: a node's own credentials (the Node authorizer must let it list and
//! watch Services and EndpointSlices), Services and slices created with the
//! real kubectl, and a snapshot that follows them.
mod common;

use std::time::Duration;

use common::apiserver::TestServer;
use rk3s::svccache::{ObjKey, ServiceCache, Snapshot};
use tokio_util::sync::CancellationToken;

async fn node_client(server: &TestServer) -> kube::Client {
    common::apiserver::kube_client_for(&server.node_kubeconfig("n1")).await
}

/// Waits (up to 20 s) for a snapshot that satisfies `ok`.
async fn wait_for(cache: &ServiceCache, what: &str, ok: impl Fn(&Snapshot) -> bool) {
    let mut rx = cache.changes();
    let found = tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|s| ok(s))).await;
    assert!(
        matches!(found, Ok(Ok(_))),
        "the service cache never showed {what}; last snapshot: {:?}",
        cache.snapshot().services.keys().collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_follows_services_and_slices_with_node_credentials() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = TestServer::start();
    let kubectl = server.kubectl();
    kubectl.run_ok(&["create", "namespace", "shop"]);
    kubectl.run_ok(&[
        "-n", "shop", "create", "service", "clusterip", "web", "--tcp=80:8080",
    ]);

    let shutdown = CancellationToken::new();
    let cache = ServiceCache::start(node_client(&server).await, shutdown.clone());
    tokio::time::timeout(Duration::from_secs(20), cache.ready())
        .await
        .expect("the cache never finished its first list");
    let web = ObjKey::new("shop", "web");
    let snap = cache.snapshot();
    assert!(snap.synced);
    let svc = snap.service(&web).expect("shop/web is in the first snapshot");
    assert_eq!(svc.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port, 80);
    // The default/kubernetes Service has its slice from the bootstrap.
    assert!(!snap.slices(&ObjKey::new("default", "kubernetes")).is_empty());

    // A hand-written slice for a selector-less Service reaches the cache.
    let applied = kubectl.run_with_stdin(
        &["apply", "-f", "-"],
        r#"{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice",
            "metadata":{"name":"web-manual","namespace":"shop",
                        "labels":{"kubernetes.io/service-name":"web"}},
            "addressType":"IPv4",
            "endpoints":[{"addresses":["10.42.0.7"],"conditions":{"ready":true}}],
            "ports":[{"name":"80-8080","port":8080,"protocol":"TCP"}]}"#,
    );
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    wait_for(&cache, "the slice of shop/web", |s| {
        s.slices(&web).iter().any(|sl| {
            sl.endpoints
                .iter()
                .any(|e| e.addresses == vec!["10.42.0.7".to_string()])
        })
    })
    .await;

    kubectl.run_ok(&["-n", "shop", "delete", "service", "web"]);
    wait_for(&cache, "shop/web deleted", |s| s.service(&web).is_none()).await;
    shutdown.cancel();
}
