//! Defaulting, validation, fieldValidation and dryRun through the stock
//! kubectl, against the in-process API server.
mod common;

use common::apiserver::TestServer;
use serde_json::Value;

fn json_of(k: &common::kubectl::Kubectl, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    serde_json::from_str(&k.run_ok(&a)).expect("kubectl printed JSON")
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn kubectl_create_shows_kube_defaults() {
    let s = TestServer::start();
    let k = s.kubectl();
    k.run_ok(&["create", "deployment", "web", "--image=nginx:1.27"]);
    let d = json_of(&k, &["get", "deployment", "web"]);
    let spec = &d["spec"];
    assert_eq!(spec["replicas"], 1);
    assert_eq!(spec["revisionHistoryLimit"], 10);
    assert_eq!(spec["progressDeadlineSeconds"], 600);
    assert_eq!(spec["strategy"]["type"], "RollingUpdate");
    assert_eq!(spec["strategy"]["rollingUpdate"]["maxSurge"], "25%");
    assert_eq!(spec["strategy"]["rollingUpdate"]["maxUnavailable"], "25%");
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Always");
    assert_eq!(pod["dnsPolicy"], "ClusterFirst");
    assert_eq!(pod["schedulerName"], "default-scheduler");
    assert_eq!(pod["terminationGracePeriodSeconds"], 30);
    let c = &pod["containers"][0];
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
    assert_eq!(c["terminationMessagePolicy"], "File");
    let yaml = k.run_ok(&["get", "deployment", "web", "-o", "yaml"]);
    assert!(yaml.contains("      securityContext: {}"), "{yaml}");
    assert!(yaml.contains("        resources: {}"), "{yaml}");

    k.run_ok(&["run", "p", "--image=nginx"]);
    let p = json_of(&k, &["get", "pod", "p"]);
    let spec = &p["spec"];
    assert_eq!(spec["restartPolicy"], "Always");
    assert_eq!(spec["enableServiceLinks"], true);
    assert_eq!(spec["priority"], 0);
    assert_eq!(spec["preemptionPolicy"], "PreemptLowerPriority");
    assert_eq!(spec["containers"][0]["imagePullPolicy"], "Always");
    assert_eq!(
        spec["tolerations"][0]["key"],
        "node.kubernetes.io/not-ready"
    );
    assert_eq!(p["status"]["qosClass"], "BestEffort");

    let svc = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector:\n    app: web\n  ports:\n  - port: 80\n";
    let out = k.run_with_stdin(&["create", "-f", "-"], svc);
    assert!(out.status.success(), "{}", stderr(&out));
    let sv = json_of(&k, &["get", "service", "web"]);
    assert_eq!(sv["spec"]["ports"][0]["targetPort"], 80);
    assert_eq!(sv["spec"]["ports"][0]["protocol"], "TCP");
    assert_eq!(sv["spec"]["type"], "ClusterIP");
    assert_eq!(sv["spec"]["sessionAffinity"], "None");
    assert_eq!(sv["spec"]["ipFamilyPolicy"], "SingleStack");
}

const BAD_SELECTOR: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      labels:\n        app: api\n    spec:\n      containers:\n      - name: c\n        image: nginx\n";

#[test]
fn invalid_objects_get_422_with_field_paths() {
    let s = TestServer::start();
    let k = s.kubectl();
    let out = k.run(&["create", "configmap", "Bad_Name"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"), "{err}");
    let out = k.run_with_stdin(&["apply", "-f", "-"], BAD_SELECTOR);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"api\"}: `selector` does not match template `labels`"),
        "{err}"
    );
    assert!(!k.run(&["get", "deployment", "web"]).status.success());
}

const UNKNOWN_FIELD: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  foo: 1\n  selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      labels:\n        app: web\n    spec:\n      containers:\n      - name: c\n        image: nginx\n";

#[test]
fn unknown_fields_follow_field_validation() {
    let s = TestServer::start();
    let k = s.kubectl();
    let out = k.run_with_stdin(&["apply", "-f", "-"], UNKNOWN_FIELD);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("Deployment in version \"v1\" cannot be handled as a Deployment: strict decoding error: unknown field \"spec.foo\""),
        "{err}"
    );
    let out = k.run_with_stdin(&["create", "-f", "-"], UNKNOWN_FIELD);
    assert!(stderr(&out).contains("strict decoding error: unknown field \"spec.foo\""));
    let out = k.run_with_stdin(&["apply", "--validate=warn", "-f", "-"], UNKNOWN_FIELD);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("Warning: unknown field \"spec.foo\""), "{err}");
    let d = json_of(&k, &["get", "deployment", "web"]);
    assert!(
        d["spec"].get("foo").is_none(),
        "unknown fields are not stored"
    );
    // An update through a patch is refused as well.
    let out = k.run_with_stdin(
        &["apply", "-f", "-"],
        &UNKNOWN_FIELD.replace("foo: 1", "foo: 2"),
    );
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("strict decoding error: unknown field \"spec.foo\""),
        "{err}"
    );
    let out = k.run_with_stdin(
        &["apply", "--validate=false", "-f", "-"],
        &UNKNOWN_FIELD.replace("foo: 1", "foo: 3"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("Warning"));
}

#[test]
fn server_dry_run_stores_nothing() {
    let s = TestServer::start();
    let k = s.kubectl();
    let out = k.run_ok(&[
        "create",
        "configmap",
        "c",
        "--from-literal=a=1",
        "--dry-run=server",
        "-o",
        "json",
    ]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["data"]["a"], "1");
    assert!(!k.run(&["get", "configmap", "c"]).status.success());
    k.run_ok(&["create", "deployment", "web", "--image=nginx"]);
    let rv = json_of(&k, &["get", "deployment", "web"])["metadata"]["resourceVersion"].clone();
    k.run_ok(&[
        "patch",
        "deployment",
        "web",
        "--type=merge",
        "-p",
        "{\"spec\":{\"replicas\":3}}",
        "--dry-run=server",
    ]);
    k.run_ok(&[
        "set",
        "image",
        "deployment/web",
        "nginx=nginx:2",
        "--dry-run=server",
    ]);
    k.run_ok(&["delete", "deployment", "web", "--dry-run=server"]);
    let after = json_of(&k, &["get", "deployment", "web"]);
    assert_eq!(after["metadata"]["resourceVersion"], rv);
    assert_eq!(after["spec"]["replicas"], 1);
    k.run_ok(&["create", "configmap", "keep"]);
    k.run_ok(&["delete", "configmaps", "--all", "--dry-run=server"]);
    assert!(k.run(&["get", "configmap", "keep"]).status.success());
    let out = k.run_with_stdin(&["create", "--dry-run=server", "-f", "-"], BAD_SELECTOR);
    assert!(stderr(&out).contains("`selector` does not match template `labels`"));
    let out = k.run_with_stdin(
        &[
            "create",
            "--raw",
            "/api/v1/namespaces/default/configmaps?dryRun=Maybe",
            "-f",
            "-",
        ],
        "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"x\"}}",
    );
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("Unsupported value"), "{err}");
    assert!(!k.run(&["get", "configmap", "x"]).status.success());
}
