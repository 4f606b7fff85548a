//! Container logs in the CRI format kubelet and `kubectl logs` read:
//! `<RFC3339Nano timestamp> <stdout|stderr> <F|P> <text>` per line, where
//! `P` marks a partial line cut at [`MAX_LINE`] bytes and `F` the end of
//! one. Files rotate by size as kubelet does: `<path>` is the live file,
//! `<path>.1` … `<path>.<max_files-1>` the older ones.
//!
//! The writer runs as a containerd *binary logger*: the task's stdio is the
//! URI from [`shim_uri`], so containerd's shim spawns `<binary>
//! _RK3S_LOG_SHIM <log path>` with the container's stdout on fd 3, stderr on
//! fd 4 and a readiness pipe on fd 5. The logger is a child of the shim, not
//! of the agent, so logs keep flowing while the agent is down (fail static).
//!
//! containerd 1.6's binary logging gives the process no stdin, so a
//! container with `stdin: true` or `tty: true` uses FIFOs instead: the
//! agent makes them, starts the logger itself in its own session (so it
//! outlives the agent, as conmon does for CRI-O) with
//! [`fifo_logger_args`], and hands containerd the FIFO paths. The shim
//! itself holds a writer on the stdin FIFO until told to close it
//! (`Tasks.CloseIO`), so stdin stays open across attach sessions and agent
//! restarts; for `stdinOnce` the agent closes it after the first session.
//! The binary's `main` must hand such an invocation to [`run_log_shim`]
//! before parsing its normal command line (see [`is_log_shim_invocation`]).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::FromRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, SecondsFormat, Utc};

/// The argument naming the log file (containerd passes the URI's query
/// pairs as arguments, in no fixed order).
pub const LOG_SHIM_ARG: &str = "_RK3S_LOG_SHIM";
/// FIFO mode: the arguments naming the output FIFOs (no stderr with a TTY).
pub const STDOUT_ARG: &str = "_RK3S_STDOUT";
pub const STDERR_ARG: &str = "_RK3S_STDERR";
/// How long a FIFO-mode logger waits for the task to open its outputs.
const FIFO_OPEN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);
/// Longest line written as one entry (kubelet's limit); longer ones split.
pub const MAX_LINE: usize = 16 * 1024;
/// Rotate the live file once it reaches this size (kubelet's default).
pub const DEFAULT_MAX_SIZE: u64 = 10 * 1024 * 1024;
/// Files kept including the live one (kubelet's default).
pub const DEFAULT_MAX_FILES: usize = 5;

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// One CRI log line (with its trailing newline) for `text` (no newline).
pub fn format_line(at: DateTime<Utc>, stream: Stream, partial: bool, text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 48);
    out.extend_from_slice(at.to_rfc3339_opts(SecondsFormat::Nanos, true).as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.as_str().as_bytes());
    out.extend_from_slice(if partial { b" P " } else { b" F " });
    out.extend_from_slice(text);
    out.push(b'\n');
    out
}

/// The stdio URI for a task whose logs go to `log_path`, with `binary`
/// (normally the rk3s executable) as the logger.
pub fn shim_uri(binary: &Path, log_path: &Path) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    const KEEP: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.');
    format!(
        "binary://{}?{LOG_SHIM_ARG}={}",
        utf8_percent_encode(&binary.to_string_lossy(), KEEP),
        utf8_percent_encode(&log_path.to_string_lossy(), KEEP),
    )
}

/// The arguments of a FIFO-mode logger the agent starts itself.
pub fn fifo_logger_args(log_path: &Path, stdout: &Path, stderr: Option<&Path>) -> Vec<String> {
    let mut args = vec![
        LOG_SHIM_ARG.to_string(),
        log_path.display().to_string(),
        STDOUT_ARG.to_string(),
        stdout.display().to_string(),
    ];
    if let Some(e) = stderr {
        args.extend([STDERR_ARG.to_string(), e.display().to_string()]);
    }
    args
}

/// Whether `args` (the whole argv) is containerd starting the logger.
pub fn is_log_shim_invocation(args: &[String]) -> bool {
    args.iter().skip(1).step_by(2).any(|a| a == LOG_SHIM_ARG)
}

/// A size-rotated CRI log file.
pub struct RotatingLog {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: u64,
    max_files: usize,
}

impl RotatingLog {
    /// Opens (appending) `path`, creating it and its directory.
    pub fn open(path: &Path, max_size: u64, max_files: usize) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            file,
            size,
            max_size,
            max_files: max_files.max(1),
        })
    }

    /// Appends whole lines, rotating first when the file is full.
    pub fn write_entry(&mut self, line: &[u8]) -> io::Result<()> {
        if self.size > 0 && self.size + line.len() as u64 > self.max_size {
            self.rotate()?;
        }
        self.file.write_all(line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotated(&self, n: usize) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    }

    fn rotate(&mut self) -> io::Result<()> {
        if self.max_files == 1 {
            self.file.set_len(0)?;
        } else {
            let _ = std::fs::remove_file(self.rotated(self.max_files - 1));
            for n in (1..self.max_files - 1).rev() {
                let _ = std::fs::rename(self.rotated(n), self.rotated(n + 1));
            }
            std::fs::rename(&self.path, self.rotated(1))?;
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
        }
        self.size = 0;
        Ok(())
    }
}

/// Copies `input` into `log` as CRI lines until EOF.
///
/// A failing log file (disk full, removed directory) never blocks the
/// container: the input keeps being drained, lines that cannot be written
/// are dropped, and the first write error is returned at EOF.
pub fn pump(mut input: impl Read, stream: Stream, log: &Mutex<RotatingLog>) -> io::Result<()> {
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    let first_error: std::cell::RefCell<Option<io::Error>> = Default::default();
    let emit = |text: &[u8], partial: bool| -> io::Result<()> {
        let line = format_line(Utc::now(), stream, partial, text);
        let written = log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write_entry(&line);
        if let Err(e) = written {
            first_error.borrow_mut().get_or_insert(e);
        }
        Ok(())
    };
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        pending.extend_from_slice(&buf[..n]);
        let mut start = 0;
        while let Some(pos) = pending[start..].iter().position(|b| *b == b'\n') {
            let end = start + pos;
            let mut line = &pending[start..end];
            while line.len() > MAX_LINE {
                emit(&line[..MAX_LINE], true)?;
                line = &line[MAX_LINE..];
            }
            emit(line, false)?;
            start = end + 1;
        }
        pending.drain(..start);
        while pending.len() > MAX_LINE {
            emit(&pending[..MAX_LINE], true)?;
            pending.drain(..MAX_LINE);
        }
    }
    if !pending.is_empty() {
        emit(&pending, false)?;
    }
    match first_error.into_inner() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The logger process's body: `args` is argv after the program name
/// (`_RK3S_LOG_SHIM <log path>`); stdout on fd 3, stderr on fd 4, and fd 5
/// closed once the log file is open. Returns when both streams end.
pub fn run_log_shim(args: &[String]) -> io::Result<()> {
    // FIFO mode is started by the agent: leave its session, so that the
    // agent's end (or its signals) never reaches the logger.
    if args.iter().any(|a| a == STDOUT_ARG) {
        // SAFETY: setsid has no memory-safety preconditions.
        unsafe { libc::setsid() };
    }
    let mut log_path = None;
    let mut fifos: [Option<PathBuf>; 2] = [None, None];
    for pair in args.chunks(2) {
        if let [key, value] = pair {
            match key.as_str() {
                LOG_SHIM_ARG => log_path = Some(PathBuf::from(value)),
                STDOUT_ARG => fifos[0] = Some(PathBuf::from(value)),
                STDERR_ARG => fifos[1] = Some(PathBuf::from(value)),
                _ => {}
            }
        }
    }
    let log_path = log_path.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("failed to start the log shim: missing `{LOG_SHIM_ARG} <path>`"),
        )
    })?;
    // Without a log file the streams are still drained (into /dev/null),
    // so the container never blocks on a full pipe or dies of SIGPIPE.
    let opened = RotatingLog::open(&log_path, DEFAULT_MAX_SIZE, DEFAULT_MAX_FILES);
    let (log, open_error) = match opened {
        Ok(log) => (log, None),
        Err(e) => (
            RotatingLog::open(Path::new("/dev/null"), u64::MAX, 1)?,
            Some(e),
        ),
    };
    let log = Arc::new(Mutex::new(log));
    let (stdout, stderr): (File, Option<File>) = match fifos {
        [Some(out), err] => open_output_fifos(&out, err.as_deref())?,
        _ => {
            // SAFETY: containerd's shim passes exactly these three
            // descriptors as ExtraFiles; each is owned here and nowhere
            // else in this process.
            let (stdout, stderr, ready) = unsafe {
                (
                    File::from_raw_fd(3),
                    File::from_raw_fd(4),
                    File::from_raw_fd(5),
                )
            };
            // Closing the readiness pipe tells the shim it may start the task.
            drop(ready);
            (stdout, Some(stderr))
        }
    };
    let err_log = Arc::clone(&log);
    let err_thread = std::thread::spawn(move || match stderr {
        Some(stderr) => pump(stderr, Stream::Stderr, &err_log),
        None => Ok(()),
    });
    let out = pump(stdout, Stream::Stdout, &log);
    let err = err_thread
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("stderr logger panicked")));
    match open_error {
        Some(e) => Err(io::Error::new(
            e.kind(),
            format!("failed to open {}: {e}", log_path.display()),
        )),
        None => out.and(err),
    }
}

/// Opens the output FIFOs for reading; each open waits for containerd's
/// shim to open the other end, bounded so a task that never starts does
/// not leave the logger behind forever.
fn open_output_fifos(stdout: &Path, stderr: Option<&Path>) -> io::Result<(File, Option<File>)> {
    let (tx, rx) = std::sync::mpsc::channel();
    for (i, path) in std::iter::once(Some(stdout)).chain([stderr]).enumerate() {
        let Some(path) = path.map(Path::to_path_buf) else {
            continue;
        };
        let tx = tx.clone();
        std::thread::spawn(move || {
            let _ = tx.send((i, File::open(&path)));
        });
    }
    drop(tx);
    let mut files: [Option<File>; 2] = [None, None];
    let wanted = 1 + usize::from(stderr.is_some());
    for _ in 0..wanted {
        let (i, file) = rx.recv_timeout(FIFO_OPEN_TIMEOUT).map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                "failed to open the task's output FIFOs: the task never opened them",
            )
        })?;
        files[i] = Some(file?);
    }
    let [out, err] = files;
    Ok((out.expect("stdout opened"), err))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 6, 7, 8, 9).unwrap() + chrono::Duration::nanoseconds(12_345)
    }

    #[test]
    fn formats_cri_lines() {
        assert_eq!(
            format_line(at(), Stream::Stdout, false, b"hello"),
            b"2024-05-06T07:08:09.000012345Z stdout F hello\n"
        );
        assert_eq!(
            format_line(at(), Stream::Stderr, true, b""),
            b"2024-05-06T07:08:09.000012345Z stderr P \n"
        );
    }

    #[test]
    fn uri_encodes_paths() {
        assert_eq!(
            shim_uri(
                Path::new("/usr/bin/rk3s"),
                Path::new("/var/log/pods/ns_p_u/c/0.log")
            ),
            "binary:///usr/bin/rk3s?_RK3S_LOG_SHIM=/var/log/pods/ns_p_u/c/0.log"
        );
        assert!(shim_uri(Path::new("/b"), Path::new("/a b&c")).ends_with("=/a%20b%26c"));
        // The agent's FIFO-mode logger is recognised too, whatever the order.
        let mut argv = vec!["rk3s".to_string()];
        argv.extend(fifo_logger_args(
            Path::new("/l"),
            Path::new("/o"),
            Some(Path::new("/e")),
        ));
        assert!(is_log_shim_invocation(&argv));
        assert_eq!(argv[3..], ["_RK3S_STDOUT", "/o", "_RK3S_STDERR", "/e"]);
        assert!(is_log_shim_invocation(&[
            "rk3s".into(),
            LOG_SHIM_ARG.into(),
            "/x".into()
        ]));
        assert!(!is_log_shim_invocation(&["rk3s".into(), "agent".into()]));
    }

    fn lines(path: &Path) -> Vec<(String, String, String)> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| {
                let mut p = l.splitn(4, ' ');
                let _ts = p.next().unwrap();
                (
                    p.next().unwrap().into(),
                    p.next().unwrap().into(),
                    p.next().unwrap_or("").into(),
                )
            })
            .collect()
    }

    #[test]
    fn pump_splits_lines_and_long_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c/0.log");
        let log = Mutex::new(RotatingLog::open(&path, DEFAULT_MAX_SIZE, 5).unwrap());
        let long = "x".repeat(MAX_LINE + 10);
        let input = format!("one\ntwo\n{long}\ntail");
        pump(input.as_bytes(), Stream::Stderr, &log).unwrap();
        let got = lines(&path);
        let tags: Vec<_> = got.iter().map(|(s, t, _)| format!("{s} {t}")).collect();
        assert_eq!(
            tags,
            ["stderr F", "stderr F", "stderr P", "stderr F", "stderr F"]
        );
        assert_eq!(got[0].2, "one");
        assert_eq!(got[2].2.len(), MAX_LINE);
        assert_eq!(got[3].2, "x".repeat(10));
        assert_eq!(got[4].2, "tail");
    }

    #[test]
    fn unwritable_log_still_drains_the_input() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let log = Mutex::new(RotatingLog::open(&path, DEFAULT_MAX_SIZE, 5).unwrap());
        // A read-only handle makes every write fail.
        log.lock().unwrap().file = File::open(&path).unwrap();
        let mut input = io::Cursor::new(b"a\nb\nc\n".to_vec());
        assert!(pump(&mut input, Stream::Stdout, &log).is_err());
        assert_eq!(input.position(), 6, "input not drained to EOF");
    }

    #[test]
    fn rotates_by_size_keeping_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut log = RotatingLog::open(&path, 100, 3).unwrap();
        for i in 0..20 {
            log.write_entry(&format_line(
                at(),
                Stream::Stdout,
                false,
                format!("line {i:02}").as_bytes(),
            ))
            .unwrap();
        }
        // 50-byte lines, two per file: 10 files written, 3 kept.
        let last = lines(&path);
        assert_eq!(
            last.iter().map(|l| l.2.as_str()).collect::<Vec<_>>(),
            ["line 18", "line 19"]
        );
        assert_eq!(lines(&dir.path().join("0.log.1"))[0].2, "line 16");
        assert_eq!(lines(&dir.path().join("0.log.2"))[0].2, "line 14");
        assert!(!dir.path().join("0.log.3").exists());
    }
}
