//! The `rk3s` binary's command line, run as a user would run it.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::loopback::{free_port, server_command, RK3S};

/// Runs rk3s with a clean `RK3S_*`-free environment plus `vars`, reading
/// no config file unless the test gives one.
fn rk3s(args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(RK3S);
    cmd.args(args);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("RK3S_") {
            cmd.env_remove(k);
        }
    }
    // An empty file: never the real /etc/rk3s/config.yaml.
    cmd.env("RK3S_CONFIG_FILE", "/dev/null");
    cmd.env_remove("RUST_LOG");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().expect("failed to run rk3s")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a usage error (exit 2) whose message contains every `needle`.
fn refused(o: &Output, needles: &[&str]) {
    assert_eq!(
        o.status.code(),
        Some(2),
        "stdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
    let err = stderr(o);
    for n in needles {
        assert!(err.contains(n), "missing {n:?} in: {err}");
    }
}

fn print_config(args: &[&str], vars: &[(&str, &str)]) -> String {
    let mut all = vec!["server", "--print-config", "--node-name", "test-node"];
    all.extend_from_slice(args);
    let o = rk3s(&all, vars);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
}

#[test]
fn help_lists_commands_and_server_flags() {
    let o = rk3s(&["--help"], &[]);
    assert!(o.status.success());
    let help = stdout(&o);
    for cmd in [
        "server",
        "agent",
        "token",
        "check-config",
        "kubectl",
        "completion",
    ] {
        assert!(help.contains(cmd), "{cmd} missing from:\n{help}");
    }
    let help = stdout(&rk3s(&["server", "--help"], &[]));
    for flag in [
        "--data-dir",
        "--bind-address",
        "--https-listen-port",
        "--advertise-address",
        "--tls-san",
        "--cluster-cidr",
        "--service-cidr",
        "--cluster-dns",
        "--cluster-domain",
        "--service-node-port-range",
        "--token",
        "--token-file",
        "--write-kubeconfig",
        "--write-kubeconfig-mode",
        "--disable",
        "--disable-agent",
        "--node-name",
        "--node-ip",
        "--node-label",
        "--node-taint",
        "--flannel-backend",
        "--container-runtime-endpoint",
        "--debug",
        "--config",
        "RK3S_CLUSTER_CIDR",
        "10.42.0.0/16",
    ] {
        assert!(
            help.contains(flag),
            "{flag} missing from server --help:\n{help}"
        );
    }
    let help = stdout(&rk3s(&["agent", "--help"], &[]));
    assert!(
        help.contains("--server") && help.contains("RK3S_URL") && help.contains("RK3S_TOKEN"),
        "{help}"
    );
}

#[test]
fn version_prints_the_crate_version() {
    let o = rk3s(&["--version"], &[]);
    assert_eq!(
        stdout(&o).trim(),
        format!("rk3s {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn bad_flags_give_clear_messages() {
    refused(
        &rk3s(&["server", "--cluster-cidr", "10.42.0.0/33"], &[]),
        &["--cluster-cidr", "prefix length must be at most 32"],
    );
    refused(
        &rk3s(&["server", "--disable", "ingress"], &[]),
        &[
            "--disable",
            "ingress",
            "traefik, servicelb, coredns, local-storage, metrics-server, network-policy",
        ],
    );
    refused(
        &rk3s(&["server", "--node-taint", "gpu=true:Sometimes"], &[]),
        &["--node-taint", "NoSchedule, PreferNoSchedule, NoExecute"],
    );
    refused(
        &rk3s(&["server", "--node-label", "no-equals"], &[]),
        &["--node-label", "key=value"],
    );
    refused(
        &rk3s(&["server", "--https-listen-port", "0"], &[]),
        &["--https-listen-port", "between 1 and 65535"],
    );
    refused(
        &rk3s(&["server", "--cluster-dns", "10.50.0.10"], &[]),
        &["--cluster-dns", "outside --service-cidr"],
    );
    refused(
        &rk3s(
            &[
                "server",
                "--service-cidr",
                "10.42.128.0/17",
                "--cluster-dns",
                "10.42.128.10",
            ],
            &[],
        ),
        &["overlap"],
    );
    refused(
        &rk3s(&["server", "--service-node-port-range", "40000-30000"], &[]),
        &["--service-node-port-range", "lower"],
    );
    refused(
        &rk3s(&["server", "--bind-address", "localhost"], &[]),
        &["--bind-address", "not an IPv4 or IPv6 address"],
    );
    refused(
        &rk3s(&["server", "--write-kubeconfig-mode", "rw"], &[]),
        &["--write-kubeconfig-mode", "octal"],
    );
    refused(
        &rk3s(&["server"], &[("RK3S_CLUSTER_CIDR", "10.42.0.0/99")]),
        &["--cluster-cidr", "environment variable RK3S_CLUSTER_CIDR"],
    );
    // Unknown flags are clap's usage errors (also exit 2).
    refused(
        &rk3s(&["server", "--clutser-cidr", "10.1.0.0/16"], &[]),
        &["--clutser-cidr"],
    );
}

#[test]
fn agent_needs_an_https_server_and_a_token() {
    refused(&rk3s(&["agent"], &[]), &["--server", "RK3S_URL"]);
    refused(
        &rk3s(&["agent"], &[("RK3S_URL", "https://10.0.0.1:6443")]),
        &["--token", "RK3S_TOKEN"],
    );
    refused(
        &rk3s(&["agent", "-s", "http://10.0.0.1:6443", "-t", "x"], &[]),
        &["--server", "https://"],
    );
    let o = rk3s(
        &["agent", "--print-config", "--node-name", "n1"],
        &[
            ("RK3S_URL", "https://10.0.0.1:6443"),
            ("RK3S_TOKEN", "s3cret"),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let yaml = stdout(&o);
    assert!(
        yaml.contains("server: https://10.0.0.1:6443") && !yaml.contains("s3cret"),
        "{yaml}"
    );
}

/// Kills a child process if the test panics before it is stopped.
struct KillOnPanic(u32);
impl Drop for KillOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
        }
    }
}

#[test]
fn agent_retries_an_unreachable_server_until_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("node/password");
    let child = Command::new(RK3S)
        .args(["agent", "--node-name", "n1", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("RK3S_URL", format!("https://127.0.0.1:{}", free_port()))
        .env("RK3S_TOKEN", "t")
        .env("RK3S_NODE_PASSWORD_FILE", &password)
        .env("RK3S_CONFIG_FILE", "/dev/null")
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let _guard = KillOnPanic(child.id());
    std::thread::sleep(std::time::Duration::from_millis(2500));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let log = stderr(&out);
    assert!(
        log.matches("failed to fetch /cacerts").count() >= 2,
        "retries are logged: {log}"
    );
    assert!(
        log.contains("stopped while waiting for the server"),
        "{log}"
    );
    assert!(password.is_file(), "the node password is created first");
}

#[test]
fn token_commands_explain_what_is_missing() {
    let o = rk3s(
        &["token", "list", "--kubeconfig", "/nonexistent/rk3s.yaml"],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("/nonexistent/rk3s.yaml") && err.contains("--kubeconfig"),
        "{err}"
    );
    let o = rk3s(&["token", "create", "--ttl", "soon"], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is not a duration"), "{}", stderr(&o));
    let o = rk3s(&["token", "list", "--output", "xml"], &[]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "bad flag values are still usage errors"
    );
    let o = rk3s(&["token", "generate"], &[]);
    assert!(o.status.success());
    let token = stdout(&o);
    let (id, secret) = token.trim().split_once('.').unwrap();
    assert_eq!((id.len(), secret.len()), (6, 16), "{token}");
}

/// Starts `rk3s server` on `data` and waits for its kubeconfig; returns the child.
fn start_server(data: &Path, kubeconfig: &Path, port: u16, extra: &[&str]) -> std::process::Child {
    let _ = std::fs::remove_file(kubeconfig);
    let child = server_command(data, kubeconfig, port, extra)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !kubeconfig.is_file() {
        if std::time::Instant::now() > deadline {
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            panic!("the kubeconfig never appeared");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child
}

fn stop(child: std::process::Child) -> Output {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait_with_output().unwrap()
}

#[test]
fn server_keeps_its_join_token_and_bootstrap_tokens_across_restarts() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let kubeconfig = dir.path().join("rk3s.yaml");
    let port = free_port();
    let token_file = data.join("server/token");

    let child = start_server(&data, &kubeconfig, port, &[]);
    let guard = KillOnPanic(child.id());
    let token = std::fs::read_to_string(&token_file).unwrap();
    assert!(
        token.starts_with("K10") && token.contains("::server:"),
        "{token}"
    );
    assert_eq!(
        std::fs::read_to_string(data.join("server/node-token")).unwrap(),
        token
    );
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let kc = kubeconfig.to_str().unwrap();
    let created = rk3s(&["token", "create", "--kubeconfig", kc, "--ttl", "2h"], &[]);
    assert!(created.status.success(), "{}", stderr(&created));
    let bootstrap = stdout(&created);
    let hash = token.split("::").next().unwrap();
    assert!(bootstrap.starts_with(hash), "{bootstrap} vs {token}");
    let out = stop(child);
    drop(guard);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("join token written"),
        "{}",
        stderr(&out)
    );

    // A restart keeps the token and the bootstrap tokens.
    let child = start_server(&data, &kubeconfig, port, &[]);
    let guard = KillOnPanic(child.id());
    assert_eq!(std::fs::read_to_string(&token_file).unwrap(), token);
    let listed = rk3s(&["token", "list", "--kubeconfig", kc], &[]);
    let secret_part = bootstrap.trim().rsplit("::").next().unwrap().to_string();
    assert!(
        stdout(&listed).contains(&secret_part),
        "{}",
        stdout(&listed)
    );
    let out = stop(child);
    drop(guard);
    assert!(out.status.success(), "{}", stderr(&out));

    // --token replaces the secret; the CA hash stays.
    let child = start_server(&data, &kubeconfig, port, &["--token", "my-own-secret"]);
    let guard = KillOnPanic(child.id());
    let replaced = std::fs::read_to_string(&token_file).unwrap();
    assert_eq!(replaced.trim(), format!("{hash}::server:my-own-secret"));
    stop(child);
    drop(guard);
}

#[test]
fn precedence_is_flag_then_env_then_file_then_default() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(
        &file,
        "cluster-cidr: 10.100.0.0/16\nservice-cidr: 10.101.0.0/16\ncluster-dns: 10.101.0.10\nhttps-listen-port: 7443\n\
         tls-san:\n  - a.example\n  - 192.168.1.5\ndisable: servicelb\ndebug: true\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let env = [
        ("RK3S_CONFIG_FILE", f),
        ("RK3S_CLUSTER_CIDR", "10.200.0.0/16"),
        ("RK3S_HTTPS_LISTEN_PORT", "8443"),
    ];
    let yaml = print_config(&["--cluster-cidr", "10.250.0.0/16"], &env);
    assert!(
        yaml.contains("cluster-cidr: 10.250.0.0/16"),
        "flag beats env and file:\n{yaml}"
    );
    assert!(
        yaml.contains("https-listen-port: 8443"),
        "env beats file:\n{yaml}"
    );
    assert!(
        yaml.contains("service-cidr: 10.101.0.0/16"),
        "file beats default:\n{yaml}"
    );
    assert!(
        yaml.contains("- a.example\n- 192.168.1.5")
            && yaml.contains("- servicelb")
            && yaml.contains("debug: true"),
        "{yaml}"
    );
    assert!(
        yaml.contains("cluster-domain: cluster.local"),
        "default:\n{yaml}"
    );

    let yaml = print_config(&["-c", f], &[]);
    assert!(
        yaml.contains("cluster-cidr: 10.100.0.0/16") && yaml.contains("https-listen-port: 7443"),
        "{yaml}"
    );
}

#[test]
fn config_file_errors_name_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    let f = file.to_str().unwrap();
    std::fs::write(
        &file,
        "cluster-cidr: 10.100.0.0/16\nclustr-dns: 10.43.0.10\n",
    )
    .unwrap();
    refused(
        &rk3s(&["server", "-c", f], &[]),
        &["unknown key \"clustr-dns\"", f],
    );
    std::fs::write(&file, "https-listen-port: [1, 2]\n").unwrap();
    refused(
        &rk3s(&["server", "-c", f], &[]),
        &["https-listen-port", f, "expected a single"],
    );
    std::fs::write(&file, "cluster-cidr: 10.100.0.0/40\n").unwrap();
    refused(
        &rk3s(&["server", "-c", f], &[]),
        &["--cluster-cidr", f, "at most 32"],
    );
    let missing = dir.path().join("missing.yaml");
    refused(
        &rk3s(&["server", "--config", missing.to_str().unwrap()], &[]),
        &["missing.yaml"],
    );
}

#[test]
fn kubectl_passes_arguments_through() {
    let dir = tempfile::tempdir().unwrap();
    // A stand-in kubectl that records its arguments and KUBECONFIG, and exits 7.
    let fake = dir.path().join("kubectl");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho \"args:$*\"\necho \"kubeconfig:$KUBECONFIG\"\nexit 7\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:/usr/bin:/bin", dir.path().display());
    let o = Command::new(RK3S)
        .args([
            "kubectl",
            "get",
            "pods",
            "-A",
            "--help",
            "--version",
            "-o=wide",
        ])
        .env("PATH", &path)
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(7));
    assert_eq!(
        stdout(&o),
        "args:get pods -A --help --version -o=wide\nkubeconfig:/etc/rk3s/rk3s.yaml\n"
    );
    let o = Command::new(RK3S)
        .args(["kubectl", "x"])
        .env("PATH", &path)
        .env("KUBECONFIG", "/tmp/kc")
        .output()
        .unwrap();
    assert!(stdout(&o).contains("kubeconfig:/tmp/kc"));

    let o = Command::new(RK3S)
        .args(["kubectl", "get", "nodes"])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(127));
    assert!(stderr(&o).contains("kubectl was not found on PATH"));
}

#[test]
fn kubectl_symlink_to_rk3s_does_not_loop() {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(RK3S, dir.path().join("kubectl")).unwrap();
    let o = Command::new(dir.path().join("kubectl"))
        .arg("version")
        .env("PATH", dir.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(127));
    assert!(stderr(&o).contains("kubectl was not found on PATH"));
}

#[test]
fn kubectl_version_client_runs_the_real_kubectl() {
    if !Path::new("/usr/bin/kubectl").exists() && which_kubectl().is_none() {
        eprintln!("skipped: no kubectl on PATH");
        return;
    }
    let o = rk3s(&["kubectl", "version", "--client"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("Client Version"), "{}", stdout(&o));
}

fn which_kubectl() -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
}

#[test]
fn completion_prints_a_script() {
    let o = rk3s(&["completion", "bash"], &[]);
    assert!(o.status.success());
    let script = stdout(&o);
    assert!(
        script.contains("_rk3s()")
            && script.contains("complete")
            && script.contains("check-config"),
        "{script}"
    );
    assert_eq!(rk3s(&["completion", "tcsh"], &[]).status.code(), Some(2));
}

#[test]
fn check_config_prints_one_line_per_item_and_a_summary() {
    let o = rk3s(&["check-config"], &[]);
    let out = stdout(&o);
    let lines: Vec<_> = out.lines().collect();
    assert!(lines.len() >= 10, "{out}");
    for line in &lines[..lines.len() - 1] {
        assert!(
            ["OK  ", "WARN", "FAIL"].iter().any(|s| line.starts_with(s)),
            "bad line {line:?}"
        );
    }
    assert!(
        !out.contains('\x1b'),
        "no colour when stdout is not a terminal"
    );
    let summary = lines.last().unwrap();
    assert!(
        summary.contains(" OK, ") && summary.contains(" FAIL"),
        "{summary}"
    );
    let failed = lines.iter().any(|l| l.starts_with("FAIL"));
    assert_eq!(o.status.success(), !failed);
}

#[test]
fn server_serves_the_api_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let kubeconfig = dir.path().join("rk3s.yaml");
    let port = free_port();
    let child = server_command(&data, &kubeconfig, port, &[])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the server if an assertion fails before the SIGTERM below.
    struct KillOnPanic(u32);
    impl Drop for KillOnPanic {
        fn drop(&mut self) {
            if std::thread::panicking() {
                unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
            }
        }
    }
    let _guard = KillOnPanic(child.id());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !kubeconfig.is_file() {
        assert!(
            std::time::Instant::now() < deadline,
            "the kubeconfig never appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&kubeconfig).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the kubeconfig is private by default");
    if std::path::Path::new("/usr/bin/kubectl").exists() {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["get", "ns", "-o", "name"])
            .env("KUBECACHEDIR", dir.path().join("cache"))
            .output()
            .unwrap();
        let names = String::from_utf8_lossy(&out.stdout);
        assert!(
            names.contains("namespace/kube-system"),
            "{names} {}",
            stderr(&out)
        );
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    for sub in ["server/db", "server/tls", "agent"] {
        assert!(data.join(sub).is_dir(), "{sub}");
    }
    assert!(data.join("server/db/state.db").is_file());
    let log = stderr(&out);
    assert!(
        log.contains("API server serving") && log.contains("shutting down"),
        "{log}"
    );
}
