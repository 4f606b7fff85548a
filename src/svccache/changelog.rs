//! Which Services changed since a reader last looked: a bounded log of
//! the Service keys each change of the [`super::Index`] touched, shared
//! by every snapshot, so a reader that remembers a [`Mark`] can ask a
//! newer snapshot for just the Services to look at again instead of
//! walking all of them.
//!
//! Shape: a persistent singly linked list, newest first, one node per
//! generation step; a snapshot holds the head (an `Arc`, so taking a
//! snapshot costs nothing more). A change names the Service of a Service
//! event, or the Service(s) an EndpointSlice belongs to (before and after,
//! when its `kubernetes.io/service-name` label moved); a relist swapped in
//! whole names "everything".
//!
//! Invariants:
//! - the answer is a superset of what changed or `None` ("look at
//!   everything"), never a subset: `None` when the reader's mark is from
//!   another index (another lineage), from the future, older than the log
//!   reaches ([`LOG_LIMIT`] steps), or when a relist lies in between;
//! - the log is bounded: the writer keeps the last [`LOG_LIMIT`] steps
//!   and cuts the link behind the oldest of them, so older steps are freed
//!   once no snapshot holds them, and a reader up to [`LOG_LIMIT`] steps
//!   behind is always answered.

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::ObjKey;

/// Generation steps a reader may fall behind before it has to look at
/// everything again.
pub const LOG_LIMIT: usize = 1024;

/// Where a reader was: the index it read (its lineage) and the generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub lineage: u64,
    pub generation: u64,
}

/// A process-unique lineage for a new index (0 is "no index").
pub(super) fn new_lineage() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// What one generation step changed.
#[derive(Debug)]
pub(super) enum Touched {
    Keys(Vec<ObjKey>),
    Everything,
}

/// One step: `generation - 1` → `generation`.
#[derive(Debug)]
pub(super) struct Step {
    generation: u64,
    touched: Touched,
    /// Cut by the writer once this step is [`LOG_LIMIT`] old (a lock, as
    /// the steps are shared by snapshots other threads read).
    prev: Mutex<Option<Arc<Step>>>,
}

impl Step {
    fn prev(&self) -> Option<Arc<Step>> {
        self.prev.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Step {
    // Unlinks iteratively: a long chain must not recurse once per node.
    fn drop(&mut self) {
        let mut next = self.prev.get_mut().unwrap_or_else(|e| e.into_inner()).take();
        while let Some(step) = next {
            match Arc::into_inner(step) {
                Some(mut s) => next = s.prev.get_mut().unwrap_or_else(|e| e.into_inner()).take(),
                None => break,
            }
        }
    }
}

/// The writer's end: appends steps and keeps the last [`LOG_LIMIT`].
#[derive(Debug, Default)]
pub(super) struct Log {
    /// Newest last.
    kept: VecDeque<Arc<Step>>,
}

impl Log {
    pub(super) fn head(&self) -> Option<Arc<Step>> {
        self.kept.back().cloned()
    }

    /// Records the step that made `generation`.
    pub(super) fn push(&mut self, generation: u64, touched: Touched) {
        let step = Arc::new(Step {
            generation,
            touched,
            prev: Mutex::new(self.kept.back().cloned()),
        });
        self.kept.push_back(step);
        if self.kept.len() > LOG_LIMIT {
            self.kept.pop_front();
            if let Some(oldest) = self.kept.front() {
                // Dropping the cut tail may free a long chain: outside the lock.
                let tail = oldest.prev.lock().unwrap_or_else(|e| e.into_inner()).take();
                drop(tail);
            }
        }
    }
}

/// The Service keys changed between `since` and `now` (a snapshot's mark
/// and log head), or `None` if the log cannot tell.
pub(super) fn changed_since(
    head: Option<&Arc<Step>>,
    now: Mark,
    since: Mark,
) -> Option<BTreeSet<ObjKey>> {
    if now.lineage == 0 || since.lineage != now.lineage || since.generation > now.generation {
        return None;
    }
    let mut keys = BTreeSet::new();
    if since.generation == now.generation {
        return Some(keys);
    }
    let mut step = head?.clone();
    loop {
        if step.generation <= since.generation {
            return Some(keys);
        }
        match &step.touched {
            Touched::Everything => return None,
            Touched::Keys(k) => keys.extend(k.iter().cloned()),
        }
        match step.prev() {
            Some(p) => step = p,
            // The chain began with this step: it reaches back to the
            // generation just before it and no further.
            None if step.generation - 1 <= since.generation => return Some(keys),
            None => return None,
        }
    }
}
