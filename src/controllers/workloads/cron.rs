//! Five-field cron schedules as Kubernetes accepts them (robfig/cron's
//! standard parser): minute, hour, day of month, month, day of week, with
//! `*`, `?`, lists, ranges, steps, month and weekday names, 7 as Sunday,
//! the `@yearly`/`@annually`/`@monthly`/`@weekly`/`@daily`/`@midnight`/`@hourly`
//! descriptors, and a `CRON_TZ=`/`TZ=` prefix. As in cron, when both day
//! fields are restricted a day matching either one fires.
//!
//! Times are computed in the schedule's zone with jiff (the system tz
//! database); a wall time skipped by a DST jump resolves to the later instant.

use k8s_openapi::jiff::civil::{Date, DateTime};
use k8s_openapi::jiff::tz::TimeZone;
use k8s_openapi::jiff::{Timestamp, ToSpan};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CronError {
    #[error("failed to parse schedule {0:?}: {1}")]
    Parse(String, String),
    #[error("failed to find time zone {0:?}")]
    TimeZone(String),
}

/// A parsed schedule: one bit per allowed value of each field.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    minutes: u64,
    hours: u64,
    dom: u64,
    months: u64,
    dow: u64,
    dom_star: bool,
    dow_star: bool,
    /// The zone from a `CRON_TZ=` prefix, if any.
    pub zone: Option<String>,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn value(s: &str, names: &[&str], offset: u32) -> Option<u32> {
    if let Some(i) = names.iter().position(|n| s.eq_ignore_ascii_case(n)) {
        return Some(i as u32 + offset);
    }
    s.parse().ok()
}

/// Parses one field into a bit set over `min..=max`; returns (bits, is_star).
fn field(
    spec: &str,
    min: u32,
    max: u32,
    names: &[&str],
    offset: u32,
) -> Result<(u64, bool), String> {
    let mut bits = 0u64;
    let mut star = false;
    for part in spec.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                Some(
                    s.parse::<u32>()
                        .map_err(|_| format!("invalid step {s:?}"))?,
                ),
            ),
            None => (part, None),
        };
        let (lo, hi) = if range == "*" || range == "?" {
            if step.is_none() {
                star = true;
            }
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let a = value(a, names, offset).ok_or_else(|| format!("invalid value {a:?}"))?;
            let b = value(b, names, offset).ok_or_else(|| format!("invalid value {b:?}"))?;
            (a, b)
        } else {
            let a =
                value(range, names, offset).ok_or_else(|| format!("invalid value {range:?}"))?;
            (a, if step.is_some() { max } else { a })
        };
        if lo < min || hi > max || lo > hi {
            return Err(format!("value out of range ({min}-{max}): {part:?}"));
        }
        let step = step.unwrap_or(1);
        if step == 0 {
            return Err("step of zero".into());
        }
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok((bits, star))
}

impl Schedule {
    pub fn parse(input: &str) -> Result<Schedule, CronError> {
        let err = |m: String| CronError::Parse(input.to_string(), m);
        let mut s = input.trim();
        let mut zone = None;
        if let Some(rest) = s.strip_prefix("CRON_TZ=").or_else(|| s.strip_prefix("TZ=")) {
            let (z, r) = rest
                .split_once(char::is_whitespace)
                .ok_or_else(|| err("missing fields after time zone".into()))?;
            zone = Some(z.to_string());
            s = r.trim();
        }
        let expanded = match s {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other if other.starts_with('@') => {
                return Err(err(format!("unrecognized descriptor {other:?}")))
            }
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(err(format!(
                "expected exactly 5 fields, found {}",
                fields.len()
            )));
        }
        let (minutes, _) = field(fields[0], 0, 59, &[], 0).map_err(err)?;
        let (hours, _) = field(fields[1], 0, 23, &[], 0).map_err(err)?;
        let (dom, dom_star) = field(fields[2], 1, 31, &[], 0).map_err(err)?;
        let (months, _) = field(fields[3], 1, 12, &MONTHS, 1).map_err(err)?;
        let (mut dow, dow_star) = field(fields[4], 0, 7, &DAYS, 0).map_err(err)?;
        if dow & (1 << 7) != 0 {
            dow = (dow | 1) & !(1 << 7);
        }
        Ok(Schedule {
            minutes,
            hours,
            dom,
            months,
            dow,
            dom_star,
            dow_star,
            zone,
        })
    }

    fn day_matches(&self, d: Date) -> bool {
        let dom = self.dom & (1 << d.day()) != 0;
        let dow = self.dow & (1 << d.weekday().to_sunday_zero_offset()) != 0;
        if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first firing time strictly after `after`, in `tz`; `None` if none within five years.
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let start = after.to_zoned(tz.clone());
        let mut t: DateTime = start
            .datetime()
            .with()
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .ok()?;
        t = t.checked_add(1.minute()).ok()?;
        let limit = t.year() + 5;
        while t.year() <= limit {
            if self.months & (1 << t.month()) == 0 {
                t = t
                    .first_of_month()
                    .checked_add(1.month())
                    .ok()?
                    .with()
                    .hour(0)
                    .minute(0)
                    .build()
                    .ok()?;
                continue;
            }
            if !self.day_matches(t.date()) {
                t = t
                    .date()
                    .checked_add(1.day())
                    .ok()?
                    .to_datetime(k8s_openapi::jiff::civil::Time::midnight());
                continue;
            }
            if self.hours & (1 << t.hour()) == 0 {
                t = t
                    .with()
                    .minute(0)
                    .build()
                    .ok()?
                    .checked_add(1.hour())
                    .ok()?;
                continue;
            }
            if self.minutes & (1 << t.minute()) == 0 {
                t = t.checked_add(1.minute()).ok()?;
                continue;
            }
            let ts = t.to_zoned(tz.clone()).ok()?.timestamp();
            if ts > after {
                return Some(ts);
            }
            t = t.checked_add(1.minute()).ok()?;
        }
        None
    }
}

/// The zone named by `spec.timeZone` or the schedule's prefix (UTC when neither).
pub fn zone(name: Option<&str>) -> Result<TimeZone, CronError> {
    match name {
        None | Some("") | Some("UTC") | Some("Etc/UTC") => Ok(TimeZone::UTC),
        Some(n) => TimeZone::get(n).map_err(|_| CronError::TimeZone(n.to_string())),
    }
}

/// The latest firing time in `(earliest, now]` and how many there were
/// (capped: counting stops past `cap`, the answer stays the latest).
pub fn most_recent(
    s: &Schedule,
    tz: &TimeZone,
    earliest: Timestamp,
    now: Timestamp,
    cap: usize,
) -> (Option<Timestamp>, usize) {
    let mut t = earliest;
    let mut last = None;
    let mut n = 0;
    while let Some(next) = s.next_after(t, tz) {
        if next > now {
            break;
        }
        n += 1;
        last = Some(next);
        t = next;
        if n == cap {
            // Too many to walk one by one: restart from the shortest recent
            // window that holds a firing time; the latest one is in it.
            for days in [1, 32, 400, 5 * 366] {
                let Ok(start) = now.checked_sub((days * 24).hours()) else {
                    continue;
                };
                if start <= t {
                    break;
                }
                if s.next_after(start, tz).is_some_and(|x| x <= now) {
                    t = start;
                    break;
                }
            }
        }
    }
    (last, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn next(sched: &str, after: &str) -> String {
        Schedule::parse(sched)
            .unwrap()
            .next_after(ts(after), &TimeZone::UTC)
            .unwrap()
            .to_string()
    }

    #[test]
    fn next_times_follow_each_field() {
        assert_eq!(
            next("*/1 * * * *", "2024-01-01T00:00:30Z"),
            "2024-01-01T00:01:00Z"
        );
        assert_eq!(
            next("*/15 * * * *", "2024-01-01T00:15:00Z"),
            "2024-01-01T00:30:00Z"
        );
        assert_eq!(
            next("30 2 * * *", "2024-01-01T03:00:00Z"),
            "2024-01-02T02:30:00Z"
        );
        assert_eq!(
            next("@hourly", "2024-01-01T03:00:00Z"),
            "2024-01-01T04:00:00Z"
        );
        assert_eq!(
            next("0 0 29 2 *", "2024-03-01T00:00:00Z"),
            "2028-02-29T00:00:00Z"
        );
        // 2024-01-06 is a Saturday.
        assert_eq!(
            next("0 9 * * mon-fri", "2024-01-06T00:00:00Z"),
            "2024-01-08T09:00:00Z"
        );
        assert_eq!(
            next("0 0 * * 7", "2024-01-01T00:00:00Z"),
            "2024-01-07T00:00:00Z"
        );
        // Both day fields restricted: either matches (the 1st, or a Friday).
        assert_eq!(
            next("0 0 1 * fri", "2024-01-01T00:00:00Z"),
            "2024-01-05T00:00:00Z"
        );
        assert_eq!(
            next("0 0 1 jan,jul *", "2024-01-01T00:00:00Z"),
            "2024-07-01T00:00:00Z"
        );
    }

    #[test]
    fn time_zones_shift_the_wall_clock_schedule() {
        let s = Schedule::parse("0 9 * * *").unwrap();
        // Zones come from the system tz database (Debian's tzdata); without
        // it a named zone is refused with a clear error, never taken as UTC.
        if !std::path::Path::new("/usr/share/zoneinfo/Europe/Berlin").exists() {
            assert!(matches!(
                zone(Some("Europe/Berlin")),
                Err(CronError::TimeZone(_))
            ));
            return;
        }
        let berlin = zone(Some("Europe/Berlin")).expect("Europe/Berlin from /usr/share/zoneinfo");
        let t = s.next_after(ts("2024-01-01T00:00:00Z"), &berlin).unwrap();
        assert_eq!(t, ts("2024-01-01T08:00:00Z"));
        let t = s.next_after(ts("2024-07-01T00:00:00Z"), &berlin).unwrap();
        assert_eq!(t, ts("2024-07-01T07:00:00Z"));
        assert!(matches!(
            zone(Some("Mars/Olympus")),
            Err(CronError::TimeZone(_))
        ));
    }

    #[test]
    fn bad_schedules_are_refused_with_the_reason() {
        assert!(Schedule::parse("* * * *").is_err());
        assert!(Schedule::parse("60 * * * *").is_err());
        assert!(Schedule::parse("*/0 * * * *").is_err());
        assert!(Schedule::parse("@reboot").is_err());
        assert!(Schedule::parse("0 0 * * 8").is_err());
        assert_eq!(
            Schedule::parse("CRON_TZ=Etc/UTC 0 * * * *")
                .unwrap()
                .zone
                .as_deref(),
            Some("Etc/UTC")
        );
    }

    #[test]
    fn most_recent_finds_the_last_missed_time() {
        let s = Schedule::parse("*/10 * * * *").unwrap();
        let (last, n) = most_recent(
            &s,
            &TimeZone::UTC,
            ts("2024-01-01T00:00:00Z"),
            ts("2024-01-01T00:35:00Z"),
            100,
        );
        assert_eq!(last, Some(ts("2024-01-01T00:30:00Z")));
        assert_eq!(n, 3);
        let (last, _) = most_recent(
            &s,
            &TimeZone::UTC,
            ts("2020-01-01T00:00:00Z"),
            ts("2024-01-01T00:35:00Z"),
            100,
        );
        assert_eq!(last, Some(ts("2024-01-01T00:30:00Z")));
    }
}
