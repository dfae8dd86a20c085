//! Idle claimers' blocking waits for work, each on a connection of its own, and the
//! wake-ups passed on from one claimer to the next.

use std::time::Duration;

use dmq_core::Result;
use redis::aio::MultiplexedConnection;

use super::*;

/// How long a BLPOP may take to answer after `CLIENT UNBLOCK`.
pub(super) const UNBLOCK_GRACE: Duration = Duration::from_millis(50);

/// Idle blocking connections kept for reuse.
pub(super) const SPARE_BLOCKING_CONNECTIONS: usize = 8;

/// A connection of its own for blocking waits, and its Redis client id (for
/// `CLIENT UNBLOCK`).
pub(super) struct BlockingConnection {
    pub(super) conn: MultiplexedConnection,
    pub(super) client_id: i64,
}

impl RedisBroker {
    pub(super) async fn blocking_connection(&self) -> Result<BlockingConnection> {
        let spare = self.blocking.lock().unwrap_or_else(|p| p.into_inner()).pop();
        if let Some(conn) = spare {
            return Ok(conn);
        }
        let mut conn = self
            .source
            .open_unbounded()
            .await
            .map_err(|e| self.err("opening a connection for blocking waits", e))?;
        let client_id: i64 = redis::cmd("CLIENT")
            .arg("ID")
            .query_async(&mut conn)
            .await
            .map_err(|e| self.err("opening a connection for blocking waits", e))?;
        Ok(BlockingConnection { conn, client_id })
    }

    /// Blocks until a wake-up arrives on one of `queues` or `timeout` passes.
    /// Returns the queue whose wake-up it took, if it took one.
    pub(super) async fn wait_for_signal(
        &self,
        queues: &[String],
        timeout: Duration,
    ) -> Result<Option<String>> {
        let mut cmd = redis::cmd("BLPOP");
        for queue in queues {
            cmd.arg(self.keys.queue(queue).signal());
        }
        // The server's own timeout is a backstop a little after ours.
        cmd.arg((timeout + Duration::from_millis(500)).as_secs_f64());
        let popped: Option<Option<(String, String)>> =
            self.run_blocking(&cmd, timeout, "waiting for jobs").await?;
        Ok(popped.flatten().and_then(|(key, _)| {
            queues.iter().find(|queue| self.keys.queue(queue).signal() == key).cloned()
        }))
    }

    /// Runs the blocking command `cmd` (`BLPOP`, `XREAD BLOCK`) on a connection of its
    /// own, for up to `timeout`; `None` when `timeout` passed first. The command's own
    /// timeout, if it has one, should be a backstop a little after `timeout`.
    /// Dropping the future drops the connection, so no other call ever waits behind it.
    ///
    /// Redis checks blocking timeouts only about every 100 ms (its `hz`), too coarse
    /// for a delayed job's eta, so the wait is timed here: when `timeout` passes first,
    /// `CLIENT UNBLOCK` ends the command at once and the connection stays usable.
    pub(super) async fn run_blocking<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
        timeout: Duration,
        what: &str,
    ) -> Result<Option<T>> {
        let mut blocking = self.blocking_connection().await?;
        let client_id = blocking.client_id;
        let reply = {
            let query = cmd.query_async::<T>(&mut blocking.conn);
            tokio::pin!(query);
            tokio::select! {
            reply = &mut query => reply,
            () = tokio::time::sleep(timeout) => {
                let mut conn = self.conn().await?;
                let unblocked: redis::RedisResult<i64> =
                    redis::cmd("CLIENT").arg("UNBLOCK").arg(client_id).query_async(&mut conn).await;
                match unblocked {
                    // Unblocked, or the command already returned: its reply is on the way.
                    Ok(_) => match tokio::time::timeout(UNBLOCK_GRACE, &mut query).await {
                        Ok(reply) => reply,
                        // The UNBLOCK overtook the command; drop this connection rather
                        // than wait for the server's timeout.
                        Err(_) => return Ok(None),
                    },
                    Err(e) => return Err(self.err("ending a blocking wait", e)),
                }
            }
            }
        };
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => {
                // The spare connections likely broke the same way (a Redis restart).
                self.blocking.lock().unwrap_or_else(|p| p.into_inner()).clear();
                return Err(self.err(what, e));
            }
        };
        let mut spare = self.blocking.lock().unwrap_or_else(|p| p.into_inner());
        if spare.len() < SPARE_BLOCKING_CONNECTIONS {
            spare.push(blocking);
        }
        Ok(Some(reply))
    }

    /// Puts back a wake-up this claimer took but could not act on (its batch filled
    /// from other queues first), so another idle claimer of `queue` is woken.
    pub(super) async fn pass_on_signal(&self, queue: &str) {
        let signal = self.keys.queue(queue).signal();
        let passed: Result<()> = async {
            let mut conn = self.conn().await?;
            redis::pipe()
                .lpush(&signal, "1")
                .ignore()
                .ltrim(&signal, 0, 0)
                .ignore()
                .query_async::<()>(&mut conn)
                .await
                .map_err(|e| self.err("passing on a wake-up", e))
        }
        .await;
        if let Err(e) = passed {
            tracing::warn!(error = %e, queue, "could not pass on a wake-up; an idle worker may wait for its timeout");
        }
    }
}
