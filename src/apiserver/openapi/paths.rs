//! The `paths` of a group-version document: per resource the collection,
//! item, all-namespaces and subresource paths with the operations
//! kube-apiserver publishes (watch paths are left out: clients use
//! `?watch=true`). kubectl's field-validation probe looks for a PATCH whose
//! `x-kubernetes-group-version-kind` matches and which lists
//! `fieldValidation`, so every PATCH carries it.

use serde_json::{json, Map, Value};

use crate::apiserver::registry::ResourceDef;

/// `apps` → `Apps`, `rbac.authorization.k8s.io` → `RbacAuthorization`, core → `Core`.
fn group_ident(group: &str) -> String {
    if group.is_empty() {
        return "Core".into();
    }
    group
        .trim_end_matches(".k8s.io")
        .split('.')
        .map(capitalize)
        .collect()
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn query(name: &str, description: &str, ty: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": ty, "uniqueItems": true}})
}

fn path_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "description": description, "schema": {"type": "string", "uniqueItems": true}})
}

fn pretty() -> Value {
    query(
        "pretty",
        "If 'true', then the output is pretty printed.",
        "string",
    )
}
fn dry_run() -> Value {
    query("dryRun", "When present, indicates that modifications should not be persisted. Valid values are: - All: all dry run stages will be processed", "string")
}
fn field_manager() -> Value {
    query(
        "fieldManager",
        "fieldManager is a name associated with the actor or entity that is making these changes.",
        "string",
    )
}
fn field_validation() -> Value {
    query("fieldValidation", "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore - Warn - Strict", "string")
}
fn force() -> Value {
    query("force", "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people.", "boolean")
}

fn list_params() -> Vec<Value> {
    vec![
        query("allowWatchBookmarks", "allowWatchBookmarks requests watch events with type \"BOOKMARK\".", "boolean"),
        query("continue", "The continue option should be set when retrieving more results from the server.", "string"),
        query("fieldSelector", "A selector to restrict the list of returned objects by their fields. Defaults to everything.", "string"),
        query("labelSelector", "A selector to restrict the list of returned objects by their labels. Defaults to everything.", "string"),
        query("limit", "limit is a maximum number of responses to return for a list call.", "integer"),
        query("resourceVersion", "resourceVersion sets a constraint on what resource versions a request may be served from.", "string"),
        query("resourceVersionMatch", "resourceVersionMatch determines how resourceVersion is applied to list calls.", "string"),
        query("sendInitialEvents", "`sendInitialEvents=true` may be set together with `watch=true`.", "boolean"),
        query("timeoutSeconds", "Timeout for the list/watch call.", "integer"),
        query("watch", "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications.", "boolean"),
    ]
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn json_content(schema: &Value) -> Value {
    json!({
        "application/json": {"schema": schema},
        "application/yaml": {"schema": schema},
        "application/vnd.kubernetes.protobuf": {"schema": schema}
    })
}

fn ok(schema: &Value) -> Value {
    json!({"200": {"description": "OK", "content": json_content(schema)}, "401": {"description": "Unauthorized"}})
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "version": version, "kind": kind})
}

/// One operation object, as kube publishes it.
#[allow(clippy::too_many_arguments)]
fn operation(
    tag: &str,
    action: &str,
    id: String,
    description: String,
    gvk: &Value,
    params: Vec<Value>,
    body: Option<Value>,
    responses: Value,
) -> Value {
    let mut op = Map::new();
    op.insert("tags".into(), json!([tag]));
    op.insert("description".into(), description.into());
    op.insert("operationId".into(), id.into());
    if !params.is_empty() {
        op.insert("parameters".into(), Value::Array(params));
    }
    if let Some(body) = body {
        op.insert("requestBody".into(), body);
    }
    op.insert("responses".into(), responses);
    op.insert("x-kubernetes-action".into(), action.into());
    op.insert("x-kubernetes-group-version-kind".into(), gvk.clone());
    Value::Object(op)
}

/// Custom resources (`strategic == false`) take no strategic merge patch,
/// and kubectl's apply reads that from here to choose merge patch instead.
fn patch_body(strategic: bool) -> Value {
    let patch = schema_ref("io.k8s.apimachinery.pkg.apis.meta.v1.Patch");
    let mut body = json!({"content": {
        "application/apply-patch+yaml": {"schema": patch},
        "application/json-patch+json": {"schema": patch},
        "application/merge-patch+json": {"schema": patch},
        "application/strategic-merge-patch+json": {"schema": patch}
    }, "required": true});
    if !strategic {
        if let Some(c) = body["content"].as_object_mut() {
            c.remove("application/strategic-merge-patch+json");
        }
    }
    body
}

fn json_body(schema: &Value) -> Value {
    json!({"content": {"*/*": {"schema": schema}}, "required": true})
}

/// What a subresource answers with: its GVK, schema name (empty for
/// plain text) and the verbs it serves.
fn subresource_kind(
    def: &ResourceDef,
    sub: &str,
    schema: &str,
) -> Option<(Value, String, &'static [&'static str])> {
    const RW: &[&str] = &["get", "put", "patch"];
    Some(match sub {
        "status" | "ephemeralcontainers" | "resize" => (
            gvk(&def.group, &def.version, &def.kind),
            schema.to_string(),
            RW,
        ),
        "scale" => (
            gvk("autoscaling", "v1", "Scale"),
            "io.k8s.api.autoscaling.v1.Scale".into(),
            RW,
        ),
        "binding" => (
            gvk("", "v1", "Binding"),
            "io.k8s.api.core.v1.Binding".into(),
            &["post"],
        ),
        "eviction" => (
            gvk("policy", "v1", "Eviction"),
            "io.k8s.api.policy.v1.Eviction".into(),
            &["post"],
        ),
        "token" => (
            gvk("authentication.k8s.io", "v1", "TokenRequest"),
            "io.k8s.api.authentication.v1.TokenRequest".into(),
            &["post"],
        ),
        "log" => (
            gvk(&def.group, &def.version, &def.kind),
            String::new(),
            &["get"],
        ),
        "exec" | "attach" | "portforward" | "proxy" => (
            gvk(
                &def.group,
                &def.version,
                &format!("{}{}Options", def.kind, connect_name(sub)),
            ),
            String::new(),
            &["connect"],
        ),
        _ => return None,
    })
}

fn connect_name(sub: &str) -> &'static str {
    match sub {
        "exec" => "Exec",
        "attach" => "Attach",
        "portforward" => "PortForward",
        _ => "Proxy",
    }
}

/// Add every path of `def` to `paths`. `schema` is the kind's schema name;
/// `list_schema` its list's.
pub fn add_resource_paths(
    paths: &mut Map<String, Value>,
    def: &ResourceDef,
    schema: &str,
    list_schema: &str,
) {
    let prefix = if def.group.is_empty() {
        format!("/api/{}", def.version)
    } else {
        format!("/apis/{}/{}", def.group, def.version)
    };
    let ident = format!("{}{}", group_ident(&def.group), capitalize(&def.version));
    let tag = format!("{}_{}", group_ident(&def.group).to_lowercase(), def.version);
    let scope = if def.namespaced { "Namespaced" } else { "" };
    let kind = &def.kind;
    let this_gvk = gvk(&def.group, &def.version, kind);
    let obj = schema_ref(schema);
    let list = schema_ref(list_schema);
    let status = schema_ref("io.k8s.apimachinery.pkg.apis.meta.v1.Status");
    let ns_base = if def.namespaced {
        format!("{prefix}/namespaces/{{namespace}}/{}", def.plural)
    } else {
        format!("{prefix}/{}", def.plural)
    };
    let verb = |v: &str| def.verbs.iter().any(|x| x == v);
    let mut common = vec![];
    if def.namespaced {
        common.push(path_param(
            "namespace",
            "object name and auth scope, such as for teams and projects",
        ));
    }
    common.push(pretty());
    let mk = |action: &str,
              id: String,
              description: String,
              gvk: &Value,
              params: Vec<Value>,
              body: Option<Value>,
              responses: Value| {
        operation(&tag, action, id, description, gvk, params, body, responses)
    };

    // Collection.
    let mut collection = Map::new();
    collection.insert("parameters".into(), Value::Array(common.clone()));
    if verb("list") {
        collection.insert(
            "get".into(),
            mk(
                "list",
                format!("list{ident}{scope}{kind}"),
                format!("list or watch objects of kind {kind}"),
                &this_gvk,
                list_params(),
                None,
                ok(&list),
            ),
        );
    }
    if verb("create") {
        collection.insert("post".into(), mk("post", format!("create{ident}{scope}{kind}"), format!("create a {kind}"), &this_gvk, vec![dry_run(), field_manager(), field_validation()], Some(json_body(&obj)), json!({"200": {"description": "OK", "content": json_content(&obj)}, "201": {"description": "Created", "content": json_content(&obj)}, "202": {"description": "Accepted", "content": json_content(&obj)}, "401": {"description": "Unauthorized"}})));
    }
    if verb("deletecollection") {
        let mut params = list_params();
        params.extend([
            dry_run(),
            query(
                "gracePeriodSeconds",
                "The duration in seconds before the object should be deleted.",
                "integer",
            ),
            query(
                "propagationPolicy",
                "Whether and how garbage collection will be performed.",
                "string",
            ),
        ]);
        collection.insert(
            "delete".into(),
            mk(
                "deletecollection",
                format!("deletecollection{ident}{scope}{kind}"),
                format!("delete collection of {kind}"),
                &this_gvk,
                params,
                Some(json_body(&schema_ref(
                    "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
                ))),
                ok(&status),
            ),
        );
    }
    paths.insert(ns_base.clone(), Value::Object(collection));

    // All-namespaces list.
    if def.namespaced && verb("list") {
        let op = mk(
            "list",
            format!("list{ident}{kind}ForAllNamespaces"),
            format!("list or watch objects of kind {kind}"),
            &this_gvk,
            list_params(),
            None,
            ok(&list),
        );
        let mut all = Map::new();
        all.insert("parameters".into(), json!([pretty()]));
        all.insert("get".into(), op);
        paths.insert(format!("{prefix}/{}", def.plural), Value::Object(all));
    }

    // Item.
    let mut item_common = vec![path_param("name", &format!("name of the {kind}"))];
    item_common.extend(common.iter().cloned());
    let mut item = Map::new();
    item.insert("parameters".into(), Value::Array(item_common.clone()));
    add_item_ops(
        &mut item,
        &tag,
        &verb,
        &format!("{ident}{scope}{kind}"),
        kind,
        &this_gvk,
        &obj,
        &status,
        true,
    );
    paths.insert(format!("{ns_base}/{{name}}"), Value::Object(item));

    // Subresources.
    for sub in &def.subresources {
        let Some((sub_gvk, sub_schema, verbs)) = subresource_kind(def, sub, schema) else {
            continue;
        };
        let suffix = capitalize(sub);
        let mut p = Map::new();
        p.insert("parameters".into(), Value::Array(item_common.clone()));
        let id = format!("{ident}{scope}{kind}{suffix}");
        let sub_obj = if sub_schema.is_empty() {
            json!({"type": "string"})
        } else {
            schema_ref(&sub_schema)
        };
        let has = |v: &str| verbs.contains(&v);
        if has("connect") {
            for (method, word) in [("get", "Get"), ("post", "Post")] {
                p.insert(
                    method.into(),
                    mk(
                        "connect",
                        format!("connect{ident}{word}{scope}{kind}{suffix}"),
                        format!("connect {method} requests to {sub} of {kind}"),
                        &sub_gvk,
                        vec![],
                        None,
                        ok(&json!({"type": "string"})),
                    ),
                );
            }
        } else if has("post") {
            p.insert(
                "post".into(),
                mk(
                    "post",
                    format!("create{id}"),
                    format!("create {sub} of a {kind}"),
                    &sub_gvk,
                    vec![dry_run(), field_manager(), field_validation()],
                    Some(json_body(&sub_obj)),
                    ok(&sub_obj),
                ),
            );
        } else {
            add_item_ops(
                &mut p,
                &tag,
                &has,
                &id,
                &format!("{sub} of the specified {kind}"),
                &sub_gvk,
                &sub_obj,
                &status,
                false,
            );
        }
        paths.insert(format!("{ns_base}/{{name}}/{sub}"), Value::Object(p));
    }
}

#[allow(clippy::too_many_arguments)]
fn add_item_ops(
    item: &mut Map<String, Value>,
    tag: &str,
    verb: &dyn Fn(&str) -> bool,
    ident: &str,
    what: &str,
    gvk: &Value,
    obj: &Value,
    status: &Value,
    is_item: bool,
) {
    let op = |action: &str,
              id: String,
              description: String,
              params: Vec<Value>,
              body: Option<Value>,
              responses: Value| {
        operation(tag, action, id, description, gvk, params, body, responses)
    };
    let created = json!({"200": {"description": "OK", "content": json_content(obj)}, "201": {"description": "Created", "content": json_content(obj)}, "401": {"description": "Unauthorized"}});
    if verb("get") {
        item.insert(
            "get".into(),
            op(
                "get",
                format!("read{ident}"),
                format!("read {what}"),
                vec![],
                None,
                ok(obj),
            ),
        );
    }
    if verb("update") || verb("put") {
        item.insert(
            "put".into(),
            op(
                "put",
                format!("replace{ident}"),
                format!("replace {what}"),
                vec![dry_run(), field_manager(), field_validation()],
                Some(json_body(obj)),
                created.clone(),
            ),
        );
    }
    if is_item && verb("delete") {
        let params = vec![
            dry_run(),
            query(
                "gracePeriodSeconds",
                "The duration in seconds before the object should be deleted.",
                "integer",
            ),
            query(
                "propagationPolicy",
                "Whether and how garbage collection will be performed.",
                "string",
            ),
        ];
        let body = json_body(&schema_ref(
            "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
        ));
        item.insert("delete".into(), op("delete", format!("delete{ident}"), format!("delete {what}"), params, Some(body), json!({"200": {"description": "OK", "content": json_content(status)}, "202": {"description": "Accepted", "content": json_content(status)}, "401": {"description": "Unauthorized"}})));
    }
    if verb("patch") {
        item.insert(
            "patch".into(),
            op(
                "patch",
                format!("patch{ident}"),
                format!("partially update {what}"),
                vec![dry_run(), field_manager(), field_validation(), force()],
                Some(patch_body(
                    super::kinds::find(
                        gvk["group"].as_str().unwrap_or_default(),
                        gvk["version"].as_str().unwrap_or_default(),
                        gvk["kind"].as_str().unwrap_or_default(),
                    )
                    .is_some(),
                )),
                created,
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_idents_follow_kube_operation_ids() {
        assert_eq!(group_ident(""), "Core");
        assert_eq!(group_ident("apps"), "Apps");
        assert_eq!(group_ident("networking.k8s.io"), "Networking");
        assert_eq!(
            group_ident("rbac.authorization.k8s.io"),
            "RbacAuthorization"
        );
    }
}
