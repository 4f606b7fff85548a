//! Proves the e2e harness itself: a private containerd runs a busybox image
//! built here, netns nodes reach each other and the host, a container serves
//! HTTP inside a node, and the real kubectl is callable.
//!
//! Root-only tests skip without root unless `RK3S_E2E=1` (then they fail).

mod common;

use std::time::{Duration, Instant};

use common::containerd::{unique_id, Containerd};
use common::image::{BusyboxImage, ImageTar, DEFAULT_REFERENCE, INDEX_HTML};
use common::netns::Network;
use common::privilege::require_e2e;

fn started_with_image(image: &BusyboxImage) -> (Containerd, ImageTar) {
    let t0 = Instant::now();
    let containerd = Containerd::start().expect("start containerd");
    let started = t0.elapsed();
    let tar = image
        .write(containerd.scratch())
        .expect("build busybox image");
    let built = t0.elapsed() - started;
    let t1 = Instant::now();
    containerd.import(&tar).expect("import busybox image");
    eprintln!(
        "harness timing: containerd ready in {started:?}, image built in {built:?}, imported in {:?}",
        t1.elapsed()
    );
    (containerd, tar)
}

#[test]
fn busybox_image_runs_in_private_containerd() {
    if !require_e2e("busybox_image_runs_in_private_containerd") {
        return;
    }
    let (containerd, image) = started_with_image(&BusyboxImage::new(DEFAULT_REFERENCE));

    let images = containerd
        .ctr_ok(&["images", "ls", "-q"])
        .expect("list images");
    assert!(
        images.lines().any(|l| l == DEFAULT_REFERENCE),
        "image not listed: {images}"
    );

    // Imported means unpacked too: the layer is a committed overlayfs snapshot.
    let snapshots = containerd
        .ctr_ok(&["snapshots", "--snapshotter", "overlayfs", "ls"])
        .expect("list snapshots");
    assert!(
        snapshots.contains("Committed"),
        "image not unpacked: {snapshots}"
    );

    let id = unique_id("hello");
    let out = containerd.ctr(&[
        "run",
        "--rm",
        &image.reference,
        &id,
        "sh",
        "-c",
        "echo hello-from-busybox; id -un; cat /www/index.html",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ctr run failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        containerd.log_tail(20)
    );
    assert_eq!(stdout, format!("hello-from-busybox\nroot\n{INDEX_HTML}"));

    // The image's own cmd, env and workdir apply.
    let custom = BusyboxImage::new("docker.io/rk3s/busybox:custom")
        .env("GREETING", "hi")
        .working_dir("/www")
        .cmd(&["sh", "-c", "echo $GREETING from $(pwd)"]);
    let tar = custom
        .write(containerd.scratch())
        .expect("build custom image");
    containerd.import(&tar).expect("import custom image");
    let out = containerd.ctr(&["run", "--rm", &tar.reference, &unique_id("custom")]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hi from /www\n",
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn busybox_image_is_deterministic() {
    if !require_e2e("busybox_image_is_deterministic") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let a = BusyboxImage::build(dir.path(), DEFAULT_REFERENCE).unwrap();
    let first = std::fs::read(&a.path).unwrap();
    let b = BusyboxImage::build(dir.path(), DEFAULT_REFERENCE).unwrap();
    assert_eq!(a.image_id, b.image_id);
    assert_eq!(a.layer_digest, b.layer_digest);
    assert_eq!(first, std::fs::read(&b.path).unwrap());
    let other = BusyboxImage::new(DEFAULT_REFERENCE)
        .expose("80/tcp")
        .write(dir.path())
        .unwrap();
    assert_ne!(
        other.image_id, a.image_id,
        "the config is part of the image id"
    );
    assert_eq!(
        other.layer_digest, a.layer_digest,
        "the layer does not depend on the config"
    );
}

#[test]
fn netns_nodes_reach_each_other_and_the_host() {
    if !require_e2e("netns_nodes_reach_each_other_and_the_host") {
        return;
    }
    let network = Network::new("ping").expect("create bridge");
    let a = network.add_node("a").expect("add node a");
    let b = network.add_node("b").expect("add node b");
    assert_ne!(a.ip(), b.ip());

    let ping = |node: &common::netns::Node, target: String| {
        let out = node.exec(&["busybox", "ping", "-c", "1", "-W", "2", &target]);
        assert!(
            out.status.success(),
            "{} cannot ping {target}: {}",
            node.netns(),
            String::from_utf8_lossy(&out.stdout)
        );
    };
    ping(&a, b.ip().to_string());
    ping(&b, a.ip().to_string());
    ping(&a, network.gateway().to_string());
    let out = std::process::Command::new("busybox")
        .args(["ping", "-c", "1", "-W", "2", &b.ip().to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "host cannot ping {}", b.ip());

    // Later tests program nftables and iptables inside nodes.
    for argv in [
        &["nft", "list", "ruleset"][..],
        &["iptables", "-t", "nat", "-L", "-n"],
    ] {
        let out = a.exec(argv);
        assert!(
            out.status.success(),
            "{argv:?} in a netns: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = a.exec(&["nft", "add", "table", "inet", "rk3s_probe"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let host = std::process::Command::new(common::privilege::tool("nft"))
        .args(["list", "tables"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&host.stdout).contains("rk3s_probe"),
        "a node's ruleset leaked to the host"
    );
}

#[test]
fn container_in_a_node_serves_http_to_another_node() {
    if !require_e2e("container_in_a_node_serves_http_to_another_node") {
        return;
    }
    let network = Network::new("http").expect("create bridge");
    let server = network.add_node("server").expect("add server node");
    let client = network.add_node("client").expect("add client node");

    // Declared after the nodes, so dropped (tasks killed) before them.
    let containerd =
        Containerd::start_in_netns(server.netns()).expect("start containerd in the server node");
    let tar = BusyboxImage::new(DEFAULT_REFERENCE)
        .expose("80/tcp")
        .write(containerd.scratch())
        .expect("build image");
    containerd.import(&tar).expect("import image");

    let id = unique_id("httpd");
    containerd
        .ctr_ok(&[
            "run",
            "--detach",
            "--net-host",
            "--null-io",
            &tar.reference,
            &id,
            "httpd",
            "-f",
            "-p",
            "80",
            "-h",
            "/www",
        ])
        .expect("start httpd container");

    let url = format!("http://{}/index.html", server.ip());
    let deadline = Instant::now() + Duration::from_secs(20);
    let page = loop {
        // No `-T`: Debian 12's busybox-static wget segfaults with it; the
        // harness timeout bounds each attempt instead.
        let out = client.exec_within(
            &["busybox", "wget", "-q", "-O", "-", &url],
            Duration::from_secs(5),
        );
        match out {
            Ok(o) if o.status.success() => break String::from_utf8_lossy(&o.stdout).into_owned(),
            other if Instant::now() >= deadline => panic!(
                "cannot fetch {url}: {other:?}\ntasks: {:?}\nlisteners in {}: {}\ncontainerd log:\n{}",
                containerd.ctr_ok(&["tasks", "ls"]),
                server.netns(),
                String::from_utf8_lossy(&server.exec(&["busybox", "netstat", "-ltn"]).stdout),
                containerd.log_tail(20)
            ),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    assert_eq!(page, INDEX_HTML);

    let tasks = containerd.ctr_ok(&["tasks", "ls"]).expect("list tasks");
    assert!(tasks.contains(&id) && tasks.contains("RUNNING"), "{tasks}");
}

#[test]
fn kubectl_client_runs() {
    let kubectl = common::privilege::which("kubectl").expect("kubectl on PATH (/usr/bin/kubectl)");
    let out = std::process::Command::new(kubectl)
        .args(["version", "--client"])
        .output()
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Client Version: v1."),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn handles_clean_up_after_a_panic() {
    if !require_e2e("handles_clean_up_after_a_panic") {
        return;
    }
    struct Left {
        dir: std::path::PathBuf,
        netns: String,
        bridge: String,
        processes: Vec<u32>,
        spawned: std::process::Child,
    }
    let left = std::sync::Mutex::new(None);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let network = Network::new("panic").expect("create bridge");
        let node = network.add_node("n").expect("add node");
        let containerd = Containerd::start_in_netns(node.netns()).expect("start containerd");
        let tar =
            BusyboxImage::build(containerd.scratch(), DEFAULT_REFERENCE).expect("build image");
        containerd.import(&tar).expect("import image");
        let id = unique_id("sleeper");
        containerd
            .ctr_ok(&[
                "run",
                "--detach",
                "--null-io",
                &tar.reference,
                &id,
                "sleep",
                "600",
            ])
            .expect("start sleeper");
        let spawned = node.spawn(&["sleep", "600"]).expect("spawn in node");
        *left.lock().unwrap() = Some(Left {
            dir: containerd.scratch().to_path_buf(),
            netns: node.netns().to_string(),
            bridge: network.bridge().to_string(),
            processes: node.pids(),
            spawned,
        });
        panic!("deliberate panic with a running container");
    }));
    assert!(result.is_err());
    let mut left = left
        .into_inner()
        .unwrap()
        .expect("setup finished before the panic");
    let status = left.spawned.wait().expect("wait for the spawned process");
    assert!(
        !status.success(),
        "the node's drop kills what it spawned: {status:?}"
    );
    assert!(
        left.processes.len() >= 3,
        "containerd, shim, sleeper and sleep run in the node: {:?}",
        left.processes
    );
    for pid in &left.processes {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // A zombie waits for init to reap it; it no longer runs.
        assert!(
            state.is_empty() || state.contains(") Z "),
            "process {pid} survived: {state}"
        );
    }
    assert!(!left.dir.exists(), "{} survived", left.dir.display());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(left.dir.to_str().unwrap()),
        "mounts survived under {}",
        left.dir.display()
    );
    assert!(
        !std::path::Path::new("/run/netns")
            .join(&left.netns)
            .exists(),
        "netns {} survived",
        left.netns
    );
    assert!(
        !std::path::Path::new("/sys/class/net")
            .join(&left.bridge)
            .exists(),
        "bridge {} survived",
        left.bridge
    );
}
