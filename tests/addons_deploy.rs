//! The manifests deployer (`rk3s::addons`) against an in-process API server:
//! files become objects and `Addon`s, edits are re-applied, `.skip` stops a
//! file, a broken file gets a Warning Event and does not block the others,
//! removing a file leaves its objects. Passes are driven by the test
//! (`Deployer::pass`), so nothing waits on the poll timer. With two servers
//! on one store, each deploys its own directory (as k3s's deploy controller
//! runs on every server) and identical files settle instead of fighting.

mod common;

use common::apiserver::TestServer;
use common::haservers::HaServers;
use k8s_openapi::api::core::v1::{ConfigMap, Event};
use kube::api::{Api, ListParams};

fn cm(name: &str, ns: Option<&str>, value: &str) -> String {
    let ns = ns.map(|n| format!("  namespace: {n}\n")).unwrap_or_default();
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n{ns}data:\n  k: \"{value}\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_become_objects_and_addons() {
    let server = TestServer::start();
    let client = server.kube_client().await;
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();

    write("a.yaml", &format!("{}---\n{}", cm("a1", None, "1"), cm("a2", Some("kube-system"), "1")));
    write("b.json", r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"from-json"}}"#);
    write("0-broken.yml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: [oops\n");
    write("notes.txt", "not a manifest");
    let mut deployer = rk3s::addons::Deployer::new(client.clone(), dir.path());
    deployer.prepare().await.unwrap();
    deployer.pass().await;

    let default: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let system: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    let ev = server.kubectl().run_ok(&["get", "events", "-A"]);
    let a1 = default.get("a1").await.unwrap_or_else(|e| panic!("{e}: {ev}"));
    assert_eq!(system.get("a2").await.unwrap().data.unwrap()["k"], "1");
    let managers: Vec<_> = a1.metadata.managed_fields.unwrap().iter().filter_map(|m| m.manager.clone()).collect();
    assert_eq!(managers, ["rk3s-deploy"], "server-side apply with our field manager");
    let out = server.kubectl().run_ok(&["get", "addons", "-A"]);
    for name in ["a ", "b ", "0-broken "] {
        assert!(out.contains(name), "{out}");
    }
    assert!(server.kubectl().run_ok(&["get", "ns", "from-json"]).contains("from-json"));
    let checksum = server.kubectl().run_ok(&["get", "addon", "a", "-n", "kube-system", "-o", "jsonpath={.spec.checksum}"]);
    assert_eq!(checksum.len(), 64, "{checksum}");

    let events: Api<Event> = Api::namespaced(client.clone(), "kube-system");
    let failed = events.list(&ListParams::default().fields("involvedObject.name=0-broken")).await.unwrap();
    let event = failed.items.iter().find(|e| e.reason.as_deref() == Some("ApplyManifestFailed")).expect("a Warning Event");
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert!(event.message.as_deref().unwrap().contains("0-broken.yml"), "{event:?}");

    // An edit is applied on the next pass, with a new checksum.
    write("a.yaml", &format!("{}---\n{}", cm("a1", None, "2"), cm("a2", Some("kube-system"), "1")));
    deployer.pass().await;
    assert_eq!(default.get("a1").await.unwrap().data.unwrap()["k"], "2");
    let checksum2 = server.kubectl().run_ok(&["get", "addon", "a", "-n", "kube-system", "-o", "jsonpath={.spec.checksum}"]);
    assert_ne!(checksum, checksum2);

    // `.skip` stops it; removing the .skip applies it again.
    write("a.yaml.skip", "");
    write("a.yaml", &format!("{}---\n{}", cm("a1", None, "3"), cm("a2", Some("kube-system"), "1")));
    deployer.pass().await;
    assert_eq!(default.get("a1").await.unwrap().data.unwrap()["k"], "2");
    std::fs::remove_file(dir.path().join("a.yaml.skip")).unwrap();
    deployer.pass().await;
    assert_eq!(default.get("a1").await.unwrap().data.unwrap()["k"], "3");

    // Removing a file leaves its objects (as k3s does).
    std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
    deployer.pass().await;
    assert!(default.get("a1").await.is_ok());

    // Fixing the broken file applies it.
    write("0-broken.yml", &cm("fixed", None, "ok"));
    deployer.pass().await;
    assert!(default.get("fixed").await.is_ok());
}

/// k3s runs its deploy controller on every server, each on its own
/// manifests directory: a file on either server is deployed, and a file both
/// servers hold converges to one object that later passes leave alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_server_deploys_its_own_directory_without_fighting() {
    let ha = HaServers::start();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let shared = cm("shared", Some("kube-system"), "same");
    for dir in [&dir_a, &dir_b] {
        std::fs::write(dir.path().join("shared.yaml"), &shared).unwrap();
    }
    std::fs::write(dir_a.path().join("only-a.yaml"), cm("only-a", None, "a")).unwrap();
    std::fs::write(dir_b.path().join("only-b.yaml"), cm("only-b", None, "b")).unwrap();

    let client_a = ha.servers[0].kube_client().await;
    let client_b = ha.servers[1].kube_client().await;
    let mut deployers = [
        rk3s::addons::Deployer::new(client_a.clone(), dir_a.path()),
        rk3s::addons::Deployer::new(client_b.clone(), dir_b.path()),
    ];
    for d in deployers.iter_mut() {
        d.prepare().await.unwrap();
        d.pass().await;
    }

    let default: Api<ConfigMap> = Api::namespaced(client_a.clone(), "default");
    assert_eq!(default.get("only-a").await.unwrap().data.unwrap()["k"], "a");
    assert_eq!(default.get("only-b").await.unwrap().data.unwrap()["k"], "b", "a file on the second server is deployed too");
    let system: Api<ConfigMap> = Api::namespaced(client_b.clone(), "kube-system");
    let settled = system.get("shared").await.unwrap();
    assert_eq!(settled.data.as_ref().unwrap()["k"], "same");
    let addons = ha.servers[1].kubectl().run_ok(&["get", "addons", "-n", "kube-system", "-o", "name"]);
    for name in ["only-a", "only-b", "shared"] {
        assert!(addons.contains(name), "{addons}");
    }

    // Unchanged files are not applied again by either server: no churn.
    for _ in 0..3 {
        for d in deployers.iter_mut() {
            d.pass().await;
        }
    }
    let after = system.get("shared").await.unwrap();
    assert_eq!(after.metadata.resource_version, settled.metadata.resource_version, "the servers do not fight over a shared file");

    // An edit on one server's disk is deployed by that server.
    std::fs::write(dir_b.path().join("only-b.yaml"), cm("only-b", None, "b2")).unwrap();
    for d in deployers.iter_mut() {
        d.pass().await;
    }
    assert_eq!(default.get("only-b").await.unwrap().data.unwrap()["k"], "b2");
}
