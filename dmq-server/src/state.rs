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
}

/// The caller: who they are, once their credentials and request rates passed.
pub(crate) struct Caller(pub(crate) Grant);

impl Caller {
    /// Refuses with 403 unless the caller has `scope` in the namespace served.
    pub(crate) fn require(&self, state: &AppState, scope: Scope) -> Result<&Grant, ApiError> {
        self.0.require(scope, &state.namespace)?;
        Ok(&self.0)
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
