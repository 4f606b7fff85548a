//! The CRD admission plug-in: validates CustomResourceDefinition objects as
//! apiextensions-apiserver's strategy does (422 Invalid with kube's field
//! paths), and gives custom resources their schema's pruning, defaults and
//! validation, plus `fieldValidation` handling of pruned fields.
//!
//! Partial: CRD validation covers names, group, scope, versions (one
//! storage version, unique names, served schemas), structural schemas and
//! printer columns; on updates, `group` and `scope` are immutable and
//! versions in `status.storedVersions` cannot be dropped. Not checked: CEL
//! rules, schema ratcheting, conversion webhooks (refused nowhere, served
//! as `None`).

use std::sync::Arc;

use serde_json::Value;

use super::{schema, CLEANUP_FINALIZER};
use crate::apiserver::admission::{Admission, AdmissionRequest, FieldValidation, Operation};
use crate::apiserver::registry::Registry;
use crate::apiserver::status::{ApiStatus, Cause};

pub struct CrdAdmission {
    registry: Arc<Registry>,
}

impl CrdAdmission {
    pub fn new(registry: Arc<Registry>) -> Self {
        CrdAdmission { registry }
    }
}

impl Admission for CrdAdmission {
    fn name(&self) -> &'static str {
        "customresources"
    }

    fn admit(
        &self,
        req: &AdmissionRequest<'_>,
        obj: &mut Value,
        warnings: &mut Vec<String>,
    ) -> Result<(), ApiStatus> {
        if super::is_crd_kind(req.def) {
            if req.subresource.is_none() {
                let mut causes = validate_crd(obj);
                if let Some(old) = req.old {
                    causes.extend(immutable_changes(old, obj));
                }
                if !causes.is_empty() {
                    return Err(ApiStatus::invalid(
                        &req.def.kind,
                        &req.def.group,
                        obj.pointer("/metadata/name")
                            .and_then(Value::as_str)
                            .unwrap_or(req.name),
                        causes,
                    ));
                }
                if req.operation == Operation::Create {
                    add_finalizer(obj);
                }
            }
            return Ok(());
        }
        let def = req.def;
        let Some(crd) = self.registry.custom(&def.group, &def.version, &def.plural) else {
            return Ok(());
        };
        let Some(schema) = super::schema_of(&crd, &def.version) else {
            return Ok(());
        };
        let dropped = schema::prune(schema, obj);
        if !dropped.is_empty() {
            let texts: Vec<String> = dropped
                .iter()
                .map(|p| format!("unknown field \"{p}\""))
                .collect();
            match req.field_validation {
                FieldValidation::Strict => {
                    return Err(ApiStatus::bad_request(format!(
                        "strict decoding error: {}",
                        texts.join(", ")
                    )))
                }
                FieldValidation::Warn => warnings.extend(texts),
                FieldValidation::Ignore => {}
            }
        }
        schema::apply_defaults(schema, obj);
        let causes = schema::validate(schema, obj);
        if causes.is_empty() {
            return Ok(());
        }
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or(req.name);
        Err(ApiStatus::invalid(&def.kind, &def.group, name, causes))
    }
}

fn add_finalizer(obj: &mut Value) {
    let mut list = crate::apiserver::objects::finalizers(obj);
    if !list.iter().any(|f| f == CLEANUP_FINALIZER) {
        list.push(CLEANUP_FINALIZER.into());
        obj["metadata"]["finalizers"] = serde_json::json!(list);
    }
}

fn required(field: String, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueRequired".into(),
        message: if detail.is_empty() {
            "Required value".into()
        } else {
            format!("Required value: {detail}")
        },
        field,
    }
}

fn invalid(field: &str, value: &str, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid".into(),
        message: format!("Invalid value: {value:?}: {detail}"),
        field: field.into(),
    }
}

fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn dns1035_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Fields of a CRD that may not change once it exists.
fn immutable_changes(old: &Value, new: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    for (ptr, field) in [("/spec/group", "spec.group"), ("/spec/scope", "spec.scope")] {
        let (was, is) = (str_at(old, ptr), str_at(new, ptr));
        if was != is {
            errs.push(invalid(field, is, "field is immutable"));
        }
    }
    let stored = old
        .pointer("/status/storedVersions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let versions: Vec<&str> = new
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v["name"].as_str()).collect())
        .unwrap_or_default();
    for v in stored.iter().filter_map(Value::as_str) {
        if !versions.contains(&v) {
            errs.push(invalid(
                "status.storedVersions[0]",
                v,
                "must appear in spec.versions",
            ));
        }
    }
    errs
}

/// The causes that make a CRD invalid, worded as kube words them.
pub fn validate_crd(crd: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    let name = str_at(crd, "/metadata/name");
    let group = str_at(crd, "/spec/group");
    let plural = str_at(crd, "/spec/names/plural");
    let kind = str_at(crd, "/spec/names/kind");
    if name != format!("{plural}.{group}") {
        errs.push(invalid(
            "metadata.name",
            name,
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    if group.is_empty() {
        errs.push(required("spec.group".into(), ""));
    } else if group.split('.').count() < 2 {
        errs.push(invalid(
            "spec.group",
            group,
            "should be a domain with at least one dot",
        ));
    }
    if plural.is_empty() {
        errs.push(required("spec.names.plural".into(), ""));
    } else if !dns1035_label(plural) {
        errs.push(invalid(
            "spec.names.plural",
            plural,
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
        ));
    }
    if kind.is_empty() {
        errs.push(required("spec.names.kind".into(), ""));
    }
    let singular = str_at(crd, "/spec/names/singular");
    if !singular.is_empty() && !dns1035_label(singular) {
        errs.push(invalid(
            "spec.names.singular",
            singular,
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
        ));
    }
    match str_at(crd, "/spec/scope") {
        "Namespaced" | "Cluster" => {}
        "" => errs.push(required("spec.scope".into(), "")),
        other => errs.push(Cause {
            reason: "FieldValueNotSupported".into(),
            message: format!(
                "Unsupported value: {other:?}: supported values: \"Cluster\", \"Namespaced\""
            ),
            field: "spec.scope".into(),
        }),
    }
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if versions.is_empty() {
        errs.push(invalid(
            "spec.versions",
            "null",
            "must have exactly one version marked as storage version",
        ));
        return errs;
    }
    let storage = versions.iter().filter(|v| v["storage"] == true).count();
    if storage != 1 {
        errs.push(Cause {
            reason: "FieldValueInvalid".into(),
            message:
                "Invalid value: \"[...]\": must have exactly one version marked as storage version"
                    .into(),
            field: "spec.versions".into(),
        });
    }
    if !versions.iter().any(|v| v["served"] == true) {
        errs.push(Cause {
            reason: "FieldValueInvalid".into(),
            message: "Invalid value: \"[...]\": must have at least one version marked as served"
                .into(),
            field: "spec.versions".into(),
        });
    }
    let mut seen: Vec<&str> = Vec::new();
    for (i, v) in versions.iter().enumerate() {
        let base = format!("spec.versions[{i}]");
        let vname = str_at(v, "/name");
        if vname.is_empty() {
            errs.push(required(format!("{base}.name"), ""));
        } else if !dns1035_label(vname) {
            errs.push(invalid(
                &format!("{base}.name"),
                vname,
                "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')",
            ));
        } else if seen.contains(&vname) {
            errs.push(Cause {
                reason: "FieldValueDuplicate".into(),
                message: format!("Duplicate value: {vname:?}"),
                field: format!("{base}.name"),
            });
        }
        seen.push(vname);
        match v.pointer("/schema/openAPIV3Schema") {
            None => errs.push(required(
                format!("{base}.schema.openAPIV3Schema"),
                "schemas are required",
            )),
            Some(s) => {
                errs.extend(schema::structural_errors(
                    s,
                    &format!("{base}.schema.openAPIV3Schema"),
                ));
                if s.get("type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| t != "object")
                {
                    errs.push(Cause {
                        reason: "FieldValueInvalid".into(),
                        message: format!(
                            "Invalid value: {:?}: must be object at the root",
                            s["type"].as_str().unwrap_or("")
                        ),
                        field: format!("{base}.schema.openAPIV3Schema.type"),
                    });
                }
            }
        }
        let columns = v
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for (j, c) in columns.iter().enumerate() {
            let cbase = format!("{base}.additionalPrinterColumns[{j}]");
            if str_at(c, "/name").is_empty() {
                errs.push(required(format!("{cbase}.name"), ""));
            }
            if str_at(c, "/jsonPath").is_empty() {
                errs.push(required(format!("{cbase}.jsonPath"), ""));
            }
            let t = str_at(c, "/type");
            if !matches!(t, "integer" | "number" | "string" | "boolean" | "date") {
                errs.push(Cause {
                    reason: "FieldValueNotSupported".into(),
                    message: format!("Unsupported value: {t:?}: supported values: \"boolean\", \"date\", \"integer\", \"number\", \"string\""),
                    field: format!("{cbase}.type"),
                });
            }
        }
        if let Some(scale) = v.pointer("/subresources/scale") {
            for field in ["specReplicasPath", "statusReplicasPath"] {
                let p = str_at(scale, &format!("/{field}"));
                if p.is_empty() {
                    errs.push(required(format!("{base}.subresources.scale.{field}"), ""));
                } else if !p.starts_with('.') {
                    errs.push(invalid(
                        &format!("{base}.subresources.scale.{field}"),
                        p,
                        "should be a json path under .spec or .status",
                    ));
                }
            }
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_scope_and_stored_versions_stay() {
        let old = serde_json::json!({"spec": {"group": "a.b", "scope": "Namespaced",
            "versions": [{"name": "v1"}]}, "status": {"storedVersions": ["v1"]}});
        let new = serde_json::json!({"spec": {"group": "a.b", "scope": "Cluster",
            "versions": [{"name": "v2"}]}});
        let got: Vec<String> = immutable_changes(&old, &new)
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        assert_eq!(
            got,
            [
                "spec.scope: Invalid value: \"Cluster\": field is immutable",
                "status.storedVersions[0]: Invalid value: \"v1\": must appear in spec.versions",
            ]
        );
    }

    #[test]
    fn crd_errors_name_fields_as_kube_does() {
        let crd = serde_json::json!({"metadata": {"name": "crontabs.example.com"},
            "spec": {"group": "stable.example.com", "scope": "Namespaced",
                     "names": {"plural": "crontabs", "kind": "CronTab"},
                     "versions": [
                        {"name": "v1", "served": true, "storage": true,
                         "schema": {"openAPIV3Schema": {"type": "object",
                            "properties": {"spec": {"properties": {}}}}}},
                        {"name": "v2", "served": true, "storage": true}]}});
        let got: Vec<String> = validate_crd(&crd)
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        assert_eq!(
            got,
            [
                "metadata.name: Invalid value: \"crontabs.example.com\": must be spec.names.plural+\".\"+spec.group",
                "spec.versions: Invalid value: \"[...]\": must have exactly one version marked as storage version",
                "spec.versions[0].schema.openAPIV3Schema.properties[spec].type: Required value: must not be empty for specified object fields",
                "spec.versions[1].schema.openAPIV3Schema: Required value: schemas are required",
            ]
        );
    }
}
