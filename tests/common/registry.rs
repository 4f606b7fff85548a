//! Debian's `docker-registry` (distribution 2.8) on a free loopback port,
//! storing under a temp dir and killed on drop, and a push over the
//! registry HTTP API (blob uploads POST + PUT, manifest PUT) of an image
//! tar built by [`crate::common::image`].
//!
//! Declared with `#[path]` by the tests that use it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::common::image::ImageTar;

pub struct DockerRegistry {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl DockerRegistry {
    /// Starts a registry without auth; panics if it does not answer in 20 s.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("storage").display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("write registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log file");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn docker-registry");
        let registry = Self {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let url = format!("{}/v2/", registry.base());
        loop {
            if let Ok(r) = reqwest::get(&url).await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "docker-registry did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        registry
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT`, the host part of image names.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Pushes the docker-archive `tar` as `repo:tag` (an OCI manifest);
    /// returns the manifest digest.
    pub async fn push(&self, tar: &ImageTar, repo: &str, tag: &str) -> String {
        let scratch = tempfile::tempdir().expect("temp dir");
        let mut archive = tar::Archive::new(std::fs::File::open(&tar.path).expect("open tar"));
        archive.unpack(scratch.path()).expect("unpack image tar");
        let manifest: serde_json::Value = serde_json::from_slice(
            &std::fs::read(scratch.path().join("manifest.json")).expect("manifest.json"),
        )
        .expect("manifest json");
        let entry = &manifest[0];
        let http = reqwest::Client::new();
        let config = self
            .upload(
                &http,
                repo,
                &scratch.path().join(entry["Config"].as_str().unwrap()),
            )
            .await;
        let mut layers = Vec::new();
        for l in entry["Layers"].as_array().unwrap() {
            let (digest, size) = self
                .upload(&http, repo, &scratch.path().join(l.as_str().unwrap()))
                .await;
            layers.push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": digest, "size": size,
            }));
        }
        let body = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.0, "size": config.1},
            "layers": layers,
        }))
        .unwrap();
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&body)));
        let resp = http
            .put(format!("{}/v2/{repo}/manifests/{tag}", self.base()))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(body)
            .send()
            .await
            .expect("put manifest");
        assert!(
            resp.status().is_success(),
            "manifest PUT: {}",
            resp.status()
        );
        digest
    }

    async fn upload(&self, http: &reqwest::Client, repo: &str, path: &Path) -> (String, u64) {
        let data = std::fs::read(path).expect("read blob");
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&data)));
        let resp = http
            .post(format!("{}/v2/{repo}/blobs/uploads/", self.base()))
            .send()
            .await
            .expect("start upload");
        assert_eq!(resp.status(), 202, "upload POST");
        let location = resp.headers()["location"].to_str().unwrap().to_string();
        let location = if location.starts_with('/') {
            format!("{}{location}", self.base())
        } else {
            location
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let size = data.len() as u64;
        let resp = http
            .put(format!("{location}{sep}digest={digest}"))
            .header("content-type", "application/octet-stream")
            .body(data)
            .send()
            .await
            .expect("finish upload");
        assert_eq!(resp.status(), 201, "upload PUT");
        (digest, size)
    }
}

impl Drop for DockerRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
