use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};

use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::Record;

use super::*;

/// Answers from a script, recording which servers were asked.
struct FakeUpstream {
    asked: Mutex<Vec<SocketAddr>>,
    calls: AtomicUsize,
    /// Per server: `None` = unreachable, else (rcode, answer TTL, SOA?).
    script: HashMap<SocketAddr, Option<(ResponseCode, u32, bool)>>,
}

#[async_trait]
impl Upstream for FakeUpstream {
    async fn exchange(&self, server: SocketAddr, query: &Message) -> Result<Message, ForwardError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.asked.lock().unwrap().push(server);
        let Some(Some((rcode, ttl, soa))) = self.script.get(&server).cloned() else {
            return Err(ForwardError::Upstream {
                server,
                reason: "unreachable".into(),
            });
        };
        let mut m = Message::new();
        m.set_id(query.id())
            .set_message_type(MessageType::Response)
            .set_response_code(rcode);
        let q = &query.queries()[0];
        if rcode == ResponseCode::NoError && ttl > 0 {
            m.add_answer(Record::from_rdata(
                q.name().clone(),
                ttl,
                RData::A(A::new(192, 0, 2, 1)),
            ));
        }
        if soa {
            let n = Name::from_str("example.").unwrap();
            m.add_name_server(Record::from_rdata(
                n.clone(),
                3600,
                RData::SOA(SOA::new(n.clone(), n, 1, 1, 1, 1, 20)),
            ));
        }
        Ok(m)
    }
}

fn fake(script: &[(&str, Option<(ResponseCode, u32, bool)>)]) -> Arc<FakeUpstream> {
    Arc::new(FakeUpstream {
        asked: Mutex::new(Vec::new()),
        calls: AtomicUsize::new(0),
        script: script
            .iter()
            .map(|(s, r)| (s.parse().unwrap(), *r))
            .collect(),
    })
}

fn servers(list: &[&str]) -> Vec<SocketAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

#[tokio::test]
async fn positive_answers_are_cached_with_ttl_capped_at_30() {
    let up = fake(&[("192.0.2.53:53", Some((ResponseCode::NoError, 300, false)))]);
    let f = Forwarder::new(up.clone());
    let name = Name::from_str("example.org.").unwrap();
    let s = servers(&["192.0.2.53:53"]);
    let first = f
        .resolve(&name, RecordType::A, DNSClass::IN, &s)
        .await
        .unwrap();
    assert_eq!(first.answers[0].ttl(), 300);
    let second = f
        .resolve(&name, RecordType::A, DNSClass::IN, &s)
        .await
        .unwrap();
    assert_eq!(
        up.calls.load(Ordering::SeqCst),
        1,
        "the second answer came from the cache"
    );
    assert!(second.answers[0].ttl() <= MAX_TTL);
    // Another type is another question.
    f.resolve(&name, RecordType::AAAA, DNSClass::IN, &s)
        .await
        .unwrap();
    assert_eq!(up.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn negative_answers_cache_by_soa_and_servfail_is_not_cached() {
    let up = fake(&[("192.0.2.53:53", Some((ResponseCode::NXDomain, 0, true)))]);
    let f = Forwarder::new(up.clone());
    let name = Name::from_str("nope.example.").unwrap();
    let s = servers(&["192.0.2.53:53"]);
    let r = f
        .resolve(&name, RecordType::A, DNSClass::IN, &s)
        .await
        .unwrap();
    assert_eq!(r.rcode, ResponseCode::NXDomain);
    f.resolve(&name, RecordType::A, DNSClass::IN, &s)
        .await
        .unwrap();
    assert_eq!(up.calls.load(Ordering::SeqCst), 1);

    let up = fake(&[("192.0.2.53:53", Some((ResponseCode::ServFail, 0, false)))]);
    let f = Forwarder::new(up.clone());
    for _ in 0..2 {
        let r = f
            .resolve(&name, RecordType::A, DNSClass::IN, &s)
            .await
            .unwrap();
        assert_eq!(r.rcode, ResponseCode::ServFail);
    }
    assert_eq!(up.calls.load(Ordering::SeqCst), 2);
    assert_eq!(f.cached(), 0);
}

#[tokio::test]
async fn unreachable_or_failing_servers_fall_through_to_the_next() {
    let up = fake(&[
        ("192.0.2.1:53", None),
        ("192.0.2.2:53", Some((ResponseCode::Refused, 0, false))),
        ("192.0.2.3:53", Some((ResponseCode::NoError, 60, false))),
    ]);
    let f = Forwarder::new(up.clone());
    let name = Name::from_str("example.org.").unwrap();
    let r = f
        .resolve(
            &name,
            RecordType::A,
            DNSClass::IN,
            &servers(&["192.0.2.1:53", "192.0.2.2:53", "192.0.2.3:53"]),
        )
        .await
        .unwrap();
    assert_eq!(r.answers.len(), 1);
    assert_eq!(up.asked.lock().unwrap().len(), 3);
    let none = Forwarder::new(up);
    assert!(matches!(
        none.resolve(&name, RecordType::A, DNSClass::IN, &[]).await,
        Err(ForwardError::NoUpstream)
    ));
}
