//! A small Prometheus registry with the text exposition format (0.0.4).
//!
//! Hand-written rather than the `prometheus-client` crate: we need three
//! metric kinds with free-form label sets created on first use (a request's
//! verb, resource and code), which that crate models with one typed label
//! struct and family per metric; the exposition format is a few lines, and
//! one mutex-guarded map per registry is cheap at a Pi's request rates.
//! Each registry is an instance (never a global), so several servers in one
//! test process keep their own counts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// The content type of [`Registry::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// kube-apiserver's request-duration buckets (seconds), trimmed.
pub const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

type Labels = Vec<(String, String)>;

enum Series {
    Value(f64),
    Histogram {
        bounds: &'static [f64],
        counts: Vec<u64>,
        sum: f64,
        count: u64,
    },
}

struct Family {
    help: &'static str,
    kind: Kind,
    series: BTreeMap<Labels, Series>,
}

/// Sets gauges from live state just before a scrape renders.
pub type OnRender = std::sync::Arc<dyn Fn(&Registry) + Send + Sync>;

/// Metric families by name.
#[derive(Default)]
pub struct Registry {
    families: Mutex<BTreeMap<&'static str, Family>>,
    on_render: Mutex<Vec<OnRender>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let families = self.families.lock().map(|f| f.len()).unwrap_or(0);
        f.debug_struct("Registry").field("families", &families).finish_non_exhaustive()
    }
}

fn labels(l: &[(&str, &str)]) -> Labels {
    l.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    fn with(&self, name: &'static str, help: &'static str, kind: Kind, f: impl FnOnce(&mut BTreeMap<Labels, Series>)) {
        let mut families = self.families.lock().expect("metrics lock");
        let family = families.entry(name).or_insert_with(|| Family {
            help,
            kind,
            series: BTreeMap::new(),
        });
        debug_assert_eq!(family.kind, kind, "{name} registered as two kinds");
        f(&mut family.series);
    }

    /// Adds `by` to a counter.
    pub fn inc(&self, name: &'static str, help: &'static str, l: &[(&str, &str)], by: f64) {
        self.with(name, help, Kind::Counter, |s| {
            if let Series::Value(v) = s.entry(labels(l)).or_insert(Series::Value(0.0)) {
                *v += by;
            }
        });
    }

    /// Sets a gauge.
    pub fn set(&self, name: &'static str, help: &'static str, l: &[(&str, &str)], value: f64) {
        self.with(name, help, Kind::Gauge, |s| {
            s.insert(labels(l), Series::Value(value));
        });
    }

    /// Adds `delta` (may be negative) to a gauge.
    pub fn add(&self, name: &'static str, help: &'static str, l: &[(&str, &str)], delta: f64) {
        self.with(name, help, Kind::Gauge, |s| {
            if let Series::Value(v) = s.entry(labels(l)).or_insert(Series::Value(0.0)) {
                *v += delta;
            }
        });
    }

    /// Records one observation in a histogram with `bounds` as buckets.
    pub fn observe(
        &self,
        name: &'static str,
        help: &'static str,
        l: &[(&str, &str)],
        value: f64,
        bounds: &'static [f64],
    ) {
        self.with(name, help, Kind::Histogram, |s| {
            let entry = s.entry(labels(l)).or_insert_with(|| Series::Histogram {
                bounds,
                counts: vec![0; bounds.len()],
                sum: 0.0,
                count: 0,
            });
            if let Series::Histogram { bounds, counts, sum, count } = entry {
                for (i, b) in bounds.iter().enumerate() {
                    if value <= *b {
                        counts[i] += 1;
                    }
                }
                *sum += value;
                *count += 1;
            }
        });
    }

    /// The value of a counter or gauge series (tests and other readers).
    pub fn value(&self, name: &str, l: &[(&str, &str)]) -> Option<f64> {
        let families = self.families.lock().expect("metrics lock");
        match families.get(name)?.series.get(&labels(l))? {
            Series::Value(v) => Some(*v),
            Series::Histogram { count, .. } => Some(*count as f64),
        }
    }

    /// Runs `f` before every [`Registry::render`] (gauges read at scrape).
    pub fn on_render(&self, f: OnRender) {
        self.on_render.lock().expect("metrics lock").push(f);
    }

    /// Every family in the text exposition format, sorted by name.
    pub fn render(&self) -> String {
        let hooks = self.on_render.lock().expect("metrics lock").clone();
        for hook in hooks {
            hook(self);
        }
        let families = self.families.lock().expect("metrics lock");
        let mut out = String::new();
        for (name, family) in families.iter() {
            let _ = writeln!(out, "# HELP {name} {}", family.help);
            let _ = writeln!(out, "# TYPE {name} {}", family.kind.name());
            for (l, series) in &family.series {
                match series {
                    Series::Value(v) => {
                        let _ = writeln!(out, "{name}{} {}", render_labels(l, None), number(*v));
                    }
                    Series::Histogram { bounds, counts, sum, count } => {
                        for (b, c) in bounds.iter().zip(counts) {
                            let le = number(*b);
                            let _ = writeln!(out, "{name}_bucket{} {c}", render_labels(l, Some(&le)));
                        }
                        let _ = writeln!(out, "{name}_bucket{} {count}", render_labels(l, Some("+Inf")));
                        let _ = writeln!(out, "{name}_sum{} {}", render_labels(l, None), number(*sum));
                        let _ = writeln!(out, "{name}_count{} {count}", render_labels(l, None));
                    }
                }
            }
        }
        out
    }
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn render_labels(l: &Labels, le: Option<&str>) -> String {
    let mut parts: Vec<String> = l.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_text_exposition_format() {
        let r = Registry::new();
        r.inc("req_total", "Requests.", &[("verb", "GET"), ("code", "200")], 1.0);
        r.inc("req_total", "Requests.", &[("verb", "GET"), ("code", "200")], 1.0);
        r.set("up", "Whether it is up.", &[], 1.0);
        r.add("watchers", "Open watches.", &[("resource", "pods")], 2.0);
        r.add("watchers", "Open watches.", &[("resource", "pods")], -1.0);
        r.inc("odd", "Label escaping.", &[("path", "a\"b\\c\nd")], 0.5);
        static B: &[f64] = &[0.1, 1.0];
        r.observe("lat_seconds", "Latency.", &[("verb", "GET")], 0.05, B);
        r.observe("lat_seconds", "Latency.", &[("verb", "GET")], 0.5, B);
        r.observe("lat_seconds", "Latency.", &[("verb", "GET")], 5.0, B);
        let text = r.render();
        let want = "\
# HELP lat_seconds Latency.
# TYPE lat_seconds histogram
lat_seconds_bucket{verb=\"GET\",le=\"0.1\"} 1
lat_seconds_bucket{verb=\"GET\",le=\"1\"} 2
lat_seconds_bucket{verb=\"GET\",le=\"+Inf\"} 3
lat_seconds_sum{verb=\"GET\"} 5.55
lat_seconds_count{verb=\"GET\"} 3
# HELP odd Label escaping.
# TYPE odd counter
odd{path=\"a\\\"b\\\\c\\nd\"} 0.5
# HELP req_total Requests.
# TYPE req_total counter
req_total{verb=\"GET\",code=\"200\"} 2
# HELP up Whether it is up.
# TYPE up gauge
up 1
# HELP watchers Open watches.
# TYPE watchers gauge
watchers{resource=\"pods\"} 1
";
        assert_eq!(text, want);
        assert_eq!(r.value("req_total", &[("verb", "GET"), ("code", "200")]), Some(2.0));
        assert_eq!(r.value("req_total", &[("verb", "PUT")]), None);
    }
}
