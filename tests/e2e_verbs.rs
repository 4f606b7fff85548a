//! kubectl verbs beyond get/apply, proven against the real `rk3s server`
//! with its built-in agent on a private containerd (`common::onenode`):
//! `wait` (condition, jsonpath, delete), `proxy` to a pod's page, the
//! node's kubelet API and another port of the node, `cp` both ways (tar over exec) with the oldest,
//! default and newest kubectl the machine has, which also run `exec`,
//! `logs` and `port-forward`; `events`, `auth reconcile`, `debug node/…`
//! (host PID and network namespaces, the host's root at /host), the
//! Python client's tty exec and create-from-YAML, and the JavaScript
//! client (`@kubernetes/client-node` from npm, run with Debian's Node).
//!
//! Root-only: skips without root unless `RK3S_E2E=1`.

mod common;

use std::io::BufRead;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::onenode::OneNode;
use common::privilege::{self, require_e2e};

const IMAGE: &str = "docker.io/rk3s/busybox:test";

const WEB_POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  containers:
  - name: app
    image: docker.io/rk3s/busybox:test
    ports:
    - containerPort: 8080
    command:
    - sh
    - -c
    - |
      mkdir -p /srv
      echo hello from the pod > /srv/index.html
      echo started
      exec httpd -f -p 8080 -h /srv
"#;

/// kubectl binaries: the dispatcher (1.32) and the oldest and newest
/// releases bundled beside it.
const KUBECTLS: &[&str] = &[
    "/usr/bin/kubectl",
    "/usr/lib/google-cloud-sdk/bin/kubectl.1.27",
    "/usr/lib/google-cloud-sdk/bin/kubectl.1.33",
];

struct Env<'a> {
    one: &'a OneNode,
    home: tempfile::TempDir,
}

impl Env<'_> {
    /// `program` inside the server's network namespace, with the admin
    /// kubeconfig.
    fn command(&self, program: &str) -> Command {
        let mut c = self.one.node.command(program);
        c.env("KUBECONFIG", &self.one.kubeconfig)
            .env("HOME", self.home.path())
            .env("KUBECACHEDIR", self.home.path().join("cache"));
        c
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        privilege::output_within(self.command(program).args(args), Duration::from_secs(150))
            .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"))
    }

    fn ok(&self, program: &str, args: &[&str]) -> String {
        let o = self.run(program, args);
        assert!(
            o.status.success(),
            "{program} {args:?}: {}{}\n{}",
            text(&o.stdout),
            text(&o.stderr),
            self.one.server.log_tail(30)
        );
        text(&o.stdout)
    }

    fn kubectl(&self, args: &[&str]) -> String {
        self.ok("/usr/bin/kubectl", args)
    }

    fn apply(&self, yaml: &str) {
        let mut child = self
            .command("/usr/bin/kubectl")
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(yaml.as_bytes()).unwrap();
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "apply: {}", text(&o.stderr));
    }

    /// A long-running command whose first stdout line is awaited until it
    /// contains `ready`.
    fn spawn_until(&self, program: &str, args: &[&str], ready: &str) -> Killed {
        let mut child = self
            .command(program)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let killed = Killed(child);
        assert!(line.contains(ready), "{program} {args:?}: {line}");
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        killed
    }

    fn curl(&self, url: &str) -> String {
        self.ok("curl", &["-sf", "--max-time", "20", url])
    }
}

/// A child process killed and reaped on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn free_port() -> u16 {
    // Ports in the server's namespace are its own; any high port will do,
    // but keep them apart per run.
    20000 + (std::process::id() % 20000) as u16
}

#[test]
fn kubectl_verbs_work_against_a_real_node() {
    if !require_e2e("kubectl_verbs_work_against_a_real_node") {
        return;
    }
    privilege::require_tools("e2e_verbs", &[("curl", "curl"), ("kubectl", "kubectl")]);
    let one = OneNode::start(&[], "rk3s=info");
    let env = Env {
        one: &one,
        home: tempfile::tempdir().unwrap(),
    };

    // wait --for=condition on a node, then on a pod; --for=jsonpath.
    env.kubectl(&["wait", "--for=condition=Ready", "node/server", "--timeout=120s"]);
    env.apply(WEB_POD);
    env.kubectl(&["wait", "--for=condition=Ready", "pod/web", "--timeout=180s"]);
    let out = env.kubectl(&[
        "wait",
        "--for=jsonpath={.status.phase}=Running",
        "pod/web",
        "--timeout=60s",
    ]);
    assert!(out.contains("pod/web condition met"), "{out}");

    // kubectl proxy: the pod's page and the node's kubelet API.
    let port = free_port();
    let proxy = env.spawn_until(
        "/usr/bin/kubectl",
        &["proxy", &format!("--port={port}")],
        "Starting to serve",
    );
    let base = format!("http://127.0.0.1:{port}/api/v1");
    let page = one.wait_for("the pod's page through kubectl proxy", 30, || {
        let o = env.run("curl", &["-sf", "--max-time", "10", &format!("{base}/namespaces/default/pods/web/proxy/")]);
        o.status.success().then(|| text(&o.stdout))
    });
    assert_eq!(page, "hello from the pod\n");
    assert_eq!(env.curl(&format!("{base}/nodes/server/proxy/healthz")), "ok");
    // Another port of the node (here the API server's, over TLS): the
    // node's InternalIP, dialed by its own agent through the tunnel.
    let o = env.run("curl", &["-s", "--max-time", "20", &format!("{base}/nodes/https:server:6443/proxy/version")]);
    let version = text(&o.stdout);
    assert!(version.contains("\"gitVersion\""), "nodes/https:server:6443/proxy: {version}\n{}", one.server.log_tail(20));
    drop(proxy);

    // cp both ways, exec, logs and port-forward with three kubectls.
    let dir = tempfile::tempdir().unwrap();
    let upload: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let local = dir.path().join("up.bin");
    std::fs::write(&local, &upload).unwrap();
    for (i, kubectl) in KUBECTLS.iter().enumerate() {
        let remote = format!("web:/tmp/up{i}.bin");
        env.ok(kubectl, &["cp", local.to_str().unwrap(), &remote]);
        let back = dir.path().join(format!("back{i}.bin"));
        env.ok(kubectl, &["cp", &remote, back.to_str().unwrap()]);
        assert_eq!(std::fs::read(&back).unwrap(), upload, "{kubectl}: cp round trip");
        let page = dir.path().join(format!("index{i}.html"));
        env.ok(kubectl, &["cp", "web:/srv/index.html", page.to_str().unwrap()]);
        assert_eq!(std::fs::read_to_string(&page).unwrap(), "hello from the pod\n", "{kubectl}");
        assert_eq!(
            env.ok(kubectl, &["exec", "web", "--", "sh", "-c", "echo out; echo err >&2"]),
            "out\n",
            "{kubectl}: exec"
        );
        let o = env.run(kubectl, &["exec", "web", "--", "sh", "-c", "exit 7"]);
        assert_eq!(o.status.code(), Some(7), "{kubectl}: exit code");
        assert_eq!(env.ok(kubectl, &["logs", "web"]), "started\n", "{kubectl}: logs");
        let local_port = port + 1 + i as u16;
        let forward = env.spawn_until(
            kubectl,
            &["port-forward", "pod/web", &format!("{local_port}:8080")],
            "Forwarding from",
        );
        assert_eq!(
            env.curl(&format!("http://127.0.0.1:{local_port}/index.html")),
            "hello from the pod\n",
            "{kubectl}: port-forward"
        );
        drop(forward);
    }

    // kubectl events lists the pod's events.
    let events = env.kubectl(&["events", "--for", "pod/web"]);
    assert!(events.contains("Pod/web"), "{events}");

    // auth reconcile creates, then completes, RBAC objects.
    let rbac = |verbs: &str| {
        let file = dir.path().join("rbac.yaml");
        std::fs::write(
            &file,
            format!(
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: verbs-reader\nrules:\n- apiGroups: [\"\"]\n  resources: [pods]\n  verbs: [{verbs}]\n---\n\
                 apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: verbs-reader\n  namespace: default\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: verbs-reader\nsubjects:\n- apiGroup: rbac.authorization.k8s.io\n  kind: User\n  name: alice\n"
            ),
        )
        .unwrap();
        env.kubectl(&["auth", "reconcile", "-f", file.to_str().unwrap()])
    };
    let out = rbac("get");
    assert!(out.contains("clusterrole.rbac.authorization.k8s.io/verbs-reader reconciled"), "{out}");
    assert!(out.contains("rolebinding.rbac.authorization.k8s.io/verbs-reader reconciled"), "{out}");
    let can = |verb: &str| text(&env.run("/usr/bin/kubectl", &["auth", "can-i", verb, "pods", "--as=alice"]).stdout);
    assert_eq!(can("get").trim(), "yes");
    assert_eq!(can("list").trim(), "no");
    rbac("get, list");
    one.wait_for("the reconciled rule", 10, || (can("list").trim() == "yes").then_some(()));

    // debug node/…: a pod in the host's PID and network namespaces with
    // the host's root at /host.
    let out = env.kubectl(&[
        "debug",
        "node/server",
        &format!("--image={IMAGE}"),
        "--",
        "sleep",
        "3600",
    ]);
    let debugger = out
        .split_whitespace()
        .find(|w| w.starts_with("node-debugger-server-"))
        .unwrap_or_else(|| panic!("no debugging pod in {out:?}"))
        .to_string();
    env.kubectl(&["wait", "--for=condition=Ready", &format!("pod/{debugger}"), "--timeout=120s"]);
    let in_debugger = |cmd: &str| env.kubectl(&["exec", &debugger, "--", "sh", "-c", cmd]);
    let host_pid_ns = std::fs::read_link("/proc/self/ns/pid").unwrap();
    assert_eq!(
        in_debugger("readlink /proc/self/ns/pid").trim(),
        host_pid_ns.to_str().unwrap(),
        "debug node: host PID namespace"
    );
    let server_net_ns = std::fs::read_link(format!("/proc/{}/ns/net", one.pid())).unwrap();
    assert_eq!(
        in_debugger("readlink /proc/self/ns/net").trim(),
        server_net_ns.to_str().unwrap(),
        "debug node: host network namespace"
    );
    let marker = dir.path().join("host-marker");
    std::fs::write(&marker, "on the host\n").unwrap();
    assert_eq!(
        in_debugger(&format!("cat /host{}", marker.display())),
        "on the host\n",
        "debug node: the host's root at /host"
    );

    python_client(&env);
    javascript_client(&env);

    // wait --for=delete.
    env.kubectl(&["delete", "pod", "web", &debugger, "--wait=false"]);
    let out = env.kubectl(&["wait", "--for=delete", "pod/web", &format!("pod/{debugger}"), "--timeout=120s"]);
    assert!(out.contains("pod/web condition met"), "{out}");
}

/// The Kubernetes Python client (Debian's python3-kubernetes, which speaks
/// `v4.channel.k8s.io`): exec with a terminal (stdin+tty, tty without
/// stdin), stdin echo ended by closing the websocket, stdin with only
/// stdout or only stderr,
/// `utils.create_from_yaml` with kube's AlreadyExists body byte for byte,
/// and a metadata-only list and watch. The non-tty stdout/stderr combinations and
/// port-forward are `e2e_agent_netns`'s.
fn python_client(env: &Env<'_>) {
    let script = format!(
        r#"import json, tempfile
from kubernetes import config, client, utils
from kubernetes.stream import stream
{}
config.load_kube_config(config_file='{}')
api = client.CoreV1Api()
results = {{}}
results['tty no stdin'] = stream(api.connect_get_namespaced_pod_exec, 'web', 'default',
    command=['sh', '-c', 'test -t 1 && echo tty'], stderr=True, stdin=False, stdout=True, tty=True)
ws = stream(api.connect_get_namespaced_pod_exec, 'web', 'default', command=['sh'],
    stderr=True, stdin=True, stdout=True, tty=True, _preload_content=False)
ws.write_stdin('echo $((6*7))\n')
seen = ''
for _ in range(100):
    ws.update(timeout=0.2)
    seen += ws.read_stdout() or ''
    if '42' in seen.replace('6*7', ''):
        break
ws.write_stdin('exit 3\n')
for _ in range(100):
    ws.update(timeout=0.2)
    if not ws.is_open():
        break
results['tty stdin'] = '42' in seen.replace('6*7', '')
results['tty exit'] = ws.returncode
ws.close()
results['stdin echo'] = cat_echo(api, 'echo me\n')
# stdin with only one of stdout and stderr.
for out, err in ((True, False), (False, True)):
    ws = stream(api.connect_get_namespaced_pod_exec, 'web', 'default',
        command=['sh', '-c', 'read l; echo o$l; echo e$l >&2'],
        stderr=err, stdin=True, stdout=out, tty=False, _preload_content=False)
    ws.write_stdin('x\n')
    ws.run_forever(timeout=20)
    results['stdin out=%s err=%s' % (out, err)] = [ws.read_stdout() if out else None, ws.read_stderr() if err else None]
with tempfile.NamedTemporaryFile('w', suffix='.yaml', delete=False) as f:
    f.write('apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-python\ndata:\n  k: v\n')
utils.create_from_yaml(client.ApiClient(), f.name, namespace='default')
results['created'] = api.read_namespaced_config_map('from-python', 'default').data
try:
    utils.create_from_yaml(client.ApiClient(), f.name, namespace='default')
    results['again'] = 'created twice'
except utils.FailToCreateError as e:
    results['again'] = [x.body if isinstance(x.body, str) else x.body.decode() for x in e.api_exceptions]
# Metadata-only list and watch: the client has no metadata API, so raw
# calls with client-go's Accept headers.
ac = client.ApiClient()
def raw(accept, query):
    r = ac.call_api('/api/v1/namespaces/default/pods', 'GET', query_params=query,
        header_params={{'Accept': accept}}, auth_settings=['BearerToken'],
        _preload_content=False, _return_http_data_only=True)
    return r.data.decode()
meta = json.loads(raw('application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1', []))
results['metadata list'] = [meta['kind'], meta['apiVersion'],
    'web' in [i['metadata']['name'] for i in meta['items']], any('spec' in i for i in meta['items'])]
events = [json.loads(l) for l in raw('application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1',
    [('watch', 'true'), ('timeoutSeconds', '1'), ('fieldSelector', 'metadata.name=web')]).splitlines() if l]
results['metadata watch'] = [[e['type'], e['object']['kind'], e['object']['metadata']['name'], 'spec' in e['object']] for e in events]
print(json.dumps(results, sort_keys=True))
"#,
        common::pyclient::CAT_ECHO,
        env.one.kubeconfig.display()
    );
    let o = env.run("/usr/bin/python3", &["-c", &script]);
    let got: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("python client: {e}: {} {}", text(&o.stdout), text(&o.stderr)));
    assert_eq!(
        got,
        serde_json::json!({
            "tty no stdin": "tty\r\n",
            "tty stdin": true,
            "tty exit": 3,
            "stdin echo": "echo me\n",
            "stdin out=True err=False": ["ox\n", null],
            "stdin out=False err=True": [null, "ex\n"],
            "created": {"k": "v"},
            "again": [already_exists("from-python")],
            "metadata list": ["PartialObjectMetadataList", "meta.k8s.io/v1", true, false],
            "metadata watch": [["ADDED", "PartialObjectMetadata", "web", false]],
        }),
        "the Python client"
    );
}

/// kube-apiserver's body for a create of ConfigMap `name` that exists,
/// byte for byte (`apimachinery/pkg/api/errors.NewAlreadyExists`, then the
/// JSON serializer's newline).
fn already_exists(name: &str) -> String {
    format!(
        "{{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{{}},\"status\":\"Failure\",\"message\":\"configmaps \\\"{name}\\\" already exists\",\"reason\":\"AlreadyExists\",\"details\":{{\"name\":\"{name}\",\"kind\":\"configmaps\"}},\"code\":409}}\n"
    )
}

/// The release of `@kubernetes/client-node` the test installs: the 1.x
/// line runs on Debian's Node 20 (2.x needs Node 22).
const CLIENT_NODE: &str = "@kubernetes/client-node@1.4.0";

/// Installs [`CLIENT_NODE`] with npm once per machine (a cache dir beside
/// the other test caches), or says why it could not.
fn client_node_dir() -> Result<std::path::PathBuf, String> {
    let dir = std::path::PathBuf::from("/var/cache/rk3s-test-npm/client-node-1.4.0");
    if dir.join("node_modules/@kubernetes/client-node/package.json").exists() {
        return Ok(dir);
    }
    let staging = std::path::PathBuf::from(format!("{}.{}", dir.display(), std::process::id()));
    std::fs::create_dir_all(&staging).map_err(|e| e.to_string())?;
    let o = privilege::output_within(
        Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&staging)
            .arg(CLIENT_NODE),
        Duration::from_secs(300),
    )
    .map_err(|e| format!("npm install {CLIENT_NODE}: {e}"))?;
    if !o.status.success() {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(format!("npm install {CLIENT_NODE} failed: {}", text(&o.stderr)));
    }
    // Another run may have won the race; either copy is complete.
    if std::fs::rename(&staging, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    Ok(dir)
}

/// The JavaScript client: exec with each stdout/stderr/tty combination
/// (kube drops stderr under a tty), stdin echo ended by closing stdin
/// (v5's close frame), a non-zero exit, port-forward through its own
/// websocket framing, create-from-YAML with kube's AlreadyExists body (byte
/// for byte) on a second create, and a metadata-only list and watch.
fn javascript_client(env: &Env<'_>) {
    let dir = match client_node_dir() {
        Ok(d) => d,
        Err(e) => {
            // npm needs the registry; a machine without it cannot run this part.
            eprintln!("SKIPPED the JavaScript client: {e}");
            return;
        }
    };
    let script = dir.join(format!("rk3s-e2e-{}.mjs", std::process::id()));
    std::fs::write(&script, JS_CLIENT).unwrap();
    let o = env.run(
        "/usr/bin/node",
        &[script.to_str().unwrap(), env.one.kubeconfig.to_str().unwrap()],
    );
    let _ = std::fs::remove_file(&script);
    let got: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("javascript client: {e}: {} {}", text(&o.stdout), text(&o.stderr)));
    assert_eq!(
        got,
        serde_json::json!({
            "out+err": {"out": "a\n", "err": "b\n", "status": "Success"},
            "out only": {"out": "a\n", "err": null, "status": "Success"},
            "err only": {"out": null, "err": "b\n", "status": "Success"},
            "tty": {"out": "a\r\nb\r\n", "err": "", "status": "Success"},
            "exit 3": {"out": "", "err": "", "status": "Failure"},
            "stdin echo and close": {"out": "ping\n", "err": "", "status": "Success"},
            "port-forward": "hello from the pod\n",
            "created": {"k": "v"},
            "again": {"code": 409, "body": already_exists("from-js")},
            "metadata list": ["PartialObjectMetadataList", "meta.k8s.io/v1", true, false],
            "metadata watch": [["ADDED", "PartialObjectMetadata", "web", false]],
        }),
        "the JavaScript client"
    );
}

const JS_CLIENT: &str = r#"
import * as k8s from '@kubernetes/client-node';
import { PassThrough, Writable } from 'node:stream';
import net from 'node:net';
import https from 'node:https';
const kc = new k8s.KubeConfig();
kc.loadFromFile(process.argv[2]);
const exec = new k8s.Exec(kc);
const sink = () => {
  let s = '';
  const w = new Writable({ write(c, _e, cb) { s += c.toString(); cb(); } });
  w.text = () => s;
  return w;
};
const run = (cmd, { stdout = true, stderr = true, stdin = null, tty = false } = {}) =>
  new Promise((resolve, reject) => {
    const out = stdout ? sink() : null;
    const err = stderr ? sink() : null;
    const timer = setTimeout(() => reject(new Error('exec timed out: ' + cmd)), 30000);
    exec.exec('default', 'web', 'app', cmd, out, err, stdin, tty, (status) => {
      clearTimeout(timer);
      // Let the last frames land before reading.
      setTimeout(() => resolve({ out: out ? out.text() : null, err: err ? err.text() : null, status: status.status }), 200);
    }).catch(reject);
  });
const results = {};
const ab = ['sh', '-c', 'echo a; sleep 0.2; echo b >&2'];
results['out+err'] = await run(ab);
results['out only'] = await run(ab, { stderr: false });
results['err only'] = await run(ab, { stdout: false });
results['tty'] = await run(ab, { tty: true });
results['exit 3'] = await run(['sh', '-c', 'exit 3']);
const stdin = new PassThrough();
const echo = run(['cat'], { stdin });
stdin.write('ping\n');
setTimeout(() => stdin.end(), 500);
results['stdin echo and close'] = await echo;
const pf = new k8s.PortForward(kc);
const server = net.createServer((socket) => {
  pf.portForward('default', 'web', [8080], socket, null, socket).catch(() => socket.destroy());
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
results['port-forward'] = await new Promise((resolve, reject) => {
  const c = net.connect(server.address().port, '127.0.0.1', () => c.write('GET /index.html HTTP/1.0\r\n\r\n'));
  let got = '';
  // The client leaves its local socket open when the pod closes (it does
  // not end it on the websocket's close), so the whole answer is awaited.
  const body = () => got.split('\r\n\r\n').slice(1).join('\r\n\r\n');
  c.on('data', (d) => { got += d.toString(); if (body().endsWith('\n')) { resolve(body()); c.destroy(); } });
  c.on('end', () => resolve(body()));
  c.on('error', reject);
  setTimeout(() => reject(new Error('port-forward timed out; got ' + JSON.stringify(got))), 30000);
});
server.close();
const objects = k8s.KubernetesObjectApi.makeApiClient(kc);
const [cm] = k8s.loadAllYaml('apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-js\n  namespace: default\ndata:\n  k: v\n');
await objects.create(cm);
results['created'] = (await objects.read({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'from-js', namespace: 'default' } })).data;
try {
  await objects.create(cm);
  results['again'] = 'created twice';
} catch (e) {
  // The raw body, compared byte for byte.
  results['again'] = { code: e.code, body: e.body };
}
// Metadata-only list and watch: raw requests with client-go's Accept
// headers (the client has no metadata API).
const raw = async (accept, query) => {
  const opts = { method: 'GET', headers: { Accept: accept } };
  await kc.applyToHTTPSOptions(opts);
  const url = new URL(kc.getCurrentCluster().server + '/api/v1/namespaces/default/pods' + query);
  return new Promise((resolve, reject) => {
    const req = https.request(url, opts, (res) => {
      let s = '';
      res.on('data', (d) => { s += d; });
      res.on('end', () => resolve(s));
    });
    req.on('error', reject);
    req.end();
  });
};
const meta = JSON.parse(await raw('application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1', ''));
results['metadata list'] = [meta.kind, meta.apiVersion, meta.items.some((i) => i.metadata.name === 'web'), meta.items.some((i) => 'spec' in i)];
const events = (await raw('application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1', '?watch=true&timeoutSeconds=1&fieldSelector=metadata.name%3Dweb'))
  .split('\n').filter((l) => l).map((l) => JSON.parse(l));
results['metadata watch'] = events.map((e) => [e.type, e.object.kind, e.object.metadata.name, 'spec' in e.object]);
const sorted = Object.fromEntries(Object.entries(results).sort());
console.log(JSON.stringify(sorted));
process.exit(0);
"#;

/// `kubectl certificate approve|deny` with the CSR API and the signers
/// kube-controller-manager runs, on `rk3s server` (no agent needed).
#[test]
fn certificate_requests_are_approved_denied_and_signed() {
    if !require_e2e("certificate_requests_are_approved_denied_and_signed") {
        return;
    }
    privilege::require_tools("e2e_verbs", &[("openssl", "openssl"), ("kubectl", "kubectl")]);
    let one = OneNode::start(&["--disable-agent"], "rk3s=info");
    let env = Env {
        one: &one,
        home: tempfile::tempdir().unwrap(),
    };
    let dir = tempfile::tempdir().unwrap();
    // A key and a CSR per subject, as a user makes them with openssl.
    let request = |name: &str, subject: &str| -> String {
        let key = dir.path().join(format!("{name}.key"));
        let csr = dir.path().join(format!("{name}.csr"));
        let o = Command::new("openssl")
            .args(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", subject, "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&csr)
            .output()
            .unwrap();
        assert!(o.status.success(), "openssl: {}", text(&o.stderr));
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(&csr).unwrap())
    };
    let csr_yaml = |name: &str, signer: &str, usages: &str, request: &str| {
        format!(
            "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: {name}\nspec:\n  request: {request}\n  signerName: {signer}\n  expirationSeconds: 3600\n  usages: [{usages}]\n"
        )
    };
    let client = "kubernetes.io/kube-apiserver-client";
    env.apply(&csr_yaml("alice", client, "digital signature, client auth", &request("alice", "/CN=alice/O=devs")));
    env.apply(&csr_yaml("bob", client, "digital signature, client auth", &request("bob", "/CN=bob")));
    env.apply(&csr_yaml(
        "not-a-node",
        "kubernetes.io/kubelet-serving",
        "digital signature, server auth",
        &request("nan", "/CN=alice"),
    ));
    let field = |name: &str, path: &str| {
        env.kubectl(&["get", "csr", name, "-o", &format!("jsonpath={path}")])
    };
    assert!(env.kubectl(&["get", "csr", "alice"]).contains("Pending"));

    // Approval needs `approve` on the signer, as kube's admission asks.
    env.apply(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: csr-updater\nrules:\n- apiGroups: [certificates.k8s.io]\n  resources: [certificatesigningrequests, certificatesigningrequests/approval]\n  verbs: [get, list, update]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: csr-updater\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: csr-updater\nsubjects:\n- apiGroup: rbac.authorization.k8s.io\n  kind: User\n  name: mallory\n",
    );
    let o = env.run("/usr/bin/kubectl", &["--as=mallory", "certificate", "approve", "alice"]);
    assert!(
        text(&o.stderr).contains("user not permitted to approve requests with signerName \"kubernetes.io/kube-apiserver-client\""),
        "{}",
        text(&o.stderr)
    );

    let out = env.kubectl(&["certificate", "approve", "alice", "not-a-node"]);
    assert!(out.contains("certificatesigningrequest.certificates.k8s.io/alice approved"), "{out}");
    let out = env.kubectl(&["certificate", "deny", "bob"]);
    assert!(out.contains("certificatesigningrequest.certificates.k8s.io/bob denied"), "{out}");
    let cert = one.wait_for("alice's certificate", 60, || {
        let c = field("alice", "{.status.certificate}");
        (!c.is_empty()).then_some(c)
    });
    // The issued certificate works: alice is alice, in group devs.
    use base64::Engine;
    let cert_pem = base64::engine::general_purpose::STANDARD.decode(cert.trim()).unwrap();
    let cert_path = dir.path().join("alice.crt");
    std::fs::write(&cert_path, &cert_pem).unwrap();
    let kubeconfig = dir.path().join("alice.kubeconfig");
    std::fs::copy(&one.kubeconfig, &kubeconfig).unwrap();
    let set = |args: &[&str]| {
        let o = Command::new("/usr/bin/kubectl")
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {}", text(&o.stderr));
    };
    set(&[
        "config",
        "set-credentials",
        "alice",
        &format!("--client-certificate={}", cert_path.display()),
        &format!("--client-key={}", dir.path().join("alice.key").display()),
        "--embed-certs=true",
    ]);
    set(&["config", "set-context", "--current", "--user=alice"]);
    let whoami = text(
        &privilege::output_within(
            one.node
                .command("/usr/bin/kubectl")
                .arg(format!("--kubeconfig={}", kubeconfig.display()))
                .args(["auth", "whoami", "-o", "jsonpath={.status.userInfo.username} {.status.userInfo.groups}"])
                .env("HOME", env.home.path()),
            Duration::from_secs(60),
        )
        .unwrap()
        .stdout,
    );
    assert!(whoami.starts_with("alice "), "{whoami}");
    assert!(whoami.contains("devs"), "{whoami}");

    // The kubelet-serving signer refuses a subject that is not a node's.
    let reason = one.wait_for("the Failed condition", 60, || {
        let r = field("not-a-node", "{.status.conditions[?(@.type==\"Failed\")].reason}");
        (!r.is_empty()).then_some(r)
    });
    assert_eq!(reason, "SignerValidationFailure");
    assert_eq!(
        field("not-a-node", "{.status.conditions[?(@.type==\"Failed\")].message}"),
        "organization is not [\"system:nodes\"]"
    );
    assert_eq!(field("bob", "{.status.conditions[0].type}"), "Denied");
    assert_eq!(field("bob", "{.status.certificate}"), "");
    // Approving a denied request is refused as kube refuses it.
    // (kubectl itself refuses, so the approval is PUT as a client would.)
    let mut bob: serde_json::Value =
        serde_json::from_str(&env.kubectl(&["get", "csr", "bob", "-o", "json"])).unwrap();
    bob["status"]["conditions"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"type": "Approved", "status": "True", "reason": "Test", "message": "x"}));
    let bob_file = dir.path().join("bob.json");
    std::fs::write(&bob_file, bob.to_string()).unwrap();
    let o = env.run(
        "/usr/bin/kubectl",
        &[
            "replace",
            "--raw",
            "/apis/certificates.k8s.io/v1/certificatesigningrequests/bob/approval",
            "-f",
            bob_file.to_str().unwrap(),
        ],
    );
    assert!(
        text(&o.stderr).contains("Approved and Denied conditions are mutually exclusive"),
        "{}",
        text(&o.stderr)
    );

    // kubernetes.io/legacy-unknown is refused through v1.
    let mut child = env
        .command("/usr/bin/kubectl")
        .args(["create", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(csr_yaml("legacy", "kubernetes.io/legacy-unknown", "client auth", &request("legacy", "/CN=x")).as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        text(&o.stderr).contains(
            "spec.signerName: Invalid value: \"kubernetes.io/legacy-unknown\": the legacy signerName is not allowed via this API version"
        ),
        "{}",
        text(&o.stderr)
    );
}
