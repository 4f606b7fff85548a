//! The walkthrough's last step from the outside, on two netns nodes with
//! real agents: a Deployment of a busybox httpd, `kubectl expose`,
//! `kubectl create ingress`, then curl from the host namespace (outside
//! every pod) to each node's port 80 and 443; status, a 503 naming the
//! Service at zero replicas; the dashboard in headless Chromium, driven
//! over the DevTools protocol (tests/ingress/cdp.rs): login, the router
//! with its 2 healthy endpoints and the nodes, then changes made with
//! kubectl showing up on the open page without a reload (a new Ingress,
//! a scale to 1 and to 0), a refused token and a token without rights.
//!
//! Until the overlay lands, both replicas run on the agent node (the
//! server node is cordoned: its containerd also has no image) and the test
//! gives the server's namespace a route to the agent's pod CIDR via the
//! agent (host-gw style), so the server node's ingress reaches them too.
//! A websocket echo goes through each node's ingress to a server the test
//! runs in the agent's namespace (tests/ingress_proxy.rs covers the proxy's
//! upgrades in process too).

mod common;
#[path = "ingress/cdp.rs"]
mod cdp;

use std::process::Command;
use std::time::Duration;

use common::image::BusyboxImage;
use common::privilege::require_e2e;
use common::twonode::{in_netns, text, Cluster};
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;

const IMAGE: &str = "docker.io/rk3s/hello-httpd:test";
const PAGE: &str = "hello through the rk3s ingress";

fn curl(args: &[&str]) -> (String, String) {
    let o = Command::new("curl")
        .args(["-sS", "--noproxy", "*", "-m", "5", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("run curl");
    let out = text(&o.stdout);
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
    (body.to_string(), code.trim().to_string())
}

/// Opens a websocket to `ip:80` for `host`, sends `text`, returns the reply.
async fn websocket_echo(ip: &str, host: &str, text: &str) -> Result<String, String> {
    let tcp = tokio::net::TcpStream::connect((ip, 80)).await.map_err(|e| e.to_string())?;
    let url = format!("ws://{host}/");
    let (mut ws, _) = tokio::time::timeout(Duration::from_secs(5), tokio_tungstenite::client_async(url, tcp))
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| e.to_string())?;
    ws.send(WsMessage::Text(text.to_string().into())).await.map_err(|e| e.to_string())?;
    match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        Ok(Some(Ok(WsMessage::Text(t)))) => Ok(t.to_string()),
        other => Err(format!("no echo: {other:?}")),
    }
}

#[test]
fn the_walkthrough_through_the_ingress_from_outside() {
    if !require_e2e("the_walkthrough_through_the_ingress_from_outside") {
        return;
    }
    let mut cluster = Cluster::start();
    cluster.start_agent();
    let image = BusyboxImage::new(IMAGE)
        .cmd(&["httpd", "-f", "-p", "8080", "-h", "/www"])
        .file("/www/index.html", format!("<h1>{PAGE}</h1>\n"), 0o644)
        .write(cluster.agent_ctrd.scratch())
        .unwrap();
    cluster.agent_ctrd.import(&image).expect("import the httpd image");
    cluster.wait_for("both nodes Ready", 120, || {
        let out = cluster.kubectl_ok(&["get", "nodes", "-o", "jsonpath={range .items[*]}{.status.conditions[?(@.type==\"Ready\")].status}{\" \"}{end}"]);
        (out.split_whitespace().filter(|s| *s == "True").count() == 2).then_some(())
    });
    cluster.kubectl_ok(&["cordon", "server"]);
    cluster.wait_for("the IngressClass rk3s", 60, || {
        cluster.kubectl(&["get", "ingressclass", "rk3s"]).status.success().then_some(())
    });

    // The walkthrough as a user types it.
    cluster.kubectl_ok(&["create", "deployment", "hello", &format!("--image={IMAGE}"), "--replicas=2"]);
    cluster.kubectl_ok(&["expose", "deployment", "hello", "--port=80", "--target-port=8080"]);
    cluster.kubectl_ok(&["create", "ingress", "hello", "--rule=hello.local/*=hello:80"]);
    let pods = cluster.wait_for("2 ready hello pods", 180, || {
        let out = cluster.kubectl_ok(&["get", "pods", "-l", "app=hello", "-o",
            "jsonpath={range .items[*]}{.metadata.name}={.status.containerStatuses[0].ready}{\" \"}{end}"]);
        let ready: Vec<String> = out
            .split_whitespace()
            .filter_map(|p| p.strip_suffix("=true").map(str::to_string))
            .collect();
        (ready.len() == 2).then_some(ready)
    });
    for p in &pods {
        cluster.track_pod(p);
    }
    // Stand-in for the overlay: the server node reaches the agent's pods via the agent.
    let cidr = cluster.kubectl_ok(&["get", "node", "agent", "-o", "jsonpath={.spec.podCIDR}"]);
    let agent_ip = cluster.agent_node.ip().to_string();
    let o = cluster.server_node.exec(&["ip", "route", "replace", cidr.trim(), "via", &agent_ip]);
    assert!(o.status.success(), "route: {}", text(&o.stderr));

    let nodes = [cluster.server_node.ip().to_string(), agent_ip.clone()];
    for ip in &nodes {
        let (body, code) = cluster.wait_for(&format!("the page through {ip}:80"), 90, || {
            let (body, code) = curl(&["-H", "Host: hello.local", &format!("http://{ip}/")]);
            (code == "200").then_some((body, code))
        });
        assert!(body.contains(PAGE), "{ip}: {code} {body}");
    }
    let (body, code) = curl(&["-H", "Host: nobody.local", &format!("http://{}/", nodes[0])]);
    assert_eq!(code, "404", "{body}");
    assert!(body.contains("nobody.local"), "{body}");

    // HTTPS with a TLS Secret, by SNI.
    let cert = rcgen::generate_simple_self_signed(vec!["hello.local".to_string()]).unwrap();
    let (crt, key) = (cluster.dir.path().join("hello.crt"), cluster.dir.path().join("hello.key"));
    std::fs::write(&crt, cert.cert.pem()).unwrap();
    std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
    cluster.kubectl_ok(&["create", "secret", "tls", "hello-tls", "--cert", crt.to_str().unwrap(), "--key", key.to_str().unwrap()]);
    cluster.kubectl_ok(&["patch", "ingress", "hello", "--type=merge", "-p",
        r#"{"spec":{"tls":[{"hosts":["hello.local"],"secretName":"hello-tls"}]}}"#]);
    for ip in &nodes {
        let resolve = format!("hello.local:443:{ip}");
        cluster.wait_for(&format!("the page over HTTPS through {ip}"), 30, || {
            let (body, code) = curl(&["--resolve", &resolve, "--cacert", crt.to_str().unwrap(), "https://hello.local/"]);
            (code == "200" && body.contains(PAGE)).then_some(())
        });
    }

    // A websocket echo through each node's ingress. The backend is an echo
    // server the test runs inside the agent node's namespace, behind a
    // selector-less Service with a hand-written EndpointSlice.
    {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = in_netns(cluster.agent_node.netns(), || std::net::TcpListener::bind("0.0.0.0:0").unwrap());
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        rt.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else { return };
                    while let Some(Ok(msg)) = ws.next().await {
                        if let WsMessage::Text(t) = msg {
                            let _ = ws.send(WsMessage::Text(format!("echo: {t}").into())).await;
                        }
                    }
                });
            }
        });
        cluster.apply(&format!(
            r#"
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: default}}
spec: {{ports: [{{name: ws, port: 80, targetPort: {port}}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: echo-1, namespace: default, labels: {{kubernetes.io/service-name: echo}}}}
addressType: IPv4
ports: [{{name: ws, port: {port}, protocol: TCP}}]
endpoints: [{{addresses: ["{agent_ip}"], conditions: {{ready: true}}}}]
"#
        ));
        cluster.kubectl_ok(&["create", "ingress", "echo", "--rule=echo.local/*=echo:80"]);
        for ip in &nodes {
            let echoed = cluster.wait_for(&format!("a websocket echo through {ip}"), 30, || {
                rt.block_on(websocket_echo(ip, "echo.local", "ping")).ok()
            });
            assert_eq!(echoed, "echo: ping", "through {ip}");
        }
        cluster.kubectl_ok(&["delete", "ingress", "echo"]);
        rt.shutdown_timeout(Duration::from_secs(2));
    }

    // status.loadBalancer lists both nodes.
    cluster.wait_for("the Ingress status to list both nodes", 30, || {
        let ips = cluster.kubectl_ok(&["get", "ingress", "hello", "-o", "jsonpath={.status.loadBalancer.ingress[*].ip}"]);
        nodes.iter().all(|n| ips.split_whitespace().any(|i| i == n)).then_some(())
    });

    // The dashboard: a reader with rights, and a token without.
    let shots = std::env::var("RK3S_E2E_SCREENSHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| cluster.dir.path().join("screenshots"));
    std::fs::create_dir_all(&shots).unwrap();
    cluster.apply(
        r#"
apiVersion: v1
kind: ServiceAccount
metadata: {name: dash, namespace: default}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: nobody, namespace: default}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: dash-reader}
rules:
- {apiGroups: ["", networking.k8s.io, discovery.k8s.io], resources: [nodes, pods, services, events, ingresses, ingressclasses, endpointslices], verbs: [get, list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: dash-reader}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: dash-reader}
subjects: [{kind: ServiceAccount, name: dash, namespace: default}]
"#,
    );
    let token = cluster.kubectl_ok(&["create", "token", "dash"]).trim().to_string();
    let nobody = cluster.kubectl_ok(&["create", "token", "nobody"]).trim().to_string();
    let base = format!("https://{}/.rk3s/dashboard/", nodes[1]);
    let mut browser = cdp::Browser::launch();
    browser.navigate(&base);
    browser.wait_dom("the login page", 30, |d| d.contains("Log in") && d.contains("bearer token"));
    browser.screenshot(&shots.join("dashboard-login.png"));
    let log_in = |browser: &mut cdp::Browser, token: &str| {
        let token = serde_json::to_string(token).unwrap();
        browser.eval(&format!(
            "document.getElementById('token').value = {token}; document.getElementById('login-form').requestSubmit(); true"
        ));
    };

    // A token the API server refuses: back on the login page, with the reason.
    log_in(&mut browser, "not-a-token");
    browser.wait_dom("the refused token's reason", 30, |d| d.contains("refused the token"));

    log_in(&mut browser, &token);
    let dom = browser.wait_dom("the router and the nodes", 60, |d| {
        d.contains("hello.local") && d.contains("2 healthy") && d.contains(">server<") && d.contains(">agent<")
    });
    assert!(dom.contains("default/hello:80"), "{dom}");
    browser.screenshot(&shots.join("dashboard-routers.png"));

    // Live: changes reach the open page from the watches, without a reload
    // (a reload would lose the marker).
    browser.eval("window.rk3sMarker = 'same page'; true");
    cluster.kubectl_ok(&["create", "ingress", "live", "--rule=live.local/*=hello:80"]);
    browser.wait_dom("the new Ingress on the open page", 30, |d| d.contains("live.local"));
    cluster.kubectl_ok(&["scale", "deployment", "hello", "--replicas=1"]);
    browser.wait_dom("one healthy endpoint on the open page", 90, |d| {
        d.contains("1 healthy") && !d.contains("2 healthy")
    });
    assert_eq!(browser.eval("window.rk3sMarker"), "same page", "the page was reloaded");
    browser.screenshot(&shots.join("dashboard-live.png"));

    // No replicas: a 503 that names the Service, and the page says the same.
    cluster.kubectl_ok(&["scale", "deployment", "hello", "--replicas=0"]);
    let body = cluster.wait_for("a 503 naming the service", 90, || {
        let (body, code) = curl(&["-H", "Host: hello.local", &format!("http://{}/", nodes[1])]);
        (code == "503").then_some(body)
    });
    assert!(body.contains("service default/hello has no ready endpoints"), "{body}");
    browser.wait_dom("the missing endpoints on the open page", 30, |d| {
        d.contains("service default/hello has no ready endpoints")
    });
    assert_eq!(browser.eval("window.rk3sMarker"), "same page", "the page was reloaded");

    // The API server restarts under the open page: the node's watches for
    // this viewer resume (or re-list) by themselves, and later changes still arrive.
    cluster.restart_server();
    cluster.wait_for("the API server back", 90, || cluster.kubectl(&["get", "--raw", "/readyz"]).status.success().then_some(()));
    cluster.kubectl_ok(&["create", "ingress", "after-server", "--rule=after-server.local/*=hello:80"]);
    browser.wait_dom("a change after the API server restarted", 90, |d| d.contains("after-server.local"));
    // The node serving the page restarts: the page reconnects with back-off on its own.
    cluster.restart_agent();
    cluster.kubectl_ok(&["create", "ingress", "after-agent", "--rule=after-agent.local/*=hello:80"]);
    browser.wait_dom("a change after the page's node restarted", 120, |d| d.contains("after-agent.local"));
    assert_eq!(browser.eval("window.rk3sMarker"), "same page", "the page was reloaded");

    // A token without rights: an error, not data (logging out clears the board).
    browser.eval("document.getElementById('logout').click(); true");
    log_in(&mut browser, &nobody);
    let denied = browser.wait_dom("the refusal", 30, |d| d.contains("Not allowed"));
    assert!(!denied.contains("hello.local") && !denied.contains(">agent<"), "{denied}");
    browser.screenshot(&shots.join("dashboard-denied.png"));
    drop(browser);

    // The agent's RSS with 100 Ingresses (printed, not asserted): the
    // whole agent process (kubelet, service proxy, DNS, ingress).
    let agent_pid = cluster
        .agent_node
        .pids()
        .into_iter()
        .find(|p| {
            let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmd.split(|&c| c == 0).collect();
            args.first().is_some_and(|a| a.ends_with(b"rk3s")) && args.get(1) == Some(&&b"agent"[..])
        })
        .expect("the agent's process");
    let rss = |pid: u32| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap_or("?").trim().to_string()
    };
    let before = rss(agent_pid);
    let many: String = (0..100)
        .map(|i| {
            format!(
                "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: bulk-{i}, namespace: default}}\n\
                 spec: {{rules: [{{host: bulk-{i}.local, http: {{paths: [{{path: /, pathType: Prefix, \
                 backend: {{service: {{name: hello, port: {{number: 80}}}}}}}}]}}}}]}}\n---\n"
            )
        })
        .collect();
    cluster.apply(&many);
    cluster.wait_for("the 100th Ingress served (its status written)", 60, || {
        let ips = cluster.kubectl_ok(&["get", "ingress", "bulk-99", "-o", "jsonpath={.status.loadBalancer.ingress[*].ip}"]);
        (!ips.trim().is_empty()).then_some(())
    });
    let (body, _) = curl(&["-H", "Host: bulk-99.local", &format!("http://{}/", nodes[1])]);
    assert!(body.contains("service default/hello has no ready endpoints"), "bulk-99 is routed: {body}");
    eprintln!("agent RSS (pid {agent_pid}): {before} with 4 Ingresses, {} with 104", rss(agent_pid));
    std::thread::sleep(Duration::from_secs(1));
}
