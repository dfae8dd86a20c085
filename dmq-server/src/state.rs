//! What every handler reads: the manager, the namespace served, authentication, the
//! limits, and the caller's grant as an extractor.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use dmq_core::{Consumer, Manager, Metrics};

use crate::auth::{Auth, Grant, Scope};
use crate::error::ApiError;
use crate::limits::{Limits, RateLimits};

/// The server's shared state.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) manager: Manager,
    pub(crate) consumer: Consumer,
    pub(crate) namespace: Arc<str>,
    pub(crate) auth: Arc<Auth>,
    pub(crate) limits: Limits,
    pub(crate) rates: Arc<RateLimits>,
    pub(crate) metrics: Metrics,
    /// Permits for requests that wait on the broker (long-poll claims, event streams),
    /// each of which holds a broker connection while it waits.
    pub(crate) waits: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    /// A permit to wait on the broker; 503 with `Retry-After` when `--max-waiting`
    /// requests wait already.
    pub(crate) fn wait_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        Arc::clone(&self.waits).try_acquire_owned().map_err(|_| {
            ApiError::busy(
                "too many requests wait on the broker now (--max-waiting); try again shortly",
                std::time::Duration::from_secs(1),
            )
        })
    }
}

/// The caller: who they are, once their credentials and request rates passed.
pub(crate) struct Caller(pub(crate) Grant);

impl Caller {
    /// Refuses with 403 unless the caller has `scope` in the namespace served.
    pub(crate) fn require(&self, state: &AppState, scope: Scope) -> Result<&Grant, ApiError> {
        self.0.require(scope, &state.namespace)?;
        Ok(&self.0)
    }

    /// As [`require`](Caller::require), for what spans every queue (events, metrics,
    /// workers, schedules): a token limited to some queues may not read it.
    pub(crate) fn require_everywhere(
        &self,
        state: &AppState,
        scope: Scope,
    ) -> Result<(), ApiError> {
        self.0.require(scope, &state.namespace)?;
        if !self.0.all_queues() {
            return Err(ApiError::forbidden(format!(
                "the token of {:?} is limited to some queues, and this endpoint spans every                  queue; use a token without a queue list",
                self.0.name
            )));
        }
        Ok(())
    }

    /// As [`require`](Caller::require), on `queue` too; then refuses with 400 a queue
    /// name no job can have (a partition's, `emails#3`, is its queue's name).
    pub(crate) fn require_on(
        &self,
        state: &AppState,
        scope: Scope,
        queue: &str,
    ) -> Result<&Grant, ApiError> {
        self.0.require(scope, &state.namespace)?;
        self.0.require_queue(queue)?;
        dmq_core::check_queue_name(dmq_core::split_partition(queue).0)?;
        Ok(&self.0)
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let ip = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        if let Some(ip) = ip {
            state.rates.check_ip(ip)?;
        }
        let grant = state.auth.grant(&parts.headers)?;
        state.rates.check_token(&grant.name)?;
        Ok(Caller(grant))
    }
}
