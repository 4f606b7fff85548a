//! A recording [`ContainerRuntime`] for unit tests of the kubelet side: it
//! keeps containers in memory, records every call in order, and lets tests
//! script statuses, wait results and failures.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;

use super::{
    ContainerId, ContainerRuntime, ContainerSpec, ContainerState, ContainerStatus,
    ContainerSummary, ExitReason, ImageInfo, Result, RuntimeError, StoredImage,
};

/// One call the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeCall {
    Version,
    ImportImage(PathBuf),
    ImageExists(String),
    /// `store_pulled` of this name with this resolved digest.
    StorePulled(String, String),
    Create {
        pod_uid: String,
        container_name: String,
        image: String,
    },
    Start(ContainerId),
    Stop(ContainerId, Duration),
    Status(ContainerId),
    Wait(ContainerId),
    Remove(ContainerId),
    List(BTreeMap<String, String>),
    Exec(ContainerId, Vec<String>),
    ListImages,
    RemoveImage(String),
    PodPidNamespace(String),
    RemovePodPidNamespace(String),
}

struct FakeContainer {
    spec: ContainerSpec,
    status: ContainerStatus,
}

#[derive(Default)]
struct State {
    calls: Vec<FakeCall>,
    images: HashMap<String, ImageInfo>,
    /// What `list_images` reports, by name.
    stored: BTreeMap<String, StoredImage>,
    containers: BTreeMap<ContainerId, FakeContainer>,
    scripted: HashMap<ContainerId, VecDeque<ContainerStatus>>,
    fail_next: HashMap<&'static str, String>,
    exec_codes: HashMap<ContainerId, i32>,
    next_id: u64,
}

/// See the module docs.
#[derive(Default)]
pub struct FakeRuntime {
    state: Mutex<State>,
}

impl FakeRuntime {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes `image_exists` find `info` and `create_container` accept it.
    pub fn add_image(&self, info: ImageInfo) {
        self.lock().images.insert(info.reference.clone(), info);
    }

    /// Makes `list_images` report `image` until `remove_image` deletes it.
    pub fn add_stored_image(&self, image: StoredImage) {
        self.lock().stored.insert(image.name.clone(), image);
    }

    /// The names `list_images` would report now.
    pub fn stored_image_names(&self) -> Vec<String> {
        self.lock().stored.keys().cloned().collect()
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<FakeCall> {
        self.lock().calls.clone()
    }

    /// The spec a container was created with.
    pub fn spec_of(&self, id: &ContainerId) -> Option<ContainerSpec> {
        self.lock().containers.get(id).map(|c| c.spec.clone())
    }

    /// Queues statuses `status(id)` returns one by one (the last one sticks)
    /// before falling back to the container's own state.
    pub fn script_status(
        &self,
        id: &ContainerId,
        statuses: impl IntoIterator<Item = ContainerStatus>,
    ) {
        self.lock()
            .scripted
            .entry(id.clone())
            .or_default()
            .extend(statuses);
    }

    /// Makes the container exit with `code` (what `wait` then returns).
    pub fn exit(&self, id: &ContainerId, code: i32, reason: ExitReason) {
        if let Some(c) = self.lock().containers.get_mut(id) {
            c.status.state = ContainerState::Exited {
                code,
                finished_at: Some(Utc::now()),
                reason,
            };
            c.status.pid = None;
        }
    }

    /// Makes `exec` in `id` return `code` (default 0).
    pub fn script_exec(&self, id: &ContainerId, code: i32) {
        self.lock().exec_codes.insert(id.clone(), code);
    }

    /// Makes the next call of `method` (`"create_container"`, `"start"`, …) fail.
    pub fn fail_next(&self, method: &'static str, message: &str) {
        self.lock().fail_next.insert(method, message.to_string());
    }

    fn enter(
        &self,
        method: &'static str,
        call: FakeCall,
    ) -> Result<std::sync::MutexGuard<'_, State>> {
        let mut state = self.lock();
        state.calls.push(call);
        if let Some(message) = state.fail_next.remove(method) {
            return Err(RuntimeError::Invalid {
                op: method.to_string(),
                message,
            });
        }
        Ok(state)
    }
}

fn not_found(op: &str, id: &ContainerId) -> RuntimeError {
    RuntimeError::NotFound {
        op: format!("{op} {id}"),
        what: format!("container {id}"),
    }
}

#[async_trait]
impl ContainerRuntime for FakeRuntime {
    async fn version(&self) -> Result<(String, String)> {
        drop(self.enter("version", FakeCall::Version)?);
        Ok(("fake".into(), "0.0.0".into()))
    }

    async fn import_image(&self, tar_path: &Path) -> Result<Vec<String>> {
        drop(self.enter(
            "import_image",
            FakeCall::ImportImage(tar_path.to_path_buf()),
        )?);
        Ok(Vec::new())
    }

    /// Records the image as present, its id the config digest.
    async fn store_pulled(&self, name: &str, image: &super::PulledImage) -> Result<()> {
        let mut state = self.enter(
            "store_pulled",
            FakeCall::StorePulled(name.to_string(), image.digest.clone()),
        )?;
        let info = ImageInfo {
            reference: name.to_string(),
            id: image.config.digest.clone(),
            digest: image.digest.clone(),
            chain_id: image.config.digest.clone(),
            config: Default::default(),
        };
        state.images.insert(name.to_string(), info);
        Ok(())
    }

    async fn image_exists(&self, reference: &str) -> Result<Option<ImageInfo>> {
        let state = self.enter("image_exists", FakeCall::ImageExists(reference.to_string()))?;
        Ok(state.images.get(reference).cloned())
    }

    async fn create_container(&self, spec: &ContainerSpec) -> Result<ContainerId> {
        let call = FakeCall::Create {
            pod_uid: spec.pod_uid.clone(),
            container_name: spec.container_name.clone(),
            image: spec.image.clone(),
        };
        let mut state = self.enter("create_container", call)?;
        if !state.images.contains_key(&spec.image) {
            return Err(RuntimeError::NotFound {
                op: "create container".into(),
                what: format!("image {}", spec.image),
            });
        }
        state.next_id += 1;
        let id = ContainerId(format!("fake-{}", state.next_id));
        let status = ContainerStatus {
            state: ContainerState::Created,
            pid: None,
            started_at: None,
        };
        state.containers.insert(
            id.clone(),
            FakeContainer {
                spec: spec.clone(),
                status,
            },
        );
        Ok(id)
    }

    async fn start(&self, id: &ContainerId) -> Result<()> {
        let mut state = self.enter("start", FakeCall::Start(id.clone()))?;
        let pid = 1000 + state.next_id as u32;
        let c = state
            .containers
            .get_mut(id)
            .ok_or_else(|| not_found("start", id))?;
        c.status = ContainerStatus {
            state: ContainerState::Running,
            pid: Some(pid),
            started_at: Some(Utc::now()),
        };
        Ok(())
    }

    async fn stop(&self, id: &ContainerId, grace: Duration) -> Result<()> {
        let mut state = self.enter("stop", FakeCall::Stop(id.clone(), grace))?;
        let c = state
            .containers
            .get_mut(id)
            .ok_or_else(|| not_found("stop", id))?;
        if c.status.state == ContainerState::Running {
            // As a process that honours SIGTERM: 128 + 15.
            c.status.state = ContainerState::Exited {
                code: 143,
                finished_at: Some(Utc::now()),
                reason: ExitReason::Completed,
            };
            c.status.pid = None;
        }
        Ok(())
    }

    async fn status(&self, id: &ContainerId) -> Result<ContainerStatus> {
        let mut state = self.enter("status", FakeCall::Status(id.clone()))?;
        if let Some(queue) = state.scripted.get_mut(id) {
            if queue.len() > 1 {
                return Ok(queue.pop_front().expect("non-empty"));
            }
            if let Some(last) = queue.front() {
                return Ok(last.clone());
            }
        }
        state
            .containers
            .get(id)
            .map(|c| c.status.clone())
            .ok_or_else(|| not_found("status", id))
    }

    async fn wait(&self, id: &ContainerId) -> Result<i32> {
        let state = self.enter("wait", FakeCall::Wait(id.clone()))?;
        match state.containers.get(id).map(|c| &c.status.state) {
            Some(ContainerState::Exited { code, .. }) => Ok(*code),
            Some(_) => Err(RuntimeError::Invalid {
                op: format!("wait for {id}"),
                message: "the fake container is still running; call FakeRuntime::exit first".into(),
            }),
            None => Err(not_found("wait for", id)),
        }
    }

    async fn remove(&self, id: &ContainerId) -> Result<()> {
        let mut state = self.enter("remove", FakeCall::Remove(id.clone()))?;
        state.containers.remove(id);
        state.scripted.remove(id);
        Ok(())
    }

    async fn exec(&self, id: &ContainerId, argv: &[String], _timeout: Duration) -> Result<i32> {
        let state = self.enter("exec", FakeCall::Exec(id.clone(), argv.to_vec()))?;
        if !state.containers.contains_key(id) {
            return Err(not_found("exec in", id));
        }
        Ok(state.exec_codes.get(id).copied().unwrap_or(0))
    }

    /// A path that names the pod: `/proc/fake-pause-<uid>/ns/pid`.
    async fn pod_pid_namespace(&self, pod_uid: &str) -> Result<PathBuf> {
        drop(self.enter("pod_pid_namespace", FakeCall::PodPidNamespace(pod_uid.into()))?);
        Ok(PathBuf::from(format!("/proc/fake-pause-{pod_uid}/ns/pid")))
    }

    async fn remove_pod_pid_namespace(&self, pod_uid: &str) -> Result<()> {
        let call = FakeCall::RemovePodPidNamespace(pod_uid.into());
        drop(self.enter("remove_pod_pid_namespace", call)?);
        Ok(())
    }

    async fn list(&self, selector: &BTreeMap<String, String>) -> Result<Vec<ContainerSummary>> {
        let state = self.enter("list", FakeCall::List(selector.clone()))?;
        Ok(state
            .containers
            .iter()
            .map(|(id, c)| ContainerSummary {
                id: id.clone(),
                image: c.spec.image.clone(),
                labels: c.spec.identity_labels(),
            })
            .filter(|s| selector.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
            .collect())
    }

    async fn list_images(&self) -> Result<Vec<StoredImage>> {
        let state = self.enter("list_images", FakeCall::ListImages)?;
        Ok(state.stored.values().cloned().collect())
    }

    async fn remove_image(&self, name: &str) -> Result<()> {
        let mut state = self.enter("remove_image", FakeCall::RemoveImage(name.to_string()))?;
        state.stored.remove(name);
        state.images.remove(name);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> ImageInfo {
        ImageInfo {
            reference: "busybox".into(),
            id: "sha256:c".into(),
            digest: "sha256:m".into(),
            chain_id: "sha256:l".into(),
            config: Default::default(),
        }
    }

    #[tokio::test]
    async fn records_calls_and_tracks_lifecycle() {
        let rt = FakeRuntime::new();
        rt.add_image(image());
        let spec = ContainerSpec::new("u1", "web", "default", "app", "busybox");
        let id = rt.create_container(&spec).await.unwrap();
        rt.start(&id).await.unwrap();
        assert_eq!(rt.status(&id).await.unwrap().state, ContainerState::Running);
        rt.stop(&id, Duration::from_secs(3)).await.unwrap();
        assert_eq!(rt.wait(&id).await.unwrap(), 143);
        let sel = BTreeMap::from([(super::super::labels::POD_UID.to_string(), "u1".to_string())]);
        assert_eq!(rt.list(&sel).await.unwrap().len(), 1);
        rt.remove(&id).await.unwrap();
        assert!(rt.list(&sel).await.unwrap().is_empty());
        assert_eq!(
            rt.calls()[..3].to_vec(),
            vec![
                FakeCall::Create {
                    pod_uid: "u1".into(),
                    container_name: "app".into(),
                    image: "busybox".into()
                },
                FakeCall::Start(id.clone()),
                FakeCall::Status(id.clone()),
            ]
        );
    }

    #[tokio::test]
    async fn scripted_statuses_and_failures() {
        let rt = FakeRuntime::new();
        rt.add_image(image());
        let id = rt
            .create_container(&ContainerSpec::new("u", "p", "n", "c", "busybox"))
            .await
            .unwrap();
        let oom = ContainerStatus {
            state: ContainerState::Exited {
                code: 137,
                finished_at: None,
                reason: ExitReason::OomKilled,
            },
            pid: None,
            started_at: None,
        };
        let running = ContainerStatus {
            state: ContainerState::Running,
            pid: Some(1),
            started_at: None,
        };
        rt.script_status(&id, [running.clone(), oom.clone()]);
        assert_eq!(rt.status(&id).await.unwrap(), running);
        assert_eq!(rt.status(&id).await.unwrap(), oom);
        assert_eq!(rt.status(&id).await.unwrap(), oom);
        rt.fail_next("start", "boom");
        assert!(rt.start(&id).await.is_err());
        assert!(rt.start(&id).await.is_ok());
        let missing = rt
            .create_container(&ContainerSpec::new("u", "p", "n", "c", "nope"))
            .await
            .unwrap_err();
        assert!(missing.is_not_found());
    }
}
