//! Tiny container images built from Debian's static busybox, written as
//! docker-archive tars (`docker save` format 1.2) that `ctr images import`
//! accepts.
//!
//! The image has one layer: `/bin/busybox` with a symlink per applet it
//! reports (`sh`, `httpd`, `wget`, `nc`, …), `/usr/bin/env`, `/etc/passwd`
//! and `/etc/group` (root and nobody), `/etc/hosts`, `/tmp` and a
//! `/www/index.html` ([`INDEX_HTML`]) for `httpd -h /www`.
//!
//! Invariant: the archive is deterministic (sorted entries, fixed mtimes,
//! uid/gid 0, no user names), so the same busybox binary and options always
//! give the same layer digest and image id.
//!
//! Partial: only the docker-archive format is written (no OCI layout), and
//! the layer is uncompressed.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::privilege::BUSYBOX;

/// The body of `/www/index.html` in every busybox image.
pub const INDEX_HTML: &str = "<h1>hello from rk3s busybox</h1>\n";

/// The reference the e2e tests use unless they need several images.
pub const DEFAULT_REFERENCE: &str = "docker.io/rk3s/busybox:test";

/// Every entry's mtime: 2000-01-01T00:00:00Z, so digests never change.
const MTIME: u64 = 946_684_800;
const CREATED: &str = "2000-01-01T00:00:00Z";
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A failure to build an image tar.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("failed to read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("failed to list the busybox applets: {0}")]
    Applets(String),
    #[error("failed to write the image tar {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// An image archive on disk, ready for [`super::containerd::Containerd::import`].
#[derive(Debug, Clone)]
pub struct ImageTar {
    /// The docker-archive tar.
    pub path: PathBuf,
    /// The fully qualified reference it is tagged with.
    pub reference: String,
    /// `sha256:…` of the config blob: the image id.
    pub image_id: String,
    /// `sha256:…` of the uncompressed layer tar (its diff id and digest).
    pub layer_digest: String,
}

/// A busybox image being described; [`BusyboxImage::write`] produces it.
#[derive(Debug, Clone)]
pub struct BusyboxImage {
    reference: String,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    env: Vec<String>,
    working_dir: String,
    user: String,
    exposed_ports: Vec<String>,
    files: Vec<(String, Vec<u8>, u32)>,
}

impl BusyboxImage {
    /// The default image (`cmd ["sh"]`) tagged `reference`, written in `dir`.
    pub fn build(dir: &Path, reference: &str) -> Result<ImageTar, ImageError> {
        Self::new(reference).write(dir)
    }

    /// An image tagged `reference` (fully qualified, e.g.
    /// `docker.io/rk3s/busybox:test`): no entrypoint, `cmd ["sh"]`, the
    /// usual PATH, working dir `/`, running as root.
    pub fn new(reference: &str) -> Self {
        Self {
            reference: reference.to_string(),
            entrypoint: Vec::new(),
            cmd: vec!["sh".to_string()],
            env: vec![DEFAULT_PATH.to_string()],
            working_dir: "/".to_string(),
            user: String::new(),
            exposed_ports: Vec::new(),
            files: Vec::new(),
        }
    }

    pub fn entrypoint(mut self, args: &[&str]) -> Self {
        self.entrypoint = args.iter().map(|a| a.to_string()).collect();
        self
    }

    pub fn cmd(mut self, args: &[&str]) -> Self {
        self.cmd = args.iter().map(|a| a.to_string()).collect();
        self
    }

    /// Adds `NAME=value` to the image environment (after PATH).
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push(format!("{name}={value}"));
        self
    }

    pub fn working_dir(mut self, dir: &str) -> Self {
        self.working_dir = dir.to_string();
        self
    }

    /// The image user, e.g. `nobody` or `65534:65534`.
    pub fn user(mut self, user: &str) -> Self {
        self.user = user.to_string();
        self
    }

    /// Declares an exposed port such as `80/tcp`.
    pub fn expose(mut self, port: &str) -> Self {
        self.exposed_ports.push(port.to_string());
        self
    }

    /// Adds (or replaces) a regular file at absolute `path` with `mode`;
    /// missing parent directories are created.
    pub fn file(mut self, path: &str, contents: impl Into<Vec<u8>>, mode: u32) -> Self {
        let path = path.trim_start_matches('/').to_string();
        self.files.retain(|(p, _, _)| *p != path);
        self.files.push((path, contents.into(), mode));
        self
    }

    /// Writes the docker-archive tar into `dir` (named after the reference)
    /// and describes it.
    pub fn write(&self, dir: &Path) -> Result<ImageTar, ImageError> {
        let layer = self.layer()?;
        let layer_hex = hex::encode(Sha256::digest(&layer));
        let config = serde_json::to_vec(&self.config(&layer_hex)).expect("image config serializes");
        let config_hex = hex::encode(Sha256::digest(&config));
        let manifest = serde_json::to_vec(&json!([{
            "Config": format!("{config_hex}.json"),
            "RepoTags": [self.reference],
            "Layers": [format!("{layer_hex}/layer.tar")],
        }]))
        .expect("manifest serializes");

        let mut archive = Archive::new();
        archive.dir(&layer_hex, 0o755);
        archive.file(&format!("{layer_hex}/layer.tar"), &layer, 0o644);
        archive.file(&format!("{config_hex}.json"), &config, 0o644);
        archive.file("manifest.json", &manifest, 0o644);
        let bytes = archive.finish();

        let name: String = self
            .reference
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = dir.join(format!("{name}.tar"));
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(&bytes))
            .map_err(|source| ImageError::Write {
                path: path.clone(),
                source,
            })?;
        Ok(ImageTar {
            path,
            reference: self.reference.clone(),
            image_id: format!("sha256:{config_hex}"),
            layer_digest: format!("sha256:{layer_hex}"),
        })
    }

    fn config(&self, layer_hex: &str) -> Value {
        let (architecture, variant) = oci_arch();
        let mut config = json!({
            "Env": self.env,
            "Cmd": self.cmd,
            "WorkingDir": self.working_dir,
        });
        if !self.entrypoint.is_empty() {
            config["Entrypoint"] = json!(self.entrypoint);
        }
        if !self.user.is_empty() {
            config["User"] = json!(self.user);
        }
        if !self.exposed_ports.is_empty() {
            let ports: serde_json::Map<_, _> = self
                .exposed_ports
                .iter()
                .map(|p| (p.clone(), json!({})))
                .collect();
            config["ExposedPorts"] = Value::Object(ports);
        }
        let mut image = json!({
            "architecture": architecture,
            "os": "linux",
            "created": CREATED,
            "config": config,
            "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{layer_hex}")] },
            "history": [{ "created": CREATED, "created_by": "rk3s test harness: busybox-static" }],
        });
        if let Some(variant) = variant {
            image["variant"] = json!(variant);
        }
        image
    }

    /// The single layer: busybox, its applet links, a few files.
    fn layer(&self) -> Result<Vec<u8>, ImageError> {
        let busybox = std::fs::read(BUSYBOX).map_err(|source| ImageError::Read {
            path: BUSYBOX.into(),
            source,
        })?;
        let mut files: Vec<(String, Vec<u8>, u32)> = vec![
            ("etc/passwd".into(), PASSWD.into(), 0o644),
            ("etc/group".into(), GROUP.into(), 0o644),
            ("etc/hosts".into(), HOSTS.into(), 0o644),
            ("www/index.html".into(), INDEX_HTML.into(), 0o644),
        ];
        for (path, contents, mode) in &self.files {
            files.retain(|(p, _, _)| p != path);
            files.push((path.clone(), contents.clone(), *mode));
        }
        files.sort_by(|a, b| a.0.cmp(&b.0));

        let mut dirs: Vec<(String, u32)> = [
            "bin", "dev", "etc", "proc", "root", "sys", "usr", "usr/bin", "var", "www",
        ]
        .iter()
        .map(|d| (d.to_string(), 0o755))
        .chain([("tmp".to_string(), 0o1777)])
        .collect();
        for (path, _, _) in &files {
            for parent in Path::new(path).ancestors().skip(1) {
                let parent = parent.to_string_lossy().into_owned();
                if !parent.is_empty() && !dirs.iter().any(|(d, _)| *d == parent) {
                    dirs.push((parent, 0o755));
                }
            }
        }
        dirs.sort();

        let mut layer = Archive::new();
        for (dir, mode) in &dirs {
            layer.dir(dir, *mode);
        }
        layer.file("bin/busybox", &busybox, 0o755);
        for applet in applets()? {
            layer.symlink(&format!("bin/{applet}"), "busybox");
        }
        layer.symlink("usr/bin/env", "../../bin/busybox");
        for (path, contents, mode) in &files {
            layer.file(path, contents, *mode);
        }
        Ok(layer.finish())
    }
}

const PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\nnobody:x:65534:\n";
const HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";

/// The applets the host busybox provides, sorted; `busybox` itself excluded.
fn applets() -> Result<Vec<String>, ImageError> {
    let out = Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .map_err(|e| ImageError::Applets(e.to_string()))?;
    if !out.status.success() {
        return Err(ImageError::Applets(
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ));
    }
    let mut applets: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
        .map(String::from)
        .collect();
    applets.sort();
    applets.dedup();
    if !applets.iter().any(|a| a == "sh") {
        return Err(ImageError::Applets(format!("{BUSYBOX} has no `sh` applet")));
    }
    Ok(applets)
}

/// The OCI architecture (and variant) of the machine running the tests,
/// which is the platform containerd unpacks for.
fn oci_arch() -> (&'static str, Option<&'static str>) {
    match std::env::consts::ARCH {
        "x86_64" => ("amd64", None),
        "aarch64" => ("arm64", None),
        "arm" => ("arm", Some("v7")),
        "x86" => ("386", None),
        "powerpc64" => ("ppc64le", None),
        other => (other, None),
    }
}

/// An in-memory tar with deterministic headers.
struct Archive {
    builder: tar::Builder<Vec<u8>>,
}

impl Archive {
    fn new() -> Self {
        let mut builder = tar::Builder::new(Vec::new());
        builder.mode(tar::HeaderMode::Deterministic);
        Self { builder }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(MTIME);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    fn dir(&mut self, path: &str, mode: u32) {
        let mut h = Self::header(tar::EntryType::Directory, mode, 0);
        self.builder
            .append_data(&mut h, format!("{path}/"), io::empty())
            .expect("in-memory tar write");
    }

    fn file(&mut self, path: &str, contents: &[u8], mode: u32) {
        let mut h = Self::header(tar::EntryType::Regular, mode, contents.len() as u64);
        self.builder
            .append_data(&mut h, path, contents)
            .expect("in-memory tar write");
    }

    fn symlink(&mut self, path: &str, target: &str) {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.builder
            .append_link(&mut h, path, target)
            .expect("in-memory tar write");
    }

    fn finish(self) -> Vec<u8> {
        self.builder.into_inner().expect("in-memory tar write")
    }
}
