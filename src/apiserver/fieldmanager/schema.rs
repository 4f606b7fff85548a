//! The type information field sets and apply merges need: for a field of a
//! type, the type of its value and, when it holds a list, how the list is
//! identified (atomic, a set of scalars, or a map keyed by some fields).
//!
//! Built-in kinds use the k8s-openapi schemas reduced by `strategic` and its
//! patch-metadata table; anything else (custom resources) is untyped: every
//! list is atomic and every object a granular map, as Kubernetes treats
//! schemaless fields. The crd helper plugs a structural-schema-based
//! [`Schema`] into [`for_def`].

use crate::apiserver::registry::ResourceDef;
use crate::apiserver::strategic::{meta, TypeGraph, TypeKey};

/// An opaque type name (an OpenAPI schema name for built-ins); `None` when
/// unknown.
pub type TypeRef = Option<String>;

/// How a list's elements are identified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListKind {
    /// Replaced and owned as a whole.
    Atomic,
    /// A set of scalars (`v:` elements).
    Set,
    /// Objects identified by these key fields (`k:` elements).
    Map(Vec<String>),
}

pub trait Schema: Send + Sync {
    /// The type of the whole object.
    fn root(&self) -> TypeRef;
    /// The type of `owner.field` (for lists and maps: of their elements).
    fn field_type(&self, owner: &TypeRef, field: &str) -> TypeRef;
    /// How the list in `owner.field` is identified.
    fn list_kind(&self, owner: &TypeRef, field: &str) -> ListKind;
}

/// A built-in kind, typed by its OpenAPI schema.
pub struct Builtin {
    root: String,
}

impl Builtin {
    pub fn for_kind(key: &TypeKey<'_>) -> Option<Builtin> {
        TypeGraph::get().root(key).map(|r| Builtin {
            root: r.to_string(),
        })
    }
}

impl Schema for Builtin {
    fn root(&self) -> TypeRef {
        Some(self.root.clone())
    }
    fn field_type(&self, owner: &TypeRef, field: &str) -> TypeRef {
        let owner = owner.as_deref()?;
        TypeGraph::get().child(owner, field).map(str::to_string)
    }
    fn list_kind(&self, owner: &TypeRef, field: &str) -> ListKind {
        let Some(m) = owner.as_deref().and_then(|o| meta::lookup(o, field)) else {
            // Untagged lists are atomic in server-side apply.
            return ListKind::Atomic;
        };
        match m.list_type {
            "map" if !m.map_keys.is_empty() => {
                ListKind::Map(m.map_keys.iter().map(|k| k.to_string()).collect())
            }
            "set" => ListKind::Set,
            "atomic" => ListKind::Atomic,
            _ if !m.merge_key.is_empty() => ListKind::Map(vec![m.merge_key.to_string()]),
            _ if m.strategy.contains("merge") => ListKind::Set,
            _ => ListKind::Atomic,
        }
    }
}

/// Schemaless objects: lists atomic, objects granular.
pub struct Untyped;

impl Schema for Untyped {
    fn root(&self) -> TypeRef {
        None
    }
    fn field_type(&self, _: &TypeRef, _: &str) -> TypeRef {
        None
    }
    fn list_kind(&self, _: &TypeRef, _: &str) -> ListKind {
        ListKind::Atomic
    }
}

/// The schema for a served kind. Custom resources are untyped until the
/// crd helper adds a branch here returning a schema built from the CRD's
/// `x-kubernetes-list-type`/`x-kubernetes-list-map-keys`.
pub fn for_def(def: &ResourceDef) -> Box<dyn Schema> {
    let key = TypeKey {
        group: &def.group,
        version: &def.version,
        kind: &def.kind,
    };
    match Builtin::for_kind(&key) {
        Some(b) => Box::new(b),
        None => Box::new(Untyped),
    }
}
