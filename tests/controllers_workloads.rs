//! The workload controllers against the real API server and kubectl: a
//! `TestServer`, `rk3s::controllers::workloads` on an in-process client with
//! the controller-manager certificate, and a small pod simulator in place of
//! the scheduler and kubelets (it registers Nodes, binds pending pods by
//! setting `spec.nodeName` (honouring a DaemonSet pod's node affinity), marks
//! them Running and Ready through `pods/status`, finishes pods labelled
//! `sim: succeed` / `sim: fail`, and leaves `sim: hang` pods Pending).
//!
//! `harness` holds the cluster and simulator; `apps` and `batch` the tests.

mod common;

#[path = "controllers_workloads/apps.rs"]
mod apps;
#[path = "controllers_workloads/batch.rs"]
mod batch;
#[path = "controllers_workloads/harness.rs"]
mod harness;
