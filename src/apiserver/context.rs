//! The request context every verb handler shares: the server's state
//! ([`AppState`]), one parsed resource request ([`Ctx`]) and the helpers all
//! handlers use (`store_err`, `check_dry_run`). It sits below `rest`,
//! `delete`, `streaming`, `subresources` and `crd`, so that none of them
//! imports another's handlers.

use std::collections::HashMap;
use std::sync::Arc;

use axum::response::Response;
use http::{HeaderMap, StatusCode};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::codec::{self, Rendering};
use super::keys;
use super::objects;
use super::registry::{Registry, ResourceDef};
use super::selectors::{FieldSelector, LabelSelector, Selectors};
use super::status::{ApiStatus, Target};
use super::table::IncludeObject;
use crate::store::{Store, StoreError};

pub struct AppState {
    pub store: Arc<dyn Store>,
    pub registry: Arc<Registry>,
    pub shutdown: CancellationToken,
    pub authenticator: Arc<dyn super::auth::Authenticator>,
    pub authorizer: Arc<dyn super::auth::Authorizer>,
    /// The max-in-flight limit for non-watch requests (429 when exhausted).
    pub inflight: Arc<tokio::sync::Semaphore>,
    /// Plug-ins every create and update passes through (see `admission`).
    pub admission: super::admission::AdmissionChain,
    /// Reaches kubelets for `pods/log`, `exec`, … (the node tunnels).
    pub node_dialer: Option<Arc<dyn super::streaming::NodeDialer>>,
    /// Where `metrics.k8s.io` gets each node's figures; `None`: disabled.
    pub metrics: Option<Arc<dyn crate::metrics::scrape::SummarySource>>,
    /// The Prometheus metrics served on `/metrics` (see `telemetry`).
    pub telemetry: Arc<crate::metrics::prom::Registry>,
    /// Which in-process components run (`componentstatuses`).
    pub components: Arc<super::componentstatus::Components>,
}

/// kube-apiserver's default `--max-requests-inflight`.
pub const MAX_IN_FLIGHT: usize = 400;

/// One resource request, parsed.
pub(crate) struct Ctx {
    pub(crate) state: Arc<AppState>,
    pub(crate) def: Arc<ResourceDef>,
    pub(crate) namespace: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) sub: Option<String>,
    pub(crate) query: HashMap<String, String>,
    pub(crate) headers: HeaderMap,
    /// Who is asking (from the authenticator).
    pub(crate) user: super::auth::UserInfo,
}

pub(crate) fn store_err(e: StoreError) -> ApiStatus {
    match e {
        StoreError::Compacted {
            requested,
            compacted,
        } => ApiStatus::expired(requested, compacted),
        StoreError::FutureRevision { requested, current } => {
            ApiStatus::too_large_resource_version(requested, current)
        }
        other => ApiStatus::internal(other.to_string()),
    }
}

impl Ctx {
    pub(crate) fn key(&self) -> String {
        keys::object_key(
            &self.def,
            self.namespace.as_deref(),
            self.name.as_deref().unwrap_or(""),
        )
    }
    pub(crate) fn target<'a>(&'a self, name: &'a str) -> Target<'a> {
        Target::of(&self.def, name)
    }
    /// The current record at `key` and its object, or the kind's 404; the
    /// first step of every read-modify-CAS loop.
    pub(crate) fn read_current(
        &self,
        key: &str,
        name: &str,
    ) -> Result<(crate::store::Record, Value), ApiStatus> {
        let rec = self
            .state
            .store
            .get(key)
            .map_err(store_err)?
            .ok_or_else(|| ApiStatus::not_found(self.target(name)))?;
        let obj = objects::from_record(&self.def, &rec)?;
        Ok((rec, obj))
    }
    pub(crate) fn q(&self, k: &str) -> Option<&str> {
        self.query
            .get(k)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }
    pub(crate) fn dry_run(&self) -> bool {
        self.q("dryRun") == Some("All")
    }
    /// Runs the admission chain on an object about to be written.
    pub(crate) fn admit(
        &self,
        operation: super::admission::Operation,
        name: &str,
        old: Option<&Value>,
        obj: &mut Value,
    ) -> Result<Vec<String>, ApiStatus> {
        let req = super::admission::AdmissionRequest {
            operation,
            def: &self.def,
            subresource: self.sub.as_deref(),
            namespace: self.namespace.as_deref(),
            name,
            old,
            user: &self.user,
            dry_run: self.dry_run(),
            field_validation: super::admission::FieldValidation::parse(self.q("fieldValidation"))?,
            field_manager: self.q("fieldManager").or_else(|| {
                self.headers
                    .get(http::header::USER_AGENT)
                    .and_then(|v| v.to_str().ok())
                    .map(super::fieldmanager::manager_from_user_agent)
                    .filter(|m| !m.is_empty())
            }),
        };
        super::admission::run_chain(&self.state.admission, &req, obj)
            .map_err(|e| self.patch_strict_error(e, obj))
    }
    /// A PATCH whose result has unknown fields or a value of the wrong type
    /// fails as kube's patcher does: 422 on the field `patch` (a create or
    /// PUT keeps the 400).
    fn patch_strict_error(&self, e: ApiStatus, obj: &Value) -> ApiStatus {
        let is_patch = self
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.contains("patch"));
        let Some(at) = e
            .message
            .find("strict decoding error: ")
            .or_else(|| e.message.find("json: cannot unmarshal "))
        else {
            return e;
        };
        if !is_patch || e.code != 400 {
            return e;
        }
        let value = serde_json::to_string(&serde_json::to_string(obj).unwrap_or_default())
            .unwrap_or_default();
        ApiStatus::invalid(
            "",
            "",
            "",
            vec![super::status::Cause {
                reason: "FieldValueInvalid".into(),
                message: format!("Invalid value: {value}: {}", &e.message[at..]),
                field: "patch".into(),
            }],
        )
    }
    /// `respond` with admission warnings as `Warning` headers.
    pub(crate) fn respond_warned(
        &self,
        code: StatusCode,
        v: &Value,
        warnings: &[String],
    ) -> Response {
        let mut r = self.respond(code, v);
        super::admission::add_warning_headers(r.headers_mut(), warnings);
        r
    }
    pub(crate) fn include(&self) -> IncludeObject {
        match self.q("includeObject") {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
    pub(crate) fn respond(&self, code: StatusCode, v: &Value) -> Response {
        let yaml = matches!(codec::rendering(&self.headers), Ok(Rendering::Yaml));
        codec::respond(&self.headers, code, v, yaml)
    }
    pub(crate) fn selectors(&self) -> Result<Selectors, ApiStatus> {
        let labels = LabelSelector::parse(self.q("labelSelector").unwrap_or(""))
            .map_err(ApiStatus::bad_request)?;
        let fields = FieldSelector::parse(
            self.q("fieldSelector").unwrap_or(""),
            &self.def.group,
            &self.def.plural,
        )
        .map_err(ApiStatus::bad_request)?;
        Ok(Selectors { labels, fields })
    }
}

/// `dryRun` may only be `All`: kube-apiserver's `ValidateDryRun`, a 422 on
/// the options kind (`CreateOptions`, `DeleteOptions`, …).
pub(crate) fn check_dry_run(options_kind: &str, values: &[String]) -> Result<(), ApiStatus> {
    let bad: Vec<&String> = values.iter().filter(|v| *v != "All").collect();
    if bad.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
    Err(ApiStatus::invalid(
        options_kind,
        "meta.k8s.io",
        "",
        vec![super::status::Cause {
            reason: "FieldValueNotSupported".into(),
            message: format!(
                "Unsupported value: []string{{{}}}: supported values: \"All\"",
                list.join(", ")
            ),
            field: "dryRun".into(),
        }],
    ))
}

/// The rendering `Accept` asks for (JSON when it cannot be served; the
/// router refused those with a 406 before any handler runs).
pub(crate) fn rendering(ctx: &Ctx) -> Rendering {
    codec::rendering(&ctx.headers).unwrap_or(Rendering::Json)
}

/// Whether the request asks for a Table (`as=Table`).
pub(crate) fn table_wanted(ctx: &Ctx) -> bool {
    matches!(rendering(ctx), Rendering::Table)
}

/// Whether the request's kind is a custom resource (served from a CRD).
pub(crate) fn is_custom(ctx: &Ctx) -> bool {
    ctx.state
        .registry
        .custom(&ctx.def.group, &ctx.def.version, &ctx.def.plural)
        .is_some()
}

