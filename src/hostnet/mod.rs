//! The host's network, behind seams every node subsystem shares: network
//! namespaces as files ([`netns`]), netlink connections opened inside a
//! chosen namespace ([`netlink`]), and the nftables boundary ([`nft`]).
//!
//! The pod network, the overlay, the service proxy, DNS and the ingress
//! all sit above this module and take a host namespace path (`None` for the
//! process's own). That is how the e2e tests run a whole "host" inside a
//! private namespace without touching the machine's.
//!
//! **Architecture invariant:** this module knows nothing about Kubernetes
//! objects or about which subsystem uses it; it depends on no other rk3s
//! module.

pub mod netlink;
pub mod netns;
pub mod nft;
