use std::str::FromStr;

use hickory_proto::rr::RData;
use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;

fn svc(ns: &str, name: &str, spec: ServiceSpec) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

fn port(name: &str, proto: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        protocol: Some(proto.into()),
        port,
        ..Default::default()
    }
}

fn cluster_ip(ns: &str, name: &str, ip: &str, ports: Vec<ServicePort>) -> Service {
    svc(
        ns,
        name,
        ServiceSpec {
            cluster_ip: Some(ip.into()),
            cluster_ips: Some(vec![ip.into()]),
            ports: Some(ports),
            ..Default::default()
        },
    )
}

fn headless(ns: &str, name: &str) -> Service {
    svc(
        ns,
        name,
        ServiceSpec {
            cluster_ip: Some("None".into()),
            cluster_ips: Some(vec!["None".into()]),
            ..Default::default()
        },
    )
}

fn slice(eps: &[(&str, Option<&str>, Option<bool>)], ports: &[(&str, i32)]) -> Arc<EndpointSlice> {
    Arc::new(EndpointSlice {
        address_type: "IPv4".into(),
        endpoints: eps
            .iter()
            .map(|(ip, host, ready)| Endpoint {
                addresses: vec![ip.to_string()],
                hostname: host.map(str::to_string),
                conditions: Some(EndpointConditions {
                    ready: *ready,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect(),
        ports: Some(
            ports
                .iter()
                .map(|(n, p)| EndpointPort {
                    name: Some(n.to_string()),
                    port: Some(*p),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                })
                .collect(),
        ),
        metadata: Default::default(),
    })
}

struct Fixture {
    services: Vec<(Service, Vec<Arc<EndpointSlice>>)>,
}

impl Fixture {
    fn standard() -> Fixture {
        let ext = svc(
            "other",
            "ext",
            ServiceSpec {
                type_: Some("ExternalName".into()),
                external_name: Some("example.org".into()),
                ..Default::default()
            },
        );
        let alias = svc(
            "other",
            "alias",
            ServiceSpec {
                type_: Some("ExternalName".into()),
                external_name: Some("web.other.svc.cluster.local".into()),
                ..Default::default()
            },
        );
        Fixture {
            services: vec![
                (
                    cluster_ip("other", "web", "10.43.0.20", vec![port("http", "TCP", 80)]),
                    vec![],
                ),
                (
                    headless("default", "nginx"),
                    vec![slice(
                        &[
                            ("10.42.0.5", Some("web-0"), Some(true)),
                            ("10.42.1.6", None, None),
                            ("10.42.1.7", Some("web-2"), Some(false)),
                        ],
                        &[("http", 8080)],
                    )],
                ),
                (headless("default", "empty"), vec![]),
                (ext, vec![]),
                (alias, vec![]),
            ],
        }
    }

    fn zone(&self) -> Zone {
        Zone::build(
            "cluster.local",
            "10.43.0.10".parse().unwrap(),
            42,
            self.services.iter().map(|(s, sl)| ServiceEntry {
                service: s,
                slices: sl,
            }),
        )
    }
}

fn q(zone: &Zone, qname: &str, qtype: RecordType) -> Reply {
    match zone.lookup(&Name::from_str(qname).unwrap(), qtype) {
        Lookup::Answer(r) => r,
        Lookup::NotOurs => panic!("{qname} {qtype} is not in the zone"),
    }
}

fn data(reply: &Reply) -> Vec<String> {
    let mut v: Vec<String> = reply.answers.iter().map(|r| r.data().to_string()).collect();
    v.sort();
    v
}

fn assert_nodata(reply: &Reply) {
    assert_eq!(reply.rcode, ResponseCode::NoError);
    assert!(reply.answers.is_empty(), "{reply:?}");
    assert_eq!(reply.authority.len(), 1);
    assert_eq!(reply.authority[0].record_type(), RecordType::SOA);
}

fn assert_nxdomain(reply: &Reply) {
    assert_eq!(reply.rcode, ResponseCode::NXDomain, "{reply:?}");
    assert!(reply.answers.is_empty());
    assert_eq!(reply.authority[0].record_type(), RecordType::SOA);
}

#[test]
fn cluster_ip_service_answers_a_with_the_default_ttl() {
    let zone = Fixture::standard().zone();
    let r = q(&zone, "web.other.svc.cluster.local.", RecordType::A);
    assert_eq!(r.rcode, ResponseCode::NoError);
    assert_eq!(data(&r), ["10.43.0.20"]);
    assert_eq!(r.answers[0].ttl(), TTL);
    // Case does not matter.
    let r = q(&zone, "WEB.Other.SVC.cluster.LOCAL.", RecordType::A);
    assert_eq!(data(&r), ["10.43.0.20"]);
}

#[test]
fn existing_name_without_the_type_is_nodata() {
    let zone = Fixture::standard().zone();
    assert_nodata(&q(&zone, "web.other.svc.cluster.local.", RecordType::AAAA));
    assert_nodata(&q(&zone, "web.other.svc.cluster.local.", RecordType::TXT));
}

#[test]
fn empty_non_terminals_are_nodata_and_unknown_names_nxdomain() {
    let zone = Fixture::standard().zone();
    for ent in [
        "svc.cluster.local.",
        "other.svc.cluster.local.",
        "pod.cluster.local.",
        "_tcp.web.other.svc.cluster.local.",
    ] {
        assert_nodata(&q(&zone, ent, RecordType::A));
    }
    assert_nxdomain(&q(&zone, "nope.other.svc.cluster.local.", RecordType::A));
    assert_nxdomain(&q(&zone, "web.nope.svc.cluster.local.", RecordType::A));
    assert_nxdomain(&q(&zone, "web.other.cluster.local.", RecordType::A));
    assert_nxdomain(&q(&zone, "x.web.other.svc.cluster.local.", RecordType::A));
    let soa = &q(&zone, "nope.cluster.local.", RecordType::A).authority[0];
    match soa.data() {
        RData::SOA(s) => {
            assert_eq!(s.minimum(), TTL);
            assert_eq!(s.serial(), 42);
            assert_eq!(s.mname().to_string(), "ns.dns.cluster.local.");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn srv_for_named_ports_of_a_cluster_ip_service() {
    let zone = Fixture::standard().zone();
    let r = q(
        &zone,
        "_http._tcp.web.other.svc.cluster.local.",
        RecordType::SRV,
    );
    assert_eq!(data(&r), ["0 100 80 web.other.svc.cluster.local."]);
    assert_eq!(r.additionals.len(), 1, "the target's A rides along");
    assert_nxdomain(&q(
        &zone,
        "_http._udp.web.other.svc.cluster.local.",
        RecordType::SRV,
    ));
    assert_nodata(&q(
        &zone,
        "_http._tcp.web.other.svc.cluster.local.",
        RecordType::A,
    ));
}

#[test]
fn ptr_for_cluster_ips_and_endpoints_others_go_upstream() {
    let zone = Fixture::standard().zone();
    let r = q(&zone, "20.0.43.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(data(&r), ["web.other.svc.cluster.local."]);
    let r = q(&zone, "5.0.42.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(data(&r), ["web-0.nginx.default.svc.cluster.local."]);
    let r = q(&zone, "6.1.42.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(data(&r), ["10-42-1-6.nginx.default.svc.cluster.local."]);
    assert_eq!(
        zone.lookup(
            &Name::from_str("1.1.168.192.in-addr.arpa.").unwrap(),
            RecordType::PTR
        ),
        Lookup::NotOurs
    );
    assert_eq!(
        zone.lookup(&Name::from_str("example.org.").unwrap(), RecordType::A),
        Lookup::NotOurs
    );
}

#[test]
fn headless_service_answers_each_ready_endpoint() {
    let zone = Fixture::standard().zone();
    let r = q(&zone, "nginx.default.svc.cluster.local.", RecordType::A);
    // web-2 is not ready; a nil condition counts as ready.
    assert_eq!(data(&r), ["10.42.0.5", "10.42.1.6"]);
    let r = q(
        &zone,
        "web-0.nginx.default.svc.cluster.local.",
        RecordType::A,
    );
    assert_eq!(data(&r), ["10.42.0.5"]);
    assert_nxdomain(&q(
        &zone,
        "web-2.nginx.default.svc.cluster.local.",
        RecordType::A,
    ));
    let r = q(
        &zone,
        "_http._tcp.nginx.default.svc.cluster.local.",
        RecordType::SRV,
    );
    assert_eq!(
        data(&r),
        [
            "0 50 8080 10-42-1-6.nginx.default.svc.cluster.local.",
            "0 50 8080 web-0.nginx.default.svc.cluster.local."
        ]
    );
    assert_eq!(r.additionals.len(), 2);
}

#[test]
fn headless_service_without_ready_endpoints_exists() {
    let zone = Fixture::standard().zone();
    assert_nodata(&q(&zone, "empty.default.svc.cluster.local.", RecordType::A));
}

#[test]
fn publish_not_ready_addresses_includes_unready_endpoints() {
    let mut f = Fixture::standard();
    f.services[1]
        .0
        .spec
        .as_mut()
        .unwrap()
        .publish_not_ready_addresses = Some(true);
    let r = q(&f.zone(), "nginx.default.svc.cluster.local.", RecordType::A);
    assert_eq!(data(&r).len(), 3);
}

#[test]
fn external_name_answers_a_cname_for_every_type() {
    let zone = Fixture::standard().zone();
    for t in [
        RecordType::A,
        RecordType::AAAA,
        RecordType::CNAME,
        RecordType::TXT,
    ] {
        let r = q(&zone, "ext.other.svc.cluster.local.", t);
        assert_eq!(data(&r), ["example.org."], "{t}");
        assert_eq!(r.answers[0].record_type(), RecordType::CNAME);
    }
    // A target inside the zone is followed.
    let r = q(&zone, "alias.other.svc.cluster.local.", RecordType::A);
    assert_eq!(r.answers.len(), 2);
    assert_eq!(r.answers[1].data().to_string(), "10.43.0.20");
}

#[test]
fn pod_names_answer_their_address() {
    let zone = Fixture::standard().zone();
    let r = q(&zone, "10-42-0-9.default.pod.cluster.local.", RecordType::A);
    assert_eq!(data(&r), ["10.42.0.9"]);
    assert_nodata(&q(
        &zone,
        "10-42-0-9.default.pod.cluster.local.",
        RecordType::AAAA,
    ));
    let r = q(
        &zone,
        "fd00--5.default.pod.cluster.local.",
        RecordType::AAAA,
    );
    assert_eq!(data(&r), ["fd00::5"]);
    assert_nxdomain(&q(
        &zone,
        "not-an-ip.default.pod.cluster.local.",
        RecordType::A,
    ));
    assert_nodata(&q(&zone, "default.pod.cluster.local.", RecordType::A));
}

#[test]
fn schema_version_soa_and_ns_at_the_apex() {
    let zone = Fixture::standard().zone();
    let r = q(&zone, "dns-version.cluster.local.", RecordType::TXT);
    assert_eq!(data(&r), ["1.1.0"]);
    assert_nodata(&q(&zone, "dns-version.cluster.local.", RecordType::A));
    let r = q(&zone, "cluster.local.", RecordType::SOA);
    assert_eq!(r.answers[0].record_type(), RecordType::SOA);
    let r = q(&zone, "cluster.local.", RecordType::NS);
    assert_eq!(data(&r), ["ns.dns.cluster.local."]);
    assert_eq!(r.additionals[0].data().to_string(), "10.43.0.10");
    assert_nodata(&q(&zone, "cluster.local.", RecordType::A));
}

#[test]
fn another_cluster_domain_and_dual_stack() {
    let s = svc(
        "ns",
        "dual",
        ServiceSpec {
            cluster_ip: Some("10.43.0.30".into()),
            cluster_ips: Some(vec!["10.43.0.30".into(), "fd43::30".into()]),
            ..Default::default()
        },
    );
    let zone = Zone::build(
        "k8s.example",
        "10.43.0.10".parse().unwrap(),
        1,
        [ServiceEntry {
            service: &s,
            slices: &[],
        }],
    );
    assert_eq!(
        data(&q(&zone, "dual.ns.svc.k8s.example.", RecordType::A)),
        ["10.43.0.30"]
    );
    assert_eq!(
        data(&q(&zone, "dual.ns.svc.k8s.example.", RecordType::AAAA)),
        ["fd43::30"]
    );
    assert_eq!(
        zone.lookup(
            &Name::from_str("dual.ns.svc.cluster.local.").unwrap(),
            RecordType::A
        ),
        Lookup::NotOurs
    );
}
