//! The per-pod files the kubelet bind-mounts into every container:
//! `/etc/hosts` and `/etc/resolv.conf` (cluster DNS, kube's search path,
//! `ndots:5`), under `<agent>/pods/<uid>/`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

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

/// Writes both files into `dir`; returns their paths (hosts, resolv.conf).
pub fn write(dir: &Path, hosts: &str, resolv: &str) -> std::io::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let h = dir.join("etc-hosts");
    let r = dir.join("resolv.conf");
    std::fs::write(&h, hosts)?;
    std::fs::write(&r, resolv)?;
    Ok((h, r))
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
