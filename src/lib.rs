//! rk3s: a lightweight, single-binary Kubernetes distribution.
//!
//! See `ARCHITECTURE.md` for the map of this crate.

pub mod addons;
pub mod agent;
pub mod apiserver;
pub mod auth;
pub mod check_config;
pub mod cidr;
pub mod cli;
pub mod config;
pub mod controllers;
pub mod dashboard;
pub mod dns;
pub mod hostnet;
pub mod hostos;
pub mod ingress;
pub mod k8s;
pub mod metrics;
pub mod overlay;
pub mod pki;
pub mod process;
pub mod proxy;
pub mod quantity;
pub mod scheduler;
pub mod server;
pub mod storage;
pub mod store;
pub mod svccache;
pub mod tunnel;
