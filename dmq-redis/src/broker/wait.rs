//! Idle claimers' blocking waits for work, each on a connection of its own, and the
//! wake-ups passed on from one claimer to the next.
//!
//! On a Redis Cluster a `BLPOP` may name keys of one slot only, and each queue's
//! wake-up list is in its queue's slot: a claimer of several queues there waits on each
//! slot at once, each wait on a connection of its own. The first wake-up returns at
//! once; the other waits are ended in the background, and a wake-up one of them took
//! meanwhile is passed on.

use std::collections::HashMap;
use std::time::Duration;

use dmq_core::Result;
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use tokio::sync::watch;

use crate::conn::Conn;
use crate::keys::cluster_slot;

use super::*;

/// How long a BLPOP may take to answer after `CLIENT UNBLOCK`.
pub(super) const UNBLOCK_GRACE: Duration = Duration::from_millis(50);

/// Idle blocking connections kept for reuse: enough for a claimer of many queues on a
/// cluster, where each slot waited on holds one.
pub(super) const SPARE_BLOCKING_CONNECTIONS: usize = 64;

/// A connection of its own for blocking waits, and its Redis client id (for
/// `CLIENT UNBLOCK`) on the node of each slot it blocked on.
pub(super) struct BlockingConnection {
    pub(super) conn: Conn,
    /// Slot to client id there; on a single Redis the slot is always 0.
    client_ids: HashMap<u16, i64>,
}

/// The spare blocking connections, shared with the waits that end in the background.
pub(super) type Spares = Arc<Mutex<Vec<BlockingConnection>>>;

/// What a blocking command needs once its connection is in hand: owned, so that a
/// wait can finish in the background.
#[derive(Clone)]
struct Blocker {
    shared: Arc<Shared>,
    spares: Spares,
}

impl Blocker {
    /// Runs `cmd` on `blocking` (its keys all of `slot`) until it answers, `timeout`
    /// passes, or `ended` completes; `None` when it did not answer. Puts the connection
    /// back among the spares when it can be used again.
    async fn run<T: redis::FromRedisValue>(
        &self,
        mut blocking: BlockingConnection,
        cmd: &redis::Cmd,
        slot: u16,
        timeout: Duration,
        ended: impl std::future::Future<Output = ()>,
    ) -> redis::RedisResult<Option<T>> {
        let client_id = blocking.client_ids.get(&slot).copied().unwrap_or_default();
        let reply = {
            let query = cmd.query_async::<T>(&mut blocking.conn);
            tokio::pin!(query);
            let stop = async {
                tokio::select! {
                    () = tokio::time::sleep(timeout) => {}
                    () = ended => {}
                }
            };
            tokio::select! {
                reply = &mut query => reply,
                () = stop => {
                    let mut conn = self.shared.get().await?;
                    let unblock = redis::cmd("CLIENT").arg("UNBLOCK").arg(client_id).clone();
                    // Unblocked, or the command already returned: its reply is on the way.
                    let _: i64 = conn.on_slot(&unblock, slot).await.inspect_err(|e| self.shared.failed(e))?;
                    match tokio::time::timeout(UNBLOCK_GRACE, &mut query).await {
                        Ok(reply) => reply,
                        // The UNBLOCK overtook the command; drop this connection rather
                        // than wait for the server's timeout.
                        Err(_) => return Ok(None),
                    }
                }
            }
        };
        match reply {
            Ok(reply) => {
                let mut spares = self.spares.lock().unwrap_or_else(|p| p.into_inner());
                if spares.len() < SPARE_BLOCKING_CONNECTIONS {
                    spares.push(blocking);
                }
                Ok(Some(reply))
            }
            Err(e) => {
                // The spare connections likely broke the same way (a Redis restart).
                self.spares.lock().unwrap_or_else(|p| p.into_inner()).clear();
                Err(e)
            }
        }
    }
}

/// `BLPOP` over `keys`, with the server's own timeout a little after `timeout`, a
/// backstop for ours.
fn blpop(keys: &[String], timeout: Duration) -> redis::Cmd {
    let mut cmd = redis::cmd("BLPOP");
    cmd.arg(keys).arg((timeout + Duration::from_millis(500)).as_secs_f64());
    cmd
}

/// Pushes a wake-up back onto `signal` (a queue's wake-up list, which holds at most one).
async fn push_signal(shared: &Shared, signal: &str) -> redis::RedisResult<()> {
    let mut conn = shared.get().await?;
    redis::pipe()
        .lpush(signal, "1")
        .ignore()
        .ltrim(signal, 0, 0)
        .ignore()
        .query_async::<()>(&mut conn)
        .await
        .inspect_err(|e| shared.failed(e))
}

impl RedisBroker {
    fn blocker(&self) -> Blocker {
        Blocker { shared: Arc::clone(&self.shared), spares: Arc::clone(&self.blocking) }
    }

    /// A connection for a blocking command on the keys of `slot`, with its client id
    /// on that slot's node.
    async fn blocking_connection(&self, slot: u16) -> Result<BlockingConnection> {
        let what = "opening a connection for blocking waits";
        let spare = {
            let mut spares = self.blocking.lock().unwrap_or_else(|p| p.into_inner());
            // One that knows its id on this slot's node, else any.
            match spares.iter().position(|b| b.client_ids.contains_key(&slot)) {
                Some(i) => Some(spares.swap_remove(i)),
                None => spares.pop(),
            }
        };
        let mut blocking = match spare {
            Some(blocking) => blocking,
            None => BlockingConnection {
                conn: self.source.open_unbounded().await.map_err(|e| self.err(what, e))?,
                client_ids: HashMap::new(),
            },
        };
        if !blocking.client_ids.contains_key(&slot) {
            let id: i64 = blocking
                .conn
                .on_slot(redis::cmd("CLIENT").arg("ID"), slot)
                .await
                .map_err(|e| self.err(what, e))?;
            blocking.client_ids.insert(slot, id);
        }
        Ok(blocking)
    }

    /// A connection of this broker's alone, for commands that hold the connection
    /// they are sent on (`WAIT`): a spare one, or a new one.
    pub(super) async fn spare_connection(&self) -> Result<BlockingConnection> {
        let spare = self.blocking.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match spare {
            Some(spare) => Ok(spare),
            None => Ok(BlockingConnection {
                conn: self
                    .source
                    .open_unbounded()
                    .await
                    .map_err(|e| self.err("opening a connection of its own", e))?,
                client_ids: HashMap::new(),
            }),
        }
    }

    /// Puts a connection from [`spare_connection`](Self::spare_connection) back,
    /// when there is room.
    pub(super) fn put_back(&self, connection: BlockingConnection) {
        let mut spares = self.blocking.lock().unwrap_or_else(|p| p.into_inner());
        if spares.len() < SPARE_BLOCKING_CONNECTIONS {
            spares.push(connection);
        }
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
        let what = "waiting for jobs";
        if let [(slot, keys)] = groups.as_slice() {
            let blocking = self.blocking_connection(*slot).await?;
            let popped: Option<Option<(String, String)>> = self
                .blocker()
                .run(blocking, &blpop(keys, timeout), *slot, timeout, std::future::pending())
                .await
                .map_err(|e| self.err(what, e))?;
            return Ok(popped.flatten().and_then(|(key, _)| queue_of(&key)));
        }
        // Several slots: one wait per slot, each a task of its own. The first wake-up
        // ends the others, which finish in the background.
        let (end, ended) = watch::channel(false);
        let mut waits = FuturesUnordered::new();
        for (slot, keys) in groups {
            let blocking = self.blocking_connection(slot).await?;
            let blocker = self.blocker();
            let mut ended = ended.clone();
            waits.push(tokio::spawn(async move {
                let ended = async move {
                    let _ = ended.wait_for(|ended| *ended).await;
                };
                let cmd = blpop(&keys, timeout);
                let popped: redis::RedisResult<Option<Option<(String, String)>>> =
                    blocker.run(blocking, &cmd, slot, timeout, ended).await;
                popped.map(|popped| popped.flatten().map(|(key, _)| key))
            }));
        }
        let mut failure = None;
        let mut woken = None;
        while let Some(joined) = waits.next().await {
            match joined {
                Ok(Ok(Some(key))) => {
                    woken = Some(key);
                    break;
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) => failure = Some(self.err(what, e)),
                Err(e) => {
                    failure = Some(Error::backend(format!("{what}: a wait failed: {e}"), true))
                }
            }
        }
        let _ = end.send(true);
        if !waits.is_empty() {
            let shared = Arc::clone(&self.shared);
            tokio::spawn(async move {
                while let Some(joined) = waits.next().await {
                    if let Ok(Ok(Some(signal))) = joined {
                        if let Err(e) = push_signal(&shared, &signal).await {
                            tracing::warn!(error = %e, %signal, "could not pass on a wake-up; an idle worker may wait for its timeout");
                        }
                    }
                }
            });
        }
        match (woken, failure) {
            (Some(key), _) => Ok(queue_of(&key)),
            (None, Some(e)) => Err(e),
            (None, None) => Ok(None),
        }
    }

    /// Runs the blocking command `cmd` (`XREAD BLOCK`, say) on a connection of its own,
    /// for up to `timeout`; `None` when `timeout` passed first. Its keys are all of
    /// `slot`. The command's own timeout, if it has one, should be a backstop a little
    /// after `timeout`. Dropping the future drops the connection, so no other call
    /// ever waits behind it.
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
        let blocking = self.blocking_connection(slot).await?;
        self.blocker()
            .run(blocking, cmd, slot, timeout, std::future::pending())
            .await
            .map_err(|e| self.err(what, e))
    }

    /// Puts back a wake-up this claimer took but could not act on (its batch filled
    /// from other queues first), so another idle claimer of `queue` is woken.
    pub(super) async fn pass_on_signal(&self, queue: &str) {
        let signal = self.keys.queue(queue).signal();
        if let Err(e) = push_signal(&self.shared, &signal).await {
            let e = self.err("passing on a wake-up", e);
            tracing::warn!(error = %e, queue, "could not pass on a wake-up; an idle worker may wait for its timeout");
        }
    }
}
