//! The etcd calls behind each [`super::Store`] method (run on the store's runtime).

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{
    Compare, CompareOp, DeleteOptions, GetOptions, KeyValue, PutOptions, Txn, TxnOp,
    TxnOpResponse, TxnResponse,
};

use super::{Shared, COMPACT_KEY};
use crate::store::{ListOptions, ListPage, Record, Result, Revision, StoreError};

/// How long one etcd lease is handed to new TTL'd keys before a fresh one is granted.
const LEASE_REUSE: Duration = Duration::from_secs(60);

pub(crate) fn backend(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("failed to {what} in etcd: {e}"))
}

/// Whether a failed call never reached a healthy member (safe to retry a read).
fn transient(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) => true,
        etcd_client::Error::GRpcStatus(s) => matches!(
            s.code(),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown
        ),
        _ => false,
    }
}

/// Runs a read, retrying a few times while the balancer moves off a dead member.
pub(crate) async fn read<T, F, Fut>(mut call: F) -> std::result::Result<T, etcd_client::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
{
    let mut delay = Duration::from_millis(100);
    let mut attempt = 0;
    loop {
        match call().await {
            Err(e) if attempt < 5 && transient(&e) => {
                attempt += 1;
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            other => return other,
        }
    }
}

pub(crate) fn record(kv: &KeyValue) -> Result<Record> {
    Ok(Record {
        key: String::from_utf8(kv.key().to_vec())
            .map_err(|e| backend("read a key", format!("not UTF-8: {e}")))?,
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
    })
}

/// The first key of the range a prefix (and a `continue` key) covers.
pub(crate) fn range_start(prefix: &str, start_after: Option<&str>) -> Vec<u8> {
    // Every store key starts with '/': the empty prefix is the '/' range.
    let lower = if prefix.is_empty() { "/" } else { prefix };
    match start_after {
        Some(s) if s >= lower => {
            let mut k = s.as_bytes().to_vec();
            k.push(0);
            k
        }
        _ => lower.as_bytes().to_vec(),
    }
}

/// The end (exclusive) of the range a prefix covers, byte-wise as etcd compares.
pub(crate) fn range_end(prefix: &str) -> Vec<u8> {
    let mut end = if prefix.is_empty() {
        b"/".to_vec()
    } else {
        prefix.as_bytes().to_vec()
    };
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // etcd: "every key from the start"
}

fn header_revision(h: Option<&etcd_client::ResponseHeader>) -> Revision {
    h.map(|h| h.revision()).unwrap_or(0)
}

/// The current revision and the compacted one (from [`COMPACT_KEY`]), in one read.
pub(crate) async fn marks(s: &Shared) -> Result<(Revision, Revision)> {
    let resp = read(|| {
        let mut kv = s.kv();
        async move { kv.get(COMPACT_KEY, None).await }
    })
    .await
    .map_err(|e| backend("read the revision", e))?;
    let current = header_revision(resp.header());
    s.saw(current);
    if let Some(c) = resp
        .kvs()
        .first()
        .and_then(|kv| kv.value_str().ok()?.parse::<Revision>().ok())
    {
        s.saw_compacted(c);
    }
    Ok((current, s.compacted.load(Ordering::Relaxed)))
}

/// Maps a read error at `requested` to the store's Compacted / FutureRevision.
async fn read_error(s: &Shared, e: etcd_client::Error, requested: Revision) -> StoreError {
    let msg = e.to_string();
    if msg.contains("required revision has been compacted") {
        let known = marks(s).await.map(|m| m.1).unwrap_or(0);
        s.saw_compacted(requested + 1);
        StoreError::Compacted {
            requested,
            compacted: known.max(requested + 1),
        }
    } else if msg.contains("required revision is a future revision") {
        let current = marks(s).await.map(|m| m.0).unwrap_or(0);
        StoreError::FutureRevision { requested, current }
    } else {
        backend("read", e)
    }
}

pub(crate) async fn get(s: &Shared, key: &str) -> Result<Option<Record>> {
    let resp = read(|| {
        let mut kv = s.kv();
        async move { kv.get(key, None).await }
    })
    .await
    .map_err(|e| backend(&format!("read {key}"), e))?;
    s.saw(header_revision(resp.header()));
    resp.kvs().first().map(record).transpose()
}

pub(crate) async fn list(s: &Shared, opts: &ListOptions) -> Result<ListPage> {
    let mut get = GetOptions::new().with_range(range_end(&opts.prefix));
    if let Some(limit) = opts.limit {
        get = get.with_limit(limit as i64);
    }
    if let Some(r) = opts.revision.filter(|r| *r > 0) {
        get = get.with_revision(r);
    }
    let start = range_start(&opts.prefix, opts.start_after.as_deref());
    let resp = read(|| {
        let (mut kv, get, start) = (s.kv(), get.clone(), start.clone());
        async move { kv.get(start, Some(get)).await }
    })
    .await;
    let resp = match resp {
        Ok(r) => r,
        Err(e) => return Err(read_error(s, e, opts.revision.unwrap_or(0)).await),
    };
    let latest = header_revision(resp.header());
    s.saw(latest);
    let records = resp.kvs().iter().map(record).collect::<Result<Vec<_>>>()?;
    let remaining = (resp.count() as usize).saturating_sub(records.len());
    Ok(ListPage {
        records,
        revision: opts.revision.filter(|r| *r > 0).unwrap_or(latest),
        remaining,
    })
}

/// The etcd lease for a key under a TTL prefix (Events), shared for a minute.
async fn lease_for(s: &Shared, key: &str) -> Result<Option<i64>> {
    if !s.opts.ttl_prefixes.iter().any(|p| key.starts_with(p.as_str())) {
        return Ok(None);
    }
    if let Some((id, at)) = *s.lease.lock().expect("lease mutex") {
        if at.elapsed() < LEASE_REUSE {
            return Ok(Some(id));
        }
    }
    // The lease outlives its reuse window so every key gets at least event_ttl.
    let ttl = (s.opts.event_ttl + LEASE_REUSE).as_secs() as i64;
    let id = s
        .client
        .lease_client()
        .grant(ttl, None)
        .await
        .map_err(|e| backend("grant a lease", e))?
        .id();
    *s.lease.lock().expect("lease mutex") = Some((id, Instant::now()));
    Ok(Some(id))
}

async fn put_op(s: &Shared, key: &str, value: Vec<u8>) -> Result<TxnOp> {
    let mut put = PutOptions::new().with_prev_key();
    if let Some(lease) = lease_for(s, key).await? {
        put = put.with_lease(lease);
    }
    Ok(TxnOp::put(key, value, Some(put)))
}

/// Whether a call failed before any member received it (no connection could
/// be made): retrying a write is then safe, its outcome is not unknown.
fn never_sent(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            s.code() == tonic::Code::Unavailable && s.message().contains("connect error")
        }
        _ => false,
    }
}

async fn txn(s: &Shared, what: &str, key: &str, txn: Txn) -> Result<(TxnResponse, Revision)> {
    // A dead member stays in the client's balancer for a while: a write sent
    // to it fails to connect, and goes to another member on the next try.
    let mut delay = Duration::from_millis(50);
    let mut attempt = 0;
    let resp = loop {
        match s.kv().txn(txn.clone()).await {
            Err(e) if attempt < 6 && never_sent(&e) => {
                attempt += 1;
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            other => break other,
        }
    }
    .map_err(|e| backend(&format!("{what} {key}"), e))?;
    let rev = header_revision(resp.header());
    s.saw(rev);
    Ok((resp, rev))
}

/// The key's record from the else branch's `get`, if it exists.
fn current_of(resp: &TxnResponse) -> Result<Option<Record>> {
    for op in resp.op_responses() {
        if let TxnOpResponse::Get(g) = op {
            return g.kvs().first().map(record).transpose();
        }
    }
    Ok(None)
}

/// The record a successful put or delete replaced.
fn prev_of(resp: &TxnResponse) -> Result<Option<Record>> {
    for op in resp.op_responses() {
        match op {
            TxnOpResponse::Put(p) => return p.prev_key().map(record).transpose(),
            TxnOpResponse::Delete(d) => return d.prev_kvs().first().map(record).transpose(),
            _ => {}
        }
    }
    Ok(None)
}

pub(crate) async fn create(s: &Shared, key: String, value: Vec<u8>) -> Result<Record> {
    let t = Txn::new()
        .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
        .and_then([put_op(s, &key, value.clone()).await?]);
    let (resp, rev) = txn(s, "create", &key, t).await?;
    if !resp.succeeded() {
        return Err(StoreError::AlreadyExists { key });
    }
    Ok(Record {
        key,
        value,
        create_revision: rev,
        mod_revision: rev,
    })
}

/// Why a guarded write did not happen: the key is gone or moved on.
fn refused(key: String, expected: Revision, resp: &TxnResponse) -> Result<StoreError> {
    Ok(match current_of(resp)? {
        None => StoreError::NotFound { key },
        Some(cur) => StoreError::Conflict {
            key,
            expected,
            actual: cur.mod_revision,
        },
    })
}

pub(crate) async fn update(
    s: &Shared,
    key: String,
    value: Vec<u8>,
    expected: Revision,
) -> Result<Record> {
    let t = Txn::new()
        .when([
            Compare::version(key.as_str(), CompareOp::Greater, 0),
            Compare::mod_revision(key.as_str(), CompareOp::Equal, expected),
        ])
        .and_then([put_op(s, &key, value.clone()).await?])
        .or_else([TxnOp::get(key.as_str(), None)]);
    let (resp, rev) = txn(s, "update", &key, t).await?;
    if !resp.succeeded() {
        return Err(refused(key, expected, &resp)?);
    }
    let create_revision = prev_of(&resp)?.map(|p| p.create_revision).unwrap_or(rev);
    Ok(Record {
        key,
        value,
        create_revision,
        mod_revision: rev,
    })
}

pub(crate) async fn delete(s: &Shared, key: String, expected: Option<Revision>) -> Result<Record> {
    let mut when = vec![Compare::version(key.as_str(), CompareOp::Greater, 0)];
    if let Some(e) = expected {
        when.push(Compare::mod_revision(key.as_str(), CompareOp::Equal, e));
    }
    let t = Txn::new()
        .when(when)
        .and_then([TxnOp::delete(
            key.as_str(),
            Some(DeleteOptions::new().with_prev_key()),
        )])
        .or_else([TxnOp::get(key.as_str(), None)]);
    let (resp, rev) = txn(s, "delete", &key, t).await?;
    if !resp.succeeded() {
        return Err(refused(key, expected.unwrap_or(0), &resp)?);
    }
    let mut gone = prev_of(&resp)?.ok_or_else(|| backend("delete", "etcd returned no previous value"))?;
    gone.mod_revision = rev;
    Ok(gone)
}

/// Records `revision` in [`COMPACT_KEY`] (never lowering it), then compacts etcd.
pub(crate) async fn compact(s: &Shared, revision: Revision) -> Result<()> {
    let (current, compacted) = marks(s).await?;
    if revision > current {
        return Err(StoreError::FutureRevision {
            requested: revision,
            current,
        });
    }
    if revision <= compacted {
        return Ok(());
    }
    loop {
        let resp = s
            .kv()
            .get(COMPACT_KEY, None)
            .await
            .map_err(|e| backend("read the compaction mark", e))?;
        let (version, recorded) = match resp.kvs().first() {
            Some(kv) => (
                kv.version(),
                kv.value_str().ok().and_then(|v| v.parse::<Revision>().ok()).unwrap_or(0),
            ),
            None => (0, 0),
        };
        if recorded >= revision {
            break;
        }
        if cas_mark(s, version, revision).await? {
            break;
        }
    }
    etcd_compact(s, revision).await
}

/// Writes the compaction mark if nobody did since it was at `version`.
async fn cas_mark(s: &Shared, version: i64, revision: Revision) -> Result<bool> {
    let t = Txn::new()
        .when([Compare::version(COMPACT_KEY, CompareOp::Equal, version)])
        .and_then([TxnOp::put(COMPACT_KEY, revision.to_string(), None)]);
    Ok(txn(s, "write", COMPACT_KEY, t).await?.0.succeeded())
}

async fn etcd_compact(s: &Shared, revision: Revision) -> Result<()> {
    match s.kv().compact(revision, None).await {
        Ok(_) => {}
        Err(e) if e.to_string().contains("required revision has been compacted") => {}
        Err(e) => return Err(backend(&format!("compact to {revision}"), e)),
    }
    s.saw_compacted(revision);
    Ok(())
}

/// kube-apiserver's compactor: each tick, compact to the revision seen at the
/// previous tick, unless another server compacted since (CAS on the mark's version).
pub(crate) async fn compactor(s: Arc<Shared>, every: Duration) {
    let mut previous: Option<(i64, Revision)> = None;
    loop {
        tokio::time::sleep(every).await;
        let resp = match s.kv().get(COMPACT_KEY, None).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "failed to read etcd's compaction mark; trying next time");
                continue;
            }
        };
        let current = header_revision(resp.header());
        let mut version = resp.kvs().first().map(|kv| kv.version()).unwrap_or(0);
        if let Some((seen, target)) = previous {
            if seen == version && target > s.compacted.load(Ordering::Relaxed) {
                match cas_mark(s.as_ref(), version, target).await {
                    Ok(true) => {
                        version += 1;
                        if let Err(e) = etcd_compact(&s, target).await {
                            tracing::warn!(error = %e, "failed to compact etcd");
                        } else {
                            tracing::debug!(revision = target, "compacted etcd");
                        }
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "failed to record a compaction"),
                }
            }
        }
        previous = Some((version, current));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_refused_connection_makes_a_write_safe_to_retry() {
        let refused = etcd_client::Error::GRpcStatus(tonic::Status::unavailable("tcp connect error"));
        let cut = etcd_client::Error::GRpcStatus(tonic::Status::unavailable("connection reset"));
        let late = etcd_client::Error::GRpcStatus(tonic::Status::deadline_exceeded("timeout"));
        assert!(never_sent(&refused));
        assert!(!never_sent(&cut) && !never_sent(&late));
    }

    #[test]
    fn ranges_cover_the_prefix_and_continue_after_a_key() {
        assert_eq!(range_end("/a/"), b"/a0");
        assert_eq!(range_start("", None), b"/");
        assert_eq!(range_end(""), b"0");
        assert_eq!(range_start("/p/", Some("/p/3")), b"/p/3\0");
        // A continue key before the prefix is ignored.
        assert_eq!(range_start("/p/", Some("/a")), b"/p/");
    }
}
