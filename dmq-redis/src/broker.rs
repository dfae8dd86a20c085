//! `RedisBroker`: jobs in Redis lists and sorted sets, every state change one Lua script.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use dmq_core::{Broker, DeadLetter, Delivery, Error, Job, Lease, QueueStats, Result, TaskId};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, ScriptInvocation, Value};
use tokio::time::Instant;

use crate::error::{redact, redis_error};
use crate::keys::{DEFAULT_NAMESPACE, Keys, QueueKeys};
use crate::scripts::Scripts;

/// The default cap on each queue's dead-letter list.
pub const DEFAULT_DEAD_LETTER_CAP: usize = 10_000;

/// The default number of deliveries after which a job whose lease expires again is
/// dead-lettered as a poison pill.
pub const DEFAULT_MAX_DELIVERIES: u32 = 5;

/// How long a BLPOP may take to answer after `CLIENT UNBLOCK`.
const UNBLOCK_GRACE: Duration = Duration::from_millis(50);

/// The most jobs one claim takes.
const MAX_CLAIM: usize = 10_000;

/// Idle blocking connections kept for reuse.
const SPARE_BLOCKING_CONNECTIONS: usize = 8;

/// A [`Broker`] on Redis 7: ready jobs in one list per priority, delayed jobs and
/// retries in a sorted set scored by due time, in-flight jobs under leases whose
/// deadlines come from Redis's own clock, and a capped dead-letter list per queue.
///
/// Every state change is one Lua script that checks the lease token, so a worker whose
/// lease passed to another cannot acknowledge, retry or overwrite the job. Ordinary
/// commands share one multiplexed connection; a claim that waits for work blocks on a
/// connection of its own.
///
/// ```no_run
/// # async fn demo() -> dmq_core::Result<()> {
/// use dmq_core::Manager;
/// use dmq_redis::RedisBroker;
///
/// let manager = Manager::builder()
///     .broker(RedisBroker::connect("redis://127.0.0.1:6379").await?)
///     .build()?;
/// # Ok(()) }
/// ```
pub struct RedisBroker {
    client: Client,
    url: String,
    /// Shared by every ordinary command; reconnects with backoff after Redis restarts.
    conn: ConnectionManager,
    keys: Keys,
    scripts: Arc<Scripts>,
    blocking: Mutex<Vec<BlockingConnection>>,
    dead_letter_cap: usize,
    max_deliveries: u32,
}

impl fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBroker")
            .field("url", &self.url)
            .field("namespace", &self.keys.namespace())
            .field("dead_letter_cap", &self.dead_letter_cap)
            .field("max_deliveries", &self.max_deliveries)
            .finish()
    }
}

impl RedisBroker {
    /// Connects to the Redis at `url` (`redis://` or `rediss://`), namespace `dmq`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a URL that does not parse, [`Error::Backend`]
    /// when Redis cannot be reached.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with_namespace(url, DEFAULT_NAMESPACE).await
    }

    /// Connects to the Redis at `url`, keeping every key under `namespace`, so several
    /// applications or tenants can share one Redis.
    ///
    /// # Errors
    ///
    /// As [`connect`](RedisBroker::connect).
    pub async fn connect_with_namespace(url: &str, namespace: &str) -> Result<Self> {
        let shown = redact(url);
        let client = Client::open(url).map_err(|e| {
            Error::InvalidArgument(format!(
                "{shown} is not a Redis URL ({e}); use redis://host:port/db or rediss://..."
            ))
        })?;
        let config = ConnectionManagerConfig::new()
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(5))
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(10)));
        let conn = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(|e| redis_error(&format!("connecting to redis at {shown}"), e))?;
        Ok(RedisBroker {
            client,
            url: shown,
            conn,
            keys: Keys::new(namespace),
            scripts: Arc::new(Scripts::new()),
            blocking: Mutex::new(Vec::new()),
            dead_letter_cap: DEFAULT_DEAD_LETTER_CAP,
            max_deliveries: DEFAULT_MAX_DELIVERIES,
        })
    }

    /// Keeps at most `cap` jobs in each dead-letter list (10,000 by default); older
    /// ones are dropped and counted.
    #[must_use]
    pub fn with_dead_letter_cap(mut self, cap: usize) -> Self {
        self.dead_letter_cap = cap;
        self
    }

    /// Dead-letters a job whose lease expires after it was delivered `n` times (5 by
    /// default), instead of handing it out again: a job that kills or hangs every
    /// worker that takes it must not take them all down in turn. 0 means no limit.
    #[must_use]
    pub fn with_max_deliveries(mut self, n: u32) -> Self {
        self.max_deliveries = n;
        self
    }

    /// The key names this broker uses.
    #[must_use]
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    fn err(&self, what: &str, e: redis::RedisError) -> Error {
        redis_error(&format!("{what} on redis at {}", self.url), e)
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        what: &str,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T> {
        let mut conn = self.conn.clone();
        invocation.invoke_async(&mut conn).await.map_err(|e| self.err(what, e))
    }

    /// Runs a lease-checked script; its 0 means the token no longer holds.
    async fn settle(
        &self,
        what: &str,
        lease: &Lease,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<()> {
        match self.run::<i64>(what, invocation).await? {
            1 => Ok(()),
            _ => Err(Error::LeaseLost { id: lease.id }),
        }
    }

    async fn enqueue_one_queue(&self, queue: &str, jobs: &[Job]) -> Result<()> {
        let keys = self.keys.queue(queue);
        let mut invocation = self.scripts.enqueue.prepare_invoke();
        invocation.key(keys.payloads()).key(keys.meta()).key(keys.delayed()).key(keys.signal());
        add_ready_keys(&mut invocation, &keys);
        invocation.arg(jobs.len());
        for job in jobs {
            let due = job.eta.map_or(0, |eta| eta.timestamp_millis().max(1));
            invocation.arg(job.id.to_string()).arg(job.priority.min(9)).arg(due).arg(&job.payload);
        }
        let reply: Vec<String> = self.run("enqueueing", &invocation).await?;
        match reply.as_slice() {
            [ok] if ok == "ok" => Ok(()),
            [dup, id] if dup == "duplicate" => Err(Error::DuplicateJob {
                id: id.parse().unwrap_or_default(),
                queue: queue.to_owned(),
            }),
            other => Err(Error::Backend {
                message: format!("unexpected reply from the enqueue script: {other:?}"),
                transient: false,
            }),
        }
    }

    /// Claims from one queue; returns the jobs and how long until the next change.
    async fn claim_queue(
        &self,
        queue: &str,
        max: usize,
        lease: Duration,
    ) -> Result<(Vec<Delivery>, Option<Duration>)> {
        let keys = self.keys.queue(queue);
        let mut invocation = self.scripts.claim.prepare_invoke();
        invocation.key(keys.payloads()).key(keys.meta()).key(keys.delayed()).key(keys.in_flight());
        add_ready_keys(&mut invocation, &keys);
        invocation.key(keys.dead()).key(keys.dead_payloads()).key(keys.dead_dropped());
        invocation
            .arg(max)
            .arg(millis(lease).max(1))
            .arg(self.max_deliveries)
            .arg(self.dead_letter_cap);
        let reply: Vec<Value> = self.run("claiming jobs", &invocation).await?;
        parse_claim(queue, reply).ok_or_else(|| Error::Backend {
            message: "unexpected reply from the claim script".to_owned(),
            transient: false,
        })
    }

    async fn blocking_connection(&self) -> Result<BlockingConnection> {
        let spare = self.blocking.lock().unwrap_or_else(|p| p.into_inner()).pop();
        if let Some(conn) = spare {
            return Ok(conn);
        }
        // No response timeout: the blocking command's own timeout bounds the wait.
        let config = AsyncConnectionConfig::new().set_response_timeout(None);
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| self.err("opening a connection for blocking waits", e))?;
        let client_id: i64 = redis::cmd("CLIENT")
            .arg("ID")
            .query_async(&mut conn)
            .await
            .map_err(|e| self.err("opening a connection for blocking waits", e))?;
        Ok(BlockingConnection { conn, client_id })
    }

    /// Blocks until a wake-up arrives on one of `queues` or `timeout` passes. Dropping
    /// the future drops the connection, so no other call ever waits behind it.
    ///
    /// Redis checks blocking timeouts only about every 100 ms (its `hz`), too coarse
    /// for a delayed job's eta, so the wait is timed here: when `timeout` passes first,
    /// `CLIENT UNBLOCK` ends the `BLPOP` at once and the connection stays usable.
    async fn wait_for_signal(&self, queues: &[String], timeout: Duration) -> Result<()> {
        let mut blocking = self.blocking_connection().await?;
        let mut cmd = redis::cmd("BLPOP");
        for queue in queues {
            cmd.arg(self.keys.queue(queue).signal());
        }
        // The server's own timeout is a backstop a little after ours.
        cmd.arg((timeout + Duration::from_millis(500)).as_secs_f64());
        let client_id = blocking.client_id;
        let popped = {
            let pop = cmd.query_async::<Option<(String, String)>>(&mut blocking.conn);
            tokio::pin!(pop);
            tokio::select! {
            popped = &mut pop => popped,
            () = tokio::time::sleep(timeout) => {
                let mut conn = self.conn.clone();
                let unblocked: redis::RedisResult<i64> =
                    redis::cmd("CLIENT").arg("UNBLOCK").arg(client_id).query_async(&mut conn).await;
                match unblocked {
                    // Unblocked, or BLPOP already returned: its reply is on the way.
                    Ok(_) => match tokio::time::timeout(UNBLOCK_GRACE, &mut pop).await {
                        Ok(popped) => popped,
                        // The UNBLOCK overtook the BLPOP; drop this connection rather
                        // than wait for the server's timeout.
                        Err(_) => return Ok(()),
                    },
                    Err(e) => return Err(self.err("ending a blocking wait", e)),
                }
            }
            }
        };
        popped.map_err(|e| self.err("waiting for jobs", e))?;
        let mut spare = self.blocking.lock().unwrap_or_else(|p| p.into_inner());
        if spare.len() < SPARE_BLOCKING_CONNECTIONS {
            spare.push(blocking);
        }
        Ok(())
    }
}

/// A connection of its own for blocking waits, and its Redis client id (for
/// `CLIENT UNBLOCK`).
struct BlockingConnection {
    conn: MultiplexedConnection,
    client_id: i64,
}

fn add_ready_keys(invocation: &mut ScriptInvocation<'_>, keys: &QueueKeys) {
    for priority in 0..=9 {
        invocation.key(keys.ready(priority));
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn parse_claim(queue: &str, reply: Vec<Value>) -> Option<(Vec<Delivery>, Option<Duration>)> {
    let mut items = reply.into_iter();
    let next_change = match items.next()? {
        Value::Int(ms) if ms >= 0 => Some(Duration::from_millis(ms.unsigned_abs())),
        Value::Int(_) => None,
        _ => return None,
    };
    let mut deliveries = Vec::new();
    loop {
        let Some(id) = items.next() else { break };
        let (
            Value::BulkString(id),
            Value::BulkString(payload),
            Value::Int(count),
            Value::BulkString(token),
        ) = (id, items.next()?, items.next()?, items.next()?)
        else {
            return None;
        };
        let id: TaskId = String::from_utf8(id).ok()?.parse().ok()?;
        let token = String::from_utf8(token).ok()?;
        let lease = Lease { id, queue: queue.to_owned(), token };
        deliveries.push(Delivery::new(lease, payload, u32::try_from(count).unwrap_or(u32::MAX)));
    }
    Some((deliveries, next_change))
}

#[async_trait]
impl Broker for RedisBroker {
    async fn enqueue(&self, job: Job) -> Result<()> {
        let queue = job.queue.clone();
        self.enqueue_one_queue(&queue, std::slice::from_ref(&job)).await
    }

    async fn enqueue_batch(&self, jobs: Vec<Job>) -> Result<()> {
        let mut by_queue: Vec<(String, Vec<Job>)> = Vec::new();
        for job in jobs {
            match by_queue.iter_mut().find(|(q, _)| *q == job.queue) {
                Some((_, group)) => group.push(job),
                None => by_queue.push((job.queue.clone(), vec![job])),
            }
        }
        // One script per queue adds that queue's jobs all or none. Across queues, every
        // id is checked first, so a duplicate anywhere adds nothing anywhere; only a
        // connection lost between two queues' scripts can leave a batch half added.
        if by_queue.len() > 1 {
            let mut pipe = redis::pipe();
            for (queue, group) in &by_queue {
                let payloads = self.keys.queue(queue).payloads();
                for job in group {
                    pipe.hexists(&payloads, job.id.to_string());
                }
            }
            let mut conn = self.conn.clone();
            let known: Vec<bool> =
                pipe.query_async(&mut conn).await.map_err(|e| self.err("enqueueing", e))?;
            let jobs = by_queue.iter().flat_map(|(q, group)| group.iter().map(move |j| (q, j)));
            if let Some(((queue, job), _)) = jobs.zip(known).find(|(_, known)| *known) {
                return Err(Error::DuplicateJob { id: job.id, queue: queue.clone() });
            }
        }
        for (queue, group) in &by_queue {
            self.enqueue_one_queue(queue, group).await?;
        }
        Ok(())
    }

    async fn claim(
        &self,
        queues: &[String],
        max: usize,
        lease: Duration,
        wait: Duration,
    ) -> Result<Vec<Delivery>> {
        if max == 0 || queues.is_empty() {
            return Ok(Vec::new());
        }
        let max = max.min(MAX_CLAIM);
        let give_up = Instant::now()
            .checked_add(wait)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365));
        loop {
            let mut claimed = Vec::new();
            let mut next_change: Option<Duration> = None;
            for queue in queues {
                if claimed.len() >= max {
                    break;
                }
                let (mut got, change) =
                    match self.claim_queue(queue, max - claimed.len(), lease).await {
                        Ok(found) => found,
                        // Jobs already leased from another queue are handed out, not stranded
                        // until their lease runs out; the error shows again on the next claim.
                        Err(e) if !claimed.is_empty() => {
                            tracing::warn!(error = %e, queue, "claiming from one queue failed");
                            return Ok(claimed);
                        }
                        Err(e) => return Err(e),
                    };
                claimed.append(&mut got);
                next_change = match (next_change, change) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            if !claimed.is_empty() {
                return Ok(claimed);
            }
            let now = Instant::now();
            if now >= give_up {
                return Ok(Vec::new());
            }
            let mut block = give_up - now;
            if let Some(change) = next_change {
                block = block.min(change.max(Duration::from_millis(1)));
            }
            self.wait_for_signal(queues, block).await?;
        }
    }

    async fn ack(&self, lease: &Lease) -> Result<()> {
        let keys = self.keys.queue(&lease.queue);
        let mut invocation = self.scripts.ack.prepare_invoke();
        invocation.key(keys.payloads()).key(keys.meta()).key(keys.in_flight());
        invocation.arg(lease.id.to_string()).arg(&lease.token);
        self.settle("acknowledging a job", lease, &invocation).await
    }

    async fn retry(&self, lease: &Lease, payload: Vec<u8>, eta: DateTime<Utc>) -> Result<()> {
        let keys = self.keys.queue(&lease.queue);
        let mut invocation = self.scripts.retry.prepare_invoke();
        invocation
            .key(keys.payloads())
            .key(keys.meta())
            .key(keys.in_flight())
            .key(keys.delayed())
            .key(keys.signal());
        invocation
            .arg(lease.id.to_string())
            .arg(&lease.token)
            .arg(payload)
            .arg(eta.timestamp_millis());
        self.settle("scheduling a retry", lease, &invocation).await
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let keys = self.keys.queue(&lease.queue);
        let mut invocation = self.scripts.release.prepare_invoke();
        invocation.key(keys.meta()).key(keys.in_flight()).key(keys.signal());
        add_ready_keys(&mut invocation, &keys);
        invocation.arg(lease.id.to_string()).arg(&lease.token);
        self.settle("releasing a job", lease, &invocation).await
    }

    async fn dead_letter(&self, lease: &Lease, reason: &str) -> Result<()> {
        let keys = self.keys.queue(&lease.queue);
        let mut invocation = self.scripts.dead_letter.prepare_invoke();
        invocation
            .key(keys.payloads())
            .key(keys.meta())
            .key(keys.in_flight())
            .key(keys.dead())
            .key(keys.dead_payloads())
            .key(keys.dead_dropped());
        invocation
            .arg(lease.id.to_string())
            .arg(&lease.token)
            .arg(reason)
            .arg(self.dead_letter_cap);
        self.settle("dead-lettering a job", lease, &invocation).await
    }

    async fn renew(&self, lease: &Lease, lease_for: Duration) -> Result<()> {
        let keys = self.keys.queue(&lease.queue);
        let mut invocation = self.scripts.renew.prepare_invoke();
        invocation.key(keys.meta()).key(keys.in_flight());
        invocation.arg(lease.id.to_string()).arg(&lease.token).arg(millis(lease_for).max(1));
        self.settle("renewing a lease", lease, &invocation).await
    }

    async fn queue_stats(&self, queue: &str) -> Result<QueueStats> {
        let keys = self.keys.queue(queue);
        let mut pipe = redis::pipe();
        for priority in 0..=9 {
            pipe.llen(keys.ready(priority));
        }
        pipe.zcard(keys.delayed())
            .zcard(keys.in_flight())
            .llen(keys.dead())
            .get(keys.dead_dropped());
        let mut conn = self.conn.clone();
        let counts: Vec<Option<u64>> =
            pipe.query_async(&mut conn).await.map_err(|e| self.err("reading queue sizes", e))?;
        let at = |i: usize| counts.get(i).copied().flatten().unwrap_or(0);
        let mut stats = QueueStats::default();
        stats.ready = (0..10).map(at).sum();
        stats.delayed = at(10);
        stats.in_flight = at(11);
        stats.dead = at(12);
        stats.dead_dropped = at(13);
        Ok(stats)
    }

    async fn dead_letters(
        &self,
        queue: &str,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let keys = self.keys.queue(queue);
        let mut conn = self.conn.clone();
        let last = isize::try_from(offset.saturating_add(limit) - 1).unwrap_or(isize::MAX);
        let start = isize::try_from(offset).unwrap_or(isize::MAX);
        let entries: Vec<String> = redis::cmd("LRANGE")
            .arg(keys.dead())
            .arg(start)
            .arg(last)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.err("listing dead letters", e))?;
        let mut letters = Vec::new();
        for entry in entries {
            let mut parts = entry.splitn(3, '|');
            let (Some(at), Some(id), Some(reason)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let Ok(id) = id.parse::<TaskId>() else { continue };
            let payload: Option<Vec<u8>> = redis::cmd("HGET")
                .arg(keys.dead_payloads())
                .arg(format!("{at}|{id}"))
                .query_async(&mut conn)
                .await
                .map_err(|e| self.err("reading a dead letter", e))?;
            let at = at.parse().ok().and_then(DateTime::from_timestamp_millis).unwrap_or_default();
            letters.push(DeadLetter::new(id, queue, payload.unwrap_or_default(), reason, at));
        }
        Ok(letters)
    }
}
