//! The service proxy and ServiceLB in a real cluster: `rk3s server` (with
//! its built-in agent, node `server`) and `rk3s agent` (node `agent`) in
//! two network namespaces ([`common::twonode::Cluster`]). Backends and the
//! client pod run on `agent` (pods do not cross nodes until the overlay
//! lands); NodePort and LoadBalancer traffic comes from the host, outside
//! both node namespaces.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::privilege::{self, require_e2e};
use common::twonode::{in_netns, text, Cluster};

const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      nodeSelector: {kubernetes.io/hostname: agent}
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: docker.io/rk3s/busybox:test
        imagePullPolicy: Never
        command: ["sh", "-c", "mkdir -p /srv/cgi-bin && hostname > /srv/index.html && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho $REMOTE_ADDR\\n' > /srv/cgi-bin/ip && chmod +x /srv/cgi-bin/ip && exec httpd -f -p 8080 -h /srv"]
        ports: [{containerPort: 8080, name: http}]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  nodeSelector: {kubernetes.io/hostname: agent}
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: docker.io/rk3s/busybox:test, imagePullPolicy: Never, command: ["sleep", "3600"]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: sticky}
spec:
  selector: {app: web}
  sessionAffinity: ClientIP
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: web-np}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http, nodePort: 30880}]
"#;

const LB: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web-lb}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports: [{name: http, port: 8081, targetPort: http}]
"#;

const LB_CLASH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web-lb2}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports: [{name: http, port: 8081, targetPort: http}]
"#;

/// `n` HTTP GETs of `/` from the client pod; the body lines (hostnames).
fn from_client(c: &Cluster, ip: &str, n: usize) -> Vec<String> {
    let script = format!(
        "for i in $(seq {n}); do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {ip} 80 | tail -n 1; done"
    );
    let out = c.kubectl(&["exec", "client", "--", "sh", "-c", &script]);
    text(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("web-"))
        .map(String::from)
        .collect()
}

/// curl from the host: Ok(body) or Err(exit code).
fn curl(url: &str) -> Result<String, i32> {
    let mut cmd = std::process::Command::new(privilege::tool("curl"));
    cmd.args(["-sS", "--max-time", "3", url]);
    let out = privilege::output_within(&mut cmd, Duration::from_secs(10)).expect("curl ran");
    if out.status.success() {
        Ok(text(&out.stdout).trim().to_string())
    } else {
        Err(out.status.code().unwrap_or(-1))
    }
}

fn ready_web_pods(c: &Cluster) -> usize {
    let o = c.kubectl(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={range .items[*]}{.status.conditions[?(@.type==\"Ready\")].status}{\" \"}{end}",
    ]);
    text(&o.stdout)
        .split_whitespace()
        .filter(|s| *s == "True")
        .count()
}

fn lb_ips(c: &Cluster, svc: &str) -> BTreeSet<String> {
    let o = c.kubectl(&[
        "get",
        "svc",
        svc,
        "-o",
        "jsonpath={.status.loadBalancer.ingress[*].ip}",
    ]);
    text(&o.stdout)
        .split_whitespace()
        .map(String::from)
        .collect()
}

fn server_table(c: &Cluster) -> String {
    text(
        &c.server_node
            .exec(&["nft", "list", "table", "ip", "rk3s-proxy"])
            .stdout,
    )
}

/// The block of the server's chain `PREFIX…ID`.
fn chain_of(c: &Cluster, prefix: &str, id: &str) -> String {
    let table = server_table(c);
    let Some(start) = table.find(&format!("chain {prefix}")).and_then(|_| {
        table.match_indices("chain ").map(|(i, _)| i).find(|i| {
            let line = table[*i..].lines().next().unwrap_or("");
            line.starts_with(&format!("chain {prefix}")) && line.contains(id)
        })
    }) else {
        return String::new();
    };
    let end = table[start..]
        .find("\n\t}")
        .map(|e| start + e + 3)
        .unwrap_or(table.len());
    table[start..end].to_string()
}

/// One HTTP exchange from the agent's namespace (the node itself).
fn get_from_node(c: &Cluster, addr: SocketAddr) -> std::io::Result<String> {
    in_netns(c.agent_node.netns(), move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
        let mut body = String::new();
        s.read_to_string(&mut body)?;
        Ok(body)
    })
}

#[test]
fn services_route_through_the_proxy_and_servicelb() {
    if !require_e2e("services_route_through_the_proxy_and_servicelb") {
        return;
    }
    privilege::require_tools(
        "e2e_proxy",
        &[
            ("kubectl", "kubectl"),
            ("curl", "curl"),
            ("nft", "nftables"),
        ],
    );
    let mut c = Cluster::start();
    c.start_agent();
    c.wait_for("node agent Ready", 90, || c.node_ready("agent").then_some(()));
    c.apply(WEB);
    c.track_pod("client");
    c.wait_for("client Running", 120, || {
        (c.pod_field("client", "{.status.phase}") == "Running").then_some(())
    });
    c.wait_for("two web pods Ready", 120, || {
        (ready_web_pods(&c) == 2).then_some(())
    });
    for pod in text(
        &c.kubectl(&["get", "pods", "-l", "app=web", "-o", "name"])
            .stdout,
    )
    .lines()
    {
        c.track_pod(pod.trim_start_matches("pod/"));
    }
    let cip = c.kubectl_ok(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    let agent_ip = c.agent_node.ip().to_string();
    let server_ip = c.server_node.ip().to_string();

    // ClusterIP from a pod: 50 requests reach more than one backend.
    let answers = c.wait_for("the ClusterIP served", 30, || {
        let a = from_client(&c, &cip, 50);
        (a.len() == 50).then_some(a)
    });
    let distinct: BTreeSet<_> = answers.iter().collect();
    assert!(
        distinct.len() > 1,
        "one backend answered all 50: {distinct:?}"
    );

    // The agent's table is ours, beside the pod network's.
    let tables = text(&c.agent_node.exec(&["nft", "list", "tables"]).stdout);
    assert!(tables.contains("table ip rk3s-proxy"), "{tables}");

    // sessionAffinity ClientIP: one client, one backend.
    let sticky = c.kubectl_ok(&["get", "svc", "sticky", "-o", "jsonpath={.spec.clusterIP}"]);
    let answers = from_client(&c, &sticky, 20);
    let distinct: BTreeSet<_> = answers.iter().collect();
    assert_eq!((answers.len(), distinct.len()), (20, 1), "{answers:?}");

    // NodePort from outside the nodes, on the agent's IP.
    let np = format!("http://{agent_ip}:30880/");
    c.wait_for("the NodePort served", 30, || {
        curl(&np).ok().filter(|b| b.starts_with("web-"))
    });

    // externalTrafficPolicy Local: the agent (local endpoints) answers and
    // its backend sees the host's own address; the server (none) does not.
    c.kubectl_ok(&[
        "patch",
        "svc",
        "web-np",
        "-p",
        r#"{"spec":{"externalTrafficPolicy":"Local"}}"#,
    ]);
    let host_ip = c.agent_node.gateway().to_string();
    let seen = c.wait_for("the client's address at the backend", 30, || {
        curl(&format!("http://{agent_ip}:30880/cgi-bin/ip"))
            .ok()
            .filter(|b| b.contains(&host_ip))
    });
    assert!(seen.contains(&host_ip));
    // (Pods are not reachable from the server node before the overlay, so
    // look at its rules: outside traffic is dropped there.)
    c.wait_for(
        "the server node to drop the NodePort from outside",
        30,
        || {
            let chain = chain_of(&c, "ext-", "default/web-np/tcp/http");
            (chain.contains("fib saddr type local goto all-") && chain.contains("\t\tdrop\n"))
                .then_some(())
        },
    );

    // LoadBalancer: both Ready nodes in the status; served on the agent's.
    c.apply(LB);
    let both: BTreeSet<String> = [agent_ip.clone(), server_ip.clone()].into();
    c.wait_for("web-lb's status to list both nodes", 60, || {
        (lb_ips(&c, "web-lb") == both).then_some(())
    });
    c.wait_for("the LoadBalancer port served", 30, || {
        curl(&format!("http://{agent_ip}:8081/"))
            .ok()
            .filter(|b| b.starts_with("web-"))
    });
    // A second LoadBalancer on the same port: an Event, and no node.
    c.apply(LB_CLASH);
    c.wait_for("a PortInUse event", 60, || {
        let o = c.kubectl(&[
            "get",
            "events",
            "--field-selector",
            "reason=PortInUse",
            "-o",
            "jsonpath={.items[*].message}",
        ]);
        text(&o.stdout)
            .contains("already used by LoadBalancer default/web-lb")
            .then_some(())
    });
    assert!(lb_ips(&c, "web-lb2").is_empty());
    c.kubectl_ok(&["delete", "svc", "web-lb2"]);
    // The enablelb label makes an allow-list.
    c.kubectl_ok(&[
        "label",
        "node",
        "agent",
        "svccontroller.k3s.cattle.io/enablelb=true",
    ]);
    let agent_only: BTreeSet<String> = [agent_ip.clone()].into();
    c.wait_for("web-lb's status to list the agent only", 60, || {
        (lb_ips(&c, "web-lb") == agent_only).then_some(())
    });
    c.wait_for(
        "the server node to stop serving its IP's LB port",
        30,
        || {
            let table = server_table(&c);
            (!table.contains(&format!("{server_ip} . tcp . 8081"))
                && table.contains(&format!("{agent_ip} . tcp . 8081")))
            .then_some(())
        },
    );

    // Scaled to zero: refused at once, not hung.
    c.kubectl_ok(&["scale", "deployment", "web", "--replicas=0"]);
    c.wait_for("no web endpoints", 60, || {
        let o = c.kubectl(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
            "-o",
            "jsonpath={.items[*].endpoints[*].addresses[*]}",
        ]);
        text(&o.stdout).trim().is_empty().then_some(())
    });
    let refused = c.wait_for("connection refused", 10, || {
        let o = c.kubectl(&[
            "exec",
            "client",
            "--",
            "sh",
            "-c",
            &format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 10 {cip} 80 2>&1; echo rc=$?"),
        ]);
        let out = text(&o.stdout);
        out.contains("refused").then_some(out)
    });
    assert!(refused.contains("rc=1"), "{refused}");
    // Scaled back: served again.
    c.kubectl_ok(&["scale", "deployment", "web", "--replicas=2"]);
    c.wait_for("two web pods Ready again", 120, || {
        (ready_web_pods(&c) == 2).then_some(())
    });
    for pod in text(
        &c.kubectl(&["get", "pods", "-l", "app=web", "-o", "name"])
            .stdout,
    )
    .lines()
    {
        c.track_pod(pod.trim_start_matches("pod/"));
    }
    c.wait_for("the ClusterIP served after scaling up", 30, || {
        (from_client(&c, &cip, 5).len() == 5).then_some(())
    });

    // kill -9 of the agent: an established connection and new ones keep
    // working while it is down, and after it returns.
    let addr: SocketAddr = format!("{cip}:80").parse().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let netns = c.agent_node.netns().to_string();
    let established = std::thread::spawn(move || {
        in_netns(&netns, move || {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
            rx.recv().ok();
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
            let mut body = String::new();
            s.read_to_string(&mut body)?;
            Ok::<_, std::io::Error>(body)
        })
    });
    std::thread::sleep(Duration::from_millis(500));
    c.kill9_agent();
    tx.send(()).unwrap();
    let body = established
        .join()
        .unwrap()
        .expect("the established connection");
    assert!(body.contains("web-"), "{body}");
    let body = get_from_node(&c, addr).expect("a new connection while the agent is down");
    assert!(body.contains("web-"), "{body}");
    assert!(curl(&np).is_ok_and(|b| b.starts_with("web-")));
    c.respawn_agent();
    c.wait_for("the client pod reachable again", 90, || {
        (from_client(&c, &cip, 10).len() == 10).then_some(())
    });
    let body = get_from_node(&c, addr).expect("a new connection after the restart");
    assert!(body.contains("web-"), "{body}");

    // Someone deletes the proxy's table: the periodic check (every 30 s)
    // notices nf_tables' generation moved and puts the table back.
    let deleted = c.agent_node.exec(&["nft", "delete", "table", "ip", "rk3s-proxy"]);
    assert!(deleted.status.success(), "{}", text(&deleted.stderr));
    let tables = text(&c.agent_node.exec(&["nft", "list", "tables"]).stdout);
    assert!(!tables.contains("rk3s-proxy"), "{tables}");
    c.wait_for("the ClusterIP served again after the table was deleted", 75, || {
        (from_client(&c, &cip, 3).len() == 3).then_some(())
    });
    // An idle node's check writes nothing: the table (its handle) stays
    // the same over more than one check period.
    let handle = || {
        let listing = c.agent_node.exec(&["nft", "-a", "list", "table", "ip", "rk3s-proxy"]);
        text(&listing.stdout).lines().next().unwrap_or("").to_string()
    };
    let before = handle();
    assert!(before.contains("# handle"), "{before}");
    std::thread::sleep(Duration::from_secs(35));
    assert_eq!(handle(), before, "an idle check replaced the table");
}
