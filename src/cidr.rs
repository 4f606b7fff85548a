//! CIDR arithmetic shared by Service IP allocation (`apiserver::ipalloc`)
//! and node pod CIDRs (the node controller): addresses as offsets into a
//! range, and the n-th subnet of a prefix. Pure functions; imports nothing
//! of the crate.

use std::net::IpAddr;

use ipnet::IpNet;

/// The address as a number, and whether it is IPv6.
pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_u128(v: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(v.into())
    } else {
        IpAddr::V4((v as u32).into())
    }
}

/// How many addresses `net` holds (saturating at `u128::MAX` for a /0 IPv6).
pub fn size(net: &IpNet) -> u128 {
    let host_bits = u32::from(net.max_prefix_len() - net.prefix_len());
    1u128.checked_shl(host_bits).unwrap_or(u128::MAX)
}

/// The address `offset` places after the network address.
pub fn nth(net: &IpNet, offset: u128) -> Option<IpAddr> {
    (offset < size(net))
        .then(|| from_u128(to_u128(net.network()) + offset, matches!(net, IpNet::V6(_))))
}

/// `ip`'s offset in `net`, if inside.
pub fn offset_of(net: &IpNet, ip: IpAddr) -> Option<u128> {
    net.contains(&ip)
        .then(|| to_u128(ip) - to_u128(net.network()))
}

/// The offsets Service IPs are allocated from when none is requested: not the
/// network address, not the first address (the `kubernetes` Service's), and
/// not the IPv4 broadcast address.
pub fn dynamic_range(net: &IpNet) -> std::ops::Range<u128> {
    let n = size(net);
    let end = match net {
        IpNet::V4(_) => n.saturating_sub(1),
        IpNet::V6(_) => n,
    };
    2.min(end)..end
}

/// Whether a requested Service IP may be used at all (inside the range, not
/// the network or broadcast address).
pub fn valid_service_ip(net: &IpNet, ip: IpAddr) -> bool {
    match offset_of(net, ip) {
        None | Some(0) => false,
        Some(o) => !(matches!(net, IpNet::V4(_)) && o == size(net) - 1),
    }
}

/// The `index`-th subnet of length `prefix` inside `net` (pod CIDRs: the
/// n-th /24 of 10.42.0.0/16).
pub fn nth_subnet(net: &IpNet, prefix: u8, index: u128) -> Option<IpNet> {
    if prefix < net.prefix_len() || prefix > net.max_prefix_len() {
        return None;
    }
    let count = 1u128.checked_shl(u32::from(prefix - net.prefix_len()))?;
    if index >= count {
        return None;
    }
    let step = 1u128.checked_shl(u32::from(net.max_prefix_len() - prefix))?;
    let base = from_u128(
        to_u128(net.network()) + index * step,
        matches!(net, IpNet::V6(_)),
    );
    IpNet::new(base, prefix).ok()
}

/// How many subnets of length `prefix` `net` holds.
pub fn subnet_count(net: &IpNet, prefix: u8) -> u128 {
    if prefix < net.prefix_len() || prefix > net.max_prefix_len() {
        return 0;
    }
    1u128
        .checked_shl(u32::from(prefix - net.prefix_len()))
        .unwrap_or(u128::MAX)
}

/// The index of `subnet` among `net`'s subnets of its length.
pub fn subnet_index(net: &IpNet, subnet: &IpNet) -> Option<u128> {
    if !net.contains(&subnet.network()) || subnet.prefix_len() < net.prefix_len() {
        return None;
    }
    let step = 1u128.checked_shl(u32::from(subnet.max_prefix_len() - subnet.prefix_len()))?;
    Some((to_u128(subnet.network()) - to_u128(net.network())) / step)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn service_range_skips_network_first_and_broadcast() {
        let n = net("10.43.0.0/16");
        assert_eq!(size(&n), 65536);
        assert_eq!(dynamic_range(&n), 2..65535);
        assert_eq!(nth(&n, 1).unwrap().to_string(), "10.43.0.1");
        assert_eq!(nth(&n, 65535).unwrap().to_string(), "10.43.255.255");
        assert!(nth(&n, 65536).is_none());
        assert!(!valid_service_ip(&n, "10.43.0.0".parse().unwrap()));
        assert!(!valid_service_ip(&n, "10.43.255.255".parse().unwrap()));
        assert!(!valid_service_ip(&n, "10.44.0.1".parse().unwrap()));
        assert!(valid_service_ip(&n, "10.43.0.1".parse().unwrap()));
        assert_eq!(offset_of(&n, "10.43.1.2".parse().unwrap()), Some(258));
        let tiny = net("10.0.0.0/30");
        assert_eq!(dynamic_range(&tiny), 2..3);
        let v6 = net("fd00::/120");
        assert_eq!(dynamic_range(&v6), 2..256);
        assert_eq!(nth(&v6, 5).unwrap().to_string(), "fd00::5");
    }

    #[test]
    fn pod_cidrs_are_the_nth_slash_24() {
        let n = net("10.42.0.0/16");
        assert_eq!(subnet_count(&n, 24), 256);
        assert_eq!(nth_subnet(&n, 24, 0).unwrap().to_string(), "10.42.0.0/24");
        assert_eq!(nth_subnet(&n, 24, 3).unwrap().to_string(), "10.42.3.0/24");
        assert!(nth_subnet(&n, 24, 256).is_none());
        assert!(nth_subnet(&n, 8, 0).is_none());
        assert_eq!(subnet_index(&n, &net("10.42.7.0/24")), Some(7));
        assert_eq!(subnet_index(&n, &net("10.41.7.0/24")), None);
        let v6 = net("fd00:42::/56");
        assert_eq!(
            nth_subnet(&v6, 64, 2).unwrap().to_string(),
            "fd00:42:0:2::/64"
        );
    }
}
