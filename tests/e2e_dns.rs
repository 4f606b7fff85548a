//! Issue 15's "done when": cluster DNS served by the agents themselves, as
//! pods use it. The real `rk3s server` (with its built-in agent) and a real
//! `rk3s agent`, each in its own network namespace on its own containerd
//! ([`common::twonode::Cluster`]); an upstream resolver the test runs in a
//! third namespace (a tiny UDP responder for `*.outside.test`), named by the
//! `--resolv-conf` file both nodes get through `RK3S_RESOLV_CONF`.
//!
//! Checked from a busybox pod (`nslookup`) and with a hand-made query
//! (hickory-proto's wire format) sent from inside the nodes' namespaces:
//! short and full Service names, a headless Service that drops a pod when
//! it stops being ready, StatefulSet pod names, SRV, PTR, ExternalName,
//! NXDOMAIN vs NODATA, forwarding, how quickly a new Service resolves, and
//! what a pod sees across `kill -9` of its agent.
//!
//! Root-only: skips without root unless `RK3S_E2E=1`.

mod common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::netns::Node;
use common::privilege::{self, require_e2e};
use common::twonode::{in_netns, text, Cluster};
use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};

const CLUSTER_DNS: &str = "10.43.0.10";
const OUTSIDE_ANSWER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 77);

/// A UDP DNS responder in its own namespace: `*.outside.test` A → 192.0.2.77
/// (TTL 300), anything else NXDOMAIN. Stops on drop.
struct Upstream {
    stop: Arc<AtomicBool>,
    queries: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Upstream {
    fn start(node: &Node) -> Upstream {
        let stop = Arc::new(AtomicBool::new(false));
        let queries = Arc::new(AtomicUsize::new(0));
        let (s, q, ip) = (stop.clone(), queries.clone(), node.ip());
        let path = format!("/var/run/netns/{}", node.netns());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            let ns = std::fs::File::open(&path).expect("open the netns");
            // SAFETY: setns on this thread only, with a valid fd.
            assert_eq!(
                unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
                0
            );
            let sock = UdpSocket::bind((ip, 53)).expect("bind the upstream");
            sock.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            ready_tx.send(()).unwrap();
            let mut buf = [0u8; 1500];
            while !s.load(Ordering::SeqCst) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(req) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                q.fetch_add(1, Ordering::SeqCst);
                let mut resp = Message::new();
                resp.set_id(req.id())
                    .set_message_type(MessageType::Response);
                resp.set_recursion_available(true);
                resp.add_queries(req.queries().to_vec());
                let question = &req.queries()[0];
                let name = question.name().to_ascii().to_ascii_lowercase();
                if name.ends_with("outside.test.") {
                    if question.query_type() == RecordType::A {
                        resp.add_answer(Record::from_rdata(
                            question.name().clone(),
                            300,
                            RData::A(A(OUTSIDE_ANSWER)),
                        ));
                    }
                } else {
                    resp.set_response_code(ResponseCode::NXDomain);
                }
                let _ = sock.send_to(&resp.to_vec().unwrap(), from);
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("upstream ready");
        Upstream {
            stop,
            queries,
            thread: Some(thread),
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One question to the cluster DNS address from inside `netns`, over UDP.
fn ask(netns: &str, name: &str, qtype: RecordType) -> Result<Message, String> {
    let name = Name::from_str(name).map_err(|e| e.to_string())?;
    in_netns(netns, move || {
        let sock = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut q = Message::new();
        q.set_id(rand_id()).set_recursion_desired(true);
        q.add_query(Query::query(name, qtype));
        let server: SocketAddr = format!("{CLUSTER_DNS}:53").parse().unwrap();
        // Connected, as libc's resolvers are: an ICMP port-unreachable
        // then shows as "connection refused".
        sock.connect(server).map_err(|e| e.to_string())?;
        sock.send(&q.to_vec().unwrap()).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).map_err(|e| e.to_string())?;
        Message::from_vec(&buf[..n]).map_err(|e| e.to_string())
    })
}

/// A stub resolver as a pod's libc runs one: `resolv` (the pod's
/// `/etc/resolv.conf`) gives the search list and `ndots`; names with fewer
/// dots than `ndots` try the search list first. The first answer with
/// records wins. Sent from inside `netns` (the pod's own namespace).
fn resolve_like_pod(netns: &str, resolv: &str, name: &str, qtype: RecordType) -> Option<Message> {
    let mut search: Vec<String> = Vec::new();
    let mut ndots = 1;
    for line in resolv.lines() {
        let mut w = line.split_whitespace();
        match w.next() {
            Some("search") => search = w.map(str::to_string).collect(),
            Some("options") => {
                for o in w {
                    if let Some(n) = o.strip_prefix("ndots:") {
                        ndots = n.parse().unwrap_or(1);
                    }
                }
            }
            _ => {}
        }
    }
    let mut candidates: Vec<String> = search.iter().map(|d| format!("{name}.{d}.")).collect();
    let absolute = format!("{name}.");
    if name.matches('.').count() >= ndots {
        candidates.insert(0, absolute);
    } else {
        candidates.push(absolute);
    }
    candidates
        .into_iter()
        .filter_map(|c| ask(netns, &c, qtype).ok())
        .find(|m| !m.answers().is_empty())
}

fn rand_id() -> u16 {
    (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        & 0xffff) as u16
}

fn answers(m: &Message) -> Vec<String> {
    let mut v: Vec<String> = m.answers().iter().map(|r| r.data().to_string()).collect();
    v.sort();
    v
}

const OBJECTS: &str = r#"apiVersion: v1
kind: Namespace
metadata: {name: other}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: other}
spec:
  nodeName: agent
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: docker.io/rk3s/busybox:test
    command: [sleep, "3600"]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: other}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: nginx, namespace: other}
spec:
  clusterIP: None
  selector: {app: nginx}
  ports: [{name: http, port: 80, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: other}
spec:
  type: ExternalName
  externalName: www.outside.test
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web, namespace: other}
spec:
  serviceName: nginx
  replicas: 2
  selector: {matchLabels: {app: nginx}}
  template:
    metadata: {labels: {app: nginx}}
    spec:
      nodeName: agent
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: docker.io/rk3s/busybox:test
        command: [sh, -c, "touch /tmp/ready; exec sleep 3600"]
        ports: [{name: http, containerPort: 80}]
        readinessProbe:
          exec: {command: [test, -f, /tmp/ready]}
          periodSeconds: 1
"#;

#[test]
fn pods_resolve_services_pods_and_outside_names_through_their_node() {
    if !require_e2e("pods_resolve_services_pods_and_outside_names_through_their_node") {
        return;
    }
    privilege::require_tools("e2e_dns", &[("kubectl", "kubectl")]);
    // Both nodes forward to the test's upstream, named by this file (its
    // content is written once the upstream's namespace exists; the agents
    // re-read it).
    let tmp = tempfile::tempdir().unwrap();
    let resolv = tmp.path().join("resolv.conf");
    std::fs::write(&resolv, "").unwrap();
    std::env::set_var("RK3S_RESOLV_CONF", &resolv);
    let mut c = Cluster::start();
    let upstream_node = c.add_node("upstream");
    let upstream = Upstream::start(&upstream_node);
    std::fs::write(&resolv, format!("nameserver {}\n", upstream_node.ip())).unwrap();
    c.start_agent();
    c.wait_for("node agent Ready", 120, || c.node_ready("agent").then_some(()));

    // The server made kube-system/kube-dns on the cluster DNS address.
    let ip = c.kubectl_ok(&[
        "get",
        "svc",
        "-n",
        "kube-system",
        "kube-dns",
        "-o",
        "jsonpath={.spec.clusterIP} {.metadata.annotations.rk3s\\.io/node-local}",
    ]);
    assert_eq!(ip, format!("{CLUSTER_DNS} true"));

    c.apply(OBJECTS);
    c.wait_for("client Running", 120, || {
        (text(
            &c.kubectl(&[
                "get",
                "pod",
                "-n",
                "other",
                "client",
                "-o",
                "jsonpath={.status.phase}",
            ])
            .stdout,
        ) == "Running")
            .then_some(())
    });
    c.track_pod_in("other", "client");
    let web_ip = c.kubectl_ok(&[
        "get",
        "svc",
        "-n",
        "other",
        "web",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    assert!(!web_ip.is_empty());
    let agent_ns = c.agent_node.netns().to_string();
    let server_ns = c.server_node.netns().to_string();

    // The pod's resolv.conf is kubelet's.
    let resolv_in_pod = c.kubectl_ok(&[
        "exec",
        "-n",
        "other",
        "client",
        "--",
        "cat",
        "/etc/resolv.conf",
    ]);
    assert_eq!(
        resolv_in_pod,
        format!("search other.svc.cluster.local svc.cluster.local cluster.local\nnameserver {CLUSTER_DNS}\noptions ndots:5\n")
    );

    // Short, namespaced and full names from the pod: busybox nslookup
    // (which applies the search list to dot-less names only), and a stub
    // resolver with libc's rules sending from the pod's own namespace.
    for name in ["web", "web.other.svc.cluster.local"] {
        let out = c.wait_for(&format!("nslookup {name}"), 30, || {
            let o = c.kubectl(&["exec", "-n", "other", "client", "--", "nslookup", name]);
            let out = text(&o.stdout);
            out.contains(&web_ip).then_some(out)
        });
        assert!(out.contains(&format!("Address: {web_ip}")), "{name}: {out}");
    }
    let client_uid = c.kubectl_ok(&[
        "get",
        "pod",
        "-n",
        "other",
        "client",
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    let client_ns = format!("rk3s-{client_uid}");
    for name in ["web", "web.other", "web.other.svc.cluster.local"] {
        let m = resolve_like_pod(&client_ns, &resolv_in_pod, name, RecordType::A)
            .unwrap_or_else(|| panic!("{name} did not resolve from the pod"));
        assert_eq!(answers(&m), [web_ip.clone()], "{name}");
    }

    // The same answers from both nodes' DNS (the server's built-in agent too).
    for ns in [&agent_ns, &server_ns] {
        let m = ask(ns, "web.other.svc.cluster.local.", RecordType::A).unwrap();
        assert_eq!(answers(&m), [web_ip.clone()], "from {ns}");
        assert!(m.authoritative());
        assert_eq!(m.answers()[0].ttl(), 5);
    }

    // NXDOMAIN vs NODATA, both with the SOA.
    let m = ask(&agent_ns, "nope.other.svc.cluster.local.", RecordType::A).unwrap();
    assert_eq!(m.response_code(), ResponseCode::NXDomain);
    assert_eq!(m.name_servers()[0].record_type(), RecordType::SOA);
    let m = ask(&agent_ns, "web.other.svc.cluster.local.", RecordType::AAAA).unwrap();
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert!(m.answers().is_empty());
    assert_eq!(m.name_servers()[0].record_type(), RecordType::SOA);

    // SRV for the named port, PTR for the ClusterIP, ExternalName.
    let m = ask(
        &agent_ns,
        "_http._tcp.web.other.svc.cluster.local.",
        RecordType::SRV,
    )
    .unwrap();
    assert_eq!(answers(&m), ["0 100 80 web.other.svc.cluster.local."]);
    let octets: Vec<&str> = web_ip.split('.').rev().collect();
    let m = ask(
        &agent_ns,
        &format!("{}.in-addr.arpa.", octets.join(".")),
        RecordType::PTR,
    )
    .unwrap();
    assert_eq!(answers(&m), ["web.other.svc.cluster.local."]);
    let m = ask(&agent_ns, "ext.other.svc.cluster.local.", RecordType::CNAME).unwrap();
    assert_eq!(answers(&m), ["www.outside.test."]);
    let m = ask(&agent_ns, "ext.other.svc.cluster.local.", RecordType::A).unwrap();
    assert_eq!(
        answers(&m),
        [OUTSIDE_ANSWER.to_string(), "www.outside.test.".to_string()]
    );
    let m = ask(&agent_ns, "dns-version.cluster.local.", RecordType::TXT).unwrap();
    assert_eq!(answers(&m), ["1.1.0"]);

    // Outside names go upstream, then come from the cache.
    let out = c.kubectl_ok(&[
        "exec",
        "-n",
        "other",
        "client",
        "--",
        "nslookup",
        "www.outside.test",
    ]);
    assert!(out.contains(&OUTSIDE_ANSWER.to_string()), "{out}");
    let before = upstream.queries.load(Ordering::SeqCst);
    for _ in 0..3 {
        let m = ask(&agent_ns, "cached.outside.test.", RecordType::A).unwrap();
        assert_eq!(answers(&m), [OUTSIDE_ANSWER.to_string()]);
        assert!(!m.authoritative());
    }
    assert_eq!(
        upstream.queries.load(Ordering::SeqCst) - before,
        1,
        "answers 2 and 3 came from the cache"
    );
    let m = ask(&agent_ns, "nothing.example.", RecordType::A).unwrap();
    assert_eq!(m.response_code(), ResponseCode::NXDomain);

    // Node names (k3s's NodeHosts).
    let m = ask(&agent_ns, "server.", RecordType::A).unwrap();
    assert_eq!(answers(&m), [c.server_node.ip().to_string()]);

    // k3s's coredns-custom: an extra host entry (read through the nodes'
    // RBAC, which allows that one ConfigMap).
    c.apply(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: coredns-custom, namespace: kube-system}\ndata:\n  lan.override: |\n    hosts {\n      192.0.2.50 nas.lan\n      fallthrough\n    }\n",
    );
    c.wait_for("nas.lan from coredns-custom", 60, || {
        let m = ask(&agent_ns, "nas.lan.", RecordType::A).ok()?;
        (answers(&m) == ["192.0.2.50"]).then_some(())
    });

    // Headless: each ready pod; web-0.nginx; one drops when unready.
    let pod_ip = |p: &str| {
        text(
            &c.kubectl(&[
                "get",
                "pod",
                "-n",
                "other",
                p,
                "-o",
                "jsonpath={.status.podIP}",
            ])
            .stdout,
        )
    };
    let ips = c.wait_for("both StatefulSet pods in DNS", 120, || {
        let (a, b) = (pod_ip("web-0"), pod_ip("web-1"));
        if a.is_empty() || b.is_empty() {
            return None;
        }
        let mut want = vec![a.clone(), b.clone()];
        want.sort();
        let m = ask(&agent_ns, "nginx.other.svc.cluster.local.", RecordType::A).ok()?;
        (answers(&m) == want).then_some((a, b))
    });
    c.track_pod_in("other", "web-0");
    c.track_pod_in("other", "web-1");
    let out = c.kubectl_ok(&[
        "exec",
        "-n",
        "other",
        "client",
        "--",
        "nslookup",
        "web-0.nginx.other.svc.cluster.local",
    ]);
    assert!(out.contains(&ips.0), "web-0.nginx: {out}");
    let m = resolve_like_pod(&client_ns, &resolv_in_pod, "web-0.nginx", RecordType::A)
        .expect("web-0.nginx");
    assert_eq!(answers(&m), [ips.0.clone()]);
    let m = ask(
        &agent_ns,
        "_http._tcp.nginx.other.svc.cluster.local.",
        RecordType::SRV,
    )
    .unwrap();
    assert_eq!(m.answers().len(), 2, "{m:?}");
    assert!(answers(&m)
        .iter()
        .any(|a| a.ends_with("web-0.nginx.other.svc.cluster.local.")));
    c.kubectl_ok(&["exec", "-n", "other", "web-1", "--", "rm", "/tmp/ready"]);
    c.wait_for("web-1 to leave the headless answer", 60, || {
        let m = ask(&agent_ns, "nginx.other.svc.cluster.local.", RecordType::A).ok()?;
        (answers(&m) == [ips.0.clone()]).then_some(())
    });

    // A new Service resolves quickly.
    let created = Instant::now();
    c.kubectl_ok(&[
        "create",
        "service",
        "clusterip",
        "fresh",
        "-n",
        "other",
        "--tcp=8080:8080",
    ]);
    let seen = c.wait_for("fresh in DNS", 30, || {
        let m = ask(&agent_ns, "fresh.other.svc.cluster.local.", RecordType::A).ok()?;
        (!m.answers().is_empty()).then(|| created.elapsed())
    });
    eprintln!(
        "figure: a new Service answered {} ms after `kubectl create` was started",
        seen.as_millis()
    );

    // kill -9 of the agent: its pods keep running; DNS on that node is
    // silent until the agent is back, then answers again.
    c.kill9_agent();
    let down = ask(&agent_ns, "web.other.svc.cluster.local.", RecordType::A);
    eprintln!("figure: a query while the agent is down: {down:?}");
    assert!(
        down.is_err()
            || down
                .as_ref()
                .is_ok_and(|m| m.response_code() != ResponseCode::NoError)
    );
    let restarted = Instant::now();
    c.respawn_agent();
    let back = c.wait_for("DNS back after the agent restarts", 60, || {
        let m = ask(&agent_ns, "web.other.svc.cluster.local.", RecordType::A).ok()?;
        (answers(&m) == [web_ip.clone()]).then(|| restarted.elapsed())
    });
    eprintln!(
        "figure: cluster DNS answered {} ms after the agent was restarted",
        back.as_millis()
    );
    let mut tries = Vec::new();
    c.wait_for("nslookup web from the pod after the restart", 60, || {
        let o = c.kubectl(&["exec", "-n", "other", "client", "--", "nslookup", "web"]);
        let out = format!("{}{}", text(&o.stdout), text(&o.stderr));
        let ok = out.contains(&web_ip);
        tries.push(out);
        ok.then_some(())
    });
    eprintln!(
        "figure: nslookup attempts after the restart until one answered: {}; first: {:?}",
        tries.len(),
        tries.first()
    );

    drop(upstream);
    drop(upstream_node);
}
