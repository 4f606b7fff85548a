//! Running a command inside a running container (`kubectl exec`, and exec
//! probes), through containerd's Tasks.Exec with FIFOs for stdio, the way
//! `ctr task exec` does: the process gets the container's own process spec
//! (env, cwd, user, capabilities) with the requested arguments and
//! terminal setting.
//!
//! FIFO handling: the output FIFOs are opened (read, non-blocking) before
//! the exec is created and read only after, when the shim holds their
//! write ends, so EOF means the process closed them. Stdin is opened
//! read-write (a write-only open would fail before the shim opens it), so
//! closing it also needs containerd's CloseIO.

use std::path::{Path, PathBuf};

use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    CloseIoRequest, DeleteProcessRequest, ExecProcessRequest, ResizePtyRequest, StartRequest,
    WaitRequest,
};
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::Request;
use prost_types::Any;
use tokio::net::unix::pipe;

use super::containerd::ContainerdRuntime;
use super::{ContainerId, Result, RuntimeError, NAMESPACE};

const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

/// What to run and which streams to attach.
#[derive(Clone, Debug, Default)]
pub struct ExecOptions {
    pub command: Vec<String>,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    /// Ignored with `tty` (the terminal merges both).
    pub stderr: bool,
}

/// The process's ends of its stdio.
pub struct ExecIo {
    pub stdin: Option<pipe::Sender>,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
}

/// A started exec process.
pub struct ExecProcess {
    tasks: TasksClient<Channel>,
    container_id: String,
    exec_id: String,
    fifo_dir: PathBuf,
}

fn namespaced<T>(msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut().insert(
        "containerd-namespace",
        NAMESPACE.parse().expect("namespace is valid ASCII"),
    );
    req
}

impl ContainerdRuntime {
    /// Starts `opts.command` in container `id`'s task; FIFOs live in a fresh
    /// directory under `fifo_root` until [`ExecProcess::cleanup`].
    pub async fn exec(
        &self,
        id: &ContainerId,
        opts: &ExecOptions,
        fifo_root: &Path,
    ) -> Result<(ExecProcess, ExecIo)> {
        let op = || format!("exec {:?} in container {id}", opts.command);
        let io_err = |source: std::io::Error| RuntimeError::Invalid {
            op: op(),
            message: source.to_string(),
        };
        if opts.command.is_empty() {
            return Err(RuntimeError::Invalid {
                op: op(),
                message: "no command given".into(),
            });
        }
        let container = self.container_for_exec(id).await?;
        let spec: serde_json::Value = container
            .spec
            .as_ref()
            .and_then(|a| serde_json::from_slice(&a.value).ok())
            .ok_or_else(|| RuntimeError::Invalid {
                op: op(),
                message: "the container has no runtime spec".into(),
            })?;
        let mut process = spec
            .get("process")
            .cloned()
            .unwrap_or_else(|| serde_json::json!({}));
        process["args"] = serde_json::json!(opts.command);
        process["terminal"] = serde_json::json!(opts.tty);
        if process.get("cwd").is_none() {
            process["cwd"] = serde_json::json!("/");
        }
        let exec_id = format!("exec-{}", uuid::Uuid::new_v4().simple());
        let fifo_dir = fifo_root.join(&exec_id);
        std::fs::create_dir_all(&fifo_dir).map_err(io_err)?;
        let mut io = ExecIo {
            stdin: None,
            stdout: None,
            stderr: None,
        };
        let mut paths = [String::new(), String::new(), String::new()];
        // containerd 1.6's shim opens stdout and (without a terminal)
        // stderr whatever the caller wants ("opening file \"\" failed"
        // otherwise), as containerd's own cio always makes all three: an
        // output nobody asked for gets a FIFO that is read and dropped.
        let made = [opts.stdin, true, !opts.tty];
        for (i, name) in ["stdin", "stdout", "stderr"].iter().enumerate() {
            if !made[i] {
                continue;
            }
            let path = fifo_dir.join(name);
            self.fs.mkfifo(&path).map_err(io_err)?;
            match i {
                0 => {
                    io.stdin = Some(
                        pipe::OpenOptions::new()
                            .read_write(true)
                            .open_sender(&path)
                            .map_err(io_err)?,
                    )
                }
                1 => {
                    io.stdout = Some(
                        pipe::OpenOptions::new()
                            .open_receiver(&path)
                            .map_err(io_err)?,
                    )
                }
                _ => {
                    io.stderr = Some(
                        pipe::OpenOptions::new()
                            .open_receiver(&path)
                            .map_err(io_err)?,
                    )
                }
            }
            paths[i] = path.display().to_string();
        }
        for (wanted, output) in [
            (opts.stdout, &mut io.stdout),
            (opts.stderr && !opts.tty, &mut io.stderr),
        ] {
            if !wanted {
                if let Some(unwanted) = output.take() {
                    tokio::spawn(discard(unwanted));
                }
            }
        }
        let mut tasks = self.client().tasks();
        let [stdin, stdout, stderr] = paths;
        let req = ExecProcessRequest {
            container_id: id.0.clone(),
            stdin,
            stdout,
            stderr,
            terminal: opts.tty,
            spec: Some(Any {
                type_url: PROCESS_TYPE_URL.into(),
                value: process.to_string().into_bytes(),
            }),
            exec_id: exec_id.clone(),
        };
        let proc = ExecProcess {
            tasks: tasks.clone(),
            container_id: id.0.clone(),
            exec_id: exec_id.clone(),
            fifo_dir,
        };
        if let Err(e) = tasks.exec(namespaced(req)).await {
            proc.cleanup().await;
            return Err(self.rpc_error(op(), e));
        }
        let start = StartRequest {
            container_id: id.0.clone(),
            exec_id,
        };
        if let Err(e) = tasks.start(namespaced(start)).await {
            proc.cleanup().await;
            return Err(self.rpc_error(op(), e));
        }
        Ok((proc, io))
    }

    async fn container_for_exec(
        &self,
        id: &ContainerId,
    ) -> Result<containerd_client::services::v1::Container> {
        let req = containerd_client::services::v1::GetContainerRequest { id: id.0.clone() };
        self.client()
            .containers()
            .get(self.request(req))
            .await
            .map_err(|e| self.rpc_error(format!("get container {id}"), e))?
            .into_inner()
            .container
            .ok_or_else(|| RuntimeError::NotFound {
                op: format!("exec in {id}"),
                what: format!("container {id}"),
            })
    }
}

/// Reads an output nobody asked for until the process closes it, so the
/// process never blocks on a full pipe.
async fn discard(mut from: pipe::Receiver) {
    let mut sink = tokio::io::sink();
    let _ = tokio::io::copy(&mut from, &mut sink).await;
}

impl ExecProcess {
    /// The terminal size (with `tty`).
    pub async fn resize(&self, width: u16, height: u16) {
        let req = ResizePtyRequest {
            container_id: self.container_id.clone(),
            exec_id: self.exec_id.clone(),
            width: width as u32,
            height: height as u32,
        };
        let _ = self.tasks.clone().resize_pty(namespaced(req)).await;
    }

    /// Tells the shim stdin is finished (after dropping the sender).
    pub async fn close_stdin(&self) {
        let req = CloseIoRequest {
            container_id: self.container_id.clone(),
            exec_id: self.exec_id.clone(),
            stdin: true,
        };
        let _ = self.tasks.clone().close_io(namespaced(req)).await;
    }

    /// Waits for the exit code.
    pub async fn wait(&self) -> Result<i32> {
        let req = WaitRequest {
            container_id: self.container_id.clone(),
            exec_id: self.exec_id.clone(),
        };
        match self.tasks.clone().wait(namespaced(req)).await {
            Ok(r) => Ok(r.into_inner().exit_status as i32),
            Err(e) => Err(RuntimeError::Invalid {
                op: format!("wait for exec {}", self.exec_id),
                message: e.message().to_string(),
            }),
        }
    }

    /// Deletes the exec process from containerd and its FIFOs.
    pub async fn cleanup(&self) {
        let req = DeleteProcessRequest {
            container_id: self.container_id.clone(),
            exec_id: self.exec_id.clone(),
        };
        let _ = self.tasks.clone().delete_process(namespaced(req)).await;
        let _ = std::fs::remove_dir_all(&self.fifo_dir);
    }
}

impl ContainerdRuntime {
    /// Resizes the terminal of container `id`'s main process.
    pub async fn resize_terminal(&self, id: &ContainerId, width: u16, height: u16) {
        let req = ResizePtyRequest {
            container_id: id.0.clone(),
            exec_id: String::new(),
            width: width.into(),
            height: height.into(),
        };
        if let Err(e) = self.client().tasks().resize_pty(self.request(req)).await {
            tracing::debug!(%id, "failed to resize the terminal: {e}");
        }
    }

    /// Closes container `id`'s stdin (the shim holds the FIFO's writer
    /// until told, which keeps stdin open across attach sessions).
    pub async fn close_stdin(&self, id: &ContainerId) {
        let req = CloseIoRequest {
            container_id: id.0.clone(),
            exec_id: String::new(),
            stdin: true,
        };
        if let Err(e) = self.client().tasks().close_io(self.request(req)).await {
            tracing::debug!(%id, "failed to close stdin: {e}");
        }
    }
}
