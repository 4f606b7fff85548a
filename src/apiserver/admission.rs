//! The admission seam: every create and update (PUT, PATCH, apply, and
//! their subresources) passes its object through an ordered chain of
//! plug-ins before anything is stored, as kube-apiserver's admission
//! and registry strategies do.
//!
//! The chain runs in order: mutating plug-ins (defaulting, ClusterIP
//! allocation, managed fields) first, validating ones last. A plug-in
//! answers with the `Status` the client gets (422 Invalid with causes, 403,
//! …) or adds `Warning` headers. Plug-ins see `dry_run` and must not keep
//! side effects (allocations) when it is set. The chain is assembled in
//! `crate::server::assemble`.

use serde_json::Value;

use super::auth::UserInfo;
use super::registry::ResourceDef;
use super::status::ApiStatus;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
}

/// `fieldValidation` (kubectl sends `Strict` by default for apply/create).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    /// The server's default when the parameter is absent.
    #[default]
    Warn,
    Strict,
}

impl FieldValidation {
    /// Parses the query parameter; an unknown value is a 400 as in kube.
    pub fn parse(v: Option<&str>) -> Result<Self, ApiStatus> {
        match v {
            None | Some("") => Ok(Self::Warn),
            Some("Ignore") => Ok(Self::Ignore),
            Some("Warn") => Ok(Self::Warn),
            Some("Strict") => Ok(Self::Strict),
            Some(other) => Err(ApiStatus::bad_request(format!(
                "fieldValidation parameter unsupported: {other}. Supported values: Ignore, Warn, Strict"
            ))),
        }
    }
}

/// What a plug-in knows about the write.
pub struct AdmissionRequest<'a> {
    pub operation: Operation,
    pub def: &'a ResourceDef,
    /// `status`, `scale`, … or `None` for the main resource.
    pub subresource: Option<&'a str>,
    pub namespace: Option<&'a str>,
    /// Empty on a create with only `generateName`.
    pub name: &'a str,
    /// The stored object, on updates.
    pub old: Option<&'a Value>,
    pub user: &'a UserInfo,
    pub dry_run: bool,
    pub field_validation: FieldValidation,
    /// The `fieldManager` query parameter, if any.
    pub field_manager: Option<&'a str>,
}

#[cfg(test)]
impl<'a> AdmissionRequest<'a> {
    /// A request as tests build it: a create, or an update when there is an
    /// `old` object, of the main resource, with strict field validation,
    /// no dry run and no field manager (change those with `..`).
    pub fn for_test(
        def: &'a ResourceDef,
        namespace: Option<&'a str>,
        name: &'a str,
        old: Option<&'a Value>,
        user: &'a UserInfo,
    ) -> Self {
        AdmissionRequest {
            operation: if old.is_some() {
                Operation::Update
            } else {
                Operation::Create
            },
            def,
            subresource: None,
            namespace,
            name,
            old,
            user,
            dry_run: false,
            field_validation: FieldValidation::Strict,
            field_manager: None,
        }
    }
}

pub trait Admission: Send + Sync {
    /// A short name for logs, e.g. `defaults`, `validation`.
    fn name(&self) -> &'static str;
    /// Mutates and/or checks `obj`; pushes any `Warning` header texts.
    fn admit(
        &self,
        req: &AdmissionRequest<'_>,
        obj: &mut Value,
        warnings: &mut Vec<String>,
    ) -> Result<(), ApiStatus>;
}

/// The ordered plug-in list.
pub type AdmissionChain = Vec<std::sync::Arc<dyn Admission>>;

/// Runs every plug-in in order; stops at the first refusal.
pub fn run_chain(
    chain: &[std::sync::Arc<dyn Admission>],
    req: &AdmissionRequest<'_>,
    obj: &mut Value,
) -> Result<Vec<String>, ApiStatus> {
    let mut warnings = Vec::new();
    for plugin in chain {
        plugin.admit(req, obj, &mut warnings)?;
    }
    Ok(warnings)
}

/// Adds `Warning: 299 - "<text>"` headers, as kube-apiserver does.
pub fn add_warning_headers(headers: &mut http::HeaderMap, warnings: &[String]) {
    for w in warnings {
        let text = w.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(v) = http::HeaderValue::from_str(&format!("299 - \"{text}\"")) {
            headers.append(http::header::WARNING, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    struct SetLabel;
    impl Admission for SetLabel {
        fn name(&self) -> &'static str {
            "set-label"
        }
        fn admit(
            &self,
            _: &AdmissionRequest<'_>,
            obj: &mut Value,
            w: &mut Vec<String>,
        ) -> Result<(), ApiStatus> {
            obj["metadata"]["labels"]["a"] = "b".into();
            w.push("labelled \"a\"".into());
            Ok(())
        }
    }
    struct Refuse;
    impl Admission for Refuse {
        fn name(&self) -> &'static str {
            "refuse"
        }
        fn admit(
            &self,
            _: &AdmissionRequest<'_>,
            _: &mut Value,
            _: &mut Vec<String>,
        ) -> Result<(), ApiStatus> {
            Err(ApiStatus::bad_request("no"))
        }
    }

    #[test]
    fn chain_runs_in_order_and_stops_at_a_refusal() {
        let def = crate::apiserver::builtin::builtin_registry()
            .lookup("", "v1", "configmaps")
            .unwrap();
        let user = UserInfo::default();
        let req = AdmissionRequest::for_test(&def, Some("default"), "x", None, &user);
        let mut obj = serde_json::json!({"metadata": {}});
        let chain: AdmissionChain = vec![Arc::new(SetLabel)];
        assert_eq!(
            run_chain(&chain, &req, &mut obj).unwrap(),
            vec!["labelled \"a\"".to_string()]
        );
        assert_eq!(obj["metadata"]["labels"]["a"], "b");
        let chain: AdmissionChain = vec![Arc::new(Refuse), Arc::new(SetLabel)];
        let mut obj = serde_json::json!({"metadata": {}});
        assert_eq!(run_chain(&chain, &req, &mut obj).unwrap_err().code, 400);
        assert!(obj["metadata"].get("labels").is_none());
        let mut h = http::HeaderMap::new();
        add_warning_headers(&mut h, &["unknown field \"spec.x\"".into()]);
        assert_eq!(
            h[http::header::WARNING],
            "299 - \"unknown field \\\"spec.x\\\"\""
        );
    }

    #[test]
    fn field_validation_parses_like_kube() {
        assert_eq!(FieldValidation::parse(None).unwrap(), FieldValidation::Warn);
        assert_eq!(
            FieldValidation::parse(Some("Strict")).unwrap(),
            FieldValidation::Strict
        );
        assert_eq!(
            FieldValidation::parse(Some("strict")).unwrap_err().code,
            400
        );
    }
}
