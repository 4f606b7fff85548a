//! The periodic check over a fake kernel: one generation counter that
//! every transaction (ours through either writer, or someone else's)
//! bumps, as nf_tables does per network namespace.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use super::drift::GenerationProbe;
use super::elements::{ElementError, ElementOp, ElementWriter, FakeElements};
use super::sync::Syncer;
use super::tests::{node, ready, service, slice, NODE};
use crate::hostnet::nft::{FakeFirewall, Firewall, NftError};
use crate::svccache::Snapshot;

/// Records both writers' transactions and counts commits and probes.
#[derive(Default)]
struct FakeKernel {
    generation: AtomicU32,
    probes: AtomicUsize,
    scripts: FakeFirewall,
    batches: FakeElements,
}

impl FakeKernel {
    /// Someone else commits (`nft delete table ip rk3s-proxy`, say).
    fn foreign_commit(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    fn writes(&self) -> usize {
        self.scripts.applied().len() + self.batches.applied().len()
    }
}

#[async_trait]
impl Firewall for FakeKernel {
    async fn apply(&self, script: &str) -> Result<(), NftError> {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.scripts.apply(script).await
    }
}

#[async_trait]
impl ElementWriter for FakeKernel {
    async fn apply(&self, table: &str, ops: &[ElementOp]) -> Result<(), ElementError> {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.batches.apply(table, ops).await
    }
}

#[async_trait]
impl GenerationProbe for FakeKernel {
    async fn generation(&self) -> Result<u32, ElementError> {
        self.probes.fetch_add(1, Ordering::SeqCst);
        Ok(self.generation.load(Ordering::SeqCst))
    }
}

fn syncer(kernel: &Arc<FakeKernel>) -> Syncer {
    Syncer::new(kernel.clone(), kernel.clone(), node()).with_probe(kernel.clone())
}

fn web(eps: &[(&'static str, &'static str, bool, bool, bool)], version: &str) -> Snapshot {
    Snapshot::from_objects(
        vec![service("web", "10.43.0.20", serde_json::json!({}))],
        vec![slice("web", version, eps)],
    )
}

#[tokio::test]
async fn an_idle_check_reads_the_generation_and_writes_nothing() {
    let kernel = Arc::new(FakeKernel::default());
    let mut syncer = syncer(&kernel);
    let snap = web(&[ready("10.42.0.5", NODE)], "1");
    syncer.sync(&snap).await.unwrap();
    // An endpoint change of ours (one element batch) keeps it ours.
    let changed = web(&[ready("10.42.0.6", NODE)], "2");
    syncer.sync(&changed).await.unwrap();
    assert_eq!(kernel.writes(), 2);
    let probes = kernel.probes.load(Ordering::SeqCst);
    for _ in 0..3 {
        assert_eq!(syncer.check(&changed).await.unwrap(), None);
    }
    assert_eq!(kernel.writes(), 2, "an idle check wrote");
    assert_eq!(kernel.probes.load(Ordering::SeqCst), probes + 3, "one read per check");
}

#[tokio::test]
async fn a_foreign_commit_makes_the_check_replace_the_table_from_the_snapshot() {
    let kernel = Arc::new(FakeKernel::default());
    let mut syncer = syncer(&kernel);
    syncer.sync(&web(&[ready("10.42.0.5", NODE)], "1")).await.unwrap();
    kernel.foreign_commit();
    let now = web(&[ready("10.42.0.7", NODE)], "2");
    let stats = syncer.check(&now).await.unwrap().expect("a repair");
    assert!(stats.full);
    let last = kernel.scripts.applied().last().unwrap().clone();
    assert!(last.contains("delete table ip rk3s-proxy"), "{last}");
    assert!(last.contains("{ 0-1048575 : 10.42.0.7 . 8080 }"), "{last}");
    // Repaired: the next check is clean again, and so is a change after it.
    assert_eq!(syncer.check(&now).await.unwrap(), None);
    syncer.sync(&web(&[ready("10.42.0.8", NODE)], "3")).await.unwrap();
    assert_eq!(syncer.check(&now).await.unwrap(), None);
}

/// Commits on behalf of someone else while our element batch is written.
struct RacingKernel(Arc<FakeKernel>);

#[async_trait]
impl ElementWriter for RacingKernel {
    async fn apply(&self, table: &str, ops: &[ElementOp]) -> Result<(), ElementError> {
        self.0.foreign_commit();
        ElementWriter::apply(&*self.0, table, ops).await
    }
}

#[tokio::test]
async fn a_foreign_commit_racing_our_write_is_still_noticed() {
    let kernel = Arc::new(FakeKernel::default());
    let mut syncer = Syncer::new(kernel.clone(), Arc::new(RacingKernel(kernel.clone())), node())
        .with_probe(kernel.clone());
    syncer.sync(&web(&[ready("10.42.0.5", NODE)], "1")).await.unwrap();
    let changed = web(&[ready("10.42.0.6", NODE)], "2");
    syncer.sync(&changed).await.unwrap();
    let stats = syncer.check(&changed).await.unwrap().expect("a repair");
    assert!(stats.full);
}

#[tokio::test]
async fn without_a_probe_the_check_does_nothing() {
    let kernel = Arc::new(FakeKernel::default());
    let mut syncer = Syncer::new(kernel.clone(), kernel.clone(), node());
    let snap = web(&[ready("10.42.0.5", NODE)], "1");
    syncer.sync(&snap).await.unwrap();
    kernel.foreign_commit();
    assert_eq!(syncer.check(&snap).await.unwrap(), None);
    assert_eq!(kernel.writes(), 1);
}
