//! Reading the manifests directory: which files count, what each AddOn is
//! called, the checksum that says "changed", and the documents inside.
//!
//! Pure functions over file names and bytes, so the rules are unit-tested
//! without a server.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The extensions k3s's deploy controller reads.
const EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

/// One manifest file found in the directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestFile {
    pub path: PathBuf,
    /// The AddOn's name: the file name without its extension (`traefik.yaml` → `traefik`).
    pub addon: String,
    /// Whether `<file>.skip` sits beside it (k3s's way to disable one file).
    pub skipped: bool,
}

/// The manifests among `names` (file names in one directory), sorted by name.
/// Hidden files and editor leftovers (`.foo.yaml.swp`, `foo.yaml~`) do not count.
pub fn select(dir: &Path, names: &[String]) -> Vec<ManifestFile> {
    let mut out = BTreeMap::new();
    for name in names {
        if name.starts_with('.') {
            continue;
        }
        let Some((stem, ext)) = name.rsplit_once('.') else { continue };
        if stem.is_empty() || !EXTENSIONS.contains(&ext) {
            continue;
        }
        let skipped = names.iter().any(|n| *n == format!("{name}.skip"));
        out.insert(
            name.clone(),
            ManifestFile { path: dir.join(name), addon: addon_name(stem), skipped },
        );
    }
    out.into_values().collect()
}

/// A valid object name for the AddOn of a file stem: lowercase, characters
/// outside `[a-z0-9.-]` become `-`, trimmed to 253 characters.
pub fn addon_name(stem: &str) -> String {
    let mut s: String = stem
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' })
        .collect();
    s.truncate(253);
    let s = s.trim_matches(|c: char| c == '-' || c == '.').to_string();
    if s.is_empty() {
        "addon".into()
    } else {
        s
    }
}

/// Lowercase hex SHA-256 of a file's bytes (the AddOn's `spec.checksum`, as k3s records it).
pub fn checksum(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Why a manifest file cannot be applied.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ManifestError {
    #[error("failed to parse document {index}: {reason}")]
    Parse { index: usize, reason: String },
    #[error("document {index} has no {field}")]
    Missing { index: usize, field: &'static str },
}

/// The objects of a YAML (multi-document) or JSON file, in order. Empty
/// documents are skipped; a `kind: List` contributes its `items`.
pub fn documents(text: &str) -> Result<Vec<serde_json::Value>, ManifestError> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let index = i + 1;
        let value = serde_yaml::Value::deserialize(doc)
            .map_err(|e| ManifestError::Parse { index, reason: e.to_string() })?;
        if value.is_null() {
            continue;
        }
        let json: serde_json::Value = serde_json::to_value(&value)
            .map_err(|e| ManifestError::Parse { index, reason: e.to_string() })?;
        let items = if json.get("kind").and_then(|k| k.as_str()) == Some("List") {
            json.get("items").and_then(|i| i.as_array()).cloned().unwrap_or_default()
        } else {
            vec![json]
        };
        for obj in items {
            if !obj.is_object() {
                return Err(ManifestError::Parse { index, reason: "not an object".into() });
            }
            for (field, ptr) in [("apiVersion", "/apiVersion"), ("kind", "/kind"), ("metadata.name", "/metadata/name")] {
                if obj.pointer(ptr).and_then(|v| v.as_str()).is_none_or(str::is_empty) {
                    return Err(ManifestError::Missing { index, field });
                }
            }
            out.push(obj);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_yaml_yml_and_json_count_and_skip_files_mark_them() {
        let dir = Path::new("/m");
        let got = select(
            dir,
            &names(&["b.yml", "a.yaml", "c.json", "d.txt", ".e.yaml", "a.yaml.skip", "f.yaml~", "g.yaml.swp", ".yaml"]),
        );
        let summary: Vec<_> = got.iter().map(|m| (m.addon.as_str(), m.skipped)).collect();
        assert_eq!(summary, [("a", true), ("b", false), ("c", false)]);
        assert_eq!(got[0].path, Path::new("/m/a.yaml"));
    }

    #[test]
    fn addon_names_are_valid_object_names() {
        assert_eq!(addon_name("traefik"), "traefik");
        assert_eq!(addon_name("My_App v2"), "my-app-v2");
        assert_eq!(addon_name("__"), "addon");
    }

    #[test]
    fn documents_split_skip_empty_and_expand_lists() {
        let text = "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n---\n\
                    apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Secret, metadata: {name: b}}\n";
        let docs = documents(text).unwrap();
        let kinds: Vec<_> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["ConfigMap", "Secret"]);
        let json = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"j"}}"#;
        assert_eq!(documents(json).unwrap()[0]["metadata"]["name"], "j");
    }

    #[test]
    fn bad_documents_say_which_and_why() {
        let err = documents("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\nkind: [unclosed\n").unwrap_err();
        assert!(matches!(err, ManifestError::Parse { index: 2, .. }), "{err}");
        let err = documents("apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n").unwrap_err();
        assert_eq!(err.to_string(), "document 1 has no metadata.name");
    }

    #[test]
    fn checksum_is_sha256_hex() {
        assert_eq!(checksum(b"").len(), 64);
        assert_ne!(checksum(b"a"), checksum(b"b"));
    }
}
