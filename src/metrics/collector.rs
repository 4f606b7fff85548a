//! The agent's side: sample the node and every running container on a
//! fixed period, keep the last two readings of each, and serve the rate
//! between them as the kubelet's `/stats/summary` (plus the agent's
//! Prometheus `/metrics`) on the kubelet API.
//!
//! A rate needs two readings, so a container appears in the summary (with
//! CPU) one period after it is first seen; until then it reports memory
//! only and the API leaves its pod out, as metrics-server does. The period
//! ([`SAMPLE_PERIOD`], 10 s like the kubelet's housekeeping) is the
//! `window` the API reports; metrics-server's default resolution is 15 s,
//! so the figures are always fresher than a metrics-server would serve.
//!
//! Which containers run is asked of the container runtime through
//! [`ContainerLister`] (the agent wires containerd's list, whose labels give
//! the pod, the container name and the cgroup path), never by scanning the
//! cgroup tree: several agents may share a host's cgroups in tests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::cgroup::{self, CgroupLayout, HostFiles, Reading};
use super::prom::{self, Registry};
use super::summary::{ContainerStats, CpuStats, MemoryStats, NodeStats, PodRef, PodStats, Summary};

/// How often the node and its containers are sampled.
pub const SAMPLE_PERIOD: Duration = Duration::from_secs(10);

/// One running container and where its cgroup is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerRef {
    pub pod: PodRef,
    pub container: String,
    /// As given to runc: `/rk3s/pods/<pod uid>/<container id>`.
    pub cgroup: String,
}

/// The containers running on this node now.
#[async_trait]
pub trait ContainerLister: Send + Sync {
    async fn running(&self) -> Result<Vec<ContainerRef>, String>;
}

#[derive(Clone, Copy)]
struct Sample {
    at: DateTime<Utc>,
    mono: Instant,
    reading: Reading,
}

/// The last two samples of one source.
#[derive(Default, Clone, Copy)]
struct Pair {
    prev: Option<Sample>,
    last: Option<Sample>,
}

impl Pair {
    fn push(&mut self, s: Sample) {
        self.prev = self.last.replace(s);
    }

    fn cpu(&self) -> Option<CpuStats> {
        let (prev, last) = (self.prev?, self.last?);
        let elapsed = last.mono.duration_since(prev.mono);
        let rate = cgroup::nanocores(prev.reading.cpu_ns, last.reading.cpu_ns, elapsed.as_nanos() as u64)?;
        Some(CpuStats {
            time: last.at,
            usage_nano_cores: rate,
            usage_core_nano_seconds: last.reading.cpu_ns,
            window_seconds: elapsed.as_secs_f64(),
        })
    }

    fn memory(&self) -> Option<MemoryStats> {
        let last = self.last?;
        Some(MemoryStats {
            time: last.at,
            working_set_bytes: last.reading.working_set,
            usage_bytes: last.reading.memory_usage,
        })
    }
}

#[derive(Default)]
struct Samples {
    node: Pair,
    /// By cgroup path: the container and its samples.
    containers: HashMap<String, (ContainerRef, Pair)>,
}

/// Samples the node and its containers; serves what it saw.
pub struct Collector {
    node_name: String,
    host: Arc<dyn HostFiles>,
    layout: CgroupLayout,
    ticks: u64,
    lister: Arc<dyn ContainerLister>,
    samples: Mutex<Samples>,
    /// The agent's Prometheus metrics (`/metrics` on the kubelet API),
    /// shared with the rest of the agent (image pulls, the tunnel, the proxy).
    registry: Arc<Registry>,
}

impl Collector {
    /// A collector for `node_name` that samples through `host` and `lister`
    /// and serves `registry` (with its own gauges added) as `/metrics`.
    pub fn new(
        node_name: &str,
        host: Arc<dyn HostFiles>,
        lister: Arc<dyn ContainerLister>,
        registry: Arc<Registry>,
    ) -> Self {
        let layout = CgroupLayout::detect(host.as_ref());
        Collector {
            node_name: node_name.to_string(),
            host,
            layout,
            ticks: cgroup::clock_ticks(),
            lister,
            samples: Mutex::new(Samples::default()),
            registry,
        }
    }

    /// Reads the node and every running container once.
    pub async fn sample(&self) {
        self.sample_at(Utc::now, Instant::now).await
    }

    /// [`Collector::sample`] with the clocks given (tests step them).
    async fn sample_at(&self, wall: impl Fn() -> DateTime<Utc>, mono: impl Fn() -> Instant) {
        let started = Instant::now();
        let running = match self.lister.running().await {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::debug!("failed to list containers for metrics: {e}");
                None
            }
        };
        let (at, mono) = (wall(), mono());
        let node = cgroup::read_node(self.host.as_ref(), self.ticks);
        let mut readings = Vec::new();
        for c in running.iter().flatten() {
            // A container that stopped since the list has no cgroup: skipped.
            if let Ok(r) = cgroup::read_cgroup(self.host.as_ref(), self.layout, &c.cgroup) {
                readings.push((c.clone(), r));
            }
        }
        let (pods, containers) = {
            let mut s = self.samples.lock().expect("samples lock");
            match node {
                Ok(reading) => s.node.push(Sample { at, mono, reading }),
                Err(e) => tracing::debug!("failed to read the node's usage: {e}"),
            }
            if running.is_some() {
                let mut next = HashMap::new();
                for (c, reading) in readings {
                    let mut pair = s.containers.remove(&c.cgroup).map(|(_, p)| p).unwrap_or_default();
                    pair.push(Sample { at, mono, reading });
                    next.insert(c.cgroup.clone(), (c, pair));
                }
                s.containers = next;
            }
            let pods: std::collections::BTreeSet<&str> =
                s.containers.values().map(|(c, _)| c.pod.uid.as_str()).collect();
            (pods.len(), s.containers.len())
        };
        let r = &self.registry;
        r.set("kubelet_running_pods", "Number of pods that have a running container.", &[], pods as f64);
        r.set("kubelet_running_containers", "Number of running containers.", &[("container_state", "running")], containers as f64);
        r.observe(
            "rk3s_metrics_sample_duration_seconds",
            "How long one sampling of the node and its containers took.",
            &[],
            started.elapsed().as_secs_f64(),
            prom::DURATION_BUCKETS,
        );
    }

    /// What the node reports: figures with a rate need two samples.
    pub fn summary(&self) -> Summary {
        let s = self.samples.lock().expect("samples lock");
        let mut pods: Vec<PodStats> = Vec::new();
        let mut entries: Vec<&(ContainerRef, Pair)> = s.containers.values().collect();
        entries.sort_by(|a, b| (&a.0.pod.namespace, &a.0.pod.name, &a.0.container).cmp(&(&b.0.pod.namespace, &b.0.pod.name, &b.0.container)));
        for (c, pair) in entries {
            let stats = ContainerStats {
                name: c.container.clone(),
                cpu: pair.cpu(),
                memory: pair.memory(),
            };
            match pods.iter_mut().find(|p| p.pod_ref.uid == c.pod.uid) {
                Some(p) => p.containers.push(stats),
                None => pods.push(PodStats {
                    pod_ref: c.pod.clone(),
                    containers: vec![stats],
                }),
            }
        }
        Summary {
            node: NodeStats {
                node_name: self.node_name.clone(),
                cpu: s.node.cpu(),
                memory: s.node.memory(),
            },
            pods,
        }
    }

    /// Samples every [`SAMPLE_PERIOD`] until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(SAMPLE_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => self.sample().await,
            }
        }
    }

    /// `/stats/summary` and `/metrics`, to merge into the kubelet API.
    pub fn routes(self: Arc<Self>) -> Router {
        Router::new()
            .route(super::SUMMARY_PATH, get(summary_handler))
            .route("/metrics", get(metrics_handler))
            .with_state(self)
    }
}

async fn summary_handler(State(c): State<Arc<Collector>>) -> Response {
    axum::Json(c.summary()).into_response()
}

async fn metrics_handler(State(c): State<Arc<Collector>>) -> Response {
    ([(http::header::CONTENT_TYPE, prom::CONTENT_TYPE)], c.registry.render()).into_response()
}

#[cfg(test)]
mod tests {
    use super::super::cgroup::fake::FakeHost;
    use super::*;

    struct FixedList(Mutex<Vec<ContainerRef>>);

    #[async_trait]
    impl ContainerLister for FixedList {
        async fn running(&self) -> Result<Vec<ContainerRef>, String> {
            Ok(self.0.lock().unwrap().clone())
        }
    }

    fn container(pod: &str, name: &str) -> ContainerRef {
        ContainerRef {
            pod: PodRef {
                name: pod.into(),
                namespace: "default".into(),
                uid: format!("uid-{pod}"),
            },
            container: name.into(),
            cgroup: format!("/rk3s/pods/uid-{pod}/{name}-id"),
        }
    }

    fn set_cgroup(host: &FakeHost, c: &ContainerRef, cpu_ns: u64, bytes: u64) {
        let p = &c.cgroup;
        host.set(&format!("/sys/fs/cgroup/cpuacct{p}/cpuacct.usage"), &cpu_ns.to_string());
        host.set(&format!("/sys/fs/cgroup/memory{p}/memory.usage_in_bytes"), &bytes.to_string());
        host.set(&format!("/sys/fs/cgroup/memory{p}/memory.stat"), "total_inactive_file 1024\n");
    }

    #[tokio::test]
    async fn a_rate_appears_after_the_second_sample() {
        let host = Arc::new(FakeHost::default());
        host.set("/proc/stat", "cpu  100 0 0 900 0 0 0 0 0 0\n");
        host.set("/proc/meminfo", "MemTotal: 1000 kB\nMemFree: 400 kB\nInactive(file): 100 kB\n");
        let web = container("web", "app");
        let gone = container("old", "app");
        set_cgroup(&host, &web, 1_000_000_000, 10 * 1024 * 1024 + 1024);
        let list = Arc::new(FixedList(Mutex::new(vec![web.clone(), gone.clone()])));
        let c = Collector::new("n1", host.clone(), list.clone(), Arc::new(Registry::new()));
        let t0 = Instant::now();
        let w0 = Utc::now();
        c.sample_at(|| w0, || t0).await;
        let first = c.summary();
        assert_eq!(first.node.cpu, None, "one sample gives no rate");
        assert_eq!(first.node.memory.as_ref().unwrap().working_set_bytes, 500 * 1024);
        assert_eq!(first.pods.len(), 1, "a container without a cgroup is skipped");
        assert_eq!(first.pods[0].containers[0].cpu, None);
        assert_eq!(first.pods[0].containers[0].memory.as_ref().unwrap().working_set_bytes, 10 * 1024 * 1024);

        // Half a core for ten seconds; the node used 2 s of CPU (200 ticks).
        let (t1, w1) = (t0 + Duration::from_secs(10), w0 + chrono::Duration::seconds(10));
        set_cgroup(&host, &web, 6_000_000_000, 20 * 1024 * 1024);
        host.set("/proc/stat", "cpu  300 0 0 1700 0 0 0 0 0 0\n");
        c.sample_at(|| w1, || t1).await;
        let s = c.summary();
        let cpu = s.pods[0].containers[0].cpu.clone().unwrap();
        assert_eq!(cpu.usage_nano_cores, 500_000_000);
        assert_eq!(cpu.usage_core_nano_seconds, 6_000_000_000);
        assert_eq!(cpu.window_seconds, 10.0);
        assert_eq!(cpu.time, w1);
        let ticks = cgroup::clock_ticks();
        let node_ns = 200 * 1_000_000_000 / ticks;
        assert_eq!(s.node.cpu.unwrap().usage_nano_cores, node_ns / 10);
        assert_eq!(c.registry.value("kubelet_running_pods", &[]), Some(1.0));

        // A container that stops leaves the summary at the next sample.
        list.0.lock().unwrap().clear();
        c.sample_at(|| w1, || t1 + Duration::from_secs(10)).await;
        assert!(c.summary().pods.is_empty());
        assert_eq!(c.registry.value("kubelet_running_pods", &[]), Some(0.0));
    }
}
