//! Assembles the API server's pluggable parts (authentication,
//! authorization, admission plug-ins, extra routes) from the store, the
//! registry and the PKI. `server::run` and the in-process test server both
//! call [`serve_options`], so tests exercise exactly what `rk3s server`
//! serves.
//!
//! Each feature adds its plug-in here, in one place, in order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;

use crate::apiserver::admission::AdmissionChain;
use crate::apiserver::auth::{Authenticator, Authorizer};
use crate::apiserver::registry::Registry;
use crate::apiserver::ServeOptions;
use crate::pki::Pki;
use crate::store::Store;

pub use crate::config::ClusterSettings;

/// Everything the plug-ins are built from.
#[derive(Clone)]
pub struct Parts {
    pub store: Arc<dyn Store>,
    pub registry: Arc<Registry>,
    pub pki: Arc<Pki>,
    pub settings: ClusterSettings,
    /// `<data-dir>/server`.
    pub server_dir: std::path::PathBuf,
    /// The agents' tunnels (`/v1-rk3s/connect`), through which the API
    /// server reaches kubelets.
    pub tunnels: Arc<crate::tunnel::TunnelRegistry>,
}

/// Who is asking: x509 client certificates, bootstrap tokens and
/// ServiceAccount tokens (`crate::auth::authn`).
pub fn authenticator(parts: &Parts) -> Result<Arc<dyn Authenticator>, crate::auth::AuthError> {
    let keys = crate::pki::jwt::TokenKeys::new(
        parts.pki.service_account_key_pem(),
        parts.pki.service_account_public_key_pem(),
        &parts.settings.cluster_domain,
    )?;
    Ok(Arc::new(crate::auth::authn::ClusterAuthenticator::new(
        parts.store.clone(),
        Arc::new(keys),
    )))
}

/// What they may do: `system:masters`, the Node authorizer, RBAC.
pub fn authorizer(parts: &Parts) -> Arc<dyn Authorizer> {
    Arc::new(crate::auth::authz::ClusterAuthorizer::new(parts.store.clone()))
}

/// Objects every cluster starts with: the default RBAC roles and bindings.
pub fn bootstrap(parts: &Parts) -> Result<(), crate::auth::AuthError> {
    crate::auth::bootstrap::ensure_default_rbac(parts.store.as_ref(), &parts.registry)
}

/// The admission chain: mutating plug-ins first, validating ones last.
pub fn admission_chain(parts: &Parts) -> AdmissionChain {
    let authz = Arc::new(crate::auth::authz::ClusterAuthorizer::new(parts.store.clone()));
    vec![
        // Unknown fields are dropped (or refused) before anything else looks.
        Arc::new(crate::apiserver::validation::UnknownFields),
        // ClusterIPs and node ports (nothing kept on dry runs).
        Arc::new(crate::apiserver::ipalloc::services::ServiceAllocator::new(
            parts.store.clone(),
            parts.settings.service_cidr,
            parts.settings.service_node_port_range,
        )),
        Arc::new(crate::apiserver::defaults::Defaults),
        Arc::new(crate::apiserver::ipalloc::tolerations::DefaultTolerationSeconds { seconds: 300 }),
        // Custom resources: schema pruning, defaults, validation; CRD checks.
        Arc::new(crate::apiserver::crd::admission::CrdAdmission::new(parts.registry.clone())),
        // Validating plug-ins see the final object.
        Arc::new(crate::apiserver::validation::Validation),
        Arc::new(crate::auth::node_restriction::NodeRestriction),
        Arc::new(crate::auth::escalation::RbacEscalation::new(authz)),
        // Last: managedFields record the object as defaulted (kube's order).
        Arc::new(crate::apiserver::fieldmanager::ManagedFields),
    ]
}

/// Routes outside the Kubernetes API (`/cacerts`, join, tunnel).
pub fn extra_routes(parts: &Parts) -> Router {
    Router::new().merge(super::join::routes(parts))
}

/// The serve options for `bind`, with the PKI's TLS and every plug-in.
pub fn serve_options(
    bind: SocketAddr,
    grace: Duration,
    parts: &Parts,
) -> Result<ServeOptions, crate::pki::PkiError> {
    if let Err(e) = crate::apiserver::ipalloc::bootstrap_kubernetes_service(
        parts.store.as_ref(),
        &parts.registry,
        &parts.settings,
    ) {
        tracing::warn!("{e}");
    }
    if let Err(e) = crate::apiserver::ipalloc::kube_dns::bootstrap_kube_dns_service(
        parts.store.as_ref(),
        &parts.settings,
        parts.settings.node_local_dns,
    ) {
        tracing::warn!("{e}");
    }
    let mut opts = ServeOptions::new(bind);
    opts.grace = grace;
    opts.tls = Some(Arc::new(parts.pki.server_tls_config()?));
    if let Err(e) = bootstrap(parts) {
        // Like the default namespaces: logged, retried at the next start;
        // meanwhile only system:masters and nodes are authorized.
        tracing::error!("{e}");
    }
    opts.authenticator = authenticator(parts)
        .map_err(|e| crate::pki::PkiError::parse("the service-account key", e))?;
    opts.authorizer = authorizer(parts);
    opts.admission = admission_chain(parts);
    opts.extra_routes = extra_routes(parts).merge(parts.tunnels.routes());
    opts.node_dialer = Some(parts.tunnels.clone());
    super::metrics::wire(&mut opts, parts);
    Ok(opts)
}
