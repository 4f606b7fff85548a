//! The real kubectl 1.32 against a recording stub: every `kubectl create <generator>` body arrives
//! as protobuf, and `rk3s::apiserver::protobuf::decode` must turn it into exactly the JSON kubectl
//! itself prints for the same object with `--dry-run=client -o json` (Go's own serialization).
//!
//! The stub speaks plain HTTP on loopback (kubectl sends no credentials over http, none are
//! needed), answers `/version` with minor "32" so the dispatcher runs kubectl 1.32, and answers
//! each POST with 201 and the decoded object, as the API server will.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use serde_json::{json, Value};

use rk3s::apiserver::protobuf;

const KUBECTL: &str = "/usr/bin/kubectl";

/// One request the stub saw.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    content_type: String,
    body: Bytes,
}

type Log = Arc<Mutex<Vec<Seen>>>;

async fn handle(
    log: Log,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string();
    log.lock().unwrap().push(Seen {
        method: method.clone(),
        path: uri.path().to_string(),
        content_type: content_type.clone(),
        body: body.clone(),
    });
    let json_response = |status: StatusCode, value: Value| {
        (
            status,
            [(http::header::CONTENT_TYPE, "application/json")],
            value.to_string(),
        )
            .into_response()
    };
    if method == Method::GET && uri.path() == "/version" {
        return json_response(
            StatusCode::OK,
            json!({"major": "1", "minor": "32", "gitVersion": "v1.32.4", "platform": "linux/amd64"}),
        );
    }
    if method == Method::GET {
        if let Some(document) = discovery(uri.path()) {
            return json_response(StatusCode::OK, document);
        }
    }
    if method == Method::POST && content_type == protobuf::CONTENT_TYPE {
        return match protobuf::decode(&body) {
            Ok(mut object) => {
                if object["kind"] == "TokenRequest" {
                    object["status"] = json!({"token": "stub-token", "expirationTimestamp": "2030-01-01T00:00:00Z"});
                }
                json_response(StatusCode::CREATED, object)
            }
            Err(err) => json_response(
                StatusCode::BAD_REQUEST,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": err.to_string(),
                       "reason": "BadRequest", "code": 400}),
            ),
        };
    }
    json_response(
        StatusCode::NOT_FOUND,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "not served by the stub",
               "reason": "NotFound", "code": 404}),
    )
}

/// Just enough legacy discovery for the RBAC generators, which check `--resource` names.
fn discovery(path: &str) -> Option<Value> {
    let resource = |name: &str, kind: &str, namespaced: bool| {
        json!({"name": name, "singularName": "", "namespaced": namespaced, "kind": kind,
               "verbs": ["create", "get", "list"]})
    };
    let rbac = "rbac.authorization.k8s.io";
    Some(match path {
        "/api" => {
            json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
        }
        "/apis" => json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [{
            "name": rbac,
            "versions": [{"groupVersion": format!("{rbac}/v1"), "version": "v1"}],
            "preferredVersion": {"groupVersion": format!("{rbac}/v1"), "version": "v1"}
        }]}),
        "/api/v1" => json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
            resource("pods", "Pod", true), resource("serviceaccounts", "ServiceAccount", true)
        ]}),
        "/apis/rbac.authorization.k8s.io/v1" => {
            json!({"kind": "APIResourceList", "groupVersion": format!("{rbac}/v1"),
            "resources": [
                resource("roles", "Role", true), resource("rolebindings", "RoleBinding", true),
                resource("clusterroles", "ClusterRole", false), resource("clusterrolebindings", "ClusterRoleBinding", false)
            ]})
        }
        _ => return None,
    })
}

struct Stub {
    log: Log,
    home: tempfile::TempDir,
    kubeconfig: PathBuf,
    _runtime: tokio::runtime::Runtime,
}

impl Stub {
    fn start() -> Stub {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let log: Log = Arc::default();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let address = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback({
            let log = log.clone();
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                handle(log.clone(), method, uri, headers, body)
            }
        });
        runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });

        let home = tempfile::tempdir().unwrap();
        let kubeconfig = home.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: stub\n  cluster:\n    server: http://{address}\n\
                 contexts:\n- name: stub\n  context:\n    cluster: stub\n    user: stub\n    namespace: default\n\
                 users:\n- name: stub\n  user: {{}}\ncurrent-context: stub\n"
            ),
        )
        .unwrap();
        Stub {
            log,
            home,
            kubeconfig,
            _runtime: runtime,
        }
    }

    fn kubectl(&self, args: &[&str]) -> std::process::Output {
        Command::new(KUBECTL)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.home.path())
            .env_remove("KUBERNETES_SERVICE_HOST")
            .output()
            .expect("failed to run kubectl")
    }

    /// Runs kubectl, failing the test with its stderr unless it succeeds.
    fn kubectl_ok(&self, args: &[&str]) -> std::process::Output {
        let output = self.kubectl(args);
        assert!(
            output.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// Runs kubectl (which must succeed) and returns the one POST it made.
    fn post_once(&self, args: &[&str]) -> Seen {
        self.kubectl_ok(args);
        let mut posts = self.take_posts();
        assert_eq!(
            posts.len(),
            1,
            "kubectl {args:?} should POST once: {posts:?}"
        );
        posts.remove(0)
    }

    fn take_posts(&self) -> Vec<Seen> {
        let mut log = self.log.lock().unwrap();
        let posts = log
            .iter()
            .filter(|seen| seen.method == Method::POST)
            .cloned()
            .collect();
        log.clear();
        posts
    }
}

fn kubectl_present() -> bool {
    if Path::new(KUBECTL).exists() {
        return true;
    }
    eprintln!("SKIPPED: {KUBECTL} is not installed; the protobuf decoder's kubectl capture test did not run");
    false
}

/// The generators kubectl 1.32 sends as protobuf, with the collection each one POSTs to.
const CREATES: &[(&[&str], &str)] = &[
    (&["create", "namespace", "foo"], "/api/v1/namespaces"),
    (
        &[
            "create",
            "configmap",
            "x",
            "--from-literal=a=b",
            "--from-literal=empty=",
        ],
        "/api/v1/namespaces/default/configmaps",
    ),
    (
        &["create", "secret", "generic", "s", "--from-literal=k=v"],
        "/api/v1/namespaces/default/secrets",
    ),
    (
        &[
            "create",
            "secret",
            "docker-registry",
            "reg",
            "--docker-server=r.example",
            "--docker-username=u",
            "--docker-password=p",
        ],
        "/api/v1/namespaces/default/secrets",
    ),
    (
        &[
            "create",
            "deployment",
            "web",
            "--image=busybox",
            "--replicas=2",
            "--port=80",
            "--",
            "sleep",
            "3600",
        ],
        "/apis/apps/v1/namespaces/default/deployments",
    ),
    (
        &["create", "service", "clusterip", "svc", "--tcp=80:8080"],
        "/api/v1/namespaces/default/services",
    ),
    (
        &[
            "create",
            "service",
            "nodeport",
            "np",
            "--tcp=80:8080",
            "--node-port=30080",
        ],
        "/api/v1/namespaces/default/services",
    ),
    (
        &[
            "create",
            "service",
            "externalname",
            "en",
            "--external-name=example.com",
        ],
        "/api/v1/namespaces/default/services",
    ),
    (
        &["create", "service", "loadbalancer", "lb", "--tcp=80"],
        "/api/v1/namespaces/default/services",
    ),
    (
        &[
            "create",
            "deployment",
            "multi",
            "--image=busybox",
            "--image=nginx:1.27",
        ],
        "/apis/apps/v1/namespaces/default/deployments",
    ),
    (
        &["create", "job", "j", "--image=busybox", "--", "echo", "hi"],
        "/apis/batch/v1/namespaces/default/jobs",
    ),
    (
        &[
            "create",
            "cronjob",
            "cj",
            "--image=busybox",
            "--schedule=*/5 * * * *",
        ],
        "/apis/batch/v1/namespaces/default/cronjobs",
    ),
    (
        &["create", "serviceaccount", "sa"],
        "/api/v1/namespaces/default/serviceaccounts",
    ),
    (
        &["create", "quota", "q", "--hard=cpu=1,memory=1Gi,pods=10"],
        "/api/v1/namespaces/default/resourcequotas",
    ),
    (
        &[
            "create",
            "priorityclass",
            "low",
            "--value=0",
            "--description=zero",
        ],
        "/apis/scheduling.k8s.io/v1/priorityclasses",
    ),
    (
        &[
            "create",
            "poddisruptionbudget",
            "pdb",
            "--selector=app=web",
            "--min-available=50%",
        ],
        "/apis/policy/v1/namespaces/default/poddisruptionbudgets",
    ),
    (
        &[
            "create",
            "poddisruptionbudget",
            "p2",
            "--selector=app=web",
            "--max-unavailable=1",
        ],
        "/apis/policy/v1/namespaces/default/poddisruptionbudgets",
    ),
    (
        &[
            "create",
            "ingress",
            "ing",
            "--rule=example.com/path*=svc:80,tls=cert",
            "--class=traefik",
        ],
        "/apis/networking.k8s.io/v1/namespaces/default/ingresses",
    ),
];

/// Generators that check `--resource` names through discovery first.
const RBAC: &[(&[&str], &str)] = &[
    (
        &[
            "create",
            "clusterrole",
            "reader",
            "--verb=get,list",
            "--resource=pods",
        ],
        "ClusterRole",
    ),
    (
        &["create", "role", "r", "--verb=get", "--resource=pods"],
        "Role",
    ),
    (
        &[
            "create",
            "rolebinding",
            "rb",
            "--clusterrole=reader",
            "--serviceaccount=default:sa",
        ],
        "RoleBinding",
    ),
    (
        &[
            "create",
            "clusterrolebinding",
            "crb",
            "--clusterrole=reader",
            "--user=alice",
        ],
        "ClusterRoleBinding",
    ),
];

fn dry_run_json(stub: &Stub, args: &[&str]) -> Value {
    let mut dry_args = args.to_vec();
    // Flags must come before `--` (the container command).
    let at = dry_args
        .iter()
        .position(|arg| *arg == "--")
        .unwrap_or(dry_args.len());
    dry_args.splice(at..at, ["--dry-run=client", "-o", "json"]);
    let output = stub.kubectl_ok(&dry_args);
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn kubectl_create_bodies_decode_to_what_kubectl_itself_prints() {
    if !kubectl_present() {
        return;
    }
    let stub = Stub::start();
    let mut mismatches = Vec::new();
    for (args, collection) in CREATES {
        let expected = dry_run_json(&stub, args);
        stub.take_posts();

        let post = &stub.post_once(args);
        assert_eq!(post.path, *collection, "kubectl {args:?}");
        assert_eq!(
            post.content_type,
            protobuf::CONTENT_TYPE,
            "kubectl {args:?} sent no protobuf"
        );
        let decoded = protobuf::decode(&post.body).unwrap();
        if decoded != expected {
            mismatches.push(format!(
                "kubectl {args:?}\n decoded: {decoded}\nexpected: {expected}"
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n\n"));
}

#[test]
fn decoded_deployment_has_the_requested_shape() {
    if !kubectl_present() {
        return;
    }
    let stub = Stub::start();
    let output = stub.kubectl_ok(&[
        "create",
        "deployment",
        "web",
        "--image=busybox",
        "--replicas=2",
        "--port=80",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "deployment.apps/web created"
    );
    let decoded = protobuf::decode(&stub.take_posts()[0].body).unwrap();
    assert_eq!(decoded["kind"], "Deployment");
    assert_eq!(decoded["apiVersion"], "apps/v1");
    assert_eq!(decoded["metadata"]["name"], "web");
    assert_eq!(decoded["spec"]["replicas"], 2);
    assert_eq!(
        decoded["spec"]["selector"],
        json!({"matchLabels": {"app": "web"}})
    );
    let container = &decoded["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "busybox");
    assert_eq!(container["ports"], json!([{"containerPort": 80}]));
}

#[test]
fn kubectl_create_token_posts_a_token_request() {
    if !kubectl_present() {
        return;
    }
    let stub = Stub::start();
    let output = stub.kubectl_ok(&["create", "token", "sa", "--duration=1h", "--audience=api"]);
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "stub-token");
    let posts = stub.take_posts();
    assert_eq!(
        posts[0].path,
        "/api/v1/namespaces/default/serviceaccounts/sa/token"
    );
    assert_eq!(posts[0].content_type, protobuf::CONTENT_TYPE);
    let decoded = protobuf::decode(&posts[0].body).unwrap();
    assert_eq!(decoded["kind"], "TokenRequest");
    assert_eq!(decoded["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(decoded["spec"]["audiences"], json!(["api"]));
    assert_eq!(decoded["spec"]["expirationSeconds"], 3600);
}

#[test]
fn rbac_generators_decode_like_their_dry_run() {
    if !kubectl_present() {
        return;
    }
    let stub = Stub::start();
    for (args, kind) in RBAC {
        let expected = dry_run_json(&stub, args);
        assert_eq!(expected["kind"], *kind);
        stub.take_posts();
        let post = &stub.post_once(args);
        assert_eq!(post.content_type, protobuf::CONTENT_TYPE);
        assert_eq!(
            protobuf::decode(&post.body).unwrap(),
            expected,
            "kubectl {args:?}"
        );
    }
}

#[test]
fn kubectl_auth_reviews_are_protobuf_too() {
    if !kubectl_present() {
        return;
    }
    let stub = Stub::start();
    // The stub echoes the review without `status.allowed`, so kubectl answers "no" (exit 1).
    let output = stub.kubectl(&["auth", "can-i", "list", "pods"]);
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "no");
    let posts = stub.take_posts();
    assert_eq!(
        posts[0].path,
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
    );
    assert_eq!(posts[0].content_type, protobuf::CONTENT_TYPE);
    let decoded = protobuf::decode(&posts[0].body).unwrap();
    assert_eq!(decoded["kind"], "SelfSubjectAccessReview");
    assert_eq!(
        decoded["spec"]["resourceAttributes"],
        json!({"namespace": "default", "verb": "list", "resource": "pods"})
    );

    stub.kubectl_ok(&["auth", "whoami"]);
    let posts = stub.take_posts();
    assert_eq!(
        posts[0].path,
        "/apis/authentication.k8s.io/v1/selfsubjectreviews"
    );
    let decoded = protobuf::decode(&posts[0].body).unwrap();
    assert_eq!(
        decoded,
        json!({"kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1",
               "metadata": {"creationTimestamp": null}, "status": {"userInfo": {}}})
    );
}
