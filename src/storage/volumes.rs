//! Claim and NFS volumes for the kubelet: what a pod's `persistentVolumeClaim`
//! or `nfs` volume is on the host, and setting it up under the pod's volume
//! directory through the `crate::hostos::FsOps` seam.
//!
//! - hostPath PVs (local-path's) are the host directory itself (created
//!   when the PV says `DirectoryOrCreate`); `local` PVs likewise, and must
//!   exist; both are bind-mounted into containers by the runtime.
//! - NFS (a pod's `nfs:` or an NFS PV) is mounted on
//!   `<pod>/volumes/<name>` with the PV's `mountOptions` (`ro` when the
//!   volume or the claim reference is read-only). An existing mount there
//!   is re-used (an agent restart), never mounted twice.
//! - fsGroup: as kubelet, only volume kinds that support ownership
//!   management (`local` PVs here; not hostPath, not NFS) get the group
//!   and group permissions (`SetVolumeOwnership`).
//!
//! Unmounting happens when the pod's directory is removed
//! ([`unmount_all_under`]): anything still mounted below it keeps the
//! directory in place, so a failed unmount can never delete NFS content.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{NFSVolumeSource, PersistentVolume};

use super::mount::MountError;
use crate::hostos::FsOps;

/// What a volume is on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A host directory used as is (`create`: make it when missing).
    HostDir { path: PathBuf, create: bool },
    /// A `local` PV's directory, which gets fsGroup ownership.
    Local { path: PathBuf },
    Nfs { server: String, path: String, read_only: bool, options: Vec<String> },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VolumeError {
    #[error("{0}")]
    Mount(#[from] MountError),
    #[error("failed to {0} {1}: {2}")]
    Io(&'static str, String, String),
    #[error("persistentvolume {0:?} has no volume source rk3s can mount (hostPath, local or nfs)")]
    Unsupported(String),
}

fn io<'a>(what: &'static str, p: &'a Path) -> impl FnOnce(std::io::Error) -> VolumeError + 'a {
    move |e| VolumeError::Io(what, p.display().to_string(), e.to_string())
}

pub fn nfs_source(nfs: &NFSVolumeSource, read_only: bool, options: Vec<String>) -> Source {
    Source::Nfs {
        server: nfs.server.clone(),
        path: nfs.path.clone(),
        read_only: read_only || nfs.read_only == Some(true),
        options,
    }
}

/// The host source of a bound PV; `read_only` is the pod's claim reference's.
pub fn pv_source(pv: &PersistentVolume, read_only: bool) -> Result<Source, VolumeError> {
    let name = pv.metadata.name.clone().unwrap_or_default();
    let spec = pv.spec.clone().unwrap_or_default();
    if let Some(h) = &spec.host_path {
        return Ok(Source::HostDir {
            path: PathBuf::from(&h.path),
            create: h.type_.as_deref() == Some("DirectoryOrCreate"),
        });
    }
    if let Some(l) = &spec.local {
        return Ok(Source::Local { path: PathBuf::from(&l.path) });
    }
    if let Some(n) = &spec.nfs {
        return Ok(nfs_source(n, read_only, spec.mount_options.clone().unwrap_or_default()));
    }
    Err(VolumeError::Unsupported(name))
}

/// Sets the volume up; `dir` is `<pod>/volumes/<name>`. Returns the host
/// path containers mount.
pub fn setup(
    mounter: &dyn FsOps,
    source: &Source,
    dir: &Path,
    fs_group: Option<u32>,
) -> Result<PathBuf, VolumeError> {
    match source {
        Source::HostDir { path, create } => {
            if *create && !path.is_dir() {
                std::fs::create_dir_all(path).map_err(io("create", path))?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777))
                    .map_err(io("chmod", path))?;
            }
            Ok(path.clone())
        }
        Source::Local { path } => {
            if !path.is_dir() {
                return Err(VolumeError::Io(
                    "use",
                    path.display().to_string(),
                    "the local volume's path does not exist on this node".into(),
                ));
            }
            if let Some(gid) = fs_group {
                set_ownership(path, gid)?;
            }
            Ok(path.clone())
        }
        Source::Nfs { server, path, read_only, options } => {
            if mounter.is_mount_point(dir) {
                return Ok(dir.to_path_buf());
            }
            std::fs::create_dir_all(dir).map_err(io("create", dir))?;
            let mut opts = options.clone();
            if *read_only && !opts.iter().any(|o| o == "ro") {
                opts.push("ro".into());
            }
            // `[v6addr]:/path` needs brackets, as kubelet writes it.
            let host = if server.contains(':') && !server.starts_with('[') {
                format!("[{server}]")
            } else {
                server.clone()
            };
            let device = format!("{host}:{path}");
            mounter
                .mount_nfs(&device, dir, &opts)
                .map_err(|e| MountError::mount(&device, dir, e))?;
            Ok(dir.to_path_buf())
        }
    }
}

/// kubelet's `SetVolumeOwnership` (fsGroupChangePolicy `Always`): every
/// file and directory gets group `gid`, group read-write (and execute and
/// setgid on directories).
pub fn set_ownership(root: &Path, gid: u32) -> Result<(), VolumeError> {
    fn walk(p: &Path, gid: u32) -> Result<(), VolumeError> {
        let meta = std::fs::symlink_metadata(p).map_err(io("stat", p))?;
        if meta.file_type().is_symlink() {
            return Ok(());
        }
        if meta.gid() != gid {
            std::os::unix::fs::lchown(p, None, Some(gid)).map_err(io("chown", p))?;
        }
        let mut mode = meta.mode() & 0o7777 | 0o060;
        if meta.is_dir() {
            mode |= 0o2010;
        }
        if mode != meta.mode() & 0o7777 {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).map_err(io("chmod", p))?;
        }
        if meta.is_dir() {
            for e in std::fs::read_dir(p).map_err(io("list", p))?.flatten() {
                walk(&e.path(), gid)?;
            }
        }
        Ok(())
    }
    walk(root, gid)
}

/// Unmounts everything mounted at or below `dir`, deepest first; returns
/// whether nothing is mounted there any more (only then may `dir` go).
pub fn unmount_all_under(mounter: &dyn FsOps, dir: &Path) -> bool {
    let mut mounts = mounter.mounts_under(dir);
    mounts.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for m in &mounts {
        if let Err(e) = mounter.unmount_detach(m) {
            tracing::warn!("{}", MountError::unmount(m, e));
        }
    }
    mounter.mounts_under(dir).is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostos::fake::{FakeFsOps, FsCall};
    use serde_json::json;

    fn nfs_pv() -> PersistentVolume {
        serde_json::from_value(json!({"metadata": {"name": "nas"},
            "spec": {"nfs": {"server": "10.0.0.5", "path": "/export"}, "mountOptions": ["nfsvers=4.1"]}}))
        .unwrap()
    }

    #[test]
    fn nfs_is_mounted_once_with_the_pv_options_and_reused() {
        let m = FakeFsOps::new();
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("pods/u/volumes/data");
        let src = pv_source(&nfs_pv(), true).unwrap();
        assert_eq!(setup(&m, &src, &target, None).unwrap(), target);
        assert_eq!(setup(&m, &src, &target, None).unwrap(), target);
        let mount = FsCall::MountNfs {
            source: "10.0.0.5:/export".into(),
            target: target.clone(),
            options: vec!["nfsvers=4.1".into(), "ro".into()],
        };
        assert_eq!(m.calls(), vec![mount.clone()]);
        assert!(unmount_all_under(&m, &dir.path().join("pods/u")));
        assert!(!m.is_mount_point(&target));
        assert_eq!(m.calls(), vec![mount, FsCall::UnmountDetach(target)]);
    }

    #[test]
    fn a_missing_nfs_helper_is_named() {
        let m = FakeFsOps::new().without_nfs_helper();
        let dir = tempfile::tempdir().unwrap();
        let src = nfs_source(&NFSVolumeSource { server: "fd00::5".into(), path: "/x".into(), read_only: None }, false, vec![]);
        let err = setup(&m, &src, &dir.path().join("v"), None).unwrap_err();
        assert!(err.to_string().contains("nfs-common"), "{err}");
        assert!(matches!(&m.calls()[0], FsCall::MountNfs { source, .. } if source == "[fd00::5]:/x"));
    }

    #[test]
    fn hostpath_pvs_are_created_and_local_ones_get_the_fs_group() {
        let m = FakeFsOps::new();
        let dir = tempfile::tempdir().unwrap();
        let pv: PersistentVolume = serde_json::from_value(json!({"metadata": {"name": "p"},
            "spec": {"hostPath": {"path": dir.path().join("h").to_str().unwrap(), "type": "DirectoryOrCreate"}}})).unwrap();
        let path = setup(&m, &pv_source(&pv, false).unwrap(), &dir.path().join("v"), Some(1234)).unwrap();
        assert!(path.is_dir());
        assert!(m.calls().is_empty());
        let local = dir.path().join("l");
        std::fs::create_dir_all(local.join("sub")).unwrap();
        std::fs::write(local.join("sub/f"), b"x").unwrap();
        setup(&m, &Source::Local { path: local.clone() }, &dir.path().join("v2"), Some(1234)).unwrap();
        let f = std::fs::metadata(local.join("sub/f")).unwrap();
        assert_eq!(f.gid(), 1234);
        assert_eq!(f.mode() & 0o060, 0o060);
        assert_eq!(std::fs::metadata(local.join("sub")).unwrap().mode() & 0o2000, 0o2000);
        let missing = Source::Local { path: dir.path().join("nope") };
        assert!(setup(&m, &missing, &dir.path().join("v3"), None).is_err());
    }
}
