//! Authentication and authorization end to end, with the real kubectl:
//! TLS-verified admin access, 401 without credentials, a ServiceAccount
//! bound to `view`, node certificates limited to their own Node, bootstrap
//! tokens, and the reviews behind `kubectl auth can-i` / `whoami`.
mod common;

use std::path::PathBuf;

use common::apiserver::TestServer;
use common::kubectl::Kubectl;
use rk3s::pki::Kubeconfig;
use serde_json::Value;

/// A kubectl whose kubeconfig holds only the CA and `token`.
fn token_kubectl(s: &TestServer, name: &str, token: &str) -> (Kubectl, PathBuf) {
    let path = s.data_dir().join(format!("{name}.kubeconfig"));
    Kubeconfig::new(s.url())
        .ca_data(s.pki().ca_bundle_pem())
        .token(token)
        .write(&path, 0o600)
        .unwrap();
    (Kubectl::new(&path), path)
}


fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn anonymous_client(s: &TestServer) -> reqwest::blocking::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::blocking::Client::builder()
        .use_preconfigured_tls(rk3s::pki::client_tls_config(s.pki().ca_bundle_pem(), None).unwrap())
        .build()
        .unwrap()
}

#[test]
fn admin_kubeconfig_and_anonymous_requests() {
    let s = TestServer::start();
    // The admin kubeconfig verifies the server (no insecure flag anywhere).
    let out = s.kubectl().run_ok(&["get", "namespaces", "-o", "name"]);
    assert!(out.contains("namespace/kube-system"), "{out}");
    let who = s.kubectl().run_ok(&["auth", "whoami", "-o", "json"]);
    let v: Value = serde_json::from_str(&who).unwrap();
    assert_eq!(v["status"]["userInfo"]["username"], "system:admin");

    let c = anonymous_client(&s);
    let code = |path: &str, token: Option<&str>| {
        let mut r = c.get(format!("{}{path}", s.url()));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().unwrap().status().as_u16()
    };
    for path in [
        "/api",
        "/apis",
        "/api/v1",
        "/openapi/v3",
        "/openapi/v2",
        "/api/v1/namespaces/default/pods",
        "/apis/apps/v1/deployments",
        "/api/v1/no-such-resource",
    ] {
        assert_eq!(code(path, None), 401, "{path}");
    }
    for path in ["/version", "/healthz", "/livez", "/readyz", "/readyz/etcd"] {
        assert_eq!(code(path, None), 200, "{path}");
    }
    // Bad credentials are a 401 even where anonymous would pass.
    assert_eq!(code("/version", Some("not-a-token")), 401);
    assert_eq!(
        code("/api/v1/namespaces", Some("abcdef.0123456789abcdef")),
        401
    );
}

#[test]
fn service_account_bound_to_view() {
    let s = TestServer::start();
    let admin = s.kubectl();
    admin.run_ok(&["create", "serviceaccount", "viewer"]);
    admin.run_ok(&[
        "create",
        "rolebinding",
        "viewer",
        "--clusterrole=view",
        "--serviceaccount=default:viewer",
    ]);
    admin.run_ok(&["run", "web", "--image=busybox", "--restart=Never"]);
    let token = admin
        .run_ok(&["create", "token", "viewer"])
        .trim()
        .to_string();
    assert_eq!(token.split('.').count(), 3, "{token}");

    // A token bound to a pod running as another ServiceAccount is refused.
    let bound = admin.run(&[
        "create",
        "token",
        "viewer",
        "--bound-object-kind=Pod",
        "--bound-object-name=web",
    ]);
    assert!(
        stderr(&bound).contains("different serviceaccount"),
        "{}",
        stderr(&bound)
    );

    let (sa, _) = token_kubectl(&s, "viewer", &token);
    let out = sa.run_ok(&["get", "pod", "web", "-o", "name"]);
    assert_eq!(out.trim(), "pod/web");
    let del = sa.run(&["delete", "pod", "web"]);
    assert!(!del.status.success());
    assert!(
        stderr(&del).contains("pods \"web\" is forbidden: User \"system:serviceaccount:default:viewer\" cannot delete resource \"pods\""),
        "{}",
        stderr(&del)
    );
    // Outside its namespace it sees nothing.
    assert!(!sa
        .run(&["get", "pods", "-n", "kube-system"])
        .status
        .success());

    // kubectl auth can-i agrees, for the SA itself and for the admin asking --as.
    assert_eq!(sa.run_ok(&["auth", "can-i", "get", "pods"]).trim(), "yes");
    let no = sa.run(&["auth", "can-i", "delete", "pods"]);
    assert_eq!(String::from_utf8_lossy(&no.stdout).trim(), "no");
    assert!(!no.status.success());
    let as_sa = ["--as=system:serviceaccount:default:viewer"];
    assert_eq!(
        admin
            .run_ok(&[&["auth", "can-i", "get", "pods"][..], &as_sa].concat())
            .trim(),
        "yes"
    );
    let no = admin.run(&[&["auth", "can-i", "delete", "pods"][..], &as_sa].concat());
    assert_eq!(String::from_utf8_lossy(&no.stdout).trim(), "no");
    assert_eq!(
        admin.run_ok(&["auth", "can-i", "delete", "pods"]).trim(),
        "yes"
    );
    let list = sa.run_ok(&["auth", "can-i", "--list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("pods ") && l.contains("[get list watch]")),
        "{list}"
    );
    // The SA may not impersonate anyone.
    let imp = sa.run(&["get", "pods", "--as=system:admin"]);
    assert!(
        stderr(&imp).contains("cannot impersonate resource \"users\""),
        "{}",
        stderr(&imp)
    );

    let who: Value = serde_json::from_str(&sa.run_ok(&["auth", "whoami", "-o", "json"])).unwrap();
    let ui = &who["status"]["userInfo"];
    assert_eq!(ui["username"], "system:serviceaccount:default:viewer");
    let groups: Vec<&str> = ui["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        groups,
        [
            "system:serviceaccounts",
            "system:serviceaccounts:default",
            "system:authenticated"
        ]
    );

    // TokenReview (as the admin) sees the same user; deleting the SA kills the token.
    let review = format!(
        r#"{{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{{"token":"{token}"}}}}"#
    );
    let out = admin.run_with_stdin(
        &["create", "--validate=false", "-f", "-", "-o", "json"],
        &review,
    );
    let v: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", stderr(&out)));
    assert_eq!(v["status"]["authenticated"], true);
    assert_eq!(
        v["status"]["user"]["username"],
        "system:serviceaccount:default:viewer"
    );
    admin.run_ok(&["delete", "serviceaccount", "viewer"]);
    let gone = sa.run(&["get", "pods"]);
    assert!(
        stderr(&gone).contains("Unauthorized") || stderr(&gone).contains("provide credentials"),
        "{}",
        stderr(&gone)
    );
}

#[test]
fn nodes_change_only_their_own_node() {
    let s = TestServer::start();
    let admin = s.kubectl();
    for n in ["node-a", "node-b"] {
        let node = format!(r#"{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"{n}"}}}}"#);
        let out = admin.run_with_stdin(&["create", "-f", "-"], &node);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let a = Kubectl::new(&s.node_kubeconfig("node-a"));
    a.run_ok(&["label", "node", "node-a", "rk3s.test/own=yes"]);
    let other = a.run(&["label", "node", "node-b", "rk3s.test/own=no"]);
    assert!(!other.status.success());
    assert!(
        stderr(&other).contains("nodes \"node-b\" is forbidden: User \"system:node:node-a\" cannot patch resource \"nodes\""),
        "{}",
        stderr(&other)
    );
    // It cannot register a Node under another name.
    let out = a.run_with_stdin(
        &["create", "-f", "-"],
        r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"node-c"}}"#,
    );
    assert!(
        stderr(&out).contains("node \"node-a\" is not allowed to modify node \"node-c\""),
        "{}",
        stderr(&out)
    );
    // Its own Lease, not another node's.
    let lease = |n: &str| {
        format!(
            r#"{{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{{"name":"{n}","namespace":"kube-node-lease"}},"spec":{{"holderIdentity":"{n}"}}}}"#
        )
    };
    let out = a.run_with_stdin(&["create", "-f", "-"], &lease("node-b"));
    assert!(stderr(&out).contains("forbidden"), "{}", stderr(&out));
    admin.run_with_stdin(&["create", "-f", "-"], &lease("node-b"));
    let out = a.run_with_stdin(&["create", "-f", "-"], &lease("node-a"));
    assert!(out.status.success(), "{}", stderr(&out));
    a.run_ok(&[
        "annotate",
        "-n",
        "kube-node-lease",
        "lease",
        "node-a",
        "x=y",
    ]);
    assert!(!a
        .run(&[
            "annotate",
            "-n",
            "kube-node-lease",
            "lease",
            "node-b",
            "x=y"
        ])
        .status
        .success());
    // Secrets only when a pod bound to the node uses them.
    admin.run_ok(&["create", "secret", "generic", "app", "--from-literal=k=v"]);
    assert!(!a.run(&["get", "secret", "app"]).status.success());
    let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"nodeName":"node-a",
        "containers":[{"name":"c","image":"busybox"}],"volumes":[{"name":"s","secret":{"secretName":"app"}}]}}"#;
    let out = admin.run_with_stdin(&["create", "-f", "-"], pod);
    assert!(out.status.success(), "{}", stderr(&out));
    a.run_ok(&["get", "secret", "app"]);
    let b = Kubectl::new(&s.node_kubeconfig("node-b"));
    assert!(!b.run(&["get", "secret", "app"]).status.success());
    assert!(!b
        .run(&["delete", "pod", "p", "--wait=false"])
        .status
        .success());
}

#[test]
fn bootstrap_token_authenticates() {
    let s = TestServer::start();
    let token = rk3s::pki::BootstrapToken::generate(Some(std::time::Duration::from_secs(600)));
    let out = s
        .kubectl()
        .run_with_stdin(&["create", "-f", "-"], &token.to_secret_json().to_string());
    assert!(out.status.success(), "{}", stderr(&out));
    let (k, _) = token_kubectl(&s, "bootstrap", &token.token());
    let who: Value = serde_json::from_str(&k.run_ok(&["auth", "whoami", "-o", "json"])).unwrap();
    assert_eq!(
        who["status"]["userInfo"]["username"],
        format!("system:bootstrap:{}", token.id)
    );
    // Authenticated but not authorized to read pods.
    let pods = k.run(&["get", "pods"]);
    assert!(stderr(&pods).contains("forbidden"), "{}", stderr(&pods));
    // A wrong secret for the same id is a 401.
    let (bad, _) = token_kubectl(&s, "bad", &format!("{}.0000000000000000", token.id));
    let out = bad.run(&["get", "pods"]);
    assert!(
        stderr(&out).contains("Unauthorized") || stderr(&out).contains("provide credentials"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn namespace_admin_cannot_escalate() {
    let s = TestServer::start();
    let admin = s.kubectl();
    admin.run_ok(&[
        "create",
        "rolebinding",
        "bob-admin",
        "--clusterrole=admin",
        "--user=bob",
    ]);
    // bob (impersonated by the admin) may hand out what he holds...
    admin.run_ok(&[
        "create",
        "rolebinding",
        "carol-view",
        "--clusterrole=view",
        "--user=carol",
        "--as=bob",
    ]);
    assert_eq!(
        admin
            .run_ok(&["auth", "can-i", "list", "pods", "--as=carol"])
            .trim(),
        "yes"
    );
    // ...but not more, nor outside his namespace.
    let out = admin.run(&[
        "create",
        "rolebinding",
        "carol-all",
        "--clusterrole=cluster-admin",
        "--user=carol",
        "--as=bob",
    ]);
    assert!(
        stderr(&out).contains("is attempting to grant RBAC permissions not currently held"),
        "{}",
        stderr(&out)
    );
    let out = admin.run(&[
        "create",
        "role",
        "nodes",
        "--verb=get",
        "--resource=nodes",
        "--as=bob",
    ]);
    assert!(
        stderr(&out).contains("not currently held"),
        "{}",
        stderr(&out)
    );
    let out = admin.run(&[
        "create",
        "rolebinding",
        "x",
        "--clusterrole=view",
        "--user=carol",
        "-n",
        "kube-system",
        "--as=bob",
    ]);
    assert!(!out.status.success());
    // A group the admin impersonates comes along.
    let who = admin.run_ok(&[
        "auth",
        "whoami",
        "--as=dave",
        "--as-group=devs",
        "-o",
        "jsonpath={.status.userInfo.groups}",
    ]);
    assert_eq!(who.trim(), r#"["devs","system:authenticated"]"#);
}
