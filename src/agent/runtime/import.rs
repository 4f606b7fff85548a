//! Importing a docker-archive image tar (`docker save`, `ctr export`) into
//! containerd through its API, the way `ctr images import` does: blobs into
//! the content store, an OCI manifest for the image, the image record, then
//! each layer applied onto a snapshot (the "unpack") for overlayfs.
//!
//! Invariants: every write happens inside one lease, so nothing half
//! imported is collected mid-way or left behind; blobs already in the
//! content store and layers already unpacked are skipped, so importing
//! twice is cheap. Blobs are streamed from disk in 1 MiB chunks, never
//! held whole in memory.
//!
//! Imported images carry `io.cri-containerd.pinned=pinned` (k3s pins its
//! airgap imports the same way), so image garbage collection keeps them;
//! registry pulls are not pinned.
//!
//! Partial: OCI-layout tars (`index.json`) and multi-platform archives are
//! not read yet.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{
    ApplyRequest, CreateImageRequest, Image, InfoRequest, UpdateImageRequest, WriteAction,
    WriteContentRequest,
};
use containerd_client::tonic::Code;
use containerd_client::types::Descriptor;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::containerd::{ContainerdRuntime, SNAPSHOTTER};
use super::image::chain_id;
use super::{Result, RuntimeError, PINNED_LABEL};

const CHUNK: usize = 1 << 20;
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
const LAYER_GZIP_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ArchiveManifest {
    config: String,
    #[serde(default)]
    repo_tags: Vec<String>,
    layers: Vec<String>,
}

#[derive(Deserialize)]
struct ConfigRootFs {
    rootfs: DiffIds,
}

#[derive(Deserialize)]
struct DiffIds {
    diff_ids: Vec<String>,
}

/// A blob extracted to disk.
use super::BlobFile as Blob;

/// A private scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn create() -> std::io::Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("rk3s-import-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir(&dir)?;
        Ok(Self(dir))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn io_err(op: &str) -> impl Fn(std::io::Error) -> RuntimeError + '_ {
    move |source| RuntimeError::Io {
        op: op.to_string(),
        source,
    }
}

/// Extracts `tar_path` into `dir` (plain files only, no links followed).
fn extract(tar_path: &Path, dir: &Path) -> Result<()> {
    let op = format!("extract image tar {}", tar_path.display());
    let file = std::fs::File::open(tar_path).map_err(io_err(&op))?;
    let mut archive = tar::Archive::new(file);
    for entry in archive.entries().map_err(io_err(&op))? {
        let mut entry = entry.map_err(io_err(&op))?;
        if entry.header().entry_type().is_file() {
            // `unpack_in` refuses paths escaping `dir`.
            entry.unpack_in(dir).map_err(io_err(&op))?;
        }
    }
    Ok(())
}

fn blob(path: PathBuf, media_type: &str) -> Result<Blob> {
    let op = format!("hash {}", path.display());
    let mut file = std::fs::File::open(&path).map_err(io_err(&op))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0i64;
    let mut first = [0u8; 2];
    loop {
        let n = file.read(&mut buf).map_err(io_err(&op))?;
        if n == 0 {
            break;
        }
        if size == 0 && n >= 2 {
            first.copy_from_slice(&buf[..2]);
        }
        hasher.update(&buf[..n]);
        size += n as i64;
    }
    let media_type = if media_type == LAYER_TYPE && first == [0x1f, 0x8b] {
        LAYER_GZIP_TYPE
    } else {
        media_type
    };
    Ok(Blob {
        path,
        digest: format!("sha256:{}", hex::encode(hasher.finalize())),
        size,
        media_type: media_type.to_string(),
    })
}

fn descriptor(b: &Blob) -> Descriptor {
    Descriptor {
        media_type: b.media_type.clone(),
        digest: b.digest.clone(),
        size: b.size,
        annotations: HashMap::new(),
    }
}

impl ContainerdRuntime {
    /// See the module docs; returns the references stored.
    pub(super) async fn import_docker_archive(&self, tar_path: &Path) -> Result<Vec<String>> {
        let op = format!("import image {}", tar_path.display());
        let invalid = |message: String| RuntimeError::Invalid {
            op: op.clone(),
            message,
        };
        let scratch = Scratch::create().map_err(io_err(&op))?;
        let (path, dir) = (tar_path.to_path_buf(), scratch.path().to_path_buf());
        tokio::task::spawn_blocking(move || extract(&path, &dir))
            .await
            .map_err(|e| invalid(format!("extraction task failed: {e}")))??;

        let manifest_json = std::fs::read(scratch.path().join("manifest.json")).map_err(|_| {
            invalid(
                "no manifest.json: not a docker-archive tar (OCI layout is not supported yet)"
                    .into(),
            )
        })?;
        let manifests: Vec<ArchiveManifest> = serde_json::from_slice(&manifest_json)
            .map_err(|e| invalid(format!("bad manifest.json: {e}")))?;
        let lease = self.begin_lease("import").await?;
        let mut stored = Vec::new();
        let mut result = Ok(());
        for m in &manifests {
            match self.import_one(scratch.path(), m, &lease).await {
                Ok(mut refs) => stored.append(&mut refs),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        self.end_lease(&lease).await;
        result.map(|()| stored)
    }

    async fn import_one(
        &self,
        dir: &Path,
        m: &ArchiveManifest,
        lease: &str,
    ) -> Result<Vec<String>> {
        let op = format!("import image {}", m.repo_tags.join(", "));
        let hashed = |rel: &str, media: &'static str| {
            let path = dir.join(rel);
            let dir = dir.to_path_buf();
            async move {
                if !path.starts_with(&dir) || !path.is_file() {
                    return Err(RuntimeError::Invalid {
                        op: "import image".into(),
                        message: format!("the archive lacks {}", path.display()),
                    });
                }
                tokio::task::spawn_blocking(move || blob(path, media))
                    .await
                    .map_err(|e| RuntimeError::Invalid {
                        op: "import image".into(),
                        message: e.to_string(),
                    })?
            }
        };
        let config = hashed(&m.config, CONFIG_TYPE).await?;
        let mut layers = Vec::new();
        for l in &m.layers {
            layers.push(hashed(l, LAYER_TYPE).await?);
        }
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {"mediaType": CONFIG_TYPE, "digest": config.digest, "size": config.size},
            "layers": layers.iter().map(|l| json!({"mediaType": l.media_type, "digest": l.digest, "size": l.size})).collect::<Vec<_>>(),
        }))
        .expect("manifest serializes");
        let manifest_path = dir.join(format!(
            "rk3s-manifest-{}.json",
            config.digest.trim_start_matches("sha256:")
        ));
        std::fs::write(&manifest_path, &manifest).map_err(io_err(&op))?;
        let manifest_blob = blob(manifest_path, MANIFEST_TYPE)?;
        // Pinned, as k3s pins airgap imports: image GC never removes them.
        self.store_image(
            &m.repo_tags,
            None,
            &manifest_blob,
            &config,
            &layers,
            lease,
            true,
        )
        .await?;
        Ok(m.repo_tags.clone())
    }

    /// Writes an image's blobs (layers, config, manifest, then the index
    /// if any) with the labels containerd's GC follows, unpacks the layers
    /// and records the image under each of `names`.
    pub(super) async fn store_image(
        &self,
        names: &[String],
        index: Option<&Blob>,
        manifest_blob: &Blob,
        config: &Blob,
        layers: &[Blob],
        lease: &str,
        pinned: bool,
    ) -> Result<()> {
        let op = format!("store image {}", names.join(", "));
        let invalid = |message: String| RuntimeError::Invalid {
            op: op.clone(),
            message,
        };
        let raw_config = std::fs::read(&config.path).map_err(io_err(&op))?;
        let diff_ids = serde_json::from_slice::<ConfigRootFs>(&raw_config)
            .map_err(|e| invalid(format!("bad image config: {e}")))?
            .rootfs
            .diff_ids;
        if diff_ids.len() != layers.len() {
            return Err(invalid(format!(
                "{} layers but {} diff ids",
                layers.len(),
                diff_ids.len()
            )));
        }
        let top_chain = chain_id(&diff_ids).ok_or_else(|| invalid("image has no layers".into()))?;

        for layer in layers {
            self.write_blob(layer, HashMap::new(), lease).await?;
        }
        let config_labels = HashMap::from([(
            format!("containerd.io/gc.ref.snapshot.{SNAPSHOTTER}"),
            top_chain.clone(),
        )]);
        self.write_blob(config, config_labels, lease).await?;
        let mut manifest_labels = HashMap::from([(
            "containerd.io/gc.ref.content.config".to_string(),
            config.digest.clone(),
        )]);
        for (i, l) in layers.iter().enumerate() {
            manifest_labels.insert(
                format!("containerd.io/gc.ref.content.l.{i}"),
                l.digest.clone(),
            );
        }
        self.write_blob(manifest_blob, manifest_labels, lease)
            .await?;
        if let Some(index) = index {
            let labels = HashMap::from([(
                "containerd.io/gc.ref.content.m.0".to_string(),
                manifest_blob.digest.clone(),
            )]);
            self.write_blob(index, labels, lease).await?;
        }

        self.unpack(layers, &diff_ids, lease).await?;

        let target = descriptor(index.unwrap_or(manifest_blob));
        for name in names {
            self.put_image(name, target.clone(), lease, pinned).await?;
        }
        Ok(())
    }

    /// See [`super::ContainerRuntime::store_pulled`].
    pub(super) async fn store_pulled_image(
        &self,
        name: &str,
        image: &super::PulledImage,
    ) -> Result<()> {
        let lease = self.begin_lease("pull").await?;
        let result = self
            .store_image(
                &[name.to_string()],
                image.index.as_ref(),
                &image.manifest,
                &image.config,
                &image.layers,
                &lease,
                false,
            )
            .await;
        self.end_lease(&lease).await;
        result
    }

    async fn write_blob(
        &self,
        b: &Blob,
        labels: HashMap<String, String>,
        lease: &str,
    ) -> Result<()> {
        let op = format!("write blob {}", b.digest);
        let info = InfoRequest {
            digest: b.digest.clone(),
        };
        if self
            .client()
            .content()
            .info(self.request(info))
            .await
            .is_ok()
        {
            return Ok(());
        }
        let file = tokio::fs::File::open(&b.path).await.map_err(io_err(&op))?;
        let reference = format!("rk3s-import-{}", b.digest);
        let (total, expected) = (b.size, b.digest.clone());
        // WRITE messages of one chunk each, then a COMMIT without data.
        let writes =
            futures::stream::unfold((file, 0i64, false), move |(mut file, offset, done)| {
                let reference = reference.clone();
                let expected = expected.clone();
                let labels = labels.clone();
                async move {
                    use tokio::io::AsyncReadExt;
                    if done {
                        return None;
                    }
                    let mut data = vec![0u8; CHUNK];
                    let n = file.read(&mut data).await.unwrap_or(0);
                    data.truncate(n);
                    let action = if n == 0 {
                        WriteAction::Commit
                    } else {
                        WriteAction::Write
                    };
                    let req = WriteContentRequest {
                        action: action as i32,
                        r#ref: reference,
                        total,
                        expected,
                        offset,
                        data,
                        labels: if n == 0 { labels } else { HashMap::new() },
                    };
                    Some((req, (file, offset + n as i64, n == 0)))
                }
            });
        let mut responses = match self
            .client()
            .content()
            .write(self.leased(writes, lease))
            .await
        {
            Ok(r) => r.into_inner(),
            Err(e) if e.code() == Code::AlreadyExists => return Ok(()),
            Err(e) => return Err(self.rpc_error(op, e)),
        };
        while let Some(resp) = responses.next().await {
            match resp {
                Ok(_) => {}
                Err(e) if e.code() == Code::AlreadyExists => return Ok(()),
                Err(e) => return Err(self.rpc_error(op, e)),
            }
        }
        Ok(())
    }

    /// Applies each layer onto its parent's snapshot, committing it under
    /// its chain id; layers already unpacked are skipped.
    async fn unpack(&self, layers: &[Blob], diff_ids: &[String], lease: &str) -> Result<()> {
        let mut parent = String::new();
        for (i, layer) in layers.iter().enumerate() {
            let chain = chain_id(&diff_ids[..=i]).expect("non-empty");
            let stat = StatSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: chain.clone(),
            };
            if self
                .client()
                .snapshots()
                .stat(self.request(stat))
                .await
                .is_ok()
            {
                parent = chain;
                continue;
            }
            let key = format!("extract-{}-{chain}", uuid::Uuid::new_v4().simple());
            let prepare = PrepareSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: key.clone(),
                parent: parent.clone(),
                labels: HashMap::new(),
            };
            let mounts = self
                .client()
                .snapshots()
                .prepare(self.leased(prepare, lease))
                .await
                .map_err(|e| {
                    self.rpc_error(format!("prepare snapshot for layer {}", layer.digest), e)
                })?
                .into_inner()
                .mounts;
            let apply = ApplyRequest {
                diff: Some(descriptor(layer)),
                mounts,
                payloads: HashMap::new(),
                sync_fs: false,
            };
            let applied = self.client().diff().apply(self.leased(apply, lease)).await;
            let applied = match applied {
                Ok(resp) => resp
                    .into_inner()
                    .applied
                    .map(|d| d.digest)
                    .unwrap_or_default(),
                Err(e) => {
                    let rm = RemoveSnapshotRequest {
                        snapshotter: SNAPSHOTTER.into(),
                        key,
                    };
                    let _ = self.client().snapshots().remove(self.request(rm)).await;
                    return Err(self.rpc_error(format!("apply layer {}", layer.digest), e));
                }
            };
            if applied != diff_ids[i] {
                let rm = RemoveSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key,
                };
                let _ = self.client().snapshots().remove(self.request(rm)).await;
                return Err(RuntimeError::Invalid {
                    op: format!("apply layer {}", layer.digest),
                    message: format!(
                        "its content is {applied}, the image config says {}",
                        diff_ids[i]
                    ),
                });
            }
            let commit = CommitSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                name: chain.clone(),
                key,
                labels: HashMap::new(),
            };
            match self
                .client()
                .snapshots()
                .commit(self.leased(commit, lease))
                .await
            {
                Ok(_) => {}
                // Unpacked concurrently by someone else: theirs is as good.
                Err(e) if e.code() == Code::AlreadyExists => {}
                Err(e) => return Err(self.rpc_error(format!("commit snapshot {chain}"), e)),
            }
            parent = chain;
        }
        Ok(())
    }

    async fn put_image(
        &self,
        name: &str,
        target: Descriptor,
        lease: &str,
        pinned: bool,
    ) -> Result<()> {
        let mut labels = HashMap::new();
        let mut update_paths = vec!["target".to_string()];
        if pinned {
            labels.insert(PINNED_LABEL.to_string(), "pinned".to_string());
            update_paths.push(format!("labels.{PINNED_LABEL}"));
        }
        let image = Image {
            name: name.to_string(),
            labels,
            target: Some(target),
            created_at: None,
            updated_at: None,
        };
        let create = CreateImageRequest {
            image: Some(image.clone()),
            source_date_epoch: None,
        };
        match self
            .client()
            .images()
            .create(self.leased(create, lease))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Code::AlreadyExists => {
                let update = UpdateImageRequest {
                    image: Some(image),
                    update_mask: Some(prost_types::FieldMask {
                        paths: update_paths,
                    }),
                    source_date_epoch: None,
                };
                self.client()
                    .images()
                    .update(self.leased(update, lease))
                    .await
                    .map(|_| ())
                    .map_err(|e| self.rpc_error(format!("update image {name}"), e))
            }
            Err(e) => Err(self.rpc_error(format!("create image {name}"), e)),
        }
    }
}
