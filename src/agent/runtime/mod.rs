//! The container runtime seam of the node agent: run a pod's containers on
//! containerd through its native gRPC API.
//!
//! [`ContainerRuntime`] is the boundary the kubelet side talks to;
//! [`ContainerdRuntime`] implements it against a containerd socket and
//! [`FakeRuntime`] records calls for unit tests. The agent creates each pod's
//! network namespace itself: there is no pause container, every container
//! joins the namespace path given in its [`ContainerSpec`].
//!
//! Invariants:
//! - Every containerd call is made in the [`NAMESPACE`] (`k8s.io`) namespace.
//! - Everything the agent needs to re-adopt a container after a restart is
//!   stored on the container itself, as labels (see [`labels`]): pod uid,
//!   name and namespace, container name, restart attempt, log path and
//!   cgroup path. [`ContainerRuntime::list`] reads them back.
//! - A container's snapshot is keyed by its id, so [`ContainerRuntime::remove`]
//!   can always find and remove it.
//! - Logs are written by a logger process that containerd's shim spawns
//!   (containerd "binary" stdio, see [`cri_log`]), not by the agent: they keep
//!   flowing while the agent is down or restarting (fail static), and a
//!   re-adopted container needs nothing reopened. The rk3s binary must hand
//!   `rk3s _RK3S_LOG_SHIM <path>` to [`cri_log::run_log_shim`] before its
//!   normal argument parsing.
//! - Container ids are random (uuid) and cgroups are
//!   `/rk3s/pods/<pod uid>/<container id>` (absolute: works on cgroup v1
//!   and v2); `remove` drops the pod level once it is empty.
//! - Creation holds a containerd lease, so the garbage collector cannot
//!   take the snapshot between Prepare and Containers.Create.
//! - [`ContainerRuntime::remove_image`] deletes only the image record (with
//!   `sync`); containerd's own garbage collector frees the content and
//!   snapshots nothing else references, so a running container's image
//!   layers are never taken from under it. The kubelet's image GC decides
//!   what to delete (`kubelet::image_gc`).
//!
//! The caller provides `/etc/hosts`, `/etc/resolv.conf` and volumes as
//! [`Mount`]s, and the network namespace as a path.
//!
//! Partial:
//! - `exec` runs a command without stdio (probes, hooks); attach and
//!   port-forward are not part of the trait yet.
//! - [`ContainerRuntime::import_image`] reads docker-archive tars only
//!   (no OCI-layout tars). Registry pulls download in `agent::image_registry`
//!   and are stored by [`ContainerRuntime::store_pulled`], which shares
//!   the content write, unpack and image record with the import.
//! - Rotated files are `<path>.1` … `<path>.4`; kubelet names them with a
//!   timestamp and gzips old ones, which `kubectl logs` never reads anyway.
//! - Privileged containers get all capabilities and an open device cgroup
//!   but not the host's `/dev`; no seccomp or AppArmor profile is applied.
//! - OOM detection reads the container's cgroup memory events while the task
//!   still exists (v1 `memory.oom_control`, v2 `memory.events`); a task
//!   deleted before [`ContainerRuntime::status`] loses that evidence.

pub mod containerd;
pub mod cri_log;
pub mod exec;
#[cfg(test)]
pub mod fake;
mod host;
pub(crate) mod image;
mod import;
pub mod pause;
pub mod spec;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};

pub use self::containerd::ContainerdRuntime;
#[cfg(test)]
pub use self::fake::{FakeCall, FakeRuntime};

/// The image label containerd's CRI plugin and kubelet's image GC honour:
/// `pinned` images are never garbage collected.
pub const PINNED_LABEL: &str = "io.cri-containerd.pinned";

/// The containerd namespace every call uses (the one CRI clients use).
pub const NAMESPACE: &str = "k8s.io";

/// Label keys stored on every container rk3s creates.
pub mod labels {
    pub const POD_UID: &str = "io.kubernetes.pod.uid";
    pub const POD_NAME: &str = "io.kubernetes.pod.name";
    pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
    pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
    pub const RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
    pub const LOG_PATH: &str = "io.rk3s.log-path";
    pub const CGROUP_PATH: &str = "io.rk3s.cgroup-path";
    pub const STARTED_AT: &str = "io.rk3s.started-at";
    /// `open` (`stdin: true`) or `once` (with `stdinOnce`); absent without stdin.
    pub const STDIN: &str = "io.rk3s.stdin";
    /// `true` when the container runs with a terminal.
    pub const TTY: &str = "io.rk3s.tty";
    /// Marks containers managed by rk3s, so `list` ignores anything else.
    pub const MANAGED: &str = "io.rk3s.managed";

    /// The `list` selector of every instance (restart) of one container of
    /// the pod `namespace/pod`.
    pub fn container_selector(
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> std::collections::BTreeMap<String, String> {
        [
            (POD_NAMESPACE, namespace),
            (POD_NAME, pod),
            (CONTAINER_NAME, container),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

/// A containerd container id (also its snapshot key and task id).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerId(pub String);

impl std::fmt::Display for ContainerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What an image declares about how to run it (its OCI config).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `NAME=value` entries, in image order.
    pub env: Vec<String>,
    pub working_dir: String,
    /// `user`, `uid`, `user:group` or `uid:gid`, as the image says.
    pub user: String,
}

/// An image present (and unpacked) in containerd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// The reference it is stored under, e.g. `docker.io/library/busybox:1.36`.
    pub reference: String,
    /// `sha256:…` of the config blob (the image id `crictl images` shows).
    pub id: String,
    /// `sha256:…` of the manifest the reference points at.
    pub digest: String,
    /// The chain id of the top layer: the parent of container snapshots.
    pub chain_id: String,
    pub config: ImageConfig,
}

/// An image record as containerd stores it, for image garbage collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredImage {
    /// The name it is stored under, e.g. `docker.io/library/busybox:1.36`.
    pub name: String,
    /// `sha256:…` of the manifest or index the name points at.
    pub digest: String,
    /// Bytes of the content it references on this platform (manifest,
    /// config and compressed layers); layers shared with other images are
    /// counted in each.
    pub size: u64,
    pub created_at: Option<DateTime<Utc>>,
    /// containerd's last update of the record (a re-pull or re-import).
    pub updated_at: Option<DateTime<Utc>>,
    /// Labelled `io.cri-containerd.pinned=pinned`: never garbage collected.
    pub pinned: bool,
}

/// A blob written to a local file, with its descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobFile {
    pub path: PathBuf,
    pub digest: String,
    pub size: i64,
    pub media_type: String,
}

/// An image downloaded from a registry, waiting to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledImage {
    /// The index the tag pointed at, when it was multi-platform.
    pub index: Option<BlobFile>,
    /// This platform's manifest.
    pub manifest: BlobFile,
    pub config: BlobFile,
    pub layers: Vec<BlobFile>,
    /// What the reference resolved to (the repo digest Kubernetes shows).
    pub digest: String,
}

/// A bind mount into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
}

/// Everything needed to create one container of a pod.
#[derive(Debug, Clone, Default)]
pub struct ContainerSpec {
    pub pod_uid: String,
    pub pod_name: String,
    pub pod_namespace: String,
    pub container_name: String,
    /// Which restart of this container this is (0 for the first run).
    pub restart_count: u32,
    pub image: String,
    /// Kubernetes `command`: replaces the image ENTRYPOINT when non-empty.
    pub command: Vec<String>,
    /// Kubernetes `args`: replaces the image CMD when non-empty.
    pub args: Vec<String>,
    /// Merged over the image environment (same name: this value wins).
    pub env: Vec<(String, String)>,
    /// Overrides the image working dir when set.
    pub working_dir: Option<String>,
    pub mounts: Vec<Mount>,
    /// The network namespace to join (`/var/run/netns/<x>`,
    /// `/proc/<pid>/ns/net`); `None` shares the host's.
    pub netns_path: Option<PathBuf>,
    pub hostname: String,
    /// Overrides the image user when set.
    pub run_as_user: Option<u32>,
    pub run_as_group: Option<u32>,
    pub privileged: bool,
    /// Capability names with or without `CAP_` (`NET_ADMIN`, `CAP_CHOWN`).
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub read_only_root_fs: bool,
    /// `allowPrivilegeEscalation=false` sets the process's `noNewPrivileges`.
    pub no_new_privileges: bool,
    pub memory_limit_bytes: Option<i64>,
    pub cpu_shares: Option<u64>,
    /// CFS quota in microseconds per `cpu_period_us` (default 100 ms).
    pub cpu_quota_us: Option<i64>,
    pub cpu_period_us: Option<u64>,
    /// Extra labels stored on the container.
    pub labels: BTreeMap<String, String>,
    /// The CRI log file (kubelet layout
    /// `/var/log/pods/<ns>_<pod>_<uid>/<container>/<restart>.log`).
    pub log_path: PathBuf,
    /// `stdin: true`: the process gets an open stdin `kubectl attach -i`
    /// writes to; with `stdin_once`, it closes after the first attach.
    pub stdin: bool,
    pub stdin_once: bool,
    /// `tty: true`: the process runs on a terminal.
    pub tty: bool,
    /// `hostPID: true` / `hostIPC: true`: the container shares the
    /// node's PID / IPC namespace (`kubectl debug node/…`).
    pub host_pid: bool,
    pub host_ipc: bool,
    /// Join this PID / IPC namespace (`/proc/<pid>/ns/pid`) instead of a
    /// new one: an ephemeral container with `targetContainerName` joins
    /// its target's; with `shareProcessNamespace` every container joins
    /// the pod's ([`ContainerRuntime::pod_pid_namespace`]).
    pub pid_ns_path: Option<PathBuf>,
    pub ipc_ns_path: Option<PathBuf>,
}

impl ContainerSpec {
    /// A spec with the identifying fields set and everything else default.
    pub fn new(
        pod_uid: &str,
        pod_name: &str,
        pod_namespace: &str,
        container_name: &str,
        image: &str,
    ) -> Self {
        Self {
            pod_uid: pod_uid.to_string(),
            pod_name: pod_name.to_string(),
            pod_namespace: pod_namespace.to_string(),
            container_name: container_name.to_string(),
            image: image.to_string(),
            hostname: pod_name.to_string(),
            ..Self::default()
        }
    }

    /// The labels that identify the container for re-adoption.
    pub fn identity_labels(&self) -> BTreeMap<String, String> {
        let mut l = self.labels.clone();
        l.insert(labels::POD_UID.into(), self.pod_uid.clone());
        l.insert(labels::POD_NAME.into(), self.pod_name.clone());
        l.insert(labels::POD_NAMESPACE.into(), self.pod_namespace.clone());
        l.insert(labels::CONTAINER_NAME.into(), self.container_name.clone());
        l.insert(labels::RESTART_COUNT.into(), self.restart_count.to_string());
        l.insert(labels::LOG_PATH.into(), self.log_path.display().to_string());
        l.insert(labels::MANAGED.into(), "true".into());
        if self.stdin {
            let mode = if self.stdin_once { "once" } else { "open" };
            l.insert(labels::STDIN.into(), mode.into());
        }
        if self.tty {
            l.insert(labels::TTY.into(), "true".into());
        }
        l
    }
}

/// Why a container stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// The process exited or was killed by a signal other than the OOM killer.
    Completed,
    /// The kernel OOM killer killed a process in the container's cgroup.
    OomKilled,
}

impl ExitReason {
    /// The Kubernetes `terminated.reason` string.
    pub fn as_kubernetes(&self, exit_code: i32) -> &'static str {
        match self {
            Self::OomKilled => "OOMKilled",
            Self::Completed if exit_code == 0 => "Completed",
            Self::Completed => "Error",
        }
    }
}

/// A container's lifecycle state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    /// Created (task may exist) but not started.
    Created,
    Running,
    Exited {
        code: i32,
        finished_at: Option<DateTime<Utc>>,
        reason: ExitReason,
    },
}

/// What [`ContainerRuntime::status`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerStatus {
    pub state: ContainerState,
    /// The init process's host pid while it runs.
    pub pid: Option<u32>,
    pub started_at: Option<DateTime<Utc>>,
}

/// One container found by [`ContainerRuntime::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSummary {
    pub id: ContainerId,
    pub image: String,
    /// Every label on the container (see [`labels`]).
    pub labels: BTreeMap<String, String>,
}

impl ContainerSummary {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }

    /// Which instance of its container this is (0 without a readable label).
    pub fn restart_count(&self) -> u32 {
        self.label(labels::RESTART_COUNT)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

/// A failure of the container runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("failed to connect to containerd at {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: containerd_client::tonic::transport::Error,
    },
    #[error("failed to {op}: {source}")]
    Rpc {
        op: String,
        #[source]
        source: Box<containerd_client::tonic::Status>,
    },
    #[error("failed to {op}: {what} not found")]
    NotFound { op: String, what: String },
    #[error("failed to {op}: {message}")]
    Invalid { op: String, message: String },
    #[error("failed to {op}: {source}")]
    Io {
        op: String,
        #[source]
        source: std::io::Error,
    },
}

impl RuntimeError {
    /// Whether the error means the object does not exist.
    pub fn is_not_found(&self) -> bool {
        match self {
            Self::NotFound { .. } => true,
            Self::Rpc { source, .. } => source.code() == containerd_client::tonic::Code::NotFound,
            _ => false,
        }
    }
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// The container runtime as the node agent sees it.
#[async_trait::async_trait]
pub trait ContainerRuntime: Send + Sync {
    /// The runtime's name and version, e.g. `("containerd", "1.6.20")`.
    async fn version(&self) -> Result<(String, String)>;
    /// Imports an image tar (docker-archive) and unpacks it; returns the
    /// references it stored.
    async fn import_image(&self, tar_path: &Path) -> Result<Vec<String>>;
    /// Writes a pulled image into the content store, unpacks it and
    /// records it under `name`.
    async fn store_pulled(&self, name: &str, image: &PulledImage) -> Result<()>;
    /// The image stored under `reference`, if any.
    async fn image_exists(&self, reference: &str) -> Result<Option<ImageInfo>>;
    /// Creates the container (not started); its image must exist.
    async fn create_container(&self, spec: &ContainerSpec) -> Result<ContainerId>;
    /// Starts a created container.
    async fn start(&self, id: &ContainerId) -> Result<()>;
    /// SIGTERM, then SIGKILL once `grace` has passed; returns once exited.
    /// Stopping a container that is not running is not an error.
    async fn stop(&self, id: &ContainerId, grace: Duration) -> Result<()>;
    async fn status(&self, id: &ContainerId) -> Result<ContainerStatus>;
    /// Waits until the container exits; returns its exit code.
    async fn wait(&self, id: &ContainerId) -> Result<i32>;
    /// Deletes the task, the container and its snapshot. Removing a
    /// container that does not exist is not an error.
    async fn remove(&self, id: &ContainerId) -> Result<()>;
    /// Runs `argv` inside the running container (its process settings,
    /// no stdio) and returns the exit code; killed after `timeout`. Used by
    /// exec probes and preStop hooks.
    async fn exec(&self, id: &ContainerId, argv: &[String], timeout: Duration) -> Result<i32> {
        let _ = (argv, timeout);
        Err(RuntimeError::Invalid {
            op: format!("exec in {id}"),
            message: "this runtime cannot exec".into(),
        })
    }
    /// Containers created by rk3s whose labels include all of `selector`.
    async fn list(&self, selector: &BTreeMap<String, String>) -> Result<Vec<ContainerSummary>>;
    /// The PID namespace the containers of pod `pod_uid` share
    /// (`shareProcessNamespace: true`): `/proc/<pid>/ns/pid` of the pod's
    /// pause process, started when none runs (see [`pause`]).
    async fn pod_pid_namespace(&self, pod_uid: &str) -> Result<PathBuf>;
    /// Stops the pod's pause process, if it has one.
    async fn remove_pod_pid_namespace(&self, pod_uid: &str) -> Result<()>;
    /// Every image record in the namespace, with its content size.
    async fn list_images(&self) -> Result<Vec<StoredImage>> {
        Err(RuntimeError::Invalid {
            op: "list images".into(),
            message: "this runtime cannot list images".into(),
        })
    }
    /// Deletes the image record `name` (synchronously, so containerd's
    /// garbage collector has released its content and snapshots when this
    /// returns). Removing an image that does not exist is not an error.
    async fn remove_image(&self, name: &str) -> Result<()> {
        Err(RuntimeError::Invalid {
            op: format!("remove image {name}"),
            message: "this runtime cannot remove images".into(),
        })
    }
}
