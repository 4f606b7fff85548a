//! A container's [`ContainerSpec`] from its pod spec: command and args with
//! `$(VAR)` expansion, env, working dir, mounts (`/etc/hosts`,
//! `/etc/hostname`, `/etc/resolv.conf`, volumes with subPath), hostname, network namespace,
//! security context (runAsUser/Group, runAsNonRoot checked against the
//! image user, privileged, capabilities, read-only root, no new privileges)
//! and resources as cgroup limits (memory limit; cpu shares from the
//! request, CFS quota from the limit).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};

use super::{env, podfiles, quantity};
use crate::agent::runtime::{ContainerSpec, ImageConfig, Mount};

/// The pod-level facts every container spec needs.
pub struct PodContext<'a> {
    pub uid: &'a str,
    pub name: &'a str,
    pub namespace: &'a str,
    /// Root of the CRI log files.
    pub log_root: &'a Path,
    /// `<agent>/pods/<uid>`: hosts, resolv.conf, volumes.
    pub pod_dir: &'a Path,
    pub netns: Option<&'a Path>,
    /// Volume name → host path.
    pub mounts: &'a BTreeMap<String, PathBuf>,
}

/// Builds the spec, or says why the pod's settings cannot be run
/// (the container's `CreateContainerConfigError` message).
pub fn build(
    p: &PodContext<'_>,
    pod: &Pod,
    c: &Container,
    image: &ImageConfig,
    env: Vec<(String, String)>,
    restart_count: u32,
) -> Result<ContainerSpec, String> {
    let spec = pod.spec.clone().unwrap_or_default();
    let vars: BTreeMap<String, String> = env.iter().cloned().collect();
    let mut s = ContainerSpec::new(
        &p.uid,
        &p.name,
        &p.namespace,
        &c.name,
        &super::images::normalize(c.image.as_deref().unwrap_or("")),
    );
    s.restart_count = restart_count;
    s.command = c
        .command
        .iter()
        .flatten()
        .map(|a| env::expand(a, &vars))
        .collect();
    s.args = c
        .args
        .iter()
        .flatten()
        .map(|a| env::expand(a, &vars))
        .collect();
    s.env = env;
    s.working_dir = c.working_dir.clone().filter(|w| !w.is_empty());
    s.stdin = c.stdin.unwrap_or(false);
    s.stdin_once = c.stdin_once.unwrap_or(false);
    s.tty = c.tty.unwrap_or(false);
    s.hostname = spec.hostname.clone().unwrap_or_else(|| p.name.to_string());
    s.netns_path = p.netns.map(Path::to_path_buf);
    s.host_pid = spec.host_pid == Some(true);
    s.host_ipc = spec.host_ipc == Some(true);
    s.log_path = p
        .log_root
        .join(format!("{}_{}_{}", p.namespace, p.name, p.uid))
        .join(&c.name)
        .join(format!("{restart_count}.log"));
    let pod_dir = p.pod_dir.to_path_buf();
    for (file, destination) in [
        (podfiles::HOSTS, "/etc/hosts"),
        (podfiles::HOSTNAME, "/etc/hostname"),
        (podfiles::RESOLV_CONF, "/etc/resolv.conf"),
    ] {
        s.mounts.push(Mount {
            source: pod_dir.join(file),
            destination: destination.into(),
            read_only: false,
        });
    }
    for vm in c.volume_mounts.iter().flatten() {
        let Some(src) = p.mounts.get(&vm.name) else {
            return Err(format!(
                "volume mount {:?}: no volume of that name",
                vm.name
            ));
        };
        let mut source = src.clone();
        if let Some(sub) = vm.sub_path.as_ref().filter(|p| !p.is_empty()) {
            if sub.split('/').any(|p| p == "..") {
                return Err(format!("subPath {sub:?} must not contain '..'"));
            }
            source = source.join(sub);
        }
        s.mounts.push(Mount {
            source,
            destination: vm.mount_path.clone(),
            read_only: vm.read_only == Some(true),
        });
    }
    let psc = spec.security_context.clone().unwrap_or_default();
    let sc = c.security_context.clone().unwrap_or_default();
    s.run_as_user = sc.run_as_user.or(psc.run_as_user).map(|u| u as u32);
    s.run_as_group = sc.run_as_group.or(psc.run_as_group).map(|g| g as u32);
    if sc.run_as_non_root.or(psc.run_as_non_root) == Some(true) {
        match s.run_as_user {
            Some(0) => return Err("container's runAsUser breaks non-root policy".into()),
            Some(_) => {}
            None => {
                let user = image.user.split(':').next().unwrap_or("");
                if user.is_empty() || user == "0" || user == "root" {
                    return Err("container has runAsNonRoot and image will run as root".into());
                }
                if user.parse::<u32>().is_err() {
                    return Err(format!("container has runAsNonRoot and image has non-numeric user ({user}), cannot verify user is non-root"));
                }
            }
        }
    }
    s.privileged = sc.privileged == Some(true);
    if let Some(caps) = &sc.capabilities {
        s.cap_add = caps.add.clone().unwrap_or_default();
        s.cap_drop = caps.drop.clone().unwrap_or_default();
    }
    s.read_only_root_fs = sc.read_only_root_filesystem == Some(true);
    s.no_new_privileges = sc.allow_privilege_escalation == Some(false);
    let res = c.resources.clone().unwrap_or_default();
    let limit = |k: &str| {
        res.limits
            .as_ref()
            .and_then(|m| m.get(k))
            .map(|q| q.0.clone())
    };
    let request = |k: &str| {
        res.requests
            .as_ref()
            .and_then(|m| m.get(k))
            .map(|q| q.0.clone())
            .or_else(|| limit(k))
    };
    s.memory_limit_bytes = limit("memory").and_then(|q| quantity::bytes(&q));
    s.cpu_shares = Some(
        request("cpu")
            .and_then(|q| quantity::millicores(&q))
            .map_or(2, |m| ((m * 1024) / 1000).max(2) as u64),
    );
    if let Some(m) = limit("cpu").and_then(|q| quantity::millicores(&q)) {
        s.cpu_period_us = Some(100_000);
        s.cpu_quota_us = Some((m * 100).max(1000));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx<'a>(mounts: &'a BTreeMap<String, PathBuf>) -> PodContext<'a> {
        PodContext {
            uid: "u1",
            name: "web",
            namespace: "ns",
            log_root: Path::new("/var/log/pods"),
            pod_dir: Path::new("/var/lib/rk3s/agent/pods/u1"),
            netns: Some(Path::new("/var/run/netns/rk3s-u1")),
            mounts,
        }
    }

    fn pod(container: serde_json::Value) -> (Pod, Container) {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u1"},
            "spec": {"securityContext": {"runAsUser": 1000}, "containers": [container]},
        }))
        .unwrap();
        let c = pod.spec.as_ref().unwrap().containers[0].clone();
        (pod, c)
    }

    #[test]
    fn maps_security_resources_and_mounts() {
        let mounts = BTreeMap::from([("data".to_string(), PathBuf::from("/host/data"))]);
        let (pod, c) = pod(serde_json::json!({
            "name": "c", "image": "busybox",
            "command": ["echo", "$(GREETING)"],
            "securityContext": {"runAsGroup": 2000, "readOnlyRootFilesystem": true,
                "allowPrivilegeEscalation": false, "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]}},
            "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}, "requests": {"cpu": "250m"}},
            "volumeMounts": [{"name": "data", "mountPath": "/data", "subPath": "x", "readOnly": true}],
        }));
        let env = vec![("GREETING".to_string(), "hi".to_string())];
        let s = build(&ctx(&mounts), &pod, &c, &ImageConfig::default(), env, 2).unwrap();
        assert_eq!(s.command, vec!["echo", "hi"]);
        assert_eq!(s.image, "docker.io/library/busybox:latest");
        assert_eq!((s.run_as_user, s.run_as_group), (Some(1000), Some(2000)));
        assert!(s.read_only_root_fs && s.no_new_privileges);
        assert_eq!(s.cap_add, vec!["NET_ADMIN"]);
        assert_eq!(s.memory_limit_bytes, Some(64 << 20));
        assert_eq!(s.cpu_shares, Some(256));
        assert_eq!(s.cpu_quota_us, Some(50_000));
        assert_eq!(s.log_path, PathBuf::from("/var/log/pods/ns_web_u1/c/2.log"));
        let data = s.mounts.iter().find(|m| m.destination == "/data").unwrap();
        assert_eq!(data.source, PathBuf::from("/host/data/x"));
        assert!(data.read_only);
    }

    #[test]
    fn run_as_non_root_is_checked() {
        let mounts = BTreeMap::new();
        let (mut pod, c) = pod(serde_json::json!({"name": "c", "image": "i",
            "securityContext": {"runAsNonRoot": true}}));
        pod.spec.as_mut().unwrap().security_context = None;
        let err = build(&ctx(&mounts), &pod, &c, &ImageConfig::default(), vec![], 0).unwrap_err();
        assert_eq!(err, "container has runAsNonRoot and image will run as root");
        let image = ImageConfig {
            user: "1000".into(),
            ..ImageConfig::default()
        };
        assert!(build(&ctx(&mounts), &pod, &c, &image, vec![], 0).is_ok());
    }
}
