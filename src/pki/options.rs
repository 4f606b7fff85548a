//! What the server's certificates depend on, and the API server's serving SAN set derived from it.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::PkiError;

/// Inputs of [`super::Pki::load_or_create`] that shape the certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiOptions {
    /// The server's host (node) name; a DNS SAN of the serving certificate.
    pub node_name: String,
    /// Every IP the server is reachable at (node IPs, external IPs, advertise address).
    pub node_ips: Vec<IpAddr>,
    /// Extra `--tls-san` values: IP literals become IP SANs, anything else a DNS SAN.
    pub tls_sans: Vec<String>,
    /// Service CIDRs (one per IP family); the first address of each is the `kubernetes`
    /// Service's ClusterIP and so a SAN.
    pub service_cidrs: Vec<IpNet>,
    /// Cluster DNS domain, `cluster.local` by default.
    pub cluster_domain: String,
}

impl PkiOptions {
    /// k3s's defaults (service CIDR 10.43.0.0/16, domain `cluster.local`) for a host.
    pub fn new(node_name: impl Into<String>) -> Self {
        PkiOptions {
            node_name: node_name.into(),
            node_ips: Vec::new(),
            tls_sans: Vec::new(),
            service_cidrs: vec!["10.43.0.0/16".parse().expect("valid default CIDR")],
            cluster_domain: "cluster.local".to_string(),
        }
    }

    /// The API server's serving SANs: DNS names and IPs, sorted and deduplicated so that
    /// comparing with an existing certificate does not depend on flag order.
    pub fn serving_sans(&self) -> Result<SanSet, PkiError> {
        let mut sans = SanSet::default();
        for name in [
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
        ] {
            sans.dns.insert(name.to_string());
        }
        let domain = self.cluster_domain.trim_end_matches('.');
        if domain.is_empty() {
            return Err(PkiError::InvalidOption(
                "the cluster domain is empty".into(),
            ));
        }
        sans.dns.insert(format!("kubernetes.default.svc.{domain}"));
        if !self.node_name.is_empty() {
            sans.dns.insert(self.node_name.to_ascii_lowercase());
        }
        sans.ips.insert(IpAddr::V4(Ipv4Addr::LOCALHOST));
        sans.ips.insert(IpAddr::V6(Ipv6Addr::LOCALHOST));
        sans.ips.extend(self.node_ips.iter().copied());
        for cidr in &self.service_cidrs {
            sans.ips.insert(first_service_ip(cidr)?);
        }
        for san in &self.tls_sans {
            let san = san.trim();
            if san.is_empty() {
                continue;
            }
            // `[::1]` is how people write IPv6 next to ports; accept it.
            let bare = san.trim_start_matches('[').trim_end_matches(']');
            match bare.parse::<IpAddr>() {
                Ok(ip) => {
                    sans.ips.insert(ip);
                }
                Err(_) => {
                    validate_dns_san(san)?;
                    sans.dns.insert(san.to_ascii_lowercase());
                }
            }
        }
        Ok(sans)
    }
}

/// The first usable address of a service CIDR (10.43.0.1 for 10.43.0.0/16), which the API
/// server gives the `default/kubernetes` Service.
pub fn first_service_ip(cidr: &IpNet) -> Result<IpAddr, PkiError> {
    let too_small =
        || PkiError::InvalidOption(format!("service CIDR {cidr} has no usable address"));
    match cidr.trunc() {
        IpNet::V4(net) => {
            if net.prefix_len() >= 31 {
                return Err(too_small());
            }
            let n = u32::from(net.network()) + 1;
            Ok(IpAddr::V4(Ipv4Addr::from(n)))
        }
        IpNet::V6(net) => {
            if net.prefix_len() >= 127 {
                return Err(too_small());
            }
            let n = u128::from(net.network()) + 1;
            Ok(IpAddr::V6(Ipv6Addr::from(n)))
        }
    }
}

/// Rejects names that cannot be a dNSName SAN, so a typo in `--tls-san` fails at start with a
/// clear message instead of producing a certificate nobody can verify.
fn validate_dns_san(name: &str) -> Result<(), PkiError> {
    let bad = |why: &str| PkiError::InvalidOption(format!("--tls-san {name:?} {why}"));
    if name.len() > 253 {
        return Err(bad("is longer than 253 characters"));
    }
    for (i, label) in name.trim_end_matches('.').split('.').enumerate() {
        if label == "*" && i == 0 {
            continue;
        }
        if label.is_empty() || label.len() > 63 {
            return Err(bad("has an empty or over-long label"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            || label.starts_with('-')
            || label.ends_with('-')
        {
            return Err(bad("is neither an IP address nor a valid DNS name"));
        }
    }
    Ok(())
}

/// A sorted set of subject alternative names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SanSet {
    pub dns: BTreeSet<String>,
    pub ips: BTreeSet<IpAddr>,
}

impl SanSet {
    pub(crate) fn to_rcgen(&self) -> Result<Vec<rcgen::SanType>, PkiError> {
        let mut out = Vec::with_capacity(self.dns.len() + self.ips.len());
        for name in &self.dns {
            let ia5 = name
                .clone()
                .try_into()
                .map_err(|e| PkiError::InvalidOption(format!("SAN {name:?}: {e}")))?;
            out.push(rcgen::SanType::DnsName(ia5));
        }
        out.extend(self.ips.iter().map(|ip| rcgen::SanType::IpAddress(*ip)));
        Ok(out)
    }
}

/// The example node both the SAN derivation's and the certificate store's
/// tests use: at 192.168.1.10, with `--tls-san` k8s.example.com and 203.0.113.7.
#[cfg(test)]
pub(crate) mod example {
    use std::net::IpAddr;

    use super::{PkiOptions, SanSet};

    pub(crate) fn options(node_name: &str) -> PkiOptions {
        let mut opts = PkiOptions::new(node_name);
        opts.node_ips = vec!["192.168.1.10".parse().unwrap()];
        opts.tls_sans = vec!["k8s.example.com".into(), "203.0.113.7".into()];
        opts
    }

    /// Asserts that `sans` holds every name and address the serving
    /// certificate of the example node `pi-1` (in any case) must carry.
    pub(crate) fn assert_serving_sans(sans: &SanSet) {
        for dns in [
            "pi-1",
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "k8s.example.com",
        ] {
            assert!(sans.dns.contains(dns), "missing DNS SAN {dns}");
        }
        for ip in [
            "127.0.0.1",
            "::1",
            "192.168.1.10",
            "10.43.0.1",
            "203.0.113.7",
        ] {
            assert!(
                sans.ips.contains(&ip.parse::<IpAddr>().unwrap()),
                "missing IP SAN {ip}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_service_ip_of_default_and_ipv6_cidrs() {
        let v4: IpNet = "10.43.0.0/16".parse().unwrap();
        assert_eq!(first_service_ip(&v4).unwrap().to_string(), "10.43.0.1");
        // A CIDR written with host bits set still yields the network's first address.
        let sloppy: IpNet = "10.43.12.7/16".parse().unwrap();
        assert_eq!(first_service_ip(&sloppy).unwrap().to_string(), "10.43.0.1");
        let v6: IpNet = "fd00:43::/112".parse().unwrap();
        assert_eq!(first_service_ip(&v6).unwrap().to_string(), "fd00:43::1");
        let tiny: IpNet = "10.0.0.0/32".parse().unwrap();
        assert!(first_service_ip(&tiny).is_err());
    }

    #[test]
    fn serving_sans_cover_every_name() {
        let mut opts = example::options("Pi-1");
        opts.tls_sans.push("[2001:db8::1]".into());
        let sans = opts.serving_sans().unwrap();
        example::assert_serving_sans(&sans);
        assert!(
            sans.ips.contains(&"2001:db8::1".parse::<IpAddr>().unwrap()),
            "missing the bracketed IPv6 --tls-san"
        );
    }

    #[test]
    fn bad_tls_san_is_rejected_with_the_flag_name() {
        let mut opts = PkiOptions::new("host");
        opts.tls_sans = vec!["bad name!".into()];
        let err = opts.serving_sans().unwrap_err().to_string();
        assert!(err.contains("--tls-san"), "{err}");
    }
}
