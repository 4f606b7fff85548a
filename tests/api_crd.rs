//! CustomResourceDefinitions with the stock kubectl: the Kubernetes docs'
//! CronTab example (`stable.example.com`, `crontabs`, shortName `ct`), served
//! at run time, with schema validation, pruning, defaults, printer columns,
//! status and scale subresources, watch, two versions (v1 and a deprecated v1beta1: kube prefers v2 over
//! v1, so a v2 would take over `kubectl get ct`), and cleanup on
//! deletion.
mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::apiserver::TestServer;
use common::kubectl::Kubectl;

const CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: crontabs.stable.example.com
spec:
  group: stable.example.com
  scope: Namespaced
  names:
    plural: crontabs
    singular: crontab
    kind: CronTab
    shortNames: [ct]
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              cronSpec: {type: string}
              image: {type: string}
              replicas: {type: integer, minimum: 1, maximum: 10, default: 1}
          status:
            type: object
            properties:
              replicas: {type: integer}
    subresources:
      status: {}
      scale:
        specReplicasPath: .spec.replicas
        statusReplicasPath: .status.replicas
    additionalPrinterColumns:
    - {name: Spec, type: string, description: The cron spec defining the interval a CronJob is run, jsonPath: .spec.cronSpec}
    - {name: Replicas, type: integer, description: The number of jobs launched by the CronJob, jsonPath: .spec.replicas}
    - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
  - name: v1beta1
    served: true
    storage: false
    deprecated: true
    deprecationWarning: "stable.example.com/v1beta1 CronTab is deprecated; use v1"
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"#;

fn create(k: &Kubectl, args: &[&str], yaml: &str) -> (bool, String) {
    let out = k.run_with_stdin(args, yaml);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn crontab(name: &str, spec: &str) -> String {
    format!("apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata:\n  name: {name}\nspec:\n{spec}")
}

/// Polls `kubectl get crontabs` until it answers; returns how long it took.
fn wait_served(k: &Kubectl) -> Duration {
    let start = Instant::now();
    loop {
        if k.run(&["get", "crontabs"]).status.success() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "crontabs never served"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn crontab_crd_end_to_end() {
    let s = TestServer::start();
    let k = s.kubectl();
    let (ok, out) = create(&k, &["create", "-f", "-"], CRD);
    assert!(ok, "{out}");
    eprintln!("crontabs served after {:?}", wait_served(&k));
    k.run_ok(&[
        "wait",
        "--for",
        "condition=established",
        "crd/crontabs.stable.example.com",
        "--timeout=10s",
    ]);
    let crd = k.run_ok(&["get", "crd", "crontabs.stable.example.com", "-o", "yaml"]);
    assert!(crd.contains("type: Established"), "{crd}");
    assert!(
        crd.contains("customresourcecleanup.apiextensions.k8s.io"),
        "{crd}"
    );
    assert!(crd.contains("storedVersions:\n  - v1"), "{crd}");

    // Create; the default fills replicas.
    let (ok, out) = create(
        &k,
        &["create", "-f", "-"],
        &crontab(
            "my-new-cron-object",
            "  cronSpec: \"* * * * */5\"\n  image: my-awesome-cron-image\n",
        ),
    );
    assert!(ok, "{out}");
    let y = k.run_ok(&["get", "ct", "my-new-cron-object", "-o", "yaml"]);
    assert!(y.contains("replicas: 1"), "{y}");

    // Printer columns.
    let table = k.run_ok(&["get", "ct"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "SPEC", "REPLICAS", "AGE"], "{table}");
    assert!(table.contains("my-new-cron-object"), "{table}");
    assert!(table.contains("* * * * */5"), "{table}");

    // The schema is published in OpenAPI v3 for `kubectl explain`.
    let explain = k.run_ok(&["explain", "crontab.spec"]);
    assert!(explain.contains("KIND:       CronTab"), "{explain}");
    assert!(explain.contains("cronSpec\t<string>"), "{explain}");
    assert!(explain.contains("replicas\t<integer>"), "{explain}");

    // Schema violations name the field.
    let (ok, out) = create(
        &k,
        &["create", "-f", "-"],
        &crontab("too-many", "  cronSpec: x\n  replicas: 20\n"),
    );
    assert!(!ok);
    assert!(
        out.contains("The CronTab \"too-many\" is invalid: spec.replicas: Invalid value: 20: spec.replicas in body should be less than or equal to 10"),
        "{out}"
    );
    let (ok, out) = create(
        &k,
        &["create", "-f", "-"],
        &crontab("wrong-type", "  replicas: two\n"),
    );
    assert!(!ok);
    assert!(
        out.contains("spec.replicas in body must be of type integer: \"string\""),
        "{out}"
    );

    // Unknown fields: rejected under Strict (kubectl's default), pruned otherwise.
    let (ok, out) = create(
        &k,
        &["create", "-f", "-"],
        &crontab("extra", "  cronSpec: x\n  foo: bar\n"),
    );
    assert!(!ok);
    assert!(out.contains("unknown field \"spec.foo\""), "{out}");
    let (ok, out) = create(
        &k,
        &["create", "--validate=false", "-f", "-"],
        &crontab("extra", "  cronSpec: x\n  foo: bar\n"),
    );
    assert!(ok, "{out}");
    let y = k.run_ok(&["get", "ct", "extra", "-o", "yaml"]);
    assert!(!y.contains("foo"), "{y}");

    // Status subresource: spec writes keep status, status writes keep spec.
    k.run_ok(&[
        "patch",
        "ct",
        "my-new-cron-object",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"replicas":2},"spec":{"image":"ignored"}}"#,
    ]);
    k.run_ok(&[
        "patch",
        "ct",
        "my-new-cron-object",
        "--type=merge",
        "-p",
        r#"{"spec":{"image":"new-image"},"status":{"replicas":9}}"#,
    ]);
    let j: serde_json::Value =
        serde_json::from_str(&k.run_ok(&["get", "ct", "my-new-cron-object", "-o", "json"]))
            .unwrap();
    assert_eq!(j["status"]["replicas"], 2);
    assert_eq!(j["spec"]["image"], "new-image");

    // Watch sees changes; scale goes through the scale subresource.
    let mut watch = k.spawn(&[
        "get",
        "ct",
        "--watch",
        "--output-watch-events",
        "-o",
        "name",
    ]);
    std::thread::sleep(Duration::from_secs(1));
    k.run_ok(&["scale", "ct", "my-new-cron-object", "--replicas=3"]);
    let out = k.run_ok(&[
        "get",
        "ct",
        "my-new-cron-object",
        "-o",
        "jsonpath={.spec.replicas}",
    ]);
    assert_eq!(out, "3");
    let (ok, out) = create(
        &k,
        &["scale", "ct", "my-new-cron-object", "--replicas=11"],
        "",
    );
    assert!(!ok && out.contains("less than or equal to 10"), "{out}");
    std::thread::sleep(Duration::from_secs(1));
    let _ = watch.kill();
    let mut seen = String::new();
    watch
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut seen)
        .unwrap();
    let _ = watch.wait();
    // `-o name` prints one line per event: the initial list, then the scale.
    assert!(
        seen.matches("crontab.stable.example.com/my-new-cron-object")
            .count()
            >= 2,
        "{seen}"
    );

    // Both versions serve the same stored object; v2 is deprecated.
    let v2 = k.run_ok(&[
        "get",
        "crontabs.v1beta1.stable.example.com",
        "my-new-cron-object",
        "-o",
        "jsonpath={.apiVersion} {.spec.image}",
    ]);
    assert_eq!(v2, "stable.example.com/v1beta1 new-image");
    let out = k.run(&[
        "label",
        "crontabs.v1beta1.stable.example.com",
        "my-new-cron-object",
        "via=v1beta1",
    ]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("stable.example.com/v1beta1 CronTab is deprecated; use v1"),
        "{err}"
    );
    let v1 = k.run_ok(&[
        "get",
        "ct",
        "my-new-cron-object",
        "-o",
        "jsonpath={.apiVersion} {.metadata.labels.via}",
    ]);
    assert_eq!(v1, "stable.example.com/v1 v1beta1");

    let out = k.run(&["get", "crontabs.v1beta1.stable.example.com"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CronTab is deprecated; use v1"), "{err}");

    // Client-side apply: create, unchanged, configured (merge patch).
    let applied = crontab("applied", "  cronSpec: \"* * * * */1\"\n");
    let (ok, out) = create(&k, &["apply", "-f", "-"], &applied);
    assert!(ok && out.contains("created"), "{out}");
    let (ok, out) = create(&k, &["apply", "-f", "-"], &applied);
    assert!(ok && out.contains("unchanged"), "{out}");
    let (ok, out) = create(&k, &["apply", "-f", "-"], &applied.replace("*/1", "*/2"));
    assert!(ok && out.contains("configured"), "{out}");
    let (ok, out) = create(
        &k,
        &["apply", "-f", "-"],
        &crontab("applied", "  cronSpec: \"* * * * */3\"\n  bogus: 1\n"),
    );
    assert!(!ok && out.contains("unknown field \"spec.bogus\""), "{out}");
    let spec = k.run_ok(&[
        "get",
        "ct",
        "applied",
        "-o",
        "jsonpath={.spec.cronSpec} {.spec.replicas}",
    ]);
    assert_eq!(spec, "* * * * */2 1");

    // Deleting the CRD removes its objects and the kind.
    k.run_ok(&[
        "delete",
        "crd",
        "crontabs.stable.example.com",
        "--timeout=30s",
    ]);
    let resources = k.run_ok(&["api-resources"]);
    assert!(!resources.contains("crontabs"), "{resources}");
    let out = k.run(&["get", "crontabs"]);
    assert!(!out.status.success());
    let (ok, out) = create(&k, &["create", "-f", "-"], CRD);
    assert!(ok, "{out}");
    wait_served(&k);
    let out = k.run(&["get", "crontabs"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("No resources found"), "{text}");
}

#[test]
fn invalid_crds_are_refused_as_kube_words_it() {
    let s = TestServer::start();
    let k = s.kubectl();
    let bad = CRD
        .replace(
            "name: crontabs.stable.example.com",
            "name: crontabs.example.com",
        )
        .replace("storage: false", "storage: true");
    let (ok, out) = create(&k, &["create", "-f", "-"], &bad);
    assert!(!ok);
    assert!(
        out.contains("The CustomResourceDefinition \"crontabs.example.com\" is invalid"),
        "{out}"
    );
    assert!(
        out.contains("metadata.name: Invalid value: \"crontabs.example.com\": must be spec.names.plural+\".\"+spec.group"),
        "{out}"
    );
    assert!(
        out.contains("must have exactly one version marked as storage version"),
        "{out}"
    );
}
