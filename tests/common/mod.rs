//! Shared test support: real components started for a test and cleaned up
//! afterwards, even when the test fails (every handle cleans up in `Drop`).
//!
//! Each test file pulls this in with `mod common;` and uses what it needs.
#![allow(dead_code)]

/// Start the rk3s API server in-process on a temp data dir, with a kubeconfig.
pub mod apiserver;
/// A private containerd (with runc) on its own root, state and socket.
pub mod containerd;
/// Tiny images built from Debian's busybox-static, as image tars.
pub mod image;
/// `rk3s server` as a plain process on loopback, and free loopback ports.
pub mod loopback;
/// A kubelet API served through a real tunnel client.
pub mod kubelet_tunnel;
/// Options for a kubelet run in the test's process on a private containerd.
pub mod kubeletopts;
/// The real `kubectl`, run with a given kubeconfig.
pub mod kubectl;
/// Network-namespace "nodes" joined by a bridge.
pub mod netns;
/// Python definitions for scripts of the Kubernetes Python client.
pub mod pyclient;
/// Whether root-only (e2e) tests must run, may be skipped, or are refused.
pub mod privilege;
/// A release directory from the binary under test, served over loopback HTTP.
pub mod release;
/// Simulated nodes and a server with the cluster controllers and scheduler.
pub mod simnodes;
/// Deployments deleted with a propagation policy, timed (GC tests and bench).
pub mod gcfixture;
/// A server and N agents, each in its own network namespace.
pub mod multinode;
/// What the namespace clusters share: kubectl beside the server, command lines, clean-up.
pub mod nodekit;
/// A real server and agent, each in its own network namespace.
pub mod twonode;
/// One real server with its built-in agent in a network namespace.
pub mod onenode;
/// Two in-process API servers on one shared store and PKI.
pub mod haservers;
