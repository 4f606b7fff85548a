//! The review kinds, answered and never stored: `authorization.k8s.io/v1`
//! SelfSubjectAccessReview, SubjectAccessReview, LocalSubjectAccessReview,
//! SelfSubjectRulesReview, and `authentication.k8s.io/v1` TokenReview and
//! SelfSubjectReview. They back `kubectl auth can-i` (also `--list` and
//! `--as`) and `kubectl auth whoami`. A POST gets the request object back
//! with `status` filled in, 201 Created, as kube-apiserver answers.
//!
//! Creating a review is itself authorized like any create (the
//! `system:basic-user` role gives every user the self reviews).

use axum::response::Response;
use http::StatusCode;
use serde_json::{json, Value};

use crate::apiserver::auth::{Attributes, UserInfo};
use crate::apiserver::codec;
use crate::apiserver::objects::string_list;
use crate::apiserver::registry::ResourceDef;
use crate::apiserver::context::Ctx;
use crate::apiserver::status::{ApiStatus, Cause};

/// Whether `def` is one of the review kinds handled here.
pub fn is_review(def: &ResourceDef) -> bool {
    matches!(
        (def.group.as_str(), def.plural.as_str()),
        (
            "authorization.k8s.io",
            "selfsubjectaccessreviews"
                | "subjectaccessreviews"
                | "localsubjectaccessreviews"
                | "selfsubjectrulesreviews"
        ) | (
            "authentication.k8s.io",
            "tokenreviews" | "selfsubjectreviews"
        )
    )
}

fn invalid(def: &ResourceDef, field: &str, message: &str) -> ApiStatus {
    ApiStatus::invalid(
        &def.kind,
        &def.group,
        "",
        vec![Cause {
            reason: "FieldValueRequired".into(),
            message: message.into(),
            field: field.into(),
        }],
    )
}

fn opt(x: &str) -> Option<&str> {
    Some(x).filter(|x| !x.is_empty())
}

fn user_json(u: &UserInfo) -> Value {
    let mut v = json!({"username": u.name, "groups": u.groups});
    if !u.uid.is_empty() {
        v["uid"] = json!(u.uid);
    }
    if !u.extra.is_empty() {
        v["extra"] = json!(u.extra);
    }
    v
}

/// Reads `spec.resourceAttributes` / `spec.nonResourceAttributes` and decides.
fn access_status(ctx: &Ctx, user: &UserInfo, spec: &Value) -> Result<Value, ApiStatus> {
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let (resource_request, path, verb, group, resource, sub, ns, name) = if let Some(r) =
        spec.get("resourceAttributes").filter(|v| v.is_object())
    {
        (
            true,
            String::new(),
            s(r, "verb"),
            s(r, "group"),
            s(r, "resource"),
            s(r, "subresource"),
            s(r, "namespace"),
            s(r, "name"),
        )
    } else if let Some(n) = spec.get("nonResourceAttributes").filter(|v| v.is_object()) {
        (
            false,
            s(n, "path"),
            s(n, "verb"),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
        )
    } else {
        return Err(invalid(
                &ctx.def,
                "spec.resourceAttributes",
                "Required value: exactly one of nonResourceAttributes or resourceAttributes must be specified",
            ));
    };
    let attrs = Attributes {
        resource_request,
        path: &path,
        verb: &verb,
        group: &group,
        resource: &resource,
        subresource: opt(&sub),
        namespace: opt(&ns),
        name: opt(&name),
    };
    let allowed = ctx.state.authorizer.authorize(user, &attrs);
    Ok(json!({"allowed": allowed}))
}

fn user_from_spec(spec: &Value) -> UserInfo {
    let strings = |k: &str| string_list(spec.get(k));
    let extra = spec
        .get("extra")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), string_list(Some(v))))
                .collect()
        })
        .unwrap_or_default();
    UserInfo {
        name: spec
            .get("user")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        uid: spec
            .get("uid")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        groups: strings("groups"),
        extra,
    }
}

fn rules_status(ctx: &Ctx, spec: &Value) -> Result<Value, ApiStatus> {
    let ns = spec.get("namespace").and_then(Value::as_str).unwrap_or("");
    let Some((rules, incomplete)) = ctx.state.authorizer.rules_in(&ctx.user, ns) else {
        return Ok(
            json!({"resourceRules": [], "nonResourceRules": [], "incomplete": true,
            "evaluationError": "the authorizer does not support rule listing"}),
        );
    };
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    for r in rules {
        if !r.resources.is_empty() {
            let mut v =
                json!({"verbs": r.verbs, "apiGroups": r.api_groups, "resources": r.resources});
            if !r.resource_names.is_empty() {
                v["resourceNames"] = json!(r.resource_names);
            }
            resource_rules.push(v);
        }
        if !r.non_resource_urls.is_empty() {
            non_resource_rules
                .push(json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}));
        }
    }
    let mut status = json!({"resourceRules": resource_rules, "nonResourceRules": non_resource_rules,
        "incomplete": incomplete});
    if incomplete {
        status["evaluationError"] = json!("node authorizer does not support user rule resolution");
    }
    Ok(status)
}

fn token_status(ctx: &Ctx, spec: &Value) -> Result<Value, ApiStatus> {
    let token = spec.get("token").and_then(Value::as_str).unwrap_or("");
    if token.is_empty() {
        return Err(invalid(
            &ctx.def,
            "spec.token",
            "Required value: token must be set",
        ));
    }
    let audiences = string_list(spec.get("audiences"));
    Ok(
        match ctx.state.authenticator.review_token(token, &audiences) {
            Some(Ok((user, aud))) => {
                json!({"authenticated": true, "user": user_json(&user), "audiences": aud})
            }
            Some(Err(why)) => json!({"authenticated": false, "user": {}, "error": why}),
            None => {
                json!({"authenticated": false, "user": {}, "error": "token authentication is not enabled"})
            }
        },
    )
}

/// Answers a POST of a review kind.
pub(crate) fn handle(ctx: &Ctx, body: &[u8]) -> Result<Response, ApiStatus> {
    let mut obj = codec::decode_object(&ctx.headers, body)?;
    if !obj.is_object() {
        return Err(ApiStatus::bad_request("the request body is not an object"));
    }
    let spec = obj.get("spec").cloned().unwrap_or_else(|| json!({}));
    let status = match ctx.def.plural.as_str() {
        "selfsubjectaccessreviews" => access_status(ctx, &ctx.user, &spec)?,
        "subjectaccessreviews" | "localsubjectaccessreviews" => {
            let subject = user_from_spec(&spec);
            if subject.name.is_empty() && subject.groups.is_empty() {
                return Err(invalid(
                    &ctx.def,
                    "spec.user",
                    "Required value: at least one of user or group must be specified",
                ));
            }
            let mut spec = spec.clone();
            if let Some(url_ns) = ctx.namespace.as_deref() {
                let Some(ra) = spec.get_mut("resourceAttributes").filter(|v| v.is_object()) else {
                    return Err(invalid(&ctx.def, "spec.resourceAttributes", "Required value: resourceAttributes must be set on a LocalSubjectAccessReview"));
                };
                match ra.get("namespace").and_then(Value::as_str) {
                    None | Some("") => ra["namespace"] = json!(url_ns),
                    Some(ns) if ns != url_ns => {
                        return Err(ApiStatus::bad_request(format!(
                            "spec.resourceAttributes.namespace must match metadata.namespace: {ns} != {url_ns}"
                        )))
                    }
                    Some(_) => {}
                }
            }
            access_status(ctx, &subject, &spec)?
        }
        "selfsubjectrulesreviews" => rules_status(ctx, &spec)?,
        "tokenreviews" => token_status(ctx, &spec)?,
        "selfsubjectreviews" => json!({"userInfo": user_json(&ctx.user)}),
        _ => return Err(ApiStatus::route_not_found()),
    };
    obj["apiVersion"] = json!(ctx.def.api_version());
    obj["kind"] = json!(ctx.def.kind);
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"]["creationTimestamp"] = Value::Null;
    if let Some(ns) = ctx.namespace.as_deref() {
        obj["metadata"]["namespace"] = json!(ns);
    }
    if ctx.def.plural != "selfsubjectreviews" {
        obj["spec"] = spec;
    }
    obj["status"] = status;
    Ok(ctx.respond(StatusCode::CREATED, &obj))
}
