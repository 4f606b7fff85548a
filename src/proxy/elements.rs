//! Element changes written straight to nf_tables over netlink, without the
//! `nft` binary: the path every endpoint change takes.
//!
//! Why: `nft` 1.0.6 (Debian Bookworm, Raspberry Pi OS) fetches the elements
//! of every set in the namespace before it adds or deletes one element,
//! and a fork of `nft` costs ~3 ms of its own; an endpoint change is only
//! element changes in data maps and plain sets (see [`super::rules`]), so
//! it is written here as one nfnetlink batch (`NFT_MSG_DELSETELEM` /
//! `NFT_MSG_NEWSETELEM` between batch begin and end): atomic like `nft -f`,
//! and its cost is that of the elements it carries, whatever the table
//! holds. No verdict (jump/goto) is ever written here, so the kernel has
//! no jump graph to re-validate at commit.
//!
//! Only element keys and data are encoded (in nft's layout: every field
//! of a concatenation padded to 4 bytes; intervals as a start element and
//! an end element flagged `NFT_SET_ELEM_INTERVAL_END` one past the last
//! value, as `nft` writes them). Tables, chains, rules and sets stay with
//! `nft`.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::hostnet::netns;

/// One element of a set or map, encoded, with its text for logs and tests.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Element {
    pub key: Vec<u8>,
    /// An interval's end marker (one past its last value).
    pub end: bool,
    pub data: Option<Vec<u8>>,
    pub text: String,
}

/// Add or delete one element of `set` in the proxy's table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElementOp {
    pub set: String,
    pub delete: bool,
    pub element: Element,
}

impl std::fmt::Display for ElementOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verb = if self.delete { "delete" } else { "add" };
        write!(f, "{verb} element {} {{ {} }}", self.set, self.element.text)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ElementError {
    #[error("failed to talk to nf_tables over netlink: {0}")]
    Io(#[from] io::Error),
    #[error("failed to apply {count} element changes: the kernel refused them: {source}")]
    Rejected {
        count: usize,
        #[source]
        source: io::Error,
    },
}

/// The boundary for element changes: one atomic batch per call.
#[async_trait]
pub trait ElementWriter: Send + Sync {
    async fn apply(&self, table: &str, ops: &[ElementOp]) -> Result<(), ElementError>;
}

/// Key of a concatenation written as nft text (`10.43.0.1 . tcp . 80`):
/// addresses 4 bytes, protocols 1 and ports 2 (network order), each field
/// padded to 4 bytes.
pub fn encode_key(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for field in text.split(" . ") {
        let field = field.trim();
        if let Ok(ip) = field.parse::<Ipv4Addr>() {
            out.extend_from_slice(&ip.octets());
        } else if let Some(proto) = proto_number(field) {
            out.extend_from_slice(&[proto, 0, 0, 0]);
        } else if let Ok(port) = field.parse::<u16>() {
            out.extend_from_slice(&port.to_be_bytes());
            out.extend_from_slice(&[0, 0]);
        }
    }
    out
}

fn proto_number(name: &str) -> Option<u8> {
    match name {
        "tcp" => Some(6),
        "udp" => Some(17),
        "sctp" => Some(132),
        _ => None,
    }
}

/// A data-map element of an endpoint map: slot range `lo..=hi` of a
/// `numgen` value → `ip . port`; returns the start and the end element.
/// Interval keys are big-endian: `nft` converts the host-order numgen
/// register before the look-up, so ranges sort as numbers.
pub fn range_elements(lo: u32, hi: u32, ip: Ipv4Addr, port: u16) -> [Element; 2] {
    let mut data = ip.octets().to_vec();
    data.extend_from_slice(&port.to_be_bytes());
    data.extend_from_slice(&[0, 0]);
    [
        Element {
            key: lo.to_be_bytes().to_vec(),
            end: false,
            data: Some(data),
            text: format!("{lo}-{hi} : {ip} . {port}"),
        },
        Element {
            key: (hi + 1).to_be_bytes().to_vec(),
            end: true,
            data: None,
            text: format!("end {}", hi + 1),
        },
    ]
}

/// A plain set element from its nft text.
pub fn set_element(text: &str) -> Element {
    Element {
        key: encode_key(text),
        end: false,
        data: None,
        text: text.to_string(),
    }
}

/// [`ElementWriter`] over a netfilter netlink socket opened in a given
/// network namespace (the process's own when `None`). The socket is opened
/// once and kept: it stays bound to its namespace, and closing a
/// netfilter socket waits for an RCU grace period (5-15 ms measured),
/// which would otherwise dominate every change.
#[derive(Debug)]
pub struct NetlinkElements {
    netns: Option<PathBuf>,
    socket: Mutex<Option<Arc<OwnedFd>>>,
    /// Sequence numbers: each batch takes a fresh range, so answers left
    /// over from an earlier batch are never taken for this one's.
    seq: AtomicU32,
}

impl NetlinkElements {
    pub fn new(netns: Option<PathBuf>) -> Self {
        NetlinkElements {
            netns,
            socket: Mutex::new(None),
            seq: AtomicU32::new(1),
        }
    }

    pub(super) async fn socket(&self) -> Result<Arc<OwnedFd>, ElementError> {
        if let Some(fd) = self.socket.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Ok(fd);
        }
        // The socket belongs to the namespace it is opened in.
        let fd = Arc::new(netns::run_in(self.netns.clone(), open_socket).await?);
        *self.socket.lock().unwrap_or_else(|e| e.into_inner()) = Some(fd.clone());
        Ok(fd)
    }

    /// `n` fresh sequence numbers; returns the first.
    pub(super) fn next_seq(&self, n: u32) -> u32 {
        self.seq.fetch_add(n, Ordering::Relaxed)
    }

    /// Drops the socket: the next call opens a fresh one.
    pub(super) fn reset_socket(&self) {
        *self.socket.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

#[async_trait]
impl ElementWriter for NetlinkElements {
    async fn apply(&self, table: &str, ops: &[ElementOp]) -> Result<(), ElementError> {
        if ops.is_empty() {
            return Ok(());
        }
        let fd = self.socket().await?;
        let first = self.seq.fetch_add(ops.len() as u32 + 2, Ordering::Relaxed);
        let (batch, acks) = encode_batch(table, ops, first);
        let count = ops.len();
        let result = tokio::task::spawn_blocking(move || send_batch(&fd, &batch, first, acks))
            .await
            .map_err(|e| ElementError::Io(io::Error::other(e.to_string())))?;
        if result.is_err() {
            // Start over with a fresh socket next time.
            *self.socket.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        result.map_err(|e| match e {
            SendError::Io(e) => ElementError::Io(e),
            SendError::Kernel(source) => ElementError::Rejected { count, source },
        })
    }
}

/// Records every batch (unit tests only).
#[cfg(test)]
#[derive(Default)]
pub struct FakeElements {
    applied: Mutex<Vec<Vec<ElementOp>>>,
}

#[cfg(test)]
impl FakeElements {
    /// Every batch applied, each as its ops' text lines.
    pub fn applied(&self) -> Vec<Vec<String>> {
        self.applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|b| b.iter().map(|op| op.to_string()).collect())
            .collect()
    }
}

#[cfg(test)]
#[async_trait]
impl ElementWriter for FakeElements {
    async fn apply(&self, _table: &str, ops: &[ElementOp]) -> Result<(), ElementError> {
        self.applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(ops.to_vec());
        Ok(())
    }
}

// nfnetlink / nf_tables constants (linux/netfilter/nfnetlink.h, nf_tables.h).
const NETLINK_NETFILTER: i32 = 12;
pub(super) const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
pub(super) const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
pub(super) const NLMSG_ERROR: u16 = 2;
const NLA_F_NESTED: u16 = 0x8000;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFTA_DATA_VALUE: u16 = 1;
const NFT_SET_ELEM_INTERVAL_END: u32 = 1;
const SOL_NETLINK: i32 = 270;
const NETLINK_CAP_ACK: i32 = 10;
/// Elements per message, so that no message nears netlink's size limits.
const PER_MESSAGE: usize = 256;

/// The batch: begin, one message per run of same-kind ops on one set
/// (deletes of a set before its adds, as given), end. Returns the bytes
/// and how many acknowledgements to wait for.
fn encode_batch(table: &str, ops: &[ElementOp], first_seq: u32) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    let mut seq = first_seq;
    message(&mut out, NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq, 0, NFNL_SUBSYS_NFTABLES, &[]);
    let mut acks = 0;
    let mut start = 0;
    while start < ops.len() {
        let first = &ops[start];
        let mut end = start + 1;
        while end < ops.len()
            && end - start < PER_MESSAGE
            && ops[end].set == first.set
            && ops[end].delete == first.delete
        {
            end += 1;
        }
        let mut elements = Vec::new();
        for op in &ops[start..end] {
            let mut el = Vec::new();
            let mut key = Vec::new();
            attr(&mut key, NFTA_DATA_VALUE, &op.element.key);
            attr(&mut el, NFTA_SET_ELEM_KEY | NLA_F_NESTED, &key);
            if op.element.end {
                attr(&mut el, NFTA_SET_ELEM_FLAGS, &NFT_SET_ELEM_INTERVAL_END.to_be_bytes());
            }
            if let (Some(data), false) = (&op.element.data, op.delete) {
                let mut value = Vec::new();
                attr(&mut value, NFTA_DATA_VALUE, data);
                attr(&mut el, NFTA_SET_ELEM_DATA | NLA_F_NESTED, &value);
            }
            attr(&mut elements, NFTA_LIST_ELEM | NLA_F_NESTED, &el);
        }
        let mut body = Vec::new();
        attr(&mut body, NFTA_SET_ELEM_LIST_TABLE, &c_string(table));
        attr(&mut body, NFTA_SET_ELEM_LIST_SET, &c_string(&first.set));
        attr(&mut body, NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED, &elements);
        let (kind, flags) = if first.delete {
            (NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK)
        } else {
            (NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE)
        };
        seq += 1;
        message(&mut out, (NFNL_SUBSYS_NFTABLES << 8) | kind, flags, seq, libc::AF_INET as u8, 0, &body);
        acks += 1;
        start = end;
    }
    seq += 1;
    message(&mut out, NFNL_MSG_BATCH_END, NLM_F_REQUEST, seq, 0, NFNL_SUBSYS_NFTABLES, &[]);
    (out, acks)
}

fn c_string(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn attr(out: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(out.len() + (4 - len % 4) % 4, 0);
}

/// nlmsghdr + nfgenmsg + body.
pub(super) fn message(out: &mut Vec<u8>, kind: u16, flags: u16, seq: u32, family: u8, res_id: u16, body: &[u8]) {
    let len = 16 + 4 + body.len();
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.push(family);
    out.push(0); // NFNETLINK_V0
    out.extend_from_slice(&res_id.to_be_bytes());
    out.extend_from_slice(body);
}

enum SendError {
    Io(io::Error),
    Kernel(io::Error),
}

/// A netfilter netlink socket in the calling thread's namespace.
fn open_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            NETLINK_NETFILTER,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let fd = sock.as_raw_fd();
    let one: libc::c_int = 1;
    let size: libc::c_int = 4 << 20;
    let timeout = libc::timeval { tv_sec: 5, tv_usec: 0 };
    // SAFETY: setsockopt with pointers to live locals of the right sizes.
    unsafe {
        // Errors are acknowledged with their header only, not the batch.
        libc::setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &one as *const _ as *const libc::c_void, 4);
        // Root may raise the buffer past rmem_max; otherwise the default stays.
        libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, &size as *const _ as *const libc::c_void, 4);
        libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &size as *const _ as *const libc::c_void, 4);
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &timeout as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
    }
    Ok(sock)
}

/// Drops answers left from an earlier, failed exchange, then sends
/// `request` to the kernel on `sock`. `buf` is the receive buffer.
pub(super) fn send_to_kernel(sock: &OwnedFd, request: &[u8], buf: &mut [u8]) -> io::Result<()> {
    let fd = sock.as_raw_fd();
    // SAFETY: buf is valid for its length.
    while unsafe { libc::recv(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), libc::MSG_DONTWAIT) } > 0 {}
    // SAFETY: a zeroed sockaddr_nl addresses the kernel.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: buffer and address are valid for the given lengths.
    let sent = unsafe {
        libc::sendto(
            fd,
            request.as_ptr() as *const libc::c_void,
            request.len(),
            0,
            &addr as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Waits for the kernel's next answers on `sock`: the bytes received.
pub(super) fn receive<'b>(sock: &OwnedFd, buf: &'b mut [u8]) -> io::Result<&'b [u8]> {
    // SAFETY: buf is valid for its length.
    let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(&buf[..n as usize])
}

/// One netlink message of a received buffer: its type, sequence number
/// and the bytes after its 16-byte header.
pub(super) struct Answer<'b> {
    pub kind: u16,
    pub seq: u32,
    pub body: &'b [u8],
}

impl Answer<'_> {
    /// For `NLMSG_ERROR`: the error it carries (`Ok` for an acknowledgement).
    pub fn error(&self) -> Option<io::Result<()>> {
        if self.kind != NLMSG_ERROR || self.body.len() < 4 {
            return None;
        }
        let code = i32::from_ne_bytes(self.body[..4].try_into().expect("4 bytes"));
        Some(if code == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(-code)) })
    }
}

/// The whole messages in `buf`, in order (a truncated tail is dropped).
pub(super) fn answers(buf: &[u8]) -> impl Iterator<Item = Answer<'_>> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        if at + 16 > buf.len() {
            return None;
        }
        let len = u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4 bytes")) as usize;
        let kind = u16::from_ne_bytes(buf[at + 4..at + 6].try_into().expect("2 bytes"));
        let seq = u32::from_ne_bytes(buf[at + 8..at + 12].try_into().expect("4 bytes"));
        if len < 16 || at + len > buf.len() {
            return None;
        }
        let answer = Answer { kind, seq, body: &buf[at + 16..at + len] };
        at += (len + 3) & !3;
        Some(answer)
    })
}

/// Sends the batch (sequence numbers from `first`) and waits for `acks`
/// acknowledgements of its messages or the first error.
fn send_batch(sock: &OwnedFd, batch: &[u8], first: u32, acks: usize) -> Result<(), SendError> {
    let mut buf = vec![0u8; 1 << 16];
    send_to_kernel(sock, batch, &mut buf).map_err(SendError::Io)?;
    let mut acked = 0;
    while acked < acks {
        for answer in answers(receive(sock, &mut buf).map_err(SendError::Io)?) {
            let ours = answer.seq > first && answer.seq - first <= acks as u32 + 1;
            match answer.error() {
                Some(Err(e)) if ours => return Err(SendError::Kernel(e)),
                Some(Ok(())) if ours => acked += 1,
                _ => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_laid_out_as_nft_lays_them_out() {
        // As `nft --debug=netlink` prints them for these element texts.
        assert_eq!(
            encode_key("10.43.0.1 . tcp . 80"),
            vec![10, 43, 0, 1, 6, 0, 0, 0, 0, 80, 0, 0]
        );
        assert_eq!(encode_key("udp . 30080"), vec![17, 0, 0, 0, 0x75, 0x80, 0, 0]);
        assert_eq!(
            encode_key("10.42.0.5 . 10.42.0.5"),
            vec![10, 42, 0, 5, 10, 42, 0, 5]
        );
        let [start, end] = range_elements(0, 349_524, "10.42.0.7".parse().unwrap(), 8080);
        assert_eq!(start.key, 0u32.to_be_bytes());
        assert_eq!(start.data.unwrap(), vec![10, 42, 0, 7, 0x1f, 0x90, 0, 0]);
        assert!(end.end && end.data.is_none());
        // As nft wrote it: `element 55550500 : 1 [end]` (words printed host-order).
        assert_eq!(end.key, vec![0x00, 0x05, 0x55, 0x55]);
    }

    #[test]
    fn a_batch_is_framed_and_split_by_set_and_kind() {
        let op = |set: &str, delete: bool, key: &str| ElementOp {
            set: set.into(),
            delete,
            element: set_element(key),
        };
        let ops = vec![
            op("a", true, "10.0.0.1"),
            op("a", false, "10.0.0.2"),
            op("a", false, "10.0.0.3"),
            op("b", false, "10.0.0.4"),
        ];
        let (bytes, acks) = encode_batch("rk3s-proxy", &ops, 1);
        assert_eq!(acks, 3);
        // Walk the messages: begin, three element messages, end.
        let mut kinds = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let len = u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            kinds.push(u16::from_ne_bytes(bytes[at + 4..at + 6].try_into().unwrap()));
            at += len;
        }
        assert_eq!(at, bytes.len());
        let del = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_DELSETELEM;
        let new = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM;
        assert_eq!(kinds, vec![NFNL_MSG_BATCH_BEGIN, del, new, new, NFNL_MSG_BATCH_END]);
    }
}
