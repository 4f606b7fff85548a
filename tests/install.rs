//! install.sh, run for real into a temporary root (`INSTALL_RK3S_ROOT`), so
//! it never touches this machine's /usr/local/bin, systemd or /etc.

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
    let out = Command::new("sh").arg(&uninstall).output().unwrap();
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

/// Lays out a release directory `<dir>/v9.9.9/{rk3s-<arch>,sha256sum-<arch>.txt}`.
fn release(dir: &Path, checksum_of: &[u8]) -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => panic!("no release arch for {other}"),
    };
    let v = dir.join("v9.9.9");
    std::fs::create_dir_all(&v).unwrap();
    std::fs::copy(RK3S, v.join(format!("rk3s-{arch}"))).unwrap();
    let tmp = dir.join("sum-input");
    std::fs::write(&tmp, checksum_of).unwrap();
    let sum = Command::new("sha256sum").arg(&tmp).output().unwrap();
    let hash = String::from_utf8(sum.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    std::fs::write(
        v.join(format!("sha256sum-{arch}.txt")),
        format!("{hash}  rk3s-{arch}\n"),
    )
    .unwrap();
    format!("file://{}", dir.display())
}

#[test]
fn download_is_verified_against_the_published_sha256() {
    let releases = tempfile::tempdir().unwrap();
    let url = release(releases.path(), &std::fs::read(RK3S).unwrap());
    let root = tempfile::tempdir().unwrap();
    ok(&install(
        root.path(),
        &[
            ("INSTALL_RK3S_DOWNLOAD_URL", &url),
            ("INSTALL_RK3S_VERSION", "v9.9.9"),
        ],
        &[],
    ));
    assert_eq!(
        std::fs::read(root.path().join("usr/local/bin/rk3s")).unwrap(),
        std::fs::read(RK3S).unwrap()
    );

    let bad = tempfile::tempdir().unwrap();
    let url = release(bad.path(), b"something else");
    let root = tempfile::tempdir().unwrap();
    let out = install(
        root.path(),
        &[
            ("INSTALL_RK3S_DOWNLOAD_URL", &url),
            ("INSTALL_RK3S_VERSION", "v9.9.9"),
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("checksum mismatch"));
    assert!(!root.path().join("usr/local/bin/rk3s").exists());
}
