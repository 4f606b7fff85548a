//! CrashLoopBackOff: the delay before restarting a container that exited.
//! The first restart is immediate; later ones wait 10 s, doubling up to
//! 5 min; a container that ran for 10 min resets the sequence (kubelet's
//! `backOff` with its defaults).

use std::time::Duration;

use chrono::{DateTime, Utc};

pub const INITIAL: Duration = Duration::from_secs(10);
pub const MAX: Duration = Duration::from_secs(300);
/// Running this long counts as healthy: the next crash starts over.
pub const RESET_AFTER: Duration = Duration::from_secs(600);

/// A delay as Go prints a `time.Duration` of whole seconds (`10s`, `5m0s`).
pub fn fmt_delay(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 && s % 60 == 0 {
        format!("{}m0s", s / 60)
    } else if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backoff {
    /// The delay the last restart waited (`None`: none yet).
    last: Option<Duration>,
}

impl Backoff {
    /// The delay the latest restart waits (zero before any back-off).
    pub fn current(&self) -> Duration {
        self.last.unwrap_or_default()
    }

    /// The delay before restarting a container that ran from `started` to
    /// `finished`; advances the sequence.
    pub fn next(
        &mut self,
        started: Option<DateTime<Utc>>,
        finished: Option<DateTime<Utc>>,
    ) -> Duration {
        if let (Some(s), Some(f)) = (started, finished) {
            if (f - s).to_std().is_ok_and(|ran| ran >= RESET_AFTER) {
                self.last = None;
            }
        }
        let delay = match self.last {
            None => Duration::ZERO,
            Some(d) if d.is_zero() => INITIAL,
            Some(d) => (d * 2).min(MAX),
        };
        self.last = Some(delay);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_ten_seconds_to_five_minutes() {
        let mut b = Backoff::default();
        let now = Utc::now();
        let got: Vec<u64> = (0..8)
            .map(|_| b.next(Some(now), Some(now)).as_secs())
            .collect();
        assert_eq!(got, vec![0, 10, 20, 40, 80, 160, 300, 300]);
    }

    #[test]
    fn resets_after_ten_minutes_of_running() {
        let mut b = Backoff::default();
        let now = Utc::now();
        b.next(Some(now), Some(now));
        b.next(Some(now), Some(now));
        assert_eq!(b.next(Some(now), Some(now)).as_secs(), 20);
        let long = now + chrono::Duration::minutes(11);
        assert_eq!(b.next(Some(now), Some(long)).as_secs(), 0);
        assert_eq!(b.next(Some(now), Some(now)).as_secs(), 10);
    }
}
