//! RBAC policy rules and how a request matches them, as Kubernetes'
//! `rbac/v1` evaluator decides: verbs, API groups, resources (with
//! `resource/subresource` and `*/subresource`), resource names, and
//! non-resource URLs (exact, `*`, or a `prefix*`).

use serde_json::Value;

use crate::apiserver::auth::Attributes;

pub use crate::apiserver::auth::PolicyRule;

fn strings(v: &Value, field: &str) -> Vec<String> {
    crate::apiserver::objects::string_list(v.get(field))
}

impl PolicyRule {
    /// Reads one rule from its JSON form (unknown or missing fields are empty).
    pub fn from_json(v: &Value) -> PolicyRule {
        PolicyRule {
            verbs: strings(v, "verbs"),
            api_groups: strings(v, "apiGroups"),
            resources: strings(v, "resources"),
            resource_names: strings(v, "resourceNames"),
            non_resource_urls: strings(v, "nonResourceURLs"),
        }
    }

    /// Every rule in a role's `rules`.
    pub fn list_from(role: &Value) -> Vec<PolicyRule> {
        role.get("rules")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(PolicyRule::from_json).collect())
            .unwrap_or_default()
    }

    /// The JSON form, with empty lists left out as the API does.
    pub fn to_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("verbs".into(), serde_json::json!(self.verbs));
        for (k, v) in [
            ("apiGroups", &self.api_groups),
            ("resources", &self.resources),
            ("resourceNames", &self.resource_names),
            ("nonResourceURLs", &self.non_resource_urls),
        ] {
            if !v.is_empty() {
                m.insert(k.into(), serde_json::json!(v));
            }
        }
        Value::Object(m)
    }

    /// Whether this rule allows the request.
    pub fn allows(&self, a: &Attributes<'_>) -> bool {
        if !self.verb_matches(a.verb) {
            return false;
        }
        if !a.resource_request {
            return self.non_resource_matches(a.path);
        }
        self.api_group_matches(a.group)
            && self.resource_matches(a.resource, a.subresource)
            && self.name_matches(a.name)
    }

    fn verb_matches(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == "*" || v == verb)
    }

    fn api_group_matches(&self, group: &str) -> bool {
        self.api_groups.iter().any(|g| g == "*" || g == group)
    }

    fn resource_matches(&self, resource: &str, sub: Option<&str>) -> bool {
        self.resources.iter().any(|r| {
            if r == "*" {
                return true;
            }
            match sub {
                None => r == resource,
                Some(s) => {
                    r.strip_prefix(resource)
                        .and_then(|t| t.strip_prefix('/'))
                        .is_some_and(|t| t == s)
                        || r.strip_prefix("*/").is_some_and(|t| t == s)
                }
            }
        })
    }

    fn name_matches(&self, name: Option<&str>) -> bool {
        if self.resource_names.is_empty() {
            return true;
        }
        name.is_some_and(|n| self.resource_names.iter().any(|r| r == n))
    }

    fn non_resource_matches(&self, path: &str) -> bool {
        self.non_resource_urls.iter().any(|u| {
            u == "*" || u == path || u.strip_suffix('*').is_some_and(|p| path.starts_with(p))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn res<'a>(
        verb: &'a str,
        group: &'a str,
        resource: &'a str,
        sub: Option<&'a str>,
        name: Option<&'a str>,
    ) -> Attributes<'a> {
        Attributes::resource(verb, group, resource, sub, Some("default"), name)
    }

    fn non_res<'a>(verb: &'a str, path: &'a str) -> Attributes<'a> {
        Attributes::non_resource(verb, path)
    }

    fn rule(v: Value) -> PolicyRule {
        PolicyRule::from_json(&v)
    }

    #[test]
    fn verbs_groups_and_resources() {
        let r = rule(json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}));
        assert!(r.allows(&res("get", "", "pods", None, Some("x"))));
        assert!(r.allows(&res("list", "", "pods", None, None)));
        assert!(!r.allows(&res("delete", "", "pods", None, Some("x"))));
        assert!(!r.allows(&res("get", "apps", "pods", None, Some("x"))));
        assert!(!r.allows(&res("get", "", "services", None, Some("x"))));
        // A rule on pods does not reach their subresources.
        assert!(!r.allows(&res("get", "", "pods", Some("log"), Some("x"))));
    }

    #[test]
    fn wildcards() {
        let r = rule(json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}));
        assert!(r.allows(&res(
            "delete",
            "apps",
            "deployments",
            Some("scale"),
            Some("x")
        )));
        assert!(!r.allows(&non_res("get", "/api")));
    }

    #[test]
    fn subresources() {
        let r = rule(json!({"verbs": ["create"], "apiGroups": [""], "resources": ["pods/exec"]}));
        assert!(r.allows(&res("create", "", "pods", Some("exec"), Some("x"))));
        assert!(!r.allows(&res("create", "", "pods", None, None)));
        assert!(!r.allows(&res("create", "", "pods", Some("attach"), Some("x"))));
        let any = rule(json!({"verbs": ["get"], "apiGroups": ["*"], "resources": ["*/status"]}));
        assert!(any.allows(&res(
            "get",
            "apps",
            "deployments",
            Some("status"),
            Some("x")
        )));
        assert!(!any.allows(&res("get", "apps", "deployments", None, Some("x"))));
        // "podsx/exec" must not match a request on "pods".
        let odd = rule(json!({"verbs": ["get"], "apiGroups": [""], "resources": ["podsx/exec"]}));
        assert!(!odd.allows(&res("get", "", "pods", Some("exec"), Some("x"))));
    }

    #[test]
    fn resource_names() {
        let r = rule(json!({"verbs": ["get", "update"], "apiGroups": [""],
            "resources": ["configmaps"], "resourceNames": ["a"]}));
        assert!(r.allows(&res("get", "", "configmaps", None, Some("a"))));
        assert!(!r.allows(&res("get", "", "configmaps", None, Some("b"))));
        // A list has no name, so a named rule never allows it.
        assert!(!r.allows(&res("list", "", "configmaps", None, None)));
    }

    #[test]
    fn non_resource_urls() {
        let r = rule(json!({"verbs": ["get"], "nonResourceURLs": ["/api", "/api/*", "/version"]}));
        assert!(r.allows(&non_res("get", "/api")));
        assert!(r.allows(&non_res("get", "/api/v1")));
        assert!(r.allows(&non_res("get", "/version")));
        assert!(!r.allows(&non_res("get", "/version/x")));
        assert!(!r.allows(&non_res("get", "/apis")));
        assert!(!r.allows(&non_res("post", "/api")));
        // A non-resource rule never allows a resource request.
        assert!(!r.allows(&res("get", "", "pods", None, None)));
        let all = rule(json!({"verbs": ["*"], "nonResourceURLs": ["*"]}));
        assert!(all.allows(&non_res("get", "/anything")));
    }

    #[test]
    fn json_round_trip() {
        let v = json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]});
        assert_eq!(rule(v.clone()).to_json(), v);
    }
}
