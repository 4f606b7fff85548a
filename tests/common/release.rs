//! A release directory as install.sh downloads it, laid out by
//! `packaging/build-release.sh --binary` from the binary under test, and a
//! loopback HTTP server (`python3 -m http.server` on a port the kernel
//! picks) serving it for `INSTALL_RK3S_DOWNLOAD_URL`.
//!
//! Invariants: everything lives in a temporary directory; the server is
//! killed on drop, even when the test panics.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// install.sh's name for this machine's architecture.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => panic!("no release arch for {other}"),
    }
}

/// `<dir>/<version>/{rk3s-<arch>, sha256sum-<arch>.txt, install.sh}`.
pub struct Release {
    pub dir: tempfile::TempDir,
}

impl Release {
    pub fn new() -> Self {
        Release {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Adds `version`, holding `binary`, through the packaging script.
    pub fn add(&self, version: &str, binary: &Path) -> &Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/build-release.sh");
        let out = Command::new("bash")
            .arg(script)
            .args(["--binary", binary.to_str().unwrap()])
            .args(["--arch", host_arch()])
            .arg("--out")
            .arg(self.version_dir(version))
            .output()
            .expect("run build-release.sh");
        assert!(
            out.status.success(),
            "build-release.sh failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self
    }

    pub fn version_dir(&self, version: &str) -> PathBuf {
        self.dir.path().join(version)
    }

    /// Publishes the checksum of other bytes than the binary's.
    pub fn tamper_checksum(&self, version: &str) {
        let arch = host_arch();
        let sums = self
            .version_dir(version)
            .join(format!("sha256sum-{arch}.txt"));
        let text = std::fs::read_to_string(&sums).unwrap();
        let first = text.chars().next().unwrap();
        let flipped = if first == '0' { '1' } else { '0' };
        std::fs::write(&sums, format!("{flipped}{}", &text[1..])).unwrap();
    }
}

/// `python3 -m http.server` on 127.0.0.1, serving one directory.
pub struct HttpServer {
    child: Child,
    pub url: String,
}

impl HttpServer {
    pub fn serve(dir: &Path) -> Self {
        let mut child = Command::new("python3")
            .args([
                "-u",
                "-m",
                "http.server",
                "0",
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start python3 -m http.server");
        // "Serving HTTP on 127.0.0.1 port 40123 (http://127.0.0.1:40123/) ..."
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .split_whitespace()
            .skip_while(|w| *w != "port")
            .nth(1)
            .and_then(|p| p.parse::<u16>().ok());
        let Some(port) = port else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("http.server did not say its port: {line:?}");
        };
        HttpServer {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
