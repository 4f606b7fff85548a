//! Leader election through a real API server: electors with the
//! controller-manager's certificate (so its RBAC on the Lease is exercised)
//! take turns on `kube-system/kube-controller-manager`, with short timings.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::apiserver::TestServer;
use k8s_openapi::api::coordination::v1::Lease;
use rk3s::server::election::{self, ElectionConfig, KubeLeases, CONTROLLER_MANAGER_LEASE, NAMESPACE};
use tokio_util::sync::CancellationToken;

/// How many workloads run now, and the most that ever ran at once.
#[derive(Default)]
struct Running {
    now: AtomicUsize,
    most: AtomicUsize,
    starts: AtomicUsize,
}

fn short(id: &str) -> ElectionConfig {
    let mut c = ElectionConfig::new(CONTROLLER_MANAGER_LEASE, id);
    c.lease_duration = Duration::from_secs(3);
    c.renew_deadline = Duration::from_secs(2);
    c.retry_period = Duration::from_millis(250);
    c
}

fn spawn_elector(
    client: kube::Client,
    id: &str,
    running: Arc<Running>,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let cfg = short(id);
    let leases = KubeLeases::new(client, NAMESPACE, CONTROLLER_MANAGER_LEASE);
    let stop = CancellationToken::new();
    let start = move |token: CancellationToken| {
        let running = running.clone();
        tokio::spawn(async move {
            running.starts.fetch_add(1, Ordering::SeqCst);
            let n = running.now.fetch_add(1, Ordering::SeqCst) + 1;
            running.most.fetch_max(n, Ordering::SeqCst);
            token.cancelled().await;
            running.now.fetch_sub(1, Ordering::SeqCst);
        })
    };
    let task = tokio::spawn(election::run(cfg, leases, start, stop.clone()));
    (stop, task)
}

async fn holder(client: &kube::Client) -> String {
    let api: kube::Api<Lease> = kube::Api::namespaced(client.clone(), NAMESPACE);
    api.get_opt(CONTROLLER_MANAGER_LEASE)
        .await
        .unwrap()
        .and_then(|l| l.spec?.holder_identity)
        .unwrap_or_default()
}

async fn wait_holder(client: &kube::Client, want: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let h = holder(client).await;
        if h == want {
            return;
        }
        assert!(Instant::now() < deadline, "the lease is held by {h:?}, not {want:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn two_electors_take_turns_on_the_controller_manager_lease() {
    let server = TestServer::start();
    let pki = server.pki();
    let url = server.url().to_string();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let client = rk3s::controllers::in_process_client(&pki, rk3s::pki::ClientRole::ControllerManager, &url)
            .await
            .unwrap();
        let running = Arc::new(Running::default());
        let (stop_a, task_a) = spawn_elector(client.clone(), "a_1", running.clone());
        wait_holder(&client, "a_1", Duration::from_secs(20)).await;
        let (stop_b, task_b) = spawn_elector(client.clone(), "b_2", running.clone());
        // `b` stands by while `a` renews (several lease durations).
        tokio::time::sleep(Duration::from_secs(7)).await;
        assert_eq!(holder(&client).await, "a_1");
        assert_eq!(running.starts.load(Ordering::SeqCst), 1);

        // A graceful stop releases the lease: `b` takes it.
        stop_a.cancel();
        task_a.await.unwrap();
        wait_holder(&client, "b_2", Duration::from_secs(20)).await;

        // `b` dies without releasing: `c` waits for the lease to expire.
        task_b.abort();
        stop_b.cancel();
        let (stop_c, task_c) = spawn_elector(client.clone(), "c_3", running.clone());
        wait_holder(&client, "c_3", Duration::from_secs(30)).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while running.starts.load(Ordering::SeqCst) < 3 {
            assert!(Instant::now() < deadline, "c's workload never started");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop_c.cancel();
        task_c.await.unwrap();
        assert_eq!(holder(&client).await, "", "a stopped leader releases the lease");
        assert_eq!(running.most.load(Ordering::SeqCst), 1, "two workloads ran at once");
        assert_eq!(running.now.load(Ordering::SeqCst), 0);
    });
}
