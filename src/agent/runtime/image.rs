//! Reading images out of containerd: the manifest (through an index for
//! this platform when needed), the config, and the chain id of the layers.

use containerd_client::services::v1::{
    DeleteImageRequest, GetImageRequest, ListImagesRequest, ReadContentRequest,
};
use containerd_client::tonic::Code;
use futures::StreamExt;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::containerd::{to_chrono, ContainerdRuntime};
use super::{ImageConfig, ImageInfo, Result, RuntimeError, StoredImage};

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
    #[serde(default)]
    layers: Vec<Descriptor>,
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

/// The manifest of this platform in an index's entries.
fn platform_manifest(manifests: Vec<Descriptor>) -> Option<Descriptor> {
    manifests.into_iter().find(|m| {
        !m.media_type.contains("index")
            && m.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == arch())
    })
}

impl ContainerdRuntime {
    /// Every image record with its content size (see [`StoredImage::size`]).
    pub(super) async fn list_stored_images(&self) -> Result<Vec<StoredImage>> {
        let resp = self
            .client()
            .images()
            .list(self.request(ListImagesRequest::default()))
            .await
            .map_err(|e| self.rpc_error("list images".into(), e))?;
        let mut out = Vec::new();
        for image in resp.into_inner().images {
            let Some(target) = image.target else { continue };
            // Content that is gone or unreadable counts as zero bytes: the
            // record is still listed so it can be collected.
            let size = self
                .content_size(&target.digest, target.size)
                .await
                .unwrap_or(0);
            let pinned = image
                .labels
                .get(super::PINNED_LABEL)
                .is_some_and(|v| v == "pinned");
            out.push(StoredImage {
                pinned,
                name: image.name,
                digest: target.digest,
                size,
                created_at: to_chrono(image.created_at),
                updated_at: to_chrono(image.updated_at),
            });
        }
        Ok(out)
    }

    /// Bytes of the manifest (through an index), config and layers.
    async fn content_size(&self, digest: &str, own_size: i64) -> Result<u64> {
        let mut total = own_size.max(0) as u64;
        let mut digest = digest.to_string();
        for _ in 0..3 {
            let parsed: ManifestOrIndex = serde_json::from_slice(&self.read_blob(&digest).await?)
                .map_err(|e| RuntimeError::Invalid {
                op: format!("size image {digest}"),
                message: e.to_string(),
            })?;
            if let Some(config) = parsed.config {
                let layers: i64 = parsed.layers.iter().map(|l| l.size.max(0)).sum();
                return Ok(total + config.size.max(0) as u64 + layers as u64);
            }
            let Some(chosen) = platform_manifest(parsed.manifests) else {
                return Ok(total);
            };
            total += chosen.size.max(0) as u64;
            digest = chosen.digest;
        }
        Ok(total)
    }

    /// Images.Delete with `sync`: returns once containerd's garbage
    /// collector has run, so the freed space shows in `statvfs`.
    pub(super) async fn delete_image(&self, name: &str) -> Result<()> {
        let req = DeleteImageRequest {
            name: name.to_string(),
            sync: true,
            target: None,
        };
        match self.client().images().delete(self.request(req)).await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Code::NotFound => Ok(()),
            Err(e) => Err(self.rpc_error(format!("delete image {name}"), e)),
        }
    }

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
            let chosen = platform_manifest(manifest.manifests).ok_or_else(|| {
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
