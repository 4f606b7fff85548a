//! [`ContainerRuntime`] over containerd's native gRPC API.
//!
//! Create: image lookup (manifest, config, chain id), runtime spec,
//! Snapshots.Prepare(key = container id, parent = chain id), Containers.Create
//! with the spec in an `Any` and the identity labels. Start: Tasks.Create
//! with the snapshot's mounts and binary-logger stdio, Tasks.Start. The
//! task is created at start (as CRI does), so a container without a task is
//! `Created`. Remove undoes all three (task, container, snapshot).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::snapshots::{
    MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateRequest as LeaseCreateRequest, CreateTaskRequest,
    DeleteContainerRequest, DeleteProcessRequest, DeleteRequest as LeaseDeleteRequest,
    DeleteTaskRequest, ExecProcessRequest, GetContainerRequest, GetRequest, KillRequest,
    ListContainersRequest, StartRequest, UpdateContainerRequest, WaitRequest,
};
use containerd_client::tonic::{Code, Request, Status};
use containerd_client::types::v1::Status as ProcessStatus;
use containerd_client::Client;
use prost_types::{Any, FieldMask};

use super::host::{oom_kills, read_image_file, remove_pod_cgroup_if_empty};
use super::{
    cri_log, labels, spec, ContainerId, ContainerRuntime, ContainerSpec, ContainerState,
    ContainerStatus, ContainerSummary, ExitReason, ImageInfo, Result, RuntimeError, NAMESPACE,
};

const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
const RUNC_RUNTIME: &str = "io.containerd.runc.v2";
pub(super) const SNAPSHOTTER: &str = "overlayfs";
const SIGTERM: u32 = 15;
const SIGKILL: u32 = 9;
/// How long to wait for the exit after SIGKILL before giving up.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// How long a lease outlives an agent that died holding it.
const LEASE_EXPIRY: chrono::Duration = chrono::Duration::minutes(10);

/// A containerd client bound to the `k8s.io` namespace.
pub struct ContainerdRuntime {
    client: Client,
    log_binary: PathBuf,
    /// The parent of each container's stdio FIFO dir (`RunDir::stdio_fifos`).
    stdio_root: PathBuf,
    /// FIFOs for exec and the logger go through the file-system seam.
    pub(super) fs: std::sync::Arc<dyn crate::hostos::FsOps>,
}

impl ContainerdRuntime {
    /// Connects to containerd's socket; containers' stdio FIFOs go under
    /// `stdio_root`. The logger binary defaults to the running executable
    /// (rk3s itself, see [`cri_log`]).
    pub async fn connect(socket: &Path, stdio_root: &Path) -> Result<Self> {
        let client = Client::from_path(socket)
            .await
            .map_err(|source| RuntimeError::Connect {
                path: socket.to_path_buf(),
                source,
            })?;
        let log_binary =
            std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/usr/local/bin/rk3s"));
        Ok(Self {
            client,
            log_binary,
            stdio_root: stdio_root.to_path_buf(),
            fs: std::sync::Arc::new(crate::hostos::LinuxFsOps),
        })
    }

    /// Uses `binary` as the log shim containerd spawns for each task.
    pub fn with_log_binary(mut self, binary: &Path) -> Self {
        self.log_binary = binary.to_path_buf();
        self
    }

    pub(super) fn client(&self) -> &Client {
        &self.client
    }

    pub(super) fn request<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        req.metadata_mut().insert(
            "containerd-namespace",
            NAMESPACE.parse().expect("namespace is valid ASCII"),
        );
        req
    }

    /// Like [`Self::request`], inside lease `lease`: what the lease holds is
    /// safe from containerd's garbage collector until the lease ends.
    pub(super) fn leased<T>(&self, msg: T, lease: &str) -> Request<T> {
        let mut req = self.request(msg);
        if let Ok(value) = lease.parse() {
            req.metadata_mut().insert("containerd-lease", value);
        }
        req
    }

    /// Starts a lease that expires by itself after [`LEASE_EXPIRY`], in case
    /// the agent dies before ending it.
    pub(super) async fn begin_lease(&self, purpose: &str) -> Result<String> {
        let id = format!("rk3s-{purpose}-{}", uuid::Uuid::new_v4().simple());
        let expire = (Utc::now() + LEASE_EXPIRY).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let req = LeaseCreateRequest {
            id: id.clone(),
            labels: HashMap::from([("containerd.io/gc.expire".to_string(), expire)]),
        };
        self.client
            .leases()
            .create(self.request(req))
            .await
            .map_err(|e| self.rpc_error(format!("create lease {id}"), e))?;
        Ok(id)
    }

    /// Ends a lease; what it held is now collectable unless referenced.
    pub(super) async fn end_lease(&self, id: &str) {
        let req = LeaseDeleteRequest {
            id: id.to_string(),
            sync: false,
        };
        if let Err(e) = self.client.leases().delete(self.request(req)).await {
            tracing::warn!(lease = id, error = %e, "failed to delete lease; it expires by itself");
        }
    }

    pub(super) fn rpc_error(&self, op: String, status: Status) -> RuntimeError {
        RuntimeError::Rpc {
            op,
            source: Box::new(status),
        }
    }

    async fn get_container(&self, id: &ContainerId) -> Result<Container> {
        let req = GetContainerRequest { id: id.0.clone() };
        match self.client.containers().get(self.request(req)).await {
            Ok(resp) => resp
                .into_inner()
                .container
                .ok_or_else(|| RuntimeError::NotFound {
                    op: format!("get container {id}"),
                    what: format!("container {id}"),
                }),
            Err(e) => Err(self.rpc_error(format!("get container {id}"), e)),
        }
    }

    /// The task's process, or `None` when the container has no task.
    async fn task(
        &self,
        id: &ContainerId,
    ) -> Result<Option<containerd_client::types::v1::Process>> {
        let req = GetRequest {
            container_id: id.0.clone(),
            exec_id: String::new(),
        };
        match self.client.tasks().get(self.request(req)).await {
            Ok(resp) => Ok(resp.into_inner().process),
            Err(e) if e.code() == Code::NotFound => Ok(None),
            Err(e) => Err(self.rpc_error(format!("get task {id}"), e)),
        }
    }

    async fn kill(&self, id: &ContainerId, signal: u32) -> Result<()> {
        let req = KillRequest {
            container_id: id.0.clone(),
            exec_id: String::new(),
            signal,
            all: false,
        };
        match self.client.tasks().kill(self.request(req)).await {
            Ok(_) => Ok(()),
            // Already gone or already exited: nothing left to signal.
            Err(e) if matches!(e.code(), Code::NotFound | Code::FailedPrecondition) => Ok(()),
            Err(e) => Err(self.rpc_error(format!("kill task {id} with signal {signal}"), e)),
        }
    }

    async fn cleanup_failed_create(&self, id: &str) {
        let _ = self
            .client
            .containers()
            .delete(self.request(DeleteContainerRequest { id: id.to_string() }))
            .await;
        let req = RemoveSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: id.to_string(),
        };
        let _ = self.client.snapshots().remove(self.request(req)).await;
    }

    async fn create_inner(
        &self,
        spec: &ContainerSpec,
        image: &ImageInfo,
        id: &str,
        lease: &str,
    ) -> Result<()> {
        let invalid = |message: String| RuntimeError::Invalid {
            op: format!(
                "create container {} of pod {}/{}",
                spec.container_name, spec.pod_namespace, spec.pod_name
            ),
            message,
        };
        let prepare = PrepareSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: id.to_string(),
            parent: image.chain_id.clone(),
            labels: HashMap::new(),
        };
        let mounts = self
            .client
            .snapshots()
            .prepare(self.leased(prepare, lease))
            .await
            .map_err(|e| {
                self.rpc_error(format!("prepare snapshot {id} from {}", image.chain_id), e)
            })?
            .into_inner()
            .mounts;
        let mut config = image.config.clone();
        if !spec::is_numeric_user(&config.user) {
            let passwd = read_image_file(&mounts, "etc/passwd");
            let group = read_image_file(&mounts, "etc/group");
            config.user = spec::numeric_user(&config.user, &passwd, &group)
                .map_err(|e| invalid(e.to_string()))?;
        }
        let oci = spec::runtime_spec(spec, &config, id).map_err(|e| invalid(e.to_string()))?;

        let mut container_labels: HashMap<String, String> =
            spec.identity_labels().into_iter().collect();
        container_labels.insert(
            labels::CGROUP_PATH.into(),
            spec::cgroup_path(&spec.pod_uid, id),
        );
        let container = Container {
            id: id.to_string(),
            labels: container_labels,
            image: image.reference.clone(),
            runtime: Some(Runtime {
                name: RUNC_RUNTIME.into(),
                options: None,
            }),
            spec: Some(Any {
                type_url: SPEC_TYPE_URL.into(),
                value: serde_json::to_vec(&oci).expect("spec serializes"),
            }),
            snapshotter: SNAPSHOTTER.into(),
            snapshot_key: id.to_string(),
            ..Default::default()
        };
        self.client
            .containers()
            .create(self.leased(
                CreateContainerRequest {
                    container: Some(container),
                },
                lease,
            ))
            .await
            .map_err(|e| self.rpc_error(format!("create container {id}"), e))?;
        Ok(())
    }
}

pub(super) fn to_chrono(ts: Option<prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    let ts = ts?;
    // containerd reports the zero time for "never".
    if ts.seconds <= 0 {
        return None;
    }
    DateTime::from_timestamp(ts.seconds, ts.nanos.max(0) as u32)
}

/// Quotes a value for a containerd filter expression.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[async_trait]
impl ContainerRuntime for ContainerdRuntime {
    async fn version(&self) -> Result<(String, String)> {
        let resp = self
            .client
            .version()
            .version(self.request(()))
            .await
            .map_err(|e| self.rpc_error("get the containerd version".into(), e))?;
        Ok(("containerd".into(), resp.into_inner().version))
    }

    async fn import_image(&self, tar_path: &Path) -> Result<Vec<String>> {
        self.import_docker_archive(tar_path).await
    }

    async fn store_pulled(&self, name: &str, image: &super::PulledImage) -> Result<()> {
        self.store_pulled_image(name, image).await
    }

    async fn image_exists(&self, reference: &str) -> Result<Option<ImageInfo>> {
        let Some(info) = self.lookup_image(reference).await? else {
            return Ok(None);
        };
        // Present but not unpacked for our snapshotter counts as absent: a
        // container could not be created from it.
        let stat = StatSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: info.chain_id.clone(),
        };
        match self.client.snapshots().stat(self.request(stat)).await {
            Ok(_) => Ok(Some(info)),
            Err(e) if e.code() == Code::NotFound => Ok(None),
            Err(e) => Err(self.rpc_error(format!("stat snapshot {}", info.chain_id), e)),
        }
    }

    async fn create_container(&self, spec: &ContainerSpec) -> Result<ContainerId> {
        let image =
            self.image_exists(&spec.image)
                .await?
                .ok_or_else(|| RuntimeError::NotFound {
                    op: format!(
                        "create container {} of pod {}/{}",
                        spec.container_name, spec.pod_namespace, spec.pod_name
                    ),
                    what: format!("unpacked image {}", spec.image),
                })?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        // Between Prepare and Containers.Create nothing references the
        // snapshot: the lease keeps the garbage collector off it.
        let lease = self.begin_lease("create").await?;
        let created = self.create_inner(spec, &image, &id, &lease).await;
        if created.is_err() {
            self.cleanup_failed_create(&id).await;
        }
        self.end_lease(&lease).await;
        created.map(|()| ContainerId(id))
    }

    async fn start(&self, id: &ContainerId) -> Result<()> {
        let container = self.get_container(id).await?;
        let log_path = container
            .labels
            .get(labels::LOG_PATH)
            .cloned()
            .unwrap_or_default();
        let mounts = self
            .client
            .snapshots()
            .mounts(self.request(MountsRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: id.0.clone(),
            }))
            .await
            .map_err(|e| self.rpc_error(format!("get the mounts of snapshot {id}"), e))?
            .into_inner()
            .mounts;
        let tty = container
            .labels
            .get(labels::TTY)
            .is_some_and(|t| t == "true");
        let stdin_mode = container.labels.get(labels::STDIN).cloned();
        let (stdin, stdout, stderr) = if stdin_mode.is_some() || tty {
            // containerd 1.6's binary logging gives no stdin: FIFOs, with
            // a logger of our own (see `cri_log`).
            self.start_fifo_logger(id, &log_path, stdin_mode.as_deref(), tty)?
        } else if log_path.is_empty() {
            (String::new(), String::new(), String::new())
        } else {
            let uri = cri_log::shim_uri(&self.log_binary, Path::new(&log_path));
            (String::new(), uri.clone(), uri)
        };
        let create = CreateTaskRequest {
            container_id: id.0.clone(),
            rootfs: mounts,
            stdin,
            stdout,
            stderr,
            terminal: tty,
            ..Default::default()
        };
        self.client
            .tasks()
            .create(self.request(create))
            .await
            .map_err(|e| self.rpc_error(format!("create task {id}"), e))?;
        let req = StartRequest {
            container_id: id.0.clone(),
            exec_id: String::new(),
        };
        self.client
            .tasks()
            .start(self.request(req))
            .await
            .map_err(|e| self.rpc_error(format!("start task {id}"), e))?;
        // Recorded on the container so a restarted agent still knows it.
        let started = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let mut labels_update = HashMap::new();
        labels_update.insert(labels::STARTED_AT.to_string(), started);
        let update = UpdateContainerRequest {
            container: Some(Container {
                id: id.0.clone(),
                labels: labels_update,
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec![format!("labels.{}", labels::STARTED_AT)],
            }),
        };
        self.client
            .containers()
            .update(self.request(update))
            .await
            .map_err(|e| self.rpc_error(format!("record the start time of {id}"), e))?;
        Ok(())
    }

    async fn stop(&self, id: &ContainerId, grace: Duration) -> Result<()> {
        match self.task(id).await? {
            Some(p) if p.status() == ProcessStatus::Stopped => return Ok(()),
            None => return Ok(()),
            Some(_) => {}
        }
        if !grace.is_zero() {
            self.kill(id, SIGTERM).await?;
            if tokio::time::timeout(grace, self.wait(id)).await.is_ok() {
                return Ok(());
            }
        }
        self.kill(id, SIGKILL).await?;
        match tokio::time::timeout(KILL_WAIT, self.wait(id)).await {
            Ok(result) => result.map(|_| ()),
            Err(_) => Err(RuntimeError::Invalid {
                op: format!("stop container {id}"),
                message: format!("still running {KILL_WAIT:?} after SIGKILL"),
            }),
        }
    }

    async fn status(&self, id: &ContainerId) -> Result<ContainerStatus> {
        let container = self.get_container(id).await?;
        let started_at = container
            .labels
            .get(labels::STARTED_AT)
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc));
        let Some(process) = self.task(id).await? else {
            return Ok(ContainerStatus {
                state: ContainerState::Created,
                pid: None,
                started_at,
            });
        };
        let state = match process.status() {
            ProcessStatus::Created | ProcessStatus::Unknown => ContainerState::Created,
            ProcessStatus::Running | ProcessStatus::Paused | ProcessStatus::Pausing => {
                ContainerState::Running
            }
            ProcessStatus::Stopped => {
                let code = process.exit_status as i32;
                let oom = container
                    .labels
                    .get(labels::CGROUP_PATH)
                    .and_then(|p| oom_kills(p))
                    .unwrap_or(0)
                    > 0;
                ContainerState::Exited {
                    code,
                    finished_at: to_chrono(process.exited_at),
                    reason: if oom {
                        ExitReason::OomKilled
                    } else {
                        ExitReason::Completed
                    },
                }
            }
        };
        let pid = matches!(state, ContainerState::Running).then_some(process.pid);
        Ok(ContainerStatus {
            state,
            pid,
            started_at,
        })
    }

    async fn exec(&self, id: &ContainerId, argv: &[String], timeout: Duration) -> Result<i32> {
        let container = self.get_container(id).await?;
        let invalid = |message: String| RuntimeError::Invalid {
            op: format!("exec in {id}"),
            message,
        };
        let spec = container
            .spec
            .ok_or_else(|| invalid("the container has no spec".into()))?;
        let mut spec: serde_json::Value =
            serde_json::from_slice(&spec.value).map_err(|e| invalid(e.to_string()))?;
        let mut process = spec["process"].take();
        process["args"] = serde_json::json!(argv);
        process["terminal"] = serde_json::json!(false);
        let exec_id = format!(
            "rk3s-exec-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let req = ExecProcessRequest {
            container_id: id.0.clone(),
            exec_id: exec_id.clone(),
            spec: Some(Any {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
                value: serde_json::to_vec(&process).map_err(|e| invalid(e.to_string()))?,
            }),
            ..Default::default()
        };
        self.client
            .tasks()
            .exec(self.request(req))
            .await
            .map_err(|e| self.rpc_error(format!("exec in {id}"), e))?;
        let run = async {
            let start = StartRequest {
                container_id: id.0.clone(),
                exec_id: exec_id.clone(),
            };
            self.client
                .tasks()
                .start(self.request(start))
                .await
                .map_err(|e| self.rpc_error(format!("start exec in {id}"), e))?;
            let wait = WaitRequest {
                container_id: id.0.clone(),
                exec_id: exec_id.clone(),
            };
            let resp = self
                .client
                .tasks()
                .wait(self.request(wait))
                .await
                .map_err(|e| self.rpc_error(format!("wait for exec in {id}"), e))?;
            Ok::<i32, RuntimeError>(resp.into_inner().exit_status as i32)
        };
        let result = match tokio::time::timeout(timeout, run).await {
            Ok(r) => r,
            Err(_) => {
                let kill = KillRequest {
                    container_id: id.0.clone(),
                    exec_id: exec_id.clone(),
                    signal: SIGKILL,
                    all: false,
                };
                let _ = self.client.tasks().kill(self.request(kill)).await;
                Err(invalid(format!("timed out after {timeout:?}")))
            }
        };
        let delete = DeleteProcessRequest {
            container_id: id.0.clone(),
            exec_id,
        };
        let _ = self
            .client
            .tasks()
            .delete_process(self.request(delete))
            .await;
        result
    }

    async fn wait(&self, id: &ContainerId) -> Result<i32> {
        let req = WaitRequest {
            container_id: id.0.clone(),
            exec_id: String::new(),
        };
        let resp = self
            .client
            .tasks()
            .wait(self.request(req))
            .await
            .map_err(|e| self.rpc_error(format!("wait for task {id}"), e))?;
        Ok(resp.into_inner().exit_status as i32)
    }

    async fn remove(&self, id: &ContainerId) -> Result<()> {
        if let Some(p) = self.task(id).await? {
            if p.status() != ProcessStatus::Stopped && p.status() != ProcessStatus::Created {
                self.stop(id, Duration::ZERO).await?;
            }
            let req = DeleteTaskRequest {
                container_id: id.0.clone(),
            };
            match self.client.tasks().delete(self.request(req)).await {
                Ok(_) => {}
                Err(e) if e.code() == Code::NotFound => {}
                Err(e) => return Err(self.rpc_error(format!("delete task {id}"), e)),
            }
        }
        let cgroup = match self.get_container(id).await {
            Ok(c) => c.labels.get(labels::CGROUP_PATH).cloned(),
            Err(_) => None,
        };
        match self
            .client
            .containers()
            .delete(self.request(DeleteContainerRequest { id: id.0.clone() }))
            .await
        {
            Ok(_) => {}
            Err(e) if e.code() == Code::NotFound => {}
            Err(e) => return Err(self.rpc_error(format!("delete container {id}"), e)),
        }
        if let Some(path) = cgroup {
            remove_pod_cgroup_if_empty(&path);
        }
        let _ = std::fs::remove_dir_all(self.stdio_dir(id));
        let req = RemoveSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: id.0.clone(),
        };
        match self.client.snapshots().remove(self.request(req)).await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Code::NotFound => Ok(()),
            Err(e) => Err(self.rpc_error(format!("remove snapshot {id}"), e)),
        }
    }

    async fn pod_pid_namespace(&self, pod_uid: &str) -> Result<PathBuf> {
        super::pause::ensure_pause(&self.log_binary, pod_uid).await
    }

    async fn remove_pod_pid_namespace(&self, pod_uid: &str) -> Result<()> {
        super::pause::stop_pause(pod_uid);
        Ok(())
    }

    async fn list(&self, selector: &BTreeMap<String, String>) -> Result<Vec<ContainerSummary>> {
        let mut filter = vec![format!(
            "labels.{}=={}",
            quote(labels::MANAGED),
            quote("true")
        )];
        filter.extend(
            selector
                .iter()
                .map(|(k, v)| format!("labels.{}=={}", quote(k), quote(v))),
        );
        let req = ListContainersRequest {
            filters: vec![filter.join(",")],
        };
        let resp = self
            .client
            .containers()
            .list(self.request(req))
            .await
            .map_err(|e| self.rpc_error("list containers".into(), e))?;
        let mut found: Vec<ContainerSummary> = resp
            .into_inner()
            .containers
            .into_iter()
            .map(|c| ContainerSummary {
                id: ContainerId(c.id),
                image: c.image,
                labels: c.labels.into_iter().collect(),
            })
            .collect();
        found.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(found)
    }

    async fn list_images(&self) -> Result<Vec<super::StoredImage>> {
        self.list_stored_images().await
    }

    async fn remove_image(&self, name: &str) -> Result<()> {
        self.delete_image(name).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_values_are_quoted() {
        assert_eq!(quote("io.kubernetes.pod.uid"), "\"io.kubernetes.pod.uid\"");
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
    }

    #[test]
    fn zero_timestamp_is_none() {
        assert_eq!(
            to_chrono(Some(prost_types::Timestamp {
                seconds: 0,
                nanos: 0
            })),
            None
        );
        assert!(to_chrono(Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 5
        }))
        .is_some());
    }
}

fn make_fifo(fs: &dyn crate::hostos::FsOps, path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match fs.mkfifo(path) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

impl ContainerdRuntime {
    /// Container `id`'s stdio FIFOs: under the run dir (tmpfs), so they outlive
    /// an agent restart (which derives the same path) but not a reboot.
    fn stdio_dir(&self, id: &ContainerId) -> PathBuf {
        self.stdio_root.join(&id.0)
    }

    /// The stdin FIFO of container `id` (for containers with `stdin: true`).
    pub fn stdin_fifo(&self, id: &ContainerId) -> PathBuf {
        self.stdio_dir(id).join("stdin")
    }

    /// Makes the FIFOs of a task with stdin or a terminal and starts its
    /// logger (in its own session, outliving the agent); returns the
    /// stdin, stdout and stderr paths for containerd.
    fn start_fifo_logger(
        &self,
        id: &ContainerId,
        log_path: &str,
        stdin_mode: Option<&str>,
        tty: bool,
    ) -> Result<(String, String, String)> {
        let failed = |message: String| RuntimeError::Invalid {
            op: format!("start {id}"),
            message,
        };
        let dir = self.stdio_dir(id);
        let out = dir.join("stdout");
        let err = (!tty).then(|| dir.join("stderr"));
        let stdin = stdin_mode.map(|_| dir.join("stdin"));
        for fifo in [Some(&out), err.as_ref(), stdin.as_ref()]
            .into_iter()
            .flatten()
        {
            make_fifo(self.fs.as_ref(), fifo)
                .map_err(|e| failed(format!("failed to make the FIFO {}: {e}", fifo.display())))?;
        }
        let log = if log_path.is_empty() {
            "/dev/null"
        } else {
            log_path
        };
        let args = cri_log::fifo_logger_args(Path::new(log), &out, err.as_deref());
        let mut child = std::process::Command::new(&self.log_binary)
            .args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| {
                failed(format!(
                    "failed to start the logger {}: {e}",
                    self.log_binary.display()
                ))
            })?;
        // Reaped here while the agent lives; init reaps it after.
        std::thread::spawn(move || child.wait());
        let path = |p: Option<&PathBuf>| p.map(|p| p.display().to_string()).unwrap_or_default();
        Ok((path(stdin.as_ref()), path(Some(&out)), path(err.as_ref())))
    }
}
