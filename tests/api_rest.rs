//! The REST semantics over HTTPS, checked with a plain HTTP client.
mod common;

use common::apiserver::TestServer;
use serde_json::{json, Value};

/// A client with the admin certificate, trusting the server's CA.
fn client(s: &TestServer) -> reqwest::blocking::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pki = rk3s::pki::Pki::load_or_create(
        &s.data_dir().join("server/tls"),
        &rk3s::pki::PkiOptions::new("test-server"),
    )
    .expect("pki");
    let admin = pki.admin();
    let tls = rk3s::pki::client_tls_config(
        pki.ca_bundle_pem(),
        Some((admin.cert_pem.as_bytes(), admin.key_pem.as_bytes())),
    )
    .expect("tls");
    reqwest::blocking::Client::builder()
        .use_preconfigured_tls(tls)
        .build()
        .expect("client")
}

struct Api {
    s: TestServer,
    c: reqwest::blocking::Client,
}

impl Api {
    fn new() -> Self {
        let s = TestServer::start();
        let c = client(&s);
        Api { s, c }
    }
    fn req(
        &self,
        m: reqwest::Method,
        path: &str,
        ct: Option<&str>,
        body: Option<String>,
    ) -> (u16, Value) {
        let mut r = self.c.request(m, format!("{}{}", self.s.url(), path));
        if let Some(ct) = ct {
            r = r.header("Content-Type", ct);
        }
        if let Some(b) = body {
            r = r.body(b);
        }
        let resp = r.send().expect("request");
        let code = resp.status().as_u16();
        let text = resp.text().unwrap_or_default();
        (
            code,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
    fn get(&self, p: &str) -> (u16, Value) {
        self.req(reqwest::Method::GET, p, None, None)
    }
    fn post(&self, p: &str, v: Value) -> (u16, Value) {
        self.req(reqwest::Method::POST, p, None, Some(v.to_string()))
    }
}

const CMS: &str = "/api/v1/namespaces/default/configmaps";

#[test]
fn health_endpoints() {
    let a = Api::new();
    assert_eq!(a.get("/healthz"), (200, Value::String("ok".into())));
    let (code, body) = a.get("/readyz?verbose");
    assert_eq!(code, 200);
    let text = body.as_str().unwrap().to_string();
    assert!(
        text.contains("[+]ping ok")
            && text.contains("[+]etcd ok")
            && text.ends_with("readyz check passed\n"),
        "{text}"
    );
    assert_eq!(a.get("/livez/ping").0, 200);
    assert_eq!(a.get("/livez/nope").0, 404);
}

#[test]
fn create_semantics() {
    let a = Api::new();
    let (code, v) = a.post(
        CMS,
        json!({"metadata": {"generateName": "gen-"}, "data": {"a": "b"}}),
    );
    assert_eq!(code, 201, "{v}");
    let name = v["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("gen-") && name.len() == 9);
    assert!(
        v["metadata"]["uid"].is_string()
            && v["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap()
                .ends_with('Z')
    );
    assert_eq!(v["kind"], "ConfigMap");
    assert!(v["metadata"].get("generation").is_none());
    let (code, v) = a.post(CMS, json!({"metadata": {}}));
    assert_eq!(code, 422);
    assert_eq!(v["details"]["causes"][0]["field"], "metadata.name");
    let (code, v) = a.post(
        "/api/v1/namespaces/nope/configmaps",
        json!({"metadata": {"name": "x"}}),
    );
    assert_eq!(
        (code, v["message"].as_str().unwrap()),
        (404, "namespaces \"nope\" not found")
    );
    let (code, _) = a.post(
        CMS,
        json!({"metadata": {"name": "x", "namespace": "other"}}),
    );
    assert_eq!(code, 400);
    let (code, _) = a.post(
        CMS,
        json!({"apiVersion": "apps/v1", "kind": "ConfigMap", "metadata": {"name": "x"}}),
    );
    assert_eq!(code, 400);
    let (code, _) = a.post(
        &format!("{CMS}?dryRun=All"),
        json!({"metadata": {"name": "dry"}}),
    );
    assert_eq!(code, 201);
    assert_eq!(a.get(&format!("{CMS}/dry")).0, 404);
    let (code, v) = a.req(
        reqwest::Method::POST,
        CMS,
        Some("application/yaml"),
        Some("metadata:\n  name: y\n".into()),
    );
    assert_eq!(code, 201, "{v}");
    assert_eq!(
        a.post(CMS, json!({"metadata": {"name": "y"}})).1["reason"],
        "AlreadyExists"
    );
    assert_eq!(
        a.req(
            reqwest::Method::POST,
            CMS,
            Some("text/plain"),
            Some("x".into())
        )
        .0,
        415
    );
    assert_eq!(
        a.req(reqwest::Method::POST, CMS, None, Some("{bad".into()))
            .0,
        400
    );
    let big = json!({"metadata": {"name": "big"}, "data": {"a": "x".repeat(4 * 1024 * 1024)}});
    assert_eq!(a.post(CMS, big).0, 413);
    let (code, v) = a.get("/api/v1/nothing");
    assert_eq!(
        (code, v["message"].as_str().unwrap()),
        (404, "the server could not find the requested resource")
    );
}

#[test]
fn update_generation_status_and_conflicts() {
    let a = Api::new();
    let deps = "/apis/apps/v1/namespaces/default/deployments";
    let (code, d) = a.post(
        deps,
        json!({"metadata": {"name": "web"}, "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
            "status": {"replicas": 9}}),
    );
    assert_eq!(code, 201);
    assert_eq!(d["metadata"]["generation"], 1);
    assert!(d.get("status").is_none());
    let mut d2 = d.clone();
    d2["spec"]["replicas"] = json!(2);
    let (code, u) = a.req(
        reqwest::Method::PUT,
        &format!("{deps}/web"),
        None,
        Some(d2.to_string()),
    );
    assert_eq!(code, 200);
    assert_eq!(u["metadata"]["generation"], 2);
    let (code, v) = a.req(
        reqwest::Method::PUT,
        &format!("{deps}/web"),
        None,
        Some(d2.to_string()),
    );
    assert_eq!(code, 409);
    assert_eq!(
        v["message"],
        "Operation cannot be fulfilled on deployments.apps \"web\": the object has been modified; please apply your changes to the latest version and try again"
    );
    let (code, s) = a.req(
        reqwest::Method::PATCH,
        &format!("{deps}/web/status"),
        Some("application/merge-patch+json"),
        Some(json!({"status": {"replicas": 2}, "spec": {"replicas": 7}}).to_string()),
    );
    assert_eq!(code, 200, "{s}");
    assert_eq!(s["status"]["replicas"], 2);
    assert_eq!(s["spec"]["replicas"], 2);
    assert_eq!(s["metadata"]["generation"], 2);
    assert_eq!(
        a.req(
            reqwest::Method::PUT,
            &format!("{CMS}/none"),
            None,
            Some(json!({"metadata": {"name": "none"}}).to_string())
        )
        .0,
        404
    );
}

#[test]
fn lists_pages_and_selectors() {
    let a = Api::new();
    for i in 0..5 {
        a.post(
            CMS,
            json!({"metadata": {"name": format!("c{i}"), "labels": {"i": i.to_string()}}}),
        );
    }
    let (_, p1) = a.get(&format!("{CMS}?limit=2"));
    assert_eq!(p1["kind"], "ConfigMapList");
    assert_eq!(p1["items"].as_array().unwrap().len(), 2);
    assert_eq!(p1["metadata"]["remainingItemCount"], 3);
    a.post(CMS, json!({"metadata": {"name": "c9"}}));
    let tok = p1["metadata"]["continue"].as_str().unwrap();
    let (_, p2) = a.get(&format!("{CMS}?limit=10&continue={tok}"));
    let names: Vec<&str> = p2["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["c2", "c3", "c4"], "snapshot excludes c9");
    assert_eq!(
        p2["metadata"]["resourceVersion"],
        p1["metadata"]["resourceVersion"]
    );
    let (_, l) = a.get(&format!("{CMS}?labelSelector=i%20in%20(1,3)"));
    assert_eq!(l["items"].as_array().unwrap().len(), 2);
    let (code, v) = a.get(&format!("{CMS}?fieldSelector=spec.x=1"));
    assert_eq!(
        (code, v["message"].as_str().unwrap()),
        (400, "field label not supported: spec.x")
    );
    let (_, all) = a.get("/api/v1/configmaps");
    assert_eq!(all["items"].as_array().unwrap().len(), 6);
}

#[test]
fn watch_stream() {
    let a = Api::new();
    let (_, c) = a.post(
        CMS,
        json!({"metadata": {"name": "w", "labels": {"on": "1"}}}),
    );
    let rv = c["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let url = format!(
        "{}{CMS}?watch=true&labelSelector=on%3D1&resourceVersion={rv}&timeoutSeconds=2",
        a.s.url()
    );
    let h = std::thread::spawn({
        let c = a.c.clone();
        move || c.get(url).send().unwrap().text().unwrap()
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    a.req(
        reqwest::Method::PATCH,
        &format!("{CMS}/w"),
        Some("application/merge-patch+json"),
        Some(r#"{"data":{"a":"1"}}"#.into()),
    );
    a.req(
        reqwest::Method::PATCH,
        &format!("{CMS}/w"),
        Some("application/merge-patch+json"),
        Some(r#"{"metadata":{"labels":{"on":"0"}}}"#.into()),
    );
    let body = h.join().unwrap();
    let types: Vec<String> = body
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(types, ["MODIFIED", "DELETED"], "{body}");
    let (_, all) = a.get(&format!("{CMS}?watch=1&timeoutSeconds=1"));
    assert_eq!(all["type"], "ADDED");
}

#[test]
fn delete_semantics() {
    let a = Api::new();
    a.post(
        CMS,
        json!({"metadata": {"name": "f", "finalizers": ["x/y"]}}),
    );
    let del = |body: Value| {
        a.req(
            reqwest::Method::DELETE,
            &format!("{CMS}/f"),
            Some("application/json"),
            Some(body.to_string()),
        )
    };
    assert_eq!(del(json!({"preconditions": {"uid": "nope"}})).0, 409);
    let (code, v) = del(json!({"propagationPolicy": "Foreground"}));
    assert_eq!(code, 200);
    assert!(v["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(
        v["metadata"]["finalizers"],
        json!(["x/y", "foregroundDeletion"])
    );
    let (code, _) = a.req(
        reqwest::Method::PATCH,
        &format!("{CMS}/f"),
        Some("application/merge-patch+json"),
        Some(r#"{"metadata":{"finalizers":null}}"#.into()),
    );
    assert_eq!(code, 200);
    assert_eq!(a.get(&format!("{CMS}/f")).0, 404);
    let pods = "/api/v1/namespaces/default/pods";
    a.post(
        pods,
        json!({"metadata": {"name": "bound"}, "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "nginx"}]}}),
    );
    let (code, p) = a.req(
        reqwest::Method::DELETE,
        &format!("{pods}/bound"),
        None,
        None,
    );
    assert_eq!(code, 200);
    assert_eq!(p["metadata"]["deletionGracePeriodSeconds"], 30);
    assert_eq!(
        a.get(&format!("{pods}/bound")).0,
        200,
        "a bound pod waits for its kubelet"
    );
}

#[test]
fn renderings_and_legacy_watch() {
    let a = Api::new();
    a.post(CMS, json!({"metadata": {"name": "t"}}));
    let table = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
    let r =
        a.c.get(format!("{}{CMS}", a.s.url()))
            .header("Accept", table)
            .send()
            .unwrap();
    let t: Value = r.json().unwrap();
    assert_eq!(t["kind"], "Table");
    assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    let r =
        a.c.get(format!("{}{CMS}/t", a.s.url()))
            .header("Accept", "application/yaml")
            .send()
            .unwrap();
    assert!(r.text().unwrap().contains("name: t"));
    let r =
        a.c.get(format!("{}{CMS}/t", a.s.url()))
            .header("Accept", "application/vnd.kubernetes.protobuf")
            .send()
            .unwrap();
    assert_eq!(r.status().as_u16(), 406);
    let (code, ev) = a.get("/api/v1/watch/namespaces/default/configmaps?timeoutSeconds=1");
    assert_eq!((code, ev["type"].as_str().unwrap()), (200, "ADDED"));
}
