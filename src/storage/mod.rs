//! Storage: PersistentVolumes, claims, local-path and NFS (issue 18).
//!
//! This module is the shared and node-side half; the server side (the
//! PersistentVolume binder, claim and volume protection, the local-path
//! provisioner) is `controllers::storage`, and the scheduler's volume
//! filter is `scheduler::volumes`. Everything here talks to the API through
//! `kube::Client` only and imports neither `agent` nor `server`.
//!
//! - `binding`: pure matching of claims to volumes, node affinity, the
//!   annotations and finalizers as kube spells them.
//! - `local_path`: the default `local-path` class, the PV it provisions,
//!   and `NodeDirs`, the agent's loop that creates and removes the
//!   directories of its node's local-path volumes.
//! - `mount`: the mount errors users read; the mounts themselves go through
//!   `crate::hostos::FsOps` (host: `mount -t nfs`, mountinfo, detach; fake:
//!   `hostos::fake::FakeFsOps`, tests only).
//! - `volumes`: what a pod's claim or NFS volume is on the host and its
//!   setup and teardown for the kubelet.
//!
//! Partial: no volume expansion, no block volumes, no `Recycle`, no CSI.

pub mod binding;
pub mod local_path;
pub mod mount;
pub mod volumes;
