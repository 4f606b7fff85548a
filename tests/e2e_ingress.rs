//! The walkthrough's last step from the outside, on two netns nodes with
//! real agents: a Deployment of a busybox httpd, `kubectl expose`,
//! `kubectl create ingress`, then curl from the host namespace (outside
//! every pod) to each node's port 80 and 443; status, a 503 naming the
//! Service at zero replicas; the dashboard in headless Chromium.
//!
//! Until the overlay lands, both replicas run on the agent node (the
//! server node is cordoned: its containerd also has no image) and the test
//! gives the server's namespace a route to the agent's pod CIDR via the
//! agent (host-gw style), so the server node's ingress reaches them too.
//! The websocket echo through the proxy is in tests/ingress_proxy.rs.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::image::BusyboxImage;
use common::privilege::require_e2e;
use common::twonode::{text, Cluster};

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

fn chromium(url: &str, out_dir: &Path, shot: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let common = |c: &mut Command| {
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--ignore-certificate-errors",
            "--virtual-time-budget=8000",
            "--window-size=412,1400",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()));
    };
    let mut dump = Command::new("chromium");
    common(&mut dump);
    let dom = dump.arg("--dump-dom").arg(url).output().expect("run chromium");
    let mut screenshot = Command::new("chromium");
    common(&mut screenshot);
    let path = out_dir.join(shot);
    let o = screenshot
        .arg(format!("--screenshot={}", path.display()))
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(path.exists(), "no screenshot {}: {}", path.display(), text(&o.stderr));
    eprintln!("screenshot: {}", path.display());
    text(&dom.stdout)
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
    let login = chromium(&base, &shots, "dashboard-login.png");
    assert!(login.contains("Log in") && login.contains("bearer token"), "{login}");
    let dom = chromium(&format!("{base}#token={token}"), &shots, "dashboard-routers.png");
    assert!(dom.contains("hello.local") && dom.contains("2 healthy"), "{dom}");
    assert!(dom.contains("default/hello:80"), "{dom}");
    assert!(dom.contains(">server<") && dom.contains(">agent<"), "the nodes are listed: {dom}");
    let denied = chromium(&format!("{base}#token={nobody}"), &shots, "dashboard-denied.png");
    assert!(denied.contains("Not allowed"), "{denied}");
    assert!(!denied.contains("hello.local") && !denied.contains(">agent<"), "{denied}");

    // No replicas: a 503 that names the Service.
    cluster.kubectl_ok(&["scale", "deployment", "hello", "--replicas=0"]);
    let body = cluster.wait_for("a 503 naming the service", 90, || {
        let (body, code) = curl(&["-H", "Host: hello.local", &format!("http://{}/", nodes[1])]);
        (code == "503").then_some(body)
    });
    assert!(body.contains("service default/hello has no ready endpoints"), "{body}");
    std::thread::sleep(Duration::from_secs(1));
}
