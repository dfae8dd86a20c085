//! Redis broker and result backend for dmq.
//!
//! [`RedisBroker`] keeps jobs in Redis lists and sorted sets and changes them only
//! through Lua scripts (in `lua/`) that check each lease's token. [`RedisBackend`]
//! keeps results with a TTL and wakes waiters through one subscription per process.

mod backend;
mod batch;
mod broker;
mod conn;
mod error;
mod keys;
mod namespace;
mod redis_url;
mod scripts;

pub use backend::RedisBackend;
pub use broker::{DEFAULT_DEAD_LETTER_CAP, DEFAULT_MAX_DELIVERIES, RedisBroker};
pub use conn::RedisConnection;
pub use error::RedisFailure;
pub use keys::{DEFAULT_NAMESPACE, Keys, QueueKeys, cluster_slot, partition_slots, partition_tag};
pub use namespace::{delete_namespace, delete_namespace_at, queue_names};
pub use redis_url::{RedisUrl, redact};
