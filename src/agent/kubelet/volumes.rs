//! Pod volumes on the host, under `<agent>/pods/<uid>/volumes/<name>`:
//! emptyDir (tmpfs for `medium: Memory`), hostPath, and the projected kinds
//! (configMap, secret, downwardAPI, projected with serviceAccountToken and
//! `kube-root-ca.crt`) written with kubelet's atomic swap: files live in a
//! timestamped dir, `..data` is a symlink to it replaced by rename, and
//! each top-level name is a symlink through `..data`. Every sync rewrites
//! them only when their content changed, so ConfigMap and Secret updates
//! reach running containers.
//!
//! `persistentVolumeClaim` and `nfs` volumes are `crate::storage::volumes`'
//! (hostPath/local PVs used in place, NFS mounted on the volume's dir and
//! unmounted with the pod's dir; fsGroup for `local` PVs).
//!
//! Partial: subPath mounts of projected volumes do not follow updates (as
//! in Kubernetes); tokens are refreshed on every content sync at 80 % of
//! their life only through the sync cadence; no fsGroup ownership of
//! emptyDir and projected volumes.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{KeyToPath, Pod, Volume};

use super::api::PodApi;
use super::env::secret_strings;
use crate::hostos::{FsOps, MountSpec};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct VolumeError(pub String);

fn io<'a>(what: &str, path: &'a Path) -> impl FnOnce(std::io::Error) -> VolumeError + 'a {
    let what = what.to_string();
    move |e| VolumeError(format!("failed to {what} {}: {e}", path.display()))
}

/// Files of a projected volume: relative path → (content, mode).
pub type Files = BTreeMap<String, (Vec<u8>, u32)>;

fn select(
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    mode: u32,
    what: &str,
) -> Result<Files, VolumeError> {
    let mut out = Files::new();
    match items {
        Some(items) => {
            for i in items {
                let v = data.get(&i.key).ok_or_else(|| {
                    VolumeError(format!("configuration key {:?} not found in {what}", i.key))
                })?;
                out.insert(
                    i.path.clone(),
                    (v.clone(), i.mode.map_or(mode, |m| m as u32)),
                );
            }
        }
        None => {
            for (k, v) in data {
                out.insert(k, (v, mode));
            }
        }
    }
    Ok(out)
}

fn downward(
    pod: &Pod,
    items: &[k8s_openapi::api::core::v1::DownwardAPIVolumeFile],
    mode: u32,
) -> Files {
    let mut out = Files::new();
    let fmt_map = |m: Option<&BTreeMap<String, String>>| -> String {
        m.into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v:?}\n"))
            .collect()
    };
    for i in items {
        let value = match i.field_ref.as_ref().map(|f| f.field_path.as_str()) {
            Some("metadata.name") => pod.metadata.name.clone().unwrap_or_default(),
            Some("metadata.namespace") => pod.metadata.namespace.clone().unwrap_or_default(),
            Some("metadata.uid") => pod.metadata.uid.clone().unwrap_or_default(),
            Some("metadata.labels") => fmt_map(pod.metadata.labels.as_ref()),
            Some("metadata.annotations") => fmt_map(pod.metadata.annotations.as_ref()),
            _ => String::new(),
        };
        out.insert(
            i.path.clone(),
            (value.into_bytes(), i.mode.map_or(mode, |m| m as u32)),
        );
    }
    out
}

/// The kinds of object whose keys a volume (or a projection) holds as files.
#[derive(Clone, Copy)]
enum KeySource {
    ConfigMap,
    Secret,
}

/// The files of `items` (every key when `None`) of the ConfigMap or Secret
/// `ns/name`; none when it is missing and `optional`.
async fn key_files(
    api: &dyn PodApi,
    source: KeySource,
    ns: &str,
    name: &str,
    items: Option<&Vec<KeyToPath>>,
    optional: bool,
    mode: u32,
) -> Result<Files, VolumeError> {
    let api_err = |e: super::api::ApiError| VolumeError(e.to_string());
    let (data, kind, missing) = match source {
        KeySource::ConfigMap => {
            let data = api.config_map(ns, name).await.map_err(api_err)?.map(|cm| {
                let mut data: BTreeMap<String, Vec<u8>> = cm
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .collect();
                for (k, v) in cm.binary_data.unwrap_or_default() {
                    data.insert(k, v.0);
                }
                data
            });
            (data, "ConfigMap", "configmap")
        }
        KeySource::Secret => {
            let data = api.secret(ns, name).await.map_err(api_err)?.map(|s| {
                secret_strings(&s)
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .collect()
            });
            (data, "Secret", "secret")
        }
    };
    match data {
        Some(data) => select(data, items, mode, &format!("{kind} {ns}/{name}")),
        None if optional => Ok(Files::new()),
        None => Err(VolumeError(format!("{missing} \"{name}\" not found"))),
    }
}

/// The files of a configMap/secret/downwardAPI/projected volume, or `None`
/// for the other kinds.
pub async fn projected_files(
    api: &dyn PodApi,
    pod: &Pod,
    v: &Volume,
) -> Result<Option<Files>, VolumeError> {
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    if let Some(cm) = &v.config_map {
        let mode = cm.default_mode.unwrap_or(0o644) as u32;
        return key_files(
            api,
            KeySource::ConfigMap,
            &ns,
            &cm.name,
            cm.items.as_ref(),
            cm.optional == Some(true),
            mode,
        )
        .await
        .map(Some);
    }
    if let Some(s) = &v.secret {
        let mode = s.default_mode.unwrap_or(0o644) as u32;
        let name = s.secret_name.clone().unwrap_or_default();
        return key_files(
            api,
            KeySource::Secret,
            &ns,
            &name,
            s.items.as_ref(),
            s.optional == Some(true),
            mode,
        )
        .await
        .map(Some);
    }
    if let Some(d) = &v.downward_api {
        let mode = d.default_mode.unwrap_or(0o644) as u32;
        return Ok(Some(downward(
            pod,
            d.items.as_deref().unwrap_or_default(),
            mode,
        )));
    }
    let Some(p) = &v.projected else {
        return Ok(None);
    };
    let mode = p.default_mode.unwrap_or(0o644) as u32;
    let mut files = Files::new();
    for src in p.sources.iter().flatten() {
        if let Some(cm) = &src.config_map {
            let optional = cm.optional == Some(true);
            let files_of_cm = key_files(
                api,
                KeySource::ConfigMap,
                &ns,
                &cm.name,
                cm.items.as_ref(),
                optional,
                mode,
            );
            match files_of_cm.await {
                Ok(f) => files.extend(f),
                // Published by a controller that may not run yet: degrade.
                Err(e) if cm.name == "kube-root-ca.crt" => {
                    tracing::warn!(error = %e, "kube-root-ca.crt is not published; projecting without it")
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(s) = &src.secret {
            files.extend(
                key_files(
                    api,
                    KeySource::Secret,
                    &ns,
                    &s.name,
                    s.items.as_ref(),
                    s.optional == Some(true),
                    mode,
                )
                .await?,
            );
        }
        if let Some(d) = &src.downward_api {
            files.extend(downward(pod, d.items.as_deref().unwrap_or_default(), mode));
        }
        if let Some(t) = &src.service_account_token {
            let sa = pod
                .spec
                .as_ref()
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_else(|| "default".into());
            let audiences = t.audience.clone().into_iter().collect();
            let pod_ref = (
                pod.metadata.name.as_deref().unwrap_or(""),
                pod.metadata.uid.as_deref().unwrap_or(""),
            );
            match api
                .request_token(
                    &ns,
                    &sa,
                    audiences,
                    t.expiration_seconds.unwrap_or(3607),
                    pod_ref,
                )
                .await
                .map_err(|e| VolumeError(e.to_string()))?
            {
                Some(token) => {
                    files.insert(t.path.clone(), (token.token.into_bytes(), mode));
                }
                None => {
                    tracing::warn!(namespace = %ns, service_account = %sa, "the API server has no serviceaccounts/token (404): the projected token is left out")
                }
            }
        }
    }
    Ok(Some(files))
}

fn read_current(dir: &Path) -> Option<Files> {
    let data = dir.join("..data");
    let mut out = Files::new();
    fn walk(base: &Path, rel: &str, out: &mut Files) -> std::io::Result<()> {
        for e in std::fs::read_dir(base.join(rel))? {
            let e = e?;
            let name = format!("{rel}{}", e.file_name().to_string_lossy());
            let meta = e.metadata()?;
            if meta.is_dir() {
                walk(base, &format!("{name}/"), out)?;
            } else {
                let content = std::fs::read(e.path())?;
                out.insert(name, (content, meta.permissions().mode() & 0o7777));
            }
        }
        Ok(())
    }
    walk(&data, "", &mut out).ok()?;
    Some(out)
}

/// Writes `files` into `dir` with the atomic `..data` swap; does nothing
/// when the content is unchanged. Returns whether it wrote.
pub fn write_atomic(dir: &Path, files: &Files) -> Result<bool, VolumeError> {
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    if read_current(dir).as_ref() == Some(files) {
        return Ok(false);
    }
    let stamp = format!("..{}", chrono::Utc::now().format("%Y_%m_%d_%H_%M_%S.%f"));
    let ts_dir = dir.join(&stamp);
    std::fs::create_dir_all(&ts_dir).map_err(io("create", &ts_dir))?;
    for (rel, (content, mode)) in files {
        let path = ts_dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io("create", parent))?;
        }
        std::fs::write(&path, content).map_err(io("write", &path))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode))
            .map_err(io("chmod", &path))?;
    }
    let old = std::fs::read_link(dir.join("..data")).ok();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stamp, &tmp).map_err(io("link", &tmp))?;
    std::fs::rename(&tmp, dir.join("..data")).map_err(io("swap", dir))?;
    let tops: std::collections::BTreeSet<String> = files
        .keys()
        .map(|k| k.split('/').next().unwrap_or(k).to_string())
        .collect();
    for top in &tops {
        let link = dir.join(top);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{top}"), &link)
                .map_err(io("link", &link))?;
        }
    }
    for e in std::fs::read_dir(dir).map_err(io("list", dir))?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !tops.contains(&name) {
            let _ = std::fs::remove_file(e.path());
        }
    }
    if let Some(old) = old.filter(|o| o.as_os_str() != stamp.as_str()) {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(true)
}

/// Prepares (or refreshes) every volume of the pod; returns name → host path.
pub async fn sync(
    api: &dyn PodApi,
    fs: &dyn FsOps,
    pod: &Pod,
    pod_dir: &Path,
) -> Result<BTreeMap<String, PathBuf>, VolumeError> {
    let mut out = BTreeMap::new();
    for v in pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
    {
        let dir = pod_dir.join("volumes").join(&v.name);
        if let Some(h) = &v.host_path {
            let path = PathBuf::from(&h.path);
            if matches!(h.type_.as_deref(), Some("DirectoryOrCreate")) {
                std::fs::create_dir_all(&path).map_err(io("create", &path))?;
            }
            out.insert(v.name.clone(), path);
        } else if let Some(e) = &v.empty_dir {
            if !dir.exists() {
                std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
                    .map_err(io("chmod", &dir))?;
                if e.medium.as_deref() == Some("Memory") {
                    mount_tmpfs(
                        fs,
                        &dir,
                        e.size_limit
                            .as_ref()
                            .and_then(|q| super::quantity::bytes(&q.0)),
                    )?;
                }
            }
            out.insert(v.name.clone(), dir);
        } else if v.persistent_volume_claim.is_some() || v.nfs.is_some() {
            match claim_or_nfs(api, fs, pod, v, &dir).await {
                Ok(path) => {
                    out.insert(v.name.clone(), path);
                }
                Err(e) => {
                    let msg = format!("MountVolume.SetUp failed for volume {:?} : {e}", v.name);
                    api.warn_event(pod, "FailedMount", &msg).await;
                    return Err(VolumeError(msg));
                }
            }
        } else if let Some(files) = projected_files(api, pod, v).await? {
            if write_atomic(&dir, &files)? {
                tracing::debug!(volume = %v.name, "volume content written");
            }
            out.insert(v.name.clone(), dir);
        } else {
            return Err(VolumeError(format!(
                "volume {:?}: this volume type is not supported by rk3s",
                v.name
            )));
        }
    }
    make_sub_paths(pod, &out);
    Ok(out)
}

/// kubelet creates a volume's missing `subPath` directories before the
/// container starts (the runtime would refuse a missing bind source).
fn make_sub_paths(pod: &Pod, mounts: &BTreeMap<String, PathBuf>) {
    let spec = pod.spec.as_ref();
    let containers = spec
        .into_iter()
        .flat_map(|s| s.init_containers.iter().flatten().chain(s.containers.iter()));
    for c in containers {
        for vm in c.volume_mounts.iter().flatten() {
            let (Some(sub), Some(base)) = (vm.sub_path.as_deref(), mounts.get(&vm.name)) else {
                continue;
            };
            if sub.is_empty() || sub.split('/').any(|p| p == "..") {
                continue;
            }
            let path = base.join(sub);
            if std::fs::symlink_metadata(&path).is_err() {
                if let Err(e) = std::fs::create_dir_all(&path) {
                    tracing::warn!(path = %path.display(), "failed to create the subPath: {e}");
                }
            }
        }
    }
}

/// A `persistentVolumeClaim` (hostPath, local or NFS PV) or `nfs` volume,
/// set up by `crate::storage::volumes` on the host's mounts.
async fn claim_or_nfs(
    api: &dyn PodApi,
    fs: &dyn FsOps,
    pod: &Pod,
    v: &Volume,
    dir: &Path,
) -> Result<PathBuf, String> {
    use crate::storage::volumes as sv;
    let fs_group = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|s| s.fs_group)
        .map(|g| g as u32);
    let source = match (&v.nfs, &v.persistent_volume_claim) {
        (Some(nfs), _) => sv::nfs_source(nfs, false, Vec::new()),
        (None, Some(pvc)) => {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            let claim = api
                .claim(ns, &pvc.claim_name)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("persistentvolumeclaim \"{}\" not found", pvc.claim_name))?;
            let pv_name = claim.spec.as_ref().and_then(|s| s.volume_name.clone()).unwrap_or_default();
            if pv_name.is_empty() {
                return Err(format!("PVC {ns}/{} is not bound", pvc.claim_name));
            }
            let pv = api
                .volume(&pv_name)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("persistentvolume \"{pv_name}\" not found"))?;
            sv::pv_source(&pv, pvc.read_only == Some(true)).map_err(|e| e.to_string())?
        }
        (None, None) => unreachable!("called for claim and nfs volumes only"),
    };
    sv::setup(fs, &source, dir, fs_group).map_err(|e| e.to_string())
}

fn mount_tmpfs(fs: &dyn FsOps, dir: &Path, size: Option<i64>) -> Result<(), VolumeError> {
    let opts = match size {
        Some(s) => format!("mode=0777,size={s}"),
        None => "mode=0777".into(),
    };
    fs.mount(&MountSpec::tmpfs(dir, &opts)).map_err(|e| {
        VolumeError(format!("failed to mount tmpfs on {}: {e}", dir.display()))
    })
}

/// Unmounts the pod's volumes (tmpfs, NFS) and removes its directory;
/// while anything is still mounted below it the directory stays, so a
/// failed unmount never deletes a volume's content.
pub fn remove_pod_dir(fs: &dyn FsOps, pod_dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(pod_dir.join("volumes")) {
        for e in entries.flatten() {
            // Failure (not a mount point) is expected.
            let _ = fs.unmount_detach(&e.path());
        }
    }
    if !crate::storage::volumes::unmount_all_under(fs, pod_dir) {
        tracing::warn!(dir = %pod_dir.display(), "something is still mounted in the pod's directory; keeping it");
        return;
    }
    let _ = std::fs::remove_dir_all(pod_dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writer_swaps_and_prunes() {
        let dir = tempfile::tempdir().unwrap();
        let v = dir.path().join("v");
        let mut files = Files::new();
        files.insert("a".into(), (b"1".to_vec(), 0o644));
        files.insert("b".into(), (b"2".to_vec(), 0o400));
        assert!(write_atomic(&v, &files).unwrap());
        assert!(!write_atomic(&v, &files).unwrap());
        assert_eq!(std::fs::read_to_string(v.join("a")).unwrap(), "1");
        files.remove("b");
        files.insert("a".into(), (b"changed".to_vec(), 0o644));
        assert!(write_atomic(&v, &files).unwrap());
        assert_eq!(std::fs::read_to_string(v.join("a")).unwrap(), "changed");
        assert!(std::fs::symlink_metadata(v.join("b")).is_err());
        let stamps = std::fs::read_dir(&v)
            .unwrap()
            .flatten()
            .filter(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with("..") && n != "..data"
            })
            .count();
        assert_eq!(stamps, 1);
    }

    #[tokio::test]
    async fn config_map_and_secret_keys_become_files_and_missing_objects_are_named() {
        let api = super::super::api::FakePodApi::default();
        api.add_config_map("default", "cfg", &[("a", "1"), ("b", "2")]);
        api.add_secret("default", "creds", &[("user", "bob")]);
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "default"}, "spec": {"containers": []}
        }))
        .unwrap();
        let files = |v: serde_json::Value| {
            let v: Volume = serde_json::from_value(v).unwrap();
            let (api, pod) = (&api, &pod);
            async move { projected_files(api, pod, &v).await.map(Option::unwrap) }
        };
        let file = |data: &str, mode: u32| (data.as_bytes().to_vec(), mode);

        let all = files(serde_json::json!({"name": "v", "configMap": {"name": "cfg", "defaultMode": 0o600}}));
        let all = all.await.unwrap();
        assert_eq!(all, Files::from([("a".into(), file("1", 0o600)), ("b".into(), file("2", 0o600))]));
        let picked = files(serde_json::json!({"name": "v", "configMap": {"name": "cfg",
            "items": [{"key": "b", "path": "x/b.txt", "mode": 0o400}]}}));
        assert_eq!(picked.await.unwrap(), Files::from([("x/b.txt".into(), file("2", 0o400))]));
        let secret = files(serde_json::json!({"name": "v", "secret": {"secretName": "creds"}}));
        assert_eq!(secret.await.unwrap(), Files::from([("user".into(), file("bob", 0o644))]));
        let both = files(serde_json::json!({"name": "v", "projected": {"sources": [
            {"configMap": {"name": "cfg", "items": [{"key": "a", "path": "a"}]}},
            {"secret": {"name": "creds"}},
            {"secret": {"name": "gone", "optional": true}}]}}));
        assert_eq!(
            both.await.unwrap(),
            Files::from([("a".into(), file("1", 0o644)), ("user".into(), file("bob", 0o644))])
        );

        let optional = files(serde_json::json!({"name": "v", "configMap": {"name": "nope", "optional": true}}));
        assert_eq!(optional.await.unwrap(), Files::new());
        let errors = [
            (serde_json::json!({"configMap": {"name": "nope"}}), "configmap \"nope\" not found"),
            (serde_json::json!({"secret": {"secretName": "gone"}}), "secret \"gone\" not found"),
            (
                serde_json::json!({"configMap": {"name": "cfg", "items": [{"key": "zz", "path": "z"}]}}),
                "configuration key \"zz\" not found in ConfigMap default/cfg",
            ),
            (
                serde_json::json!({"projected": {"sources": [{"secret": {"name": "creds",
                    "items": [{"key": "pass", "path": "p"}]}}]}}),
                "configuration key \"pass\" not found in Secret default/creds",
            ),
        ];
        for (mut v, want) in errors {
            v["name"] = "v".into();
            assert_eq!(files(v).await.unwrap_err().to_string(), want);
        }
    }

    #[tokio::test]
    async fn memory_empty_dirs_are_tmpfs_mounted_once_and_unmounted_on_removal() {
        use crate::hostos::fake::{FakeFsOps, FsCall};
        let dir = tempfile::tempdir().unwrap();
        let pod_dir = dir.path().join("pod");
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [], "volumes": [
                {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
                {"name": "disk", "emptyDir": {}}
            ]}
        }))
        .unwrap();
        let api = super::super::api::FakePodApi::default();
        let fs = FakeFsOps::new();
        let mounts = sync(&api, &fs, &pod, &pod_dir).await.unwrap();
        let mem = pod_dir.join("volumes/mem");
        assert_eq!(mounts["mem"], mem);
        assert!(mounts["disk"].is_dir());
        // A second sync finds the directory and mounts nothing more.
        sync(&api, &fs, &pod, &pod_dir).await.unwrap();
        assert_eq!(
            fs.calls(),
            vec![FsCall::Mount(MountSpec::tmpfs(&mem, "mode=0777,size=67108864"))]
        );
        remove_pod_dir(&fs, &pod_dir);
        assert!(fs.mounted().is_empty());
        assert!(!pod_dir.exists());
    }

    #[test]
    fn removal_unmounts_everything_below_the_pod_through_the_one_seam() {
        use crate::hostos::fake::{FakeFsOps, FsCall};
        let dir = tempfile::tempdir().unwrap();
        let pod_dir = dir.path().join("pod");
        let nested = pod_dir.join("volumes/data/inner");
        std::fs::create_dir_all(&nested).unwrap();
        let fs = FakeFsOps::new();
        fs.mount_nfs("srv:/x", &nested, &[]).unwrap();
        remove_pod_dir(&fs, &pod_dir);
        assert!(fs.mounted().is_empty());
        assert!(!pod_dir.exists());
        assert!(fs.calls().contains(&FsCall::UnmountDetach(nested)));
    }

    #[tokio::test]
    async fn a_failed_tmpfs_mount_is_a_volume_error() {
        let dir = tempfile::tempdir().unwrap();
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [], "volumes": [{"name": "mem", "emptyDir": {"medium": "Memory"}}]}
        }))
        .unwrap();
        let fs = crate::hostos::fake::FakeFsOps::new();
        fs.fail_next_mount(std::io::ErrorKind::PermissionDenied);
        let api = super::super::api::FakePodApi::default();
        let err = sync(&api, &fs, &pod, dir.path()).await.unwrap_err();
        assert!(err.0.starts_with("failed to mount tmpfs on"), "{}", err.0);
    }
}
