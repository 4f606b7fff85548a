//! install.sh end to end as root: the release layout served over loopback
//! HTTP installs into the real root (with `INSTALL_RK3S_SKIP_START`, so no
//! service starts), and into a scratch root whose installed binary then runs
//! a real server with pods in a network namespace made here; its
//! `rk3s-killall.sh` must leave no rk3s process, container, interface,
//! nftables table, mount or pod namespace (each listed), and its uninstall
//! no file.
//!
//! The host's network is never touched: the server, killall and uninstall
//! run with `nsenter --net` in the test's namespace; the scratch root's
//! killall removes only the pod namespaces of its own data dir.
//!
//! Root-only: skips without root unless `RK3S_E2E=1`.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use common::containerd::{descendants, Containerd};
use common::image::DEFAULT_REFERENCE;
use common::netns::{Network, Node};
use common::nodekit::{import_busybox, wait_for};
use common::privilege::require_e2e;
use common::release::{HttpServer, Release};

const RK3S: &str = env!("CARGO_BIN_EXE_rk3s");

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim().to_string()
}

fn ok(what: &str, o: &Output) -> String {
    assert!(
        o.status.success(),
        "{what} failed ({}):\n{}\n{}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

fn install(vars: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new("sh");
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("install.sh"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("INSTALL_RK3S_SKIP_START", "true");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().expect("run install.sh")
}

/// The paths a real-root install owns, and whether each exists.
const REAL_PATHS: [&str; 8] = [
    "/usr/local/bin/rk3s",
    "/usr/local/bin/kubectl",
    "/usr/local/bin/rk3s-killall.sh",
    "/usr/local/bin/rk3s-uninstall.sh",
    "/etc/systemd/system/rk3s.service",
    "/etc/systemd/system/rk3s.service.env",
    "/etc/rk3s",
    "/var/lib/rk3s",
];

fn existing(paths: &[&str]) -> BTreeSet<String> {
    paths
        .iter()
        .filter(|p| Path::new(p).symlink_metadata().is_ok())
        .map(|p| p.to_string())
        .collect()
}

/// Removes what the real-root install wrote (only what was not there before).
struct RealRootCleanup(BTreeSet<String>);

impl Drop for RealRootCleanup {
    fn drop(&mut self) {
        for p in REAL_PATHS {
            let path = Path::new(p);
            if !self.0.contains(p) && (path.is_symlink() || path.is_file()) {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

#[test]
fn installs_into_the_real_root_without_starting() {
    if !require_e2e("installs_into_the_real_root_without_starting") {
        return;
    }
    let before = existing(&REAL_PATHS);
    for p in ["/usr/local/bin/rk3s", "/etc/systemd/system/rk3s.service"] {
        assert!(
            !before.contains(p),
            "{p} exists: this host has rk3s installed; refusing to touch it"
        );
    }
    let _cleanup = RealRootCleanup(before.clone());
    let release = Release::new();
    release.add("v9.9.9", Path::new(RK3S));
    let server = HttpServer::serve(release.dir.path());
    let out = install(&[
        ("INSTALL_RK3S_DOWNLOAD_URL", &server.url),
        ("INSTALL_RK3S_VERSION", "v9.9.9"),
    ]);
    let said = ok("install.sh into /", &out);
    eprintln!("{said}");
    assert_eq!(
        std::fs::read("/usr/local/bin/rk3s").unwrap(),
        std::fs::read(RK3S).unwrap()
    );
    for p in [
        "/usr/local/bin/rk3s-killall.sh",
        "/usr/local/bin/rk3s-uninstall.sh",
        "/etc/systemd/system/rk3s.service",
        "/etc/systemd/system/rk3s.service.env",
    ] {
        assert!(Path::new(p).is_file(), "{p} missing");
    }
    use std::os::unix::fs::PermissionsExt;
    let env_mode = std::fs::metadata("/etc/systemd/system/rk3s.service.env")
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(env_mode & 0o777, 0o600);
    // The real root's killall removes every rk3s-* pod namespace.
    assert!(std::fs::read_to_string("/usr/local/bin/rk3s-killall.sh")
        .unwrap()
        .contains("WHOLE_HOST=true"));
    if before.contains("/usr/local/bin/kubectl") || common::privilege::which("kubectl").is_some() {
        assert!(said.contains("Skipping the kubectl symlink"), "{said}");
    }
    // The installed binary runs.
    let v = Command::new("/usr/local/bin/rk3s")
        .arg("--version")
        .output()
        .unwrap();
    ok("rk3s --version", &v);
    // Not started: no systemd runs here, and SKIP_START says so anyway.
    assert!(said.contains("Not enabling or starting") || Path::new("/run/systemd/system").exists());
    // A second run changes nothing.
    let again = install(&[
        ("INSTALL_RK3S_DOWNLOAD_URL", &server.url),
        ("INSTALL_RK3S_VERSION", "v9.9.9"),
    ]);
    let said = ok("second install.sh into /", &again);
    assert!(
        said.contains("already installed") && !said.contains("Wrote"),
        "{said}"
    );
    drop(_cleanup);
    assert_eq!(
        existing(&REAL_PATHS),
        before,
        "the real root is not as it was"
    );
}

/// A rk3s server (the scratch root's installed binary) in a namespace.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0.id() as i32, libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

fn kubectl(node: &Node, kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{}", node.netns()))
        .arg("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .unwrap()
}

/// Runs a script in the node's namespace (host mounts and processes, the node's network).
fn in_node(node: &Node, script: &Path) -> Output {
    Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{}", node.netns()))
        .arg("sh")
        .arg(script)
        .output()
        .unwrap()
}

fn links(node: &Node) -> Vec<String> {
    let o = node.exec(&["ip", "-o", "link", "show"]);
    text(&o.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap().to_string())
        .collect()
}

fn tables(node: &Node) -> String {
    text(&node.exec(&["nft", "list", "tables"]).stdout)
}

fn mounts_under(paths: &[PathBuf]) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| paths.iter().any(|p| Path::new(m).starts_with(p)))
        .collect()
}

fn alive(pid: u32) -> bool {
    // A zombie (killed, not yet reaped by an init that never reaps) is dead.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(") ").next().map(|r| !r.starts_with('Z')))
        .unwrap_or(false)
}

fn pids_with(needles: &[&str]) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            needles.iter().all(|n| cmd.contains(n))
        })
        .filter(|pid| alive(*pid))
        .collect()
}

fn exe_pids(exe: &Path) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|p| {
                p == exe || p.to_string_lossy() == format!("{} (deleted)", exe.display())
            })
        })
        .filter(|pid| alive(*pid))
        .collect()
}

/// Every file and symlink below `root` (directories aside).
fn files(root: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.insert(e.path().strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    out
}

#[test]
fn killall_after_a_server_with_pods_leaves_nothing_and_uninstall_no_file() {
    if !require_e2e("killall_after_a_server_with_pods_leaves_nothing_and_uninstall_no_file") {
        return;
    }
    let containerd = Containerd::start().expect("containerd");
    import_busybox(&containerd);
    let net = Network::new("ki").expect("network");
    let node = net.add_node("one").expect("node");
    let socket = format!("unix://{}", containerd.socket().display());

    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let before = files(r);
    let release = Release::new();
    release.add("v9.9.9", Path::new(RK3S));
    let http = HttpServer::serve(release.dir.path());
    let data = r.join("var/lib/rk3s");
    let kubeconfig = r.join("etc/rk3s/rk3s.yaml");
    let exec = format!(
        "server --node-name one --node-ip {} --container-runtime-endpoint {socket} --data-dir {} --run-dir {} --write-kubeconfig {}",
        node.ip(),
        data.display(),
        r.join("run/rk3s").display(),
        kubeconfig.display()
    );
    ok(
        "install.sh into a scratch root",
        &install(&[
            ("INSTALL_RK3S_ROOT", r.to_str().unwrap()),
            ("INSTALL_RK3S_DOWNLOAD_URL", &http.url),
            ("INSTALL_RK3S_VERSION", "v9.9.9"),
            ("INSTALL_RK3S_EXEC", &exec),
        ]),
    );
    let bin = r.join("usr/local/bin/rk3s");
    let killall = std::fs::read_to_string(r.join("usr/local/bin/rk3s-killall.sh")).unwrap();
    assert!(
        killall.contains(&containerd.socket().display().to_string()),
        "{killall}"
    );

    // Undoes what a failure before killall would leave (dropped after the server, before root).
    let leftovers = Leftovers {
        root: r.to_path_buf(),
        uids: Default::default(),
    };
    // The installed binary, as the unit would run it, in the node's namespace.
    let logs = tempfile::tempdir().unwrap();
    let log_path = logs.path().join("server.log");
    let mut args: Vec<String> = exec.split(' ').map(String::from).collect();
    args.retain(|a| !a.is_empty());
    let start_server = || {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", node.netns()))
            .arg(&bin)
            .args(&args)
            .env("RK3S_CONFIG_FILE", "/dev/null")
            .env("RK3S_NODE_PASSWORD_FILE", r.join("etc/rk3s/node-password"))
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start the installed rk3s")
    };
    let mut server = Server(start_server());
    let _log_guard = LogOnPanic(log_path.clone());
    wait_for("the API", 60, || {
        kubectl(&node, &kubeconfig, &["get", "ns"])
            .status
            .success()
            .then_some(())
    });
    ok(
        "kubectl create deployment",
        &kubectl(
            &node,
            &kubeconfig,
            &[
                "create",
                "deployment",
                "sleepy",
                &format!("--image={DEFAULT_REFERENCE}"),
                "--replicas=2",
                "--",
                "sleep",
                "86399",
            ],
        ),
    );
    let uids = wait_for("two Running pods", 180, || {
        let o = kubectl(
            &node,
            &kubeconfig,
            &[
                "get",
                "pods",
                "-o",
                "jsonpath={range .items[*]}{.metadata.uid} {.status.phase}{\"\\n\"}{end}",
            ],
        );
        let lines: Vec<String> = text(&o.stdout).lines().map(String::from).collect();
        (lines.len() == 2 && lines.iter().all(|l| l.ends_with(" Running"))).then(|| {
            lines
                .iter()
                .map(|l| l.split(' ').next().unwrap().to_string())
                .collect::<Vec<_>>()
        })
    });
    leftovers.uids.borrow_mut().extend(uids.iter().cloned());

    // Upgrade: a newer release over the running one, then the restart systemd would do
    // (KillMode=process: SIGTERM to rk3s alone). The pods' processes must live through it and
    // the new binary must open the old data dir.
    let sleepers = || -> Vec<u32> {
        pids_with(&["sleep 86399"])
            .into_iter()
            .filter(|p| {
                std::fs::read(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| c == b"sleep\x0086399\x00")
            })
            .collect()
    };
    let before_upgrade = sleepers();
    assert_eq!(before_upgrade.len(), 2, "two pod processes");
    let newer_dir = tempfile::tempdir().unwrap();
    let newer = newer_dir.path().join("rk3s");
    let mut bytes = std::fs::read(RK3S).unwrap();
    bytes.extend_from_slice(b"\0rk3s upgrade");
    std::fs::write(&newer, &bytes).unwrap();
    std::fs::set_permissions(&newer, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    release.add("v9.9.10", &newer);
    let upgraded = ok(
        "install.sh with a newer release",
        &install(&[
            ("INSTALL_RK3S_ROOT", r.to_str().unwrap()),
            ("INSTALL_RK3S_DOWNLOAD_URL", &http.url),
            ("INSTALL_RK3S_VERSION", "v9.9.10"),
            ("INSTALL_RK3S_EXEC", &exec),
        ]),
    );
    assert!(
        upgraded.contains("Installed /usr/local/bin/rk3s"),
        "{upgraded}"
    );
    assert_eq!(std::fs::read(&bin).unwrap(), bytes);
    unsafe { libc::kill(server.0.id() as i32, libc::SIGTERM) };
    let _ = server.0.wait();
    server.0 = start_server();
    wait_for("the API after the upgrade", 60, || {
        kubectl(&node, &kubeconfig, &["get", "ns"])
            .status
            .success()
            .then_some(())
    });
    wait_for("the old pods, Running, from the new binary", 60, || {
        let o = kubectl(
            &node,
            &kubeconfig,
            &[
                "get",
                "pods",
                "-o",
                "jsonpath={range .items[*]}{.metadata.uid} {.status.phase}{\"\\n\"}{end}",
            ],
        );
        let now: Vec<String> = text(&o.stdout).lines().map(String::from).collect();
        let expected: Vec<String> = uids.iter().map(|u| format!("{u} Running")).collect();
        let (mut a, mut b) = (now.clone(), expected);
        a.sort();
        b.sort();
        (a == b).then_some(())
    });
    assert_eq!(exe_pids(&bin).len() >= 1, true, "the upgraded rk3s runs");
    let mut after_upgrade = sleepers();
    after_upgrade.sort();
    let mut expected = before_upgrade.clone();
    expected.sort();
    assert_eq!(
        after_upgrade, expected,
        "the pods' processes did not survive the upgrade"
    );

    // What the running cluster made, listed before killall.
    let shims = pids_with(&[
        "containerd-shim",
        &format!("-address {} ", containerd.socket().display()),
    ]);
    assert!(!shims.is_empty(), "no shim serves the pods");
    let containers: Vec<u32> = shims.iter().flat_map(|s| descendants(*s)).collect();
    assert!(
        containers
            .iter()
            .any(|p| std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.starts_with(b"sleep\x0086399"))),
        "the pods' processes are not under the shims"
    );
    assert!(!exe_pids(&bin).is_empty());
    let netns: Vec<PathBuf> = uids
        .iter()
        .map(|u| PathBuf::from(format!("/var/run/netns/rk3s-{u}")))
        .collect();
    for n in &netns {
        assert!(n.exists(), "{} missing while the pod runs", n.display());
    }
    let links_before = links(&node);
    eprintln!(
        "links before killall: {links_before:?}\ntables before killall: {}",
        tables(&node)
    );
    assert!(links_before.iter().any(|l| l == "cni0"), "{links_before:?}");
    assert!(
        links_before.iter().any(|l| l.starts_with("veth")),
        "{links_before:?}"
    );
    let owned_mounts = [
        data.clone(),
        r.join("run/rk3s"),
        PathBuf::from("/run/netns"),
    ];
    let netns_mounts = |ms: Vec<String>| -> Vec<String> {
        ms.into_iter()
            .filter(|m| {
                !m.starts_with("/run/netns")
                    || uids.iter().any(|u| m.ends_with(&format!("rk3s-{u}")))
            })
            .collect()
    };
    eprintln!(
        "mounts before killall: {:?}",
        netns_mounts(mounts_under(&owned_mounts))
    );
    assert!(!netns_mounts(mounts_under(&owned_mounts)).is_empty());

    let cgroups_before: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|h| h.path())
        .flat_map(|h| uids.iter().map(move |u| h.join("rk3s/pods").join(u)))
        .filter(|p| p.exists())
        .collect();
    let out = in_node(&node, &r.join("usr/local/bin/rk3s-killall.sh"));
    ok("rk3s-killall.sh", &out);
    eprintln!("killall said:\n{}", text(&out.stdout));

    assert_eq!(exe_pids(&bin), Vec::<u32>::new(), "rk3s still runs");
    let left: Vec<u32> = shims
        .iter()
        .chain(&containers)
        .copied()
        .filter(|p| alive(*p))
        .collect();
    assert_eq!(left, Vec::<u32>::new(), "shims or containers survived");
    let links_after = links(&node);
    for l in &links_after {
        assert!(
            !(l == "cni0" || l == "flannel.1" || l == "rk3s-dns" || l.starts_with("veth")),
            "link {l} left: {links_after:?}"
        );
    }
    assert!(
        links_after.iter().any(|l| l == "lo"),
        "killall removed more than rk3s's links"
    );
    assert!(
        links_after.len() >= 2,
        "the node's own interface went: {links_after:?}"
    );
    let t = tables(&node);
    assert!(
        !t.lines()
            .any(|l| l == "table ip rk3s" || l == "table ip rk3s-proxy"),
        "{t}"
    );
    assert_eq!(
        netns_mounts(mounts_under(&owned_mounts)),
        Vec::<String>::new(),
        "mounts left"
    );
    for n in &netns {
        assert!(!n.exists(), "{} left", n.display());
    }
    assert!(
        Path::new("/var/run/netns").join(node.netns()).exists(),
        "killall removed the test's own namespace"
    );
    // Pod cgroups are host-wide (`/rk3s/pods/<uid>` in each hierarchy): this data dir's go.
    let cgroups: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|h| h.path())
        .chain([PathBuf::from("/sys/fs/cgroup")])
        .flat_map(|h| uids.iter().map(move |u| h.join("rk3s/pods").join(u)))
        .filter(|p| p.exists())
        .collect();
    assert!(
        !cgroups_before.is_empty(),
        "the pods had no cgroup under /rk3s/pods"
    );
    assert_eq!(cgroups, Vec::<PathBuf>::new(), "pod cgroups left");

    let out = in_node(&node, &r.join("usr/local/bin/rk3s-uninstall.sh"));
    ok("rk3s-uninstall.sh", &out);
    assert_eq!(files(r), before, "uninstall left files behind");
    for d in ["etc/rk3s", "var/lib/rk3s", "run/rk3s"] {
        assert!(!r.join(d).exists(), "{d} left");
    }
}

/// Pod namespaces (host-wide) and mounts below the scratch root, removed on drop.
struct Leftovers {
    root: PathBuf,
    uids: std::cell::RefCell<Vec<String>>,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        common::containerd::unmount_under(&self.root);
        for uid in self.uids.borrow().iter() {
            let name = format!("rk3s-{uid}");
            if Path::new("/var/run/netns").join(&name).exists() {
                let _ = common::netns::ip(&["netns", "del", &name]);
            }
            // The pods' log directories are host-wide too (killall keeps logs, as k3s's does).
            if let Ok(dirs) = std::fs::read_dir("/var/log/pods") {
                for d in dirs.flatten() {
                    if d.file_name().to_string_lossy().ends_with(uid.as_str()) {
                        let _ = std::fs::remove_dir_all(d.path());
                    }
                }
            }
        }
    }
}

/// Prints the server log's tail when the test fails.
struct LogOnPanic(PathBuf);

impl Drop for LogOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let l = std::fs::read_to_string(&self.0).unwrap_or_default();
            let lines: Vec<&str> = l.lines().collect();
            eprintln!(
                "===== server log (tail) =====\n{}",
                lines[lines.len().saturating_sub(60)..].join("\n")
            );
        }
    }
}
