//! Binding, routing and serving: plain HTTP or TLS (rustls), HTTP/1.1 and HTTP/2,
//! with a limit on how long a client may take to send its request's head.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use dmq_core::{Manager, Metrics};

use crate::api::{admin, consume, events, produce};
use crate::auth::{Auth, Scope};
use crate::error::ApiError;
use crate::limits::{Limits, MAX_WAIT, RateLimits};
use crate::state::{AppState, Caller};

/// How long `/health` waits for the broker to answer.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a request may take, beyond the longest long poll, before it is cut off
/// (the event stream excepted).
const REQUEST_GRACE: Duration = Duration::from_secs(30);

/// How often idle keys are swept from the rate limiters.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The certificate and key `dmq serve` speaks TLS with.
#[derive(Debug, Clone)]
pub struct Tls {
    /// The certificate chain, PEM.
    pub cert: PathBuf,
    /// The private key, PEM.
    pub key: PathBuf,
}

/// How the server runs.
#[derive(Debug)]
pub struct ServerConfig {
    /// The namespace it serves (a token may be limited to some namespaces).
    pub namespace: String,
    /// Who may call it.
    pub auth: Auth,
    /// Body and batch sizes.
    pub limits: Limits,
    /// Request rates per token and per client address.
    pub rates: RateLimits,
    /// TLS, or plain HTTP when `None`.
    pub tls: Option<Tls>,
    /// How long a client may take to send a request's head before the connection is
    /// closed.
    pub header_timeout: Duration,
    /// How many requests may wait on the broker at once (long-poll claims with
    /// `wait_ms`, event streams); more get 503 with `Retry-After`.
    pub max_waiting: usize,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The address could not be listened on.
    #[error("could not listen on {addr}: {source}; pick another --listen address")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The certificate or key could not be used.
    #[error("could not use the TLS certificate {cert} and key {key}: {source}")]
    Tls {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
        /// Why.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("the HTTP server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// A bound server, ready to serve.
#[derive(Debug)]
pub struct Server {
    listener: std::net::TcpListener,
    addr: SocketAddr,
    app: Router,
    tls: Option<Tls>,
    header_timeout: Duration,
    rates: Arc<RateLimits>,
}

impl Server {
    /// Listens on `addr` for `manager`'s broker and backend, as `config` says.
    ///
    /// # Errors
    ///
    /// [`ServeError::Bind`] when the address is taken or cannot be listened on.
    pub fn bind(
        addr: SocketAddr,
        manager: Manager,
        config: ServerConfig,
    ) -> Result<Server, ServeError> {
        let listener = std::net::TcpListener::bind(addr)
            .map_err(|source| ServeError::Bind { addr, source })?;
        listener.set_nonblocking(true).map_err(|source| ServeError::Bind { addr, source })?;
        let addr = listener.local_addr().unwrap_or(addr);
        let metrics = manager.metrics().cloned().unwrap_or_default();
        let consumer_id = format!(
            "http-{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let rates = Arc::new(config.rates);
        let state = AppState {
            consumer: manager.consumer(consumer_id),
            manager,
            namespace: Arc::from(config.namespace),
            auth: Arc::new(config.auth),
            limits: config.limits,
            rates: Arc::clone(&rates),
            metrics,
            waits: Arc::new(tokio::sync::Semaphore::new(config.max_waiting)),
        };
        Ok(Server {
            listener,
            addr,
            app: router(state, config.limits),
            tls: config.tls,
            header_timeout: config.header_timeout,
            rates,
        })
    }

    /// The address it listens on (the port the system picked, for port 0).
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` resolves, then lets open requests finish for up to
    /// `grace`.
    ///
    /// # Errors
    ///
    /// [`ServeError::Tls`] when the certificate or key cannot be used;
    /// [`ServeError::Io`] when serving fails.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
        grace: Duration,
    ) -> Result<(), ServeError> {
        let handle = axum_server::Handle::new();
        let stopper = handle.clone();
        tokio::spawn(async move {
            shutdown.await;
            stopper.graceful_shutdown(Some(grace));
        });
        let rates = Arc::clone(&self.rates);
        let sweeper = tokio::spawn(async move {
            let mut every = tokio::time::interval(SWEEP_EVERY);
            loop {
                every.tick().await;
                rates.sweep();
            }
        });
        let service = self.app.into_make_service_with_connect_info::<SocketAddr>();
        let served = match self.tls {
            None => {
                let mut server = axum_server::from_tcp(self.listener).handle(handle);
                timeouts(server.http_builder(), self.header_timeout);
                server.serve(service).await
            }
            Some(tls) => {
                // rustls is built here without a default crypto provider: use
                // aws-lc-rs, which redis-rs's TLS uses too (a second install is a no-op).
                let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
                let config =
                    axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert, &tls.key)
                        .await
                        .map_err(|source| ServeError::Tls {
                            cert: tls.cert.display().to_string(),
                            key: tls.key.display().to_string(),
                            source,
                        })?;
                let mut server = axum_server::from_tcp_rustls(self.listener, config).handle(handle);
                timeouts(server.http_builder(), self.header_timeout);
                server.serve(service).await
            }
        };
        sweeper.abort();
        Ok(served?)
    }
}

/// Closes connections whose request head does not arrive within `limit`.
fn timeouts(
    builder: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    limit: Duration,
) {
    builder.http1().timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(limit);
    builder.http2().timer(hyper_util::rt::TokioTimer::new());
}

fn router(state: AppState, limits: Limits) -> Router {
    let v1 = Router::new()
        .route("/jobs", post(produce::enqueue))
        .route("/jobs/batch", post(produce::enqueue_batch))
        .route("/jobs/{id}", get(produce::job).delete(produce::cancel))
        .route("/jobs/{id}/result", get(produce::result))
        .route("/queues", get(admin::queues))
        .route("/queues/{queue}", get(admin::queue).delete(admin::delete_queue))
        .route("/queues/{queue}/claim", post(consume::claim))
        .route("/queues/{queue}/purge", post(admin::purge))
        .route("/queues/{queue}/pause", post(admin::pause))
        .route("/queues/{queue}/resume", post(admin::resume))
        .route("/queues/{queue}/gates", get(admin::gates))
        .route(
            "/queues/{queue}/dead-letters",
            get(admin::dead_letters).delete(admin::purge_dead_letters),
        )
        .route("/queues/{queue}/dead-letters/requeue", post(admin::requeue_all))
        .route("/queues/{queue}/dead-letters/{id}", delete(admin::delete_dead_letter))
        .route("/queues/{queue}/dead-letters/{id}/requeue", post(admin::requeue_dead_letter))
        .route("/leases/renew", post(consume::renew))
        .route("/leases/ack", post(consume::ack))
        .route("/leases/nack", post(consume::nack))
        .route("/leases/release", post(consume::release))
        .route("/workers", get(admin::workers))
        .route("/schedules", get(admin::schedules))
        .layer(middleware::from_fn(time_limit))
        .route("/events", get(events::events))
        .route("/openapi.json", get(openapi));
    Router::new()
        .nest("/v1", v1)
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limits.max_body))
        .with_state(state)
}

/// Cuts off a request that runs past the longest long poll by [`REQUEST_GRACE`].
async fn time_limit(request: Request, next: Next) -> Response {
    match tokio::time::timeout(MAX_WAIT + REQUEST_GRACE, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::unavailable(format!(
            "the request took over {:?}; try again",
            MAX_WAIT + REQUEST_GRACE
        ))
        .into_response(),
    }
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], crate::openapi::openapi_json())
}

/// 200 `ok` when the broker answers within two seconds, else 503 saying why.
async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let plain = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    match tokio::time::timeout(PING_TIMEOUT, state.manager.broker().ping()).await {
        Ok(Ok(())) => (StatusCode::OK, plain, "ok\n".to_owned()),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "health: the broker did not answer");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                plain,
                "unhealthy\nthe broker did not answer\n".to_owned(),
            )
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            plain,
            format!("unhealthy\nthe broker did not answer within {PING_TIMEOUT:?}\n"),
        ),
    }
}

/// Prometheus's text format; needs the admin scope.
async fn metrics(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.require_everywhere(&state, Scope::Admin)?;
    let text = state.metrics.render(&state.manager, None).await;
    Ok(([(header::CONTENT_TYPE, Metrics::CONTENT_TYPE)], text).into_response())
}

async fn not_found() -> ApiError {
    ApiError::not_found(
        "no such endpoint; the API lives under /v1 and is described at /v1/openapi.json",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}
