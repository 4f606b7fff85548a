//! One multiplexed tunnel session over a message transport (a websocket):
//! many independent byte streams, each with its own flow control.
//!
//! Flow control: each direction of each stream starts with [`WINDOW`]
//! bytes of credit; a sender never has more than that in flight, and the
//! receiver returns credit only after the bytes were written into the
//! stream's local end. So a slow reader stalls only its own stream, and a
//! session's buffered memory is bounded by `streams × WINDOW` per side. A
//! peer that overruns its credit gets that stream reset.
//!
//! Liveness: a `Ping` every `ping_interval`; a peer silent for `dead_after`
//! (no frame of any kind) is dead and the session closes, resetting every
//! stream, so nothing hangs on a vanished node.
//!
//! Roles: only the dialer (the API server) opens streams; the acceptor
//! (the agent) hands each opened stream to its handler with the target name.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::frame::Frame;
use super::TunnelError;

/// Per-stream, per-direction credit.
pub const WINDOW: u32 = 256 * 1024;
/// The largest Data frame.
const MAX_DATA: usize = 32 * 1024;
/// The local end's buffer (between the user's end and the pumps).
const LOCAL_BUFFER: usize = 64 * 1024;
/// How long a write already under way may finish after a reset.
const RESET_GRACE: Duration = Duration::from_secs(5);
/// How long a stream whose local end stopped reading waits for the peer's
/// Fin (dropping what arrives) before it is reset.
const DISCARD_LIMIT: Duration = Duration::from_secs(10);

/// Which side of the tunnel this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Opens streams (the API server).
    Dialer,
    /// Accepts streams (the agent).
    Acceptor,
}

#[derive(Clone, Debug)]
pub struct SessionOptions {
    pub ping_interval: Duration,
    pub dead_after: Duration,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            ping_interval: Duration::from_secs(10),
            dead_after: Duration::from_secs(30),
        }
    }
}

/// Called on the acceptor for every stream the dialer opens.
pub type AcceptHandler = Arc<dyn Fn(String, DuplexStream) + Send + Sync>;

/// A live session; cheap to clone.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

struct Inner {
    out: mpsc::UnboundedSender<Bytes>,
    streams: Mutex<HashMap<u32, Entry>>,
    next_id: AtomicU32,
    closed: CancellationToken,
}

enum Inbound {
    Data(Bytes),
    Fin,
}

struct Entry {
    inbound: mpsc::UnboundedSender<Inbound>,
    credit: Arc<Credit>,
    /// Bytes received and not yet credited back: bounded by WINDOW.
    pending: Arc<AtomicU64>,
    reset: CancellationToken,
}

/// Credit the local sender may still spend on one stream.
struct Credit {
    available: Mutex<u64>,
    notify: Notify,
}

impl Credit {
    fn new() -> Self {
        Credit {
            available: Mutex::new(WINDOW as u64),
            notify: Notify::new(),
        }
    }
    fn add(&self, n: u64) {
        *self.available.lock().expect("credit lock") += n;
        self.notify.notify_waiters();
    }
    fn try_take(&self, max: usize) -> Option<usize> {
        let mut a = self.available.lock().expect("credit lock");
        if *a == 0 {
            return None;
        }
        let n = (*a).min(max as u64) as usize;
        *a -= n as u64;
        Some(n)
    }
    /// Waits for some credit; `None` when `stop` fires first.
    async fn take(&self, max: usize, stop: &CancellationToken) -> Option<usize> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(n) = self.try_take(max) {
                return Some(n);
            }
            tokio::select! {
                _ = notified => {}
                _ = stop.cancelled() => return None,
            }
        }
    }
}

impl Session {
    /// Starts a session reading frames from `incoming`; the returned
    /// receiver yields the frames to write to the transport (it ends when
    /// the session closes).
    pub fn start(
        incoming: mpsc::Receiver<Bytes>,
        role: Role,
        handler: Option<AcceptHandler>,
        options: SessionOptions,
    ) -> (Session, mpsc::UnboundedReceiver<Bytes>) {
        let (out, out_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            out,
            streams: Mutex::new(HashMap::new()),
            next_id: AtomicU32::new(1),
            closed: CancellationToken::new(),
        });
        tokio::spawn(read_loop(inner.clone(), incoming, role, handler, options));
        (Session { inner }, out_rx)
    }

    /// Opens a stream to `target` on the peer (dialer only). The stream is
    /// reset by the peer if it cannot serve the target.
    pub fn open(&self, target: &str) -> Result<DuplexStream, TunnelError> {
        if self.inner.closed.is_cancelled() {
            return Err(TunnelError::Closed);
        }
        let id = self.inner.next_id.fetch_add(2, Ordering::Relaxed);
        Ok(new_stream(
            &self.inner,
            id,
            Some(Frame::Connect {
                id,
                target: target.to_string(),
            }),
        ))
    }

    pub fn is_closed(&self) -> bool {
        self.inner.closed.is_cancelled()
    }

    /// Resolves when the session has closed.
    pub async fn closed(&self) {
        self.inner.closed.cancelled().await
    }

    /// Closes the session, resetting every stream.
    pub fn close(&self) {
        self.inner.shutdown();
    }

    /// How many streams are open (tests and metrics).
    pub fn active_streams(&self) -> usize {
        self.inner.streams.lock().expect("streams lock").len()
    }

    /// Whether two handles are the same session.
    pub fn same(&self, other: &Session) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Inner {
    fn send(&self, f: Frame) {
        let _ = self.out.send(f.encode());
    }

    fn shutdown(&self) {
        self.closed.cancel();
        let entries: Vec<Entry> = self
            .streams
            .lock()
            .expect("streams lock")
            .drain()
            .map(|(_, e)| e)
            .collect();
        for e in entries {
            e.reset.cancel();
        }
    }

    fn remove(&self, id: u32) {
        self.streams.lock().expect("streams lock").remove(&id);
    }

    fn reset(&self, id: u32, reason: &str) {
        if let Some(e) = self.streams.lock().expect("streams lock").remove(&id) {
            e.reset.cancel();
        }
        self.send(Frame::Reset {
            id,
            reason: reason.to_string(),
        });
    }

    fn on_frame(self: &Arc<Self>, frame: Frame, role: Role, handler: Option<&AcceptHandler>) {
        match frame {
            Frame::Connect { id, target } => {
                let exists = self.streams.lock().expect("streams lock").contains_key(&id);
                match (role, handler) {
                    (Role::Acceptor, Some(h)) if !exists => {
                        let user = new_stream(self, id, None);
                        h(target, user);
                    }
                    _ => self.send(Frame::Reset {
                        id,
                        reason: "unexpected connect".into(),
                    }),
                }
            }
            Frame::Data { id, data } => {
                let verdict = {
                    let streams = self.streams.lock().expect("streams lock");
                    streams.get(&id).map(|e| {
                        let pending = e.pending.fetch_add(data.len() as u64, Ordering::AcqRel)
                            + data.len() as u64;
                        if pending > WINDOW as u64 {
                            false
                        } else {
                            let _ = e.inbound.send(Inbound::Data(data));
                            true
                        }
                    })
                };
                if verdict == Some(false) {
                    self.reset(id, "flow control window exceeded");
                }
            }
            Frame::Credit { id, bytes } => {
                if let Some(e) = self.streams.lock().expect("streams lock").get(&id) {
                    e.credit.add(bytes as u64);
                }
            }
            Frame::Fin { id } => {
                if let Some(e) = self.streams.lock().expect("streams lock").get(&id) {
                    let _ = e.inbound.send(Inbound::Fin);
                }
            }
            Frame::Reset { id, reason } => {
                tracing::debug!(id, %reason, "tunnel stream reset by the peer");
                if let Some(e) = self.streams.lock().expect("streams lock").remove(&id) {
                    e.reset.cancel();
                }
            }
            Frame::Ping { nonce } => self.send(Frame::Pong { nonce }),
            Frame::Pong { .. } => {}
        }
    }
}

/// Registers stream `id`, sends `first` (the Connect, for the dialer) so it
/// precedes any Data, starts the two pumps, and returns the user's end.
fn new_stream(inner: &Arc<Inner>, id: u32, first: Option<Frame>) -> DuplexStream {
    let (user, local) = tokio::io::duplex(LOCAL_BUFFER);
    let (rd, wr) = tokio::io::split(local);
    let (tx, rx) = mpsc::unbounded_channel();
    let credit = Arc::new(Credit::new());
    let pending = Arc::new(AtomicU64::new(0));
    let reset = inner.closed.child_token();
    inner.streams.lock().expect("streams lock").insert(
        id,
        Entry {
            inbound: tx,
            credit: credit.clone(),
            pending: pending.clone(),
            reset: reset.clone(),
        },
    );
    if let Some(f) = first {
        inner.send(f);
    }
    let halves = Arc::new(AtomicU8::new(0));
    tokio::spawn(pump_out(
        inner.clone(),
        id,
        rd,
        credit,
        reset.clone(),
        halves.clone(),
    ));
    tokio::spawn(pump_in(inner.clone(), id, wr, rx, pending, reset, halves));
    user
}

/// Both pumps call this when they end; the second one unregisters the stream.
fn half_done(inner: &Inner, id: u32, halves: &AtomicU8) {
    if halves.fetch_add(1, Ordering::AcqRel) == 1 {
        inner.remove(id);
    }
}

/// Local end → peer: reads what the user wrote, within credit.
async fn pump_out(
    inner: Arc<Inner>,
    id: u32,
    mut rd: ReadHalf<DuplexStream>,
    credit: Arc<Credit>,
    reset: CancellationToken,
    halves: Arc<AtomicU8>,
) {
    let mut buf = vec![0u8; MAX_DATA];
    while let Some(n) = credit.take(MAX_DATA, &reset).await {
        let read = tokio::select! {
            r = rd.read(&mut buf[..n]) => r,
            _ = reset.cancelled() => break,
        };
        match read {
            Ok(0) | Err(_) => {
                credit.add(n as u64);
                inner.send(Frame::Fin { id });
                break;
            }
            Ok(m) => {
                credit.add((n - m) as u64);
                inner.send(Frame::Data {
                    id,
                    data: Bytes::copy_from_slice(&buf[..m]),
                });
            }
        }
    }
    half_done(&inner, id, &halves);
}

/// Peer → local end: writes what arrived, then returns the credit.
///
/// Two rules keep a stream's last bytes from being lost, as a session
/// that answers and closes at once (an exec refused with a Status, say)
/// needs:
/// - data already received is written before a reset is obeyed: the
///   queue is read first, and a write in progress gets [`RESET_GRACE`];
/// - when the local end stops reading, the stream is not reset while the
///   other direction may still carry the local end's last words: what
///   arrives is dropped (and credited, so the peer is not stalled) until
///   the peer's Fin, for at most [`DISCARD_LIMIT`]; only then is it reset.
async fn pump_in(
    inner: Arc<Inner>,
    id: u32,
    mut wr: WriteHalf<DuplexStream>,
    mut rx: mpsc::UnboundedReceiver<Inbound>,
    pending: Arc<AtomicU64>,
    reset: CancellationToken,
    halves: Arc<AtomicU8>,
) {
    let mut unacked: u64 = 0;
    let mut discarding: Option<tokio::time::Instant> = None;
    loop {
        let limit = discarding.map(|since| since + DISCARD_LIMIT);
        let msg = tokio::select! {
            biased;
            m = rx.recv() => m,
            _ = reset.cancelled() => None,
            _ = sleep_until_opt(limit) => {
                inner.reset(id, "the receiving end closed");
                break;
            }
        };
        let Some(Inbound::Data(data)) = msg else {
            break;
        };
        let len = data.len() as u64;
        if discarding.is_none() {
            let written = tokio::select! {
                r = wr.write_all(&data) => r.is_ok(),
                _ = async {
                    reset.cancelled().await;
                    tokio::time::sleep(RESET_GRACE).await;
                } => false,
            };
            if !written {
                if reset.is_cancelled() {
                    break;
                }
                discarding = Some(tokio::time::Instant::now());
            }
        }
        pending.fetch_sub(len, Ordering::AcqRel);
        unacked += len;
        // Batch credit: a quarter window, or whenever we caught up.
        if unacked >= (WINDOW / 4) as u64 || rx.is_empty() {
            inner.send(Frame::Credit {
                id,
                bytes: unacked as u32,
            });
            unacked = 0;
        }
    }
    let _ = wr.shutdown().await;
    half_done(&inner, id, &halves);
}

/// Sleeps until `at`, or forever when `None`.
async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn read_loop(
    inner: Arc<Inner>,
    mut incoming: mpsc::Receiver<Bytes>,
    role: Role,
    handler: Option<AcceptHandler>,
    options: SessionOptions,
) {
    let mut last_seen = Instant::now();
    let mut ping = tokio::time::interval(options.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut nonce = 0u64;
    loop {
        tokio::select! {
            msg = incoming.recv() => {
                let Some(msg) = msg else { break };
                last_seen = Instant::now();
                match Frame::decode(msg) {
                    Ok(f) => inner.on_frame(f, role, handler.as_ref()),
                    Err(e) => {
                        tracing::warn!("closing the tunnel: {e}");
                        break;
                    }
                }
            }
            _ = ping.tick() => {
                if last_seen.elapsed() > options.dead_after {
                    tracing::warn!("closing the tunnel: no frame from the peer for {:?}", last_seen.elapsed());
                    break;
                }
                nonce += 1;
                inner.send(Frame::Ping { nonce });
            }
            _ = inner.closed.cancelled() => break,
        }
    }
    inner.shutdown();
}

/// What a transport message means to the tunnel.
pub enum Carried {
    Frame(Bytes),
    Close,
    Other,
}

/// Carries `session`'s frames over a websocket's two halves (either
/// websocket library: `wrap`/`unwrap` convert messages) until the peer
/// closes, the transport fails or the session closes; then closes the
/// session.
pub async fn carry<M, E, Si, St>(
    session: Session,
    mut out_rx: mpsc::UnboundedReceiver<Bytes>,
    in_tx: mpsc::Sender<Bytes>,
    mut sink: Si,
    mut stream: St,
    wrap: fn(Bytes) -> M,
    unwrap: fn(M) -> Carried,
) where
    Si: futures::Sink<M> + Unpin,
    St: futures::Stream<Item = Result<M, E>> + Unpin,
{
    use futures::{SinkExt, StreamExt};
    let writer = async {
        while let Some(frame) = out_rx.recv().await {
            if sink.send(wrap(frame)).await.is_err() {
                break;
            }
        }
    };
    let reader = async {
        while let Some(Ok(msg)) = stream.next().await {
            match unwrap(msg) {
                Carried::Frame(b) => {
                    if in_tx.send(b).await.is_err() {
                        break;
                    }
                }
                Carried::Close => break,
                Carried::Other => {}
            }
        }
    };
    tokio::select! {
        _ = writer => {}
        _ = reader => {}
        _ = session.closed() => {}
    }
    session.close();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A dialer and an acceptor wired back to back; the acceptor echoes
    /// `echo` streams and refuses anything else. `link` may drop frames
    /// from the acceptor to simulate a vanished peer.
    fn pair(options: SessionOptions, cut: CancellationToken) -> (Session, Session) {
        let (a_in_tx, a_in_rx) = mpsc::channel(64);
        let (b_in_tx, b_in_rx) = mpsc::channel(64);
        let handler: AcceptHandler = Arc::new(|target, mut stream: DuplexStream| {
            tokio::spawn(async move {
                if target == "answer-and-close" {
                    // Like an exec refused at once: a last word, then gone.
                    let _ = stream.write_all(&LAST_WORDS).await;
                    return;
                }
                if target != "echo" {
                    return;
                }
                let (mut r, mut w) = tokio::io::split(&mut stream);
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        });
        let (dialer, mut a_out) = Session::start(a_in_rx, Role::Dialer, None, options.clone());
        let (acceptor, mut b_out) = Session::start(b_in_rx, Role::Acceptor, Some(handler), options);
        tokio::spawn(async move {
            while let Some(f) = a_out.recv().await {
                if b_in_tx.send(f).await.is_err() {
                    break;
                }
            }
        });
        tokio::spawn(async move {
            while let Some(f) = b_out.recv().await {
                if cut.is_cancelled() {
                    continue;
                }
                if a_in_tx.send(f).await.is_err() {
                    break;
                }
            }
        });
        (dialer, acceptor)
    }

    /// More than one Data frame, so the race has room.
    const LAST_WORDS: [u8; 40_000] = [b'x'; 40_000];

    /// Regression (tunnel_logs' `close 1006`): the peer keeps writing to a
    /// stream whose acceptor answered and dropped it. The acceptor must not
    /// reset the stream in a way that loses its answer, which is already on
    /// its way; the dialer reads every byte, then EOF.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_answer_followed_by_a_close_always_arrives_whole() {
        let (dialer, _acceptor) = pair(SessionOptions::default(), CancellationToken::new());
        for round in 0..200 {
            let mut s = dialer.open("answer-and-close").unwrap();
            let (mut r, mut w) = tokio::io::split(&mut s);
            let (_, got) = tokio::join!(
                async move {
                    // Written while the acceptor is already gone.
                    for _ in 0..8 {
                        if w.write_all(&[1u8; 4096]).await.is_err() {
                            break;
                        }
                        tokio::task::yield_now().await;
                    }
                },
                async move {
                    let mut got = Vec::new();
                    let _ = r.read_to_end(&mut got).await;
                    got
                }
            );
            assert_eq!(got.len(), LAST_WORDS.len(), "round {round}: the answer was cut");
        }
    }

    #[tokio::test]
    async fn streams_carry_bytes_both_ways_and_close_cleanly() {
        let (dialer, acceptor) = pair(SessionOptions::default(), CancellationToken::new());
        let mut s = dialer.open("echo").unwrap();
        let payload: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
        let (mut r, mut w) = tokio::io::split(&mut s);
        let data = payload.clone();
        let (_, echoed) = tokio::join!(
            async move {
                w.write_all(&data).await.unwrap();
                w.shutdown().await.unwrap();
            },
            async move {
                let mut got = Vec::new();
                r.read_to_end(&mut got).await.unwrap();
                got
            }
        );
        assert_eq!(echoed.len(), payload.len());
        assert!(echoed == payload, "bytes changed in transit");
        drop(s);
        for _ in 0..100 {
            if dialer.active_streams() == 0 && acceptor.active_streams() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "streams not released: {} / {}",
            dialer.active_streams(),
            acceptor.active_streams()
        );
    }

    #[tokio::test]
    async fn a_stalled_stream_does_not_block_the_others() {
        let (dialer, _acceptor) = pair(SessionOptions::default(), CancellationToken::new());
        // Nobody reads the echo of this one: after its window and buffers
        // fill, only it stops.
        let mut stalled = dialer.open("echo").unwrap();
        let junk = vec![7u8; 4 * WINDOW as usize];
        let filled =
            tokio::time::timeout(Duration::from_millis(500), stalled.write_all(&junk)).await;
        assert!(
            filled.is_err(),
            "a stream with an unread peer must block once its window is used"
        );
        let mut other = dialer.open("echo").unwrap();
        other.write_all(b"still flowing").await.unwrap();
        let mut buf = [0u8; 13];
        tokio::time::timeout(Duration::from_secs(5), other.read_exact(&mut buf))
            .await
            .expect("the second stream stalled behind the first")
            .unwrap();
        assert_eq!(&buf, b"still flowing");
    }

    #[tokio::test]
    async fn an_unknown_target_is_refused_with_eof() {
        let (dialer, _acceptor) = pair(SessionOptions::default(), CancellationToken::new());
        let mut s = dialer.open("nothing-here").unwrap();
        let mut buf = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 0);
    }

    #[tokio::test]
    async fn a_silent_peer_is_detected_and_streams_end() {
        let cut = CancellationToken::new();
        let options = SessionOptions {
            ping_interval: Duration::from_millis(50),
            dead_after: Duration::from_millis(300),
        };
        let (dialer, _acceptor) = pair(options, cut.clone());
        let mut s = dialer.open("echo").unwrap();
        cut.cancel();
        tokio::time::timeout(Duration::from_secs(5), dialer.closed())
            .await
            .expect("dead peer not detected");
        assert!(dialer.open("echo").is_err());
        let mut buf = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
            .await
            .unwrap();
        assert!(r.is_ok() && buf.is_empty());
    }
}
