//! Where the broker's connections come from: its own client, or a deadpool-redis pool
//! the application already has.
//!
//! Ordinary commands share one multiplexed connection (measured on a 2-core machine:
//! one shared connection carried 300,000-390,000 enqueues/s, a pool checkout per
//! command 45,000-47,000/s, each checkout costing a round trip to recycle). A blocking
//! wait needs a connection of its own whose response timeout outlasts the block.

use std::sync::Mutex;
use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::{AsyncConnectionConfig, Client, Cmd, Pipeline, RedisFuture, RedisResult, Value};

/// Longer than any blocking wait dmq asks for; its own timer ends the wait first.
const NO_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// How long an ordinary command (a claim script over a big batch, say) may take.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where new connections come from.
pub(crate) enum Source {
    /// Boxed: a client with TLS settings is large.
    Client(Box<Client>),
    Pool(deadpool_redis::Pool),
}

impl Source {
    /// A new connection of the caller's own, with no response timeout.
    pub(crate) async fn open_unbounded(&self) -> RedisResult<MultiplexedConnection> {
        match self {
            Source::Client(client) => {
                let config = AsyncConnectionConfig::new().set_response_timeout(None);
                client.get_multiplexed_async_connection_with_config(&config).await
            }
            Source::Pool(pool) => {
                let mut conn = take(pool).await?;
                conn.set_response_timeout(NO_TIMEOUT);
                Ok(conn)
            }
        }
    }
}

/// A connection taken out of `pool` for good (the pool may open another in its place).
async fn take(pool: &deadpool_redis::Pool) -> RedisResult<MultiplexedConnection> {
    match pool.get().await {
        Ok(conn) => Ok(deadpool_redis::Connection::take(conn)),
        Err(deadpool_redis::PoolError::Backend(e)) => Err(e),
        Err(e) => Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "could not take a connection from the deadpool-redis pool",
            e.to_string(),
        ))),
    }
}

/// A connection from `pool` for ordinary commands: deadpool's connections answer
/// within redis-rs's default 500 ms, too short for a claim over a big batch.
async fn take_shared(pool: &deadpool_redis::Pool) -> RedisResult<MultiplexedConnection> {
    let mut conn = take(pool).await?;
    conn.set_response_timeout(RESPONSE_TIMEOUT);
    Ok(conn)
}

/// The connection ordinary commands share.
pub(crate) enum Shared {
    /// Reconnects by itself, with backoff.
    Manager(ConnectionManager),
    /// Taken from a pool; replaced by another from the pool once it fails.
    Pooled { pool: deadpool_redis::Pool, current: Mutex<Option<MultiplexedConnection>> },
}

impl Shared {
    pub(crate) async fn connect(source: &Source) -> RedisResult<Shared> {
        match source {
            Source::Client(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_secs(5))
                    .set_connection_timeout(Some(Duration::from_secs(5)))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT));
                Ok(Shared::Manager(client.get_connection_manager_with_config(config).await?))
            }
            Source::Pool(pool) => {
                let conn = take_shared(pool).await?;
                Ok(Shared::Pooled { pool: pool.clone(), current: Mutex::new(Some(conn)) })
            }
        }
    }

    /// A handle on the shared connection, cheap to clone.
    pub(crate) async fn get(&self) -> RedisResult<Conn> {
        match self {
            Shared::Manager(manager) => Ok(Conn::Manager(manager.clone())),
            Shared::Pooled { pool, current } => {
                if let Some(conn) = lock(current).clone() {
                    return Ok(Conn::Direct(conn));
                }
                let conn = take_shared(pool).await?;
                *lock(current) = Some(conn.clone());
                Ok(Conn::Direct(conn))
            }
        }
    }

    /// Notes a failed command: a pooled connection that broke is replaced next time.
    pub(crate) fn failed(&self, e: &redis::RedisError) {
        if let Shared::Pooled { current, .. } = self {
            if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                *lock(current) = None;
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A handle on the shared connection.
#[derive(Clone)]
pub(crate) enum Conn {
    Manager(ConnectionManager),
    Direct(MultiplexedConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Manager(c) => c.req_packed_command(cmd),
            Conn::Direct(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Manager(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Direct(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Manager(c) => c.get_db(),
            Conn::Direct(c) => c.get_db(),
        }
    }
}
