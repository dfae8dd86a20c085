//! The HTTP endpoint a worker serves with `--metrics-addr`: `GET /metrics` in
//! Prometheus's text format, `GET /health` 200 or 503.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::anyhow;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use dmq_core::{Manager, Metrics, WorkerMonitor};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long `/health` waits for the broker to answer a PING.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a stopping server waits for open requests before it drops them.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// What the handlers read.
#[derive(Clone)]
struct Served {
    manager: Manager,
    metrics: Metrics,
    worker: WorkerMonitor,
}

/// A listening socket for the endpoint, bound before the worker starts so that a
/// taken address stops the start-up.
pub(crate) struct Bound {
    listener: TcpListener,
    addr: SocketAddr,
}

/// The running endpoint.
pub(crate) struct MetricsServer {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// Listens on `addr`.
///
/// # Errors
///
/// When the address is taken or cannot be listened on, saying which.
pub(crate) async fn bind(addr: SocketAddr) -> anyhow::Result<Bound> {
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            anyhow!("could not listen on {addr}: address in use; pick another --metrics-addr")
        } else {
            anyhow!("could not listen on {addr}: {e}; pick another --metrics-addr")
        }
    })?;
    // With port 0 the system picks the port: report the one it picked.
    let addr = listener.local_addr().unwrap_or(addr);
    Ok(Bound { listener, addr })
}

impl Bound {
    /// The address it listens on.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `/metrics` and `/health` for `worker` until [`MetricsServer::stop`].
    pub(crate) fn serve(
        self,
        manager: Manager,
        metrics: Metrics,
        worker: WorkerMonitor,
    ) -> MetricsServer {
        let app = Router::new()
            .route("/metrics", get(render_metrics))
            .route("/health", get(health))
            .fallback(not_found)
            .with_state(Served { manager, metrics, worker });
        let (stop, stopped) = oneshot::channel::<()>();
        let addr = self.addr;
        let task = tokio::spawn(async move {
            let served = axum::serve(self.listener, app).with_graceful_shutdown(async move {
                let _ = stopped.await;
            });
            if let Err(e) = served.await {
                tracing::error!(%addr, error = %e, "the metrics endpoint failed");
            }
        });
        MetricsServer { stop, task }
    }
}

impl MetricsServer {
    /// Stops serving: lets open requests finish, for a few seconds at most.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        let mut task = self.task;
        if tokio::time::timeout(STOP_TIMEOUT, &mut task).await.is_err() {
            task.abort();
        }
    }
}

async fn render_metrics(State(served): State<Served>) -> impl IntoResponse {
    let text = served.metrics.render(&served.manager, Some(&served.worker)).await;
    ([(header::CONTENT_TYPE, Metrics::CONTENT_TYPE)], text)
}

async fn health(State(served): State<Served>) -> impl IntoResponse {
    let health = served.worker.health(PING_TIMEOUT).await;
    let status = if health.is_ok() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = format!("{}\n{health}", if health.is_ok() { "ok" } else { "unhealthy" });
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body)
}

async fn not_found() -> impl IntoResponse {
    (StatusCode::NOT_FOUND, "not found: this endpoint serves /metrics and /health\n")
}
