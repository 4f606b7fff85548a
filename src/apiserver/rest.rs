//! Generic REST over the registry: `/api/v1/...` and `/apis/G/V/...` for
//! every kind (DELETE lives in `delete.rs`, watch in `watch.rs`),
//! namespaced and cluster-scoped.
//!
//! Done: get, list (label/field selectors, limit/continue over a snapshot),
//! create (generateName, uid, creationTimestamp, generation, namespace checks,
//! dryRun), update (PUT, resourceVersion conflicts, status split), patch (merge,
//! JSON and strategic merge through `strategic`; server-side apply through
//! `fieldmanager`),
//! delete (preconditions, finalizers, propagationPolicy finalizers), watch
//! (initial ADDED, selectors on old and new objects, timeoutSeconds, 410).
//! Also: JSON patch, deletecollection, pod graceful deletion (bound pods wait
//! for their kubelet), Table renderings, the auth seam (see `crate::auth`) and
//! a max-in-flight limiter. Writes that change nothing are not stored.
//! Partial: DELETE always returns the object (never a Status); events.k8s.io events share core storage without shape
//! conversion.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use http::{HeaderMap, Method, StatusCode};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::codec::{self, Rendering};
use super::keys;
use super::objects::{self, meta_mut, meta_str};
use super::registry::{Registry, ResourceDef};
use super::selectors::{FieldSelector, LabelSelector, Selectors};
use super::status::{ApiStatus, Target};
use super::table::{self, IncludeObject};
use crate::store::{ListOptions, Store, StoreError};

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
}

/// kube-apiserver's default `--max-requests-inflight`.
pub const MAX_IN_FLIGHT: usize = 400;

/// The namespaces every cluster has from the first start.
pub fn bootstrap_namespaces(store: &dyn Store) {
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let obj = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": objects::now_rfc3339(),
                         "labels": {"kubernetes.io/metadata.name": ns}},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
        match store.create(&keys::namespace_key(ns), &objects::to_stored(&obj)) {
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => tracing::warn!("failed to create namespace {ns}: {e}"),
        }
    }
}

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
    fn include(&self) -> IncludeObject {
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

/// A parsed resource path: the kind, namespace, name, subresource, and
/// whether it was a legacy `/watch/` path.
type Parsed = (
    Arc<ResourceDef>,
    Option<String>,
    Option<String>,
    Option<String>,
    bool,
);

/// Splits the path into a request context.
fn parse(reg: &Registry, path: &str) -> Result<Parsed, ApiStatus> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, mut rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest.to_vec()),
        ["apis", g, v, rest @ ..] => (*g, *v, rest.to_vec()),
        _ => return Err(ApiStatus::route_not_found()),
    };
    let mut watch = false;
    if rest.first() == Some(&"watch") {
        watch = true;
        rest.remove(0);
    }
    let nf = ApiStatus::route_not_found;
    let look = |p: &str| reg.lookup(group, version, p);
    let s = |x: &str| Some(x.to_string());
    match rest.as_slice() {
        ["namespaces", ns, plural, tail @ ..] if look(plural).is_some_and(|d| d.namespaced) => {
            let d = look(plural).ok_or_else(nf)?;
            match tail {
                [] => Ok((d, s(ns), None, None, watch)),
                [name] => Ok((d, s(ns), s(name), None, watch)),
                [name, sub] => Ok((d, s(ns), s(name), s(sub), watch)),
                _ => Err(nf()),
            }
        }
        [plural, tail @ ..] => {
            let d = look(plural).ok_or_else(nf)?;
            match tail {
                [] => Ok((d, None, None, None, watch)),
                [name] if !d.namespaced => Ok((d, None, s(name), None, watch)),
                [name, sub] if !d.namespaced => Ok((d, None, s(name), s(sub), watch)),
                _ => Err(nf()),
            }
        }
        _ => Err(nf()),
    }
}

/// The fallback handler: every resource request lands here.
pub async fn dispatch(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let deprecated = super::crd::deprecation_warning(&state.registry, req.uri().path());
    let mut resp = match dispatch_inner(state, req).await {
        Ok(r) => r,
        Err(s) => s.into_response(),
    };
    super::admission::add_warning_headers(resp.headers_mut(), &deprecated);
    resp
}

async fn dispatch_inner(state: Arc<AppState>, req: Request) -> Result<Response, ApiStatus> {
    let (parts, body) = req.into_parts();
    // Authentication comes first, so that without credentials every path
    // (even an unknown one) is a 401, as in kube.
    let peer = parts
        .extensions
        .get::<super::auth::PeerCertificates>()
        .cloned();
    let user = super::auth::identify(
        state.authenticator.as_ref(),
        state.authorizer.as_ref(),
        &parts.headers,
        peer.as_ref().map(|p| p.0.as_slice()),
    )?
    .ok_or_else(ApiStatus::unauthorized)?;
    let (def, namespace, name, sub, legacy_watch) = parse(&state.registry, parts.uri.path())?;
    let group_resource = def.group_resource();
    if let Some(sub) = &sub {
        let served = (sub == "status" && def.has_subresource("status"))
            || super::streaming::is_streaming(&group_resource, sub)
            || super::subresources::is_served(&group_resource, sub);
        if !served || name.is_none() || !def.has_subresource(sub) {
            return Err(ApiStatus::route_not_found());
        }
    }
    let query: HashMap<String, String> =
        form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .filter(|(k, _)| !k.is_empty())
            .collect();
    let watch =
        legacy_watch || matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    // kube 1.31+ authorizes websocket (GET) exec/attach/portforward as
    // `create`, like their SPDY (POST) form.
    let connect = matches!(sub.as_deref(), Some("exec" | "attach" | "portforward"));
    let verb = match (&parts.method, name.is_some()) {
        _ if connect => "create",
        (&Method::GET, false) if watch => "watch",
        (&Method::GET, false) => "list",
        (&Method::GET, true) => "get",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, false) => "deletecollection",
        _ => "delete",
    };
    let attrs = super::auth::Attributes {
        resource_request: true,
        path: parts.uri.path(),
        verb,
        group: &def.group,
        resource: &def.plural,
        subresource: sub.as_deref(),
        namespace: namespace.as_deref(),
        // A list or watch of one object by `metadata.name` is authorized as
        // that object, as kube does (kubelets watch single Secrets this way).
        name: name
            .as_deref()
            .or_else(|| crate::auth::single_object_name(verb, query.get("fieldSelector"))),
    };
    if !state.authorizer.authorize(&user, &attrs) {
        return Err(ApiStatus::forbidden_message(
            super::auth::forbidden_message(&user, &attrs),
        ));
    }
    if let Some(s) = sub
        .as_deref()
        .filter(|s| super::streaming::is_streaming(&group_resource, s))
    {
        let sub = s.to_string();
        let request = Request::from_parts(parts, body);
        return super::streaming::handle(super::streaming::StreamRequest {
            state,
            def,
            namespace,
            name: name.unwrap_or_default(),
            sub,
            request,
        })
        .await;
    }
    let body = axum::body::to_bytes(body, codec::MAX_BODY)
        .await
        .map_err(|_| ApiStatus::too_large_body(codec::MAX_BODY))?;
    codec::rendering(&parts.headers)?;
    let ctx = Ctx {
        state,
        def,
        namespace,
        name,
        sub,
        query,
        headers: parts.headers,
        user,
    };
    let _permit = if watch {
        None
    } else {
        Some(
            ctx.state
                .inflight
                .clone()
                .try_acquire_owned()
                .map_err(|_| ApiStatus::too_many_requests())?,
        )
    };
    if matches!(
        parts.method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    ) {
        check_write_options(&ctx, &parts.method)?;
    }
    if ctx.sub.as_deref().is_some_and(|s| s != "status") {
        return super::subresources::handle(&ctx, &parts.method, &body);
    }
    match (parts.method, ctx.name.is_some()) {
        (Method::GET, false) if watch => super::watch::watch(
            ctx.state.clone(),
            ctx.def.clone(),
            ctx.namespace.clone(),
            &ctx.query,
            ctx.selectors()?,
            table_wanted(&ctx),
        ),
        (Method::GET, false) => list(&ctx),
        (Method::GET, true) => get(&ctx),
        (Method::POST, false) if crate::auth::reviews::is_review(&ctx.def) => {
            crate::auth::reviews::handle(&ctx, &body)
        }
        (Method::POST, false) => create(&ctx, codec::decode_object(&ctx.headers, &body)?),
        (Method::PUT, true) => update(&ctx, codec::decode_object(&ctx.headers, &body)?),
        (Method::PATCH, true) => patch(&ctx, &body),
        (Method::DELETE, true) => super::delete::delete(&ctx, &body),
        (Method::DELETE, false) => super::delete::delete_collection(ctx, &body),
        (m, _) => Err(ApiStatus::method_not_allowed(m.as_str())),
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

/// The write options kube validates before anything else: `dryRun` and
/// `fieldValidation`.
fn check_write_options(ctx: &Ctx, method: &Method) -> Result<(), ApiStatus> {
    let kind = match *method {
        Method::POST => "CreateOptions",
        Method::PUT => "UpdateOptions",
        Method::PATCH => "PatchOptions",
        _ => "DeleteOptions",
    };
    if let Some(d) = ctx.query.get("dryRun") {
        check_dry_run(kind, std::slice::from_ref(d))?;
    }
    if *method == Method::DELETE {
        return Ok(());
    }
    match ctx.query.get("fieldValidation").map(String::as_str) {
        None | Some("" | "Ignore" | "Warn" | "Strict") => Ok(()),
        Some(other) => Err(ApiStatus::invalid(
            kind,
            "meta.k8s.io",
            "",
            vec![super::status::Cause {
                reason: "FieldValueNotSupported".into(),
                message: format!(
                    "Unsupported value: {other:?}: supported values: \"\", \"Ignore\", \"Strict\", \"Warn\""
                ),
                field: "fieldValidation".into(),
            }],
        )),
    }
}

fn table_wanted(ctx: &Ctx) -> bool {
    matches!(codec::rendering(&ctx.headers), Ok(Rendering::Table))
}

fn get(ctx: &Ctx) -> Result<Response, ApiStatus> {
    let name = ctx.name.clone().unwrap_or_default();
    let rec = ctx
        .state
        .store
        .get(&ctx.key())
        .map_err(store_err)?
        .ok_or_else(|| ApiStatus::not_found(ctx.target(&name)))?;
    let obj = objects::from_record(&ctx.def, &rec)?;
    if table_wanted(ctx) {
        let rv = rec.mod_revision.to_string();
        return Ok(ctx.respond(
            StatusCode::OK,
            &table::to_table(&ctx.def, &[obj], &rv, None, None, ctx.include()),
        ));
    }
    Ok(ctx.respond(StatusCode::OK, &obj))
}

/// A continue token: base64 JSON `{"v","rv","start"}` like Kubernetes'.
pub fn encode_continue(rv: i64, start: &str) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(json!({"v": "meta.k8s.io/v1", "rv": rv, "start": start}).to_string())
}

pub fn decode_continue(token: &str) -> Result<(i64, String), ApiStatus> {
    let bad = || {
        ApiStatus::bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(token)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(token))
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    Ok((
        v["rv"].as_i64().ok_or_else(bad)?,
        v["start"].as_str().ok_or_else(bad)?.to_string(),
    ))
}

fn list(ctx: &Ctx) -> Result<Response, ApiStatus> {
    let sel = ctx.selectors()?;
    let prefix = keys::collection_prefix(&ctx.def, ctx.namespace.as_deref());
    let limit: Option<usize> = ctx
        .q("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0);
    let rv_param = ctx.q("resourceVersion");
    let (mut revision, mut start_after) = (None, None);
    if let Some(tok) = ctx.q("continue") {
        if rv_param.is_some_and(|r| r != "0") {
            return Err(ApiStatus::bad_request(
                "specifying resource version is not allowed when using continue",
            ));
        }
        let (rv, start) = decode_continue(tok)?;
        if rv < ctx.state.store.compacted_revision() {
            return Err(ApiStatus::expired_continue());
        }
        revision = Some(rv);
        start_after = Some(format!("{prefix}{start}"));
    } else if let Some(rv) = rv_param.filter(|r| *r != "0") {
        let rv: i64 = rv
            .parse()
            .map_err(|_| ApiStatus::bad_request(format!("invalid resource version: {rv}")))?;
        let exact = ctx.q("resourceVersionMatch") == Some("Exact")
            || (limit.is_some() && ctx.q("resourceVersionMatch").is_none());
        let current = ctx.state.store.current_revision();
        if rv > current {
            return Err(ApiStatus::too_large_resource_version(rv, current));
        }
        if exact {
            revision = Some(rv);
        }
    }
    let mut items = Vec::new();
    let mut last_key = None;
    let mut more = false;
    let mut page_rev;
    let mut remaining_total = 0usize;
    loop {
        let page = ctx
            .state
            .store
            .list(&ListOptions {
                prefix: prefix.clone(),
                start_after: start_after.clone(),
                limit: limit.map(|l| l.max(50)),
                revision,
            })
            .map_err(store_err)?;
        page_rev = page.revision;
        revision = Some(page.revision);
        let n = page.records.len();
        for (i, rec) in page.records.iter().enumerate() {
            let obj = objects::from_record(&ctx.def, rec)?;
            last_key = Some(rec.key.clone());
            if sel.matches(&obj) {
                items.push(obj);
            }
            if limit.is_some_and(|l| items.len() >= l) {
                let left = (n - i - 1) + page.remaining;
                more = left > 0;
                remaining_total = left;
                break;
            }
        }
        if more || page.remaining == 0 || limit.is_some_and(|l| items.len() >= l) {
            break;
        }
        start_after = last_key.clone();
    }
    let rv = page_rev.to_string();
    let cont = if more {
        last_key
            .as_ref()
            .map(|k| encode_continue(page_rev, k.strip_prefix(&prefix).unwrap_or(k)))
    } else {
        None
    };
    let remaining = if more && sel.is_empty() {
        Some(remaining_total as i64)
    } else {
        None
    };
    if table_wanted(ctx) {
        return Ok(ctx.respond(
            StatusCode::OK,
            &table::to_table(
                &ctx.def,
                &items,
                &rv,
                cont.as_deref(),
                remaining,
                ctx.include(),
            ),
        ));
    }
    let mut meta = json!({"resourceVersion": rv});
    if let Some(c) = &cont {
        meta["continue"] = json!(c);
    }
    if let Some(r) = remaining {
        meta["remainingItemCount"] = json!(r);
    }
    Ok(ctx.respond(StatusCode::OK, &json!({"kind": format!("{}List", ctx.def.kind), "apiVersion": ctx.def.api_version(), "metadata": meta, "items": items})))
}

fn check_type(def: &ResourceDef, obj: &Value) -> Result<(), ApiStatus> {
    if let Some(av) = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        let group = av.rsplit_once('/').map_or("", |(g, _)| g);
        if group != def.group {
            return Err(ApiStatus::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({})",
                def.api_version()
            )));
        }
    }
    if let Some(k) = obj
        .get("kind")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        if k != def.kind {
            return Err(ApiStatus::bad_request(format!(
                "{k} in version \"{}\" cannot be handled as a {}",
                def.version, def.kind
            )));
        }
    }
    Ok(())
}

fn check_namespace(ctx: &Ctx, obj: &mut Value) -> Result<(), ApiStatus> {
    if !ctx.def.namespaced {
        meta_mut(obj).remove("namespace");
        return Ok(());
    }
    let url_ns = ctx
        .namespace
        .clone()
        .ok_or_else(|| ApiStatus::method_not_allowed("POST"))?;
    match meta_str(obj, "namespace") {
        Some(ns) if ns != url_ns => return Err(ApiStatus::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => {
            meta_mut(obj).insert("namespace".into(), json!(url_ns));
        }
    }
    Ok(())
}

fn create(ctx: &Ctx, mut obj: Value) -> Result<Response, ApiStatus> {
    check_type(&ctx.def, &obj)?;
    check_namespace(ctx, &mut obj)?;
    objects::set_type(&ctx.def, &mut obj);
    let generate = meta_str(&obj, "generateName").map(String::from);
    let name = meta_str(&obj, "name").map(String::from);
    if name.is_none() && generate.is_none() {
        return Err(ApiStatus::invalid(
            &ctx.def.kind,
            &ctx.def.group,
            "",
            vec![super::status::Cause {
                reason: "FieldValueRequired".into(),
                message: "Required value: name or generateName is required".into(),
                field: "metadata.name".into(),
            }],
        ));
    }
    if let Some(n) = &name {
        objects::validate_name(&ctx.def, n)?;
    }
    if let Some(ns) = ctx.namespace.as_deref() {
        let nsrec = ctx
            .state
            .store
            .get(&keys::namespace_key(ns))
            .map_err(store_err)?;
        let nsobj: Value = nsrec
            .map(|r| serde_json::from_slice(&r.value).unwrap_or(Value::Null))
            .ok_or_else(|| {
                ApiStatus::not_found(Target {
                    group: "",
                    resource: "namespaces",
                    name: ns,
                })
            })?;
        if nsobj.pointer("/metadata/deletionTimestamp").is_some() {
            let n = name.clone().unwrap_or_default();
            return Err(ApiStatus::forbidden(
                ctx.target(&n),
                &format!(
                    "unable to create new content in namespace {ns} because it is being terminated"
                ),
            ));
        }
    }
    {
        let m = meta_mut(&mut obj);
        m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        m.insert("creationTimestamp".into(), json!(objects::now_rfc3339()));
        for k in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "selfLink",
        ] {
            m.remove(k);
        }
    }
    if objects::tracks_generation(&ctx.def) {
        meta_mut(&mut obj).insert("generation".into(), json!(1));
    }
    match ctx.def.group_resource().as_str() {
        "namespaces" => {
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
            let n = name.clone().unwrap_or_default();
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(n);
        }
        "pods" => obj["status"] = json!({"phase": "Pending"}),
        "nodes" => {}
        _ if objects::has_status_subresource(&ctx.def) => {
            if let Some(o) = obj.as_object_mut() {
                o.remove("status");
            }
        }
        _ => {}
    }
    let warnings = ctx.admit(
        super::admission::Operation::Create,
        name.as_deref().unwrap_or(""),
        None,
        &mut obj,
    )?;
    for _attempt in 0..8 {
        let n = match (&name, &generate) {
            (Some(n), _) => n.clone(),
            (None, Some(g)) => format!("{g}{}", objects::random_suffix()),
            _ => unreachable!("checked above"),
        };
        meta_mut(&mut obj).insert("name".into(), json!(n));
        let key = keys::object_key(&ctx.def, ctx.namespace.as_deref(), &n);
        if ctx.dry_run() {
            if ctx.state.store.get(&key).map_err(store_err)?.is_some() {
                return Err(ApiStatus::already_exists(ctx.target(&n)));
            }
            return Ok(ctx.respond_warned(StatusCode::CREATED, &obj, &warnings));
        }
        match ctx.state.store.create(&key, &objects::to_stored(&obj)) {
            Ok(rec) => {
                return Ok(ctx.respond_warned(
                    StatusCode::CREATED,
                    &objects::from_record(&ctx.def, &rec)?,
                    &warnings,
                ))
            }
            Err(StoreError::AlreadyExists { .. }) if name.is_none() => continue,
            Err(StoreError::AlreadyExists { .. }) => {
                return Err(ApiStatus::already_exists(ctx.target(&n)))
            }
            Err(e) => return Err(store_err(e)),
        }
    }
    let g = generate.unwrap_or_default();
    Err(ApiStatus::generate_name_conflict(ctx.target(&g)))
}

/// Carries system fields over from `cur` and applies the status split.
fn prepare_update(ctx: &Ctx, cur: &Value, mut new: Value) -> Result<Value, ApiStatus> {
    let name = ctx.name.clone().unwrap_or_default();
    if meta_str(&new, "name").is_some_and(|n| n != name) {
        return Err(ApiStatus::bad_request(
            "the name of the object does not match the name on the URL",
        ));
    }
    check_type(&ctx.def, &new)?;
    objects::set_type(&ctx.def, &mut new);
    if ctx.sub.as_deref() == Some("status") {
        let mut merged = cur.clone();
        merged["status"] = new.get("status").cloned().unwrap_or(Value::Null);
        if merged["status"].is_null() {
            merged.as_object_mut().map(|o| o.remove("status"));
        }
        return Ok(merged);
    }
    for k in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match cur.pointer(&format!("/metadata/{k}")) {
            Some(v) => {
                meta_mut(&mut new).insert(k.into(), v.clone());
            }
            None => {
                meta_mut(&mut new).remove(k);
            }
        }
    }
    if objects::has_status_subresource(&ctx.def) {
        match cur.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                new.as_object_mut().map(|o| o.remove("status"));
            }
        }
    }
    if cur.pointer("/metadata/deletionTimestamp").is_some() {
        let old = objects::finalizers(cur);
        if objects::finalizers(&new).iter().any(|f| !old.contains(f)) {
            return Err(ApiStatus::invalid(
                &ctx.def.kind,
                &ctx.def.group,
                &name,
                vec![super::status::Cause {
                    reason: "FieldValueForbidden".into(),
                    message:
                        "Forbidden: no new finalizers can be added if the object is being deleted"
                            .into(),
                    field: "metadata.finalizers".into(),
                }],
            ));
        }
    }
    if objects::tracks_generation(&ctx.def) && objects::spec_part(cur) != objects::spec_part(&new) {
        let g = cur
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            + 1;
        meta_mut(&mut new).insert("generation".into(), json!(g));
    }
    Ok(new)
}

/// The read-modify-CAS loop shared by PUT and PATCH.
fn write_loop(
    ctx: &Ctx,
    build: &dyn Fn(&Value) -> Result<Value, ApiStatus>,
) -> Result<Response, ApiStatus> {
    let name = ctx.name.clone().unwrap_or_default();
    let key = ctx.key();
    for _ in 0..10 {
        let (rec, cur) = ctx.read_current(&key, &name)?;
        let desired = build(&cur)?;
        let precondition = meta_str(&desired, "resourceVersion").map(String::from);
        if precondition
            .as_deref()
            .is_some_and(|rv| rv != rec.mod_revision.to_string())
        {
            return Err(ApiStatus::modified(ctx.target(&name)));
        }
        let mut new = prepare_update(ctx, &cur, desired)?;
        let warnings = ctx.admit(
            super::admission::Operation::Update,
            &name,
            Some(&cur),
            &mut new,
        )?;
        // A write that changes nothing is not stored (same resourceVersion),
        // as kube's storage skips byte-identical updates.
        if without_resource_version(&new) == without_resource_version(&cur) {
            return Ok(ctx.respond_warned(StatusCode::OK, &cur, &warnings));
        }
        if ctx.dry_run() {
            // As kube: a dry-run update answers with the current version.
            objects::set_resource_version(&mut new, rec.mod_revision);
            return Ok(ctx.respond_warned(StatusCode::OK, &new, &warnings));
        }
        let finished = new.pointer("/metadata/deletionTimestamp").is_some()
            && objects::finalizers(&new).is_empty()
            && new
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                == 0;
        let res = if finished {
            ctx.state
                .store
                .delete(&key, Some(rec.mod_revision))
                .map(|r| {
                    let mut v = new.clone();
                    objects::set_resource_version(&mut v, r.mod_revision);
                    v
                })
        } else {
            ctx.state
                .store
                .update(&key, &objects::to_stored(&new), rec.mod_revision)
                .and_then(|r| {
                    objects::from_record(&ctx.def, &r).map_err(|e| StoreError::Backend(e.message))
                })
        };
        match res {
            Ok(v) => return Ok(ctx.respond_warned(StatusCode::OK, &v, &warnings)),
            Err(StoreError::Conflict { .. }) if precondition.is_some() => {
                return Err(ApiStatus::modified(ctx.target(&name)))
            }
            Err(StoreError::Conflict { .. }) | Err(StoreError::NotFound { .. }) => continue,
            Err(e) => return Err(store_err(e)),
        }
    }
    Err(ApiStatus::modified(ctx.target(&name)))
}

fn without_resource_version(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.shift_remove("resourceVersion");
    }
    v
}

fn update(ctx: &Ctx, obj: Value) -> Result<Response, ApiStatus> {
    let exists = ctx
        .state
        .store
        .get(&ctx.key())
        .map_err(store_err)?
        .is_some();
    if !exists && objects::allows_create_on_update(&ctx.def) && ctx.sub.is_none() {
        return create(ctx, obj);
    }
    write_loop(ctx, &|_cur| Ok(obj.clone()))
}

/// RFC 7386 JSON merge patch.
/// Turns a patch failure into the Status kube-apiserver answers with: 422
/// Invalid naming the patch, or 415 for strategic merge on a kind without
/// patch metadata (custom resources).
fn patch_error(ctx: &Ctx, e: super::strategic::PatchError) -> ApiStatus {
    use super::strategic::PatchError;
    match e {
        PatchError::Unsupported(_) => ApiStatus::unsupported_media_type(
            ctx.headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
        ),
        PatchError::Invalid(message) | PatchError::TestFailed(message) => ApiStatus::invalid(
            &ctx.def.kind,
            &ctx.def.group,
            ctx.name.as_deref().unwrap_or_default(),
            vec![super::status::Cause {
                reason: "FieldValueInvalid".into(),
                message,
                field: "patch".into(),
            }],
        ),
    }
}

fn patch(ctx: &Ctx, body: &[u8]) -> Result<Response, ApiStatus> {
    use super::codec::BodyType;
    use super::strategic::{self, TypeKey};
    let kind = codec::body_type(&ctx.headers)?;
    if kind == BodyType::ApplyPatch {
        return apply_patch(ctx, body);
    }
    let p = codec::parse_document(body, false)?;
    let type_key = TypeKey {
        group: &ctx.def.group,
        version: &ctx.def.version,
        kind: &ctx.def.kind,
    };
    match kind {
        BodyType::MergePatch | BodyType::Json | BodyType::JsonPatch => {}
        BodyType::StrategicMergePatch if strategic::supports_strategic(&type_key) => {}
        _ => {
            return Err(ApiStatus::unsupported_media_type(
                ctx.headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(""),
            ))
        }
    }
    write_loop(ctx, &|cur| {
        let mut v = match kind {
            BodyType::JsonPatch => {
                strategic::json_patch(cur, &p).map_err(|e| patch_error(ctx, e))?
            }
            BodyType::StrategicMergePatch => {
                strategic::strategic_merge(&type_key, cur, &p).map_err(|e| patch_error(ctx, e))?
            }
            _ => strategic::json_merge_patch(cur, &p),
        };
        // A patch that leaves resourceVersion as it was is unconditional; one
        // that sets it is a precondition the write loop checks.
        if meta_str(&v, "resourceVersion") == meta_str(cur, "resourceVersion") {
            meta_mut(&mut v).remove("resourceVersion");
        }
        Ok(v)
    })
}

/// Server-side apply (`application/apply-patch+yaml`, see `fieldmanager`):
/// creates the object when missing, otherwise merges the applied
/// configuration by type; the admission chain runs with Update recording off.
fn apply_patch(ctx: &Ctx, body: &[u8]) -> Result<Response, ApiStatus> {
    use super::fieldmanager::{self as fm, apply};
    let applied = codec::parse_document(body, true)?;
    if !applied.is_object() {
        return Err(ApiStatus::bad_request("the request body must be a JSON object"));
    }
    let manager = ctx.q("fieldManager").ok_or_else(|| {
        ApiStatus::invalid(
            "PatchOptions",
            "meta.k8s.io",
            "",
            vec![super::status::Cause {
                reason: "FieldValueRequired".into(),
                message: "Required value: is required for apply patch".into(),
                field: "fieldManager".into(),
            }],
        )
    })?;
    if applied.pointer("/metadata/managedFields").is_some() {
        return Err(ApiStatus::bad_request("metadata.managedFields must be nil"));
    }
    check_type(&ctx.def, &applied)?;
    let name = ctx.name.clone().unwrap_or_default();
    if meta_str(&applied, "name").is_some_and(|n| n != name) {
        return Err(ApiStatus::bad_request(
            "the name of the object does not match the name on the URL",
        ));
    }
    let schema = fm::schema::for_def(&ctx.def);
    let api_version = ctx.def.api_version();
    let run = |live: Option<&Value>| -> Result<Value, ApiStatus> {
        apply::apply(&apply::ApplyRequest {
        live,
        applied: &applied,
        manager,
        force: ctx.q("force") == Some("true"),
        api_version: &api_version,
        schema: schema.as_ref(),
        status_split: objects::has_status_subresource(&ctx.def),
        subresource: ctx.sub.as_deref(),
        })
        .map_err(|c| apply::conflict_status(&c))
    };
    let exists = ctx.state.store.get(&ctx.key()).map_err(store_err)?.is_some();
    if !exists {
        if ctx.sub.is_some() {
            return Err(ApiStatus::not_found(ctx.target(&name)));
        }
        let mut obj = run(None)?;
        meta_mut(&mut obj).insert("name".into(), json!(name));
        return fm::while_applying(|| create(ctx, obj));
    }
    fm::while_applying(|| {
        write_loop(ctx, &|cur| {
            let mut v = run(Some(cur))?;
            if meta_str(&v, "resourceVersion") == meta_str(cur, "resourceVersion") {
                meta_mut(&mut v).remove("resourceVersion");
            }
            Ok(v)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip() {
        let t = encode_continue(42, "default/x");
        assert_eq!(decode_continue(&t).unwrap(), (42, "default/x".to_string()));
        assert_eq!(decode_continue("!!").unwrap_err().code, 400);
    }
}
