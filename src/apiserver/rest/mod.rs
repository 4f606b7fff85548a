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
//!
//! Map: this file parses and authorizes a request and routes it; `read`
//! (get, list), `write` (create, update and the read-modify-CAS write loop)
//! and `patch` (merge, JSON and strategic patches, server-side apply) are
//! the verbs; the shared request context is `super::context`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::Method;

use super::codec;
use super::context::{check_dry_run, AppState, Ctx};
use super::registry::{Registry, ResourceDef};
use super::status::ApiStatus;

mod patch;
mod read;
mod write;

pub(crate) use read::{render_list, render_one};

pub use read::{decode_continue, encode_continue};

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
                // `…/NAME/proxy/PATH`: the proxied path is the handler's.
                [name, "proxy", ..] => Ok((d, s(ns), s(name), s("proxy"), watch)),
                _ => Err(nf()),
            }
        }
        [plural, tail @ ..] => {
            let d = look(plural).ok_or_else(nf)?;
            match tail {
                [] => Ok((d, None, None, None, watch)),
                [name] if !d.namespaced => Ok((d, None, s(name), None, watch)),
                [name, sub] if !d.namespaced => Ok((d, None, s(name), s(sub), watch)),
                [name, "proxy", ..] if !d.namespaced => {
                    Ok((d, None, s(name), s("proxy"), watch))
                }
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
            || (sub == "approval"
                && group_resource == "certificatesigningrequests.certificates.k8s.io")
            || super::streaming::is_streaming(&group_resource, sub)
            || super::subresources::is_served(&group_resource, sub)
            || super::subresources::ephemeral_containers::is_view(&group_resource, sub);
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
    // A proxy is authorized by its HTTP method, as kube's RequestInfo does.
    let proxy = sub.as_deref() == Some("proxy");
    let other_method = parts.method.as_str().to_ascii_lowercase();
    let verb = match (&parts.method, name.is_some()) {
        _ if connect => "create",
        (&Method::GET | &Method::HEAD, _) if proxy => "get",
        (&Method::DELETE, _) if proxy => "delete",
        (m, _) if proxy && !matches!(*m, Method::POST | Method::PUT | Method::PATCH) => {
            other_method.as_str()
        }
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
            .or_else(|| super::auth::single_object_name(verb, query.get("fieldSelector"))),
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
    let body = match super::body::read(body).await {
        super::body::BodyRead::Complete(body) => body,
        super::body::BodyRead::TooLarge { drained: true } => {
            return Ok(ApiStatus::too_large_body(codec::MAX_BODY).into_response());
        }
        super::body::BodyRead::TooLarge { drained: false } | super::body::BodyRead::Failed => {
            // The rest of the body stays unread, so this connection cannot
            // carry another request: say so, or a client that pools it sends
            // its next request into a closing socket.
            let mut resp = ApiStatus::too_large_body(codec::MAX_BODY).into_response();
            resp.headers_mut()
                .insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
            return Ok(resp);
        }
    };
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
    if super::metrics_api::serves(&ctx.def) {
        return super::metrics_api::handle(&ctx, &parts.method, watch).await;
    }
    if matches!(
        parts.method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    ) {
        check_write_options(&ctx, &parts.method)?;
    }
    if ctx.sub.as_deref() == Some(super::subresources::ephemeral_containers::SUBRESOURCE) {
        super::subresources::ephemeral_containers::check_method(&parts.method)?;
    } else if ctx.sub.as_deref().is_some_and(|s| s != "status" && s != "approval") {
        return super::subresources::handle(&ctx, &parts.method, &body);
    }
    if ctx.def.group.is_empty() && ctx.def.plural == "componentstatuses" {
        return super::componentstatus::handle(&ctx, &parts.method, watch);
    }
    match (parts.method, ctx.name.is_some()) {
        (Method::GET, false) if watch => super::watch::watch(
            ctx.state.clone(),
            ctx.def.clone(),
            ctx.namespace.clone(),
            &ctx.query,
            ctx.selectors()?,
            match super::context::rendering(&ctx) {
                codec::Rendering::Table => super::watch::EventRendering::Table,
                codec::Rendering::Metadata(v) => super::watch::EventRendering::Metadata(v),
                codec::Rendering::MetadataList(_) => {
                    return Err(super::metadata::list_on_single(
                        &ctx.def,
                        super::context::is_custom(&ctx),
                    ))
                }
                _ => super::watch::EventRendering::Object,
            },
        ),
        (Method::GET, false) => read::list(&ctx),
        (Method::GET, true) => read::get(&ctx),
        (Method::POST, false) if super::subresources::is_unstored_kind(&ctx.def) => {
            super::subresources::create_unstored(&ctx, &body)
        }
        (Method::POST, false) => {
            write::create_posted(&ctx, codec::decode_object(&ctx.headers, &body)?, true)
        }
        (Method::PUT, true) => write::update(&ctx, codec::decode_object(&ctx.headers, &body)?),
        (Method::PATCH, true) => patch::patch(&ctx, &body),
        (Method::DELETE, true) => super::delete::delete(&ctx, &body),
        (Method::DELETE, false) => super::delete::delete_collection(ctx, &body),
        (m, _) => Err(ApiStatus::method_not_allowed(m.as_str())),
    }
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
