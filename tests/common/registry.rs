//! Debian's `docker-registry` (distribution 2.8) on a free loopback port,
//! storing under a temp dir and killed on drop, and a push over the
//! registry HTTP API (blob uploads POST + PUT, manifest PUT) of an image
//! tar built by [`crate::common::image`].
//!
//! [`Secured`] makes a registry that serves HTTPS with a test CA (rcgen)
//! and asks for HTTP basic auth (htpasswd with a fixed bcrypt hash); the
//! push then trusts that CA and sends the credentials.
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
    http: reqwest::Client,
    scheme: &'static str,
    auth: Option<(String, String)>,
}

/// The user and password the [`Secured`] registry accepts.
pub const USER: &str = "rk3s";
pub const PASSWORD: &str = "rk3s-s3cret";
/// bcrypt (cost 5) of [`PASSWORD`], the only hash docker-registry's
/// htpasswd accepts.
const PASSWORD_BCRYPT: &str = "$2b$05$EZEvXCin4Jazov5eb/8OfO91QVoP6MrNvXoQaFRcW37C2oCG.zXIG";

/// TLS and basic-auth files for a secured registry, in a temp dir.
pub struct Secured {
    pub dir: tempfile::TempDir,
    pub ca_pem: String,
}

impl Secured {
    /// A test CA, a server certificate for 127.0.0.1 signed by it, and an
    /// htpasswd file with [`USER`].
    pub fn generate() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
        let dir = tempfile::tempdir().expect("temp dir");
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "rk3s test registry CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_pem = ca_params.self_signed(&ca_key).expect("CA cert").pem();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().expect("server key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("server params");
        params.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse().unwrap())];
        let cert = params.signed_by(&key, &issuer).expect("server cert");
        let write = |name: &str, body: &str| {
            std::fs::write(dir.path().join(name), body).expect("write a registry file")
        };
        write("ca.pem", &ca_pem);
        write("server.pem", &cert.pem());
        write("server-key.pem", &key.serialize_pem());
        write("htpasswd", &format!("{USER}:{PASSWORD_BCRYPT}\n"));
        Self { dir, ca_pem }
    }

    pub fn ca_file(&self) -> std::path::PathBuf {
        self.dir.path().join("ca.pem")
    }
}

impl DockerRegistry {
    /// Starts a registry without auth; panics if it does not answer in 20 s.
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// Starts a registry over HTTPS with basic auth.
    pub async fn start_secured(secured: &Secured) -> Self {
        Self::start_with(Some(secured)).await
    }

    async fn start_with(secured: Option<&Secured>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("storage").display()
        );
        let mut http = reqwest::Client::builder();
        if let Some(s) = secured {
            let d = s.dir.path();
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\nauth:\n  htpasswd:\n    realm: rk3s-test\n    path: {}\n",
                d.join("server.pem").display(),
                d.join("server-key.pem").display(),
                d.join("htpasswd").display()
            ));
            http = http.add_root_certificate(
                reqwest::Certificate::from_pem(s.ca_pem.as_bytes()).expect("CA pem"),
            );
        }
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
            http: http.build().expect("test client"),
            scheme: if secured.is_some() { "https" } else { "http" },
            auth: secured.map(|_| (USER.to_string(), PASSWORD.to_string())),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let url = format!("{}/v2/", registry.base());
        loop {
            if let Ok(r) = registry.authed(registry.http.get(&url)).send().await {
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
        format!("{}://127.0.0.1:{}", self.scheme, self.port)
    }

    fn authed(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Some((user, password)) => req.basic_auth(user, Some(password)),
            None => req,
        }
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
        let http = &self.http;
        let config = self
            .upload(
                http,
                repo,
                &scratch.path().join(entry["Config"].as_str().unwrap()),
            )
            .await;
        let mut layers = Vec::new();
        for l in entry["Layers"].as_array().unwrap() {
            let (digest, size) = self
                .upload(http, repo, &scratch.path().join(l.as_str().unwrap()))
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
        let resp = self
            .authed(http.put(format!("{}/v2/{repo}/manifests/{tag}", self.base())))
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
        let resp = self
            .authed(http.post(format!("{}/v2/{repo}/blobs/uploads/", self.base())))
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
        let resp = self
            .authed(http.put(format!("{location}{sep}digest={digest}")))
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
