//! Issue 8's "done when", as a user runs it: the real `rk3s server` in one
//! network namespace and the real `rk3s agent` in another, each on its own
//! containerd, with a firewall in the agent's namespace that drops every new
//! inbound connection. The agent dials out to the server's 6443 and
//! everything kubectl does with its pod (logs, exec, attach, port-forward,
//! the Python client's exec) travels through that tunnel; RBAC still
//! applies; a server restart is survived by the agent and its pods, and an
//! agent restart too (exec FIFOs under the agent's own `--run-dir`).
//!
//! The cluster is [`common::twonode::Cluster`]: the server keeps its
//! built-in agent, so two rk3s agents share this machine, and the server
//! restart also checks that they leave each other's pods alone.
//!
//! Root-only: skips without root unless `RK3S_E2E=1`.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use common::containerd::Containerd;
use common::privilege::{self, require_e2e, BUSYBOX};
use common::twonode::{in_netns, kill, text, wait_line, Cluster};
use sha2::{Digest, Sha256};

/// Size of the file the pod serves for the parallel port-forward transfers.
const BIG_BYTES: usize = 8 << 20;

/// An HTTP/1.0 GET to 127.0.0.1:`port` (in the caller's namespace): the body.
fn http_get(port: u16, path: &str) -> std::io::Result<Vec<u8>> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n")?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let body = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .ok_or_else(|| std::io::Error::other(format!("no HTTP header in {out:?}")))?;
    Ok(out.split_off(body))
}

fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// The highest `line N` in `out`.
fn last_line_number(out: &str) -> Option<u64> {
    out.lines()
        .filter_map(|l| l.strip_prefix("line ")?.trim().parse().ok())
        .max()
}

const WEB_POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  nodeName: agent
  containers:
  - name: app
    image: docker.io/rk3s/busybox:test
    command:
    - sh
    - -c
    - |
      mkdir -p /srv
      echo hello from the agent > /srv/index.html
      head -c 8388608 /dev/urandom > /srv/big
      httpd -p 80 -h /srv
      i=0
      while true; do echo line $i; i=$((i+1)); sleep 1; done
"#;

/// Says two things and exits for good: `logs -f` of it must end.
const DONE_POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: done
spec:
  nodeName: agent
  restartPolicy: Never
  containers:
  - name: app
    image: docker.io/rk3s/busybox:test
    command: [sh, -c, "echo done; echo really"]
"#;

/// Fails once, then runs: `logs --previous` has the first run's output.
const ONCE_POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: once
spec:
  nodeName: agent
  containers:
  - name: app
    image: docker.io/rk3s/busybox:test
    command:
    - sh
    - -c
    - if [ -e /data/ran ]; then echo second run; exec sleep 3600; fi; touch /data/ran; echo first run; exit 1
    volumeMounts:
    - name: data
      mountPath: /data
  volumes:
  - name: data
    emptyDir: {}
"#;

#[test]
fn kubectl_reaches_a_firewalled_agents_pods_only_through_its_tunnel() {
    if !require_e2e("kubectl_reaches_a_firewalled_agents_pods_only_through_its_tunnel") {
        return;
    }
    privilege::require_tools(
        "e2e_agent_netns",
        &[("script", "bsdutils"), ("kubectl", "kubectl")],
    );
    let mut c = Cluster::start();

    // The firewall: a listener in the agent's namespace is reachable from
    // the server's before the rule and not after it.
    let agent_ip = c.agent_node.ip().to_string();
    let probe = |c: &Cluster, port: &str| {
        let o = c.server_node.exec_within(
            &[BUSYBOX, "nc", "-w", "2", &agent_ip, port],
            Duration::from_secs(10),
        );
        o.map(|o| o.status.success()).unwrap_or(false)
    };
    let listener = c
        .agent_node
        .spawn(&[BUSYBOX, "nc", "-ll", "-p", "7777", "-e", "true"])
        .unwrap();
    c.wait_for("the probe listener", 10, || probe(&c, "7777").then_some(()));
    c.firewall_agent();
    assert!(
        !probe(&c, "7777"),
        "the agent's namespace still accepts connections"
    );
    assert!(
        !probe(&c, "10250"),
        "the agent's namespace accepts kubelet connections"
    );
    kill(listener);

    c.start_agent();
    c.wait_for("node agent Ready", 90, || c.node_ready("agent").then_some(()));
    c.apply(WEB_POD);
    c.apply(ONCE_POD);
    c.apply(DONE_POD);
    c.track_pod("web");
    c.track_pod("once");
    c.track_pod("done");
    c.wait_for("web Running", 90, || {
        (c.pod_field("web", "{.status.phase}") == "Running").then_some(())
    });

    // logs, and logs -f with a line that arrives while following.
    let seen = c.wait_for("web's first lines", 30, || {
        let o = c.kubectl(&["logs", "web"]);
        last_line_number(&text(&o.stdout))
    });
    let (follow, rx) = c.kubectl_lines(&["logs", "-f", "web"]);
    let newer = wait_line(&rx, 20, |l| {
        last_line_number(l).is_some_and(|n| n > seen + 1)
    });
    kill(follow);
    assert!(newer.is_some(), "logs -f got no new line after line {seen}");

    // exec: output, stdin, exit code, a terminal.
    let hostname = c.kubectl_ok(&["exec", "web", "--", "cat", "/etc/hostname"]);
    assert_eq!(hostname, "web\n");
    let o = c.kubectl_stdin(&["exec", "-i", "web", "--", "cat"], b"first\nsecond\n");
    assert_eq!(text(&o.stdout), "first\nsecond\n", "{}", text(&o.stderr));
    let o = c.kubectl(&["exec", "web", "--", "sh", "-c", "echo oops >&2; exit 3"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("oops"));
    let o = privilege::output_within(
        c.in_server("script").args([
            "-qec",
            "kubectl exec -it web -- sh -c 'tty; echo ok'",
            "/dev/null",
        ]),
        Duration::from_secs(60),
    )
    .unwrap();
    let tty = text(&o.stdout);
    assert!(
        tty.contains("/dev/pts/") && tty.contains("ok"),
        "exec -it: {tty}"
    );

    // attach: the running container's output.
    let (attach, rx) = c.kubectl_lines(&["attach", "web"]);
    let line = wait_line(&rx, 20, |l| l.starts_with("line "));
    kill(attach);
    assert!(line.is_some(), "kubectl attach showed no output");

    // The same over SPDY/3.1, which kubectl before 1.30 speaks.
    let kubectl_1_29 = |args: &[&str]| {
        privilege::output_within(
            c.in_server("/usr/lib/google-cloud-sdk/bin/kubectl.1.29")
                .args(args),
            Duration::from_secs(60),
        )
        .unwrap()
    };
    let o = kubectl_1_29(&["exec", "web", "--", "hostname"]);
    assert_eq!(text(&o.stdout).trim(), "web", "{}", text(&o.stderr));
    let o = kubectl_1_29(&["exec", "web", "--", "sh", "-c", "exit 3"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));

    // logs --previous after a restart.
    c.wait_for("once restarted", 90, || {
        let restarts: u32 = c
            .pod_field("once", "{.status.containerStatuses[0].restartCount}")
            .parse()
            .unwrap_or(0);
        let running = !c
            .pod_field("once", "{.status.containerStatuses[0].state.running}")
            .is_empty();
        (restarts >= 1 && running).then_some(())
    });
    assert_eq!(c.kubectl_ok(&["logs", "--previous", "once"]), "first run\n");
    c.wait_for("once's second run log", 20, || {
        (text(&c.kubectl(&["logs", "once"]).stdout) == "second run\n").then_some(())
    });

    // logs -f of a container that has exited ends, as kube's does
    // (`c.kubectl` gives up after 60 s, which would fail here).
    c.wait_for("done Succeeded", 90, || {
        (c.pod_field("done", "{.status.phase}") == "Succeeded").then_some(())
    });
    assert_eq!(c.kubectl_ok(&["logs", "-f", "done"]), "done\nreally\n");

    port_forward(&c);

    python_client_streams(&c);

    forbidden_exec(&c);

    // Restart the server: the agent reconnects by itself, its pod lives on.
    let status =
        "{.status.containerStatuses[0].containerID} {.status.containerStatuses[0].restartCount}";
    let before = c.pod_field("web", status);
    let tasks_before = running_tasks(&c.agent_ctrd);
    let restarted = Instant::now();
    c.restart_server();
    let seen = c.wait_for("kubectl logs after the server restart", 30, || {
        let o = c.kubectl(&["logs", "--tail=3", "web"]);
        o.status
            .success()
            .then(|| last_line_number(&text(&o.stdout)))
            .flatten()
    });
    eprintln!(
        "kubectl logs worked again {:.1} s after the server restart began",
        restarted.elapsed().as_secs_f64()
    );
    let o = c.kubectl_ok(&["exec", "web", "--", "hostname"]);
    assert_eq!(o.trim(), "web");
    assert_eq!(
        c.pod_field("web", status),
        before,
        "the pod's container changed"
    );
    assert_eq!(
        running_tasks(&c.agent_ctrd),
        tasks_before,
        "the agent's containers changed"
    );
    c.wait_for("web still logging", 20, || {
        let o = c.kubectl(&["logs", "--tail=2", "web"]);
        last_line_number(&text(&o.stdout))
            .filter(|n| *n > seen)
            .map(|_| ())
    });
    // The server's built-in agent restarted too: the agent's pod network
    // (a host-wide /var/run/netns file) must have survived it.
    let uid = c.pod_field("web", "{.metadata.uid}");
    assert!(
        Path::new(&format!("/var/run/netns/rk3s-{uid}")).exists(),
        "the agent pod's network namespace file vanished with the server restart"
    );
    port_forward(&c);

    // Exec FIFOs live under the agent's own --run-dir, never the host's
    // /run/rk3s; a clean stop removes the empty root, and the restarted
    // agent execs into the pod it adopted.
    let exec_root = common::nodekit::run_dir(&c.dir.path().join("agent-data")).join("exec");
    assert!(exec_root.is_dir(), "no exec FIFO root at {}", exec_root.display());
    c.restart_agent();
    assert!(!exec_root.exists(), "a clean stop left {}", exec_root.display());
    let hostname = c.wait_for("exec after the agent restart", 60, || {
        let o = c.kubectl(&["exec", "web", "--", "hostname"]);
        o.status.success().then(|| text(&o.stdout))
    });
    assert_eq!(hostname.trim(), "web");
    assert!(exec_root.is_dir(), "the restarted agent's exec root");
}

/// `kubectl port-forward` beside the server: one request, then two parallel
/// large transfers, checked byte for byte against the pod's own checksum.
fn port_forward(c: &Cluster) {
    let want = c.kubectl_ok(&["exec", "web", "--", "sha256sum", "/srv/big"]);
    let want = want.split_whitespace().next().unwrap().to_string();
    let port = 20000 + (std::process::id() % 20000) as u16;
    let (pf, rx) = c.kubectl_lines(&["port-forward", "pod/web", &format!("{port}:80")]);
    let ready = wait_line(&rx, 30, |l| l.contains("Forwarding from"));
    if ready.is_none() {
        kill(pf);
        panic!("kubectl port-forward never started forwarding");
    }
    let ns = c.server_node.netns().to_string();
    let result = in_netns(&ns, move || -> Result<(), String> {
        let page = http_get(port, "/index.html").map_err(|e| e.to_string())?;
        if page != b"hello from the agent\n" {
            return Err(format!("index.html: {:?}", text(&page)));
        }
        let parallel: Vec<_> = (0..2)
            .map(|_| std::thread::spawn(move || http_get(port, "/big")))
            .collect();
        for t in parallel {
            let body = t.join().unwrap().map_err(|e| e.to_string())?;
            let got = sha256_hex(&body);
            if body.len() != BIG_BYTES || got != want {
                return Err(format!(
                    "a parallel transfer got {} of {BIG_BYTES} bytes, sha256 {got} (the pod's: {want})",
                    body.len()
                ));
            }
        }
        Ok(())
    });
    kill(pf);
    result.unwrap_or_else(|e| panic!("port-forward: {e}"));
}

/// The Kubernetes Python client (Debian's python3-kubernetes) over its own
/// websocket protocol: exec with every stdout/stderr combination (stdin
/// off, then `cat` echoing stdin), as a script would use it.
fn python_client_streams(c: &Cluster) {
    let script = format!(
        r#"import json
from kubernetes import config, client
from kubernetes.stream import stream
{}
config.load_kube_config(config_file='{}')
api = client.CoreV1Api()
results = {{}}
for out in (True, False):
    for err in (True, False):
        if not (out or err):
            continue
        got = stream(api.connect_get_namespaced_pod_exec, 'web', 'default',
                     command=['sh', '-c', 'echo a; sleep 0.3; echo b >&2; sleep 0.3; hostname'],
                     stderr=err, stdin=False, stdout=out, tty=False)
        results['out=%s err=%s' % (out, err)] = got
results['stdin echo'] = cat_echo(api, 'ping\n')
# A browser-style client: base64.channel.k8s.io, text frames, the
# pre-v4 error channel (plain text).
import base64, websocket
cfg = client.Configuration.get_default_copy()
url = (cfg.host.replace('https://', 'wss://') + '/api/v1/namespaces/default/pods/web/exec'
       + '?command=sh&command=-c&command=echo%20b64%3B%20exit%203&stdout=true&stderr=true')
ws = websocket.create_connection(url, subprotocols=['base64.channel.k8s.io'],
    sslopt={{'certfile': cfg.cert_file, 'keyfile': cfg.key_file, 'ca_certs': cfg.ssl_ca_cert}})
chans = {{}}
while True:
    try:
        m = ws.recv()
    except websocket.WebSocketConnectionClosedException:
        break
    if not m:
        break
    chans[m[0]] = chans.get(m[0], '') + base64.b64decode(m[1:]).decode()
results['base64'] = {{'protocol': ws.getsubprotocol(), 'channels': chans}}
# Port-forward over the kubelet's websocket channel framing.
from kubernetes.stream import portforward
pf = portforward(api.connect_get_namespaced_pod_portforward, 'web', 'default', ports='80')
sock = pf.socket(80)
sock.setblocking(True)
sock.sendall(b'GET /index.html HTTP/1.0\r\n\r\n')
reply = b''
while True:
    chunk = sock.recv(65536)
    if not chunk:
        break
    reply += chunk
sock.close()
results['port-forward'] = {{'body': reply.split(b'\r\n\r\n', 1)[-1].decode(), 'error': pf.error(80)}}
print(json.dumps(results, sort_keys=True))
"#,
        common::pyclient::CAT_ECHO,
        c.kubeconfig.display()
    );
    let o = privilege::output_within(
        c.in_server("/usr/bin/python3").args(["-c", &script]),
        Duration::from_secs(120),
    )
    .unwrap();
    let got: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("python client: {e}: {} {}", text(&o.stdout), text(&o.stderr)));
    assert_eq!(
        got,
        serde_json::json!({
            "out=True err=True": "a\nb\nweb\n",
            "out=True err=False": "a\nweb\n",
            "out=False err=True": "b\n",
            "stdin echo": "ping\n",
            "port-forward": {"body": "hello from the agent\n", "error": null},
            "base64": {
                "protocol": "base64.channel.k8s.io",
                "channels": {
                    "1": "b64\n",
                    "3": "command terminated with non-zero exit code: error executing command [sh -c echo b64; exit 3], exit code 3",
                },
            },
        }),
        "the Python client's exec results"
    );
}

/// A ServiceAccount bound to `view` reads logs but gets 403 on `pods/exec`.
fn forbidden_exec(c: &Cluster) {
    c.kubectl_ok(&["create", "serviceaccount", "viewer"]);
    c.kubectl_ok(&[
        "create",
        "rolebinding",
        "viewer",
        "--clusterrole=view",
        "--serviceaccount=default:viewer",
    ]);
    let token = c.kubectl_ok(&["create", "token", "viewer"]);
    let server = format!("https://{}:6443", c.server_node.ip());
    let ca = c.dir.path().join("server-data/server/tls/server-ca.crt");
    let as_viewer = |args: &[&str]| {
        let mut all = vec![
            "--kubeconfig=/dev/null",
            "--server",
            &server,
            "--certificate-authority",
            ca.to_str().unwrap(),
            "--token",
            token.trim(),
        ];
        all.extend_from_slice(args);
        c.kubectl(&all)
    };
    let o = as_viewer(&["logs", "--tail=1", "web"]);
    assert!(
        o.status.success(),
        "a viewer reads logs: {}",
        text(&o.stderr)
    );
    let o = as_viewer(&["exec", "web", "--", "true"]);
    let err = text(&o.stderr);
    assert!(
        !o.status.success() && err.contains("forbidden") && err.contains("pods/exec"),
        "exec as a viewer: {err}"
    );
    let o = as_viewer(&["auth", "can-i", "create", "pods/exec"]);
    assert_eq!(
        (o.status.code(), text(&o.stdout).trim().to_string()),
        (Some(1), "no".into())
    );
}

/// `ctr tasks ls` of the agent's containerd: (container id, status), sorted.
fn running_tasks(ctrd: &Containerd) -> Vec<String> {
    let out = text(&ctrd.ctr(&["tasks", "ls"]).stdout);
    let mut tasks: Vec<String> = out
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<_> = l.split_whitespace().collect();
            format!("{} {}", f.first().unwrap_or(&""), f.get(2).unwrap_or(&""))
        })
        .collect();
    tasks.sort();
    tasks
}
