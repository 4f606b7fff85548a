//! Answering questions: [`Resolver`] decides (custom zones → host tables →
//! cluster zone → upstream) over the current [`Tables`]; [`Handler`] adapts
//! it to hickory-server, which owns the wire format and the UDP/TCP loops.
//!
//! The tables are swapped whole (an `Arc` behind a lock held for a pointer
//! copy), so a question is always answered from one consistent build.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Edns, Header, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::CNAME;
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use hickory_server::authority::MessageResponseBuilder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::watch;

use super::forward::Forwarder;
use super::hosts::HostTable;
use super::zone::{key, Lookup, Reply, Zone};

/// How long a question waits for the first sync before SERVFAIL (only
/// right after the agent starts).
pub const FIRST_SYNC_WAIT: Duration = Duration::from_secs(2);
/// TCP connections idle longer than this are closed.
const TCP_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest UDP answer we send to an EDNS client.
const MAX_UDP_PAYLOAD: u16 = 1232;

/// Everything a question is answered from, built by the feed.
pub struct Tables {
    pub zone: Zone,
    pub hosts: HostTable,
    /// The node's upstream resolvers (or coredns-custom's `forward .`).
    pub upstreams: Vec<SocketAddr>,
    /// coredns-custom server blocks: zone (lowercase, trailing dot) → resolvers.
    pub stub_zones: Vec<(String, Vec<SocketAddr>)>,
}

/// The decision logic, without sockets.
pub struct Resolver {
    tables: RwLock<Arc<Tables>>,
    synced: watch::Receiver<bool>,
    forwarder: Forwarder,
}

impl Resolver {
    pub fn new(initial: Tables, synced: watch::Receiver<bool>, forwarder: Forwarder) -> Self {
        Resolver {
            tables: RwLock::new(Arc::new(initial)),
            synced,
            forwarder,
        }
    }

    pub fn publish(&self, tables: Tables) {
        *self.tables.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(tables);
    }

    pub fn tables(&self) -> Arc<Tables> {
        self.tables
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn forwarder(&self) -> &Forwarder {
        &self.forwarder
    }

    async fn forward(
        &self,
        qname: &Name,
        qtype: RecordType,
        qclass: DNSClass,
        servers: &[SocketAddr],
    ) -> Reply {
        match self.forwarder.resolve(qname, qtype, qclass, servers).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(name = %qname, error = %e, "forwarding failed");
                Reply {
                    rcode: ResponseCode::ServFail,
                    ..Reply::default()
                }
            }
        }
    }

    /// The answer to one question and whether it is authoritative.
    pub async fn answer(&self, qname: &Name, qtype: RecordType, qclass: DNSClass) -> (Reply, bool) {
        if !*self.synced.borrow() {
            let mut synced = self.synced.clone();
            let _ = tokio::time::timeout(FIRST_SYNC_WAIT, synced.wait_for(|s| *s)).await;
        }
        let tables = self.tables();
        let k = key(qname);
        let stub = tables
            .stub_zones
            .iter()
            .filter(|(z, _)| k == *z || k.ends_with(&format!(".{z}")))
            .max_by_key(|(z, _)| z.len());
        if let Some((_, servers)) = stub {
            return (self.forward(qname, qtype, qclass, servers).await, false);
        }
        if qclass == DNSClass::IN {
            if let Some(answers) = tables.hosts.lookup(qname, qtype) {
                let reply = Reply {
                    answers,
                    ..Reply::default()
                };
                return (reply, true);
            }
            if let Lookup::Answer(mut reply) = tables.zone.lookup(qname, qtype) {
                self.chase_external(&tables, &mut reply, qtype).await;
                return (reply, true);
            }
        }
        (
            self.forward(qname, qtype, qclass, &tables.upstreams).await,
            false,
        )
    }

    /// An ExternalName's CNAME pointing outside the zone: resolve the
    /// target upstream and append it, as CoreDNS does, so stub resolvers
    /// that do not chase CNAMEs themselves get addresses.
    async fn chase_external(&self, tables: &Tables, reply: &mut Reply, qtype: RecordType) {
        if !matches!(qtype, RecordType::A | RecordType::AAAA) || reply.answers.len() != 1 {
            return;
        }
        let RData::CNAME(CNAME(target)) = reply.answers[0].data() else {
            return;
        };
        if tables.zone.apex().zone_of(target) {
            return;
        }
        let target = target.clone();
        let more = self
            .forward(&target, qtype, DNSClass::IN, &tables.upstreams)
            .await;
        if more.rcode == ResponseCode::NoError {
            reply.answers.extend(more.answers);
        }
    }
}

/// The hickory-server request handler.
pub struct Handler(pub Arc<Resolver>);

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let mut header = Header::response_from_request(request.header());
        header.set_recursion_available(true);
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(edns) = request.edns() {
            let mut ours = Edns::new();
            ours.set_max_payload(edns.max_payload().clamp(512, MAX_UDP_PAYLOAD));
            builder.edns(ours);
        }
        let question = match request.request_info() {
            Ok(info)
                if request.message_type() == MessageType::Query
                    && request.op_code() == OpCode::Query =>
            {
                Some(info.query.original().clone())
            }
            Ok(_) => None,
            Err(_) => None,
        };
        let Some(question) = question else {
            let code = if request.op_code() == OpCode::Query {
                ResponseCode::FormErr
            } else {
                ResponseCode::NotImp
            };
            let msg = builder.error_msg(request.header(), code);
            return response
                .send_response(msg)
                .await
                .unwrap_or_else(|_| header.into());
        };
        let (reply, authoritative) = self
            .0
            .answer(
                question.name(),
                question.query_type(),
                question.query_class(),
            )
            .await;
        header.set_authoritative(authoritative);
        header.set_response_code(reply.rcode);
        let msg = builder.build(
            header,
            reply.answers.iter(),
            reply.authority.iter(),
            std::iter::empty(),
            reply.additionals.iter(),
        );
        match response.send_response(msg).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "failed to send a DNS answer");
                header.into()
            }
        }
    }
}

/// The listening sockets on `ip:port`, made inside `netns` (the process's
/// namespace when `None`). `IP_FREEBIND` lets them bind before the address
/// exists on the node, so the agent can serve as soon as it starts and the
/// address can come and go without rebinding.
pub async fn bind(
    netns: Option<PathBuf>,
    ip: IpAddr,
    port: u16,
) -> std::io::Result<(std::net::UdpSocket, std::net::TcpListener)> {
    crate::hostnet::netns::run_in(netns, move || {
        let addr = SocketAddr::new(ip, port);
        let domain = if ip.is_ipv4() {
            Domain::IPV4
        } else {
            Domain::IPV6
        };
        let freebind = |s: &Socket| {
            if ip.is_ipv4() {
                s.set_freebind_v4(true)
            } else {
                s.set_freebind_v6(true)
            }
        };
        let udp = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
        freebind(&udp)?;
        udp.set_nonblocking(true)?;
        udp.bind(&addr.into())?;
        let tcp = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
        freebind(&tcp)?;
        tcp.set_reuse_address(true)?;
        tcp.set_nonblocking(true)?;
        tcp.bind(&addr.into())?;
        tcp.listen(1024)?;
        Ok((udp.into(), tcp.into()))
    })
    .await
}

/// Serves `resolver` on the sockets until `shutdown`.
pub async fn serve(
    resolver: Arc<Resolver>,
    udp: std::net::UdpSocket,
    tcp: std::net::TcpListener,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    let mut server = hickory_server::ServerFuture::new(Handler(resolver));
    server.register_socket(tokio::net::UdpSocket::from_std(udp)?);
    server.register_listener(tokio::net::TcpListener::from_std(tcp)?, TCP_TIMEOUT);
    shutdown.cancelled().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), server.shutdown_gracefully()).await;
    Ok(())
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
