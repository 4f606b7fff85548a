//! Resource metrics (`kubectl top`) and Prometheus metrics.
//!
//! - [`collector`] (agent): samples the node (`/proc`) and each running
//!   container's cgroup every 10 s, keeps the last two readings and serves
//!   the rate between them as the kubelet's `/stats/summary`, plus the
//!   agent's Prometheus `/metrics`, on the kubelet API (the tunnel).
//! - [`scrape`] (server): fetches a node's summary through its tunnel when
//!   a `metrics.k8s.io` request comes in (on demand, nothing stored).
//! - [`summary`]: the summary's types and the `NodeMetrics`/`PodMetrics`
//!   shapes metrics-server serves; [`cgroup`]: the cgroup and `/proc` math;
//!   [`prom`]: a small Prometheus registry and text exposition.
//!
//! This module imports no other part of rk3s except `quantity` in tests:
//! the API server, the server and the agent use it, and wire it in a few
//! lines each (`apiserver::metrics_api`, `server::metrics`,
//! `agent::node_runner`).

pub mod cgroup;
pub mod collector;
pub mod prom;
pub mod scrape;
pub mod summary;

/// The kubelet API path of the summary.
pub const SUMMARY_PATH: &str = "/stats/summary";
