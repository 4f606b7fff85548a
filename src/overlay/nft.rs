//! The node's NAT and forwarding rules for pod traffic, as one nftables
//! table that the pod network and overlay own (`ip rk3s`) and replace
//! atomically. `agent::network` applies it when it sets up the host side;
//! [`super::uninstall`] deletes it.
//!
//! The rules follow flannel's (`FLANNEL-POSTRTG` and `FLANNEL-FWD`):
//! - pod traffic leaving the cluster CIDR is masqueraded (not multicast);
//! - pod-to-pod traffic inside the cluster CIDR keeps its source address;
//! - traffic from outside the cluster to *remote* pods is masqueraded, so
//!   replies come back through this node's overlay address;
//! - packets the service proxy marked with `0x4000` are left to it.
//!
//! Replacement is atomic: the script declares, deletes and redefines the
//! table in one `nft -f` transaction, so there is no moment without rules
//! and a rerun never duplicates them.
//!
//! Partial: the forward chain's accepts cannot override a `drop` policy in
//! another table on the same hook (e.g. Docker's `FORWARD` policy): in
//! nftables every base chain must accept a packet. IPv4 only.

use ipnet::Ipv4Net;

use crate::hostnet::nft::MASQUERADE_MARK;

/// The nftables table rk3s owns.
pub const TABLE: &str = "rk3s";

/// An `nft -f` script that deletes table [`TABLE`] if it exists (and
/// nothing else).
pub fn delete_script() -> String {
    format!("table ip {TABLE}\ndelete table ip {TABLE}\n")
}

/// The node's ruleset for table [`TABLE`], as an `nft -f` script that
/// replaces any previous version.
pub fn ruleset(pod_cidr: Ipv4Net, cluster_cidr: Ipv4Net) -> String {
    let cluster = cluster_cidr.trunc();
    let pods = pod_cidr.trunc();
    format!(
        "table ip {TABLE}\n\
         delete table ip {TABLE}\n\
         table ip {TABLE} {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tmeta mark & {MASQUERADE_MARK:#x} == {MASQUERADE_MARK:#x} return\n\
         \t\tip saddr {cluster} ip daddr {cluster} return\n\
         \t\tip saddr {cluster} ip daddr != 224.0.0.0/4 masquerade fully-random\n\
         \t\tip saddr != {cluster} ip daddr {pods} return\n\
         \t\tip saddr != {cluster} ip daddr {cluster} masquerade fully-random\n\
         \t}}\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter; policy accept;\n\
         \t\tip saddr {cluster} accept\n\
         \t\tip daddr {cluster} accept\n\
         \t}}\n\
         }}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_replaces_the_table_and_masquerades_leaving_pod_traffic() {
        let script = ruleset(
            "10.42.3.0/24".parse().unwrap(),
            "10.42.0.0/16".parse().unwrap(),
        );
        let lines: Vec<_> = script.lines().map(str::trim).collect();
        assert_eq!(lines[0], "table ip rk3s");
        assert_eq!(lines[1], "delete table ip rk3s");
        assert!(lines.contains(&"ip saddr 10.42.0.0/16 ip daddr 10.42.0.0/16 return"));
        assert!(lines
            .contains(&"ip saddr 10.42.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random"));
        assert!(lines.contains(&"ip saddr != 10.42.0.0/16 ip daddr 10.42.3.0/24 return"));
        assert!(lines.contains(&"meta mark & 0x4000 == 0x4000 return"));
        assert!(lines.contains(&"ip saddr 10.42.0.0/16 accept"));
        // Order matters: the cluster-internal return precedes the masquerade.
        let ret = lines
            .iter()
            .position(|l| l.ends_with("ip daddr 10.42.0.0/16 return"))
            .unwrap();
        let masq = lines
            .iter()
            .position(|l| l.contains("224.0.0.0/4 masquerade"))
            .unwrap();
        assert!(ret < masq);
    }

    #[test]
    fn ruleset_normalises_host_bits() {
        let script = ruleset(
            "10.42.3.7/24".parse().unwrap(),
            "10.42.1.1/16".parse().unwrap(),
        );
        assert!(script.contains("ip daddr 10.42.3.0/24 return"));
        assert!(script.contains("ip saddr 10.42.0.0/16 accept"));
    }
}
