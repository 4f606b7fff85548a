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

/// Writes the three files into `dir`, each only when its content differs:
/// the worker calls this every resync, and an idle node must not write.
/// (In place, not by rename: the files are bind-mounted by inode.)
pub fn write(dir: &Path, hosts: &str, hostname: &str, resolv: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    write_if_changed(&dir.join(HOSTS), hosts)?;
    write_if_changed(&dir.join(HOSTNAME), &format!("{hostname}\n"))?;
    write_if_changed(&dir.join(RESOLV_CONF), resolv)?;
    Ok(())
}

fn write_if_changed(path: &Path, content: &str) -> std::io::Result<()> {
    if std::fs::read(path).is_ok_and(|cur| cur == content.as_bytes()) {
        return Ok(());
    }
    std::fs::write(path, content)
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

    #[test]
    fn unchanged_files_are_not_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "h\n", "p", "r\n").unwrap();
        let inode = |n: &str| {
            use std::os::unix::fs::MetadataExt;
            let m = std::fs::metadata(dir.path().join(n)).unwrap();
            (m.ino(), m.mtime_nsec(), m.mtime())
        };
        let before = inode(HOSTS);
        std::thread::sleep(std::time::Duration::from_millis(20));
        write(dir.path(), "h\n", "p", "r\n").unwrap();
        assert_eq!(inode(HOSTS), before, "rewritten though unchanged");
        write(dir.path(), "h2\n", "p", "r\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join(HOSTS)).unwrap(),
            "h2\n"
        );
        assert_eq!(inode(HOSTS).0, before.0, "same inode: bind mounts see it");
    }
}
