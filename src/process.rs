//! Process discipline shared by `rk3s server` and `rk3s agent`: logging,
//! signals and systemd readiness.
//!
//! Shutdown invariant: the first SIGTERM or SIGINT cancels one
//! [`CancellationToken`]; everything drains from it. If draining takes longer
//! than the grace period the process exits anyway, and a second signal exits
//! at once. Logs go to stderr through `tracing` (`RUST_LOG` wins; `--debug`
//! means debug level).

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How long a graceful drain may take before the process exits regardless.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Exit code when the grace period runs out or a second signal arrives.
pub const FORCED_EXIT_CODE: i32 = 130;

/// Installs the global `tracing` subscriber (stderr). `RUST_LOG` overrides
/// the level; otherwise `info`, or `debug` with `--debug`. One line per
/// event, ANSI colours only when stderr is a terminal. Safe to call twice.
pub fn init_logging(debug: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if debug { "debug" } else { "info" };
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::new(spec),
        _ => EnvFilter::new(default),
    };
    // Colour only for a person at a terminal: the journal and `| cat` get
    // plain lines (escape codes show there as garbage).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Starts the signal handler on the current runtime: SIGTERM/SIGINT cancel
/// `shutdown`; a second signal or the end of `grace` exits the process.
pub fn spawn_signal_handler(shutdown: CancellationToken, grace: Duration) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            if tx.send(name).is_err() {
                break;
            }
        }
    });
    tokio::spawn(supervise(rx, shutdown, grace, |code| {
        std::process::exit(code)
    }));
    Ok(())
}

/// Something that yields signal names; the seam that lets tests feed fake signals.
pub trait SignalSource: Send {
    fn next(&mut self) -> impl Future<Output = Option<&'static str>> + Send;
}

impl SignalSource for tokio::sync::mpsc::UnboundedReceiver<&'static str> {
    async fn next(&mut self) -> Option<&'static str> {
        self.recv().await
    }
}

/// The shutdown state machine: wait for the first signal, cancel, then exit
/// on the second signal or when the grace period ends, whichever is first.
/// Returns without exiting if the work finishes draining in time.
pub async fn supervise(
    mut signals: impl SignalSource,
    shutdown: CancellationToken,
    grace: Duration,
    exit: impl Fn(i32) + Send,
) {
    let first = tokio::select! {
        s = signals.next() => s,
        // Shutdown for another reason (a fatal error): still bound the drain.
        _ = shutdown.cancelled() => None,
    };
    if let Some(name) = first {
        tracing::info!(
            signal = name,
            grace_secs = grace.as_secs(),
            "shutting down; send the signal again to exit at once"
        );
    }
    shutdown.cancel();
    notify_stopping();
    tokio::select! {
        Some(name) = signals.next() => {
            tracing::warn!(signal = name, "second signal: exiting without waiting for the drain");
            exit(FORCED_EXIT_CODE);
        }
        _ = tokio::time::sleep(grace) => {
            tracing::error!(grace_secs = grace.as_secs(), "graceful shutdown took too long; exiting");
            exit(FORCED_EXIT_CODE);
        }
    }
}

/// Tells systemd (`Type=notify`) that the service is up. Call once, when
/// serving. A no-op outside systemd (no `NOTIFY_SOCKET`).
pub fn notify_ready() {
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %e, "failed to notify systemd that rk3s is ready");
    }
}

/// Tells systemd the service is stopping. A no-op outside systemd.
pub fn notify_stopping() {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    struct Fake(Vec<&'static str>);
    impl SignalSource for Fake {
        async fn next(&mut self) -> Option<&'static str> {
            if self.0.is_empty() {
                std::future::pending().await
            } else {
                Some(self.0.remove(0))
            }
        }
    }

    fn recorder() -> (Arc<Mutex<Vec<i32>>>, impl Fn(i32) + Send) {
        let codes = Arc::new(Mutex::new(Vec::new()));
        let c = codes.clone();
        (codes, move |code| c.lock().unwrap().push(code))
    }

    #[tokio::test]
    async fn first_signal_cancels_and_grace_period_bounds_the_drain() {
        let token = CancellationToken::new();
        let (codes, exit) = recorder();
        let grace = Duration::from_millis(300);
        let task = tokio::spawn(supervise(Fake(vec!["SIGTERM"]), token.clone(), grace, exit));
        token.cancelled().await;
        assert!(
            codes.lock().unwrap().is_empty(),
            "no exit before the grace period"
        );
        task.await.unwrap();
        assert_eq!(*codes.lock().unwrap(), vec![FORCED_EXIT_CODE]);
    }

    #[tokio::test]
    async fn second_signal_exits_at_once() {
        let token = CancellationToken::new();
        let (codes, exit) = recorder();
        let start = tokio::time::Instant::now();
        supervise(
            Fake(vec!["SIGINT", "SIGINT"]),
            token.clone(),
            SHUTDOWN_GRACE,
            exit,
        )
        .await;
        assert!(token.is_cancelled());
        assert_eq!(*codes.lock().unwrap(), vec![FORCED_EXIT_CODE]);
        assert!(start.elapsed() < SHUTDOWN_GRACE);
    }

    #[test]
    fn notify_is_safe_outside_systemd() {
        notify_ready();
        notify_stopping();
    }
}
