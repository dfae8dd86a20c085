//! PostgreSQL broker, result backend and transactional enqueue for dmq.
//!
//! [`PostgresBroker`] keeps jobs in tables of one schema per namespace and changes them
//! through SQL functions (in `migrations/`) that check each lease's token; idle
//! claimers wait for `NOTIFY`. [`PostgresBackend`] keeps results with a TTL and wakes
//! waiters through one listening connection per backend. [`EnqueueIn`] writes a job
//! in the caller's own transaction, straight into the broker's table or, for a Redis
//! broker, into an outbox that an [`OutboxRelay`] moves to Redis exactly once.

mod backend;
mod batch;
mod broker;
mod enqueue_in;
mod error;
mod listen;
mod relay;
mod schema;

pub use backend::PostgresBackend;
pub use broker::{DEFAULT_DEAD_LETTER_CAP, DEFAULT_VACUUM_AFTER, PostgresBroker};
pub use enqueue_in::EnqueueIn;
pub use error::PostgresFailure;
pub use relay::{
    DEFAULT_RELAY_BATCH, DEFAULT_RELAY_KEY_TTL, DEFAULT_RELAY_POLL, OutboxRelay, RelayStats,
};
pub use schema::{DEFAULT_SCHEMA, Mode, migrate_namespace, redact};
