use super::*;
use crate::apiserver::testing::MemoryStore;

fn ep(ip: &str, port: u16) -> ServerEndpoint {
    ServerEndpoint { ip: ip.parse().unwrap(), port }
}

fn read(store: &dyn Store, key: &str) -> (Value, i64) {
    let rec = store.get(key).unwrap().expect(key);
    (serde_json::from_slice(&rec.value).unwrap(), rec.mod_revision)
}

fn listed(store: &dyn Store) -> Vec<String> {
    let (eps, _) = read(store, ENDPOINTS_KEY);
    let mut out = Vec::new();
    for subset in eps["subsets"].as_array().unwrap() {
        let port = subset["ports"][0]["port"].as_u64().unwrap();
        for a in subset["addresses"].as_array().unwrap() {
            out.push(format!("{}:{port}", a["ip"].as_str().unwrap()));
        }
    }
    out.sort();
    out
}

#[test]
fn a_lease_is_live_until_its_duration_has_passed() {
    let now = Utc::now();
    let lease = build_lease(ep("10.0.0.1", 6443), "h", now);
    assert_eq!(lease_endpoint(&lease, now), Some((ep("10.0.0.1", 6443), true)));
    let later = now + chrono::Duration::seconds(LEASE_SECONDS + 1);
    assert_eq!(lease_endpoint(&lease, later), Some((ep("10.0.0.1", 6443), false)));
    // Another component's Lease (a node's, a leader election's) is not a server.
    let mut other = lease.clone();
    other["metadata"]["labels"] = json!({});
    assert_eq!(lease_endpoint(&other, now), None);
    let _: k8s_openapi::api::coordination::v1::Lease = serde_json::from_value(lease).unwrap();
}

#[test]
fn lease_names_are_stable_per_endpoint() {
    assert_eq!(lease_name(ep("10.0.0.1", 6443)), lease_name(ep("10.0.0.1", 6443)));
    assert_ne!(lease_name(ep("10.0.0.1", 6443)), lease_name(ep("10.0.0.2", 6443)));
    assert!(lease_name(ep("10.0.0.1", 6443)).starts_with("apiserver-"));
}

#[test]
fn endpoints_group_addresses_by_port_and_the_slice_uses_the_common_port() {
    let set: BTreeSet<_> = [ep("10.0.0.2", 6443), ep("10.0.0.1", 6443), ep("10.0.0.3", 7443)].into();
    let subsets = endpoints_subsets(&set);
    assert_eq!(subsets[0]["ports"][0]["port"], 6443);
    assert_eq!(subsets[0]["addresses"], json!([{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}]));
    assert_eq!(subsets[1]["ports"][0]["port"], 7443);
    let slice = endpoint_slice_object(&set);
    assert_eq!(slice["ports"][0]["port"], 6443);
    assert_eq!(slice["endpoints"].as_array().unwrap().len(), 3);
    let _: k8s_openapi::api::discovery::v1::EndpointSlice = serde_json::from_value(slice).unwrap();
}

#[test]
fn two_servers_list_each_other_and_an_idle_tick_writes_nothing() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let a = Reconciler::new(store.clone(), ep("10.0.0.1", 6443));
    let b = Reconciler::new(store.clone(), ep("10.0.0.2", 6443));
    let now = Utc::now();
    a.tick(now).unwrap();
    assert_eq!(listed(store.as_ref()), ["10.0.0.1:6443"]);
    b.tick(now).unwrap();
    assert_eq!(listed(store.as_ref()), ["10.0.0.1:6443", "10.0.0.2:6443"]);
    let (_, eps_rev) = read(store.as_ref(), ENDPOINTS_KEY);
    let (_, slice_rev) = read(store.as_ref(), SLICE_KEY);
    // Renewals with the same set leave the endpoints alone.
    let later = now + chrono::Duration::seconds(10);
    a.tick(later).unwrap();
    b.tick(later).unwrap();
    assert_eq!(read(store.as_ref(), ENDPOINTS_KEY).1, eps_rev);
    assert_eq!(read(store.as_ref(), SLICE_KEY).1, slice_rev);
    let (slice, _) = read(store.as_ref(), SLICE_KEY);
    assert_eq!(slice["endpoints"][1]["addresses"][0], "10.0.0.2");
}

#[test]
fn a_stopping_server_removes_itself_and_a_dead_one_expires() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let a = Reconciler::new(store.clone(), ep("10.0.0.1", 6443));
    let b = Reconciler::new(store.clone(), ep("10.0.0.2", 6443));
    let c = Reconciler::new(store.clone(), ep("10.0.0.3", 6443));
    let now = Utc::now();
    for r in [&a, &b, &c] {
        r.tick(now).unwrap();
    }
    assert_eq!(listed(store.as_ref()).len(), 3);
    // b stops gracefully: gone at once, its Lease deleted.
    b.remove_self(now).unwrap();
    assert_eq!(listed(store.as_ref()), ["10.0.0.1:6443", "10.0.0.3:6443"]);
    let b_key = format!("{LEASE_PREFIX}{}", lease_name(ep("10.0.0.2", 6443)));
    assert!(store.get(&b_key).unwrap().is_none());
    // c dies: a's renewal after c's Lease expired drops it and deletes the Lease.
    let later = now + chrono::Duration::seconds(LEASE_SECONDS + 5);
    a.tick(later).unwrap();
    assert_eq!(listed(store.as_ref()), ["10.0.0.1:6443"]);
    let c_key = format!("{LEASE_PREFIX}{}", lease_name(ep("10.0.0.3", 6443)));
    assert!(store.get(&c_key).unwrap().is_none());
    // The last server leaves the list as it is rather than empty.
    a.remove_self(later).unwrap();
    assert_eq!(listed(store.as_ref()), ["10.0.0.1:6443"]);
}

#[test]
fn edits_to_other_fields_of_the_endpoints_are_kept() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let a = Reconciler::new(store.clone(), ep("10.0.0.1", 6443));
    a.tick(Utc::now()).unwrap();
    let (mut eps, rev) = read(store.as_ref(), ENDPOINTS_KEY);
    eps["metadata"]["annotations"] = json!({"mine": "yes"});
    store.update(ENDPOINTS_KEY, &objects::to_stored(&eps), rev).unwrap();
    let b = Reconciler::new(store.clone(), ep("10.0.0.2", 6443));
    b.tick(Utc::now()).unwrap();
    let (eps, _) = read(store.as_ref(), ENDPOINTS_KEY);
    assert_eq!(eps["metadata"]["annotations"]["mine"], "yes");
    assert_eq!(listed(store.as_ref()).len(), 2);
}
