//! When a `coordination.k8s.io` Lease (or a heartbeat like it) counts as
//! expired. Kubernetes uses two rules, on purpose, and so do we:
//!
//! - **The holder's wall clock** ([`renewal_live`]): live while
//!   `renewTime + leaseDurationSeconds` is after now. kube-apiserver's
//!   apiserver-lease GC judges identity Leases this way: any server, even
//!   one just started with no history, can tell a dead peer's Lease at
//!   once; a skewed clock only moves the expiry by the skew. Used by the
//!   API-server endpoint Leases (`apiserver::ipalloc::apiserver_leases`).
//! - **Our monotonic clock** ([`SeenChanging`]): live until a window has
//!   passed since *we* last saw the value change, whatever time it claims.
//!   client-go's leader election does this ("never trust another server's
//!   wall clock"), as does the node lifecycle controller with a node's
//!   Lease `renewTime`: a wrong clock on the holder can then never make
//!   two leaders or a node wrongly Unknown. The price: after a restart the
//!   observer waits a full window before it calls anything expired. Used by
//!   `server::election` (window: the Lease's `leaseDurationSeconds`) and
//!   `controllers::cluster::nodes` (window: `node_monitor_grace`).
//!
//! Which rule a caller uses is part of its contract; don't swap them.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

/// Whether a Lease renewed at `renew_time` for `duration_seconds` is still
/// live at `now`, by the holder's wall clock (expired exactly at the end).
pub fn renewal_live(renew_time: DateTime<Utc>, duration_seconds: i64, now: DateTime<Utc>) -> bool {
    renew_time + chrono::Duration::seconds(duration_seconds) > now
}

/// A value watched on this process's monotonic clock, with the instant it
/// was last seen to change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenChanging<T> {
    value: T,
    since: Instant,
}

impl<T: PartialEq> SeenChanging<T> {
    /// First sight of `value`, at `now`.
    pub fn new(value: T, now: Instant) -> Self {
        SeenChanging { value, since: now }
    }

    /// `value` seen again at `now`: the clock restarts only if it changed.
    pub fn observe(&mut self, value: T, now: Instant) {
        if self.value != value {
            *self = SeenChanging::new(value, now);
        }
    }

    /// Whether less than `window` has passed since the value last changed
    /// (a window too long to add to an instant never ends).
    pub fn live(&self, window: Duration, now: Instant) -> bool {
        self.since.checked_add(window).is_none_or(|end| end > now)
    }

    pub fn value(&self) -> &T {
        &self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_clock_lease_expires_at_renew_time_plus_duration() {
        let renewed = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap().with_timezone(&Utc);
        let at = |s: i64| renewed + chrono::Duration::seconds(s);
        assert!(renewal_live(renewed, 15, at(0)));
        assert!(renewal_live(renewed, 15, at(14)));
        assert!(!renewal_live(renewed, 15, at(15)));
        assert!(!renewal_live(renewed, 15, at(16)));
        // A renewTime in our future (a clock ahead) keeps it live longer.
        assert!(renewal_live(at(60), 15, at(70)));
    }

    #[test]
    fn unchanged_value_expires_a_window_after_it_last_changed() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let window = Duration::from_secs(10);
        let mut seen = SeenChanging::new("renew-1", s(0));
        assert!(seen.live(window, s(9)));
        // The same value again does not restart the clock.
        seen.observe("renew-1", s(9));
        assert!(!seen.live(window, s(10)));
        // A change does, whatever the value says.
        seen.observe("renew-0", s(12));
        assert_eq!(*seen.value(), "renew-0");
        assert!(seen.live(window, s(21)));
        assert!(!seen.live(window, s(22)));
    }

    #[test]
    fn an_instant_before_the_change_counts_as_live() {
        let t0 = Instant::now() + Duration::from_secs(5);
        let seen = SeenChanging::new(1, t0);
        assert!(seen.live(Duration::from_secs(1), t0 - Duration::from_secs(5)));
    }
}
