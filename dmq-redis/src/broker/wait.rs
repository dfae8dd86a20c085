//! Idle claimers' blocking waits for work, each on a connection of its own, and the
//! wake-ups passed on from one claimer to the next.
//!
//! On a Redis Cluster a `BLPOP` may name keys of one slot only, and each queue's
//! wake-up list is in its queue's slot: a claimer of several queues there waits on each
//! slot at once, each wait on a connection of its own, and the first wake-up ends the
//! others.

use std::time::Duration;

use dmq_core::Result;
use futures::future::FutureExt as _;

use crate::conn::Conn;
use crate::keys::cluster_slot;

use super::*;

/// How long a BLPOP may take to answer after `CLIENT UNBLOCK`.
pub(super) const UNBLOCK_GRACE: Duration = Duration::from_millis(50);

/// Idle blocking connections kept for reuse.
pub(super) const SPARE_BLOCKING_CONNECTIONS: usize = 8;

/// A connection of its own for blocking waits, and its Redis client id (for
/// `CLIENT UNBLOCK`) on the node of the slot it last blocked on.
pub(super) struct BlockingConnection {
    pub(super) conn: Conn,
    /// The slot and the client id there; on a single Redis the slot is always 0.
    client_id: Option<(u16, i64)>,
}

impl RedisBroker {
    /// A connection for a blocking command on the keys of `slot`, with its client id
    /// on that slot's node.
    pub(super) async fn blocking_connection(&self, slot: u16) -> Result<BlockingConnection> {
        let what = "opening a connection for blocking waits";
        let spare = {
            let mut spare = self.blocking.lock().unwrap_or_else(|p| p.into_inner());
            // One that knows its id on this slot's node, else any.
            let known = spare.iter().position(|b| b.client_id.is_some_and(|(s, _)| s == slot));
            match known {
                Some(i) => Some(spare.swap_remove(i)),
                None => spare.pop(),
            }
        };
        let mut blocking = match spare {
            Some(blocking) => blocking,
            None => BlockingConnection {
                conn: self.source.open_unbounded().await.map_err(|e| self.err(what, e))?,
                client_id: None,
            },
        };
        if blocking.client_id.is_none_or(|(s, _)| s != slot) {
            let id: i64 = blocking
                .conn
                .on_slot(redis::cmd("CLIENT").arg("ID"), slot)
                .await
                .map_err(|e| self.err(what, e))?;
            blocking.client_id = Some((slot, id));
        }
        Ok(blocking)
    }

    /// The slot blocking commands on `key` go to: its cluster slot on a cluster, 0 on
    /// a single Redis (where every key is on the one server).
    pub(super) fn blocking_slot(&self, key: &str) -> u16 {
        if self.source.is_cluster() { cluster_slot(key.as_bytes()) } else { 0 }
    }

    /// Blocks until a wake-up arrives on one of `queues` or `timeout` passes.
    /// Returns the queue whose wake-up it took, if it took one.
    pub(super) async fn wait_for_signal(
        &self,
        queues: &[String],
        timeout: Duration,
    ) -> Result<Option<String>> {
        // The queues' wake-up lists by slot (one group on a single Redis).
        let mut groups: Vec<(u16, Vec<String>)> = Vec::new();
        for queue in queues {
            let signal = self.keys.queue(queue).signal();
            let slot = self.blocking_slot(&signal);
            match groups.iter_mut().find(|(s, _)| *s == slot) {
                Some((_, keys)) => keys.push(signal),
                None => groups.push((slot, vec![signal])),
            }
        }
        let queue_of =
            |key: &str| queues.iter().find(|queue| self.keys.queue(queue).signal() == key).cloned();
        if let [(slot, keys)] = groups.as_slice() {
            let popped = self.pop_signal(keys, *slot, timeout, std::future::pending()).await?;
            return Ok(popped.and_then(|key| queue_of(&key)));
        }
        // Several slots: one wait per slot; the first wake-up (or failure) ends the
        // others, and a wake-up another wait took meanwhile is passed on.
        let done = tokio::sync::Notify::new();
        let waits = groups.iter().map(|(slot, keys)| {
            let ended = done.notified();
            async {
                let popped = self.pop_signal(keys, *slot, timeout, ended).await;
                done.notify_waiters();
                popped
            }
            .boxed()
        });
        let mut woken = None;
        let mut failure = None;
        for popped in futures::future::join_all(waits).await {
            match popped {
                Ok(Some(key)) if woken.is_none() => woken = queue_of(&key),
                Ok(Some(key)) => {
                    if let Some(queue) = queue_of(&key) {
                        self.pass_on_signal(&queue).await;
                    }
                }
                Ok(None) => {}
                Err(e) => failure = Some(e),
            }
        }
        match (woken, failure) {
            (Some(queue), _) => Ok(Some(queue)),
            (None, Some(e)) => Err(e),
            (None, None) => Ok(None),
        }
    }

    /// `BLPOP` on `keys` (all of `slot`) until a wake-up, `timeout`, or `ended`;
    /// the key whose wake-up it took.
    async fn pop_signal(
        &self,
        keys: &[String],
        slot: u16,
        timeout: Duration,
        ended: impl std::future::Future<Output = ()>,
    ) -> Result<Option<String>> {
        let mut cmd = redis::cmd("BLPOP");
        cmd.arg(keys);
        // The server's own timeout is a backstop a little after ours.
        cmd.arg((timeout + Duration::from_millis(500)).as_secs_f64());
        let popped: Option<Option<(String, String)>> =
            self.run_blocking_until(&cmd, slot, timeout, ended, "waiting for jobs").await?;
        Ok(popped.flatten().map(|(key, _)| key))
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
        slot: u16,
        timeout: Duration,
        what: &str,
    ) -> Result<Option<T>> {
        self.run_blocking_until(cmd, slot, timeout, std::future::pending(), what).await
    }

    /// As [`run_blocking`](Self::run_blocking), also ended early (as by its timeout)
    /// when `ended` completes.
    async fn run_blocking_until<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
        slot: u16,
        timeout: Duration,
        ended: impl std::future::Future<Output = ()>,
        what: &str,
    ) -> Result<Option<T>> {
        let mut blocking = self.blocking_connection(slot).await?;
        let client_id = blocking.client_id.map_or(0, |(_, id)| id);
        let reply = {
            let query = cmd.query_async::<T>(&mut blocking.conn);
            tokio::pin!(query);
            tokio::select! {
            reply = &mut query => reply,
            () = async { tokio::select! { () = tokio::time::sleep(timeout) => {}, () = ended => {} } } => {
                let mut conn = self.conn().await?;
                let unblocked: redis::RedisResult<i64> =
                    conn.on_slot(redis::cmd("CLIENT").arg("UNBLOCK").arg(client_id), slot).await;
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
