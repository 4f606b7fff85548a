//! The per-pod files the kubelet bind-mounts into every container:
//! `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` (cluster DNS,
//! kube's search path, `ndots:5`), under `<agent>/pods/<uid>/`.

use std::net::IpAddr;
use std::path::Path;

pub fn hosts(pod_ip: &str, hostname: &str, extra: &[(String, Vec<String>)]) -> String {
    let mut s = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    s.push_str(&format!("{pod_ip}\t{hostname}\n"));
    if !extra.is_empty() {
        s.push_str("\n# Entries added by HostAliases.\n");
        for (ip, names) in extra {
            s.push_str(&format!("{ip}\t{}\n", names.join("\t")));
        }
    }
    s
}

pub fn resolv_conf(dns: IpAddr, namespace: &str, domain: &str) -> String {
    format!(
        "search {namespace}.svc.{domain} svc.{domain} {domain}\nnameserver {dns}\noptions ndots:5\n"
    )
}

/// The files' names under the pod's directory.
pub const HOSTS: &str = "etc-hosts";
pub const HOSTNAME: &str = "etc-hostname";
pub const RESOLV_CONF: &str = "resolv.conf";

/// Writes the three files into `dir`.
pub fn write(dir: &Path, hosts: &str, hostname: &str, resolv: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(HOSTS), hosts)?;
    std::fs::write(dir.join(HOSTNAME), format!("{hostname}\n"))?;
    std::fs::write(dir.join(RESOLV_CONF), resolv)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_has_kube_search_path() {
        let r = resolv_conf("10.43.0.10".parse().unwrap(), "web", "cluster.local");
        assert_eq!(r, "search web.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.43.0.10\noptions ndots:5\n");
        assert!(hosts("10.42.0.5", "p", &[]).ends_with("10.42.0.5\tp\n"));
    }
}
