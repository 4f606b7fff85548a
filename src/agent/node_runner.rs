//! Everything one node runs next to the kubelet: the tunnels to the servers
//! (one per API server, `agent::servers`) and the kubelet API served on
//! them (logs, exec, attach, port-forward).
//!
//! [`run`] starts the tunnels with the node's credentials, then runs the
//! kubelet until shutdown; both the standalone agent and the server's
//! built-in agent go through it. Exec and stdio FIFOs go under the node's
//! `--run-dir` ([`super::run_dir`]); a clean stop removes those roots when
//! empty.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use tokio_util::sync::CancellationToken;

use super::kubelet::{self, KubeletOptions};
use super::kubelet_api::exec::{Attached, ContainerdExec, ExecBackend, ExecControl, ExecStreams};
use super::kubelet_api::portforward::NetnsPortForward;
use super::kubelet_api::{self, KubeletApi};
use super::runtime::exec::ExecOptions;
use super::run_dir::RunDir;
use super::runtime::ContainerdRuntime;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("failed to read the node kubeconfig {path}: {reason}")]
    Kubeconfig { path: PathBuf, reason: String },
}

/// The server URL and a TLS configuration (cluster CA, node client
/// certificate) from a kubeconfig written by the join flow.
pub fn tunnel_tls(kubeconfig: &Path) -> Result<(http::Uri, Arc<rustls::ClientConfig>), NodeError> {
    let fail = |reason: String| NodeError::Kubeconfig {
        path: kubeconfig.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(kubeconfig).map_err(|e| fail(e.to_string()))?;
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|e| fail(e.to_string()))?;
    let cluster = &doc["clusters"][0]["cluster"];
    let user = &doc["users"][0]["user"];
    let base = kubeconfig.parent().unwrap_or(Path::new("/"));
    let read =
        |data_key: &str, file_key: &str, of: &serde_yaml::Value| -> Result<Vec<u8>, NodeError> {
            if let Some(d) = of[data_key].as_str() {
                return base64::engine::general_purpose::STANDARD
                    .decode(d.trim())
                    .map_err(|e| fail(format!("{data_key}: {e}")));
            }
            let file = of[file_key]
                .as_str()
                .ok_or_else(|| fail(format!("neither {data_key} nor {file_key} is set")))?;
            std::fs::read(base.join(file)).map_err(|e| fail(format!("{file}: {e}")))
        };
    let server: http::Uri = cluster["server"]
        .as_str()
        .ok_or_else(|| fail("no cluster server".into()))?
        .parse()
        .map_err(|e| fail(format!("server URL: {e}")))?;
    let ca = read(
        "certificate-authority-data",
        "certificate-authority",
        cluster,
    )?;
    let cert = read("client-certificate-data", "client-certificate", user)?;
    let key = read("client-key-data", "client-key", user)?;
    let tls =
        crate::pki::client_tls_config(&ca, Some((&cert, &key))).map_err(|e| fail(e.to_string()))?;
    Ok((server, Arc::new(tls)))
}

/// Exec through containerd, connecting on first use (the kubelet may still
/// be starting containerd when the tunnel comes up).
pub struct LazyContainerdExec {
    socket: PathBuf,
    /// Where the exec and stdio FIFOs go.
    run: RunDir,
    inner: tokio::sync::OnceCell<ContainerdExec>,
}

impl LazyContainerdExec {
    /// For the containerd the kubelet uses: `endpoint`'s, or rk3s's own
    /// (under `run`).
    pub fn new(endpoint: &str, run: RunDir) -> Self {
        LazyContainerdExec {
            socket: kubelet::external_socket(endpoint).unwrap_or_else(|| run.containerd_socket()),
            run,
            inner: tokio::sync::OnceCell::new(),
        }
    }
}

impl LazyContainerdExec {
    async fn backend(&self) -> Result<&ContainerdExec, String> {
        self.inner
            .get_or_try_init(|| async {
                let runtime = ContainerdRuntime::connect(&self.socket, &self.run.stdio_fifos())
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>(ContainerdExec {
                    runtime: Arc::new(runtime),
                    fifo_root: self.run.exec_fifos(),
                })
            })
            .await
    }
}

#[async_trait]
impl ExecBackend for LazyContainerdExec {
    async fn exec(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        opts: ExecOptions,
    ) -> Result<(ExecStreams, Box<dyn ExecControl>), String> {
        let backend = self.backend().await?;
        backend.exec(namespace, pod, container, opts).await
    }

    async fn attach_stdin(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> Result<Attached, String> {
        let backend = self.backend().await?;
        backend.attach_stdin(namespace, pod, container).await
    }
}

#[async_trait]
impl kubelet_api::logs::ContainerLiveness for LazyContainerdExec {
    async fn running(&self, namespace: &str, pod: &str, container: &str) -> Option<bool> {
        use super::runtime::{labels, ContainerRuntime, ContainerState};
        let backend = self.backend().await.ok()?;
        let selector = labels::container_selector(namespace, pod, container);
        let found = backend.runtime.list(&selector).await.ok()?;
        // The newest instance is the one a follow reads.
        let newest = found.iter().max_by_key(|c| c.restart_count());
        let Some(newest) = newest else {
            return Some(false);
        };
        let status = backend.runtime.status(&newest.id).await.ok()?;
        Some(matches!(
            status.state,
            ContainerState::Running | ContainerState::Created
        ))
    }
}

/// The kubelet API as this node serves it on the tunnel.
pub fn kubelet_api(opts: &KubeletOptions) -> KubeletApi {
    let containerd = Arc::new(LazyContainerdExec::new(
        &opts.node.container_runtime_endpoint,
        opts.run_dir(),
    ));
    KubeletApi {
        log_root: opts.log_root.clone(),
        exec: Some(containerd.clone()),
        liveness: Some(containerd),
        port_forward: Some(Arc::new(NetnsPortForward {
            netns_dir: opts.netns_dir.clone(),
        })),
    }
}

/// Runs the tunnel (kubelet API) and the kubelet until `shutdown`.
pub async fn run(
    opts: KubeletOptions,
    shutdown: CancellationToken,
) -> Result<(), super::AgentError> {
    run_with(opts, super::servers::Upstream::default(), shutdown).await
}

/// [`run`] with the tunnels (one per API server) and API connections
/// going where `upstream` says.
pub async fn run_with(
    opts: KubeletOptions,
    upstream: super::servers::Upstream,
    shutdown: CancellationToken,
) -> Result<(), super::AgentError> {
    let routes = kubelet_api::router_with(kubelet_api(&opts))
        .merge(super::metrics::start(&opts, &shutdown));
    let handler = kubelet_api::tunnel_handler(routes);
    let metrics = Some(opts.metrics.clone());
    // Held until the kubelet stops: dropping the pool closes the tunnels.
    let tunnels = super::servers::start(&opts.credentials.kubeconfig, handler, upstream, metrics, &shutdown)
        .map_err(|e| {
            tracing::error!("the tunnel will not start, so logs/exec/port-forward won't reach this node: {e}")
        })
        .ok();
    let run = opts.run_dir();
    let stopped = kubelet::run(opts, shutdown).await;
    // No exec session starts once the tunnels are closed; the FIFO dirs of
    // running containers keep the stdio root (fail static).
    drop(tunnels);
    run.remove_empty_fifo_roots();
    stopped?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnel_tls_reads_embedded_and_file_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let pki = crate::pki::Pki::load_or_create(
            &dir.path().join("tls"),
            &crate::pki::PkiOptions::new("h"),
        )
        .unwrap();
        let admin = pki.admin();
        let embedded = dir.path().join("embedded.yaml");
        crate::pki::Kubeconfig::new("https://10.0.0.1:6443")
            .ca_data(pki.ca_bundle_pem())
            .client_cert_data(admin.cert_pem.as_bytes(), admin.key_pem.as_bytes())
            .write(&embedded, 0o600)
            .unwrap();
        let (server, _) = tunnel_tls(&embedded).unwrap();
        assert_eq!(server.to_string(), "https://10.0.0.1:6443/");
        let files = dir.path().join("files.yaml");
        crate::pki::Kubeconfig::new("https://10.0.0.1:6443")
            .ca_file(dir.path().join("tls/server-ca.crt"))
            .client_cert_files(admin.cert_path(), admin.key_path())
            .write(&files, 0o600)
            .unwrap();
        assert!(tunnel_tls(&files).is_ok());
        let bad = dir.path().join("bad.yaml");
        crate::pki::Kubeconfig::new("https://10.0.0.1:6443")
            .write(&bad, 0o600)
            .unwrap();
        let err = tunnel_tls(&bad).unwrap_err().to_string();
        assert!(
            err.contains("certificate-authority") && err.contains("bad.yaml"),
            "{err}"
        );
    }
}
