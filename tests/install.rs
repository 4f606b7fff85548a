//! install.sh, run for real into a temporary root (`INSTALL_RK3S_ROOT`), so
//! it never touches this machine's /usr/local/bin, systemd or /etc; releases
//! come from `packaging/build-release.sh` over a loopback HTTP server. The
//! uninstall scripts (which run killall) run in a fresh network namespace
//! (`unshare --net`) when root, so the host's links and tables are never
//! theirs to delete. The real-root install and killall after a real server
//! are in tests/e2e_install.rs.

mod common;

use common::release::{host_arch, HttpServer, Release};

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const RK3S: &str = env!("CARGO_BIN_EXE_rk3s");

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("install.sh")
}

/// Runs install.sh with only PATH and `vars` in its environment.
fn install(root: &Path, vars: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new("sh");
    cmd.arg(script()).args(args).env_clear();
    cmd.env("PATH", std::env::var_os("PATH").unwrap_or_default());
    cmd.env("INSTALL_RK3S_ROOT", root)
        .env("INSTALL_RK3S_SKIP_START", "true");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().expect("failed to run sh")
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "install.sh failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs a script install.sh wrote, in a network namespace of its own when
/// root (killall deletes links and tables in the namespace it runs in).
fn run_script(script: &Path) -> Output {
    let mut cmd = if unsafe { libc::geteuid() } == 0 {
        let mut c = Command::new("unshare");
        c.arg("--net").arg("sh");
        c
    } else {
        Command::new("sh")
    };
    cmd.arg(script).output().expect("failed to run the script")
}

fn mode(path: PathBuf) -> u32 {
    std::fs::metadata(&path).unwrap().permissions().mode() & 0o777
}

#[test]
fn script_is_valid_posix_sh() {
    let out = Command::new("sh").arg("-n").arg(script()).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn server_install_writes_binary_unit_env_symlink_and_uninstaller() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let out = install(
        r,
        &[
            ("INSTALL_RK3S_BINARY", RK3S),
            ("INSTALL_RK3S_EXEC", "server --disable servicelb"),
            ("RK3S_TOKEN", "s3cr\"t$x"),
        ],
        &["--tls-san", "pi's box 100%"],
    );
    ok(&out);

    let bin = r.join("usr/local/bin/rk3s");
    assert_eq!(std::fs::read(&bin).unwrap(), std::fs::read(RK3S).unwrap());
    assert_eq!(mode(bin), 0o755);
    assert_eq!(
        std::fs::read_link(r.join("usr/local/bin/kubectl")).unwrap(),
        Path::new("rk3s")
    );

    let unit = read(r.join("etc/systemd/system/rk3s.service"));
    assert!(
        unit.contains("Type=notify\n")
            && unit.contains("KillMode=process\n")
            && unit.contains("Delegate=yes\n")
    );
    assert!(
        unit.contains("EnvironmentFile=-/etc/systemd/system/rk3s.service.env\n"),
        "{unit}"
    );
    let exec = unit.lines().find(|l| l.starts_with("ExecStart=")).unwrap();
    assert_eq!(
        exec,
        r"ExecStart=/usr/local/bin/rk3s server '--disable' 'servicelb' '--tls-san' 'pi\'s box 100%%'"
    );
    assert_eq!(mode(r.join("etc/systemd/system/rk3s.service")), 0o644);

    let env_file = r.join("etc/systemd/system/rk3s.service.env");
    assert_eq!(mode(env_file.clone()), 0o600);
    assert_eq!(read(env_file), "RK3S_TOKEN=\"s3cr\\\"t\\$x\"\n");

    let uninstall = r.join("usr/local/bin/rk3s-uninstall.sh");
    assert_eq!(mode(uninstall.clone()), 0o755);
    let out = run_script(&uninstall);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for gone in [
        "usr/local/bin/rk3s",
        "usr/local/bin/kubectl",
        "usr/local/bin/rk3s-uninstall.sh",
        "etc/systemd/system/rk3s.service",
        "etc/systemd/system/rk3s.service.env",
    ] {
        assert!(!r.join(gone).exists(), "{gone} left behind");
    }
}

#[test]
fn plain_server_unit_matches_the_packaged_unit() {
    let root = tempfile::tempdir().unwrap();
    ok(&install(root.path(), &[("INSTALL_RK3S_BINARY", RK3S)], &[]));
    let packaged = read(Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/rk3s.service"));
    assert_eq!(
        read(root.path().join("etc/systemd/system/rk3s.service")),
        packaged
    );
}

#[test]
fn rk3s_url_makes_an_agent_install() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    // An existing kubectl is left alone.
    std::fs::create_dir_all(r.join("usr/local/bin")).unwrap();
    std::fs::write(r.join("usr/local/bin/kubectl"), "#!/bin/sh\n").unwrap();
    ok(&install(
        r,
        &[
            ("INSTALL_RK3S_BINARY", RK3S),
            ("RK3S_URL", "https://10.0.0.1:6443"),
            ("RK3S_TOKEN", "abc"),
            ("INSTALL_RK3S_EXEC", "--node-label role=edge"),
        ],
        &[],
    ));
    let unit = read(r.join("etc/systemd/system/rk3s-agent.service"));
    assert!(
        unit.contains("ExecStart=/usr/local/bin/rk3s agent '--node-label' 'role=edge'\n"),
        "{unit}"
    );
    assert!(unit.contains("EnvironmentFile=-/etc/systemd/system/rk3s-agent.service.env\n"));
    let env = read(r.join("etc/systemd/system/rk3s-agent.service.env"));
    assert!(
        env.contains("RK3S_URL=\"https://10.0.0.1:6443\"\n")
            && env.contains("RK3S_TOKEN=\"abc\"\n"),
        "{env}"
    );
    assert_eq!(read(r.join("usr/local/bin/kubectl")), "#!/bin/sh\n");
    assert!(r.join("usr/local/bin/rk3s-agent-uninstall.sh").exists());
    let packaged = read(Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/rk3s-agent.service"));
    assert_eq!(
        unit.lines()
            .filter(|l| !l.starts_with("ExecStart="))
            .collect::<Vec<_>>(),
        packaged
            .lines()
            .filter(|l| !l.starts_with("ExecStart="))
            .collect::<Vec<_>>()
    );
}

#[test]
fn bad_agent_settings_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let out = install(
        root.path(),
        &[
            ("INSTALL_RK3S_BINARY", RK3S),
            ("RK3S_URL", "http://10.0.0.1:6443"),
            ("RK3S_TOKEN", "t"),
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("must start with https://"));
    let out = install(
        root.path(),
        &[
            ("INSTALL_RK3S_BINARY", RK3S),
            ("RK3S_URL", "https://10.0.0.1:6443"),
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("RK3S_TOKEN"));
    let out = install(
        root.path(),
        &[
            ("INSTALL_RK3S_BINARY", RK3S),
            ("INSTALL_RK3S_EXEC", "serve"),
        ],
        &[],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be server or agent"));
    assert!(
        !root.path().join("usr/local/bin/rk3s").exists(),
        "nothing installed after a refusal"
    );
}

fn download_vars<'a>(server: &'a HttpServer, version: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("INSTALL_RK3S_DOWNLOAD_URL", server.url.as_str()),
        ("INSTALL_RK3S_VERSION", version),
    ]
}

/// Every file and symlink below `root` (directories aside), with its bytes.
fn files(root: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let t = e.file_type().unwrap();
            let rel = e.path().strip_prefix(root).unwrap().to_path_buf();
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_symlink() {
                let target = std::fs::read_link(e.path()).unwrap();
                out.insert(rel, target.into_os_string().into_encoded_bytes());
            } else {
                out.insert(rel, std::fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

#[test]
fn install_over_http_verifies_installs_everything_and_a_second_run_changes_nothing() {
    let release = Release::new();
    release.add("v9.9.9", Path::new(RK3S));
    let server = HttpServer::serve(release.dir.path());
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let first = install(r, &download_vars(&server, "v9.9.9"), &[]);
    ok(&first);
    assert!(String::from_utf8_lossy(&first.stdout).contains("Installed /usr/local/bin/rk3s"));
    assert_eq!(
        std::fs::read(r.join("usr/local/bin/rk3s")).unwrap(),
        std::fs::read(RK3S).unwrap()
    );
    for script in [
        "usr/local/bin/rk3s-killall.sh",
        "usr/local/bin/rk3s-uninstall.sh",
    ] {
        assert_eq!(mode(r.join(script)), 0o755, "{script}");
        let out = Command::new("sh")
            .arg("-n")
            .arg(r.join(script))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(mode(r.join("etc/systemd/system/rk3s.service.env")), 0o600);
    let killall = read(r.join("usr/local/bin/rk3s-killall.sh"));
    assert!(
        killall.contains(&format!("DATA_DIR=\"{}/var/lib/rk3s\"", r.display()))
            && killall.contains("WHOLE_HOST=false"),
        "a scratch root's killall is scoped to that root:\n{killall}"
    );

    let before = files(r);
    let second = install(r, &download_vars(&server, "v9.9.9"), &[]);
    ok(&second);
    let said = String::from_utf8_lossy(&second.stdout);
    assert!(said.contains("already installed"), "{said}");
    assert!(
        !said.contains("Wrote"),
        "a second run rewrote a file:\n{said}"
    );
    assert_eq!(files(r), before, "a second run changed the installed files");
}

#[test]
fn a_newer_release_replaces_the_binary_and_keeps_the_rest() {
    let release = Release::new();
    release.add("v1.0.0", Path::new(RK3S));
    // The "newer" binary: the same program with a different checksum.
    let newer_dir = tempfile::tempdir().unwrap();
    let newer = newer_dir.path().join("rk3s");
    let mut bytes = std::fs::read(RK3S).unwrap();
    bytes.extend_from_slice(b"\0rk3s v1.0.1");
    std::fs::write(&newer, &bytes).unwrap();
    release.add("v1.0.1", &newer);
    let server = HttpServer::serve(release.dir.path());
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    ok(&install(r, &download_vars(&server, "v1.0.0"), &[]));
    let unit = read(r.join("etc/systemd/system/rk3s.service"));
    let out = install(r, &download_vars(&server, "v1.0.1"), &[]);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Installed /usr/local/bin/rk3s"));
    assert_eq!(std::fs::read(r.join("usr/local/bin/rk3s")).unwrap(), bytes);
    assert_eq!(read(r.join("etc/systemd/system/rk3s.service")), unit);
}

#[test]
fn a_tampered_checksum_is_refused_and_nothing_is_installed() {
    let release = Release::new();
    release.add("v9.9.9", Path::new(RK3S));
    release.tamper_checksum("v9.9.9");
    let server = HttpServer::serve(release.dir.path());
    let root = tempfile::tempdir().unwrap();
    let out = install(root.path(), &download_vars(&server, "v9.9.9"), &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("checksum mismatch"));
    assert!(
        files(root.path()).is_empty(),
        "files written after a refusal"
    );

    // A release without this architecture's checksum is refused as clearly.
    std::fs::remove_file(
        release
            .version_dir("v9.9.9")
            .join(format!("sha256sum-{}.txt", host_arch())),
    )
    .unwrap();
    let out = install(root.path(), &download_vars(&server, "v9.9.9"), &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("failed to download"));
}

/// A directory with `program` scripts that shadow the real ones on PATH.
fn shadowed_path(fakes: &[(&str, &str)]) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    for (name, body) in fakes {
        let p = dir.path().join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    (dir, path)
}

#[test]
fn a_32_bit_arm_board_is_refused_with_the_fix() {
    let (_fakes, path) = shadowed_path(&[("uname", "echo armv7l")]);
    let root = tempfile::tempdir().unwrap();
    let out = install(
        root.path(),
        &[("INSTALL_RK3S_BINARY", RK3S), ("PATH", &path)],
        &[],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unsupported architecture armv7l") && err.contains("64-bit Raspberry Pi OS"),
        "{err}"
    );
    assert!(files(root.path()).is_empty());
}

#[test]
fn a_host_without_systemd_or_openrc_is_refused() {
    if Path::new("/run/systemd/system").exists() || Path::new("/sbin/openrc-run").exists() {
        eprintln!("skipped: this host runs systemd or openrc");
        return;
    }
    // PATH: every tool but systemctl and openrc-run.
    let bin = tempfile::tempdir().unwrap();
    for dir in std::env::var("PATH").unwrap().split(':') {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            if name == "systemctl" || name == "openrc-run" || bin.path().join(&name).exists() {
                continue;
            }
            let _ = std::os::unix::fs::symlink(e.path(), bin.path().join(&name));
        }
    }
    let scratch = tempfile::tempdir().unwrap();
    let bin_dir = scratch.path().join("bin");
    let unit_dir = scratch.path().join("units");
    let mut cmd = Command::new("sh");
    cmd.arg(script()).env_clear();
    cmd.env("PATH", bin.path())
        .env("INSTALL_RK3S_BINARY", RK3S)
        .env("INSTALL_RK3S_SKIP_START", "true")
        // Should the refusal ever fail, nothing lands in the real root.
        .env("INSTALL_RK3S_BIN_DIR", &bin_dir)
        .env("INSTALL_RK3S_SYSTEMD_DIR", &unit_dir);
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("neither systemd (systemctl) nor openrc"),
        "{err}"
    );
    assert!(!bin_dir.exists() && !unit_dir.exists());
}

#[test]
fn a_kernel_without_the_memory_cgroup_is_refused_with_the_raspberry_pi_fix() {
    for (file, text) in [
        (
            "proc/cgroups",
            "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t2\t1\t1\nmemory\t0\t1\t0\n",
        ),
        ("sys/fs/cgroup/cgroup.controllers", "cpuset cpu io pids\n"),
    ] {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join(file).parent().unwrap()).unwrap();
        std::fs::write(r.join(file), text).unwrap();
        let out = install(r, &[("INSTALL_RK3S_BINARY", RK3S)], &[]);
        assert!(!out.status.success(), "{file}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("failed to find the memory cgroup")
                && err.contains("cgroup_memory=1 cgroup_enable=memory")
                && err.contains("cmdline.txt"),
            "{err}"
        );
        assert!(!r.join("usr/local/bin/rk3s").exists());
        // A server without pods needs no memory cgroup.
        ok(&install(
            r,
            &[("INSTALL_RK3S_BINARY", RK3S)],
            &["--disable-agent"],
        ));
        // With it, the install goes through.
        std::fs::write(
            r.join(file),
            text.replace("memory\t0\t1\t0", "memory\t5\t1\t1")
                .replace("cpuset cpu", "cpuset cpu memory"),
        )
        .unwrap();
        ok(&install(r, &[("INSTALL_RK3S_BINARY", RK3S)], &[]));
    }
}

#[test]
fn openrc_install_writes_a_supervised_service_and_its_env_file() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    ok(&install(
        r,
        &[
            ("INSTALL_RK3S_BINARY", RK3S),
            ("INSTALL_RK3S_INIT", "openrc"),
            ("RK3S_TOKEN", "t0k"),
        ],
        &["--disable", "traefik", "--node-label", "a=100%"],
    ));
    let service = r.join("etc/init.d/rk3s");
    assert_eq!(mode(service.clone()), 0o755);
    let text = read(service.clone());
    assert!(text.starts_with("#!/sbin/openrc-run\n"), "{text}");
    assert!(text.contains("supervisor=supervise-daemon\n") && text.contains("respawn_delay=5\n"));
    assert!(
        text.contains("command_args=\"server '--disable' 'traefik' '--node-label' 'a=100%'\""),
        "{text}"
    );
    assert!(text.contains(". /etc/rk3s/rk3s.env"));
    assert_eq!(mode(r.join("etc/rk3s/rk3s.env")), 0o600);
    assert_eq!(read(r.join("etc/rk3s/rk3s.env")), "RK3S_TOKEN=\"t0k\"\n");
    let out = Command::new("sh").arg("-n").arg(&service).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The packaged script is what a plain server install writes.
    let plain = tempfile::tempdir().unwrap();
    ok(&install(
        plain.path(),
        &[
            ("INSTALL_RK3S_BINARY", RK3S),
            ("INSTALL_RK3S_INIT", "openrc"),
        ],
        &[],
    ));
    assert_eq!(
        read(plain.path().join("etc/init.d/rk3s")),
        read(Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/rk3s.openrc"))
    );
    let out = run_script(&r.join("usr/local/bin/rk3s-uninstall.sh"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        files(r).is_empty(),
        "left behind: {:?}",
        files(r).keys().collect::<Vec<_>>()
    );
}

/// `systemd-analyze verify` on `unit` inside a root that has systemd's own
/// units and an executable at `/usr/local/bin/rk3s`; warnings count as failures.
fn verify_unit(unit_text: &str, name: &str) {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir_all(r.join("usr/local/bin")).unwrap();
    std::fs::create_dir_all(r.join("etc/systemd/system")).unwrap();
    std::fs::create_dir_all(r.join("usr/lib/systemd")).unwrap();
    std::fs::copy("/bin/true", r.join("usr/local/bin/rk3s")).unwrap();
    let copied = Command::new("cp")
        .args(["-a", "/usr/lib/systemd/system"])
        .arg(r.join("usr/lib/systemd/"))
        .status()
        .unwrap();
    assert!(copied.success());
    let path = r.join("etc/systemd/system").join(name);
    std::fs::write(&path, unit_text).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", r.display()))
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.trim().is_empty(),
        "systemd-analyze verify {name}: {}\n{err}\n{unit_text}",
        out.status
    );
}

#[test]
fn units_pass_systemd_analyze_verify() {
    if common::privilege::which("systemd-analyze").is_none() {
        if std::env::var_os("CI").is_some() {
            panic!("systemd-analyze is missing: .ci/run installs the systemd package");
        }
        eprintln!("skipped: systemd-analyze is missing (apt-get install systemd)");
        return;
    }
    let packaging = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging");
    for name in ["rk3s.service", "rk3s-agent.service"] {
        verify_unit(&read(packaging.join(name)), name);
    }
    // Generated units with arguments that need systemd quoting.
    let root = tempfile::tempdir().unwrap();
    ok(&install(
        root.path(),
        &[("INSTALL_RK3S_BINARY", RK3S)],
        &[
            "server",
            "--tls-san",
            "pi's box 100%",
            "--node-label",
            "cost=$5",
        ],
    ));
    verify_unit(
        &read(root.path().join("etc/systemd/system/rk3s.service")),
        "rk3s.service",
    );
    ok(&install(
        root.path(),
        &[
            ("INSTALL_RK3S_BINARY", RK3S),
            ("RK3S_URL", "https://10.0.0.1:6443"),
            ("RK3S_TOKEN", "abc"),
        ],
        &[],
    ));
    verify_unit(
        &read(root.path().join("etc/systemd/system/rk3s-agent.service")),
        "rk3s-agent.service",
    );
    // The bad unit a typo would make is caught (the check is not vacuous).
    let bad = read(packaging.join("rk3s.service")).replace("KillMode=process", "KillMode=proces");
    let caught = std::panic::catch_unwind(|| verify_unit(&bad, "rk3s.service"));
    assert!(caught.is_err(), "systemd-analyze accepted KillMode=proces");
}
