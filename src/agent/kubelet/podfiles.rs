//! The per-pod files the kubelet bind-mounts into every container:
//! `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` (cluster DNS,
//! kube's search path, `ndots:5`), under `<agent>/pods/<uid>/`.

use std::net::IpAddr;
use std::path::Path;

use k8s_openapi::api::core::v1::PodDNSConfig;

use crate::dns::resolvconf::ResolvConf;

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

/// What the pod's `/etc/resolv.conf` is made from.
pub struct DnsInputs<'a> {
    pub namespace: &'a str,
    pub cluster_dns: IpAddr,
    pub cluster_domain: &'a str,
    pub dns_policy: Option<&'a str>,
    pub host_network: bool,
    pub dns_config: Option<&'a PodDNSConfig>,
    /// The node's resolver configuration (`--resolv-conf`).
    pub host: &'a ResolvConf,
}

/// kubelet's limits (pkg/kubelet/network/dns).
const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCHES: usize = 32;
const MAX_SEARCH_CHARS: usize = 2048;

fn dedup(items: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

/// The pod's `/etc/resolv.conf` as kubelet writes it: `ClusterFirst` (the
/// default; like `Default` on the host network), `ClusterFirstWithHostNet`,
/// `Default` (the node's file) or `None`, then `dnsConfig` appended
/// (nameservers and searches added, options merged by name) and kubelet's
/// limits applied (3 nameservers; 32 search domains, 2048 characters).
pub fn pod_resolv_conf(i: &DnsInputs<'_>) -> String {
    let cluster = match i.dns_policy.unwrap_or("ClusterFirst") {
        "ClusterFirstWithHostNet" => Some(true),
        "ClusterFirst" => Some(!i.host_network),
        "None" => None,
        _ => Some(false),
    };
    let host_search = i
        .host
        .search
        .iter()
        .map(|s| s.trim_end_matches('.').to_string());
    let (mut servers, mut search, mut options) = match cluster {
        Some(true) => {
            let d = i.cluster_domain;
            let mut search = vec![
                format!("{}.svc.{d}", i.namespace),
                format!("svc.{d}"),
                d.to_string(),
            ];
            search.extend(host_search);
            (
                vec![i.cluster_dns.to_string()],
                search,
                vec!["ndots:5".to_string()],
            )
        }
        Some(false) => (
            i.host.nameservers.iter().map(|n| n.to_string()).collect(),
            host_search.collect(),
            i.host.options.clone(),
        ),
        None => (Vec::new(), Vec::new(), Vec::new()),
    };
    if let Some(cfg) = i.dns_config {
        servers.extend(cfg.nameservers.iter().flatten().cloned());
        search.extend(cfg.searches.iter().flatten().cloned());
        for o in cfg.options.iter().flatten() {
            let Some(name) = o.name.as_deref() else {
                continue;
            };
            let item = match &o.value {
                Some(v) => format!("{name}:{v}"),
                None => name.to_string(),
            };
            let same = |x: &String| x.split(':').next() == Some(name);
            match options.iter().position(same) {
                Some(at) => options[at] = item,
                None => options.push(item),
            }
        }
    }
    let mut servers = dedup(servers);
    servers.truncate(MAX_NAMESERVERS);
    let mut search = dedup(search);
    search.truncate(MAX_SEARCHES);
    while search.join(" ").len() > MAX_SEARCH_CHARS {
        search.pop();
    }
    let mut out = String::new();
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    for s in &servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", dedup(options).join(" ")));
    }
    out
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

    fn inputs<'a>(
        policy: Option<&'a str>,
        host_network: bool,
        cfg: Option<&'a PodDNSConfig>,
        host: &'a ResolvConf,
    ) -> DnsInputs<'a> {
        DnsInputs {
            namespace: "web",
            cluster_dns: "10.43.0.10".parse().unwrap(),
            cluster_domain: "cluster.local",
            dns_policy: policy,
            host_network,
            dns_config: cfg,
            host,
        }
    }

    #[test]
    fn resolv_conf_follows_dns_policy_like_kubelet() {
        let host = ResolvConf::parse("nameserver 192.168.1.1\nsearch lan.\noptions edns0\n");
        let cluster = "search web.svc.cluster.local svc.cluster.local cluster.local lan\nnameserver 10.43.0.10\noptions ndots:5\n";
        let node = "search lan\nnameserver 192.168.1.1\noptions edns0\n";
        assert_eq!(pod_resolv_conf(&inputs(None, false, None, &host)), cluster);
        assert_eq!(
            pod_resolv_conf(&inputs(Some("ClusterFirst"), false, None, &host)),
            cluster
        );
        assert_eq!(
            pod_resolv_conf(&inputs(Some("ClusterFirst"), true, None, &host)),
            node
        );
        assert_eq!(
            pod_resolv_conf(&inputs(Some("ClusterFirstWithHostNet"), true, None, &host)),
            cluster
        );
        assert_eq!(
            pod_resolv_conf(&inputs(Some("Default"), false, None, &host)),
            node
        );
        assert_eq!(
            pod_resolv_conf(&inputs(Some("None"), false, None, &host)),
            ""
        );
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

    #[test]
    fn dns_config_is_appended_and_options_merged() {
        let host = ResolvConf::default();
        let opt = |n: &str, v: Option<&str>| k8s_openapi::api::core::v1::PodDNSConfigOption {
            name: Some(n.into()),
            value: v.map(str::to_string),
        };
        let cfg = PodDNSConfig {
            nameservers: Some(vec![
                "1.1.1.1".into(),
                "10.43.0.10".into(),
                "8.8.8.8".into(),
                "9.9.9.9".into(),
            ]),
            searches: Some(vec!["example.com".into()]),
            options: Some(vec![opt("ndots", Some("2")), opt("edns0", None)]),
        };
        assert_eq!(
            pod_resolv_conf(&inputs(None, false, Some(&cfg), &host)),
            "search web.svc.cluster.local svc.cluster.local cluster.local example.com\nnameserver 10.43.0.10\nnameserver 1.1.1.1\nnameserver 8.8.8.8\noptions ndots:2 edns0\n"
        );
        assert_eq!(
            pod_resolv_conf(&inputs(Some("None"), false, Some(&cfg), &host)),
            "search example.com\nnameserver 1.1.1.1\nnameserver 10.43.0.10\nnameserver 8.8.8.8\noptions ndots:2 edns0\n"
        );
    }
}
