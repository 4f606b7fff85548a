//! Forwarding to the node's upstream resolvers, with a small answer cache
//! (CoreDNS's `forward` + `cache 30`, as k3s configures them).
//!
//! The cache keeps positive answers for their smallest TTL and negative
//! ones (NXDOMAIN, NODATA) for their SOA's negative TTL, both capped at
//! [`MAX_TTL`]; a hit is served with TTLs counted down. SERVFAIL and other
//! failures are never cached. The cache holds at most [`CAPACITY`] entries;
//! when full, expired entries go first, then arbitrary ones.
//!
//! The network is behind [`Upstream`] (UDP, then TCP when the answer is
//! truncated) so the cache and the server-ordering logic test with a fake.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::zone::{key, Reply};

/// `cache 30`: the longest any forwarded answer is kept.
pub const MAX_TTL: u32 = 30;
/// CoreDNS's default cache capacity (per kind).
pub const CAPACITY: usize = 9984;
/// How long one upstream may take before the next is tried.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// The UDP payload we offer upstream (the DNS flag day value).
const EDNS_PAYLOAD: u16 = 1232;

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("failed to forward: no upstream resolver is configured")]
    NoUpstream,
    #[error("failed to reach upstream {server}: {reason}")]
    Upstream { server: SocketAddr, reason: String },
}

/// One exchange with one upstream server.
#[async_trait]
pub trait Upstream: Send + Sync + 'static {
    async fn exchange(&self, server: SocketAddr, query: &Message) -> Result<Message, ForwardError>;
}

/// The real network: a fresh UDP socket per query (a random source port,
/// so answers cannot be spoofed by guessing it), TCP when truncated.
pub struct NetUpstream {
    pub timeout: Duration,
}

impl Default for NetUpstream {
    fn default() -> Self {
        NetUpstream {
            timeout: UPSTREAM_TIMEOUT,
        }
    }
}

fn matches(query: &Message, answer: &Message) -> bool {
    answer.id() == query.id()
        && answer.message_type() == MessageType::Response
        && answer.queries() == query.queries()
}

impl NetUpstream {
    async fn udp(
        &self,
        server: SocketAddr,
        bytes: &[u8],
        query: &Message,
    ) -> std::io::Result<Message> {
        let bind: SocketAddr = if server.is_ipv4() {
            "0.0.0.0:0".parse().expect("valid")
        } else {
            "[::]:0".parse().expect("valid")
        };
        let socket = tokio::net::UdpSocket::bind(bind).await?;
        socket.connect(server).await?;
        socket.send(bytes).await?;
        let mut buf = vec![0u8; 4096];
        loop {
            let n = socket.recv(&mut buf).await?;
            // Stray or mismatched datagrams are dropped; keep waiting.
            if let Ok(m) = Message::from_vec(&buf[..n]) {
                if matches(query, &m) {
                    return Ok(m);
                }
            }
        }
    }

    async fn tcp(
        &self,
        server: SocketAddr,
        bytes: &[u8],
        query: &Message,
    ) -> std::io::Result<Message> {
        let mut stream = tokio::net::TcpStream::connect(server).await?;
        let mut framed = Vec::with_capacity(bytes.len() + 2);
        framed.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        framed.extend_from_slice(bytes);
        stream.write_all(&framed).await?;
        let len = stream.read_u16().await? as usize;
        let mut buf = vec![0u8; len];
        stream.read_exact(&mut buf).await?;
        let m = Message::from_vec(&buf).map_err(std::io::Error::other)?;
        if !matches(query, &m) {
            return Err(std::io::Error::other(
                "the answer does not match the question",
            ));
        }
        Ok(m)
    }
}

#[async_trait]
impl Upstream for NetUpstream {
    async fn exchange(&self, server: SocketAddr, query: &Message) -> Result<Message, ForwardError> {
        let fail = |reason: String| ForwardError::Upstream { server, reason };
        let bytes = query.to_vec().map_err(|e| fail(e.to_string()))?;
        let answer = tokio::time::timeout(self.timeout, self.udp(server, &bytes, query))
            .await
            .map_err(|_| fail("timed out".into()))?
            .map_err(|e| fail(e.to_string()))?;
        if !answer.truncated() {
            return Ok(answer);
        }
        tokio::time::timeout(self.timeout, self.tcp(server, &bytes, query))
            .await
            .map_err(|_| fail("timed out over TCP".into()))?
            .map_err(|e| fail(e.to_string()))
    }
}

type CacheKey = (String, u16, u16);

struct Entry {
    reply: Reply,
    stored: Instant,
    ttl: u32,
}

/// Forwards questions and caches the answers.
pub struct Forwarder {
    upstream: Arc<dyn Upstream>,
    cache: Mutex<HashMap<CacheKey, Entry>>,
}

/// How long `reply` may be cached, if at all.
fn cache_ttl(reply: &Reply) -> Option<u32> {
    let ttl = match reply.rcode {
        ResponseCode::NoError if !reply.answers.is_empty() => {
            reply.answers.iter().map(|r| r.ttl()).min()?
        }
        ResponseCode::NoError | ResponseCode::NXDomain => {
            // RFC 2308: the negative TTL is min(SOA TTL, SOA minimum).
            reply.authority.iter().find_map(|r| match r.data() {
                RData::SOA(soa) => Some(r.ttl().min(soa.minimum())),
                _ => None,
            })?
        }
        _ => return None,
    };
    (ttl > 0).then_some(ttl.min(MAX_TTL))
}

impl Forwarder {
    pub fn new(upstream: Arc<dyn Upstream>) -> Self {
        Forwarder {
            upstream,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// How many answers are cached (expired ones included until evicted).
    pub fn cached(&self) -> usize {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn from_cache(&self, k: &CacheKey) -> Option<Reply> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let entry = cache.get(k)?;
        let age = entry.stored.elapsed().as_secs() as u32;
        if age >= entry.ttl {
            cache.remove(k);
            return None;
        }
        let mut reply = entry.reply.clone();
        for r in reply
            .answers
            .iter_mut()
            .chain(reply.authority.iter_mut())
            .chain(reply.additionals.iter_mut())
        {
            let ttl = r.ttl().saturating_sub(age).min(entry.ttl - age);
            r.set_ttl(ttl);
        }
        Some(reply)
    }

    fn store(&self, k: CacheKey, reply: &Reply) {
        let Some(ttl) = cache_ttl(reply) else { return };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CAPACITY {
            cache.retain(|_, e| e.stored.elapsed().as_secs() < e.ttl as u64);
            if cache.len() >= CAPACITY {
                if let Some(victim) = cache.keys().next().cloned() {
                    cache.remove(&victim);
                }
            }
        }
        cache.insert(
            k,
            Entry {
                reply: reply.clone(),
                stored: Instant::now(),
                ttl,
            },
        );
    }

    /// Answers `qname`/`qtype`/`qclass` from the cache or from `servers`,
    /// tried in order until one answers other than SERVFAIL/REFUSED.
    pub async fn resolve(
        &self,
        qname: &Name,
        qtype: RecordType,
        qclass: DNSClass,
        servers: &[SocketAddr],
    ) -> Result<Reply, ForwardError> {
        let k = (key(qname), u16::from(qtype), u16::from(qclass));
        if let Some(hit) = self.from_cache(&k) {
            return Ok(hit);
        }
        if servers.is_empty() {
            return Err(ForwardError::NoUpstream);
        }
        let mut query = Message::new();
        query
            .set_id(rand::random())
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(true);
        let mut q = Query::query(qname.clone(), qtype);
        q.set_query_class(qclass);
        query.add_query(q);
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        query.set_edns(edns);
        let mut last = None;
        for server in servers {
            match self.upstream.exchange(*server, &query).await {
                Ok(mut m) => {
                    let reply = Reply {
                        rcode: m.response_code(),
                        answers: m.take_answers(),
                        authority: m.take_name_servers(),
                        additionals: m
                            .take_additionals()
                            .into_iter()
                            .filter(|r| r.record_type() != RecordType::OPT)
                            .collect(),
                    };
                    if matches!(reply.rcode, ResponseCode::ServFail | ResponseCode::Refused) {
                        last = Some(Ok(reply));
                        continue;
                    }
                    self.store(k, &reply);
                    return Ok(reply);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "upstream resolver failed; trying the next");
                    last = Some(Err(e));
                }
            }
        }
        last.unwrap_or(Err(ForwardError::NoUpstream))
    }
}

#[cfg(test)]
#[path = "forward_tests.rs"]
mod tests;
