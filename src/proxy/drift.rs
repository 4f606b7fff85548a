//! Noticing that someone else changed nf_tables under us, cheaply, so the
//! periodic resync writes nothing on an idle node.
//!
//! kube-proxy re-runs its sync at least every `syncPeriod` (30 s by
//! default; in its nftables mode that is the sync runner's longest
//! interval) and re-writes its rules each time; its iptables mode instead
//! probes a canary chain every `syncPeriod` and re-syncs fully only when
//! it is gone. We do the second kind, with a probe that costs one netlink
//! round trip whatever the table holds: nf_tables keeps one *generation*
//! number per network namespace, bumped by every committed transaction
//! (whoever sends it, whatever table it touches; an aborted one does not
//! bump it). [`super::Syncer`] reads it before and after each of its own
//! writes: when it moved by exactly the number of our transactions, and
//! it was where we left it, no one else committed in between, and the
//! generation it ends at is *ours*. The resync timer reads it again: the
//! same number means nothing in the namespace changed (no `nft`, no
//! write, no listing); another number means someone else committed
//! (maybe to our table: `nft delete table ip rk3s-proxy`, `nft flush
//! ruleset`, an edit by hand; maybe to another table), and the whole
//! table is replaced from the current snapshot, in one transaction.
//!
//! Partial: a commit to *another* table in the namespace (the pod
//! network's `ip rk3s`, an administrator's own) also triggers a replace,
//! which costs one `nft` run and resets `sessionAffinity` state; such
//! commits are rare on a node (the pod network writes at start). A
//! change inside our table that nf_tables does not commit as a
//! transaction (affinity sets filled by packets, `dynset`) does not bump
//! the generation, as it should not.

use std::io;
use std::os::fd::OwnedFd;

use async_trait::async_trait;

use super::elements::{answers, message, receive, send_to_kernel, ElementError, NetlinkElements, NFNL_SUBSYS_NFTABLES, NLM_F_REQUEST};

/// How often the kernel's copy is checked (kube-proxy's `syncPeriod`
/// default).
pub const RESYNC_PERIOD: std::time::Duration = std::time::Duration::from_secs(30);

/// Reads nf_tables' ruleset generation in the proxy's namespace.
#[async_trait]
pub trait GenerationProbe: Send + Sync {
    async fn generation(&self) -> Result<u32, ElementError>;
}

#[async_trait]
impl GenerationProbe for NetlinkElements {
    async fn generation(&self) -> Result<u32, ElementError> {
        let fd = self.socket().await?;
        let seq = self.next_seq(1);
        let result = tokio::task::spawn_blocking(move || get_generation(&fd, seq))
            .await
            .map_err(|e| ElementError::Io(io::Error::other(e.to_string())))?;
        if result.is_err() {
            self.reset_socket();
        }
        Ok(result?)
    }
}

const NFT_MSG_NEWGEN: u16 = 15;
const NFT_MSG_GETGEN: u16 = 16;
const NFTA_GEN_ID: u16 = 1;

/// Sends `NFT_MSG_GETGEN` (sequence `seq`) on a netfilter netlink socket
/// and returns `NFTA_GEN_ID` from the kernel's `NFT_MSG_NEWGEN` answer.
pub(super) fn get_generation(sock: &OwnedFd, seq: u32) -> io::Result<u32> {
    let mut buf = vec![0u8; 1 << 16];
    let mut req = Vec::new();
    message(&mut req, (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN, NLM_F_REQUEST, seq, libc::AF_UNSPEC as u8, 0, &[]);
    send_to_kernel(sock, &req, &mut buf)?;
    loop {
        if let Some(answer) = parse_generation(receive(sock, &mut buf)?, seq) {
            return answer;
        }
    }
}

/// The generation (or the kernel's error) in the answers to `seq` in
/// `buf`; `None` when `buf` holds no answer to it.
fn parse_generation(buf: &[u8], seq: u32) -> Option<io::Result<u32>> {
    for answer in answers(buf).filter(|a| a.seq == seq) {
        if let Some(Err(e)) = answer.error() {
            return Some(Err(e));
        }
        if answer.kind != (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN {
            continue;
        }
        // nfgenmsg (4), then attributes.
        let body = answer.body;
        let mut a = 4usize;
        while a + 4 <= body.len() {
            let alen = u16::from_ne_bytes(body[a..a + 2].try_into().expect("2 bytes")) as usize;
            let akind = u16::from_ne_bytes(body[a + 2..a + 4].try_into().expect("2 bytes")) & 0x3fff;
            if alen < 4 || a + alen > body.len() {
                break;
            }
            if akind == NFTA_GEN_ID && alen >= 8 {
                return Some(Ok(u32::from_be_bytes(body[a + 4..a + 8].try_into().expect("4 bytes"))));
            }
            a += (alen + 3) & !3;
        }
        return Some(Err(io::Error::other("the kernel's generation answer has no id")));
    }
    None
}

/// Whose the kernel's generation is, as far as the syncer can tell.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ownership {
    /// The generation after our last write, when every commit since the
    /// table was last known good was ours (`None`: cannot tell).
    ours: Option<u32>,
}

impl Ownership {
    /// After a full replace: ours if it was the only commit in between.
    pub fn after_replace(&mut self, before: Option<u32>, after: Option<u32>) {
        self.ours = match (before, after) {
            (Some(b), Some(a)) if a == b.wrapping_add(1) => Some(a),
            _ => None,
        };
    }

    /// After `commits` incremental transactions of ours: still ours only
    /// if nobody committed before or between them.
    pub fn after_change(&mut self, before: Option<u32>, after: Option<u32>, commits: u32) {
        self.ours = match (self.ours, before, after) {
            (Some(o), Some(b), Some(a)) if o == b && a == b.wrapping_add(commits) => Some(a),
            _ => None,
        };
    }

    /// Forgets: the next check replaces the table.
    pub fn forget(&mut self) {
        self.ours = None;
    }

    /// Whether the kernel's generation `now` is the one we left.
    pub fn unchanged(&self, now: u32) -> bool {
        self.ours == Some(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn newgen(seq: u32, id: u32) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&8u16.to_ne_bytes());
        body.extend_from_slice(&NFTA_GEN_ID.to_ne_bytes());
        body.extend_from_slice(&id.to_be_bytes());
        let mut out = Vec::new();
        message(&mut out, (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN, 0, seq, 0, 0, &body);
        out
    }

    #[test]
    fn the_generation_is_read_from_the_answer_to_our_request_only() {
        let mut buf = newgen(6, 41);
        buf.extend(newgen(7, 42));
        assert_eq!(parse_generation(&buf, 7).unwrap().unwrap(), 42);
        assert!(parse_generation(&newgen(6, 41), 7).is_none());
    }

    #[test]
    fn a_generation_is_ours_only_when_every_commit_since_was_ours() {
        let mut o = Ownership::default();
        assert!(!o.unchanged(0));
        o.after_replace(Some(10), Some(11));
        assert!(o.unchanged(11));
        // Our element batch, alone: still ours.
        o.after_change(Some(11), Some(12), 1);
        assert!(o.unchanged(12) && !o.unchanged(13));
        // Someone committed between ours (two of ours, three commits).
        o.after_change(Some(12), Some(15), 2);
        assert!(!o.unchanged(15));
        // Someone committed before ours: no longer ours either.
        o.after_replace(Some(20), Some(21));
        o.after_change(Some(22), Some(23), 1);
        assert!(!o.unchanged(23));
        // A replace with another commit racing it cannot be told apart.
        o.after_replace(Some(30), Some(32));
        assert!(!o.unchanged(32));
        // Wrapping around.
        o.after_replace(Some(u32::MAX), Some(0));
        assert!(o.unchanged(0));
    }
}
