//! kube-rs (the `kube` crate with its `ws` feature, a dev-dependency only)
//! as a client of the real `rk3s server` with its built-in agent on a
//! private containerd (`common::onenode`), through kube-rs's own default
//! protocols (`v5.channel.k8s.io` for exec/attach, `v4.channel.k8s.io` for
//! port-forward, both over websockets):
//!
//! - `Api::<Pod>::exec` with every valid stdin/stdout/stderr/tty
//!   combination (tty with stderr is refused by kube-rs itself; so is none
//!   of the three), running `sh -c 'echo a; echo b >&2'`: each stream gets
//!   exactly what was asked for (a tty merges stderr into stdout, CRLF) and
//!   the status is Success;
//! - a non-zero exit reaches `take_status` as `NonZeroExitCode` with the
//!   `ExitCode` cause;
//! - stdin echo through `cat`, then closing stdin (v5's close frame) ends
//!   `cat` with Success;
//! - `Api::<Pod>::attach` to a container with `stdin: true` running `cat`
//!   (echo) and to one with `tty: true` running `sh` (a command typed on the
//!   terminal runs);
//! - `Api::<Pod>::portforward` to busybox httpd in the pod: the page comes
//!   back over the forwarded stream.
//!
//! The other clients issue 19 asks for (kubectl, Python, JavaScript) are
//! in e2e_verbs.rs, e2e_debug.rs and e2e_agent_netns.rs.
//!
//! Root-only: skips without root unless `RK3S_E2E=1`.

mod common;

use std::time::Duration;

use common::onenode::OneNode;
use common::privilege::require_e2e;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::{Api, AttachParams, AttachedProcess};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: kubers
spec:
  containers:
  - name: web
    image: docker.io/rk3s/busybox:test
    command:
    - sh
    - -c
    - |
      mkdir -p /srv
      echo hello from kube-rs port-forward > /srv/index.html
      exec httpd -f -p 8080 -h /srv
  - name: echo
    image: docker.io/rk3s/busybox:test
    stdin: true
    command: ["cat"]
  - name: term
    image: docker.io/rk3s/busybox:test
    stdin: true
    tty: true
    command: ["sh"]
"#;

/// Every bound on a stream read: a hung stream fails the test instead of
/// hanging it.
const STEP: Duration = Duration::from_secs(30);

#[test]
fn kube_rs_exec_attach_and_port_forward_work_against_a_real_node() {
    if !require_e2e("e2e_kube_rs") {
        return;
    }
    let one = OneNode::start(&[], "info,rk3s=debug");
    one.wait_node_ready();
    apply(&one, POD);
    one.kubectl_ok(&["wait", "--for=condition=Ready", "pod/kubers", "--timeout=120s"]);
    one.with_kube_client(|client| async move {
        let pods: Api<Pod> = Api::namespaced(client, "default");
        exec_every_combination(&pods).await;
        exec_exit_code(&pods).await;
        exec_stdin_echo_and_close(&pods).await;
        attach_echo(&pods).await;
        attach_tty(&pods).await;
        port_forward(&pods).await;
    });
}

fn apply(one: &OneNode, yaml: &str) {
    let file = one.dir.path().join("pod.yaml");
    std::fs::write(&file, yaml).unwrap();
    one.kubectl_ok(&["apply", "-f", file.to_str().unwrap()]);
}

fn params(container: &str, stdin: bool, stdout: bool, stderr: bool, tty: bool) -> AttachParams {
    AttachParams::default()
        .container(container)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr)
        .tty(tty)
}

/// Reads a stream to its end, bounded.
async fn read_all(r: Option<impl tokio::io::AsyncRead + Unpin>, what: &str) -> Option<String> {
    let mut r = r?;
    let mut buf = Vec::new();
    tokio::time::timeout(STEP, r.read_to_end(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("{what}: the stream did not end within {STEP:?}"))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    Some(String::from_utf8_lossy(&buf).into_owned())
}

async fn status(p: &mut AttachedProcess, what: &str) -> Status {
    let fut = p
        .take_status()
        .unwrap_or_else(|| panic!("{what}: no status channel"));
    tokio::time::timeout(STEP, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: no status within {STEP:?}"))
        .unwrap_or_else(|| panic!("{what}: the status channel closed without a Status"))
}

/// Reads stdout until it contains `want`, bounded; returns what was read.
async fn read_until(r: &mut (impl tokio::io::AsyncRead + Unpin), want: &str, what: &str) -> String {
    let mut got = Vec::new();
    let found = tokio::time::timeout(STEP, async {
        let mut buf = [0u8; 1024];
        loop {
            let n = r.read(&mut buf).await.unwrap_or_else(|e| panic!("{what}: {e}"));
            if n == 0 {
                return false;
            }
            got.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&got).contains(want) {
                return true;
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(
        matches!(found, Ok(true)),
        "{what}: {want:?} never arrived (ended or timed out); got {text:?}"
    );
    text
}

async fn exec_every_combination(pods: &Api<Pod>) {
    let mut ran = 0;
    for bits in 0u8..16 {
        let (stdin, stdout, stderr, tty) = (bits & 1 != 0, bits & 2 != 0, bits & 4 != 0, bits & 8 != 0);
        if !(stdin || stdout || stderr) || (tty && stderr) {
            continue; // refused by kube-rs before any request (and by the API)
        }
        let what = format!("exec stdin={stdin} stdout={stdout} stderr={stderr} tty={tty}");
        let mut p = pods
            .exec(
                "kubers",
                ["sh", "-c", "echo a; echo b >&2"],
                &params("web", stdin, stdout, stderr, tty),
            )
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        // stdin stays open (unwritten) until the command has ended: its exit
        // alone must end the session.
        let input = p.stdin();
        assert_eq!(input.is_some(), stdin, "{what}: stdin writer");
        let (out, err) = tokio::join!(read_all(p.stdout(), &what), read_all(p.stderr(), &what));
        let st = status(&mut p, &what).await;
        drop(input);
        assert_eq!(st.status.as_deref(), Some("Success"), "{what}: {st:?}");
        match (stdout, tty) {
            (false, _) => assert!(out.is_none(), "{what}: a stdout reader"),
            // A terminal merges stderr into stdout and writes CRLF.
            (true, true) => {
                let out = out.unwrap();
                assert!(out.contains("a\r\n") && out.contains("b\r\n"), "{what}: stdout {out:?}");
            }
            (true, false) => assert_eq!(out.as_deref(), Some("a\n"), "{what}: stdout"),
        }
        if stderr {
            assert_eq!(err.as_deref(), Some("b\n"), "{what}: stderr");
        } else {
            assert!(err.is_none(), "{what}: a stderr reader");
        }
        p.join().await.unwrap_or_else(|e| panic!("{what}: join: {e}"));
        ran += 1;
    }
    assert_eq!(ran, 10, "valid combinations run");
}

async fn exec_exit_code(pods: &Api<Pod>) {
    let mut p = pods
        .exec("kubers", ["sh", "-c", "exit 3"], &params("web", false, true, true, false))
        .await
        .unwrap();
    let st = status(&mut p, "exec exit 3").await;
    assert_eq!(st.status.as_deref(), Some("Failure"), "{st:?}");
    assert_eq!(st.reason.as_deref(), Some("NonZeroExitCode"), "{st:?}");
    let causes = st.details.and_then(|d| d.causes).unwrap_or_default();
    assert!(
        causes
            .iter()
            .any(|c| c.reason.as_deref() == Some("ExitCode") && c.message.as_deref() == Some("3")),
        "exit code cause: {causes:?}"
    );
}

async fn exec_stdin_echo_and_close(pods: &Api<Pod>) {
    let what = "exec cat";
    let mut p = pods
        .exec("kubers", ["cat"], &params("web", true, true, true, false))
        .await
        .unwrap();
    let mut input = p.stdin().unwrap();
    let mut out = p.stdout().unwrap();
    input.write_all(b"ping from kube-rs\n").await.unwrap();
    input.flush().await.unwrap();
    read_until(&mut out, "ping from kube-rs\n", what).await;
    input.write_all(b"second line\n").await.unwrap();
    input.flush().await.unwrap();
    read_until(&mut out, "second line\n", what).await;
    // Closing stdin (kube-rs sends v5's close frame once its pipe is shut
    // down; dropping the writer half alone does not end the pipe) is cat's
    // EOF: it exits 0.
    input.shutdown().await.unwrap();
    drop(input);
    let rest = read_all(Some(out), what).await.unwrap();
    assert_eq!(rest, "", "{what}: output after stdin closed");
    let st = status(&mut p, what).await;
    assert_eq!(st.status.as_deref(), Some("Success"), "{what}: {st:?}");
    p.join().await.unwrap();
}

async fn attach_echo(pods: &Api<Pod>) {
    let what = "attach echo";
    let mut p = pods
        .attach("kubers", &params("echo", true, true, false, false))
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let mut input = p.stdin().unwrap();
    let mut out = p.stdout().unwrap();
    input.write_all(b"hello attach\n").await.unwrap();
    input.flush().await.unwrap();
    read_until(&mut out, "hello attach\n", what).await;
    // The container keeps running (stdinOnce is false): detach.
    p.abort();
}

async fn attach_tty(pods: &Api<Pod>) {
    let what = "attach tty";
    let mut p = pods
        .attach("kubers", &params("term", true, true, false, true))
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let mut input = p.stdin().unwrap();
    let mut out = p.stdout().unwrap();
    // The shell computes it, so the terminal's own echo of the typed line
    // (which shows `$((6*7))`) cannot satisfy the check.
    input.write_all(b"echo tty-$((6*7))\n").await.unwrap();
    input.flush().await.unwrap();
    let got = read_until(&mut out, "tty-42\r\n", what).await;
    assert!(got.contains("tty-42"), "{what}: {got:?}");
    p.abort();
}

async fn port_forward(pods: &Api<Pod>) {
    let mut pf = pods
        .portforward("kubers", &[8080])
        .await
        .unwrap_or_else(|e| panic!("portforward: {e}"));
    let mut s = pf.take_stream(8080).expect("a stream for 8080");
    s.write_all(b"GET /index.html HTTP/1.0\r\nHost: kubers\r\n\r\n")
        .await
        .unwrap();
    // httpd closes the connection after an HTTP/1.0 answer.
    let page = read_all(Some(&mut s), "port-forward").await.unwrap();
    assert!(page.starts_with("HTTP/1.") && page.contains(" 200 "), "{page:?}");
    assert!(page.contains("hello from kube-rs port-forward"), "{page:?}");
    drop(s);
    if let Some(err) = pf.take_error(8080) {
        // Nothing was reported on the port's error channel.
        let e = tokio::time::timeout(Duration::from_secs(2), err).await;
        assert!(!matches!(e, Ok(Some(_))), "port-forward error: {e:?}");
    }
    pf.abort();
}
