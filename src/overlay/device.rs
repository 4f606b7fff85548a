//! The VXLAN device: created when missing, kept when right, replaced when
//! wrong (another VNI, port or source, learning on, or not a VXLAN device
//! at all), and its MTU, state, address and checksum offload put right in
//! place.
//!
//! Transmit checksum offload is turned off on the device, as flannel does
//! since k3s#5013 / flannel#1279: with it on, some kernels (Ubuntu 21.10+
//! and several NIC drivers, Raspberry Pi ones among them) send VXLAN
//! packets whose inner TCP/UDP checksum is never filled in, and the remote
//! drops them: pings work, TCP across nodes hangs. Computing the checksum
//! in software costs little next to the encapsulation itself.

use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;

use super::ops::{LinkState, Mac, OverlayOps, VxlanSpec};
use super::OverlayError;

/// Whether `link` is the device `spec` describes (MAC and MTU aside: those
/// are fixed in place).
pub fn matches(link: &LinkState, spec: &VxlanSpec) -> bool {
    link.vni == Some(spec.vni)
        && link.port == Some(spec.port)
        && link.local == Some(spec.local)
        && link.learning == Some(false)
}

/// Makes the device right and returns it. `spec.mac` is used only when the
/// device has to be (re)created; a kept device keeps its MAC.
pub async fn ensure(
    ops: &dyn OverlayOps,
    spec: &VxlanSpec,
    address: Ipv4Net,
) -> Result<LinkState, OverlayError> {
    let mut link = match ops.link(&spec.name).await? {
        Some(l) if matches(&l, spec) => l,
        existing => {
            if let Some(l) = existing {
                tracing::warn!(device = %spec.name, vni = ?l.vni, port = ?l.port, local = ?l.local, learning = ?l.learning,
                    "replacing a device that is not the overlay's VXLAN device");
                ops.delete_link(l.index).await?;
            }
            ops.create_vxlan(spec).await?;
            tracing::info!(device = %spec.name, mac = %spec.mac, local = %spec.local, mtu = spec.mtu, "created the VXLAN device");
            ops.link(&spec.name)
                .await?
                .ok_or_else(|| OverlayError::Netlink {
                    action: format!("find {} after creating it", spec.name),
                    message: "it vanished".into(),
                    errno: None,
                })?
        }
    };
    if link.mtu != spec.mtu || !link.up {
        ops.set_link_up(link.index, spec.mtu).await?;
        link.mtu = spec.mtu;
        link.up = true;
    }
    for other in link.addresses.iter().filter(|a| **a != address) {
        ops.del_address(link.index, *other).await?;
    }
    if !link.addresses.contains(&address) {
        ops.add_address(link.index, address).await?;
    }
    link.addresses = vec![address];
    if ops.tx_checksum(&spec.name).await? {
        ops.disable_tx_checksum(&spec.name).await?;
        tracing::info!(device = %spec.name, "turned transmit checksum offload off (k3s#5013)");
    }
    Ok(link)
}

/// Where the VTEP MAC is kept.
pub fn mac_file(state_dir: &Path) -> PathBuf {
    state_dir.join("vtep-mac")
}

/// The MAC saved by an earlier run, if readable.
pub fn load_mac(state_dir: &Path) -> Option<Mac> {
    std::fs::read_to_string(mac_file(state_dir))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Saves `mac` (atomically) for the next run.
pub fn save_mac(state_dir: &Path, mac: Mac) -> Result<(), OverlayError> {
    if load_mac(state_dir) == Some(mac) {
        return Ok(());
    }
    let io = |e| {
        OverlayError::io(
            format!("save the VTEP MAC under {}", state_dir.display()),
            e,
        )
    };
    std::fs::create_dir_all(state_dir).map_err(io)?;
    let tmp = state_dir.join(".vtep-mac.tmp");
    std::fs::write(&tmp, format!("{mac}\n")).map_err(io)?;
    std::fs::rename(&tmp, mac_file(state_dir)).map_err(io)
}
