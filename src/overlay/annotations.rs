//! flannel's Node annotations (kube subnet manager), with its exact keys
//! and value shapes: what this node publishes, and how a remote node's
//! Node object becomes a [`Peer`].

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use serde::{Deserialize, Serialize};

use super::ops::Mac;
use super::peers::Peer;
use super::{FlannelBackend, VNI};

pub const PREFIX: &str = "flannel.alpha.coreos.com/";
pub const BACKEND_TYPE: &str = "flannel.alpha.coreos.com/backend-type";
pub const BACKEND_DATA: &str = "flannel.alpha.coreos.com/backend-data";
pub const PUBLIC_IP: &str = "flannel.alpha.coreos.com/public-ip";
pub const PUBLIC_IP_OVERWRITE: &str = "flannel.alpha.coreos.com/public-ip-overwrite";
pub const KUBE_SUBNET_MANAGER: &str = "flannel.alpha.coreos.com/kube-subnet-manager";

/// The vxlan `backend-data` value: `{"VNI":1,"VtepMAC":"aa:bb:…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VxlanData {
    #[serde(rename = "VNI")]
    pub vni: u32,
    #[serde(rename = "VtepMAC")]
    pub vtep_mac: String,
}

/// The annotations this node publishes. `vtep_mac` is required for vxlan;
/// host-gw publishes `backend-data: null`, as flannel does.
pub fn own(
    backend: FlannelBackend,
    vtep_mac: Option<Mac>,
    public_ip: Ipv4Addr,
    overwrite: Option<Ipv4Addr>,
) -> BTreeMap<String, String> {
    let data = match (backend, vtep_mac) {
        (FlannelBackend::Vxlan, Some(mac)) => serde_json::to_string(&VxlanData {
            vni: VNI,
            vtep_mac: mac.to_string(),
        })
        .expect("plain struct serialises"),
        _ => "null".to_string(),
    };
    let mut m = BTreeMap::new();
    m.insert(KUBE_SUBNET_MANAGER.to_string(), "true".to_string());
    m.insert(BACKEND_TYPE.to_string(), backend.name().to_string());
    m.insert(BACKEND_DATA.to_string(), data);
    m.insert(PUBLIC_IP.to_string(), public_ip.to_string());
    if let Some(ip) = overwrite {
        m.insert(PUBLIC_IP_OVERWRITE.to_string(), ip.to_string());
    }
    m
}

/// The VTEP MAC this node published before (its `backend-data`), if any.
pub fn published_vtep_mac(node: &Node) -> Option<Mac> {
    let data = node.metadata.annotations.as_ref()?.get(BACKEND_DATA)?;
    let parsed: VxlanData = serde_json::from_str(data).ok()?;
    parsed.vtep_mac.parse().ok()
}

/// Whether `node`'s annotations already hold every one of `wanted`.
pub fn up_to_date(node: &Node, wanted: &BTreeMap<String, String>) -> bool {
    let have = node.metadata.annotations.clone().unwrap_or_default();
    wanted.iter().all(|(k, v)| have.get(k) == Some(v))
}

/// A remote node as a peer of `backend`, or why it is not one (yet): no
/// pod CIDR, no flannel annotations, another backend, unparsable values.
pub fn peer(node: &Node, backend: FlannelBackend) -> Result<Peer, String> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let cidr = node
        .spec
        .as_ref()
        .and_then(|s| s.pod_cidr.clone())
        .filter(|c| !c.is_empty())
        .ok_or("it has no spec.podCIDR yet")?;
    let subnet: Ipv4Net = cidr
        .parse()
        .map_err(|_| format!("its podCIDR {cidr:?} is not an IPv4 CIDR"))?;
    let ann = node.metadata.annotations.clone().unwrap_or_default();
    let kind = ann
        .get(BACKEND_TYPE)
        .ok_or("it has no flannel backend-type annotation yet")?;
    if kind != backend.name() {
        return Err(format!(
            "it runs backend {kind:?}, this node {:?}",
            backend.name()
        ));
    }
    let public_ip: Ipv4Addr = ann
        .get(PUBLIC_IP)
        .ok_or("it has no flannel public-ip annotation yet")?
        .parse()
        .map_err(|_| "its flannel public-ip annotation is not an IPv4 address".to_string())?;
    let vtep_mac = match backend {
        FlannelBackend::Vxlan => {
            let data = ann
                .get(BACKEND_DATA)
                .ok_or("it has no flannel backend-data annotation yet")?;
            let parsed: VxlanData = serde_json::from_str(data)
                .map_err(|e| format!("its flannel backend-data {data:?} is malformed: {e}"))?;
            Some(parsed.vtep_mac.parse::<Mac>()?)
        }
        _ => None,
    };
    Ok(Peer {
        node: name,
        subnet: subnet.trunc(),
        public_ip,
        vtep_mac,
    })
}

#[cfg(test)]
pub(crate) fn test_node(name: &str, cidr: Option<&str>, annotations: &[(&str, &str)]) -> Node {
    let mut n = Node::default();
    n.metadata.name = Some(name.to_string());
    n.metadata.annotations = Some(
        annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    n.spec = Some(k8s_openapi::api::core::v1::NodeSpec {
        pod_cidr: cidr.map(String::from),
        ..Default::default()
    });
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vxlan_annotations_have_flannels_keys_and_shapes() {
        let mac: Mac = "0a:58:0a:2a:01:00".parse().unwrap();
        let m = own(
            FlannelBackend::Vxlan,
            Some(mac),
            "192.168.1.10".parse().unwrap(),
            Some("203.0.113.7".parse().unwrap()),
        );
        assert_eq!(m[KUBE_SUBNET_MANAGER], "true");
        assert_eq!(m[BACKEND_TYPE], "vxlan");
        assert_eq!(
            m[BACKEND_DATA],
            r#"{"VNI":1,"VtepMAC":"0a:58:0a:2a:01:00"}"#
        );
        assert_eq!(m[PUBLIC_IP], "192.168.1.10");
        assert_eq!(m[PUBLIC_IP_OVERWRITE], "203.0.113.7");
        assert!(m.keys().all(|k| k.starts_with(PREFIX)));
    }

    #[test]
    fn host_gw_publishes_null_backend_data_and_no_overwrite_by_default() {
        let m = own(
            FlannelBackend::HostGw,
            None,
            "10.0.0.2".parse().unwrap(),
            None,
        );
        assert_eq!(m[BACKEND_TYPE], "host-gw");
        assert_eq!(m[BACKEND_DATA], "null");
        assert!(!m.contains_key(PUBLIC_IP_OVERWRITE));
    }

    #[test]
    fn a_flannel_node_becomes_a_peer() {
        let n = test_node(
            "pi2",
            Some("10.42.1.0/24"),
            &[
                (BACKEND_TYPE, "vxlan"),
                (BACKEND_DATA, r#"{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}"#),
                (PUBLIC_IP, "192.168.1.11"),
            ],
        );
        let p = peer(&n, FlannelBackend::Vxlan).unwrap();
        assert_eq!(p.node, "pi2");
        assert_eq!(p.subnet.to_string(), "10.42.1.0/24");
        assert_eq!(p.public_ip.to_string(), "192.168.1.11");
        assert_eq!(p.vtep_mac.unwrap().to_string(), "aa:bb:cc:dd:ee:01");
        assert_eq!(
            published_vtep_mac(&n).unwrap().to_string(),
            "aa:bb:cc:dd:ee:01"
        );
        // The same node is no host-gw peer: flannel ignores other backends' leases.
        assert!(peer(&n, FlannelBackend::HostGw)
            .unwrap_err()
            .contains("vxlan"));
    }

    #[test]
    fn incomplete_nodes_are_not_peers_and_say_why() {
        let no_cidr = test_node("a", None, &[]);
        assert!(peer(&no_cidr, FlannelBackend::Vxlan)
            .unwrap_err()
            .contains("podCIDR"));
        let no_ann = test_node("b", Some("10.42.2.0/24"), &[]);
        assert!(peer(&no_ann, FlannelBackend::Vxlan)
            .unwrap_err()
            .contains("backend-type"));
        let bad_data = test_node(
            "c",
            Some("10.42.2.0/24"),
            &[
                (BACKEND_TYPE, "vxlan"),
                (PUBLIC_IP, "10.0.0.3"),
                (BACKEND_DATA, "null"),
            ],
        );
        assert!(peer(&bad_data, FlannelBackend::Vxlan)
            .unwrap_err()
            .contains("malformed"));
    }

    #[test]
    fn up_to_date_compares_only_wanted_keys() {
        let n = test_node("a", None, &[(BACKEND_TYPE, "vxlan"), ("other", "x")]);
        let mut want = BTreeMap::new();
        want.insert(BACKEND_TYPE.to_string(), "vxlan".to_string());
        assert!(up_to_date(&n, &want));
        want.insert(PUBLIC_IP.to_string(), "10.0.0.1".to_string());
        assert!(!up_to_date(&n, &want));
    }
}
