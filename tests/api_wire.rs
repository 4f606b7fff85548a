//! Wire details other clients depend on (issue 19, parts 2–5): OpenAPI v2
//! (JSON and gnostic protobuf) and `kubectl create/apply -f` of a `List`;
//! metadata-only get/list/watch (kube-rs's `get_metadata`, `list_metadata`,
//! metadata watcher, and raw HTTP for kube's 406s); events.k8s.io/v1
//! Events converted to and from core/v1 (a kube-rs `Recorder` write read by
//! `kubectl get events`, `kubectl events` and `kubectl describe`);
//! `componentstatuses`; and create errors compared byte for byte with the
//! texts kube-apiserver writes (taken from its source).
mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::apiserver::TestServer;
use common::kubectl::Kubectl;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::{self, Event};
use serde_json::Value;

async fn client(server: &TestServer) -> kube::Client {
    server.kube_client().await
}

/// One raw request: status, headers and body bytes.
async fn raw(
    client: &kube::Client,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, http::HeaderMap, Vec<u8>) {
    let mut req = http::Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(kube::client::Body::from(body.as_bytes().to_vec())).unwrap();
    let resp = client.send(req).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect_bytes().await.unwrap();
    (status, headers, bytes.to_vec())
}

fn run(k: &Kubectl, args: &[&str], stdin: &str) -> (bool, String, String) {
    let out = k.run_with_stdin(args, stdin);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const OBJECTS: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: listed\ndata:\n  a: \"1\"\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: c\n        image: busybox\n";

#[test]
fn kubectl_creates_and_applies_a_list_file() {
    let s = TestServer::start();
    let k = s.kubectl();
    let (ok, _, err) = run(&k, &["create", "-f", "-"], OBJECTS);
    assert!(ok, "{err}");
    // What `kubectl get -o yaml` writes for several objects: a `kind: List`.
    let list = k.run_ok(&["get", "cm/listed", "deploy/web", "-o", "yaml"]);
    assert!(list.contains("kind: List"), "{list}");
    k.run_ok(&["delete", "cm/listed", "deploy/web", "--wait=false"]);
    for _ in 0..50 {
        if k.run(&["get", "cm/listed"]).status.success() || k.run(&["get", "deploy/web"]).status.success() {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // kubectl create clears the resourceVersions `get -o yaml` wrote.
    let (ok, out, err) = run(&k, &["create", "-f", "-"], &list);
    assert!(ok, "kubectl create -f of a List: {out}{err}");
    assert!(out.contains("configmap/listed created"), "{out}");
    assert!(out.contains("deployment.apps/web created"), "{out}");
    // apply sends them as preconditions (stale now, a 409 from kube too):
    // apply a List without them.
    let list: String = list
        .lines()
        .filter(|l| !["resourceVersion:", "uid:"].iter().any(|f| l.trim_start().starts_with(f)))
        .map(|l| format!("{l}\n"))
        .collect();
    // apply of the same List (client-side apply reads /openapi/v2 for its
    // patch metadata), then changed.
    let (ok, out, err) = run(&k, &["apply", "-f", "-"], &list);
    assert!(ok, "kubectl apply -f of a List: {out}{err}");
    let changed = list.replace("a: \"1\"", "a: \"2\"");
    let (ok, out, err) = run(&k, &["apply", "-f", "-"], &changed);
    assert!(ok, "{out}{err}");
    assert_eq!(k.run_ok(&["get", "cm/listed", "-o", "jsonpath={.data.a}"]), "2");
    // Client-side validation of the List's items against the v2 schemas.
    let bad = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata:\n    name: bad\n  bogus: 1\n";
    let (ok, out, err) = run(&k, &["create", "-f", "-"], bad);
    assert!(!ok, "{out}");
    assert!(err.contains("unknown field") && err.contains("bogus"), "{err}");
    // The oldest and newest kubectl builds on the machine too.
    for minor in [27, 33] {
        let old = s.kubectl().release(minor);
        let name = format!("listed-{minor}");
        let l = format!("apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata:\n    name: {name}\n  data: {{a: b}}\n");
        let (ok, out, err) = run(&old, &["create", "-f", "-"], &l);
        assert!(ok, "kubectl 1.{minor}: {out}{err}");
        let (ok, out, err) = run(&old, &["apply", "-f", "-"], &l);
        assert!(ok, "kubectl 1.{minor} apply: {out}{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_v2_is_served_in_json_and_protobuf_with_etags() {
    let s = TestServer::start();
    let c = client(&s).await;
    let (code, h, body) = raw(&c, "GET", "/openapi/v2", &[("accept", "application/json")], "").await;
    assert_eq!(code, 200);
    let doc: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["swagger"], "2.0");
    let pod = &doc["definitions"]["io.k8s.api.core.v1.Pod"];
    assert_eq!(pod["x-kubernetes-group-version-kind"][0]["kind"], "Pod");
    assert_eq!(pod["properties"]["spec"]["$ref"], "#/definitions/io.k8s.api.core.v1.PodSpec");
    let patch = &doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"];
    assert_eq!(patch["operationId"], "patchCoreV1NamespacedPod");
    assert_eq!(patch["x-kubernetes-action"], "patch");
    // The v3 document and the v2 one describe the same operations.
    let (_, _, v3) = raw(&c, "GET", "/openapi/v3/api/v1", &[], "").await;
    let v3: Value = serde_json::from_slice(&v3).unwrap();
    for (path, item) in v3["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            assert_eq!(doc["paths"][path][method]["operationId"], op["operationId"], "{method} {path}");
        }
    }
    let etag = h["etag"].to_str().unwrap().to_string();
    let (code, _, body) = raw(&c, "GET", "/openapi/v2", &[("if-none-match", &etag)], "").await;
    assert_eq!(code, 304);
    assert!(body.is_empty());
    let pb = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
    let (code, h, body) = raw(&c, "GET", "/openapi/v2", &[("accept", pb)], "").await;
    assert_eq!(code, 200);
    // kube answers with the dotted spelling (`@` is no valid MIME token).
    assert_eq!(h["content-type"], "application/com.github.proto-openapi.spec.v2.v1.0+protobuf");
    assert_ne!(h["etag"].to_str().unwrap(), etag);
    // Document.swagger (field 1) comes first: tag 0x0a, length 3, "2.0".
    assert_eq!(&body[..5], b"\x0a\x032.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_v2_includes_custom_resources() {
    let s = TestServer::start();
    let k = s.kubectl();
    let crd = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: widgets.example.com\nspec:\n  group: example.com\n  scope: Namespaced\n  names: {plural: widgets, singular: widget, kind: Widget}\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema:\n        type: object\n        properties:\n          spec:\n            type: object\n            properties:\n              size: {type: integer}\n";
    let (ok, _, err) = run(&k, &["create", "-f", "-"], crd);
    assert!(ok, "{err}");
    let c = client(&s).await;
    let mut found = Value::Null;
    for _ in 0..100 {
        let (_, _, body) = raw(&c, "GET", "/openapi/v2", &[], "").await;
        let doc: Value = serde_json::from_slice(&body).unwrap();
        found = doc["definitions"]["com.example.v1.Widget"].clone();
        if !found.is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(found["properties"]["spec"]["properties"]["size"]["type"], "integer");
    // A List holding a custom resource is validated against it.
    let list = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: example.com/v1\n  kind: Widget\n  metadata: {name: w1}\n  spec: {size: 3}\n";
    let k2 = s.kubectl();
    let (ok, out, err) = tokio::task::spawn_blocking(move || run(&k2, &["create", "-f", "-"], list)).await.unwrap();
    assert!(ok, "{out}{err}");
}

fn cm(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([("app".to_string(), "meta".to_string())])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("big".to_string(), "x".repeat(1000))])),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_only_get_list_and_watch() {
    let s = TestServer::start();
    let c = client(&s).await;
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    api.create(&PostParams::default(), &cm("m1")).await.unwrap();
    let m = api.get_metadata("m1").await.unwrap();
    assert_eq!(m.metadata.name.as_deref(), Some("m1"));
    assert_eq!(m.types.as_ref().unwrap().kind, "PartialObjectMetadata");
    let list = api.list_metadata(&ListParams::default().labels("app=meta")).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].metadata.labels.as_ref().unwrap()["app"], "meta");

    // A metadata watcher (what `owns()` and metadata informers use).
    let meta_api: Api<PartialObjectMeta<ConfigMap>> = Api::namespaced(c.clone(), "default");
    let mut events = watcher::watcher(meta_api, watcher::Config::default().labels("app=meta")).boxed();
    let mut seen_init = false;
    let mut names = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while names.len() < 2 {
        let ev = tokio::time::timeout_at(deadline, events.next()).await.expect("watch events").unwrap().unwrap();
        match ev {
            Event::InitDone => {
                seen_init = true;
                api.create(&PostParams::default(), &cm("m2")).await.unwrap();
            }
            Event::InitApply(o) | Event::Apply(o) => names.push(o.metadata.name.unwrap()),
            _ => {}
        }
    }
    assert!(seen_init);
    assert_eq!(names, ["m1", "m2"]);

    // Raw: the bodies are metadata only, and kube's 406s for mismatches.
    let single = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";
    let multi = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";
    let (code, _, body) = raw(&c, "GET", "/api/v1/namespaces/default/configmaps/m1", &[("accept", single)], "").await;
    assert_eq!(code, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["kind"], "PartialObjectMetadata");
    assert!(v.get("data").is_none());
    let (code, _, body) = raw(&c, "GET", "/api/v1/namespaces/default/configmaps", &[("accept", single)], "").await;
    assert_eq!(code, 406);
    assert_eq!(
        String::from_utf8(body).unwrap(),
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"you requested PartialObjectMetadata, but the requested object is a list (*core.ConfigMapList)\",\"reason\":\"NotAcceptable\",\"code\":406}\n"
    );
    let (code, _, body) = raw(&c, "GET", "/api/v1/namespaces/default/configmaps/m1", &[("accept", multi)], "").await;
    assert_eq!(code, 406);
    assert!(String::from_utf8_lossy(&body).contains("you requested PartialObjectMetadataList, but the requested object is not a list (*core.ConfigMap)"));
    // A missing object is a 404 before any rendering, as in kube.
    let (code, _, _) = raw(&c, "GET", "/apis/apps/v1/namespaces/default/deployments/x", &[("accept", multi)], "").await;
    assert_eq!(code, 404);
    let (code, _, body) = raw(&c, "GET", "/api/v1/namespaces?watch=true&timeoutSeconds=1", &[("accept", single)], "").await;
    assert_eq!(code, 200);
    let first: Value = serde_json::from_slice(body.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(first["object"]["kind"], "PartialObjectMetadata");
    // Table watches (kubectl get -w) are served too.
    let table = "application/json;as=Table;v=v1;g=meta.k8s.io";
    let (code, _, body) = raw(&c, "GET", "/api/v1/namespaces?watch=true&timeoutSeconds=1", &[("accept", table)], "").await;
    assert_eq!(code, 200);
    let first: Value = serde_json::from_slice(body.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(first["object"]["kind"], "Table");
    // Other kinds, including one of another group.
    let deploys: Api<Deployment> = Api::all(c.clone());
    assert!(deploys.list_metadata(&ListParams::default()).await.unwrap().items.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorder_events_read_through_both_groups_and_kubectl() {
    use kube::runtime::events::{Event as KEvent, EventType, Recorder, Reporter};
    let s = TestServer::start();
    let c = client(&s).await;
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let created = api.create(&PostParams::default(), &cm("evented")).await.unwrap();
    let reporter = Reporter { controller: "wire-test".into(), instance: Some("wire-0".into()) };
    let recorder = Recorder::new(c.clone(), reporter);
    let reference = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("ConfigMap".into()),
        name: Some("evented".into()),
        namespace: Some("default".into()),
        uid: created.metadata.uid.clone(),
        ..Default::default()
    };
    recorder
        .publish(
            &KEvent {
                type_: EventType::Normal,
                reason: "Tested".into(),
                note: Some("written by a kube-rs Recorder".into()),
                action: "Testing".into(),
                secondary: None,
            },
            &reference,
        )
        .await
        .unwrap();
    let k = s.kubectl();
    let (core, via_group, get, events, describe) = tokio::task::spawn_blocking(move || {
        (
            k.run_ok(&["get", "events.v1.", "-o", "json"]),
            k.run_ok(&["get", "events.v1.events.k8s.io", "-o", "json"]),
            k.run_ok(&["get", "events"]),
            k.run_ok(&["events"]),
            k.run_ok(&["describe", "cm", "evented"]),
        )
    })
    .await
    .unwrap();
    let core: Value = serde_json::from_str(&core).unwrap();
    let ev = core["items"].as_array().unwrap().iter().find(|e| e["reason"] == "Tested").expect("the event in core/v1");
    assert_eq!(ev["message"], "written by a kube-rs Recorder");
    assert_eq!(ev["involvedObject"]["name"], "evented");
    assert_eq!(ev["reportingComponent"], "wire-test");
    assert_eq!(ev["reportingInstance"], "wire-0");
    assert!(ev.get("note").is_none());
    let group: Value = serde_json::from_str(&via_group).unwrap();
    let ev = group["items"].as_array().unwrap().iter().find(|e| e["reason"] == "Tested").unwrap();
    assert_eq!(ev["apiVersion"], "events.k8s.io/v1");
    assert_eq!(ev["note"], "written by a kube-rs Recorder");
    assert_eq!(ev["regarding"]["name"], "evented");
    assert_eq!(ev["reportingController"], "wire-test");
    assert!(get.contains("written by a kube-rs Recorder"), "{get}");
    assert!(events.contains("Tested") && events.contains("ConfigMap/evented"), "{events}");
    assert!(describe.contains("Tested") && describe.contains("written by a kube-rs Recorder"), "{describe}");

    // A core/v1 Event written with kubectl reads through events.k8s.io.
    let k = s.kubectl();
    let core_ev = "apiVersion: v1\nkind: Event\nmetadata:\n  name: core-1\ninvolvedObject: {kind: ConfigMap, name: evented, namespace: default}\nreason: Old\nmessage: from core\ncount: 4\nsource: {component: kubelet}\nfirstTimestamp: \"2026-01-01T00:00:00Z\"\nlastTimestamp: \"2026-01-01T00:00:09Z\"\ntype: Normal\n";
    let out = tokio::task::spawn_blocking(move || {
        let (ok, _, err) = run(&k, &["create", "-f", "-"], core_ev);
        assert!(ok, "{err}");
        k.run_ok(&["get", "events.v1.events.k8s.io", "core-1", "-o", "json"])
    })
    .await
    .unwrap();
    let ev: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(ev["note"], "from core");
    assert_eq!(ev["deprecatedCount"], 4);
    assert_eq!(ev["deprecatedSource"]["component"], "kubelet");
    assert_eq!(ev["deprecatedLastTimestamp"], "2026-01-01T00:00:09Z");
    let (code, _, body) = raw(
        &c,
        "GET",
        "/apis/events.k8s.io/v1/namespaces/default/events?fieldSelector=regarding.name%3Devented,reportingController%3Dwire-test",
        &[],
        "",
    )
    .await;
    assert_eq!(code, 200);
    let list: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
}

#[test]
fn componentstatuses_report_the_running_parts() {
    // The test server runs no scheduler or controllers; register them as
    // `server::run` does, then let the scheduler's guard go.
    let slot: Arc<Mutex<Option<Arc<rk3s::apiserver::componentstatus::Components>>>> = Arc::default();
    let s = {
        let slot = slot.clone();
        TestServer::start_custom(|_| {}, move |o| *slot.lock().unwrap() = Some(o.components.clone()))
    };
    let components = slot.lock().unwrap().clone().unwrap();
    let k = s.kubectl();
    let (ok, out, err) = run(&k, &["get", "cs"], "");
    assert!(ok, "{err}");
    assert!(err.contains("Warning: v1 ComponentStatus is deprecated in v1.19+"), "{err}");
    let line = |name: &str| out.lines().find(|l| l.starts_with(name)).unwrap_or_default().to_string();
    assert!(line("etcd-0").contains("Healthy") && line("etcd-0").contains("ok"), "{out}");
    assert!(line("scheduler").contains("Unhealthy"), "{out}");
    let _cm = components.register(rk3s::apiserver::componentstatus::CONTROLLER_MANAGER);
    let scheduler = components.register(rk3s::apiserver::componentstatus::SCHEDULER);
    let out = k.run_ok(&["get", "componentstatuses"]);
    assert!(out.lines().all(|l| l.starts_with("NAME") || l.contains("Healthy") && !l.contains("Unhealthy")), "{out}");
    drop(scheduler);
    let one: Value = serde_json::from_str(&k.run_ok(&["get", "cs", "scheduler", "-o", "json"])).unwrap();
    assert_eq!(one["kind"], "ComponentStatus");
    assert_eq!(one["conditions"][0]["type"], "Healthy");
    assert_eq!(one["conditions"][0]["status"], "False");
    let (ok, _, err) = run(&k, &["get", "cs", "nope"], "");
    assert!(!ok && err.contains("componentstatuses \"nope\" not found"), "{err}");
}

/// Error bodies for create-from-YAML, byte for byte as kube-apiserver 1.32
/// writes them (texts from its source: `apimachinery/pkg/api/errors`,
/// `apimachinery/pkg/util/validation`, `apiserver/pkg/endpoints/handlers`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_errors_match_kube_byte_for_byte() {
    let s = TestServer::start();
    let c = client(&s).await;
    let yaml = [("content-type", "application/yaml")];
    let post = |path: &'static str, body: &'static str| {
        let c = c.clone();
        async move { raw(&c, "POST", path, &yaml, body).await }
    };
    let cms = "/api/v1/namespaces/default/configmaps";
    // AlreadyExists.
    let (code, _, _) = post(cms, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dup\n").await;
    assert_eq!(code, 201);
    let (code, _, body) = post(cms, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dup\n").await;
    assert_eq!(code, 409);
    assert_eq!(
        String::from_utf8(body).unwrap(),
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"configmaps \\\"dup\\\" already exists\",\"reason\":\"AlreadyExists\",\"details\":{\"name\":\"dup\",\"kind\":\"configmaps\"},\"code\":409}\n"
    );
    // Invalid field value (a name that is no DNS subdomain).
    let (code, _, body) = post(cms, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\n").await;
    assert_eq!(code, 422);
    let rfc1123 = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
    assert_eq!(
        String::from_utf8(body).unwrap(),
        format!("{{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{{}},\"status\":\"Failure\",\"message\":\"ConfigMap \\\"Bad_Name\\\" is invalid: metadata.name: Invalid value: \\\"Bad_Name\\\": {rfc1123}\",\"reason\":\"Invalid\",\"details\":{{\"name\":\"Bad_Name\",\"kind\":\"ConfigMap\",\"causes\":[{{\"reason\":\"FieldValueInvalid\",\"message\":\"Invalid value: \\\"Bad_Name\\\": {rfc1123}\",\"field\":\"metadata.name\"}}]}},\"code\":422}}\n")
    );
    // Missing required field.
    let (code, _, body) = post(
        "/api/v1/namespaces/default/pods",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers: []\n",
    )
    .await;
    assert_eq!(code, 422);
    assert_eq!(
        String::from_utf8(body).unwrap(),
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"Pod \\\"p\\\" is invalid: spec.containers: Required value\",\"reason\":\"Invalid\",\"details\":{\"name\":\"p\",\"kind\":\"Pod\",\"causes\":[{\"reason\":\"FieldValueRequired\",\"message\":\"Required value\",\"field\":\"spec.containers\"}]},\"code\":422}\n"
    );
    // A resourceVersion on create (kube's storage refuses it with a plain
    // error: 500, no reason; kubectl clears it before sending).
    let (code, _, body) = post(cms, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: rv\n  resourceVersion: \"42\"\n").await;
    assert_eq!(code, 500);
    assert_eq!(
        String::from_utf8(body).unwrap(),
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"resourceVersion should not be set on objects to be created\",\"code\":500}\n"
    );
    // Unknown kind sent to a collection (`transformDecodeError`).
    let (code, _, body) = post(cms, "apiVersion: v1\nkind: Widget\nmetadata:\n  name: w\n").await;
    assert_eq!(code, 400);
    assert_eq!(
        String::from_utf8(body).unwrap(),
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"Widget in version \\\"v1\\\" cannot be handled as a ConfigMap: no kind \\\"Widget\\\" is registered for version \\\"v1\\\" in scheme \\\"pkg/api/legacyscheme/scheme.go:30\\\"\",\"reason\":\"BadRequest\",\"code\":400}\n"
    );
}
