//! The service proxy's rules on a real kernel, with real traffic, without
//! a cluster: network-namespace nodes on a private bridge. `gw` plays the
//! node whose table `ip rk3s-proxy` the [`Syncer`] programs through the
//! real `nft` and netlink; `b1` and `b2` are backends (busybox httpd answering their
//! name, and the client's address through a CGI); `client` reaches the
//! ClusterIPs through `gw`. Each phase changes the snapshot and syncs
//! incrementally, as the agent does on an EndpointSlice change.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::netns::{Network, Node};
use common::privilege::require_e2e;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use rk3s::hostnet::nft::NftFirewall;
use rk3s::proxy::{NetlinkElements, NodeView, Syncer};
use rk3s::svccache::Snapshot;
use serde_json::{json, Value};

const CIP: &str = "10.43.0.50";

fn service(name: &str, ip: &str, extra: Value) -> Service {
    let mut spec =
        json!({"clusterIP": ip, "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]});
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    serde_json::from_value(
        json!({"metadata": {"name": name, "namespace": "default"}, "spec": spec}),
    )
    .unwrap()
}

fn slice(svc: &str, eps: &[(std::net::Ipv4Addr, &str)]) -> EndpointSlice {
    let endpoints: Vec<Value> = eps
        .iter()
        .map(|(n, node)| json!({"addresses": [n.to_string()], "nodeName": node, "conditions": {"ready": true}}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": format!("{svc}-1"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    }))
    .unwrap()
}

/// `curl` from `node`: Ok(body) or Err(curl's exit code).
fn curl(node: &Node, url: &str) -> Result<String, i32> {
    let out = node
        .exec_within(
            &["curl", "-sS", "--max-time", "3", url],
            Duration::from_secs(10),
        )
        .expect("curl ran");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(out.status.code().unwrap_or(-1))
    }
}

fn serve(node: &Node, name: &str, dir: &std::path::Path) {
    let root = dir.join(name);
    std::fs::create_dir_all(root.join("cgi-bin")).unwrap();
    std::fs::write(root.join("index.html"), format!("{name}\n")).unwrap();
    let cgi = root.join("cgi-bin/ip");
    std::fs::write(&cgi, "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\necho \"$REMOTE_ADDR\" | /bin/busybox sed -e 's/^\\[::ffff://' -e 's/\\]$//'\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&cgi, std::fs::Permissions::from_mode(0o755)).unwrap();
    node.spawn(&[
        "/bin/busybox",
        "httpd",
        "-f",
        "-p",
        "8080",
        "-h",
        root.to_str().unwrap(),
    ])
    .unwrap();
}

struct Fixture {
    client: Node,
    b1: Node,
    b2: Node,
    gw: Node,
    syncer: Syncer,
    rt: tokio::runtime::Runtime,
    _net: Network,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn sync(&mut self, services: Vec<Service>, slices: Vec<EndpointSlice>) {
        let snap = Snapshot::from_objects(services, slices);
        self.rt
            .block_on(self.syncer.sync(&snap))
            .expect("nft accepts the transaction");
    }
}

fn fixture() -> Fixture {
    let net = Network::new("pxy").unwrap();
    let gw = net.add_node("gw").unwrap();
    let b1 = net.add_node("b1").unwrap();
    let b2 = net.add_node("b2").unwrap();
    let client = net.add_node("client").unwrap();
    assert!(gw
        .exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        .status
        .success());
    // The client, gw and backends share one subnet, so gw would answer
    // each forwarded packet with an ICMP redirect; redirects spend the same
    // per-host token bucket as the ICMP errors `reject` sends, and a
    // rejected connection would then hang instead of being refused. A real
    // node forwards between its pod bridge and its uplink, and sends none.
    for key in ["all", "default", "eth0"] {
        let setting = format!("net.ipv4.conf.{key}.send_redirects=0");
        assert!(gw.exec(&["sysctl", "-qw", &setting]).status.success());
    }
    // The client reaches Services through gw; backends answer the client
    // through gw too (as pods answer through their node).
    let gw_ip = gw.ip().to_string();
    assert!(client
        .exec(&["ip", "route", "add", "10.43.0.0/16", "via", &gw_ip])
        .status
        .success());
    for b in [&b1, &b2] {
        // Backends reach Services through gw too (hairpin).
        assert!(b
            .exec(&["ip", "route", "add", "10.43.0.0/16", "via", &gw_ip])
            .status
            .success());
        let to_client = format!("{}/32", client.ip());
        assert!(b
            .exec(&["ip", "route", "add", &to_client, "via", &gw_ip])
            .status
            .success());
    }
    let dir = tempfile::tempdir().unwrap();
    serve(&b1, "b1", dir.path());
    serve(&b2, "b2", dir.path());
    let gw_ns = PathBuf::from(format!("/var/run/netns/{}", gw.netns()));
    let firewall = NftFirewall::new(Some(gw_ns.clone()));
    let elements = NetlinkElements::new(Some(gw_ns));
    let node = NodeView {
        node_name: "gw".into(),
        node_ips: vec![gw.ip()],
        cluster_cidr: "10.42.0.0/16".parse().unwrap(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300)); // httpd binds
    Fixture {
        client,
        b1,
        b2,
        gw,
        syncer: Syncer::new(Arc::new(firewall), Arc::new(elements), node),
        rt,
        _net: net,
        _dir: dir,
    }
}

#[test]
fn service_traffic_follows_endpoint_changes_on_a_real_kernel() {
    if !require_e2e("service_traffic_follows_endpoint_changes_on_a_real_kernel") {
        return;
    }
    let mut f = fixture();
    let web = service("web", CIP, json!({}));
    let (b1, b2) = (f.b1.ip(), f.b2.ip());
    let both = || slice("web", &[(b1, "gw"), (b2, "other")]);
    let slices = vec![both()];
    f.sync(vec![web.clone()], slices);

    // Random choice among the endpoints.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..30 {
        seen.insert(curl(&f.client, &format!("http://{CIP}/")).expect("served"));
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        vec!["b1".to_string(), "b2".to_string()]
    );
    // A port the ClusterIP does not serve is refused (curl 7), not hung (28).
    assert_eq!(curl(&f.client, &format!("http://{CIP}:81/")), Err(7));

    // Scaled to zero: refused at once; back up: served on the next try.
    let empty = slice("web", &[]);
    f.sync(vec![web.clone()], vec![empty]);
    assert_eq!(curl(&f.client, &format!("http://{CIP}/")), Err(7));
    let slices = vec![both()];
    f.sync(vec![web.clone()], slices);
    assert!(curl(&f.client, &format!("http://{CIP}/")).is_ok());

    // Endpoints replaced in place (the map's ranges rewritten by netlink):
    // only b2, then both again.
    f.sync(vec![web.clone()], vec![slice("web", &[(b2, "other")])]);
    for _ in 0..10 {
        assert_eq!(curl(&f.client, &format!("http://{CIP}/")).as_deref(), Ok("b2"));
    }
    f.sync(vec![web.clone()], vec![both()]);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..30 {
        seen.insert(curl(&f.client, &format!("http://{CIP}/")).expect("served"));
    }
    assert_eq!(seen.len(), 2, "{seen:?}");

    // Hairpin: b1 reaches itself through a Service whose only endpoint it
    // is; masqueraded after the DNAT, so it sees gw, not itself.
    let own = service("own", "10.43.0.53", json!({}));
    let own_slice = slice("own", &[(b1, "gw")]);
    f.sync(vec![web.clone(), own], vec![both(), own_slice]);
    assert_eq!(
        curl(&f.b1, "http://10.43.0.53/cgi-bin/ip"),
        Ok(f.gw.ip().to_string())
    );

    // Session affinity: one client, one backend.
    let sticky = service(
        "sticky",
        "10.43.0.51",
        json!({"sessionAffinity": "ClientIP"}),
    );
    let sticky_slice = slice("sticky", &[(b1, "gw"), (b2, "other")]);
    let slices = vec![both(), sticky_slice];
    f.sync(vec![web.clone(), sticky.clone()], slices.clone());
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        seen.insert(curl(&f.client, "http://10.43.0.51/").expect("served"));
    }
    assert_eq!(seen.len(), 1, "{seen:?}");

    // NodePort on the node's IP, masqueraded (the backend sees gw).
    let np = service(
        "np",
        "10.43.0.52",
        json!({"type": "NodePort",
        "ports": [{"name": "http", "port": 80, "nodePort": 30080, "protocol": "TCP"}]}),
    );
    let np_slice = slice("np", &[(b1, "gw"), (b2, "other")]);
    let mut all_slices = slices.clone();
    all_slices.push(np_slice);
    f.sync(
        vec![web.clone(), sticky.clone(), np.clone()],
        all_slices.clone(),
    );
    let url = format!("http://{}:30080/cgi-bin/ip", f.gw.ip());
    assert_eq!(curl(&f.client, &url), Ok(f.gw.ip().to_string()));

    // externalTrafficPolicy Local: only the local endpoint (b1), and it
    // sees the client's own address.
    let mut local = np.clone();
    local.spec.as_mut().unwrap().external_traffic_policy = Some("Local".into());
    f.sync(vec![web.clone(), sticky.clone(), local], all_slices.clone());
    for _ in 0..10 {
        assert_eq!(curl(&f.client, &url), Ok(f.client.ip().to_string()));
    }
    let page = format!("http://{}:30080/", f.gw.ip());
    for _ in 0..10 {
        assert_eq!(curl(&f.client, &page).as_deref(), Ok("b1"));
    }

    // Only our table exists in gw's namespace, and a fresh proxy (an agent
    // restart) replaces it without breaking service.
    let tables = f.gw.exec(&["nft", "list", "tables"]);
    assert_eq!(
        String::from_utf8_lossy(&tables.stdout).trim(),
        "table ip rk3s-proxy"
    );
    let gw_ns = PathBuf::from(format!("/var/run/netns/{}", f.gw.netns()));
    let firewall = NftFirewall::new(Some(gw_ns.clone()));
    let node = NodeView {
        node_name: "gw".into(),
        node_ips: vec![f.gw.ip()],
        cluster_cidr: "10.42.0.0/16".parse().unwrap(),
    };
    let elements = Arc::new(NetlinkElements::new(Some(gw_ns)));
    f.syncer = Syncer::new(Arc::new(firewall.clone()), elements, node);
    f.sync(vec![web, sticky, np], all_slices);
    assert!(curl(&f.client, &format!("http://{CIP}/")).is_ok());
    // Uninstall removes it.
    f.rt.block_on(rk3s::proxy::uninstall(&firewall)).unwrap();
    let tables = f.gw.exec(&["nft", "list", "tables"]);
    assert_eq!(String::from_utf8_lossy(&tables.stdout).trim(), "");
    assert!(curl(&f.client, &format!("http://{CIP}/")).is_err());
    drop(f.b2);
}
