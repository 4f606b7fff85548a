//! `GET /containerLogs/{ns}/{pod}/{container}`: a container's CRI log file
//! (`<log root>/<ns>_<pod>_<uid>/<container>/<restart>.log`) rendered as
//! `kubectl logs` prints it, with kubelet's options: `follow`, `previous`,
//! `tailLines`, `sinceSeconds`, `sinceTime`, `timestamps`, `limitBytes`.
//!
//! `follow` polls the file (every 200 ms) and stops, as kubelet's does,
//! when the container is no longer running (asked of the runtime through
//! [`ContainerLiveness`] whenever the file has been quiet for
//! [`LIVENESS_PERIOD`], after which what the container wrote last is still
//! sent), when it restarts (a newer restart file appears), when its pod's
//! log directory goes, or when the client disconnects.

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// How long a followed file may stay quiet before the runtime is asked
/// whether its container still runs (kubelet asks every few seconds).
pub const LIVENESS_PERIOD: Duration = Duration::from_secs(1);

/// Whether a container still runs: the runtime's answer, for follows.
#[async_trait]
pub trait ContainerLiveness: Send + Sync {
    /// `Some(false)` once the pod's container `container` has no running
    /// instance; `None` when that can't be told (the follow goes on).
    async fn running(&self, namespace: &str, pod: &str, container: &str) -> Option<bool>;
}

/// One followed container's liveness question.
pub struct Liveness {
    source: Arc<dyn ContainerLiveness>,
    namespace: String,
    pod: String,
    container: String,
}

impl Liveness {
    pub fn new(source: Arc<dyn ContainerLiveness>, ns: &str, pod: &str, container: &str) -> Self {
        Liveness {
            source,
            namespace: ns.to_string(),
            pod: pod.to_string(),
            container: container.to_string(),
        }
    }

    async fn stopped(&self) -> bool {
        self.source
            .running(&self.namespace, &self.pod, &self.container)
            .await
            == Some(false)
    }
}

/// `kubectl logs` options, from the query string.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<usize>,
    pub limit_bytes: Option<usize>,
    pub since: Option<DateTime<Utc>>,
}

impl LogOptions {
    pub fn from_query(query: &str) -> Result<LogOptions, String> {
        let mut o = LogOptions::default();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            let flag = || super::query_bool(&v);
            match k.as_ref() {
                "follow" => o.follow = flag(),
                "previous" => o.previous = flag(),
                "timestamps" => o.timestamps = flag(),
                "tailLines" => {
                    o.tail_lines = Some(v.parse().map_err(|_| format!("invalid tailLines: {v}"))?)
                }
                "limitBytes" => {
                    o.limit_bytes = Some(v.parse().map_err(|_| format!("invalid limitBytes: {v}"))?)
                }
                "sinceSeconds" => {
                    let s: i64 = v
                        .parse()
                        .map_err(|_| format!("invalid sinceSeconds: {v}"))?;
                    o.since = Some(Utc::now() - chrono::Duration::seconds(s));
                }
                "sinceTime" => {
                    let t = DateTime::parse_from_rfc3339(&v)
                        .map_err(|_| format!("invalid sinceTime: {v}"))?;
                    o.since = Some(t.with_timezone(&Utc));
                }
                _ => {}
            }
        }
        Ok(o)
    }
}

/// One parsed CRI log line.
#[derive(Debug, PartialEq)]
pub struct Entry<'a> {
    pub time: &'a str,
    pub partial: bool,
    pub text: &'a [u8],
}

/// Parses `<time> <stream> <P|F> <text>` (without the newline).
pub fn parse_line(line: &[u8]) -> Option<Entry<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?;
    let _stream = parts.next()?;
    let tag = parts.next()?;
    let text = parts.next().unwrap_or(b"");
    Some(Entry {
        time,
        partial: tag == b"P",
        text,
    })
}

/// Renders complete lines of a CRI log chunk (ending at a newline) into
/// what `kubectl logs` prints, joining partial lines. `carry` holds a
/// partial line's text across chunks.
pub fn render(chunk: &[u8], opts: &LogOptions, carry: &mut Vec<u8>, out: &mut Vec<Vec<u8>>) {
    for line in chunk.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let Some(e) = parse_line(line) else { continue };
        if let Some(since) = opts.since {
            if DateTime::parse_from_rfc3339(e.time).is_ok_and(|t| t.with_timezone(&Utc) < since) {
                continue;
            }
        }
        if carry.is_empty() && opts.timestamps {
            carry.extend_from_slice(e.time.as_bytes());
            carry.push(b' ');
        }
        carry.extend_from_slice(e.text);
        if !e.partial {
            carry.push(b'\n');
            out.push(std::mem::take(carry));
        }
    }
}

/// Where a container's log files are.
pub fn container_dir(root: &Path, ns: &str, pod: &str, container: &str) -> Option<PathBuf> {
    let prefix = format!("{ns}_{pod}_");
    let newest = std::fs::read_dir(root)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())?;
    Some(newest.path().join(container))
}

/// The restart numbers with a log file, ascending.
pub fn restarts(dir: &Path) -> Vec<u32> {
    let mut v: Vec<u32> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .strip_suffix(".log")?
                        .parse()
                        .ok()
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort_unstable();
    v
}

/// Why logs can't be served.
#[derive(Debug, PartialEq)]
pub enum LogError {
    /// No log directory: the container never started here.
    NotFound(String),
    BadRequest(String),
}

/// The file to read for `opts`.
pub fn select_file(
    root: &Path,
    ns: &str,
    pod: &str,
    container: &str,
    opts: &LogOptions,
) -> Result<(PathBuf, u32), LogError> {
    let dir = container_dir(root, ns, pod, container).ok_or_else(|| {
        LogError::NotFound(format!(
            "container \"{container}\" in pod \"{pod}\" is waiting to start: no logs yet"
        ))
    })?;
    let r = restarts(&dir);
    let n = if opts.previous {
        r.iter().rev().nth(1).copied().ok_or_else(|| {
            LogError::BadRequest(format!(
                "previous terminated container \"{container}\" in pod \"{pod}\" not found"
            ))
        })?
    } else {
        r.last().copied().ok_or_else(|| {
            LogError::NotFound(format!(
                "container \"{container}\" in pod \"{pod}\" is waiting to start: no logs yet"
            ))
        })?
    };
    Ok((dir.join(format!("{n}.log")), n))
}

/// The log as a stream of chunks: everything selected, then (with
/// `follow`) what is appended until the container restarts or the
/// receiver goes.
pub fn stream(
    path: PathBuf,
    restart: u32,
    opts: LogOptions,
    liveness: Option<Liveness>,
) -> tokio::sync::mpsc::Receiver<Bytes> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        let Ok(mut file) = tokio::fs::File::open(&path).await else {
            return;
        };
        let mut all = Vec::new();
        if file.read_to_end(&mut all).await.is_err() {
            return;
        }
        let complete = all.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let mut carry = Vec::new();
        let mut lines = Vec::new();
        render(&all[..complete], &opts, &mut carry, &mut lines);
        if let Some(n) = opts.tail_lines {
            let skip = lines.len().saturating_sub(n);
            lines.drain(..skip);
        }
        let mut budget = opts.limit_bytes.unwrap_or(usize::MAX);
        let send = |mut bytes: Vec<u8>, budget: &mut usize| {
            if bytes.len() > *budget {
                bytes.truncate(*budget);
            }
            *budget -= bytes.len();
            bytes
        };
        let first: Vec<u8> = send(lines.concat(), &mut budget);
        if !first.is_empty() && tx.send(Bytes::from(first)).await.is_err() {
            return;
        }
        if !opts.follow || budget == 0 {
            return;
        }
        let mut offset = complete as u64;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut quiet_since = tokio::time::Instant::now();
        // Set once the container is known to have stopped: one more read
        // takes what it wrote last, then the stream ends.
        let mut last_read = false;
        loop {
            if !last_read {
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
            let mut more = Vec::new();
            if file.seek(std::io::SeekFrom::Start(offset)).await.is_err()
                || file.read_to_end(&mut more).await.is_err()
            {
                return;
            }
            let complete = more.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            if complete > 0 {
                quiet_since = tokio::time::Instant::now();
                offset += complete as u64;
                let mut lines = Vec::new();
                render(&more[..complete], &opts, &mut carry, &mut lines);
                let chunk = send(lines.concat(), &mut budget);
                if !chunk.is_empty() && tx.send(Bytes::from(chunk)).await.is_err() {
                    return;
                }
                if budget == 0 {
                    return;
                }
            } else if !dir.exists() || restarts(&dir).last().is_some_and(|n| *n > restart) {
                return;
            }
            if last_read {
                return;
            }
            if quiet_since.elapsed() >= LIVENESS_PERIOD {
                quiet_since = tokio::time::Instant::now();
                if let Some(l) = &liveness {
                    last_read = l.stopped().await;
                }
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_lines_join_and_timestamps_prefix() {
        let chunk = b"2026-01-01T00:00:00.1Z stdout P hel\n2026-01-01T00:00:00.2Z stdout F lo\n2026-01-01T00:00:01Z stderr F err\n";
        let (mut carry, mut out) = (Vec::new(), Vec::new());
        render(chunk, &LogOptions::default(), &mut carry, &mut out);
        assert_eq!(out, vec![b"hello\n".to_vec(), b"err\n".to_vec()]);
        let mut out = Vec::new();
        render(
            chunk,
            &LogOptions {
                timestamps: true,
                ..Default::default()
            },
            &mut carry,
            &mut out,
        );
        assert_eq!(out[0], b"2026-01-01T00:00:00.1Z hello\n".to_vec());
        let since = DateTime::parse_from_rfc3339("2026-01-01T00:00:00.5Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut out = Vec::new();
        render(
            chunk,
            &LogOptions {
                since: Some(since),
                ..Default::default()
            },
            &mut carry,
            &mut out,
        );
        assert_eq!(out, vec![b"err\n".to_vec()]);
    }

    #[test]
    fn options_parse_from_kubectls_query() {
        let o = LogOptions::from_query(
            "follow=true&tailLines=5&timestamps=true&container=c&limitBytes=10",
        )
        .unwrap();
        assert!(o.follow && o.timestamps && !o.previous);
        assert_eq!((o.tail_lines, o.limit_bytes), (Some(5), Some(10)));
        assert!(LogOptions::from_query("tailLines=x")
            .unwrap_err()
            .contains("tailLines"));
    }

    #[tokio::test]
    async fn current_previous_tail_and_limit() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("default_web_123/app");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("0.log"), "2026-01-01T00:00:00Z stdout F old\n").unwrap();
        std::fs::write(dir.join("1.log"), "2026-01-01T00:00:00Z stdout F a\n2026-01-01T00:00:00Z stdout F b\n2026-01-01T00:00:00Z stdout F c\n").unwrap();
        let read = |opts: LogOptions| {
            let (path, n) = select_file(root.path(), "default", "web", "app", &opts).unwrap();
            async move {
                let mut rx = stream(path, n, opts, None);
                let mut got = Vec::new();
                while let Some(b) = rx.recv().await {
                    got.extend_from_slice(&b);
                }
                String::from_utf8(got).unwrap()
            }
        };
        assert_eq!(read(LogOptions::default()).await, "a\nb\nc\n");
        assert_eq!(
            read(LogOptions {
                previous: true,
                ..Default::default()
            })
            .await,
            "old\n"
        );
        assert_eq!(
            read(LogOptions {
                tail_lines: Some(2),
                ..Default::default()
            })
            .await,
            "b\nc\n"
        );
        assert_eq!(
            read(LogOptions {
                limit_bytes: Some(3),
                ..Default::default()
            })
            .await,
            "a\nb"
        );
        assert_eq!(
            select_file(
                root.path(),
                "default",
                "other",
                "app",
                &LogOptions::default()
            )
            .unwrap_err(),
            LogError::NotFound(
                "container \"app\" in pod \"other\" is waiting to start: no logs yet".into()
            )
        );
    }

    /// A runtime that reports the container stopped once `stopped` is set.
    struct Switch(std::sync::atomic::AtomicBool);

    #[async_trait]
    impl ContainerLiveness for Switch {
        async fn running(&self, ns: &str, pod: &str, container: &str) -> Option<bool> {
            assert_eq!((ns, pod, container), ("default", "web", "app"));
            Some(!self.0.load(std::sync::atomic::Ordering::SeqCst))
        }
    }

    #[tokio::test]
    async fn a_follow_ends_when_the_container_stops_with_its_last_lines() {
        use std::io::Write;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("default_web_123/app");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("0.log");
        std::fs::write(&path, "2026-01-01T00:00:00Z stdout F first\n").unwrap();
        let switch = Arc::new(Switch(std::sync::atomic::AtomicBool::new(false)));
        let opts = LogOptions {
            follow: true,
            ..Default::default()
        };
        let live = Liveness::new(switch.clone(), "default", "web", "app");
        let mut rx = stream(path.clone(), 0, opts, Some(live));
        assert_eq!(&rx.recv().await.unwrap()[..], b"first\n");
        // Still running: the follow waits past a liveness check.
        tokio::time::sleep(LIVENESS_PERIOD * 2).await;
        assert!(rx.try_recv().is_err(), "nothing new, and not ended");
        // The container's last words, then it stops.
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"2026-01-01T00:00:01Z stdout F last\n").unwrap();
        switch.0.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut rest = Vec::new();
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(b) = rx.recv().await {
                rest.extend_from_slice(&b);
            }
        })
        .await;
        assert!(ended.is_ok(), "the follow did not end after the container stopped");
        assert_eq!(String::from_utf8(rest).unwrap(), "last\n");
    }
}
