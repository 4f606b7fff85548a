//! The node's NAT and forwarding rules: the ruleset lives with the overlay
//! ([`crate::overlay::nft`]), which owns table `ip rk3s` with the pod
//! network; this module re-exports what the pod network applies.

pub use crate::hostnet::nft::{Firewall, NftFirewall, MASQUERADE_MARK};
pub use crate::overlay::nft::{ruleset, TABLE};
