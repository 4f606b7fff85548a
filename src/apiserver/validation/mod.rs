//! Validation before anything is stored, worded as kube-apiserver 1.32
//! words it, plus `fieldValidation` (unknown fields).
//!
//! Two admission plug-ins live here:
//! - [`UnknownFields`] (first in the chain): walks the object against its
//!   kind's OpenAPI schema (k8s-openapi's, as `/openapi/v3` serves it),
//!   drops every unknown field (kube never stores them) and, per
//!   `fieldValidation`, fails with `strict decoding error: unknown field
//!   "spec.foo"` (Strict), adds a `Warning` (Warn, the default) or says
//!   nothing (Ignore). A value of the wrong JSON type is a 400 whatever
//!   the mode (`json: cannot unmarshal string into Go struct field
//!   DeploymentSpec.spec.replicas of type int32`). Custom resources are left
//!   to the CRD schema code.
//! - [`Validation`] (last in the chain): 422 Invalid with one cause per
//!   problem, as `ValidateObjectMeta` and the kinds' `Validate*` functions.
//!
//! Validated: object names per kind (DNS-1123 subdomain, DNS-1123 label for
//! Namespaces, DNS-1035 label for Services, path segments for RBAC, CronJob
//! names ≤ 52), generateName, the namespace of namespaced objects, label
//! keys and values, annotation keys and total size (256 KiB); pod specs
//! (pods and every template): containers required, container and volume
//! names (required, DNS labels, unique), images, port ranges and
//! protocols, pull/restart/DNS policies, env names, volume mounts naming a
//! volume; workload selectors (required, non-empty, matching the template
//! labels), replicas ≥ 0, template restart policies (Always; OnFailure or
//! Never for Jobs), CronJob schedules; Service types, ports (required,
//! ranges, names when several, duplicates, protocols), externalName,
//! session affinity. On update: immutable Pod specs (except images,
//! activeDeadlineSeconds, added tolerations, a first nodeName), Service
//! clusterIP, workload selectors, Job templates and completions,
//! StatefulSet specs outside the updatable fields, PVC specs outside
//! `resources.requests`, immutable ConfigMaps/Secrets and Secret types.
//!
//! Through `pods/ephemeralcontainers`: kube's ephemeral container rules
//! (`ephemeral`).
//!
//! Not validated (partial): resource quantities and requests ≤ limits,
//! probes' handlers, security contexts, affinity, topology spread,
//! tolerations' shape, ownerReferences and finalizer names, port names'
//! syntax, Ingress rules and paths, NetworkPolicy peers, RBAC rules,
//! webhook configurations, anything of the less common kinds beyond their
//! metadata. Duplicate JSON fields are not detected (the body is parsed
//! before admission). Kube's Pod-update message ends with a diff of the two
//! specs; ours stops at the list of updatable fields. A strict-decoding
//! failure is always worded like a create/PUT (`<Kind> in version "v1"
//! cannot be handled as a <Kind>: …`), also for a PATCH.

mod csr;
mod ephemeral;
mod fields;
mod meta;
mod spec;
mod update;

use serde_json::Value;

use super::admission::{Admission, AdmissionRequest, Operation};
use super::status::{ApiStatus, Cause};

pub use fields::UnknownFields;

/// The validating plug-in; put it last in the chain.
pub struct Validation;

impl Admission for Validation {
    fn name(&self) -> &'static str {
        "validation"
    }

    fn admit(
        &self,
        req: &AdmissionRequest<'_>,
        obj: &mut Value,
        _warnings: &mut Vec<String>,
    ) -> Result<(), ApiStatus> {
        if req
            .subresource
            .is_some_and(|s| !["status", "approval", "ephemeralcontainers"].contains(&s))
        {
            return Ok(());
        }
        let errs = validate(req, obj);
        if errs.0.is_empty() {
            return Ok(());
        }
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .unwrap_or(req.name);
        Err(ApiStatus::invalid(
            &req.def.kind,
            &req.def.group,
            name,
            errs.0,
        ))
    }
}

/// Every problem with `obj`, in kube's order (metadata, spec, then update
/// rules).
pub fn validate(req: &AdmissionRequest<'_>, obj: &Value) -> Errs {
    let mut errs = Errs::default();
    if req.subresource == Some("approval") {
        csr::approval(req.old, obj, &mut errs);
        return errs;
    }
    if req.subresource == Some("ephemeralcontainers") {
        ephemeral::update(req.old, obj, &mut errs);
        return errs;
    }
    let status_only = req.subresource == Some("status");
    if !status_only {
        meta::object_meta(req, obj, &mut errs);
        spec::kind(req, obj, &mut errs);
    }
    if let (Operation::Update, Some(old)) = (req.operation, req.old) {
        if !status_only {
            update::kind(req, old, obj, &mut errs);
        }
    }
    errs
}

/// A list of field errors, each rendered as kube's `field.Error`.
#[derive(Debug, Default)]
pub struct Errs(pub Vec<Cause>);

impl Errs {
    fn push(&mut self, reason: &str, field: &str, message: String) {
        self.0.push(Cause {
            reason: reason.into(),
            message,
            field: field.into(),
        });
    }

    fn with_detail(head: String, detail: &str) -> String {
        if detail.is_empty() {
            head
        } else {
            format!("{head}: {detail}")
        }
    }

    pub fn required(&mut self, field: &str, detail: &str) {
        let m = Self::with_detail("Required value".into(), detail);
        self.push("FieldValueRequired", field, m);
    }

    pub fn forbidden(&mut self, field: &str, detail: &str) {
        let m = Self::with_detail("Forbidden".into(), detail);
        self.push("FieldValueForbidden", field, m);
    }

    /// `value` is already rendered (see [`quote`], [`go_map`]).
    pub fn invalid(&mut self, field: &str, value: &str, detail: &str) {
        let m = Self::with_detail(format!("Invalid value: {value}"), detail);
        self.push("FieldValueInvalid", field, m);
    }

    pub fn not_supported(&mut self, field: &str, value: &str, valid: &[&str]) {
        let list: Vec<String> = valid.iter().map(|v| quote(v)).collect();
        let m = format!(
            "Unsupported value: {}: supported values: {}",
            quote(value),
            list.join(", ")
        );
        self.push("FieldValueNotSupported", field, m);
    }

    pub fn duplicate(&mut self, field: &str, value: &str) {
        self.push(
            "FieldValueDuplicate",
            field,
            format!("Duplicate value: {value}"),
        );
    }

    pub fn not_found(&mut self, field: &str, value: &str) {
        self.push("FieldValueNotFound", field, format!("Not found: {value}"));
    }

    pub fn too_long(&mut self, field: &str, max: usize) {
        self.push(
            "FieldValueTooLong",
            field,
            format!("Too long: may not be more than {max} bytes"),
        );
    }
}

/// Go's `%q` of a string (close enough: JSON escaping).
pub fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

/// Go's `%#v` of a `map[string]string` (keys sorted, as Go prints maps).
pub fn go_map(v: Option<&Value>) -> String {
    let Some(m) = v.and_then(Value::as_object) else {
        return "map[string]string(nil)".into();
    };
    let mut pairs: Vec<(&String, String)> = m
        .iter()
        .map(|(k, v)| {
            (
                k,
                v.as_str()
                    .map(String::from)
                    .unwrap_or_else(|| v.to_string()),
            )
        })
        .collect();
    pairs.sort();
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}:{}", quote(k), quote(v)))
        .collect();
    format!("map[string]string{{{}}}", inner.join(", "))
}

/// Go's `%#v` of a `metav1.LabelSelector`.
pub fn go_label_selector(sel: &Value) -> String {
    let exprs = match sel.get("matchExpressions").and_then(Value::as_array) {
        None => "[]v1.LabelSelectorRequirement(nil)".to_string(),
        Some(list) => {
            let items: Vec<String> = list
                .iter()
                .map(|e| {
                    let values = match e.get("values").and_then(Value::as_array) {
                        None => "[]string(nil)".to_string(),
                        Some(vs) => format!(
                            "[]string{{{}}}",
                            vs.iter()
                                .map(|v| quote(v.as_str().unwrap_or("")))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    };
                    format!(
                        "v1.LabelSelectorRequirement{{Key:{}, Operator:{}, Values:{values}}}",
                        quote(e["key"].as_str().unwrap_or("")),
                        quote(e["operator"].as_str().unwrap_or(""))
                    )
                })
                .collect();
            format!("[]v1.LabelSelectorRequirement{{{}}}", items.join(", "))
        }
    };
    format!(
        "v1.LabelSelector{{MatchLabels:{}, MatchExpressions:{exprs}}}",
        go_map(sel.get("matchLabels"))
    )
}

#[cfg(test)]
mod tests;
