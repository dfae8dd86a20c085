//! The HTTP service behind `dmq serve`: dmq's broker for any language, as a JSON API
//! under `/v1` described by the OpenAPI document it serves at `/v1/openapi.json`.
//!
//! - producers enqueue jobs (one or a batch), read a job's state and wait for its
//!   result;
//! - consumers claim jobs under dmq's own fenced leases, renew them, and settle each
//!   job: ack with its result, nack with its error (the retry policy applies, then the
//!   dead-letter queue), or release it;
//! - operators read queues, workers, schedules and dead letters, purge, requeue, and
//!   follow the event stream as Server-Sent Events.
//!
//! Every request but `/health` and the OpenAPI document carries a bearer token (a
//! static token or a JWT) whose scopes (`produce`, `consume`, `admin`) and namespaces
//! and queues decide what it may do; TLS is rustls's; request bodies, batches and
//! request rates are limited.

mod api;
mod auth;
mod error;
mod limits;
mod openapi;
mod server;
mod state;

pub use api::events::event_json;
pub use auth::{Auth, AuthSetupError, JwtKey, Scope};
pub use error::{ApiError, ErrorBody, ErrorDetail};
pub use limits::{
    DEFAULT_LEASE, DEFAULT_MAX_BATCH, DEFAULT_MAX_BODY, DEFAULT_MAX_WAITING, LEASE_RANGE, Limits,
    MAX_CLAIM, MAX_WAIT, Rate, RateLimits,
};
pub use openapi::openapi_json;
pub use server::{ServeError, Server, ServerConfig, Tls};
