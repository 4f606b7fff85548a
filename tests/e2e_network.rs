//! End-to-end tests of the pod network on real kernel objects, without
//! touching the machine's own network: each test builds a private network
//! namespace that plays "the host" (`rk3s-t-host-<pid>-<n>`), runs
//! [`PodNetwork`] with every netlink and nft operation inside it, keeps pod
//! namespaces in a temporary directory, and uses a bridge name of its own.
//! Dropping the fixture removes all of it.

mod common;

use std::collections::HashSet;
use std::ffi::CString;
use std::net::Ipv4Addr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use common::privilege::{self, require_e2e, tool};
use rk3s::agent::network::{NetworkConfig, PodNetInfo, PodNetwork, PLAIN_MTU, VXLAN_MTU};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A private "host" namespace plus the directories a [`PodNetwork`] needs.
struct TestHost {
    name: String,
    tmp: Option<tempfile::TempDir>,
    config: NetworkConfig,
}

impl TestHost {
    fn new() -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("rk3s-t-host-{}-{n}", std::process::id());
        privilege::run(Command::new(tool("ip")).args(["netns", "add", &name])).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let mut config =
            NetworkConfig::new("10.42.77.0/24".parse().unwrap(), tmp.path().join("state"));
        config.bridge = format!("rkt{}b{n}", std::process::id() % 100_000);
        config.netns_dir = tmp.path().join("netns");
        config.host_netns = Some(PathBuf::from(format!("/var/run/netns/{name}")));
        let host = Self {
            name,
            tmp: Some(tmp),
            config,
        };
        host.sh(&["ip", "link", "set", "lo", "up"]);
        host
    }

    async fn network(&self) -> PodNetwork {
        PodNetwork::new(self.config.clone()).await.unwrap()
    }

    /// Runs `args` inside the host namespace; panics on failure.
    fn sh(&self, args: &[&str]) -> String {
        in_ns(self.config.host_netns.as_ref().unwrap(), args).unwrap()
    }

    fn try_sh(&self, args: &[&str]) -> Result<String, String> {
        in_ns(self.config.host_netns.as_ref().unwrap(), args)
    }

    fn reserved_ips(&self) -> Vec<String> {
        let mut ips: Vec<_> = std::fs::read_dir(self.config.state_dir.join("ips"))
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.parse::<Ipv4Addr>().is_ok())
            .collect();
        ips.sort();
        ips
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        // Pod namespaces are bind mounts in the (shared, bind-mounted) temp
        // directory: unmount them and it before the directory goes.
        if let Ok(entries) = std::fs::read_dir(&self.config.netns_dir) {
            for entry in entries.flatten() {
                umount(&entry.path());
            }
        }
        umount(&self.config.netns_dir);
        drop(self.tmp.take());
        let _ = privilege::run(Command::new(tool("ip")).args(["netns", "del", &self.name]));
    }
}

fn umount(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: plain syscall on a NUL-terminated path; failure is ignored
    // (not mounted).
    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
}

/// Runs `args` inside the namespace file `netns`.
fn in_ns(netns: &Path, args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new(tool("nsenter"));
    cmd.arg(format!("--net={}", netns.display())).args(args);
    privilege::run(&mut cmd)
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .map_err(|e| e.to_string())
}

/// One ping, retried a couple of times for the first ARP exchange.
fn ping(from: &Path, to: Ipv4Addr) -> Result<(), String> {
    let target = to.to_string();
    let args = [privilege::BUSYBOX, "ping", "-c1", "-W1", &target];
    let mut last = String::new();
    for _ in 0..3 {
        match in_ns(from, &args) {
            Ok(_) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Asserts the pod's namespace has eth0 with its address, MTU and a
/// default route via the gateway.
fn assert_pod_interface(info: &PodNetInfo, mtu: u32) {
    let addr = in_ns(
        &info.netns_path,
        &["ip", "-4", "-o", "addr", "show", "dev", "eth0"],
    )
    .unwrap();
    assert!(addr.contains(&format!("inet {}/24", info.ip)), "{addr}");
    let link = in_ns(&info.netns_path, &["ip", "-o", "link", "show", "eth0"]).unwrap();
    assert!(
        link.contains(&format!("mtu {mtu}")) && link.contains("UP"),
        "{link}"
    );
    let lo = in_ns(&info.netns_path, &["ip", "-o", "link", "show", "lo"]).unwrap();
    assert!(lo.contains("UP"), "{lo}");
    let route = in_ns(&info.netns_path, &["ip", "-4", "route", "show", "default"]).unwrap();
    assert!(
        route.contains(&format!("default via {} dev eth0", info.gateway)),
        "{route}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pods_are_addressed_routed_reachable_and_torn_down() {
    if !require_e2e("two_pods_are_addressed_routed_reachable_and_torn_down") {
        return;
    }
    let host = TestHost::new();
    let net = host.network().await;
    net.ensure_host().await.unwrap();
    net.ensure_host().await.unwrap(); // idempotent

    let bridge = host.sh(&["ip", "-4", "-o", "addr", "show", "dev", &host.config.bridge]);
    assert!(bridge.contains("inet 10.42.77.1/24"), "{bridge}");
    assert_eq!(
        host.sh(&["cat", "/proc/sys/net/ipv4/ip_forward"]).trim(),
        "1"
    );
    let rules = host.sh(&["nft", "list", "table", "ip", "rk3s"]);
    assert!(
        rules.contains("ip saddr 10.42.0.0/16 ip daddr != 224.0.0.0/4 masquerade"),
        "{rules}"
    );
    assert!(rules.contains("ip saddr 10.42.0.0/16 accept"), "{rules}");
    assert_eq!(
        rules.matches("masquerade").count(),
        2,
        "replaced, not appended:\n{rules}"
    );

    let (uid_a, uid_b) = (uid(), uid());
    let a = net.setup_pod(&uid_a, "default/a").await.unwrap();
    let b = net.setup_pod(&uid_b, "default/b").await.unwrap();
    assert_ne!(a.ip, b.ip);
    assert_eq!(a.gateway, Ipv4Addr::new(10, 42, 77, 1));
    assert!(host.config.netns_dir.join(format!("rk3s-{uid_a}")) == a.netns_path);
    assert_pod_interface(&a, VXLAN_MTU);
    assert_pod_interface(&b, VXLAN_MTU);
    let port = host.sh(&["ip", "-o", "link", "show", &a.veth_host_name]);
    assert!(
        port.contains(&format!("master {}", host.config.bridge)),
        "{port}"
    );

    ping(&a.netns_path, b.ip).unwrap();
    ping(&b.netns_path, a.ip).unwrap();
    ping(host.config.host_netns.as_ref().unwrap(), a.ip).unwrap();
    ping(&a.netns_path, a.gateway).unwrap();
    // Asking again for a complete pod returns it untouched.
    assert_eq!(net.setup_pod(&uid_a, "default/a").await.unwrap(), a);
    ping(&b.netns_path, a.ip).unwrap();

    net.teardown_pod(&uid_a).await.unwrap();
    net.teardown_pod(&uid_a).await.unwrap(); // idempotent
    assert!(host
        .try_sh(&["ip", "link", "show", &a.veth_host_name])
        .is_err());
    assert!(!a.netns_path.exists());
    assert_eq!(host.reserved_ips(), [b.ip.to_string()]);
    ping(&b.netns_path, a.gateway).unwrap();

    net.teardown_pod(&uid_b).await.unwrap();
    assert!(host.reserved_ips().is_empty());
    let links = host.sh(&["ip", "-o", "link", "show"]);
    assert!(!links.contains("veth") && !links.contains("rkp"), "{links}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_recovers_live_pods_and_frees_vanished_ones() {
    if !require_e2e("restart_recovers_live_pods_and_frees_vanished_ones") {
        return;
    }
    let host = TestHost::new();
    let (uid_a, uid_b) = (uid(), uid());
    let (a, b) = {
        let net = host.network().await;
        net.ensure_host().await.unwrap();
        let a = net.setup_pod(&uid_a, "default/a").await.unwrap();
        let b = net.setup_pod(&uid_b, "default/b").await.unwrap();
        (a, b)
    };
    // While "the agent" is down, B's namespace disappears.
    umount(&b.netns_path);
    std::fs::remove_file(&b.netns_path).unwrap();

    let net = host.network().await;
    let rec = net.recover().await.unwrap();
    assert_eq!(rec.live, [(uid_a.clone(), a.clone())]);
    assert_eq!(rec.released, [(b.ip, uid_b.clone())]);
    assert!(
        host.try_sh(&["ip", "link", "show", &b.veth_host_name])
            .is_err(),
        "B's veth is gone"
    );
    assert_eq!(host.reserved_ips(), [a.ip.to_string()]);

    net.ensure_host().await.unwrap();
    ping(host.config.host_netns.as_ref().unwrap(), a.ip).unwrap();
    let c = net.setup_pod(&uid(), "default/c").await.unwrap();
    assert_ne!(c.ip, a.ip, "a live pod's address is never handed out again");
    ping(&c.netns_path, a.ip).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_concurrent_setups_get_ten_distinct_addresses() {
    if !require_e2e("ten_concurrent_setups_get_ten_distinct_addresses") {
        return;
    }
    let mut host = TestHost::new();
    host.config.mtu = PLAIN_MTU;
    let net = Arc::new(host.network().await);
    net.ensure_host().await.unwrap();
    let uids: Vec<String> = (0..10).map(|_| uid()).collect();
    let tasks: Vec<_> = uids
        .iter()
        .map(|u| {
            let (net, u) = (net.clone(), u.clone());
            tokio::spawn(async move { net.setup_pod(&u, "default/many").await.unwrap() })
        })
        .collect();
    let mut infos = Vec::new();
    for t in tasks {
        infos.push(t.await.unwrap());
    }
    let ips: HashSet<_> = infos.iter().map(|i| i.ip).collect();
    assert_eq!(ips.len(), 10);
    for info in &infos {
        assert_pod_interface(info, PLAIN_MTU);
    }
    ping(&infos[0].netns_path, infos[9].ip).unwrap();

    let tasks: Vec<_> = uids
        .iter()
        .map(|u| {
            let (net, u) = (net.clone(), u.clone());
            tokio::spawn(async move { net.teardown_pod(&u).await.unwrap() })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert!(host.reserved_ips().is_empty());
    assert!(std::fs::read_dir(&host.config.netns_dir)
        .unwrap()
        .next()
        .is_none());
}

/// A namespace "outside the cluster", linked to the test host by a veth
/// (`192.0.2.1` on the host, `192.0.2.2` outside) and with no route back to
/// pod addresses: a pod reaches it only if the host masquerades.
struct Outside {
    name: String,
}

impl Outside {
    fn new(host: &TestHost) -> Self {
        let name = host.name.replacen("-host-", "-out-", 1);
        privilege::run(Command::new(tool("ip")).args(["netns", "add", &name])).unwrap();
        let outside = Self { name };
        host.sh(&[
            "ip",
            "link",
            "add",
            "upl0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &outside.name,
        ]);
        host.sh(&["ip", "addr", "add", "192.0.2.1/24", "dev", "upl0"]);
        host.sh(&["ip", "link", "set", "upl0", "up"]);
        let path = outside.path();
        in_ns(&path, &["ip", "addr", "add", "192.0.2.2/24", "dev", "eth0"]).unwrap();
        in_ns(&path, &["ip", "link", "set", "eth0", "up"]).unwrap();
        in_ns(&path, &["ip", "link", "set", "lo", "up"]).unwrap();
        outside
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/var/run/netns/{}", self.name))
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = privilege::run(Command::new(tool("ip")).args(["netns", "del", &self.name]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_traffic_leaving_the_cluster_is_masqueraded() {
    if !require_e2e("pod_traffic_leaving_the_cluster_is_masqueraded") {
        return;
    }
    let host = TestHost::new();
    let outside = Outside::new(&host);
    let net = host.network().await;
    net.ensure_host().await.unwrap();
    let pod = net.setup_pod(&uid(), "default/out").await.unwrap();
    let far = Ipv4Addr::new(192, 0, 2, 2);
    ping(&pod.netns_path, far).unwrap();

    // Without the rules the outside cannot answer a pod address...
    host.sh(&["nft", "delete", "table", "ip", "rk3s"]);
    let args = [privilege::BUSYBOX, "ping", "-c1", "-W1", "192.0.2.2"];
    assert!(
        in_ns(&pod.netns_path, &args).is_err(),
        "reachable without masquerading?"
    );
    // ...and ensure_host puts them back.
    net.ensure_host().await.unwrap();
    ping(&pod.netns_path, far).unwrap();
    drop(outside);
}
