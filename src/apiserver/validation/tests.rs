use serde_json::{json, Value};

use super::fields::prune;
use super::meta::{is_label_value, is_qualified_name, name_errors, NameRule};
use crate::apiserver::admission::{Admission, AdmissionRequest, FieldValidation};
use crate::apiserver::auth::UserInfo;
use crate::apiserver::status::ApiStatus;

fn admit(
    plugin: &dyn Admission,
    group: &str,
    plural: &str,
    old: Option<&Value>,
    fv: FieldValidation,
    obj: &mut Value,
) -> Result<Vec<String>, ApiStatus> {
    let def = crate::apiserver::builtin::builtin_registry()
        .lookup(group, "v1", plural)
        .expect("a built-in kind");
    let user = UserInfo::default();
    let req = AdmissionRequest {
        field_validation: fv,
        ..AdmissionRequest::for_test(&def, Some("default"), "", old, &user)
    };
    let mut w = Vec::new();
    plugin.admit(&req, obj, &mut w).map(|_| w)
}

/// `obj` as the defaults plug-in leaves it on a create: validation sees
/// defaulted objects, as in the chain.
fn defaulted(group: &str, plural: &str, mut obj: Value) -> Value {
    let defaults = crate::apiserver::defaults::Defaults;
    admit(&defaults, group, plural, None, FieldValidation::Strict, &mut obj).unwrap();
    obj
}

fn invalid(group: &str, plural: &str, old: Option<&Value>, obj: Value) -> ApiStatus {
    let mut obj = defaulted(group, plural, obj);
    admit(&super::Validation, group, plural, old, FieldValidation::Strict, &mut obj).unwrap_err()
}

fn causes(s: &ApiStatus) -> Vec<(String, String)> {
    s.to_value()["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["field"].as_str().unwrap().into(),
                c["message"].as_str().unwrap().into(),
            )
        })
        .collect()
}

fn deployment(name: &str, sel: Value, labels: Value) -> Value {
    json!({"metadata": {"name": name, "namespace": "default"}, "spec": {"selector": sel,
        "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})
}

#[test]
fn bad_name_is_worded_like_kube() {
    let s = invalid(
        "apps",
        "deployments",
        None,
        deployment(
            "Bad_Name",
            json!({"matchLabels": {"a": "b"}}),
            json!({"a": "b"}),
        ),
    );
    assert_eq!(s.code, 422);
    assert_eq!(
        s.message,
        "Deployment.apps \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
    );
}

#[test]
fn name_rules_per_kind() {
    assert!(name_errors(NameRule::Dns1035, "1abc", false)[0].starts_with("a DNS-1035 label"));
    assert!(name_errors(NameRule::Label, "a.b", false)[0].starts_with("a lowercase RFC 1123 label"));
    assert!(name_errors(NameRule::Subdomain, "web-", true).is_empty());
    assert_eq!(
        name_errors(NameRule::Subdomain, &"a".repeat(254), false)[0],
        "must be no more than 253 characters"
    );
    assert!(name_errors(NameRule::PathSegment, "system:admin", false).is_empty());
}

#[test]
fn label_syntax() {
    assert!(is_qualified_name("app.kubernetes.io/name").is_empty());
    assert_eq!(
        is_qualified_name("bad key"),
        vec!["name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"]
    );
    assert_eq!(
        is_qualified_name("/x"),
        vec!["prefix part must be non-empty"]
    );
    assert!(is_label_value("").is_empty());
    assert_eq!(
        is_label_value(&"a".repeat(64))[0],
        "must be no more than 63 characters"
    );
    let mut cm = json!({"metadata": {"name": "c", "namespace": "default", "labels": {"ok": "bad value!"}, "annotations": {"big": "x".repeat(300 * 1024)}}});
    let s = admit(
        &super::Validation,
        "",
        "configmaps",
        None,
        FieldValidation::Strict,
        &mut cm,
    )
    .unwrap_err();
    let c = causes(&s);
    assert_eq!(c[0].0, "metadata.labels");
    assert!(c[0]
        .1
        .starts_with("Invalid value: \"bad value!\": a valid label must be an empty string"));
    assert_eq!(
        c[1],
        (
            "metadata.annotations".into(),
            "Too long: may not be more than 262144 bytes".into()
        )
    );
}

#[test]
fn selector_must_match_template() {
    let s = invalid(
        "apps",
        "deployments",
        None,
        deployment(
            "web",
            json!({"matchLabels": {"app": "web"}}),
            json!({"app": "api"}),
        ),
    );
    assert_eq!(
        causes(&s),
        vec![(
            "spec.template.metadata.labels".into(),
            "Invalid value: map[string]string{\"app\":\"api\"}: `selector` does not match template `labels`".into()
        )]
    );
    let s = invalid(
        "apps",
        "deployments",
        None,
        json!({"metadata": {"name": "w", "namespace": "default"}, "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x"}]}}}}),
    );
    assert_eq!(
        causes(&s)[0],
        ("spec.selector".into(), "Required value".into())
    );
}

#[test]
fn pod_spec_rules() {
    let s = invalid(
        "",
        "pods",
        None,
        json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {"containers": [
            {"name": "c", "ports": [{"containerPort": 70000}], "volumeMounts": [{"name": "v", "mountPath": "/x"}]},
            {"name": "c", "image": "x", "imagePullPolicy": "Sometimes"}]}}),
    );
    assert_eq!(
        causes(&s),
        vec![
            ("spec.containers[0].image".into(), "Required value".into()),
            ("spec.containers[0].ports[0].containerPort".into(), "Invalid value: 70000: must be between 1 and 65535, inclusive".into()),
            ("spec.containers[0].volumeMounts[0].name".into(), "Not found: \"v\"".into()),
            ("spec.containers[1].name".into(), "Duplicate value: \"c\"".into()),
            ("spec.containers[1].imagePullPolicy".into(), "Unsupported value: \"Sometimes\": supported values: \"Always\", \"IfNotPresent\", \"Never\"".into()),
        ]
    );
    let s = invalid(
        "",
        "pods",
        None,
        json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {}}),
    );
    assert_eq!(
        s.message,
        "Pod \"p\" is invalid: spec.containers: Required value"
    );
}

#[test]
fn share_process_namespace_is_accepted_but_not_with_host_pid() {
    let pod = |extra: Value| {
        let mut p = json!({"metadata": {"name": "p", "namespace": "default"},
                           "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
        for (k, v) in extra.as_object().unwrap() {
            p["spec"][k] = v.clone();
        }
        p
    };
    let ok = defaulted("", "pods", pod(json!({"shareProcessNamespace": true})));
    admit(&super::Validation, "", "pods", None, FieldValidation::Strict, &mut ok.clone()).unwrap();
    assert_eq!(ok["spec"]["shareProcessNamespace"], true, "the field is kept");
    let s = invalid("", "pods", None, pod(json!({"shareProcessNamespace": true, "hostPID": true})));
    assert_eq!(
        s.message,
        "Pod \"p\" is invalid: spec.securityContext.shareProcessNamespace: Invalid value: true: ShareProcessNamespace and HostPID cannot both be enabled"
    );
    let d = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "d", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {
            "metadata": {"labels": {"a": "b"}},
            "spec": {"shareProcessNamespace": true, "hostPID": true,
                     "containers": [{"name": "c", "image": "busybox"}]}}}});
    let s = invalid("apps", "deployments", None, d);
    assert_eq!(
        causes(&s),
        vec![("spec.template.spec.securityContext.shareProcessNamespace".into(),
              "Invalid value: true: ShareProcessNamespace and HostPID cannot both be enabled".into())]
    );
}

#[test]
fn job_restart_policy_and_service_ports() {
    let s = invalid(
        "batch",
        "jobs",
        None,
        json!({"metadata": {"name": "j", "namespace": "default", "uid": "u"}, "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x"}]}}}}),
    );
    assert_eq!(
        causes(&s),
        vec![(
            "spec.template.spec.restartPolicy".into(),
            "Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\"".into()
        )]
    );
    let s = invalid(
        "",
        "services",
        None,
        json!({"metadata": {"name": "s", "namespace": "default"}, "spec": {"ports": [{"port": 80}, {"port": 0, "name": "b"}]}}),
    );
    assert_eq!(
        causes(&s),
        vec![
            ("spec.ports[0].name".into(), "Required value".into()),
            (
                "spec.ports[1].port".into(),
                "Invalid value: 0: must be between 1 and 65535, inclusive".into()
            ),
            // kube reports the targetPort defaulted from the bad port too.
            (
                "spec.ports[1].targetPort".into(),
                "Invalid value: 0: must be between 1 and 65535, inclusive".into()
            ),
        ]
    );
}

#[test]
fn immutable_fields_on_update() {
    let sel = json!({"matchLabels": {"app": "web"}});
    let old = deployment("web", sel.clone(), json!({"app": "web", "v": "1"}));
    let new = deployment(
        "web",
        json!({"matchLabels": {"app": "web", "v": "1"}}),
        json!({"app": "web", "v": "1"}),
    );
    let s = invalid("apps", "deployments", Some(&old), new);
    assert_eq!(
        causes(&s),
        vec![("spec.selector".into(), "Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"web\", \"v\":\"1\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable".into())]
    );
    let svc = |ip: &str| json!({"metadata": {"name": "s", "namespace": "default"}, "spec": {"clusterIP": ip, "ports": [{"port": 80}]}});
    let s = invalid("", "services", Some(&svc("10.43.0.5")), svc("10.43.0.6"));
    assert_eq!(
        causes(&s)[0],
        (
            "spec.clusterIP".into(),
            "Invalid value: \"10.43.0.6\": field is immutable".into()
        )
    );
    let cm = |v: &str| json!({"metadata": {"name": "c", "namespace": "default"}, "immutable": true, "data": {"a": v}});
    let s = invalid("", "configmaps", Some(&cm("1")), cm("2"));
    assert_eq!(
        causes(&s),
        vec![(
            "data".into(),
            "Forbidden: field is immutable when `immutable` is set".into()
        )]
    );
    let pod = |img: &str, sa: &str| json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {"serviceAccountName": sa, "containers": [{"name": "c", "image": img}]}});
    let old_pod = defaulted("", "pods", pod("a", "x"));
    let mut image_only = defaulted("", "pods", pod("b", "x"));
    admit(
        &super::Validation,
        "",
        "pods",
        Some(&old_pod),
        FieldValidation::Strict,
        &mut image_only,
    )
    .unwrap();
    let s = invalid("", "pods", Some(&old_pod), pod("a", "y"));
    assert!(causes(&s)[0].1.starts_with(
        "Forbidden: pod updates may not change fields other than `spec.containers[*].image`"
    ));
}

#[test]
fn unknown_fields_are_pruned_with_their_paths() {
    let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "w", "bogus": 1},
        "spec": {"foo": 1, "template": {"spec": {"containers": [{"name": "c", "image": "x", "imagePullPolicy": "Always", "bar": true}]}}},
        "status": {}});
    let unknown = prune("apps", "v1", "Deployment", &mut d);
    assert_eq!(
        unknown,
        vec![
            "metadata.bogus",
            "spec.foo",
            "spec.template.spec.containers[0].bar"
        ]
    );
    assert!(d["spec"].get("foo").is_none());
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
        "Always"
    );
    // Free-form and map-valued fields are not pruned.
    let mut cm = json!({"metadata": {"name": "c", "labels": {"x": "y"}, "managedFields": [{"fieldsV1": {"f:data": {}}}]}, "data": {"any": "thing"}});
    assert!(prune("", "v1", "ConfigMap", &mut cm).is_empty());
    let mut cr = json!({"spec": {"anything": 1}});
    assert!(prune("example.com", "v1", "Widget", &mut cr).is_empty());
}

#[test]
fn field_validation_modes() {
    let obj = json!({"metadata": {"name": "c"}, "data": {}, "spec": {"x": 1}});
    let mut o = obj.clone();
    let e = admit(
        &super::UnknownFields,
        "",
        "configmaps",
        None,
        FieldValidation::Strict,
        &mut o,
    )
    .unwrap_err();
    assert_eq!(e.code, 400);
    assert_eq!(e.message, "ConfigMap in version \"v1\" cannot be handled as a ConfigMap: strict decoding error: unknown field \"spec\"");
    let mut o = obj.clone();
    let w = admit(
        &super::UnknownFields,
        "",
        "configmaps",
        None,
        FieldValidation::Warn,
        &mut o,
    )
    .unwrap();
    assert_eq!(w, vec!["unknown field \"spec\"".to_string()]);
    assert!(o.get("spec").is_none());
    let mut o = obj;
    assert!(admit(
        &super::UnknownFields,
        "",
        "configmaps",
        None,
        FieldValidation::Ignore,
        &mut o
    )
    .unwrap()
    .is_empty());
    assert!(o.get("spec").is_none());
}

#[test]
fn wrong_types_are_decoding_errors() {
    let mut d = json!({"metadata": {"name": "w"}, "spec": {"replicas": "three",
        "template": {"spec": {"containers": [{"name": "c", "image": 5}]}}}});
    let e = admit(
        &super::UnknownFields,
        "apps",
        "deployments",
        None,
        FieldValidation::Ignore,
        &mut d,
    )
    .unwrap_err();
    assert_eq!(e.code, 400);
    assert_eq!(
        e.message,
        "Deployment in version \"v1\" cannot be handled as a Deployment: json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32"
    );
    let mut d = json!({"metadata": {"name": "w"}, "spec": {"template": {"spec": {"containers": [{"name": "c", "image": 5}]}}}});
    let (_, e) = super::fields::check("apps", "v1", "Deployment", &mut d);
    assert_eq!(
        e.unwrap(),
        "json: cannot unmarshal number into Go struct field Container.spec.template.spec.containers.image of type string"
    );
    let mut svc =
        json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80, "targetPort": "http"}]}});
    assert!(super::fields::check("", "v1", "Service", &mut svc)
        .1
        .is_none());
}

#[test]
fn statefulset_templates_see_their_claim_templates_and_claims_may_get_a_default_class() {
    let sts = |claims: Value| {
        json!({"metadata": {"name": "web", "namespace": "default"}, "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "x",
                "volumeMounts": [{"name": "data", "mountPath": "/d"}]}]}},
            "volumeClaimTemplates": claims}})
    };
    let fv = FieldValidation::Strict;
    let mut ok = defaulted("apps", "statefulsets", sts(json!([{"metadata": {"name": "data"}}])));
    admit(&super::Validation, "apps", "statefulsets", None, fv, &mut ok).unwrap();
    let s = invalid("apps", "statefulsets", None, sts(json!([{"metadata": {"name": "other"}}])));
    assert_eq!(
        causes(&s),
        vec![("spec.template.spec.containers[0].volumeMounts[0].name".into(), "Not found: \"data\"".into())]
    );
    let old = json!({"metadata": {"name": "c", "namespace": "default"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
    let mut new = old.clone();
    new["spec"]["storageClassName"] = json!("local-path");
    admit(&super::Validation, "", "persistentvolumeclaims", Some(&old), fv, &mut new.clone()).unwrap();
    let mut changed = new.clone();
    changed["spec"]["storageClassName"] = json!("other");
    let s = invalid("", "persistentvolumeclaims", Some(&new), changed);
    assert_eq!(causes(&s)[0].0, "spec");
}
