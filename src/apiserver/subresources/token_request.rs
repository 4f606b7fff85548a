//! `POST serviceaccounts/NAME/token` (TokenRequest): issues a
//! ServiceAccount JWT (see `crate::auth::jwt`) and answers an
//! `authentication.k8s.io/v1` TokenRequest with `status.token` and
//! `status.expirationTimestamp`, as `kubectl create token` expects.
//!
//! `spec.audiences` defaults to the API server's audience;
//! `spec.expirationSeconds` to 3600 (at least 600, at most 2^32);
//! `spec.boundObjectRef` may name a Pod or Secret of the same namespace,
//! which must exist (and match `uid` if given); a Pod must run as this
//! ServiceAccount, and its node is recorded in the token. The token stops
//! authenticating when the ServiceAccount or the bound object is deleted.

use axum::response::Response;
use http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::apiserver::objects;
use crate::apiserver::context::Ctx;
use crate::apiserver::status::{ApiStatus, Cause};
use crate::pki::jwt::{Claims, KubeClaims, ObjectRef};

const DEFAULT_EXPIRATION: i64 = 3600;
const MIN_EXPIRATION: i64 = 600;
const MAX_EXPIRATION: i64 = 1 << 32;

fn invalid(name: &str, field: &str, message: String) -> ApiStatus {
    ApiStatus::invalid(
        "TokenRequest",
        "authentication.k8s.io",
        name,
        vec![Cause {
            reason: "FieldValueInvalid".into(),
            message,
            field: field.into(),
        }],
    )
}

fn live(ctx: &Ctx, resource: &str, ns: &str, name: &str) -> Result<Option<Value>, ApiStatus> {
    let rec = ctx
        .state
        .store
        .get(&format!("/registry/{resource}/{ns}/{name}"))
        .map_err(crate::apiserver::context::store_err)?;
    Ok(rec
        .and_then(|r| serde_json::from_slice::<Value>(&r.value).ok())
        .filter(|v| v.pointer("/metadata/deletionTimestamp").is_none()))
}

fn uid_of(v: &Value) -> String {
    objects::meta_str(v, "uid").unwrap_or_default().to_string()
}

pub(crate) fn handle(ctx: &Ctx, method: &Method, body: &[u8]) -> Result<Response, ApiStatus> {
    if method != Method::POST {
        return Err(ApiStatus::method_not_allowed(method.as_str()));
    }
    let Some(keys) = ctx.state.authenticator.token_keys() else {
        return Err(ApiStatus::route_not_found());
    };
    let name = ctx.name.clone().unwrap_or_default();
    let ns = ctx.namespace.clone().unwrap_or_default();
    let req = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        crate::apiserver::codec::decode_object(&ctx.headers, body)?
    };
    let spec = req.get("spec").cloned().unwrap_or_else(|| json!({}));
    let sa = live(ctx, "serviceaccounts", &ns, &name)?.ok_or_else(|| {
        ApiStatus::not_found(crate::apiserver::status::Target {
            group: "",
            resource: "serviceaccounts",
            name: &name,
        })
    })?;
    let audiences: Vec<String> = match spec.get("audiences").and_then(Value::as_array) {
        Some(a) if !a.is_empty() => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => keys.api_audiences.clone(),
    };
    let expiration = match spec.get("expirationSeconds") {
        None | Some(Value::Null) => DEFAULT_EXPIRATION,
        Some(v) => v.as_i64().ok_or_else(|| {
            invalid(
                &name,
                "spec.expirationSeconds",
                "Invalid value: must be an integer".into(),
            )
        })?,
    };
    if expiration < MIN_EXPIRATION {
        return Err(invalid(
            &name,
            "spec.expirationSeconds",
            format!("Invalid value: {expiration}: may not specify a duration less than 10 minutes"),
        ));
    }
    if expiration > MAX_EXPIRATION {
        return Err(invalid(
            &name,
            "spec.expirationSeconds",
            format!(
                "Invalid value: {expiration}: may not specify a duration longer than 2^32 seconds"
            ),
        ));
    }
    let mut kube = KubeClaims {
        namespace: ns.clone(),
        serviceaccount: ObjectRef {
            name: name.clone(),
            uid: uid_of(&sa),
        },
        pod: None,
        secret: None,
        node: None,
    };
    if let Some(bound) = spec.get("boundObjectRef").filter(|v| v.is_object()) {
        let kind = bound.get("kind").and_then(Value::as_str).unwrap_or("");
        let obj_name = bound.get("name").and_then(Value::as_str).unwrap_or("");
        let want_uid = bound
            .get("uid")
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty());
        let resource = match kind {
            "Pod" => "pods",
            "Secret" => "secrets",
            other => {
                return Err(invalid(
                    &name,
                    "spec.boundObjectRef.kind",
                    format!(
                        "Unsupported value: \"{other}\": supported values: \"Pod\", \"Secret\""
                    ),
                ))
            }
        };
        let obj = live(ctx, resource, &ns, obj_name)?.ok_or_else(|| {
            ApiStatus::not_found(crate::apiserver::status::Target {
                group: "",
                resource,
                name: obj_name,
            })
        })?;
        let uid = uid_of(&obj);
        if want_uid.is_some_and(|w| w != uid) {
            return Err(ApiStatus::conflict(
                crate::apiserver::status::Target { group: "", resource, name: obj_name },
                &format!("the UID in the bound object reference ({}) does not match the UID in record. The object might have been deleted and then recreated", want_uid.unwrap_or_default()),
            ));
        }
        let r = ObjectRef {
            name: obj_name.to_string(),
            uid,
        };
        if kind == "Pod" {
            let pod_sa = obj
                .pointer("/spec/serviceAccountName")
                .and_then(Value::as_str)
                .unwrap_or("default");
            if pod_sa != name {
                return Err(ApiStatus::bad_request(format!(
                    "cannot bind token for serviceaccount \"{name}\" to pod running with different serviceaccount name."
                )));
            }
            if let Some(node) = obj
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
            {
                let node_uid = ctx
                    .state
                    .store
                    .get(&format!("/registry/nodes/{node}"))
                    .ok()
                    .flatten()
                    .and_then(|r| serde_json::from_slice::<Value>(&r.value).ok())
                    .map(|v| uid_of(&v));
                if let Some(node_uid) = node_uid {
                    kube.node = Some(ObjectRef {
                        name: node.to_string(),
                        uid: node_uid,
                    });
                }
            }
            kube.pod = Some(r);
        } else {
            kube.secret = Some(r);
        }
    }
    let now = chrono::Utc::now();
    let iat = now.timestamp();
    let claims = Claims {
        iss: keys.issuer.clone(),
        sub: format!("system:serviceaccount:{ns}:{name}"),
        aud: audiences.clone(),
        exp: iat + expiration,
        iat,
        nbf: iat,
        jti: uuid::Uuid::new_v4().to_string(),
        kubernetes: kube,
    };
    let token = keys
        .sign(&claims)
        .map_err(|e| ApiStatus::internal(e.to_string()))?;
    let expires = chrono::DateTime::from_timestamp(claims.exp, 0)
        .unwrap_or(now)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut out_spec = spec.clone();
    out_spec["audiences"] = json!(audiences);
    out_spec["expirationSeconds"] = json!(expiration);
    if out_spec.get("boundObjectRef").is_none() {
        out_spec["boundObjectRef"] = Value::Null;
    }
    let resp = json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": objects::now_rfc3339()},
        "spec": out_spec,
        "status": {"token": token, "expirationTimestamp": expires},
    });
    Ok(ctx.respond(StatusCode::CREATED, &resp))
}
