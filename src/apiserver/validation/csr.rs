//! CertificateSigningRequests (`certificates.k8s.io/v1`), as kube's
//! `ValidateCertificateSigningRequest*` words it: a signer is required and
//! `kubernetes.io/legacy-unknown` is refused through v1; the `approval`
//! subresource keeps Approved and Denied apart, never twice, and never
//! removed once set.

use serde_json::Value;

use super::{quote, Errs};

/// The signer v1 refuses, as kube does.
pub const LEGACY_UNKNOWN: &str = "kubernetes.io/legacy-unknown";

pub(super) fn spec(obj: &Value, errs: &mut Errs) {
    let spec = &obj["spec"];
    if spec["request"].as_str().unwrap_or_default().is_empty() {
        errs.required("spec.request", "");
    }
    match spec["signerName"].as_str().unwrap_or_default() {
        "" => errs.required("spec.signerName", ""),
        LEGACY_UNKNOWN => errs.invalid(
            "spec.signerName",
            &quote(LEGACY_UNKNOWN),
            "the legacy signerName is not allowed via this API version",
        ),
        name if !name.contains('/') => errs.invalid(
            "spec.signerName",
            &quote(name),
            "must be a fully qualified domain and path of the form 'example.com/signer-name'",
        ),
        _ => {}
    }
    if spec["usages"].as_array().is_none_or(|u| u.is_empty()) {
        errs.required("spec.usages", "");
    }
}

/// The conditions of an `approval` update against the stored ones.
pub(super) fn approval(old: Option<&Value>, obj: &Value, errs: &mut Errs) {
    let types = |v: &Value| -> Vec<String> {
        v.pointer("/status/conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c["type"].as_str().map(String::from))
            .collect()
    };
    let new = types(obj);
    let mut seen: Vec<&str> = Vec::new();
    for (i, t) in new.iter().enumerate() {
        let field = format!("status.conditions[{i}].type");
        if matches!(t.as_str(), "Approved" | "Denied" | "Failed") && seen.contains(&t.as_str()) {
            errs.duplicate(&field, &quote(t));
        }
        let other = match t.as_str() {
            "Approved" => Some("Denied"),
            "Denied" => Some("Approved"),
            _ => None,
        };
        if other.is_some_and(|o| seen.contains(&o)) {
            errs.invalid(
                &field,
                &quote(t),
                "Approved and Denied conditions are mutually exclusive",
            );
        }
        seen.push(t);
    }
    for t in old.map(types).unwrap_or_default() {
        if matches!(t.as_str(), "Approved" | "Denied" | "Failed") && !new.contains(&t) {
            errs.forbidden(
                "status.conditions",
                &format!("updates may not remove a condition of type {}", quote(&t)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn messages(errs: Errs) -> Vec<String> {
        errs.0.into_iter().map(|c| format!("{}: {}", c.field, c.message)).collect()
    }

    #[test]
    fn the_legacy_signer_is_refused_through_v1() {
        let mut errs = Errs::default();
        spec(
            &json!({"spec": {"request": "eA==", "signerName": LEGACY_UNKNOWN, "usages": ["client auth"]}}),
            &mut errs,
        );
        assert_eq!(
            messages(errs),
            ["spec.signerName: Invalid value: \"kubernetes.io/legacy-unknown\": the legacy signerName is not allowed via this API version"]
        );
        let mut errs = Errs::default();
        spec(&json!({"spec": {}}), &mut errs);
        assert_eq!(
            messages(errs),
            [
                "spec.request: Required value",
                "spec.signerName: Required value",
                "spec.usages: Required value"
            ]
        );
    }

    #[test]
    fn approval_keeps_approved_and_denied_apart() {
        let cond = |ts: &[&str]| {
            json!({"status": {"conditions": ts.iter().map(|t| json!({"type": t, "status": "True"})).collect::<Vec<_>>()}})
        };
        let mut errs = Errs::default();
        approval(None, &cond(&["Approved", "Denied"]), &mut errs);
        assert_eq!(
            messages(errs),
            ["status.conditions[1].type: Invalid value: \"Denied\": Approved and Denied conditions are mutually exclusive"]
        );
        let mut errs = Errs::default();
        approval(None, &cond(&["Approved", "Approved"]), &mut errs);
        assert_eq!(messages(errs), ["status.conditions[1].type: Duplicate value: \"Approved\""]);
        let mut errs = Errs::default();
        approval(Some(&cond(&["Approved"])), &cond(&[]), &mut errs);
        assert_eq!(
            messages(errs),
            ["status.conditions: Forbidden: updates may not remove a condition of type \"Approved\""]
        );
        let mut errs = Errs::default();
        approval(Some(&cond(&[])), &cond(&["Approved"]), &mut errs);
        assert!(errs.0.is_empty());
    }
}
