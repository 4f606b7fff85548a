//! The CSR signing controller, kube-controller-manager's `csrsigning`: an
//! approved CertificateSigningRequest for one of the kubernetes.io signers
//! rk3s serves (`kube-apiserver-client`, `kube-apiserver-client-kubelet`,
//! `kubelet-serving`) gets its certificate in `status.certificate`; one
//! the signer refuses gets a `Failed` condition (`SignerValidationFailure`),
//! as kube does. Denied, failed, already issued and other signers' requests
//! are left alone (`kubernetes.io/legacy-unknown` never gets here: the API
//! refuses it through v1).
//!
//! Level-triggered: each pass looks at every request in a watch-fed store;
//! the signing itself goes through the [`CsrSigner`] seam (the cluster's
//! PKI in production).
//!
//! Partial: no `csrapproving` auto-approval of kubelet client requests
//! (rk3s's agents get their certificates through the join protocol), and
//! no `csrcleaner` garbage collection of old requests.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use futures::StreamExt;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use serde_json::json;

use crate::controllers::Context;
use crate::pki::server::csr_signing::CsrSignError;

/// Signs a request for a signer (the seam over the PKI).
pub trait CsrSigner: Send + Sync {
    fn sign(
        &self,
        signer: &str,
        request: &[u8],
        usages: &[String],
        expiration_seconds: Option<i64>,
    ) -> Result<String, CsrSignError>;
}

impl CsrSigner for crate::pki::Pki {
    fn sign(
        &self,
        signer: &str,
        request: &[u8],
        usages: &[String],
        expiration_seconds: Option<i64>,
    ) -> Result<String, CsrSignError> {
        self.sign_kubernetes_csr(signer, request, usages, expiration_seconds)
    }
}

/// What a pass does with one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Nothing,
    /// The issued certificate, PEM.
    Issue(String),
    /// The `Failed` condition's message.
    Fail(String),
}

fn has_condition(csr: &CertificateSigningRequest, kind: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == kind && c.status == "True"))
}

/// The decision for one request.
pub fn decide(csr: &CertificateSigningRequest, signer: &dyn CsrSigner) -> Action {
    let issued = csr
        .status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .is_some_and(|c| !c.0.is_empty());
    if issued
        || !has_condition(csr, "Approved")
        || has_condition(csr, "Denied")
        || has_condition(csr, "Failed")
    {
        return Action::Nothing;
    }
    let spec = &csr.spec;
    match signer.sign(
        &spec.signer_name,
        &spec.request.0,
        spec.usages.as_deref().unwrap_or_default(),
        spec.expiration_seconds.map(i64::from),
    ) {
        Ok(pem) => Action::Issue(pem),
        Err(CsrSignError::NotOurs(_)) => Action::Nothing,
        Err(CsrSignError::Refused(m)) => Action::Fail(m),
        Err(e @ CsrSignError::Sign(_)) => {
            tracing::warn!(csr = ?csr.metadata.name, "{e}");
            Action::Nothing
        }
    }
}

async fn act(api: &Api<CertificateSigningRequest>, csr: &CertificateSigningRequest, action: Action) {
    let name = csr.metadata.name.clone().unwrap_or_default();
    let patch = match action {
        Action::Nothing => return,
        Action::Issue(pem) => json!({"status": {"certificate":
            base64::engine::general_purpose::STANDARD.encode(pem.as_bytes())}}),
        Action::Fail(message) => {
            let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let mut conditions: Vec<serde_json::Value> = csr
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|c| serde_json::to_value(c).ok())
                .collect();
            conditions.push(json!({
                "type": "Failed",
                "status": "True",
                "reason": "SignerValidationFailure",
                "message": message,
                "lastUpdateTime": now,
                "lastTransitionTime": now,
            }));
            json!({"status": {"conditions": conditions}})
        }
    };
    if let Err(e) = api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        tracing::warn!(csr = %name, "failed to update the request's status: {e}");
    }
}

/// Runs until `ctx.shutdown`.
pub async fn run(ctx: Context, signer: Arc<dyn CsrSigner>) {
    let api = Api::<CertificateSigningRequest>::all(ctx.client.clone());
    let (reader, writer) = reflector::store::<CertificateSigningRequest>();
    let mut events = reflector::reflector(writer, watcher::watcher(api.clone(), watcher::Config::default()))
        .default_backoff()
        .boxed();
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            e = events.next() => if e.is_none() { return },
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
        // Take the rest of a burst before the pass.
        while let Some(Some(_)) = futures::FutureExt::now_or_never(events.next()) {}
        if futures::FutureExt::now_or_never(reader.wait_until_ready()).is_none() {
            continue;
        }
        for csr in reader.state() {
            let action = decide(&csr, signer.as_ref());
            act(&api, &csr, action).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::certificates::v1::{
        CertificateSigningRequestCondition, CertificateSigningRequestSpec,
        CertificateSigningRequestStatus,
    };
    use k8s_openapi::ByteString;

    struct Fake;

    impl CsrSigner for Fake {
        fn sign(&self, signer: &str, request: &[u8], _: &[String], _: Option<i64>) -> Result<String, CsrSignError> {
            match (signer, request) {
                ("example.com/x", _) => Err(CsrSignError::NotOurs(signer.into())),
                (_, b"bad") => Err(CsrSignError::Refused("organization is not [\"system:nodes\"]".into())),
                _ => Ok("PEM".into()),
            }
        }
    }

    fn csr(signer: &str, request: &[u8], conditions: &[&str], cert: bool) -> CertificateSigningRequest {
        CertificateSigningRequest {
            spec: CertificateSigningRequestSpec {
                signer_name: signer.into(),
                request: ByteString(request.to_vec()),
                ..Default::default()
            },
            status: Some(CertificateSigningRequestStatus {
                certificate: cert.then(|| ByteString(b"C".to_vec())),
                conditions: Some(
                    conditions
                        .iter()
                        .map(|t| CertificateSigningRequestCondition {
                            type_: t.to_string(),
                            status: "True".into(),
                            ..Default::default()
                        })
                        .collect(),
                ),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn only_approved_unissued_requests_of_our_signers_are_signed() {
        let s = "kubernetes.io/kube-apiserver-client";
        assert_eq!(decide(&csr(s, b"r", &["Approved"], false), &Fake), Action::Issue("PEM".into()));
        assert_eq!(decide(&csr(s, b"r", &[], false), &Fake), Action::Nothing);
        assert_eq!(decide(&csr(s, b"r", &["Denied"], false), &Fake), Action::Nothing);
        assert_eq!(decide(&csr(s, b"r", &["Approved"], true), &Fake), Action::Nothing);
        assert_eq!(decide(&csr(s, b"r", &["Approved", "Failed"], false), &Fake), Action::Nothing);
        assert_eq!(decide(&csr("example.com/x", b"r", &["Approved"], false), &Fake), Action::Nothing);
        assert_eq!(
            decide(&csr(s, b"bad", &["Approved"], false), &Fake),
            Action::Fail("organization is not [\"system:nodes\"]".into())
        );
    }
}
