//! `pods/ephemeralcontainers` against the in-process API server (no
//! kubelet): `kubectl debug POD --image --target` (strategic merge patch,
//! with the oldest, default and newest kubectl), a JSON patch and a PUT of
//! the subresource, kube's validation texts for what may not be added,
//! changed or removed, and the verbs the subresource refuses.
mod common;

use common::apiserver::TestServer;
use common::kubectl::Kubectl;
use serde_json::{json, Value};

const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: c\n    image: busybox\n";

async fn client(server: &TestServer) -> kube::Client {
    server.kube_client().await
}

async fn raw(c: &kube::Client, method: &str, path: &str, ctype: &str, body: &Value) -> (u16, Value) {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", ctype)
        .body(kube::client::Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap();
    let resp = c.send(req).await.unwrap();
    let code = resp.status().as_u16();
    let bytes = resp.into_body().collect_bytes().await.unwrap();
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn debug(k: &Kubectl, args: &[&str]) -> (bool, String) {
    let o = k.run(args);
    let all = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    (o.status.success(), all)
}

fn ephemeral(k: &Kubectl) -> Vec<Value> {
    let pod: Value = serde_json::from_str(&k.run_ok(&["get", "pod", "web", "-o", "json"])).unwrap();
    pod["spec"]["ephemeralContainers"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_containers_are_added_through_their_subresource() {
    let s = TestServer::start();
    let k = s.kubectl();
    k.run_with_stdin(&["create", "-f", "-"], POD);
    // kubectl debug, as users type it, with three kubectl releases.
    for (i, kubectl) in [s.kubectl().release(27), s.kubectl(), s.kubectl().release(33)].iter().enumerate() {
        let name = format!("dbg{i}");
        let (ok, out) = debug(
            kubectl,
            &["debug", "web", "--image=busybox", "--target=c", "-c", &name, "--", "ps"],
        );
        assert!(ok, "kubectl debug ({i}): {out}");
        let added = ephemeral(&k);
        assert_eq!(added.len(), i + 1, "{added:?}");
        assert_eq!(added[i]["name"], name.as_str());
        assert_eq!(added[i]["targetContainerName"], "c");
        assert_eq!(added[i]["command"], json!(["ps"]));
        // Defaulted like any container.
        assert_eq!(added[i]["terminationMessagePolicy"], "File");
    }
    // Without a name kubectl picks debugger-xxxxx and says so.
    let (ok, out) = debug(&k, &["debug", "web", "--image=busybox", "--", "true"]);
    assert!(ok && out.contains("Defaulting debug container name to debugger-"), "{out}");

    // A target that is no container of the pod, a taken name: kube's texts.
    let (ok, out) = debug(&k, &["debug", "web", "--image=busybox", "--target=nope", "-c", "x1"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("The Pod \"web\" is invalid: spec.ephemeralContainers[4].targetContainerName: Not found: \"nope\""),
        "{out}"
    );
    let (ok, out) = debug(&k, &["debug", "web", "--image=busybox", "-c", "c"]);
    assert!(!ok && out.contains("spec.ephemeralContainers[4].name: Duplicate value: \"c\""), "{out}");

    let c = client(&s).await;
    let path = "/api/v1/namespaces/default/pods/web/ephemeralcontainers";
    // GET answers the Pod.
    let (code, pod) = raw(&c, "GET", path, "application/json", &Value::Null).await;
    assert_eq!((code, pod["kind"].as_str()), (200, Some("Pod")));
    // A JSON patch adding one; ports are refused.
    let add = |ec: Value| json!([{"op": "add", "path": "/spec/ephemeralContainers/-", "value": ec}]);
    let (code, st) = raw(&c, "PATCH", path, "application/json-patch+json",
        &add(json!({"name": "j", "image": "busybox", "ports": [{"containerPort": 80}]}))).await;
    assert_eq!(code, 422, "{st}");
    assert_eq!(
        st["message"],
        "Pod \"web\" is invalid: spec.ephemeralContainers[4].ports: Forbidden: cannot be set for an Ephemeral Container"
    );
    let (code, pod) = raw(&c, "PATCH", path, "application/json-patch+json",
        &add(json!({"name": "j", "image": "busybox", "stdin": true}))).await;
    assert_eq!(code, 200, "{pod}");
    assert_eq!(pod["spec"]["ephemeralContainers"][4]["name"], "j");
    // A PUT changes nothing but ephemeral containers: the label is dropped,
    // and an existing one may be neither changed nor removed.
    let mut put = pod.clone();
    put["metadata"]["labels"] = json!({"sneaky": "yes"});
    put["spec"]["ephemeralContainers"][4]["image"] = json!("alpine");
    let (code, st) = raw(&c, "PUT", path, "application/json", &put).await;
    assert_eq!(code, 422, "{st}");
    assert_eq!(st["details"]["causes"][0]["field"], "spec.ephemeralContainers[j]");
    assert_eq!(st["details"]["causes"][0]["message"], "Forbidden: existing ephemeral containers \"j\" may not be changed\n");
    let mut put = pod.clone();
    put["metadata"]["labels"] = json!({"sneaky": "yes"});
    put["spec"]["ephemeralContainers"].as_array_mut().unwrap().remove(0);
    let (code, st) = raw(&c, "PUT", path, "application/json", &put).await;
    assert_eq!(code, 422, "{st}");
    assert_eq!(
        st["details"]["causes"][0]["message"],
        "Forbidden: existing ephemeral containers \"dbg0\" may not be removed\n"
    );
    let mut put = pod.clone();
    put["metadata"]["labels"] = json!({"sneaky": "yes"});
    put["spec"]["containers"][0]["image"] = json!("alpine");
    put["spec"]["ephemeralContainers"].as_array_mut().unwrap().push(json!({"name": "p", "image": "busybox"}));
    let (code, pod) = raw(&c, "PUT", path, "application/json", &put).await;
    assert_eq!(code, 200, "{pod}");
    assert_eq!(pod["spec"]["ephemeralContainers"][5]["name"], "p");
    assert!(pod["metadata"]["labels"]["sneaky"].is_null(), "{pod}");
    assert_eq!(pod["spec"]["containers"][0]["image"], "busybox");
    // Only get, update and patch.
    let (code, _) = raw(&c, "DELETE", path, "application/json", &Value::Null).await;
    assert_eq!(code, 405);
    assert_eq!(k.run_ok(&["get", "pod", "web", "-o", "name"]).trim(), "pod/web");
}
