//! Server-side apply, managedFields, `kubectl diff`, `kubectl scale` and the
//! eviction subresource, with the stock kubectl against the in-process API
//! server.
mod common;

use std::process::Output;

use common::apiserver::TestServer;
use common::kubectl::Kubectl;
use serde_json::Value;

const WEB: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web, extra: "1"}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        env:
        - {name: KEEP, value: "1"}
        - {name: DROP, value: "2"}
"#;

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "kubectl failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn get(k: &Kubectl, what: &[&str]) -> Value {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    args.extend_from_slice(&["-o", "json", "--show-managed-fields"]);
    serde_json::from_str(&k.run_ok(&args)).unwrap()
}

fn managers(obj: &Value) -> Vec<(String, String)> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["manager"].as_str().unwrap_or_default().to_string(),
                        e["operation"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn server_side_apply_owns_conflicts_and_prunes() {
    let s = TestServer::start();
    let k = s.kubectl();
    let out = ok(&k.run_with_stdin(&["apply", "--server-side", "-f", "-"], WEB));
    assert!(
        out.contains("deployment.apps/web serverside-applied"),
        "{out}"
    );
    let d = get(&k, &["deployment", "web"]);
    assert_eq!(managers(&d), [("kubectl".to_string(), "Apply".to_string())]);
    let rv = d["metadata"]["resourceVersion"].clone();

    // The same file again changes nothing.
    ok(&k.run_with_stdin(&["apply", "--server-side", "-f", "-"], WEB));
    assert_eq!(
        get(&k, &["deployment", "web"])["metadata"]["resourceVersion"],
        rv
    );

    // Another manager changing replicas conflicts, naming the field.
    let other =
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 3\n";
    let out = k.run_with_stdin(
        &["apply", "--server-side", "--field-manager=other", "-f", "-"],
        other,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Apply failed with 1 conflict: conflict with \"kubectl\": .spec.replicas"),
        "{err}"
    );
    assert_eq!(get(&k, &["deployment", "web"])["spec"]["replicas"], 2);

    // --force-conflicts takes ownership.
    ok(&k.run_with_stdin(
        &[
            "apply",
            "--server-side",
            "--field-manager=other",
            "--force-conflicts",
            "-f",
            "-",
        ],
        other,
    ));
    let d = get(&k, &["deployment", "web"]);
    assert_eq!(d["spec"]["replicas"], 3);
    let entries = d["metadata"]["managedFields"].as_array().unwrap();
    let owner_of_replicas: Vec<&str> = entries
        .iter()
        .filter(|e| e["fieldsV1"]["f:spec"].get("f:replicas").is_some())
        .map(|e| e["manager"].as_str().unwrap())
        .collect();
    assert_eq!(owner_of_replicas, ["other"]);

    // Dropping fields from kubectl's file removes them (replicas is
    // other's now, so kubectl leaves it out).
    let dropped = WEB
        .replace("  replicas: 2\n", "")
        .replace(", extra: \"1\"", "")
        .replace("        - {name: DROP, value: \"2\"}\n", "");
    ok(&k.run_with_stdin(&["apply", "--server-side", "-f", "-"], &dropped));
    let d = get(&k, &["deployment", "web"]);
    assert!(d["metadata"]["labels"].get("extra").is_none(), "{d}");
    let env = &d["spec"]["template"]["spec"]["containers"][0]["env"];
    assert_eq!(env.as_array().map(Vec::len), Some(1), "{env}");
    assert_eq!(d["spec"]["replicas"], 3);

    // kubectl hides managedFields unless asked.
    let plain = k.run_ok(&["get", "deployment", "web", "-o", "yaml"]);
    assert!(!plain.contains("managedFields"), "{plain}");
    let shown = k.run_ok(&[
        "get",
        "deployment",
        "web",
        "-o",
        "yaml",
        "--show-managed-fields",
    ]);
    for want in [
        "managedFields:",
        "manager: kubectl",
        "manager: other",
        "operation: Apply",
        "fieldsType: FieldsV1",
        "f:replicas: {}",
        "k:{\"name\":\"web\"}:",
    ] {
        assert!(shown.contains(want), "missing {want}: {shown}");
    }
}

#[test]
fn updates_record_managers_from_field_manager_and_user_agent() {
    let s = TestServer::start();
    let k = s.kubectl();
    ok(&k.run_with_stdin(&["create", "-f", "-"], WEB));
    k.run_ok(&["label", "deployment", "web", "tier=front"]);
    let d = get(&k, &["deployment", "web"]);
    let m = managers(&d);
    assert!(
        m.contains(&("kubectl-create".into(), "Update".into())),
        "{m:?}"
    );
    assert!(
        m.contains(&("kubectl-label".into(), "Update".into())),
        "{m:?}"
    );
    let label_entry = d["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == "kubectl-label")
        .unwrap();
    assert_eq!(
        label_entry["fieldsV1"],
        serde_json::json!({"f:metadata": {"f:labels": {"f:tier": {}}}})
    );
}

#[test]
fn diff_exit_codes() {
    let s = TestServer::start();
    let k = s.kubectl();
    ok(&k.run_with_stdin(&["apply", "-f", "-"], WEB));
    // The file was applied client-side: a server-side diff must force the
    // fields kubectl-client-side-apply owns, as on a real cluster.
    for extra in [&[][..], &["--server-side", "--force-conflicts"][..]] {
        let mut args = vec!["diff", "-f", "-"];
        args.extend_from_slice(extra);
        let same = k.run_with_stdin(&args, WEB);
        assert_eq!(
            same.status.code(),
            Some(0),
            "{extra:?}: {}{}",
            String::from_utf8_lossy(&same.stdout),
            String::from_utf8_lossy(&same.stderr)
        );
        let changed = k.run_with_stdin(&args, &WEB.replace("nginx:1.27", "nginx:1.28"));
        let body = String::from_utf8_lossy(&changed.stdout);
        assert_eq!(
            changed.status.code(),
            Some(1),
            "{extra:?}: {body}{}",
            String::from_utf8_lossy(&changed.stderr)
        );
        assert!(body.contains("-        image: nginx:1.27"), "{body}");
        assert!(body.contains("+        image: nginx:1.28"), "{body}");
    }
    // diff is a dry run: nothing changed.
    let d = get(&k, &["deployment", "web"]);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.27"
    );
}

#[test]
fn scale_subresource() {
    let s = TestServer::start();
    let k = s.kubectl();
    ok(&k.run_with_stdin(&["apply", "-f", "-"], WEB));
    let out = k.run_ok(&["scale", "deployment/web", "--replicas=3"]);
    assert!(out.contains("deployment.apps/web scaled"), "{out}");
    let d = get(&k, &["deployment", "web"]);
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(d["metadata"]["generation"], 2);

    let out = k.run(&[
        "scale",
        "deployment/web",
        "--current-replicas=2",
        "--replicas=4",
    ]);
    assert!(!out.status.success());
    assert_eq!(get(&k, &["deployment", "web"])["spec"]["replicas"], 3);
    k.run_ok(&[
        "scale",
        "deployment/web",
        "--current-replicas=3",
        "--replicas=4",
    ]);
    assert_eq!(get(&k, &["deployment", "web"])["spec"]["replicas"], 4);

    let scale: Value = serde_json::from_str(&k.run_ok(&[
        "get",
        "--raw",
        "/apis/apps/v1/namespaces/default/deployments/web/scale",
    ]))
    .unwrap();
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["apiVersion"], "autoscaling/v1");
    assert_eq!(scale["spec"]["replicas"], 4);
    assert_eq!(scale["status"]["selector"], "app=web");
}

const PODS: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: a, labels: {app: e}}
spec:
  containers: [{name: c, image: busybox}]
---
apiVersion: v1
kind: Pod
metadata: {name: b, labels: {app: e}}
spec:
  containers: [{name: c, image: busybox}]
"#;

fn pdb(min: u32) -> String {
    format!(
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {{name: e}}\nspec:\n  minAvailable: {min}\n  selector:\n    matchLabels: {{app: e}}\n"
    )
}

fn evict(k: &Kubectl, dir: &std::path::Path, pod: &str) -> Output {
    let file = dir.join(format!("evict-{pod}.json"));
    std::fs::write(
        &file,
        format!(
            r#"{{"apiVersion":"policy/v1","kind":"Eviction","metadata":{{"name":"{pod}","namespace":"default"}}}}"#
        ),
    )
    .unwrap();
    k.run(&[
        "create",
        "--raw",
        &format!("/api/v1/namespaces/default/pods/{pod}/eviction"),
        "-f",
        file.to_str().unwrap(),
    ])
}

#[test]
fn eviction_honours_disruption_budgets() {
    let s = TestServer::start();
    let k = s.kubectl();
    let dir = tempfile::tempdir().unwrap();
    ok(&k.run_with_stdin(&["apply", "-f", "-"], PODS));
    for p in ["a", "b"] {
        k.run_ok(&[
            "patch",
            "pod",
            p,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}}"#,
        ]);
    }
    ok(&k.run_with_stdin(&["apply", "-f", "-"], &pdb(2)));
    let out = evict(&k, dir.path(), "a");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Cannot evict pod as it would violate the pod's disruption budget."),
        "{err}"
    );
    k.run_ok(&["get", "pod", "a"]);

    ok(&k.run_with_stdin(&["apply", "-f", "-"], &pdb(1)));
    ok(&evict(&k, dir.path(), "a"));
    let out = k.run(&["get", "pod", "a"]);
    assert!(!out.status.success(), "pod a was evicted");
    // Now b alone keeps the budget: its eviction is refused.
    assert!(!evict(&k, dir.path(), "b").status.success());
}

#[test]
fn server_side_apply_over_client_side_apply() {
    let s = TestServer::start();
    let k = s.kubectl();
    ok(&k.run_with_stdin(&["apply", "-f", "-"], WEB));
    let d = get(&k, &["deployment", "web"]);
    assert!(managers(&d).contains(&("kubectl-client-side-apply".into(), "Update".into())));
    // Another manager changing a field the client-side apply set conflicts.
    let other =
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 3\n";
    let out = k.run_with_stdin(
        &["apply", "--server-side", "--field-manager=other", "-f", "-"],
        other,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"),
        "{err}"
    );
    // kubectl's own upgrade to server-side apply takes the fields over.
    ok(&k.run_with_stdin(
        &["apply", "--server-side", "-f", "-"],
        &WEB.replace("replicas: 2", "replicas: 4"),
    ));
    let d = get(&k, &["deployment", "web"]);
    assert_eq!(d["spec"]["replicas"], 4);
    assert!(
        managers(&d).contains(&("kubectl".into(), "Apply".into())),
        "{:?}",
        managers(&d)
    );
}
