//! The OCI runtime spec for a container: Kubernetes' resolution of command,
//! args, env and user against the image config, over a Linux default close
//! to containerd's (namespaces, default capabilities, masked and read-only
//! paths, the usual /proc, /dev and /sys mounts; rlimits inherited from
//! containerd as its CRI plugin does).
//!
//! Built as JSON with `serde_json`: containerd stores the bytes as they are
//! and runc reads them, so no typed model is needed here.
//!
//! Partial: privileged containers get every capability, an unmasked `/sys`
//! and an open device cgroup, but the host's devices are not added to
//! `/dev`; no seccomp or AppArmor profile is applied.

use serde_json::{json, Value};

use super::{ContainerSpec, ImageConfig};

/// containerd's (and Docker's) default capability set.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability a current kernel knows, in number order.
const ALL_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];

const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

const DEFAULT_PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const DEFAULT_CPU_PERIOD_US: u64 = 100_000;

/// A spec that cannot be turned into a runnable container.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("no command to run: the pod gives no command or args and the image has no ENTRYPOINT or CMD")]
    NoCommand,
    #[error("unknown capability {0:?}")]
    UnknownCapability(String),
    #[error("image user {0:?} is not numeric and runAsUser is not set (resolve it with numeric_user first)")]
    NamedUser(String),
    #[error("image user {0:?} is not in the image's /etc/passwd or /etc/group")]
    UnknownUser(String),
}

/// The argv Kubernetes runs: `command` replaces ENTRYPOINT, `args`
/// replaces CMD, and a `command` without `args` drops the image CMD.
pub fn resolve_argv(
    command: &[String],
    args: &[String],
    image: &ImageConfig,
) -> Result<Vec<String>, SpecError> {
    let argv: Vec<String> = match (command.is_empty(), args.is_empty()) {
        (true, true) => image.entrypoint.iter().chain(&image.cmd).cloned().collect(),
        (true, false) => image.entrypoint.iter().chain(args).cloned().collect(),
        (false, _) => command.iter().chain(args).cloned().collect(),
    };
    if argv.is_empty() {
        return Err(SpecError::NoCommand);
    }
    Ok(argv)
}

/// The image env with the pod's entries merged over it: a name set by the
/// pod replaces the image's value in place; new names follow in pod order.
pub fn merge_env(image_env: &[String], pod_env: &[(String, String)]) -> Vec<String> {
    let mut out: Vec<String> = image_env.to_vec();
    for (name, value) in pod_env {
        let entry = format!("{name}={value}");
        match out
            .iter_mut()
            .find(|e| e.split('=').next() == Some(name.as_str()))
        {
            Some(existing) => *existing = entry,
            None => out.push(entry),
        }
    }
    if !out.iter().any(|e| e.starts_with("PATH=")) {
        out.insert(0, DEFAULT_PATH_ENV.to_string());
    }
    out
}

/// `CAP_X` for `X` or `CAP_X`, checked against the known set.
fn normalize_cap(name: &str) -> Result<String, SpecError> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    if ALL_CAPABILITIES.contains(&full.as_str()) {
        Ok(full)
    } else {
        Err(SpecError::UnknownCapability(name.to_string()))
    }
}

/// The capability set: the default (or all when privileged), plus `add`,
/// minus `drop`; `ALL` works in either list as in Kubernetes.
pub fn capabilities(
    privileged: bool,
    add: &[String],
    drop: &[String],
) -> Result<Vec<String>, SpecError> {
    if privileged {
        return Ok(ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect());
    }
    let is_all = |c: &String| c.eq_ignore_ascii_case("ALL");
    let mut caps: Vec<String> = if add.iter().any(is_all) {
        ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect()
    } else {
        DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect()
    };
    for c in add.iter().filter(|c| !is_all(c)) {
        let c = normalize_cap(c)?;
        if !caps.contains(&c) {
            caps.push(c);
        }
    }
    if drop.iter().any(is_all) {
        caps.clear();
        // Kubernetes: drop ALL then add some keeps the added ones.
        for c in add.iter().filter(|c| !is_all(c)) {
            caps.push(normalize_cap(c)?);
        }
    } else {
        for c in drop {
            let c = normalize_cap(c)?;
            caps.retain(|x| *x != c);
        }
    }
    Ok(caps)
}

/// uid and gid: `runAsUser`/`runAsGroup` win, else the image's numeric
/// `uid[:gid]`, else root.
pub fn resolve_user(spec: &ContainerSpec, image: &ImageConfig) -> Result<(u32, u32), SpecError> {
    let (mut uid, mut gid) = (0, 0);
    if !image.user.is_empty() {
        let mut parts = image.user.splitn(2, ':');
        let user = parts.next().unwrap_or_default();
        match user.parse::<u32>() {
            Ok(u) => uid = u,
            Err(_) if spec.run_as_user.is_some() => {}
            Err(_) => return Err(SpecError::NamedUser(image.user.clone())),
        }
        if let Some(g) = parts.next().and_then(|g| g.parse().ok()) {
            gid = g;
        }
    }
    if let Some(u) = spec.run_as_user {
        uid = u;
    }
    if let Some(g) = spec.run_as_group {
        gid = g;
    }
    Ok((uid, gid))
}

/// Whether an image `user` (`uid`, `uid:gid`) needs no lookup.
pub fn is_numeric_user(user: &str) -> bool {
    user.is_empty()
        || user
            .split(':')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `user[:group]` as `uid:gid`, resolving names with the image's
/// `/etc/passwd` and `/etc/group`; without a group the user's primary
/// group applies (0 for a uid the image does not list), as Docker does.
pub fn numeric_user(user: &str, passwd: &str, group: &str) -> Result<String, SpecError> {
    let unknown = || SpecError::UnknownUser(user.to_string());
    let entries = |text: &str| -> Vec<Vec<String>> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split(':').map(str::to_string).collect())
            .filter(|f: &Vec<String>| f.len() >= 4)
            .collect()
    };
    let (users, groups) = (entries(passwd), entries(group));
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let row = users.iter().find(|f| f[0] == u || f[2] == u);
    let uid = match u.parse::<u32>() {
        Ok(n) => n,
        Err(_) => row.and_then(|f| f[2].parse().ok()).ok_or_else(unknown)?,
    };
    let gid = match g {
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups
                .iter()
                .find(|f| f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(unknown)?,
        },
        None => row.and_then(|f| f[3].parse().ok()).unwrap_or(0),
    };
    Ok(format!("{uid}:{gid}"))
}

/// The cgroup a container runs in (absolute: cgroupfs driver, v1 or v2).
pub fn cgroup_path(pod_uid: &str, container_id: &str) -> String {
    format!("/rk3s/pods/{pod_uid}/{container_id}")
}

/// The complete OCI runtime spec for `spec` in `image`, as JSON.
pub fn runtime_spec(
    spec: &ContainerSpec,
    image: &ImageConfig,
    container_id: &str,
) -> Result<Value, SpecError> {
    let args = resolve_argv(&spec.command, &spec.args, image)?;
    let env = merge_env(&image.env, &spec.env);
    let (uid, gid) = resolve_user(spec, image)?;
    let caps = capabilities(spec.privileged, &spec.cap_add, &spec.cap_drop)?;
    let cwd = spec
        .working_dir
        .clone()
        .filter(|d| !d.is_empty())
        .or_else(|| Some(image.working_dir.clone()).filter(|d| !d.is_empty()))
        .unwrap_or_else(|| "/".to_string());

    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", if spec.privileged { "rw" } else { "ro" }]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", if spec.privileged { "rw" } else { "ro" }]}),
    ];
    for m in &spec.mounts {
        let mut options = vec!["rbind", "rprivate"];
        options.push(if m.read_only { "ro" } else { "rw" });
        mounts.push(json!({
            "destination": m.destination,
            "type": "bind",
            "source": m.source,
            "options": options,
        }));
    }

    // A namespace left out of the list is the host's.
    let mut namespaces = Vec::new();
    for (host, path, kind) in [
        (spec.host_pid, &spec.pid_ns_path, "pid"),
        (spec.host_ipc, &spec.ipc_ns_path, "ipc"),
    ] {
        match path {
            _ if host => {}
            Some(p) => namespaces.push(json!({"type": kind, "path": p})),
            None => namespaces.push(json!({"type": kind})),
        }
    }
    namespaces.push(json!({"type": "uts"}));
    namespaces.push(json!({"type": "mount"}));
    namespaces.push(match &spec.netns_path {
        Some(path) => json!({"type": "network", "path": path}),
        None => json!({"type": "network"}),
    });
    if spec.netns_path.is_none() {
        // No path means "share the host's": leave the namespace out.
        namespaces.pop();
    }

    let mut resources = json!({"devices": [{"allow": spec.privileged, "access": "rwm"}]});
    if let Some(limit) = spec.memory_limit_bytes {
        // Swap equal to the limit: no swap on top, so the OOM killer acts.
        resources["memory"] = json!({"limit": limit, "swap": limit});
    }
    let mut cpu = serde_json::Map::new();
    if let Some(shares) = spec.cpu_shares {
        cpu.insert("shares".into(), json!(shares));
    }
    if let Some(quota) = spec.cpu_quota_us {
        cpu.insert("quota".into(), json!(quota));
        cpu.insert(
            "period".into(),
            json!(spec.cpu_period_us.unwrap_or(DEFAULT_CPU_PERIOD_US)),
        );
    }
    if !cpu.is_empty() {
        resources["cpu"] = Value::Object(cpu);
    }

    let mut linux = json!({
        "namespaces": namespaces,
        "cgroupsPath": cgroup_path(&spec.pod_uid, container_id),
        "resources": resources,
    });
    if !spec.privileged {
        linux["maskedPaths"] = json!(MASKED_PATHS);
        linux["readonlyPaths"] = json!(READONLY_PATHS);
    }

    Ok(json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": spec.tty,
            "user": {"uid": uid, "gid": gid},
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
            },
            // No rlimits: like containerd's CRI plugin, containers inherit
            // the daemon's (k3s runs containerd with LimitNOFILE=1048576).
            // A fixed value fails where the host's hard limit is lower.
            "rlimits": [],
            "noNewPrivileges": spec.no_new_privileges,
        },
        "root": {"path": "rootfs", "readonly": spec.read_only_root_fs},
        "hostname": spec.hostname,
        "mounts": mounts,
        "linux": linux,
    }))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::agent::runtime::Mount;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn image(entrypoint: &[&str], cmd: &[&str]) -> ImageConfig {
        ImageConfig {
            entrypoint: s(entrypoint),
            cmd: s(cmd),
            env: s(&["PATH=/bin", "A=image"]),
            working_dir: "/srv".into(),
            user: String::new(),
        }
    }

    #[test]
    fn argv_follows_kubernetes_rules() {
        let img = image(&["/entry"], &["--default"]);
        let cases: &[(&[&str], &[&str], &[&str])] = &[
            (&[], &[], &["/entry", "--default"]),
            (&[], &["--x"], &["/entry", "--x"]),
            (&["/bin/sh"], &[], &["/bin/sh"]),
            (&["/bin/sh"], &["-c", "true"], &["/bin/sh", "-c", "true"]),
        ];
        for (command, args, want) in cases {
            assert_eq!(
                resolve_argv(&s(command), &s(args), &img).unwrap(),
                s(want),
                "{command:?} {args:?}"
            );
        }
        assert_eq!(
            resolve_argv(&[], &[], &image(&[], &[])),
            Err(SpecError::NoCommand)
        );
    }

    #[test]
    fn env_merges_over_image() {
        let env = merge_env(
            &s(&["PATH=/bin", "A=image", "B=keep"]),
            &[("A".into(), "pod".into()), ("C".into(), "new=x".into())],
        );
        assert_eq!(env, s(&["PATH=/bin", "A=pod", "B=keep", "C=new=x"]));
        assert!(merge_env(&[], &[]).contains(&DEFAULT_PATH_ENV.to_string()));
    }

    #[test]
    fn capabilities_add_drop_and_all() {
        let caps = capabilities(false, &s(&["NET_ADMIN"]), &s(&["CAP_KILL", "net_raw"])).unwrap();
        assert!(caps.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(!caps.contains(&"CAP_KILL".to_string()));
        assert!(!caps.contains(&"CAP_NET_RAW".to_string()));
        assert!(caps.contains(&"CAP_CHOWN".to_string()));
        assert_eq!(
            capabilities(false, &s(&["NET_BIND_SERVICE"]), &s(&["ALL"])).unwrap(),
            s(&["CAP_NET_BIND_SERVICE"])
        );
        assert_eq!(
            capabilities(true, &[], &s(&["ALL"])).unwrap().len(),
            ALL_CAPABILITIES.len()
        );
        assert_eq!(
            capabilities(false, &s(&["BOGUS"]), &[]),
            Err(SpecError::UnknownCapability("BOGUS".into()))
        );
    }

    #[test]
    fn user_resolution() {
        let mut img = image(&[], &["sh"]);
        let mut spec = ContainerSpec::default();
        assert_eq!(resolve_user(&spec, &img), Ok((0, 0)));
        img.user = "1000:50".into();
        assert_eq!(resolve_user(&spec, &img), Ok((1000, 50)));
        img.user = "nobody".into();
        assert_eq!(
            resolve_user(&spec, &img),
            Err(SpecError::NamedUser("nobody".into()))
        );
        spec.run_as_user = Some(7);
        assert_eq!(resolve_user(&spec, &img), Ok((7, 0)));
    }

    #[test]
    fn named_users_resolve_with_the_image_files() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nweb:x:101:102::/:/bin/false\n";
        let group = "root:x:0:\nweb:x:102:\nstaff:x:50:\n";
        assert!(
            is_numeric_user("")
                && is_numeric_user("1:2")
                && !is_numeric_user("web")
                && !is_numeric_user("1:staff")
        );
        assert_eq!(numeric_user("web", passwd, group), Ok("101:102".into()));
        assert_eq!(
            numeric_user("web:staff", passwd, group),
            Ok("101:50".into())
        );
        assert_eq!(numeric_user("101", passwd, group), Ok("101:102".into()));
        assert_eq!(numeric_user("7:staff", passwd, group), Ok("7:50".into()));
        assert_eq!(
            numeric_user("ghost", passwd, group),
            Err(SpecError::UnknownUser("ghost".into()))
        );
    }

    #[test]
    fn spec_carries_mounts_netns_resources_and_security() {
        let mut spec = ContainerSpec::new("uid-1", "web", "default", "app", "busybox");
        spec.command = s(&["sleep", "1"]);
        spec.netns_path = Some(PathBuf::from("/var/run/netns/pod1"));
        spec.mounts.push(Mount {
            source: "/host/data".into(),
            destination: "/data".into(),
            read_only: true,
        });
        spec.memory_limit_bytes = Some(64 << 20);
        spec.cpu_quota_us = Some(50_000);
        spec.read_only_root_fs = true;
        spec.no_new_privileges = true;
        let v = runtime_spec(&spec, &image(&[], &["sh"]), "cid").unwrap();
        assert_eq!(v["process"]["args"], json!(["sleep", "1"]));
        assert_eq!(v["process"]["cwd"], "/srv");
        assert_eq!(v["process"]["noNewPrivileges"], true);
        assert_eq!(v["root"], json!({"path": "rootfs", "readonly": true}));
        assert_eq!(v["hostname"], "web");
        assert_eq!(v["linux"]["cgroupsPath"], "/rk3s/pods/uid-1/cid");
        assert_eq!(v["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(
            v["linux"]["resources"]["cpu"],
            json!({"quota": 50_000, "period": 100_000})
        );
        let ns = v["linux"]["namespaces"].as_array().unwrap();
        assert!(ns.contains(&json!({"type": "network", "path": "/var/run/netns/pod1"})));
        let bind = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/data")
            .unwrap();
        assert_eq!(bind["options"], json!(["rbind", "rprivate", "ro"]));
        assert!(v["linux"]["maskedPaths"]
            .as_array()
            .unwrap()
            .contains(&json!("/proc/kcore")));
    }

    #[test]
    fn host_pid_and_ipc_omit_their_namespaces() {
        let mut spec = ContainerSpec::new("u", "p", "ns", "c", "img");
        spec.host_pid = true;
        spec.host_ipc = true;
        let v = runtime_spec(&spec, &image(&[], &["sh"]), "cid").unwrap();
        let types: Vec<&str> = v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|n| n["type"].as_str())
            .collect();
        assert_eq!(types, ["uts", "mount"]);
    }

    #[test]
    fn a_target_containers_pid_and_ipc_namespaces_are_joined() {
        let mut spec = ContainerSpec::new("u", "p", "ns", "debugger", "img");
        spec.pid_ns_path = Some(PathBuf::from("/proc/42/ns/pid"));
        spec.ipc_ns_path = Some(PathBuf::from("/proc/42/ns/ipc"));
        let v = runtime_spec(&spec, &image(&[], &["sh"]), "cid").unwrap();
        let ns = v["linux"]["namespaces"].as_array().unwrap();
        assert!(ns.contains(&json!({"type": "pid", "path": "/proc/42/ns/pid"})));
        assert!(ns.contains(&json!({"type": "ipc", "path": "/proc/42/ns/ipc"})));
    }

    #[test]
    fn containers_of_a_pod_sharing_processes_join_one_pid_namespace() {
        let pid = |name: &str| {
            let mut spec = ContainerSpec::new("u", "p", "ns", name, "img");
            spec.pid_ns_path = Some(PathBuf::from("/proc/7/ns/pid"));
            let v = runtime_spec(&spec, &image(&[], &["sh"]), name).unwrap();
            let ns = v["linux"]["namespaces"].as_array().unwrap().clone();
            assert!(ns.contains(&json!({"type": "ipc"})), "IPC stays the container's own");
            ns.into_iter().find(|n| n["type"] == "pid").unwrap()
        };
        assert_eq!(pid("a"), json!({"type": "pid", "path": "/proc/7/ns/pid"}));
        assert_eq!(pid("a"), pid("b"));
    }

    #[test]
    fn host_network_omits_the_namespace() {
        let spec = ContainerSpec::new("u", "p", "n", "c", "i");
        let v = runtime_spec(&spec, &image(&[], &["sh"]), "cid").unwrap();
        let ns = v["linux"]["namespaces"].as_array().unwrap();
        assert!(!ns.iter().any(|n| n["type"] == "network"));
        assert_eq!(ns.len(), 4);
    }
}
