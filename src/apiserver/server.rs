//! Serving: HTTPS (rustls; HTTP/1.1 and HTTP/2 via ALPN) with an axum router,
//! health endpoints, and a shutdown that stops accepting and drains
//! connections within a grace period.
//!
//! The verified client certificate chain of each TLS connection is put into
//! every request's extensions as `auth::PeerCertificates` for the
//! authenticator. `/healthz`, `/livez`, `/readyz` serve `ping` and `etcd`
//! (the store) checks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::registry::Registry;
use super::context::AppState;
use crate::store::Store;

/// How to serve: the address, TLS, and the pluggable parts that
/// `crate::server::assemble` fills in.
#[derive(Clone)]
pub struct ServeOptions {
    pub bind: SocketAddr,
    /// TLS configuration from the PKI; `None` makes a self-signed certificate.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// How long open connections get to finish after shutdown.
    pub grace: Duration,
    pub authenticator: Arc<dyn super::auth::Authenticator>,
    pub authorizer: Arc<dyn super::auth::Authorizer>,
    /// Plug-ins run on every create and update, in order.
    pub admission: super::admission::AdmissionChain,
    /// Extra routes merged before the REST fallback (`/cacerts`, the join
    /// endpoints, the tunnel); they do their own authentication.
    pub extra_routes: Router,
    /// Reaches kubelets (the node tunnels); `None` answers 503.
    pub node_dialer: Option<Arc<dyn super::streaming::NodeDialer>>,
    /// Node figures for `metrics.k8s.io` (its registry entries are added
    /// with it, by `server::assemble`); `None` answers 503.
    pub metrics: Option<Arc<dyn crate::metrics::scrape::SummarySource>>,
    /// The Prometheus registry `/metrics` serves; the store and every
    /// request are counted into it.
    pub telemetry: Arc<crate::metrics::prom::Registry>,
    /// The in-process components `componentstatuses` reports; `server::run`
    /// registers the scheduler and controllers it starts.
    pub components: Arc<super::componentstatus::Components>,
}

impl ServeOptions {
    /// Self-signed TLS, allow-all auth, no admission plug-ins, no extra routes.
    pub fn new(bind: SocketAddr) -> Self {
        ServeOptions {
            bind,
            tls: None,
            grace: Duration::from_secs(10),
            authenticator: Arc::new(super::auth::AllowAll),
            authorizer: Arc::new(super::auth::AllowAll),
            admission: Vec::new(),
            extra_routes: Router::new(),
            node_dialer: None,
            metrics: None,
            telemetry: Arc::new(crate::metrics::prom::Registry::new()),
            components: Default::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("failed to bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("failed to make a TLS certificate: {0}")]
    Tls(String),
}

/// A bound, not yet running server; `local_addr` gives the port for port 0.
pub struct ApiServer {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    router: Router,
    grace: Duration,
    shutdown: CancellationToken,
}

/// A self-signed certificate for 127.0.0.1/localhost until the PKI lands.
pub fn self_signed() -> Result<Arc<rustls::ServerConfig>, ApiError> {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .map_err(|e| ApiError::Tls(e.to_string()))?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ApiError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .map_err(|e| ApiError::Tls(e.to_string()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

async fn health(
    State(state): State<Arc<AppState>>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    uri: http::Uri,
) -> (http::StatusCode, String) {
    let path = uri.path().trim_start_matches('/');
    let (endpoint, only) = path
        .split_once('/')
        .map_or((path, None), |(e, c)| (e, Some(c)));
    let store_ok = state
        .store
        .list(&crate::store::ListOptions {
            prefix: "/registry/namespaces/".into(),
            limit: Some(1),
            ..Default::default()
        })
        .is_ok();
    let mut checks = vec![("ping", true), ("log", true), ("etcd", store_ok)];
    if endpoint == "readyz" {
        checks.push(("shutdown", !state.shutdown.is_cancelled()));
    }
    if let Some(c) = only {
        return match checks.iter().find(|(n, _)| *n == c) {
            Some((_, true)) => (http::StatusCode::OK, "ok".into()),
            Some((n, false)) => (
                http::StatusCode::INTERNAL_SERVER_ERROR,
                format!("internal server error: {n} check failed\n"),
            ),
            None => (http::StatusCode::NOT_FOUND, "404 page not found\n".into()),
        };
    }
    let all_ok = checks.iter().all(|(_, ok)| *ok);
    if !q.contains_key("verbose") && all_ok {
        return (http::StatusCode::OK, "ok".into());
    }
    let mut out = String::new();
    for (n, ok) in &checks {
        out.push_str(&if *ok {
            format!("[+]{n} ok\n")
        } else {
            format!("[-]{n} failed: reason withheld\n")
        });
    }
    let code = if all_ok {
        http::StatusCode::OK
    } else {
        http::StatusCode::INTERNAL_SERVER_ERROR
    };
    out.push_str(&format!(
        "{endpoint} check {}\n",
        if all_ok { "passed" } else { "failed" }
    ));
    (code, out)
}

/// Authenticates and authorizes a non-resource request (discovery,
/// `/version`, OpenAPI) with RBAC's `nonResourceURLs`: anonymous requests
/// are authorized as `system:anonymous` (so `/version` stays open through
/// `system:public-info-viewer`) and get 401 when that is denied.
async fn authorize_non_resource(
    State(state): State<Arc<AppState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let peer = req
        .extensions()
        .get::<super::auth::PeerCertificates>()
        .cloned();
    let user = match super::auth::identify(
        state.authenticator.as_ref(),
        state.authorizer.as_ref(),
        req.headers(),
        peer.as_ref().map(|p| p.0.as_slice()),
    ) {
        Ok(u) => u,
        Err(status) => return status.into_response(),
    };
    let anonymous = user.is_none();
    let user = user.unwrap_or_else(super::auth::anonymous_user);
    let verb = match *req.method() {
        http::Method::GET | http::Method::HEAD => "get",
        http::Method::POST => "post",
        http::Method::PUT => "put",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "options",
    };
    let attrs = super::auth::Attributes::non_resource(verb, req.uri().path());
    if !state.authorizer.authorize(&user, &attrs) {
        if anonymous {
            return super::status::ApiStatus::unauthorized().into_response();
        }
        return super::status::ApiStatus::forbidden_message(format!(
            "forbidden: User \"{}\" cannot {verb} path \"{}\"",
            user.name,
            req.uri().path()
        ))
        .into_response();
    }
    next.run(req).await
}

impl ApiServer {
    pub async fn bind(
        opts: ServeOptions,
        store: Arc<dyn Store>,
        registry: Arc<Registry>,
        shutdown: CancellationToken,
    ) -> Result<Self, ApiError> {
        super::namespaces::bootstrap_namespaces(store.as_ref());
        super::crd::start(store.clone(), registry.clone(), shutdown.clone());
        let listener = TcpListener::bind(opts.bind)
            .await
            .map_err(|source| ApiError::Bind {
                addr: opts.bind,
                source,
            })?;
        let tls = match opts.tls {
            Some(t) => t,
            None => self_signed()?,
        };
        let store: Arc<dyn Store> = Arc::new(super::telemetry::CountingStore::new(store, opts.telemetry.clone()));
        let state = Arc::new(AppState {
            store,
            registry: registry.clone(),
            shutdown: shutdown.clone(),
            authenticator: opts.authenticator,
            authorizer: opts.authorizer,
            inflight: Arc::new(tokio::sync::Semaphore::new(super::context::MAX_IN_FLIGHT)),
            admission: opts.admission,
            node_dialer: opts.node_dialer,
            metrics: opts.metrics,
            telemetry: opts.telemetry,
            components: opts.components,
        });
        let health_routes = Router::new()
            .route("/healthz", get(health))
            .route("/livez", get(health))
            .route("/readyz", get(health))
            .route("/healthz/{c}", get(health))
            .route("/livez/{c}", get(health))
            .route("/readyz/{c}", get(health))
            .with_state(state.clone());
        let non_resource = super::discovery::router(registry.clone())
            .merge(super::openapi::router(registry))
            .merge(Router::new().route("/metrics", get(super::telemetry::serve)).with_state(state.clone()))
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                authorize_non_resource,
            ));
        let router = non_resource
            .merge(health_routes)
            .merge(opts.extra_routes)
            .fallback({
                let state = state.clone();
                move |req: axum::extract::Request| super::rest::dispatch(State(state), req)
            })
            .layer(axum::middleware::from_fn_with_state(state, super::telemetry::record));
        Ok(ApiServer {
            listener,
            acceptor: TlsAcceptor::from(tls),
            router,
            grace: opts.grace,
            shutdown,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts until shutdown, then drains within the grace period.
    pub async fn run(self) {
        let tracker = TaskTracker::new();
        loop {
            let (tcp, _) = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                r = self.listener.accept() => match r { Ok(c) => c, Err(e) => { tracing::warn!("failed to accept: {e}"); continue; } },
            };
            let acceptor = self.acceptor.clone();
            let router = self.router.clone();
            let shutdown = self.shutdown.clone();
            tracker.spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let peer = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .map(|c| super::auth::PeerCertificates(Arc::new(c.to_vec())));
                let service = tower::ServiceBuilder::new()
                    .map_request(move |mut req: http::Request<hyper::body::Incoming>| {
                        if let Some(p) = &peer {
                            req.extensions_mut().insert(p.clone());
                        }
                        req
                    })
                    .service(router);
                let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                // kube-apiserver's streams per HTTP/2 connection: one client's
                // watches (the garbage collector has one per kind) share it.
                builder.http2().max_concurrent_streams(1000);
                let conn = builder.serve_connection_with_upgrades(
                    TokioIo::new(tls),
                    TowerToHyperService::new(service),
                );
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = shutdown.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
            });
        }
        tracker.close();
        let _ = tokio::time::timeout(self.grace, tracker.wait()).await;
    }
}

/// Binds and serves until `shutdown` is cancelled.
pub async fn serve(
    opts: ServeOptions,
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) -> Result<(), ApiError> {
    ApiServer::bind(opts, store, registry, shutdown)
        .await?
        .run()
        .await;
    Ok(())
}
