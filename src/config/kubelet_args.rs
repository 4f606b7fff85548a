//! `--kubelet-arg KEY=VALUE`: kubelet settings passed through the k3s way.
//! Only the keys rk3s's kubelet implements are accepted; any other key is
//! a startup error listing the supported ones, so a setting is never
//! silently ignored.
//!
//! Supported: `image-gc-high-threshold` and `image-gc-low-threshold`
//! (percent, 0–100, low < high) and `minimum-image-ttl-duration` (a Go
//! duration: `2m`, `30s`, `1h30m`, `0s`). Keys may carry kubelet's leading
//! `--`. A key given twice keeps the last value, as kubelet's flag parsing.

use std::time::Duration;

/// Every key `--kubelet-arg` accepts.
pub const SUPPORTED_KUBELET_ARGS: &[&str] = &[
    "image-gc-high-threshold",
    "image-gc-low-threshold",
    "minimum-image-ttl-duration",
];

/// The validated kubelet settings (kubelet's defaults when not given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeletArgs {
    pub image_gc_high_threshold: u8,
    pub image_gc_low_threshold: u8,
    pub minimum_image_ttl: Duration,
    /// `KEY=VALUE` as given, for `--print-config`.
    pub raw: Vec<String>,
}

impl Default for KubeletArgs {
    fn default() -> Self {
        Self {
            image_gc_high_threshold: 85,
            image_gc_low_threshold: 80,
            minimum_image_ttl: Duration::from_secs(120),
            raw: Vec::new(),
        }
    }
}

/// One `KEY=VALUE`, checked on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeletArg {
    HighThreshold(u8),
    LowThreshold(u8),
    MinimumImageTtl(Duration),
}

/// Parses one `--kubelet-arg` item; the error says what to fix.
pub fn parse_kubelet_arg(text: &str) -> Result<KubeletArg, String> {
    let supported = || SUPPORTED_KUBELET_ARGS.join(", ");
    let Some((key, value)) = text.split_once('=') else {
        return Err(format!(
            "expected KEY=VALUE with KEY one of {}",
            supported()
        ));
    };
    let key = key.trim().trim_start_matches("--");
    let value = value.trim();
    let percent = |v: &str| -> Result<u8, String> {
        v.parse::<u8>()
            .ok()
            .filter(|p| *p <= 100)
            .ok_or_else(|| format!("{key} must be a whole percentage from 0 to 100, not {v:?}"))
    };
    match key {
        "image-gc-high-threshold" => percent(value).map(KubeletArg::HighThreshold),
        "image-gc-low-threshold" => percent(value).map(KubeletArg::LowThreshold),
        "minimum-image-ttl-duration" => parse_go_duration(value)
            .map(KubeletArg::MinimumImageTtl)
            .map_err(|e| format!("{key} must be a duration like 2m, 30s or 0s: {e}")),
        other => Err(format!(
            "unsupported kubelet argument {other:?}; supported keys are {}",
            supported()
        )),
    }
}

impl KubeletArgs {
    /// Applies parsed items in order and checks low < high.
    pub fn from_items(items: Vec<(String, KubeletArg)>) -> Result<Self, String> {
        let mut args = Self::default();
        for (raw, item) in items {
            match item {
                KubeletArg::HighThreshold(p) => args.image_gc_high_threshold = p,
                KubeletArg::LowThreshold(p) => args.image_gc_low_threshold = p,
                KubeletArg::MinimumImageTtl(d) => args.minimum_image_ttl = d,
            }
            args.raw.push(raw);
        }
        if args.image_gc_low_threshold >= args.image_gc_high_threshold {
            return Err(format!(
                "image-gc-low-threshold ({}) must be lower than image-gc-high-threshold ({})",
                args.image_gc_low_threshold, args.image_gc_high_threshold
            ));
        }
        Ok(args)
    }
}

/// A Go `time.ParseDuration` string without sign: `0`, or number-unit
/// pairs (`1h30m`, `1.5s`, `250ms`) with units ns, us, µs, ms, s, m, h.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err("empty duration".into());
    }
    let mut rest = text;
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        let number: f64 = num
            .parse()
            .map_err(|_| format!("invalid duration {text:?}"))?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let seconds = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(format!("missing unit in duration {text:?}")),
            u => return Err(format!("unknown unit {u:?} in duration {text:?}")),
        };
        total += number * seconds;
        rest = tail;
    }
    Duration::try_from_secs_f64(total).map_err(|_| format!("duration {text:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_go_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_go_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["", "2", "2x", "m", "-1s", "1..2s"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn items_and_errors() {
        assert_eq!(
            parse_kubelet_arg("image-gc-high-threshold=90"),
            Ok(KubeletArg::HighThreshold(90))
        );
        assert_eq!(
            parse_kubelet_arg("--image-gc-low-threshold=10"),
            Ok(KubeletArg::LowThreshold(10))
        );
        let unknown = parse_kubelet_arg("max-pods=200").unwrap_err();
        assert!(unknown.contains("\"max-pods\""), "{unknown}");
        assert!(unknown.contains(
            "image-gc-high-threshold, image-gc-low-threshold, minimum-image-ttl-duration"
        ));
        assert!(parse_kubelet_arg("image-gc-high-threshold=101")
            .unwrap_err()
            .contains("0 to 100"));
        assert!(parse_kubelet_arg("image-gc-high-threshold").is_err());
        assert!(parse_kubelet_arg("minimum-image-ttl-duration=soon")
            .unwrap_err()
            .contains("minimum-image-ttl-duration"));
    }

    #[test]
    fn low_must_stay_under_high() {
        let items = |pairs: &[&str]| {
            pairs
                .iter()
                .map(|p| (p.to_string(), parse_kubelet_arg(p).unwrap()))
                .collect::<Vec<_>>()
        };
        let ok = KubeletArgs::from_items(items(&[
            "image-gc-high-threshold=1",
            "image-gc-low-threshold=0",
        ]))
        .unwrap();
        assert_eq!(
            (ok.image_gc_high_threshold, ok.image_gc_low_threshold),
            (1, 0)
        );
        let err = KubeletArgs::from_items(items(&["image-gc-low-threshold=85"])).unwrap_err();
        assert!(
            err.contains("lower than image-gc-high-threshold (85)"),
            "{err}"
        );
        assert_eq!(
            KubeletArgs::from_items(Vec::new()).unwrap(),
            KubeletArgs::default()
        );
    }
}
