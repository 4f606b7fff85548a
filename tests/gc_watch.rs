//! The watch-fed garbage collector with the workload controllers and
//! simulated nodes: a Deployment's ReplicaSet and pods go with it, in the
//! background and in the foreground (where the Deployment itself waits for
//! them). Timings are printed by `cargo bench --bench quiet`, not asserted.
mod common;

use std::time::Duration;

use common::gcfixture::{create_deployment, delete_and_time, list_dependents, start_workloads};
use common::simnodes::ClusterHarness;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;

#[test]
fn a_deleted_deployment_takes_its_replicaset_and_pods_with_it() {
    // The consistency pass must not be what does the work here.
    let h = ClusterHarness::start(|o| o.gc_period = Duration::from_secs(3600));
    let _nodes = h.nodes(1);
    let workloads = start_workloads(&h);
    let client = h.client.clone();
    h.rt.block_on(async {
        for (name, policy) in [("bg", "Background"), ("fg", "Foreground")] {
            let before = create_deployment(&client, "default", name, 3).await;
            assert_eq!(before.pods.len(), 3);
            let took = delete_and_time(
                &client,
                "default",
                name,
                policy,
                &before,
                Duration::from_secs(30),
            )
            .await;
            let left = list_dependents(&client, "default", name).await;
            assert!(
                took.is_some(),
                "{policy}: dependents left after 30 s: {left:?}"
            );
            let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
            assert!(deploys.get_opt(name).await.unwrap().is_none());
            assert!(left.replicasets.is_disjoint(&before.replicasets));
            assert!(left.pods.is_disjoint(&before.pods));
        }
    });
    workloads.cancel();
}
