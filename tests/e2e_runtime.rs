//! The container runtime seam against a real (private) containerd: exit
//! codes and CRI logs, stop with a grace period, joining a network
//! namespace, command/args/env resolution, OOM kills, re-adoption by labels
//! after reconnecting, and cleanup. Plus a create-to-running benchmark
//! against `ctr run -d`, printed, not asserted.
//!
//! Root-only: each test skips without root unless `RK3S_E2E=1`.
//!
//! The CRI logger that containerd spawns is this test binary itself: a
//! script runs it with `--exact log_shim_entry` and the log path in the
//! environment (rk3s proper wires [`cri_log::run_log_shim`] in `main`).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::containerd::Containerd;
use common::image::{BusyboxImage, DEFAULT_REFERENCE};
use common::netns::Network;
use common::privilege::require_e2e;
use rk3s::agent::runtime::{
    cri_log, labels, ContainerId, ContainerRuntime, ContainerSpec, ContainerState,
    ContainerdRuntime, ExitReason,
};

const SHIM_ENV: &str = "RK3S_TEST_LOG_SHIM_PATH";

/// Not a test: the entry point containerd's shim runs as the CRI logger
/// (see the module docs). Without the variable it has nothing to do.
#[test]
fn log_shim_entry() {
    if let Ok(path) = std::env::var(SHIM_ENV) {
        let args = [cri_log::LOG_SHIM_ARG.to_string(), path];
        if let Err(e) = cri_log::run_log_shim(&args) {
            eprintln!("log shim: {e}");
            std::process::exit(1);
        }
        std::process::exit(0);
    }
}

struct Env {
    containerd: Containerd,
    runtime: ContainerdRuntime,
    shim: PathBuf,
    logs: PathBuf,
}

impl Env {
    /// A containerd with `image` imported by `ctr` (independent of the code
    /// under test).
    async fn start(image: BusyboxImage) -> Self {
        let env = Self::bare().await;
        let tar = image.write(env.containerd.scratch()).expect("build image");
        env.containerd.import(&tar).expect("import image");
        env
    }

    /// A containerd without images.
    async fn bare() -> Self {
        let containerd = Containerd::start().expect("start containerd");
        let shim = containerd.scratch().join("log-shim.sh");
        let exe = std::env::current_exe().expect("test binary path");
        std::fs::write(
            &shim,
            format!(
                "#!/bin/sh\n{SHIM_ENV}=\"$2\" exec {} --exact log_shim_entry --test-threads=1 --nocapture >/dev/null 2>&1\n",
                exe.display()
            ),
        )
        .expect("write shim script");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755))
            .expect("chmod shim");
        let runtime = connect(&containerd, &shim).await;
        let logs = containerd.scratch().join("pods");
        Self {
            containerd,
            runtime,
            shim,
            logs,
        }
    }

    fn spec(&self, pod_uid: &str, name: &str, command: &[&str]) -> ContainerSpec {
        let mut spec = ContainerSpec::new(pod_uid, "pod", "default", name, DEFAULT_REFERENCE);
        spec.command = command.iter().map(|s| s.to_string()).collect();
        spec.log_path = self
            .logs
            .join(format!("default_pod_{pod_uid}/{name}/0.log"));
        spec
    }

    /// Removes every container rk3s created, as a drained node would; the
    /// harness cleans containerd, this also drops the pod cgroups.
    async fn remove_all(&self) {
        for c in self.runtime.list(&BTreeMap::new()).await.expect("list") {
            self.runtime.remove(&c.id).await.expect("remove");
        }
    }

    async fn run_to_exit(&self, spec: &ContainerSpec) -> (ContainerId, i32) {
        let id = self.runtime.create_container(spec).await.expect("create");
        self.runtime.start(&id).await.expect("start");
        let code = tokio::time::timeout(Duration::from_secs(30), self.runtime.wait(&id))
            .await
            .expect("container exits within 30s")
            .expect("wait");
        (id, code)
    }
}

async fn connect(containerd: &Containerd, shim: &Path) -> ContainerdRuntime {
    ContainerdRuntime::connect(containerd.socket(), &containerd.scratch().join("stdio"))
        .await
        .expect("connect")
        .with_log_binary(shim)
}

/// The CRI log lines as (stream, tag, text), once `want` lines are there
/// (the logger may still be writing after the task exits).
fn read_log(path: &Path, want: usize) -> Vec<(String, String, String)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<_> = text
            .lines()
            .map(|l| {
                let mut p = l.splitn(4, ' ');
                let ts = p.next().unwrap_or_default();
                assert!(
                    chrono::DateTime::parse_from_rfc3339(ts).is_ok(),
                    "bad timestamp in CRI line {l:?}"
                );
                (
                    p.next().unwrap_or_default().to_string(),
                    p.next().unwrap_or_default().to_string(),
                    p.next().unwrap_or_default().to_string(),
                )
            })
            .collect();
        if lines.len() >= want || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The CRI logger is a child of containerd's shim, not of this process
/// (the agent): logs keep flowing while the agent is down.
fn assert_logger_outlives_the_agent() {
    let me = std::process::id();
    let loggers: Vec<u32> = std::fs::read_dir("/proc")
        .expect("read /proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid: &u32| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                env.split(|b| *b == 0)
                    .any(|v| v.starts_with(SHIM_ENV.as_bytes()))
            })
        })
        .collect();
    assert!(!loggers.is_empty(), "no CRI logger process found");
    for pid in loggers {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid: u32 = stat[stat.rfind(')').unwrap() + 2..]
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        assert_ne!(ppid, me, "logger {pid} is the agent's child");
        let parent = std::fs::read(format!("/proc/{ppid}/cmdline")).unwrap_or_default();
        assert!(
            String::from_utf8_lossy(&parent).contains("containerd-shim"),
            "logger {pid}'s parent is not a containerd shim: {}",
            String::from_utf8_lossy(&parent)
        );
    }
}

fn log_text(path: &Path, want: usize) -> String {
    read_log(path, want)
        .into_iter()
        .map(|(_, _, t)| t)
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_code_logs_and_cleanup() {
    if !require_e2e("exit_code_logs_and_cleanup") {
        return;
    }
    let env = Env::start(BusyboxImage::new(DEFAULT_REFERENCE)).await;
    let (name, version) = env.runtime.version().await.expect("version");
    assert_eq!(name, "containerd");
    assert!(!version.is_empty());
    let info = env
        .runtime
        .image_exists(DEFAULT_REFERENCE)
        .await
        .expect("lookup")
        .expect("image present");
    assert!(info.id.starts_with("sha256:") && info.chain_id.starts_with("sha256:"));
    assert_eq!(info.config.cmd, ["sh"]);
    assert!(env
        .runtime
        .image_exists("docker.io/rk3s/missing:1")
        .await
        .expect("lookup")
        .is_none());

    let spec = env.spec(
        "uid-exit",
        "hello",
        &["sh", "-c", "echo hello; echo oops >&2; exit 3"],
    );
    let id = env.runtime.create_container(&spec).await.expect("create");
    assert_eq!(
        env.runtime.status(&id).await.expect("status").state,
        ContainerState::Created
    );
    env.runtime.start(&id).await.expect("start");
    assert_eq!(env.runtime.wait(&id).await.expect("wait"), 3);
    let status = env.runtime.status(&id).await.expect("status");
    match status.state {
        ContainerState::Exited {
            code: 3,
            finished_at: Some(_),
            reason: ExitReason::Completed,
        } => {}
        other => panic!("unexpected state {other:?}"),
    }
    assert!(status.started_at.is_some());

    let mut lines = read_log(&spec.log_path, 2);
    lines.sort();
    assert_eq!(
        lines,
        [
            ("stderr".to_string(), "F".to_string(), "oops".to_string()),
            ("stdout".to_string(), "F".to_string(), "hello".to_string()),
        ]
    );

    env.runtime.remove(&id).await.expect("remove");
    env.runtime
        .remove(&id)
        .await
        .expect("second remove is a no-op");
    let snapshots = env
        .containerd
        .ctr_ok(&["snapshots", "--snapshotter", "overlayfs", "ls"])
        .expect("ls");
    assert!(
        !snapshots.contains(&id.0),
        "snapshot left behind: {snapshots}"
    );
    let containers = env
        .containerd
        .ctr_ok(&["containers", "ls", "-q"])
        .expect("ls");
    assert!(
        !containers.contains(&id.0),
        "container left behind: {containers}"
    );
    assert!(
        !Path::new("/sys/fs/cgroup/memory/rk3s/pods/uid-exit").exists(),
        "pod cgroup left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_image_through_the_api() {
    if !require_e2e("import_image_through_the_api") {
        return;
    }
    let env = Env::bare().await;
    let reference = "docker.io/rk3s/imported:1";
    let tar = BusyboxImage::new(reference)
        .cmd(&["echo", "imported"])
        .write(env.containerd.scratch())
        .expect("build image");
    assert!(env
        .runtime
        .image_exists(reference)
        .await
        .expect("lookup")
        .is_none());
    let refs = env.runtime.import_image(&tar.path).await.expect("import");
    assert_eq!(refs, [reference]);
    let info = env
        .runtime
        .image_exists(reference)
        .await
        .expect("lookup")
        .expect("imported");
    assert_eq!(info.id, tar.image_id);
    assert_eq!(
        info.chain_id, tar.layer_digest,
        "one layer: chain id = diff id"
    );
    assert_eq!(info.config.cmd, ["echo", "imported"]);
    // Seen by containerd's own tools as an unpacked image.
    let images = env.containerd.ctr_ok(&["images", "ls", "-q"]).expect("ls");
    assert!(images.lines().any(|l| l == reference), "{images}");
    let snapshots = env
        .containerd
        .ctr_ok(&["snapshots", "--snapshotter", "overlayfs", "ls"])
        .expect("ls");
    assert!(
        snapshots.contains(&tar.layer_digest) && snapshots.contains("Committed"),
        "{snapshots}"
    );
    // Importing again is a no-op that still succeeds.
    assert_eq!(
        env.runtime
            .import_image(&tar.path)
            .await
            .expect("re-import"),
        [reference]
    );

    let mut spec = env.spec("uid-import", "run", &[]);
    spec.image = reference.to_string();
    let (_, code) = env.run_to_exit(&spec).await;
    assert_eq!(code, 0);
    assert_eq!(log_text(&spec.log_path, 1), "imported");
    env.remove_all().await;

    let bogus = env.containerd.scratch().join("bogus.tar");
    std::fs::write(&bogus, b"not a tar").expect("write");
    assert!(env.runtime.import_image(&bogus).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_sends_sigterm_then_sigkill() {
    if !require_e2e("stop_sends_sigterm_then_sigkill") {
        return;
    }
    let env = Env::start(BusyboxImage::new(DEFAULT_REFERENCE)).await;

    // Honours SIGTERM: exits on its own long before the grace period ends.
    let trap = "trap 'echo got term; exit 0' TERM; echo ready; while true; do sleep 0.1; done";
    let spec = env.spec("uid-stop", "polite", &["sh", "-c", trap]);
    let id = env.runtime.create_container(&spec).await.expect("create");
    env.runtime.start(&id).await.expect("start");
    assert_eq!(log_text(&spec.log_path, 1), "ready");
    assert_logger_outlives_the_agent();
    let status = env.runtime.status(&id).await.expect("status");
    assert_eq!(status.state, ContainerState::Running);
    assert!(status.pid.is_some_and(|p| p > 0));
    let t0 = Instant::now();
    env.runtime
        .stop(&id, Duration::from_secs(20))
        .await
        .expect("stop");
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "SIGTERM was not delivered: {:?}",
        t0.elapsed()
    );
    assert!(matches!(
        env.runtime.status(&id).await.unwrap().state,
        ContainerState::Exited { code: 0, .. }
    ));
    assert_eq!(log_text(&spec.log_path, 2), "ready\ngot term");

    // PID 1 without a handler ignores SIGTERM: SIGKILL after the grace.
    let spec = env.spec("uid-stop", "stubborn", &["sleep", "1000"]);
    let id = env.runtime.create_container(&spec).await.expect("create");
    env.runtime.start(&id).await.expect("start");
    let t0 = Instant::now();
    env.runtime
        .stop(&id, Duration::from_secs(1))
        .await
        .expect("stop");
    assert!(t0.elapsed() >= Duration::from_secs(1));
    assert!(matches!(
        env.runtime.status(&id).await.unwrap().state,
        ContainerState::Exited { code: 137, .. }
    ));
    // Stopping again is a no-op.
    env.runtime
        .stop(&id, Duration::from_secs(1))
        .await
        .expect("stop again");
    env.remove_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_the_given_network_namespace() {
    if !require_e2e("joins_the_given_network_namespace") {
        return;
    }
    let network = Network::new("rt").expect("network");
    let node = network.add_node("pod").expect("netns");
    let env = Env::start(BusyboxImage::new(DEFAULT_REFERENCE)).await;
    let mut spec = env.spec("uid-net", "ip", &["ip", "-o", "addr"]);
    spec.netns_path = Some(PathBuf::from(format!("/var/run/netns/{}", node.netns())));
    let (id, code) = env.run_to_exit(&spec).await;
    assert_eq!(code, 0);
    let text = log_text(&spec.log_path, 3);
    assert!(
        text.contains(&format!("inet {}/24", node.ip())),
        "node address missing:\n{text}"
    );
    assert!(text.contains("lo"), "loopback missing:\n{text}");
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert!(
        names.iter().all(|n| *n == "lo" || n.starts_with("eth0")),
        "foreign interfaces: {names:?}"
    );
    env.runtime.remove(&id).await.expect("remove");
    drop(env);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_args_and_env_resolve_against_the_image() {
    if !require_e2e("command_args_and_env_resolve_against_the_image") {
        return;
    }
    let image = BusyboxImage::new(DEFAULT_REFERENCE)
        .entrypoint(&["echo", "ep"])
        .cmd(&["imgcmd"])
        .env("FROM_IMAGE", "1")
        .env("OVERRIDE", "image")
        .working_dir("/tmp");
    let env = Env::start(image).await;

    let image_only = env.spec("uid-cmd", "image-only", &[]);
    let (_, code) = env.run_to_exit(&image_only).await;
    assert_eq!(code, 0);
    assert_eq!(log_text(&image_only.log_path, 1), "ep imgcmd");

    let mut args_only = env.spec("uid-cmd", "args-only", &[]);
    args_only.args = vec!["a1".into(), "a2".into()];
    env.run_to_exit(&args_only).await;
    assert_eq!(log_text(&args_only.log_path, 1), "ep a1 a2");

    let mut command = env.spec(
        "uid-cmd",
        "command",
        &[
            "sh",
            "-c",
            "echo $FROM_IMAGE $OVERRIDE $NEW $(pwd) $(id -u)",
        ],
    );
    command.env = vec![
        ("OVERRIDE".into(), "pod".into()),
        ("NEW".into(), "x".into()),
    ];
    command.run_as_user = Some(65534);
    env.run_to_exit(&command).await;
    assert_eq!(log_text(&command.log_path, 1), "1 pod x /tmp 65534");
    let mut workdir = env.spec("uid-cmd", "workdir", &["pwd"]);
    workdir.working_dir = Some("/etc".into());
    env.run_to_exit(&workdir).await;
    assert_eq!(log_text(&workdir.log_path, 1), "/etc");
    env.remove_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_context_and_mounts_apply() {
    if !require_e2e("security_context_and_mounts_apply") {
        return;
    }
    let env = Env::start(BusyboxImage::new(DEFAULT_REFERENCE)).await;
    let data = env.containerd.scratch().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::write(data.join("greeting"), "from the host\n").expect("write");

    let script = "grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; \
        cat /data/greeting; \
        touch /data/x 2>/dev/null && echo data-writable || echo data-readonly; \
        touch /x 2>/dev/null && echo root-writable || echo root-readonly; \
        hostname";
    let mut spec = env.spec("uid-sec", "locked", &["sh", "-c", script]);
    spec.cap_drop = vec!["ALL".into()];
    spec.cap_add = vec!["NET_ADMIN".into()];
    spec.no_new_privileges = true;
    spec.read_only_root_fs = true;
    spec.hostname = "web-0".into();
    spec.mounts.push(rk3s::agent::runtime::Mount {
        source: data.clone(),
        destination: "/data".into(),
        read_only: true,
    });
    let (_, code) = env.run_to_exit(&spec).await;
    assert_eq!(code, 0);
    let text = log_text(&spec.log_path, 6);
    let fields: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    // CAP_NET_ADMIN is bit 12 and nothing else is left.
    assert_eq!(fields[0], ["CapEff:", "0000000000001000"], "{text}");
    assert_eq!(fields[1], ["NoNewPrivs:", "1"], "{text}");
    assert_eq!(
        &text.lines().skip(2).collect::<Vec<_>>(),
        &["from the host", "data-readonly", "root-readonly", "web-0"]
    );

    // The defaults: containerd's capability set, a writable root.
    let spec = env.spec(
        "uid-sec",
        "default",
        &[
            "sh",
            "-c",
            "grep CapEff /proc/self/status; touch /x && echo ok",
        ],
    );
    env.run_to_exit(&spec).await;
    assert_eq!(log_text(&spec.log_path, 2), "CapEff:\t00000000a80425fb\nok");
    env.remove_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_image_user_resolves_from_the_image() {
    if !require_e2e("named_image_user_resolves_from_the_image") {
        return;
    }
    let env = Env::start(BusyboxImage::new(DEFAULT_REFERENCE).user("nobody")).await;
    let spec = env.spec("uid-user", "id", &["sh", "-c", "echo $(id -u):$(id -g)"]);
    let (_, code) = env.run_to_exit(&spec).await;
    assert_eq!(code, 0);
    assert_eq!(log_text(&spec.log_path, 1), "65534:65534");
    env.remove_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_exceeded_reports_oom_killed() {
    if !require_e2e("memory_limit_exceeded_reports_oom_killed") {
        return;
    }
    let env = Env::start(BusyboxImage::new(DEFAULT_REFERENCE)).await;
    // The shell buffers the whole substitution in its own memory.
    let hog = "x=$(head -c 256m /dev/zero | tr '\\0' a); echo survived";
    let mut spec = env.spec("uid-oom", "hog", &["sh", "-c", hog]);
    spec.memory_limit_bytes = Some(32 << 20);
    let (id, code) = env.run_to_exit(&spec).await;
    assert_eq!(code, 137, "log: {}", log_text(&spec.log_path, 0));
    match env.runtime.status(&id).await.expect("status").state {
        ContainerState::Exited {
            code: 137,
            reason: ExitReason::OomKilled,
            ..
        } => {}
        other => panic!("expected OOMKilled, got {other:?}"),
    }

    // A plain SIGKILL is not reported as an OOM kill.
    let spec = env.spec("uid-oom", "killed", &["sleep", "1000"]);
    let id = env.runtime.create_container(&spec).await.expect("create");
    env.runtime.start(&id).await.expect("start");
    env.runtime.stop(&id, Duration::ZERO).await.expect("stop");
    match env.runtime.status(&id).await.expect("status").state {
        ContainerState::Exited {
            code: 137,
            reason: ExitReason::Completed,
            ..
        } => {}
        other => panic!("expected a plain kill, got {other:?}"),
    }
    env.remove_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_finds_containers_by_labels_after_reconnecting() {
    if !require_e2e("list_finds_containers_by_labels_after_reconnecting") {
        return;
    }
    let env = Env::start(BusyboxImage::new(DEFAULT_REFERENCE)).await;
    let mut a = env.spec("uid-a", "web", &["sleep", "1000"]);
    a.restart_count = 2;
    let id_a = env.runtime.create_container(&a).await.expect("create a");
    env.runtime.start(&id_a).await.expect("start a");
    let id_side = env
        .runtime
        .create_container(&env.spec("uid-a", "side", &["true"]))
        .await
        .expect("create side");
    let id_b = env
        .runtime
        .create_container(&env.spec("uid-b", "web", &["true"]))
        .await
        .expect("create b");
    // Not ours: created without rk3s's labels.
    env.containerd
        .ctr_ok(&[
            "containers",
            "create",
            DEFAULT_REFERENCE,
            "foreign-x",
            "true",
        ])
        .expect("ctr create");

    // A restarted agent: a fresh client knows nothing but the socket.
    let Env {
        containerd,
        runtime,
        shim,
        ..
    } = env;
    drop(runtime);
    let fresh = connect(&containerd, &shim).await;
    let all = fresh.list(&BTreeMap::new()).await.expect("list all");
    assert_eq!(all.len(), 3, "{all:?}");
    let sel = BTreeMap::from([(labels::POD_UID.to_string(), "uid-a".to_string())]);
    let pod_a = fresh.list(&sel).await.expect("list pod a");
    let mut ids: Vec<_> = pod_a.iter().map(|s| s.id.clone()).collect();
    ids.sort();
    let mut want = vec![id_a.clone(), id_side.clone()];
    want.sort();
    assert_eq!(ids, want);
    let web = pod_a.iter().find(|s| s.id == id_a).expect("web listed");
    assert_eq!(web.label(labels::CONTAINER_NAME), Some("web"));
    assert_eq!(web.label(labels::RESTART_COUNT), Some("2"));
    assert_eq!(web.label(labels::POD_NAMESPACE), Some("default"));
    assert_eq!(
        web.label(labels::LOG_PATH),
        Some(a.log_path.to_str().unwrap())
    );
    assert_eq!(web.image, DEFAULT_REFERENCE);
    // Re-adopted: its live state is readable and it can be stopped.
    assert_eq!(
        fresh.status(&id_a).await.expect("status").state,
        ContainerState::Running
    );
    fresh.stop(&id_a, Duration::ZERO).await.expect("stop");
    for id in [&id_a, &id_side, &id_b] {
        fresh.remove(id).await.expect("remove");
    }
    assert!(fresh.list(&BTreeMap::new()).await.expect("list").is_empty());
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Benchmark, printed: create → running for rk3s's runtime vs `ctr run -d`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_create_to_running() {
    if !require_e2e("bench_create_to_running") {
        return;
    }
    let env = Env::start(BusyboxImage::new(DEFAULT_REFERENCE)).await;
    const RUNS: usize = 7;
    let mut ours = Vec::new();
    let mut ctr = Vec::new();
    for i in 0..RUNS {
        let spec = env.spec("uid-bench", &format!("c{i}"), &["sleep", "1000"]);
        let t0 = Instant::now();
        let id = env.runtime.create_container(&spec).await.expect("create");
        env.runtime.start(&id).await.expect("start");
        assert_eq!(
            env.runtime.status(&id).await.expect("status").state,
            ContainerState::Running
        );
        ours.push(t0.elapsed());
        env.runtime.remove(&id).await.expect("remove");

        let cid = common::containerd::unique_id("bench");
        let t0 = Instant::now();
        env.containerd
            .ctr_run_sleeping(DEFAULT_REFERENCE, &cid)
            .expect("ctr run -d");
        ctr.push(t0.elapsed());
        env.containerd
            .ctr_ok(&["tasks", "kill", "-s", "SIGKILL", &cid])
            .expect("kill");
        let _ = env.containerd.ctr(&["tasks", "delete", "-f", &cid]);
        env.containerd
            .ctr_ok(&["containers", "delete", &cid])
            .expect("delete");
    }
    eprintln!(
        "bench create→running over {RUNS} runs: rk3s runtime median {:?} (min {:?}), `ctr run -d` median {:?} (min {:?})",
        median(ours.clone()),
        ours.iter().min().unwrap(),
        median(ctr.clone()),
        ctr.iter().min().unwrap()
    );
}
