//! Liveness, readiness and startup probes: httpGet and tcpSocket from the
//! host to the pod IP (the host reaches every pod through the bridge), with
//! kube's initialDelay/period/timeout/threshold semantics.
//!
//! exec probes run through [`ContainerRuntime::exec`] (exit 0 succeeds).
//!
//! Partial: grpc probes count as succeeding.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::agent::runtime::{ContainerId, ContainerRuntime};

/// The outcome of one probe run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
}

fn port(p: &IntOrString, container: &Container) -> Option<u16> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name))
            .and_then(|cp| u16::try_from(cp.container_port).ok()),
    }
}

/// Runs `probe` once against the pod at `ip` (exec: in container `id`).
pub async fn run(
    probe: &Probe,
    container: &Container,
    ip: IpAddr,
    runtime: &dyn ContainerRuntime,
    id: &ContainerId,
) -> Outcome {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    if let Some(exec) = &probe.exec {
        let argv = exec.command.clone().unwrap_or_default();
        return match runtime.exec(id, &argv, timeout).await {
            Ok(0) => Outcome::Success,
            Ok(_) => Outcome::Failure,
            Err(e) => {
                tracing::debug!(container = %container.name, error = %e, "exec probe failed to run");
                Outcome::Failure
            }
        };
    }
    let result = tokio::time::timeout(timeout, run_inner(probe, container, ip)).await;
    match result {
        Ok(true) => Outcome::Success,
        _ => Outcome::Failure,
    }
}

async fn run_inner(probe: &Probe, container: &Container, ip: IpAddr) -> bool {
    if let Some(t) = &probe.tcp_socket {
        let Some(p) = port(&t.port, container) else {
            return false;
        };
        return tokio::net::TcpStream::connect(SocketAddr::new(ip, p))
            .await
            .is_ok();
    }
    if let Some(h) = &probe.http_get {
        let Some(p) = port(&h.port, container) else {
            return false;
        };
        let path = h.path.clone().unwrap_or_else(|| "/".into());
        let Ok(mut s) = tokio::net::TcpStream::connect(SocketAddr::new(ip, p)).await else {
            return false;
        };
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: {ip}:{p}\r\nUser-Agent: kube-probe/1.32\r\nAccept: */*\r\nConnection: close\r\n");
        for hdr in h.http_headers.iter().flatten() {
            req.push_str(&format!("{}: {}\r\n", hdr.name, hdr.value));
        }
        req.push_str("\r\n");
        if s.write_all(req.as_bytes()).await.is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        let Ok(n) = s.read(&mut buf).await else {
            return false;
        };
        let line = String::from_utf8_lossy(&buf[..n]);
        let code: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        return (200..400).contains(&code);
    }
    if probe.grpc.is_some() {
        tracing::debug!(container = %container.name, "grpc probes are not supported yet; counting as success");
        return true;
    }
    false
}

/// Where one probe of one container stands.
#[derive(Debug, Clone)]
pub struct ProbeState {
    successes: i32,
    failures: i32,
    next_at: Option<Instant>,
    /// The current verdict: `None` until the thresholds decide.
    pub result: Option<bool>,
}

impl ProbeState {
    pub fn new() -> Self {
        Self {
            successes: 0,
            failures: 0,
            next_at: None,
            result: None,
        }
    }

    /// Whether the probe should run now, for a container started at `started`.
    pub fn due(&self, probe: &Probe, started: Instant, now: Instant) -> bool {
        let first =
            started + Duration::from_secs(probe.initial_delay_seconds.unwrap_or(0).max(0) as u64);
        now >= self.next_at.unwrap_or(first)
    }

    /// Records an outcome; returns the verdict.
    pub fn record(&mut self, probe: &Probe, outcome: Outcome, now: Instant) -> Option<bool> {
        self.next_at =
            Some(now + Duration::from_secs(probe.period_seconds.unwrap_or(10).max(1) as u64));
        match outcome {
            Outcome::Success => {
                self.failures = 0;
                self.successes += 1;
                if self.successes >= probe.success_threshold.unwrap_or(1).max(1) {
                    self.result = Some(true);
                }
            }
            Outcome::Failure => {
                self.successes = 0;
                self.failures += 1;
                if self.failures >= probe.failure_threshold.unwrap_or(3).max(1) {
                    self.result = Some(false);
                }
            }
        }
        self.result
    }
}

impl Default for ProbeState {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(v: serde_json::Value) -> Probe {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn thresholds_and_timing() {
        let p = probe(
            serde_json::json!({"tcpSocket": {"port": 80}, "initialDelaySeconds": 5, "periodSeconds": 2, "failureThreshold": 2}),
        );
        let t0 = Instant::now();
        let mut s = ProbeState::new();
        assert!(!s.due(&p, t0, t0 + Duration::from_secs(4)));
        assert!(s.due(&p, t0, t0 + Duration::from_secs(5)));
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(s.record(&p, Outcome::Failure, t1), None);
        assert!(!s.due(&p, t0, t1 + Duration::from_secs(1)));
        assert_eq!(
            s.record(&p, Outcome::Failure, t1 + Duration::from_secs(2)),
            Some(false)
        );
        assert_eq!(
            s.record(&p, Outcome::Success, t1 + Duration::from_secs(4)),
            Some(true)
        );
    }

    #[tokio::test]
    async fn tcp_and_http_probes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                    .await;
            }
        });
        let c: Container = serde_json::from_value(
            serde_json::json!({"name": "c", "ports": [{"name": "web", "containerPort": port}]}),
        )
        .unwrap();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let rt = crate::agent::runtime::FakeRuntime::new();
        let id = ContainerId("none".into());
        let run = |p: Probe| {
            let c = c.clone();
            let rt = &rt;
            let id = &id;
            async move { run(&p, &c, ip, rt, id).await }
        };
        let http = probe(serde_json::json!({"httpGet": {"port": "web", "path": "/"}}));
        assert_eq!(run(http).await, Outcome::Success);
        let tcp = probe(serde_json::json!({"tcpSocket": {"port": port}}));
        assert_eq!(run(tcp).await, Outcome::Success);
        let closed = probe(serde_json::json!({"tcpSocket": {"port": 1}}));
        assert_eq!(run(closed).await, Outcome::Failure);
    }
}
