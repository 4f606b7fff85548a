//! Label selectors (`metav1.LabelSelector`): matching and the string form,
//! written once for every caller.
//!
//! The rule kube follows (`metav1.LabelSelectorAsSelector`): a nil selector
//! selects nothing and an empty one (`{}`, no matchLabels and no
//! matchExpressions) selects everything. [`selects`] is exactly that.
//! Callers with another rule say so where they call it: kube's workload
//! controllers refuse an empty selector (the Deployment controller's
//! "selecting all pods" check, and validation requires one), so
//! `controllers::workloads` treats an empty selector as selecting nothing.
//!
//! An unknown operator selects nothing (kube fails to convert such a
//! selector, and a failed conversion selects nothing).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::Value;

/// Whether `sel` has neither matchLabels nor matchExpressions.
pub fn is_empty(sel: &LabelSelector) -> bool {
    sel.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && sel.match_expressions.as_ref().is_none_or(|m| m.is_empty())
}

/// Whether `sel` selects the labels `get` looks up (an empty selector selects
/// everything).
pub fn matches_with<'a>(sel: &LabelSelector, get: impl Fn(&str) -> Option<&'a str>) -> bool {
    let labels_ok = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| get(k) == Some(v.as_str()));
    labels_ok
        && sel.match_expressions.iter().flatten().all(|e| {
            let values = e.values.as_deref().unwrap_or(&[]);
            let have = get(&e.key);
            let listed = have.is_some_and(|v| values.iter().any(|x| x == v));
            match e.operator.as_str() {
                "In" => listed,
                "NotIn" => !listed,
                "Exists" => have.is_some(),
                "DoesNotExist" => have.is_none(),
                _ => false,
            }
        })
}

/// Whether `sel` selects `labels` (an empty selector selects everything).
pub fn matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    matches_with(sel, |k| labels.get(k).map(String::as_str))
}

/// kube's rule in full: `None` selects nothing, an empty selector everything.
pub fn selects(sel: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    sel.is_some_and(|s| matches(s, labels))
}

/// A selector given as JSON (`{"matchLabels": …, "matchExpressions": …}`);
/// `None` when it is not a valid LabelSelector.
pub fn from_json(sel: &Value) -> Option<LabelSelector> {
    serde_json::from_value(sel.clone()).ok()
}

/// Whether a JSON selector selects a JSON `metadata.labels` map (`None`:
/// no labels). A JSON selector that is not a LabelSelector selects nothing.
pub fn json_matches(sel: &Value, labels: Option<&serde_json::Map<String, Value>>) -> bool {
    from_json(sel).is_some_and(|s| {
        matches_with(&s, |k| {
            labels.and_then(|l| l.get(k)).and_then(Value::as_str)
        })
    })
}

/// The string form of `sel` (`a=b,c in (x,y),!d`), as `labelSelector=`
/// queries and the Scale subresource's `status.selector` take it: one term
/// per label and expression, sorted by key, values sorted. An empty selector
/// is the empty string (everything).
pub fn to_query(sel: &LabelSelector) -> String {
    let mut parts: Vec<(String, String)> = Vec::new();
    for (k, v) in sel.match_labels.iter().flatten() {
        parts.push((k.clone(), format!("{k}={v}")));
    }
    for e in sel.match_expressions.iter().flatten() {
        let key = &e.key;
        let mut values: Vec<&str> = e.values.iter().flatten().map(String::as_str).collect();
        values.sort();
        let s = match e.operator.as_str() {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            _ => continue,
        };
        parts.push((key.clone(), s));
    }
    parts.sort();
    parts
        .into_iter()
        .map(|(_, s)| s)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sel(v: Value) -> LabelSelector {
        serde_json::from_value(v).unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn nil_selects_nothing_and_empty_selects_everything() {
        let l = labels(&[("app", "web")]);
        assert!(!selects(None, &l));
        assert!(selects(Some(&sel(json!({}))), &l));
        assert!(is_empty(&sel(json!({"matchLabels": {}}))));
    }

    #[test]
    fn labels_and_expressions() {
        let s = sel(json!({"matchLabels": {"app": "web"}, "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["a", "b"]},
            {"key": "canary", "operator": "DoesNotExist"},
            {"key": "zone", "operator": "NotIn", "values": ["x"]}]}));
        assert!(matches(&s, &labels(&[("app", "web"), ("tier", "a")])));
        assert!(!matches(&s, &labels(&[("app", "web"), ("tier", "c")])));
        assert!(!matches(
            &s,
            &labels(&[("app", "web"), ("tier", "a"), ("canary", "1")])
        ));
        assert!(!matches(
            &s,
            &labels(&[("app", "web"), ("tier", "a"), ("zone", "x")])
        ));
        let bad =
            sel(json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}));
        assert!(!matches(&bad, &labels(&[("a", "2")])));
    }

    #[test]
    fn json_selectors_use_the_same_rule() {
        let l = json!({"app": "web"});
        assert!(json_matches(&json!({}), l.as_object()));
        assert!(json_matches(
            &json!({"matchLabels": {"app": "web"}}),
            l.as_object()
        ));
        assert!(!json_matches(
            &json!({"matchLabels": {"app": "db"}}),
            l.as_object()
        ));
        assert!(!json_matches(&json!({"matchLabels": {"app": "web"}}), None));
        assert!(!json_matches(&json!("nonsense"), l.as_object()));
    }

    #[test]
    fn string_form_is_sorted() {
        let s = sel(
            json!({"matchLabels": {"b": "2", "a": "1"}, "matchExpressions": [
            {"key": "c", "operator": "In", "values": ["y", "x"]},
            {"key": "d", "operator": "DoesNotExist"},
            {"key": "e", "operator": "Exists"},
            {"key": "f", "operator": "NotIn", "values": ["z"]}]}),
        );
        assert_eq!(to_query(&s), "a=1,b=2,c in (x,y),!d,e,f notin (z)");
        assert_eq!(to_query(&sel(json!({}))), "");
    }
}
