//! Reading images out of containerd: the manifest (through an index for
//! this platform when needed), the config, and the chain id of the layers.

use containerd_client::services::v1::{GetImageRequest, ReadContentRequest};
use containerd_client::tonic::Code;
use futures::StreamExt;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::containerd::ContainerdRuntime;
use super::{ImageConfig, ImageInfo, Result, RuntimeError};

/// A descriptor in a manifest or index (registry pulls read them too).
#[derive(Deserialize)]
pub(crate) struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: i64,
    #[serde(default)]
    pub platform: Option<Platform>,
}

#[derive(Deserialize)]
pub(crate) struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

/// A manifest or an index: whichever fields are present.
#[derive(Deserialize)]
struct ManifestOrIndex {
    #[serde(default)]
    manifests: Vec<Descriptor>,
    config: Option<Descriptor>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct OciImage {
    config: OciConfig,
    rootfs: RootFs,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "PascalCase")]
struct OciConfig {
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    env: Option<Vec<String>>,
    working_dir: String,
    user: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RootFs {
    diff_ids: Vec<String>,
}

/// The OCI architecture name of this machine.
pub(crate) fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    }
}

/// The chain id of layers with these diff ids (OCI image spec).
pub fn chain_id(diff_ids: &[String]) -> Option<String> {
    let mut iter = diff_ids.iter();
    let mut chain = iter.next()?.clone();
    for diff in iter {
        let digest = Sha256::digest(format!("{chain} {diff}").as_bytes());
        chain = format!("sha256:{}", hex::encode(digest));
    }
    Some(chain)
}

impl ContainerdRuntime {
    pub(super) async fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let op = || format!("read content {digest}");
        let req = ReadContentRequest {
            digest: digest.to_string(),
            offset: 0,
            size: 0,
        };
        let mut stream = self
            .client()
            .content()
            .read(self.request(req))
            .await
            .map_err(|e| self.rpc_error(op(), e))?
            .into_inner();
        let mut data = Vec::new();
        while let Some(chunk) = stream.next().await {
            data.extend(chunk.map_err(|e| self.rpc_error(op(), e))?.data);
        }
        Ok(data)
    }

    pub(super) async fn lookup_image(&self, reference: &str) -> Result<Option<ImageInfo>> {
        let req = GetImageRequest {
            name: reference.to_string(),
        };
        let image = match self.client().images().get(self.request(req)).await {
            Ok(resp) => resp.into_inner().image,
            Err(e) if e.code() == Code::NotFound => return Ok(None),
            Err(e) => return Err(self.rpc_error(format!("get image {reference}"), e)),
        };
        let Some(target) = image.and_then(|i| i.target) else {
            return Ok(None);
        };
        let invalid = |message: String| RuntimeError::Invalid {
            op: format!("read image {reference}"),
            message,
        };
        // Kubernetes reports the digest the name points at (the index for
        // multi-platform images), not this platform's manifest.
        let target_digest = target.digest.clone();
        let mut digest = target.digest;
        let mut manifest: ManifestOrIndex;
        // At most one level of index in practice; bound it anyway.
        for _ in 0..3 {
            manifest = serde_json::from_slice(&self.read_blob(&digest).await?)
                .map_err(|e| invalid(format!("bad manifest {digest}: {e}")))?;
            if let Some(config) = manifest.config {
                let raw = self.read_blob(&config.digest).await?;
                let oci: OciImage = serde_json::from_slice(&raw)
                    .map_err(|e| invalid(format!("bad config {}: {e}", config.digest)))?;
                let chain_id = chain_id(&oci.rootfs.diff_ids)
                    .ok_or_else(|| invalid("image has no layers".into()))?;
                return Ok(Some(ImageInfo {
                    reference: reference.to_string(),
                    id: config.digest,
                    digest: target_digest,
                    chain_id,
                    config: ImageConfig {
                        entrypoint: oci.config.entrypoint.unwrap_or_default(),
                        cmd: oci.config.cmd.unwrap_or_default(),
                        env: oci.config.env.unwrap_or_default(),
                        working_dir: oci.config.working_dir,
                        user: oci.config.user,
                    },
                }));
            }
            let chosen = manifest
                .manifests
                .into_iter()
                .find(|m| {
                    !m.media_type.contains("index")
                        && m.platform
                            .as_ref()
                            .is_some_and(|p| p.os == "linux" && p.architecture == arch())
                })
                .ok_or_else(|| {
                    invalid(format!("no linux/{} manifest in index {digest}", arch()))
                })?;
            digest = chosen.digest;
        }
        Err(invalid("image index nesting too deep".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_id_of_layers() {
        assert_eq!(chain_id(&[]), None);
        assert_eq!(chain_id(&["sha256:a".into()]).as_deref(), Some("sha256:a"));
        let two = chain_id(&["sha256:a".into(), "sha256:b".into()]).unwrap();
        let want = format!(
            "sha256:{}",
            hex::encode(Sha256::digest(b"sha256:a sha256:b"))
        );
        assert_eq!(two, want);
    }
}
