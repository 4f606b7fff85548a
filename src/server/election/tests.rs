//! The elector driven by a fake clock over an in-memory Lease.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::*;

/// One Lease in memory with a version counter; `down` makes every call fail.
#[derive(Default)]
struct MemLease {
    lease: Mutex<Option<LeaseRecord>>,
    next: Mutex<u64>,
    down: AtomicBool,
}

impl MemLease {
    fn bump(&self, mut r: LeaseRecord) -> LeaseRecord {
        let mut n = self.next.lock().unwrap();
        *n += 1;
        r.version = n.to_string();
        r
    }
    fn check(&self) -> Result<(), ElectionError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(ElectionError::Api("unreachable".into()));
        }
        Ok(())
    }
    fn holder(&self) -> String {
        self.lease.lock().unwrap().as_ref().map(|l| l.holder.clone()).unwrap_or_default()
    }
}

#[async_trait::async_trait]
impl LeaseBackend for MemLease {
    async fn get(&self) -> Result<Option<LeaseRecord>, ElectionError> {
        self.check()?;
        Ok(self.lease.lock().unwrap().clone())
    }
    async fn create(&self, r: &LeaseRecord) -> Result<LeaseRecord, ElectionError> {
        self.check()?;
        let mut l = self.lease.lock().unwrap();
        if l.is_some() {
            return Err(ElectionError::Exists);
        }
        let stored = self.bump(r.clone());
        *l = Some(stored.clone());
        Ok(stored)
    }
    async fn update(&self, r: &LeaseRecord) -> Result<LeaseRecord, ElectionError> {
        self.check()?;
        let mut l = self.lease.lock().unwrap();
        if l.as_ref().map(|c| &c.version) != Some(&r.version) {
            return Err(ElectionError::Conflict);
        }
        let stored = self.bump(r.clone());
        *l = Some(stored.clone());
        Ok(stored)
    }
}

/// Time that moves only when the test says.
struct FakeClock {
    start: Instant,
    offset: Mutex<Duration>,
}

impl FakeClock {
    fn new() -> FakeClock {
        FakeClock { start: Instant::now(), offset: Mutex::new(Duration::ZERO) }
    }
    fn advance(&self, d: Duration) {
        *self.offset.lock().unwrap() += d;
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Instant {
        self.start + *self.offset.lock().unwrap()
    }
    fn wall(&self) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap()
            + chrono::Duration::from_std(*self.offset.lock().unwrap()).unwrap()
    }
}

fn elector(id: &str) -> Elector {
    Elector::new(ElectionConfig::new(CONTROLLER_MANAGER_LEASE, id))
}

#[tokio::test]
async fn the_first_elector_leads_and_the_second_follows_while_the_lease_is_renewed() {
    let (lease, clock) = (MemLease::default(), FakeClock::new());
    let (mut a, mut b) = (elector("a_1"), elector("b_2"));
    assert_eq!(a.step(&lease, &clock).await, Transition::Elected);
    assert_eq!(lease.holder(), "a_1");
    for _ in 0..20 {
        clock.advance(Duration::from_secs(2));
        assert_eq!(a.step(&lease, &clock).await, Transition::Unchanged);
        assert_eq!(b.step(&lease, &clock).await, Transition::Unchanged);
        assert!(matches!(a.state(), State::Leading { .. }));
        assert_eq!(b.state(), State::Following);
    }
    let l = lease.lease.lock().unwrap().clone().unwrap();
    assert_eq!((l.holder.as_str(), l.duration, l.transitions), ("a_1", Duration::from_secs(15), 0));
}

#[tokio::test]
async fn a_dead_leaders_lease_is_taken_only_after_it_expired_on_the_followers_clock() {
    let (lease, clock) = (MemLease::default(), FakeClock::new());
    let (mut a, mut b) = (elector("a_1"), elector("b_2"));
    a.step(&lease, &clock).await;
    b.step(&lease, &clock).await;
    // `a` dies (no more steps). Before 15 s have passed, `b` must wait.
    clock.advance(Duration::from_secs(14));
    assert_eq!(b.step(&lease, &clock).await, Transition::Unchanged);
    clock.advance(Duration::from_secs(2));
    assert_eq!(b.step(&lease, &clock).await, Transition::Elected);
    let l = lease.lease.lock().unwrap().clone().unwrap();
    assert_eq!((l.holder.as_str(), l.transitions), ("b_2", 1));
}

#[tokio::test]
async fn a_leader_that_cannot_renew_stops_after_the_renew_deadline_before_the_lease_expires() {
    let (lease, clock) = (MemLease::default(), FakeClock::new());
    let mut a = elector("a_1");
    a.step(&lease, &clock).await;
    lease.down.store(true, Ordering::SeqCst);
    let mut deposed_at = None;
    for i in 1..=10 {
        clock.advance(Duration::from_secs(2));
        if a.step(&lease, &clock).await == Transition::Deposed {
            deposed_at = Some(i * 2);
            break;
        }
    }
    let at = deposed_at.expect("the leader never stopped");
    assert!((10..15).contains(&at), "stopped {at} s after its last renewal");
    assert_eq!(a.state(), State::Following);
}

#[tokio::test]
async fn a_released_lease_is_taken_at_the_next_attempt() {
    let (lease, clock) = (MemLease::default(), FakeClock::new());
    let (mut a, mut b) = (elector("a_1"), elector("b_2"));
    a.step(&lease, &clock).await;
    b.step(&lease, &clock).await;
    a.release(&lease, &clock).await.unwrap();
    assert_eq!(lease.holder(), "");
    assert_eq!(b.step(&lease, &clock).await, Transition::Elected);
    assert_eq!(lease.holder(), "b_2");
}

#[tokio::test]
async fn a_leader_whose_lease_was_taken_over_is_deposed_at_once() {
    let (lease, clock) = (MemLease::default(), FakeClock::new());
    let mut a = elector("a_1");
    a.step(&lease, &clock).await;
    {
        let mut l = lease.lease.lock().unwrap();
        let mut r = l.clone().unwrap();
        r.holder = "intruder_3".into();
        r.version = "99".into();
        *l = Some(r);
    }
    clock.advance(Duration::from_secs(2));
    assert_eq!(a.step(&lease, &clock).await, Transition::Deposed);
}

#[tokio::test]
async fn two_electors_racing_for_a_free_lease_elect_exactly_one() {
    let (lease, clock) = (MemLease::default(), FakeClock::new());
    let mut electors: Vec<Elector> = (0..4).map(|i| elector(&format!("n{i}_x"))).collect();
    let mut leaders = 0;
    for e in electors.iter_mut() {
        if e.step(&lease, &clock).await == Transition::Elected {
            leaders += 1;
        }
    }
    assert_eq!(leaders, 1);
}

#[test]
fn identity_is_hostname_underscore_uuid() {
    let id = identity("pi1");
    let (host, uuid) = id.split_once('_').unwrap();
    assert_eq!(host, "pi1");
    assert!(uuid::Uuid::parse_str(uuid).is_ok(), "{id}");
}
