//! Patches: Kubernetes strategic merge patch for built-in kinds, JSON merge
//! patch (RFC 7386) and JSON patch (RFC 6902). Pure functions over JSON.
//!
//! Strategic merge follows apimachinery's `strategicpatch`: maps merge
//! recursively and `null` deletes; lists tagged `patchStrategy: merge` (see
//! [`meta`]) merge by their merge key (primitive lists as a set union), other
//! lists are replaced. Directives: `$patch` (`replace`/`merge`/`delete`, on
//! maps and list items), `$retainKeys`, `$deleteFromPrimitiveList/<f>` and
//! `$setElementOrder/<f>`. Types are navigated with the k8s-openapi schemas,
//! reduced once to a small field → child-type graph.
//! Partial: the metadata table covers the commonly patched lists only;
//! custom resources are refused ([`supports_strategic`]) as Kubernetes does.

pub mod json;
pub mod meta;

mod merge;

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::Value;

pub use json::{json_merge_patch, json_patch};
pub use merge::strategic_merge;

/// The kind being patched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TypeKey<'a> {
    /// "" for the core group.
    pub group: &'a str,
    pub version: &'a str,
    pub kind: &'a str,
}

/// Why a patch failed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PatchError {
    /// The patch is malformed for this object (HTTP 400/422).
    #[error("failed to apply patch: {0}")]
    Invalid(String),
    /// Strategic merge on a kind without patch metadata (HTTP 415).
    #[error("failed to apply patch: strategic merge patch is not supported for {0}")]
    Unsupported(String),
    /// A JSON patch `test` operation did not match (HTTP 422).
    #[error("failed to apply patch: testing value at {0} failed")]
    TestFailed(String),
}

impl PatchError {
    /// The HTTP status kube-apiserver answers with.
    pub fn http_code(&self) -> u16 {
        match self {
            PatchError::Invalid(_) => 422,
            PatchError::Unsupported(_) => 415,
            PatchError::TestFailed(_) => 422,
        }
    }
}

/// Field → child schema name, per schema name, and the kinds' root types.
pub(crate) struct TypeGraph {
    fields: HashMap<String, HashMap<String, String>>,
    roots: HashMap<(&'static str, &'static str, &'static str), String>,
}

impl TypeGraph {
    fn build() -> Self {
        let (schemas, roots) = crate::apiserver::openapi::all_builtin_schemas();
        let mut fields = HashMap::new();
        for (name, schema) in &schemas {
            let Some(props) = schema.get("properties").and_then(Value::as_object) else {
                continue;
            };
            let mut children = HashMap::new();
            for (field, prop) in props {
                if let Some(child) = child_type(prop) {
                    children.insert(field.clone(), child);
                }
            }
            if !children.is_empty() {
                fields.insert(name.clone(), children);
            }
        }
        let roots = roots
            .into_iter()
            .map(|(k, name)| ((k.group, k.version, k.kind), name))
            .collect();
        drop(schemas);
        release_freed_memory();
        TypeGraph { fields, roots }
    }

    pub(crate) fn get() -> &'static TypeGraph {
        static GRAPH: OnceLock<TypeGraph> = OnceLock::new();
        GRAPH.get_or_init(TypeGraph::build)
    }

    pub(crate) fn root(&self, key: &TypeKey) -> Option<&str> {
        self.roots
            .iter()
            .find(|((g, v, k), _)| *g == key.group && *v == key.version && *k == key.kind)
            .map(|(_, n)| n.as_str())
    }

    pub(crate) fn child(&self, owner: &str, field: &str) -> Option<&str> {
        self.fields.get(owner)?.get(field).map(String::as_str)
    }
}

/// Building the graph briefly holds every built-in schema (~10 MB); hand
/// the freed pages back to the OS so the peak does not stay resident.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap pages; it has no
    // preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The schema name a property points at, through `allOf`, `items` and
/// `additionalProperties`.
fn child_type(prop: &Value) -> Option<String> {
    let r = prop
        .get("$ref")
        .or_else(|| prop.pointer("/allOf/0/$ref"))
        .or_else(|| prop.pointer("/items/$ref"))
        .or_else(|| prop.pointer("/items/allOf/0/$ref"))
        .or_else(|| prop.pointer("/additionalProperties/$ref"))
        .or_else(|| prop.pointer("/additionalProperties/allOf/0/$ref"))?;
    r.as_str()?
        .strip_prefix("#/components/schemas/")
        .map(str::to_string)
}

/// Whether strategic merge patch is served for this kind (built-ins only;
/// Kubernetes answers 415 for custom resources).
pub fn supports_strategic(kind: &TypeKey) -> bool {
    TypeGraph::get().root(kind).is_some()
}
