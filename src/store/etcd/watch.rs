//! One store watch = one etcd watch, forwarded into the caller's channel.
//!
//! The task resumes a broken stream from the last revision it delivered (an
//! etcd member died, the connection dropped), so the caller sees every event
//! once and in order; it ends on compaction (after sending
//! `StoreError::Compacted`), on etcd cancelling the watch, or when the
//! receiver is dropped (which closes the gRPC stream and so the etcd watcher).

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Event, EventType, WatchOptions};
use tokio::sync::mpsc::Sender;

use super::ops::{range_end, range_start, record};
use super::{Shared, MAX_RESPONSE};
use crate::store::{EventKind, Record, Result, Revision, StoreError, WatchEvent};

const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub(crate) async fn forward(
    s: Arc<Shared>,
    prefix: String,
    after: Revision,
    tx: Sender<Result<WatchEvent>>,
) {
    let mut last = after;
    let mut backoff = Duration::from_millis(100);
    loop {
        let opts = WatchOptions::new()
            .with_range(range_end(&prefix))
            .with_start_revision(last + 1)
            .with_prev_key();
        let mut client = s.client.watch_client().max_decoding_message_size(MAX_RESPONSE);
        let opened = tokio::select! {
            _ = tx.closed() => return,
            r = client.watch(range_start(&prefix, None), Some(opts)) => r,
        };
        match opened {
            Ok(mut stream) => loop {
                let msg = tokio::select! {
                    _ = tx.closed() => return,
                    m = stream.message() => m,
                };
                let resp = match msg {
                    Ok(Some(resp)) => resp,
                    Ok(None) | Err(_) => {
                        tracing::debug!(prefix, last, "etcd watch stream ended; resuming");
                        break;
                    }
                };
                backoff = Duration::from_millis(100);
                if resp.compact_revision() > 0 {
                    s.saw_compacted(resp.compact_revision());
                    let _ = tx
                        .send(Err(StoreError::Compacted {
                            requested: last,
                            compacted: resp.compact_revision(),
                        }))
                        .await;
                    return;
                }
                if resp.canceled() {
                    let reason = resp.cancel_reason().to_owned();
                    let _ = tx
                        .send(Err(StoreError::Backend(format!(
                            "failed to watch {prefix}: etcd cancelled the watch: {reason}"
                        ))))
                        .await;
                    return;
                }
                for ev in resp.events() {
                    let ev = match convert(ev) {
                        Ok(ev) => ev,
                        Err(e) => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                    };
                    last = ev.revision;
                    if tx.send(Ok(ev)).await.is_err() {
                        return;
                    }
                }
            },
            Err(e) => tracing::debug!(prefix, error = %e, "failed to open an etcd watch; retrying"),
        }
        tokio::select! {
            _ = tx.closed() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn convert(ev: &Event) -> Result<WatchEvent> {
    let kv = ev
        .kv()
        .ok_or_else(|| StoreError::Backend("failed to watch: etcd sent an event without a key".into()))?;
    let prev = ev.prev_kv().map(record).transpose()?;
    match ev.event_type() {
        EventType::Put => {
            let rec = record(kv)?;
            let kind = if kv.version() == 1 {
                EventKind::Created
            } else {
                EventKind::Updated
            };
            Ok(WatchEvent {
                kind,
                revision: rec.mod_revision,
                prev: if kind == EventKind::Created { None } else { prev },
                record: rec,
            })
        }
        EventType::Delete => {
            let key = record(kv)?.key;
            // etcd's delete event carries only the key; the last value is prev_kv.
            let mut rec = prev.clone().unwrap_or(Record {
                key,
                value: Vec::new(),
                create_revision: 0,
                mod_revision: 0,
            });
            rec.mod_revision = kv.mod_revision();
            Ok(WatchEvent {
                kind: EventKind::Deleted,
                revision: kv.mod_revision(),
                record: rec,
                prev,
            })
        }
    }
}
