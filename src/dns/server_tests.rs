use std::str::FromStr;
use std::sync::Mutex;

use async_trait::async_trait;
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::Record;
use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;
use crate::dns::forward::{ForwardError, Upstream};
use crate::dns::zone::ServiceEntry;

/// Answers every question with 192.0.2.<last octet of the server>.
#[derive(Default)]
struct EchoUpstream {
    asked: Mutex<Vec<(SocketAddr, String)>>,
}

#[async_trait]
impl Upstream for EchoUpstream {
    async fn exchange(&self, server: SocketAddr, query: &Message) -> Result<Message, ForwardError> {
        let q = &query.queries()[0];
        self.asked
            .lock()
            .unwrap()
            .push((server, q.name().to_string()));
        let IpAddr::V4(v4) = server.ip() else {
            unreachable!()
        };
        let mut m = Message::new();
        m.set_id(query.id()).set_message_type(MessageType::Response);
        m.add_answer(Record::from_rdata(
            q.name().clone(),
            60,
            RData::A(A::new(192, 0, 2, v4.octets()[3])),
        ));
        Ok(m)
    }
}

fn tables() -> Tables {
    let web = Service {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some("10.43.0.20".into()),
            ..Default::default()
        }),
        status: None,
    };
    let ext = Service {
        metadata: ObjectMeta {
            name: Some("ext".into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ExternalName".into()),
            external_name: Some("example.org".into()),
            ..Default::default()
        }),
        status: None,
    };
    let zone = Zone::build(
        "cluster.local",
        "10.43.0.10".parse().unwrap(),
        1,
        [&web, &ext].map(|s| ServiceEntry {
            service: s,
            slices: &[],
        }),
    );
    let mut hosts = HostTable::default();
    hosts.insert("node-a", "192.168.1.5".parse().unwrap());
    Tables {
        zone,
        hosts,
        upstreams: vec!["192.0.2.1:53".parse().unwrap()],
        stub_zones: vec![(
            "corp.example.".into(),
            vec!["192.0.2.9:53".parse().unwrap()],
        )],
    }
}

fn resolver() -> (Arc<Resolver>, Arc<EchoUpstream>) {
    let up = Arc::new(EchoUpstream::default());
    let (_tx, rx) = watch::channel(true);
    (
        Arc::new(Resolver::new(tables(), rx, Forwarder::new(up.clone()))),
        up,
    )
}

async fn ask(r: &Resolver, name: &str, t: RecordType) -> (Reply, bool) {
    r.answer(&Name::from_str(name).unwrap(), t, DNSClass::IN)
        .await
}

#[tokio::test]
async fn questions_go_to_stub_zones_hosts_the_zone_then_upstream() {
    let (r, up) = resolver();
    let (a, auth) = ask(&r, "web.default.svc.cluster.local.", RecordType::A).await;
    assert!(auth);
    assert_eq!(a.answers[0].data().to_string(), "10.43.0.20");
    let (a, _) = ask(&r, "node-a.", RecordType::A).await;
    assert_eq!(a.answers[0].data().to_string(), "192.168.1.5");
    let (a, auth) = ask(&r, "db.corp.example.", RecordType::A).await;
    assert!(!auth);
    assert_eq!(a.answers[0].data().to_string(), "192.0.2.9");
    let (a, _) = ask(&r, "example.com.", RecordType::A).await;
    assert_eq!(a.answers[0].data().to_string(), "192.0.2.1");
    let (a, _) = ask(&r, "nope.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(a.rcode, ResponseCode::NXDomain);
    let asked: Vec<String> = up
        .asked
        .lock()
        .unwrap()
        .iter()
        .map(|(s, n)| format!("{s} {n}"))
        .collect();
    assert_eq!(
        asked,
        ["192.0.2.9:53 db.corp.example.", "192.0.2.1:53 example.com."]
    );
}

#[tokio::test]
async fn external_names_outside_the_zone_are_chased_upstream() {
    let (r, _) = resolver();
    let (a, _) = ask(&r, "ext.default.svc.cluster.local.", RecordType::A).await;
    let data: Vec<String> = a.answers.iter().map(|r| r.data().to_string()).collect();
    assert_eq!(data, ["example.org.", "192.0.2.1"]);
}

#[tokio::test]
async fn serves_udp_and_tcp_with_hickory() {
    let (r, _) = resolver();
    let (udp, tcp) = bind(None, "127.0.0.1".parse().unwrap(), 0).await.unwrap();
    let udp_addr = udp.local_addr().unwrap();
    let tcp_addr = tcp.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(serve(r, udp, tcp, stop.clone()));
    let mut q = Message::new();
    q.set_id(7).set_recursion_desired(true);
    q.add_query(Query::query(
        Name::from_str("web.default.svc.cluster.local.").unwrap(),
        RecordType::A,
    ));
    let bytes = q.to_vec().unwrap();

    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(&bytes, udp_addr).await.unwrap();
    let mut buf = [0u8; 1500];
    let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let m = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(m.id(), 7);
    assert!(m.authoritative());
    assert_eq!(m.answers()[0].data().to_string(), "10.43.0.20");

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(tcp_addr).await.unwrap();
    s.write_all(&(bytes.len() as u16).to_be_bytes())
        .await
        .unwrap();
    s.write_all(&bytes).await.unwrap();
    let len = s.read_u16().await.unwrap() as usize;
    let mut buf = vec![0u8; len];
    s.read_exact(&mut buf).await.unwrap();
    let m = Message::from_vec(&buf).unwrap();
    assert_eq!(m.answers()[0].data().to_string(), "10.43.0.20");
    stop.cancel();
    task.await.unwrap().unwrap();
}
