//! One server per etcd, until servers elect a leader among themselves.
//!
//! Several servers on one etcd need leader election for the controllers and
//! the scheduler, CAS-safe allocators and a shared PKI; until those exist a
//! second server would run a second set of controllers and mint its own CA.
//! So a server claims [`CLAIM_KEY`] with an etcd lease it keeps alive; a second
//! server finds the key and refuses to start, naming the holder. The claim
//! goes with its holder: once it stops renewing (a clean stop or `kill -9`),
//! etcd drops the key within [`CLAIM_TTL`].
//!
//! **Invariant:** while a server runs on etcd, [`CLAIM_KEY`] names it and no
//! other server serves from that etcd.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};

use super::ops::backend;
use super::Shared;
use crate::store::{Result, StoreError};

/// Outside the `/` range, like `compact_rev_key`: no list or watch sees it.
pub const CLAIM_KEY: &str = "rk3s_server_claim";
/// How long a dead server's claim outlives it.
pub const CLAIM_TTL: Duration = Duration::from_secs(15);

/// Claims the etcd for `holder`; keeps the claim alive until the store drops.
pub(crate) async fn claim(s: Arc<Shared>, holder: String) -> Result<()> {
    let mut lease = s.client.lease_client();
    let id = lease
        .grant(CLAIM_TTL.as_secs() as i64, None)
        .await
        .map_err(|e| backend("grant the server claim's lease", e))?
        .id();
    let t = Txn::new()
        .when([Compare::create_revision(CLAIM_KEY, CompareOp::Equal, 0)])
        .and_then([TxnOp::put(
            CLAIM_KEY,
            holder.clone(),
            Some(PutOptions::new().with_lease(id)),
        )])
        .or_else([TxnOp::get(CLAIM_KEY, None)]);
    let resp = s
        .kv()
        .txn(t)
        .await
        .map_err(|e| backend("claim the datastore", e))?;
    if !resp.succeeded() {
        let _ = lease.revoke(id).await;
        let other = resp
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                TxnOpResponse::Get(g) => g.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
                _ => None,
            })
            .unwrap_or_default();
        return Err(StoreError::Backend(format!(
            "failed to claim the etcd datastore: server {other:?} uses it (several servers on one datastore are not supported yet; if that server is gone, its claim expires within {} s)",
            CLAIM_TTL.as_secs()
        )));
    }
    let (mut keeper, mut stream) = lease
        .keep_alive(id)
        .await
        .map_err(|e| backend("keep the server claim alive", e))?;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CLAIM_TTL / 3);
        loop {
            tick.tick().await;
            if let Err(e) = keeper.keep_alive().await {
                tracing::warn!(error = %e, "failed to renew the datastore claim");
                continue;
            }
            match stream.message().await {
                Ok(Some(r)) if r.ttl() > 0 => {}
                other => tracing::error!(?other, "the datastore claim was lost"),
            }
        }
    });
    Ok(())
}
