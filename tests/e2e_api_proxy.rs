//! `pods/proxy`, `services/proxy` and `nodes/proxy` end to end: the
//! in-process API server, an agent's kubelet API on a real tunnel, and a
//! "pod" that is a network namespace with an HTTP server on its pod IP.
//! kubectl (`get --raw` and `kubectl proxy`) and curl are the clients.
//!
//! Root-only: skips without root unless `RK3S_E2E=1`.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::apiserver::TestServer;
use common::privilege::require_e2e;
use tokio_util::sync::CancellationToken;

/// An HTTP server that answers every method with what it received:
/// `METHOD PATH len=N sum=S` (S: the byte sum of the body), and serves
/// 8 MiB at `/big`.
const ECHO_SERVER: &str = r#"
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        if self.path == "/big":
            out = bytes(i % 251 for i in range(8 << 20))
        else:
            out = ("%s %s len=%d sum=%d\n" % (self.command, self.path, len(body), sum(body))).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(out)))
        self.send_header("X-Echo", "yes")
        self.end_headers()
        self.wfile.write(out)
    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = answer
    def log_message(self, *a): pass
server = http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), H)
if len(sys.argv) > 2:
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[2], sys.argv[3])
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"#;

/// A network namespace `rk3s-<uid>` (where the kubelet API looks for a
/// pod's) with `ip` on its loopback and the echo server on port 8080.
struct NetnsPod {
    name: String,
    child: Child,
    tls: Option<Child>,
    _certs: tempfile::TempDir,
}

impl NetnsPod {
    fn start(uid: &str, ip: &str) -> Self {
        let name = format!("rk3s-{uid}");
        let run = |args: &[&str]| {
            let s = Command::new("ip").args(args).status().expect("run ip");
            assert!(s.success(), "ip {args:?}");
        };
        run(&["netns", "add", &name]);
        let mut pod = NetnsPod {
            name: name.clone(),
            child: Command::new("true").spawn().unwrap(),
            tls: None,
            _certs: tempfile::tempdir().unwrap(),
        };
        run(&["-n", &name, "link", "set", "lo", "up"]);
        run(&["-n", &name, "addr", "add", &format!("{ip}/32"), "dev", "lo"]);
        pod.child = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{name}"))
            .args(["/usr/bin/python3", "-c", ECHO_SERVER, "8080"])
            .stdout(Stdio::null())
            .spawn()
            .expect("start the echo server");
        // The same server over TLS on 8443, with a self-signed certificate
        // (kube's proxy does not verify pods' certificates).
        let (cert, key) = (pod._certs.path().join("tls.crt"), pod._certs.path().join("tls.key"));
        let o = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=pod", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("run openssl");
        assert!(o.status.success(), "openssl: {}", String::from_utf8_lossy(&o.stderr));
        pod.tls = Some(
            Command::new("nsenter")
                .arg(format!("--net=/var/run/netns/{name}"))
                .args(["/usr/bin/python3", "-c", ECHO_SERVER, "8443"])
                .arg(&cert)
                .arg(&key)
                .stdout(Stdio::null())
                .spawn()
                .expect("start the TLS echo server"),
        );
        pod
    }
}

impl Drop for NetnsPod {
    fn drop(&mut self) {
        for child in std::iter::once(&mut self.child).chain(self.tls.as_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// A `kubectl proxy` on a free port, killed on drop.
struct KubectlProxy {
    child: Child,
    port: u16,
}

impl Drop for KubectlProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `curl` with the given arguments: (stdout, the status code).
fn curl(args: &[&str]) -> (Vec<u8>, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "30", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("run curl");
    let mut body = out.stdout;
    let split = body.iter().rposition(|b| *b == b'\n').unwrap_or(0);
    let code = String::from_utf8_lossy(&body[split + 1..]).to_string();
    body.truncate(split);
    (body, code)
}

#[test]
fn pods_services_and_nodes_are_proxied_through_the_tunnel() {
    if !require_e2e("pods_services_and_nodes_are_proxied_through_the_tunnel") {
        return;
    }
    let server = TestServer::start();
    let kubectl = server.kubectl();
    let pod_ip = "10.42.77.7";
    kubectl.run_with_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: node1\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels: {app: web}\nspec:\n  nodeName: node1\n  containers:\n  - name: app\n    image: busybox\n    ports:\n    - containerPort: 8080\n---\n\
         apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n",
    );
    kubectl.run_ok(&[
        "patch",
        "pod",
        "web",
        "--subresource=status",
        "--type=merge",
        "-p",
        &format!(r#"{{"status":{{"phase":"Running","podIP":"{pod_ip}","podIPs":[{{"ip":"{pod_ip}"}}]}}}}"#),
    ]);
    kubectl.run_with_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-test\n  labels:\n    kubernetes.io/service-name: web\naddressType: IPv4\nports:\n- name: http\n  port: 8080\n  protocol: TCP\nendpoints:\n- addresses: [\"{pod_ip}\"]\n  conditions: {{ready: true}}\n  targetRef: {{kind: Pod, name: web, namespace: default}}\n"
        ),
    );
    let uid = kubectl.run_ok(&["get", "pod", "web", "-o", "jsonpath={.metadata.uid}"]);
    let _pod = NetnsPod::start(&uid, pod_ip);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = common::kubelet_tunnel::pod_dialer();
    let shutdown = CancellationToken::new();
    let _cancel = shutdown.clone().drop_guard();
    common::kubelet_tunnel::spawn(&rt, &server, "node1", api, &shutdown);

    // The tunnel and the echo server come up: retry the first request.
    let first = "/api/v1/namespaces/default/pods/web/proxy/first";
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = kubectl.run(&["get", "--raw", first]);
        if out.status.success() {
            assert_eq!(String::from_utf8_lossy(&out.stdout), "GET /first len=0 sum=0\n");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pods/proxy never answered: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // kube's URL forms: name (first container port), name:port,
    // http:name:port; services by port number and by port name.
    for path in [
        "/api/v1/namespaces/default/pods/web:8080/proxy/a/b?x=1",
        "/api/v1/namespaces/default/pods/http:web:8080/proxy/a/b?x=1",
        "/api/v1/namespaces/default/services/web:80/proxy/a/b?x=1",
        "/api/v1/namespaces/default/services/web:http/proxy/a/b?x=1",
        "/api/v1/namespaces/default/services/http:web:http/proxy/a/b?x=1",
    ] {
        assert_eq!(
            kubectl.run_ok(&["get", "--raw", path]),
            "GET /a/b?x=1 len=0 sum=0\n",
            "{path}"
        );
    }
    // https: TLS to the pod, its self-signed certificate not verified.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = kubectl.run(&["get", "--raw", "/api/v1/namespaces/default/pods/https:web:8443/proxy/tls?x=1"]);
        if out.status.success() {
            assert_eq!(String::from_utf8_lossy(&out.stdout), "GET /tls?x=1 len=0 sum=0\n");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "https pods/proxy never answered: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // The kubelet API of the node.
    assert_eq!(
        kubectl.run_ok(&["get", "--raw", "/api/v1/nodes/node1/proxy/healthz"]),
        "ok"
    );
    // kube's errors.
    let err = |path: &str| {
        let out = kubectl.run(&["get", "--raw", path]);
        assert!(!out.status.success(), "{path} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(
        err("/api/v1/namespaces/default/pods/nope/proxy/").contains("pods \"nope\" not found"),
        "missing pod"
    );
    let e = err("/api/v1/namespaces/default/services/web:81/proxy/");
    assert!(e.contains("no service port 81 found for service \"web\""), "{e}");

    // kubectl proxy: every verb, a streamed upload and download, the
    // redirect of a bare `/proxy`.
    let port = free_port();
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(server.kubeconfig())
        .args(["proxy", &format!("--port={port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start kubectl proxy");
    {
        use std::io::BufRead;
        let mut line = String::new();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        out.read_line(&mut line).unwrap();
        assert!(line.contains("Starting to serve"), "{line}");
    }
    let proxy = KubectlProxy { child, port };
    let base = format!("http://127.0.0.1:{}/api/v1/namespaces/default", proxy.port);
    let (body, code) = curl(&[&format!("{base}/pods/web/proxy/")]);
    assert_eq!((String::from_utf8_lossy(&body).as_ref(), code.as_str()), ("GET / len=0 sum=0\n", "200"));
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        let (body, code) = curl(&["-X", method, "--data-binary", "hello", &format!("{base}/services/web:http/proxy/m")]);
        let sum: u32 = b"hello".iter().map(|b| *b as u32).sum();
        assert_eq!(
            (String::from_utf8_lossy(&body).into_owned(), code),
            (format!("{method} /m len=5 sum={sum}\n"), "200".to_string())
        );
    }
    let upload: Vec<u8> = (0..4u32 << 20).map(|i| (i % 7) as u8).collect();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &upload).unwrap();
    let sum: u64 = upload.iter().map(|b| *b as u64).sum();
    let (body, _) = curl(&[
        "--data-binary",
        &format!("@{}", file.path().display()),
        &format!("{base}/pods/web/proxy/up"),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&body),
        format!("POST /up len={} sum={sum}\n", upload.len())
    );
    let (big, code) = curl(&[&format!("{base}/pods/web:8080/proxy/big")]);
    assert_eq!(code, "200");
    assert_eq!(big.len(), 8 << 20);
    assert!(big.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
    let (_, code) = curl(&["-o", "/dev/null", &format!("{base}/pods/web/proxy")]);
    assert_eq!(code, "301");
    let (body, code) = curl(&["-L", &format!("{base}/pods/web/proxy?q=1")]);
    assert_eq!(
        (String::from_utf8_lossy(&body).as_ref(), code.as_str()),
        ("GET /?q=1 len=0 sum=0\n", "200")
    );

    // RBAC on the `proxy` subresource: a user without it is refused, one
    // granted `get` on pods/proxy gets through.
    let as_jane = |path: &str| kubectl.run(&["--as=jane", "get", "--raw", path]);
    let out = as_jane("/api/v1/namespaces/default/pods/web/proxy/x");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot get resource \"pods/proxy\""),
        "{stderr}"
    );
    kubectl.run_ok(&["create", "role", "proxier", "--verb=get", "--resource=pods/proxy"]);
    kubectl.run_ok(&["create", "rolebinding", "proxier", "--role=proxier", "--user=jane"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = as_jane("/api/v1/namespaces/default/pods/web/proxy/x");
        if out.status.success() {
            assert_eq!(String::from_utf8_lossy(&out.stdout), "GET /x len=0 sum=0\n");
            break;
        }
        assert!(Instant::now() < deadline, "the RoleBinding never took effect");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(proxy);
    shutdown.cancel();
}
