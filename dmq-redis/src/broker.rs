//! `RedisBroker`: jobs in Redis lists and sorted sets, every state change one Lua script.

mod events;

use std::fmt;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use dmq_core::{
    Broker, DeadLetter, Delivery, Error, Event, EventPage, EventsFrom, Job, Lease, QueueCheckup,
    QueueStats, Result, ScheduleState, TaskId, WorkerInfo, WorkerStatus,
};
use redis::aio::MultiplexedConnection;
use redis::{ScriptInvocation, Value};
use tokio::time::Instant;

use crate::batch::Batcher;
use crate::conn::{Conn, Shared, Source};
use crate::error::{copy_error, redis_error};
use crate::keys::{DEFAULT_NAMESPACE, Keys, QueueKeys, id_text};
use crate::redis_url::RedisUrl;
use crate::scripts::Scripts;

/// The default cap on each queue's dead-letter list.
pub const DEFAULT_DEAD_LETTER_CAP: usize = 10_000;

pub use dmq_core::DEFAULT_MAX_DELIVERIES;

/// How long a BLPOP may take to answer after `CLIENT UNBLOCK`.
const UNBLOCK_GRACE: Duration = Duration::from_millis(50);

/// The most jobs one claim takes.
const MAX_CLAIM: usize = 1_000;

/// How long the reaper lock holds if its holder dies mid-reap (a reap takes
/// milliseconds). Short, since a reaper may well die mid-reap: the job it just handed
/// back may be the poison pill that kills its process. Two reapers at once would be
/// harmless anyway (every script is atomic); the lock only saves repeated work.
const REAPER_LOCK: Duration = Duration::from_secs(2);

/// Idle blocking connections kept for reuse.
const SPARE_BLOCKING_CONNECTIONS: usize = 8;

/// How often a reaper also looks for stranded jobs (see [`Broker::doctor`]).
const DOCTOR_EVERY: Duration = Duration::from_secs(60);

/// How a claim's time becomes its leases' fences: the claim's Unix millisecond times
/// this, plus each job's place in the claim (at most [`MAX_CLAIM`]).
const FENCE_STRIDE: u64 = 1024;

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
    url: String,
    source: Source,
    /// Shared by every ordinary command.
    shared: Arc<Shared>,
    keys: Keys,
    scripts: Arc<Scripts>,
    blocking: Mutex<Vec<BlockingConnection>>,
    /// Acknowledgements on their way, sent a batch per queue per round trip.
    acks: Batcher<Settled>,
    /// This broker's name when it holds the reaper lock.
    reaper_id: String,
    /// Since when this broker's heartbeats have succeeded without a failed command
    /// between: a worker is taken for dead only once its own ttl has passed in that
    /// time, so an outage does not make live workers look dead.
    healthy_since: Mutex<Option<std::time::Instant>>,
    dead_letter_cap: usize,
    max_deliveries: u32,
    /// About how many events the event stream keeps; 0 for no stream.
    event_stream_cap: usize,
    /// About how many events one entry of the event stream holds, as last read: how
    /// many entries a read asks for. A hint, never a limit.
    events_per_entry: AtomicUsize,
    /// Claims whose reply was lost (the connection broke, or the claim was dropped,
    /// while the script may have run): the worker, queue and tag of each, to give back
    /// what they took before the next claim.
    lost_claims: Mutex<Vec<LostClaim>>,
    /// When this broker's reaper last looked for stranded jobs.
    last_doctor: Mutex<Option<std::time::Instant>>,
}

/// A claim whose caller never learned what it took.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LostClaim {
    worker: String,
    queue: String,
    tag: String,
}

impl fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBroker")
            .field("url", &self.url)
            .field("namespace", &self.keys.namespace())
            .field("dead_letter_cap", &self.dead_letter_cap)
            .field("max_deliveries", &self.max_deliveries)
            .field("event_stream_cap", &self.event_stream_cap)
            .finish_non_exhaustive()
    }
}

impl RedisBroker {
    /// Connects to the Redis at `url`, namespace `dmq`: `redis://[[user]:password@]host[:port][/db]`,
    /// or `rediss://` for TLS, with the options [`RedisUrl`] lists (a CA file, a client
    /// certificate).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a URL that does not parse or names a certificate
    /// file that cannot be read, [`Error::Backend`] when Redis cannot be reached or
    /// refuses the credentials or the TLS handshake.
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
        let url = RedisUrl::parse(url)?;
        let shown = url.shown().to_owned();
        Self::from_source(Source::Client(Box::new(url.into_client())), shown, namespace).await
    }

    /// A broker on the connections of a deadpool-redis pool the application already
    /// has, keeping every key under `namespace`.
    ///
    /// Ordinary commands share one connection taken from the pool (replaced by another
    /// from the pool if it fails), since a checkout per command would cost a round trip
    /// each; every blocking wait for work takes a connection of its own from the pool.
    /// Connections taken are not returned, and the pool may open new ones in their place.
    ///
    /// ```no_run
    /// # async fn demo() -> dmq_core::Result<()> {
    /// let pool = deadpool_redis::Config::from_url("redis://127.0.0.1:6379")
    ///     .create_pool(Some(deadpool_redis::Runtime::Tokio1))
    ///     .expect("a valid pool configuration");
    /// let broker = dmq_redis::RedisBroker::from_pool(pool, "dmq").await?;
    /// # let _ = broker;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when no connection can be had from the pool.
    pub async fn from_pool(pool: deadpool_redis::Pool, namespace: &str) -> Result<Self> {
        Self::from_source(Source::Pool(pool), "a deadpool-redis pool".to_owned(), namespace).await
    }

    async fn from_source(source: Source, shown: String, namespace: &str) -> Result<Self> {
        let shared = Shared::connect(&source)
            .await
            .map_err(|e| redis_error(&format!("connecting to redis at {shown}"), e))?;
        let shared = Arc::new(shared);
        let keys = Keys::new(namespace);
        let scripts = Arc::new(Scripts::new());
        let acks =
            ack_writer(Arc::clone(&shared), keys.clone(), Arc::clone(&scripts), shown.clone());
        Ok(RedisBroker {
            url: shown,
            source,
            shared,
            keys,
            scripts,
            blocking: Mutex::new(Vec::new()),
            acks,
            reaper_id: uuid::Uuid::new_v4().to_string(),
            healthy_since: Mutex::new(None),
            dead_letter_cap: DEFAULT_DEAD_LETTER_CAP,
            max_deliveries: DEFAULT_MAX_DELIVERIES,
            event_stream_cap: dmq_core::DEFAULT_EVENT_STREAM_CAP,
            events_per_entry: AtomicUsize::new(events::FIRST_GUESS_PER_ENTRY),
            lost_claims: Mutex::new(Vec::new()),
            last_doctor: Mutex::new(None),
        })
    }

    /// Keeps at most `cap` jobs in each dead-letter list (10,000 by default); older
    /// ones are dropped and counted.
    #[must_use]
    pub fn with_dead_letter_cap(mut self, cap: usize) -> Self {
        self.dead_letter_cap = cap;
        self
    }

    /// Dead-letters a job whose worker was lost `n` times while the job ran alone (5
    /// by default), instead of handing it out again: a job that kills or hangs every
    /// worker that takes it must not take them all down in turn. 0 means no limit.
    ///
    /// A job taken back after its worker was lost is suspect: it is claimed alone
    /// ([`Delivery::isolated`]) and its worker runs nothing beside it, so a poison pill
    /// is dead-lettered on its own, never the jobs that ran beside it when it struck.
    #[must_use]
    pub fn with_max_deliveries(mut self, n: u32) -> Self {
        self.max_deliveries = n;
        self
    }

    /// Keeps about the last `cap` events in the namespace's event stream
    /// ([`DEFAULT_EVENT_STREAM_CAP`](dmq_core::DEFAULT_EVENT_STREAM_CAP), 10,000, by
    /// default; 0 writes no stream at all).
    ///
    /// The stream holds one entry per batch of events a process writes (one event
    /// when it is quiet, up to 512 under load), so each write trims it, with
    /// `XADD ... MAXLEN ~`, to `cap` divided by the number of events in that write,
    /// in entries. Redis trims whole nodes of 100 entries only, so the stream may keep
    /// up to 100 entries more. An event takes about 150 to 250 bytes: the default
    /// keeps a megabyte or two.
    #[must_use]
    pub fn with_event_stream_cap(mut self, cap: usize) -> Self {
        self.event_stream_cap = cap;
        self
    }

    /// The key names this broker uses.
    #[must_use]
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The lease a worker holds on job `id` of `queue` right now, if any: what its
    /// settling calls must present. For tools and tests that act for a worker.
    ///
    /// # Errors
    ///
    /// When Redis cannot be reached.
    pub async fn lease_of(&self, queue: &str, id: TaskId) -> Result<Option<Lease>> {
        let mut conn = self.conn().await?;
        let meta: Option<String> = redis::cmd("HGET")
            .arg(self.keys.queue(queue).meta())
            .arg(id.to_string())
            .query_async(&mut conn)
            .await
            .map_err(|e| self.err("reading a lease", e))?;
        let token = meta.and_then(|m| m.splitn(3, ':').nth(2).map(str::to_owned));
        Ok(token.filter(|t| !t.is_empty()).map(|token| Lease {
            id,
            queue: queue.to_owned(),
            fence: fence_of(&token),
            token,
        }))
    }

    async fn conn(&self) -> Result<Conn> {
        self.shared.get().await.map_err(|e| self.err("connecting", e))
    }

    fn err(&self, what: &str, e: redis::RedisError) -> Error {
        self.shared.failed(&e);
        let e = redis_error(&format!("{what} on redis at {}", self.url), e);
        if e.is_transient() {
            *self.healthy_since.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
        e
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        what: &str,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T> {
        let mut conn = self.conn().await?;
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

    /// Adds `jobs` in one script: all or none. A single job may carry an idempotency key.
    async fn enqueue_jobs(&self, jobs: Vec<Job>) -> Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        let mut queues: Vec<&str> = Vec::new();
        let mut invocation = self.scripts.enqueue.prepare_invoke();
        invocation.arg(jobs.len());
        for job in &jobs {
            let index = match queues.iter().position(|q| *q == job.queue) {
                Some(index) => index,
                None => {
                    let keys = self.keys.queue(&job.queue);
                    invocation
                        .key(keys.payloads())
                        .key(keys.meta())
                        .key(keys.delayed())
                        .key(keys.signal());
                    add_ready_keys(&mut invocation, &keys);
                    queues.push(&job.queue);
                    queues.len() - 1
                }
            };
            let due = job.eta.map_or(0, |eta| eta.timestamp_millis().max(1));
            invocation
                .arg(index)
                .arg(id_text(job.id))
                .arg(job.priority.min(dmq_core::MAX_PRIORITY))
                .arg(due)
                .arg(&job.payload);
        }
        // Only a lone job carries a key (`enqueue_batch` refuses keys).
        let idempotency = match jobs.as_slice() {
            [job] => job.idempotency.as_ref(),
            _ => None,
        };
        if let Some((key, ttl)) = idempotency {
            invocation.key(self.keys.queue(&jobs[0].queue).idempotency(key));
            invocation.arg(millis(*ttl).max(1));
        }
        let reply: Vec<String> = self.run("enqueueing", &invocation).await?;
        match reply.as_slice() {
            [ok] if ok == "ok" => Ok(()),
            [existing, id] if existing == "existing" => Err(Error::IdempotencyKeyTaken {
                key: idempotency.map(|(key, _)| key.clone()).unwrap_or_default(),
                queue: jobs[0].queue.clone(),
                existing: id.parse().unwrap_or_default(),
            }),
            [dup, id, index] if dup == "duplicate" => Err(Error::DuplicateJob {
                id: id.parse().unwrap_or_default(),
                queue: index
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| queues.get(i))
                    .map_or_else(String::new, |q| (*q).to_owned()),
            }),
            other => Err(Error::Backend {
                message: format!("unexpected reply from the enqueue script: {other:?}"),
                transient: false,
            }),
        }
    }

    /// Claims from one queue (a suspect job too, when `suspect` allows); returns the
    /// jobs and how long until the next change.
    ///
    /// The claim carries a fresh tag in its tokens, and comes back with its
    /// [`PendingClaim`]: until the caller settles it (once the jobs are handed to the
    /// worker), dropping it lists the claim among the lost ones, whose jobs the next
    /// claim gives back, rather than leave them in flight for a whole lease. So does a
    /// reply that never comes (the connection broke, or this future was dropped).
    async fn claim_queue(
        &self,
        worker: &str,
        queue: &str,
        (max, suspect): (usize, bool),
        lease: Duration,
    ) -> Result<(Vec<Delivery>, Option<Duration>, PendingClaim<'_>)> {
        let keys = self.keys.queue(queue);
        let tag = format!("{:x}", rand_u64());
        let mut invocation = self.scripts.claim.prepare_invoke();
        add_lease_keys(&mut invocation, &keys);
        invocation
            .arg(max)
            .arg(millis(lease).max(1))
            .arg(self.max_deliveries)
            .arg(self.dead_letter_cap)
            .arg(worker)
            .arg(&tag)
            .arg(u8::from(suspect));
        let pending = PendingClaim::new(
            &self.lost_claims,
            LostClaim { worker: worker.to_owned(), queue: queue.to_owned(), tag },
        );
        let reply: Vec<Value> = match self.run("claiming jobs", &invocation).await {
            Ok(reply) => reply,
            // Redis refused the script (a key of the wrong type, say): it changed nothing.
            Err(e) if !e.is_transient() => {
                pending.settled();
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let claim = parse_claim(queue, reply).ok_or_else(|| Error::Backend {
            message: "unexpected reply from the claim script".to_owned(),
            transient: false,
        })?;
        if !claim.rejected.is_empty() {
            self.drop_rejected(&keys, &claim.rejected).await?;
        }
        for (entry, why) in &claim.bad {
            tracing::error!(
                queue,
                entry = %String::from_utf8_lossy(entry),
                why,
                "dropped a bad entry from a ready list: it is no job of dmq's (another program \
                 or a bug wrote it); the jobs claimed beside it run as usual"
            );
        }
        Ok((claim.deliveries, claim.next_change, pending))
    }

    /// Takes back the leases of entries a claim handed out that are no job of dmq's,
    /// and counts them as bad entries.
    async fn drop_rejected(&self, keys: &QueueKeys, rejected: &[(String, String)]) -> Result<()> {
        let mut invocation = self.scripts.drop_bad.prepare_invoke();
        invocation
            .key(keys.payloads())
            .key(keys.meta())
            .key(keys.in_flight())
            .key(keys.bad_entries());
        invocation.arg(rejected.len());
        for (id, token) in rejected {
            // A copy's stale token holds nothing: it is only counted.
            invocation.arg(id).arg(token);
        }
        self.run::<i64>("dropping bad entries", &invocation).await.map(|_| ())
    }

    /// Gives back what the claims whose reply was lost took. Returns an error, with
    /// the claims still listed, when Redis cannot be reached yet.
    async fn recover_lost_claims(&self) -> Result<()> {
        let lost: Vec<LostClaim> =
            self.lost_claims.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for claim in lost {
            let keys = self.keys.queue(&claim.queue);
            let mut invocation = self.scripts.recover.prepare_invoke();
            invocation.key(keys.meta()).key(keys.in_flight()).key(keys.signal());
            add_ready_keys(&mut invocation, &keys);
            invocation.key(keys.suspect());
            invocation.arg(&claim.worker).arg(&claim.tag);
            let given: u64 =
                self.run("giving back a claim whose reply was lost", &invocation).await?;
            if given > 0 {
                tracing::warn!(
                    queue = %claim.queue,
                    jobs = given,
                    "gave back the jobs of a claim whose reply was lost (the connection broke); they are claimed again now"
                );
            }
            self.lost_claims.lock().unwrap_or_else(|p| p.into_inner()).retain(|c| *c != claim);
        }
        Ok(())
    }

    /// Looks for stranded jobs in `queues` and puts them back, at most once every
    /// [`DOCTOR_EVERY`]; part of a reap.
    async fn doctor_now_and_then(&self, queues: &[String]) {
        {
            let mut last = self.last_doctor.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|at| at.elapsed() < DOCTOR_EVERY) {
                return;
            }
            *last = Some(std::time::Instant::now());
        }
        match self.doctor(queues, true).await {
            Ok(checkups) => {
                for checkup in checkups.iter().filter(|c| !c.stranded.is_empty()) {
                    tracing::warn!(
                        queue = %checkup.queue,
                        jobs = checkup.stranded.len(),
                        ids = ?checkup.stranded,
                        "put back stranded jobs: their envelope was stored but they waited nowhere (a write cut off halfway)"
                    );
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "looking for stranded jobs failed; trying again at a later reap")
            }
        }
    }

    async fn blocking_connection(&self) -> Result<BlockingConnection> {
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
    async fn wait_for_signal(
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
    async fn run_blocking<T: redis::FromRedisValue>(
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
    async fn pass_on_signal(&self, queue: &str) {
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

    /// Runs the reap script on one queue; `dead` holds each dead worker's id and its
    /// heartbeat ttl in milliseconds.
    /// Returns how many jobs it moved, and the dead workers that still hold a job of
    /// this queue (claimed within their ttl), which must not be forgotten yet.
    async fn reap_queue(&self, queue: &str, dead: &[(String, u64)]) -> Result<(u64, Vec<String>)> {
        let keys = self.keys.queue(queue);
        let mut invocation = self.scripts.reap.prepare_invoke();
        add_lease_keys(&mut invocation, &keys);
        invocation.arg(self.max_deliveries).arg(self.dead_letter_cap);
        for (worker, ttl_ms) in dead {
            invocation.arg(worker).arg(ttl_ms);
        }
        let reply: Vec<Value> = self.run("reaping a queue", &invocation).await?;
        let mut items = reply.into_iter();
        let Some(Value::Int(moved)) = items.next() else {
            return Err(Error::Backend {
                message: "unexpected reply from the reap script".to_owned(),
                transient: false,
            });
        };
        let holding = items
            .filter_map(|v| match v {
                Value::BulkString(id) => String::from_utf8(id).ok(),
                _ => None,
            })
            .collect();
        Ok((u64::try_from(moved).unwrap_or(0), holding))
    }

    fn registry_invocation<'a>(&self, script: &'a redis::Script) -> ScriptInvocation<'a> {
        let mut invocation = script.prepare_invoke();
        invocation.key(self.keys.workers()).key(self.keys.workers_info());
        invocation
    }

    /// The KEYS of `reap_begin` and `reap_end`: the lock, then the registry's.
    fn reaper_invocation<'a>(&self, script: &'a redis::Script) -> ScriptInvocation<'a> {
        let mut invocation = script.prepare_invoke();
        invocation
            .key(self.keys.reaper_lock())
            .key(self.keys.workers())
            .key(self.keys.workers_info());
        invocation
    }
}

/// A connection of its own for blocking waits, and its Redis client id (for
/// `CLIENT UNBLOCK`).
struct BlockingConnection {
    conn: MultiplexedConnection,
    client_id: i64,
}

/// A job to acknowledge, and for how long to remember its completion (zero: not at
/// all, a plain acknowledgement).
type Settled = (Lease, u64);

/// An optional instant as Unix milliseconds, 0 for none.
fn unix_ms(at: Option<DateTime<Utc>>) -> i64 {
    at.map_or(0, |t| t.timestamp_millis().max(1))
}

/// Unix milliseconds as an instant, none for 0.
fn instant(ms: i64) -> Option<DateTime<Utc>> {
    if ms > 0 { DateTime::from_timestamp_millis(ms) } else { None }
}

/// The most acknowledgements sent in one batch.
const MAX_ACK_BATCH: usize = 512;

/// The task that sends acknowledgements in batches: one ack script per queue per
/// batch, the queues' scripts sent together.
fn ack_writer(
    shared: Arc<Shared>,
    keys: Keys,
    scripts: Arc<Scripts>,
    url: String,
) -> Batcher<Settled> {
    Batcher::new(MAX_ACK_BATCH, move |leases: Vec<Settled>| {
        let shared = Arc::clone(&shared);
        let keys = keys.clone();
        let scripts = Arc::clone(&scripts);
        let url = url.clone();
        async move {
            let failed = |e: redis::RedisError| {
                shared.failed(&e);
                redis_error(&format!("acknowledging jobs on redis at {url}"), e)
            };
            let conn = match shared.get().await {
                Ok(conn) => conn,
                Err(e) => {
                    let e = failed(e);
                    return leases.iter().map(|_| Err(copy_error(&e))).collect();
                }
            };
            let mut queues: Vec<&str> = Vec::new();
            for (lease, _) in &leases {
                if !queues.contains(&lease.queue.as_str()) {
                    queues.push(&lease.queue);
                }
            }
            let acks = queues.iter().map(|queue| {
                let mut conn = conn.clone();
                let q = keys.queue(queue);
                let mut invocation = scripts.ack.prepare_invoke();
                invocation.key(q.payloads()).key(q.meta()).key(q.in_flight()).key(q.completed());
                for (lease, remember_ms) in leases.iter().filter(|(l, _)| l.queue == *queue) {
                    invocation.arg(id_text(lease.id)).arg(&lease.token).arg(*remember_ms);
                }
                async move { invocation.invoke_async::<Vec<u8>>(&mut conn).await }
            });
            let replies = futures::future::join_all(acks).await;
            let mut results: Vec<Option<Result<()>>> = leases.iter().map(|_| None).collect();
            for (queue, reply) in queues.iter().zip(replies) {
                let positions =
                    leases.iter().map(|(l, _)| l).enumerate().filter(|(_, l)| l.queue == *queue);
                match reply {
                    Ok(acked) => {
                        for (n, (i, lease)) in positions.enumerate() {
                            results[i] = Some(match acked.get(n) {
                                Some(b'1') => Ok(()),
                                _ => Err(Error::LeaseLost { id: lease.id }),
                            });
                        }
                    }
                    Err(e) => {
                        let e = failed(e);
                        for (i, _) in positions {
                            results[i] = Some(Err(copy_error(&e)));
                        }
                    }
                }
            }
            results
                .into_iter()
                .map(|r| {
                    r.unwrap_or_else(|| {
                        Err(Error::Backend {
                            message: "an acknowledgement was left out of its batch".to_owned(),
                            transient: false,
                        })
                    })
                })
                .collect()
        }
    })
}

/// The KEYS of the claim and reap scripts.
fn add_lease_keys(invocation: &mut ScriptInvocation<'_>, keys: &QueueKeys) {
    invocation.key(keys.payloads()).key(keys.meta()).key(keys.delayed()).key(keys.in_flight());
    add_ready_keys(invocation, keys);
    invocation.key(keys.dead()).key(keys.dead_payloads()).key(keys.dead_dropped());
    invocation.key(keys.signal()).key(keys.suspect()).key(keys.bad_entries());
}

fn add_ready_keys(invocation: &mut ScriptInvocation<'_>, keys: &QueueKeys) {
    for priority in 0..=9 {
        invocation.key(keys.ready(priority));
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A worker's description as the registry keeps it.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredWorker {
    hostname: String,
    pid: u32,
    queues: Vec<String>,
    concurrency: usize,
    started_at_ms: i64,
    /// The heartbeat ttl the worker registered with.
    #[serde(default)]
    ttl_ms: u64,
    /// How many jobs the worker was running at this heartbeat (absent in older
    /// encodings: zero).
    #[serde(default)]
    running: u32,
}

fn encode_worker(info: &WorkerInfo, ttl: Duration) -> Result<Vec<u8>> {
    let stored = StoredWorker {
        ttl_ms: millis(ttl),
        hostname: info.hostname.clone(),
        pid: info.pid,
        queues: info.queues.clone(),
        concurrency: info.concurrency,
        started_at_ms: info.started_at.timestamp_millis(),
        running: info.running,
    };
    rmp_serde::to_vec_named(&stored)
        .map_err(|e| Error::Encode { what: "a worker description", reason: e.to_string() })
}

/// The heartbeat ttl stored for a worker (zero when it does not decode).
fn worker_ttl(bytes: &[u8]) -> Duration {
    rmp_serde::from_slice::<StoredWorker>(bytes)
        .map_or(Duration::ZERO, |stored| Duration::from_millis(stored.ttl_ms))
}

/// The description stored for worker `id`; `None` when it does not decode.
fn decode_worker(id: &str, bytes: &[u8]) -> Option<WorkerInfo> {
    let stored: StoredWorker = rmp_serde::from_slice(bytes).ok()?;
    Some(
        WorkerInfo::new(
            id,
            stored.hostname,
            stored.pid,
            stored.queues,
            stored.concurrency,
            DateTime::from_timestamp_millis(stored.started_at_ms).unwrap_or_default(),
        )
        .with_running(stored.running),
    )
}

/// A dead letter from its list entry `<Unix ms>|<id>|<reason>` and its payload.
fn parse_dead_entry(queue: &str, entry: &str, payload: Vec<u8>) -> Option<DeadLetter> {
    let mut parts = entry.splitn(3, '|');
    let (at, id, reason) = (parts.next()?, parts.next()?, parts.next()?);
    let id = id.parse::<TaskId>().ok()?;
    let at = at.parse().ok().and_then(DateTime::from_timestamp_millis).unwrap_or_default();
    Some(DeadLetter::new(id, queue, payload, reason, at))
}

/// What one run of the claim script returned.
struct ClaimReply {
    deliveries: Vec<Delivery>,
    /// How long until a delayed job falls due or a lease expires, when none was
    /// claimed.
    next_change: Option<Duration>,
    /// The bad entries it dropped, and why.
    bad: Vec<(Vec<u8>, String)>,
    /// Entries it leased that are no task id as dmq writes them (another character
    /// than a lowercase hex digit), with their tokens, and copies of a job within the
    /// claim (stale tokens): to drop with `drop_bad.lua`.
    rejected: Vec<(String, String)>,
}

fn parse_claim(queue: &str, reply: Vec<Value>) -> Option<ClaimReply> {
    let mut items = reply.into_iter();
    let next_change = match items.next()? {
        Value::Int(ms) if ms >= 0 => Some(Duration::from_millis(ms.unsigned_abs())),
        Value::Int(_) => None,
        _ => return None,
    };
    let mut bad = Vec::new();
    match items.next()? {
        Value::Array(entries) => {
            let mut entries = entries.into_iter();
            while let (Some(Value::BulkString(entry)), Some(Value::BulkString(why))) =
                (entries.next(), entries.next())
            {
                bad.push((entry, String::from_utf8_lossy(&why).into_owned()));
            }
        }
        Value::Nil => {}
        _ => return None,
    }
    // Said once for the claim: only a claim of one suspect job has it set.
    let Value::Int(isolated) = items.next()? else { return None };
    let mut deliveries: Vec<Delivery> = Vec::with_capacity(items.len() / 4);
    let mut rejected = Vec::new();
    let mut seen: std::collections::HashMap<TaskId, usize, IdHash> =
        std::collections::HashMap::with_capacity_and_hasher(items.len() / 4, IdHash::default());
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
        // Made of digits, the claim's hex tag and the worker's id (a Rust string):
        // UTF-8, taken over without a copy.
        let token = String::from_utf8(token)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        // Only the form dmq writes: any other (upper case, say) names keys that no
        // later write of this job would find.
        let Some(id) = canonical_task_id(&id) else {
            let raw = String::from_utf8_lossy(&id).into_owned();
            bad.push((id, "not a task id".to_owned()));
            rejected.push((raw, token));
            continue;
        };
        let lease = Lease { id, queue: queue.to_owned(), fence: fence_of(&token), token };
        let delivery = Delivery::new(lease, payload, u32::try_from(count).unwrap_or(u32::MAX));
        let delivery = if isolated == 1 { delivery.to_run_alone() } else { delivery };
        // A copy within the claim: the last one's lease is the one kept.
        if let Some(&at) = seen.get(&id) {
            let stale = std::mem::replace(&mut deliveries[at], delivery);
            bad.push((id.to_string().into_bytes(), "a copy of a job already claimed".to_owned()));
            rejected.push((stale.lease.id.to_string(), stale.lease.token));
            continue;
        }
        seen.insert(id, deliveries.len());
        deliveries.push(delivery);
    }
    Some(ClaimReply { deliveries, next_change, bad, rejected })
}

/// Hashes a [`TaskId`] by folding its 128 bits and one multiply (which spreads
/// them over the high bits the map also uses): the map it is for holds one claim's
/// jobs, a few hundred at most, so neither SipHash's cost nor its defence against
/// chosen keys is worth paying per job.
type IdHash = std::hash::BuildHasherDefault<IdHasher>;

#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }

    #[allow(clippy::cast_possible_truncation)]
    fn write_u128(&mut self, n: u128) {
        self.0 = ((n as u64) ^ ((n >> 64) as u64)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// The task id `bytes` spell in the one form dmq writes in Redis, lowercase and
/// hyphenated; `None` for any other bytes.
fn canonical_task_id(bytes: &[u8]) -> Option<TaskId> {
    let hyphen = |i: usize| matches!(i, 8 | 13 | 18 | 23);
    let canonical = bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, &b)| {
            if hyphen(i) { b == b'-' } else { b.is_ascii_digit() || (b'a'..=b'f').contains(&b) }
        });
    if !canonical {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// The fence of a lease token `<seq>.<n>.<claimed at, Unix ms>.<tag>@<worker>`: the
/// claim's time on Redis's clock, in milliseconds, times [`FENCE_STRIDE`], plus the
/// job's place in its claim. It grows with every claim of a job, whatever queue it is
/// in: a lease is lost only after it expired or its worker's heartbeat lapsed, both
/// many milliseconds after the claim. (A job released, or given back from a lost
/// claim, may be claimed again within the same millisecond, with a fence no greater;
/// but such a run never stores a result.) Below 2^53 for the next 200,000 years.
/// 0 for a token that does not parse.
fn fence_of(token: &str) -> u64 {
    let mut parts = token.splitn(4, '.');
    let _seq = parts.next();
    let n = parts.next().and_then(|p| p.parse::<u64>().ok());
    let at = parts.next().and_then(|p| p.parse::<u64>().ok());
    match (n, at) {
        (Some(n), Some(at)) => at.saturating_mul(FENCE_STRIDE).saturating_add(n % FENCE_STRIDE),
        _ => 0,
    }
}

/// A random number, for claim tags.
fn rand_u64() -> u64 {
    #[allow(clippy::cast_possible_truncation)]
    let bits = uuid::Uuid::new_v4().as_u128() as u64;
    bits
}

/// A claim on its way: unless its reply is read ([`settled`]), dropping it (the
/// reply failed, or the claim's future was dropped) lists the claim among the lost
/// ones, whose jobs the next claim gives back.
///
/// [`settled`]: PendingClaim::settled
struct PendingClaim<'a> {
    lost: &'a Mutex<Vec<LostClaim>>,
    claim: Option<LostClaim>,
}

impl<'a> PendingClaim<'a> {
    fn new(lost: &'a Mutex<Vec<LostClaim>>, claim: LostClaim) -> Self {
        PendingClaim { lost, claim: Some(claim) }
    }

    /// The reply came: nothing to give back.
    fn settled(mut self) {
        self.claim = None;
    }
}

impl Drop for PendingClaim<'_> {
    fn drop(&mut self) {
        if let Some(claim) = self.claim.take() {
            self.lost.lock().unwrap_or_else(|p| p.into_inner()).push(claim);
        }
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn enqueue(&self, job: Job) -> Result<()> {
        self.enqueue_jobs(vec![job]).await
    }

    /// One script adds the whole batch, across all its queues, so it is atomic on one
    /// Redis. (On Redis Cluster a script may touch one slot only: batch per queue.)
    async fn enqueue_batch(&self, jobs: Vec<Job>) -> Result<()> {
        dmq_core::refuse_keys_in_batches(&jobs)?;
        self.enqueue_jobs(jobs).await
    }

    async fn claim(
        &self,
        worker: &str,
        queues: &[String],
        max: usize,
        lease: Duration,
        wait: Duration,
    ) -> Result<Vec<Delivery>> {
        if max == 0 || queues.is_empty() {
            return Ok(Vec::new());
        }
        let max = max.min(MAX_CLAIM);
        if !self.lost_claims.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
            self.recover_lost_claims().await?;
        }
        let give_up = Instant::now()
            .checked_add(wait)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365));
        // The queue whose wake-up the last wait took: if this claim does not get to
        // that queue, the wake-up is passed on to another idle claimer.
        let mut woken: Option<String> = None;
        loop {
            let mut claimed = Vec::new();
            // Settled once `claimed` is handed out; dropped before, they give it back.
            let mut pending = Vec::new();
            let mut next_change: Option<Duration> = None;
            let mut failure = None;
            for queue in queues {
                if claimed.len() >= max {
                    break;
                }
                // A queue with a suspect job hands out that job alone. Offered even to
                // a claim that has jobs of earlier queues already, so that a suspect
                // in a later queue is not kept waiting by busy earlier ones: the
                // worker hands it back, lets its jobs end, and comes for it alone.
                let limits = (max - claimed.len(), true);
                match self.claim_queue(worker, queue, limits, lease).await {
                    Ok((mut got, change, claim)) => {
                        pending.push(claim);
                        let alone = got.iter().any(|d| d.isolated);
                        if woken.as_deref() == Some(queue.as_str()) {
                            woken = None;
                        }
                        claimed.append(&mut got);
                        next_change = match (next_change, change) {
                            (Some(a), Some(b)) => Some(a.min(b)),
                            (a, b) => a.or(b),
                        };
                        if alone {
                            break;
                        }
                    }
                    // One broken queue (a key of the wrong type, say) holds up no other:
                    // the next queues are claimed from as usual.
                    Err(e) => {
                        tracing::warn!(error = %e, queue, "claiming from one queue failed");
                        failure = Some(e);
                    }
                }
            }
            if let Some(queue) = woken.take() {
                self.pass_on_signal(&queue).await;
            }
            // Jobs leased are handed out even when another queue failed; the error
            // shows again at the next claim that finds nothing.
            if !claimed.is_empty() {
                pending.into_iter().for_each(PendingClaim::settled);
                return Ok(claimed);
            }
            pending.into_iter().for_each(PendingClaim::settled);
            if let Some(e) = failure {
                return Err(e);
            }
            let now = Instant::now();
            if now >= give_up {
                return Ok(Vec::new());
            }
            let mut block = give_up - now;
            if let Some(change) = next_change {
                block = block.min(change.max(Duration::from_millis(1)));
            }
            woken = self.wait_for_signal(queues, block).await?;
        }
    }

    /// Acknowledgements made while an earlier batch is on its way go together in the
    /// next one: one script per queue per round trip.
    async fn ack(&self, lease: &Lease) -> Result<()> {
        self.acks.submit((lease.clone(), 0)).await
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
        invocation.key(keys.suspect());
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

    /// Goes with the acknowledgements (see [`ack`](Broker::ack)): the ack script
    /// records the completion of each job that asks for it.
    async fn complete(&self, lease: &Lease, remember: Duration) -> Result<()> {
        self.acks.submit((lease.clone(), millis(remember).max(1))).await
    }

    /// One `ZSCORE`, compared with this machine's clock: a skew between it and Redis's
    /// moves the end of a completion's day-long memory by that skew, which matters to
    /// nothing.
    async fn is_complete(&self, queue: &str, id: TaskId) -> Result<bool> {
        let mut conn = self.conn().await?;
        let forgotten_at: Option<f64> = redis::cmd("ZSCORE")
            .arg(self.keys.queue(queue).completed())
            .arg(id.to_string())
            .query_async(&mut conn)
            .await
            .map_err(|e| self.err("reading a job's completion", e))?;
        #[allow(clippy::cast_precision_loss)]
        let now_ms = Utc::now().timestamp_millis() as f64;
        Ok(forgotten_at.is_some_and(|at| at > now_ms))
    }

    async fn schedule_begin(
        &self,
        name: &str,
        next: Option<DateTime<Utc>>,
    ) -> Result<ScheduleState> {
        let mut invocation = self.scripts.schedule_begin.prepare_invoke();
        invocation.key(self.keys.schedules()).arg(name).arg(unix_ms(next));
        let (since, last, next): (i64, i64, i64) =
            self.run("registering a schedule", &invocation).await?;
        Ok(ScheduleState::new(
            name,
            DateTime::from_timestamp_millis(since).unwrap_or_default(),
            instant(last),
            instant(next),
        ))
    }

    async fn schedule_fire(
        &self,
        name: &str,
        fire: DateTime<Utc>,
        next: Option<DateTime<Utc>>,
    ) -> Result<bool> {
        let mut invocation = self.scripts.schedule_fire.prepare_invoke();
        invocation.key(self.keys.schedules()).arg(name).arg(fire.timestamp_millis().max(1));
        invocation.arg(unix_ms(next));
        let claimed: i64 = self.run("claiming a schedule's fire time", &invocation).await?;
        Ok(claimed == 1)
    }

    async fn schedules(&self) -> Result<Vec<ScheduleState>> {
        let mut conn = self.conn().await?;
        let all: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(self.keys.schedules())
            .query_async(&mut conn)
            .await
            .map_err(|e| self.err("listing schedules", e))?;
        let mut states: Vec<ScheduleState> = all
            .into_iter()
            .filter_map(|(name, state)| {
                let mut parts = state.splitn(3, ':').map(|p| p.parse::<i64>().ok());
                let (since, last, next) = (parts.next()??, parts.next()??, parts.next()??);
                let since = DateTime::from_timestamp_millis(since)?;
                Some(ScheduleState::new(name, since, instant(last), instant(next)))
            })
            .collect();
        states.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(states)
    }

    async fn renew(&self, lease: &Lease, lease_for: Duration) -> Result<()> {
        let keys = self.keys.queue(&lease.queue);
        let mut invocation = self.scripts.renew.prepare_invoke();
        invocation.key(keys.meta()).key(keys.in_flight());
        invocation.arg(lease.id.to_string()).arg(&lease.token).arg(millis(lease_for).max(1));
        self.settle("renewing a lease", lease, &invocation).await
    }

    async fn heartbeat(&self, worker: &WorkerInfo, ttl: Duration) -> Result<()> {
        let mut invocation = self.registry_invocation(&self.scripts.heartbeat);
        invocation.arg(&worker.id).arg(millis(ttl).max(1)).arg(encode_worker(worker, ttl)?);
        self.run::<i64>("recording a heartbeat", &invocation).await?;
        self.healthy_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(std::time::Instant::now);
        Ok(())
    }

    /// Gives back first what this worker's claims whose reply was lost took (a claim
    /// cut off by the stop, say), so that it does not wait out its lease.
    async fn deregister(&self, worker: &str) -> Result<()> {
        let lost = self
            .lost_claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|c| c.worker == worker);
        if lost {
            if let Err(e) = self.recover_lost_claims().await {
                tracing::warn!(error = %e, "could not give back the jobs of a claim whose reply was lost; they return when their lease expires");
            }
        }
        let mut invocation = self.registry_invocation(&self.scripts.deregister);
        invocation.arg(worker);
        self.run::<i64>("deregistering a worker", &invocation).await.map(|_| ())
    }

    async fn workers(&self) -> Result<Vec<WorkerStatus>> {
        let invocation = self.registry_invocation(&self.scripts.workers);
        let reply: Vec<(String, i64, Vec<u8>)> = self.run("listing workers", &invocation).await?;
        Ok(reply
            .into_iter()
            .filter_map(|(id, until, info)| {
                let until = DateTime::from_timestamp_millis(until)?;
                Some(WorkerStatus::new(decode_worker(&id, &info)?, until))
            })
            .collect())
    }

    async fn reap(&self, queues: &[String]) -> Result<u64> {
        let mut begin = self.reaper_invocation(&self.scripts.reap_begin);
        begin.arg(&self.reaper_id).arg(millis(REAPER_LOCK));
        let Some(lapsed) =
            self.run::<Option<Vec<(String, Vec<u8>)>>>("starting a reap", &begin).await?
        else {
            return Ok(0);
        };
        let healthy_for = self
            .healthy_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map_or(Duration::ZERO, |since| since.elapsed());
        let mut all_queues: Vec<String> = queues.to_vec();
        let mut dead = Vec::with_capacity(lapsed.len());
        for (id, info) in &lapsed {
            // Until this broker has been reachable for the worker's whole ttl, a lapse
            // may be the outage's doing, not the worker's.
            let ttl = worker_ttl(info);
            if ttl > healthy_for {
                continue;
            }
            if let Some(info) = decode_worker(id, info) {
                for queue in info.queues {
                    if !all_queues.contains(&queue) {
                        all_queues.push(queue);
                    }
                }
            }
            dead.push((id.clone(), millis(ttl)));
        }
        let mut moved = 0;
        let mut failed = None;
        // Lapsed workers that still hold a fresh claim: they may be alive, and if they
        // are not, a later reap takes the job back, so they stay registered.
        let mut holding = Vec::new();
        for queue in &all_queues {
            match self.reap_queue(queue, &dead).await {
                Ok((n, mut still)) => {
                    moved += n;
                    holding.append(&mut still);
                }
                Err(e) => failed = Some(e),
            }
        }
        dead.retain(|(id, _)| !holding.contains(id));
        let mut end = self.reaper_invocation(&self.scripts.reap_end);
        end.arg(&self.reaper_id);
        // A dead worker is forgotten only once all of its queues were reaped.
        if failed.is_none() {
            for (id, _) in &dead {
                end.arg(id);
            }
        }
        self.run::<i64>("ending a reap", &end).await?;
        if failed.is_none() {
            self.doctor_now_and_then(&all_queues).await;
        }
        if !dead.is_empty() && failed.is_none() {
            let workers: Vec<&str> = dead.iter().map(|(id, _)| id.as_str()).collect();
            tracing::warn!(
                ?workers,
                moved,
                "took back the jobs of workers that stopped heartbeating"
            );
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(moved),
        }
    }

    async fn take_dead_letter(&self, queue: &str, id: TaskId) -> Result<Option<DeadLetter>> {
        let keys = self.keys.queue(queue);
        let mut invocation = self.scripts.take_dead.prepare_invoke();
        invocation.key(keys.dead()).key(keys.dead_payloads()).arg(id.to_string());
        let taken: Option<(String, Vec<u8>)> =
            self.run("taking a dead letter", &invocation).await?;
        Ok(taken.and_then(|(entry, payload)| parse_dead_entry(queue, &entry, payload)))
    }

    async fn purge_dead_letters(&self, queue: &str) -> Result<u64> {
        let keys = self.keys.queue(queue);
        let mut invocation = self.scripts.purge_dead.prepare_invoke();
        invocation.key(keys.dead()).key(keys.dead_payloads());
        self.run("purging dead letters", &invocation).await
    }

    async fn purge(&self, queue: &str) -> Result<u64> {
        let keys = self.keys.queue(queue);
        let mut invocation = self.scripts.purge.prepare_invoke();
        invocation.key(keys.payloads()).key(keys.meta()).key(keys.delayed());
        add_ready_keys(&mut invocation, &keys);
        invocation.key(keys.suspect());
        self.run("purging a queue", &invocation).await
    }

    /// One `XADD ... MAXLEN ~` of the whole batch: see
    /// [`with_event_stream_cap`](RedisBroker::with_event_stream_cap).
    fn shares_events(&self) -> bool {
        true
    }

    async fn publish_events(&self, events: &[Arc<Event>]) -> Result<()> {
        self.append_events(events).await
    }

    /// `XREAD`, blocking on a connection of its own as a claim's wait does; the
    /// cursor's entry is a stream id.
    async fn read_events(
        &self,
        from: &EventsFrom,
        max: usize,
        wait: Duration,
    ) -> Result<EventPage> {
        self.read_event_stream(from, max, wait).await
    }

    async fn ping(&self) -> Result<()> {
        let mut conn = self.conn().await?;
        let _: String =
            redis::cmd("PING").query_async(&mut conn).await.map_err(|e| self.err("pinging", e))?;
        Ok(())
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
            .get(keys.dead_dropped())
            .llen(keys.suspect())
            .get(keys.bad_entries());
        let mut conn = self.conn().await?;
        // Read as plain values: a counter another program overwrote with text counts 0
        // here rather than failing the read.
        let counts: Vec<Value> =
            pipe.query_async(&mut conn).await.map_err(|e| self.err("reading queue sizes", e))?;
        let at = |i: usize| match counts.get(i) {
            Some(Value::Int(n)) => u64::try_from(*n).unwrap_or(0),
            Some(Value::BulkString(text)) => {
                std::str::from_utf8(text).ok().and_then(|t| t.parse().ok()).unwrap_or(0)
            }
            _ => 0,
        };
        let mut stats = QueueStats::default();
        stats.suspect = at(14);
        stats.ready = (0..10).map(at).sum::<u64>() + stats.suspect;
        stats.delayed = at(10);
        stats.in_flight = at(11);
        stats.dead = at(12);
        stats.dead_dropped = at(13);
        stats.bad_entries = at(15);
        Ok(stats)
    }

    /// One script per queue: a few counts, and only when they do not add up a pass
    /// over the queue's lists and sets (see docs/redis-layout.md).
    async fn doctor(&self, queues: &[String], fix: bool) -> Result<Vec<QueueCheckup>> {
        let mut checkups = Vec::with_capacity(queues.len());
        for queue in queues {
            let keys = self.keys.queue(queue);
            let mut invocation = self.scripts.doctor.prepare_invoke();
            add_lease_keys(&mut invocation, &keys);
            invocation.arg(u8::from(fix));
            let reply: Vec<Value> = self.run("looking for stranded jobs", &invocation).await?;
            let mut items = reply.into_iter();
            let mut count = || match items.next() {
                Some(Value::Int(n)) => Ok(u64::try_from(n).unwrap_or(0)),
                _ => Err(Error::Backend {
                    message: "unexpected reply from the doctor script".to_owned(),
                    transient: false,
                }),
            };
            let (_stored, _placed, suspect, bad_entries) = (count()?, count()?, count()?, count()?);
            let stranded: Vec<String> = items
                .filter_map(|v| match v {
                    Value::BulkString(id) => Some(String::from_utf8_lossy(&id).into_owned()),
                    _ => None,
                })
                .collect();
            let mut checkup = QueueCheckup::healthy(queue.clone());
            checkup.fixed = fix && !stranded.is_empty();
            checkup.stranded = stranded;
            checkup.suspect = suspect;
            checkup.bad_entries = bad_entries;
            checkups.push(checkup);
        }
        Ok(checkups)
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
        let mut conn = self.conn().await?;
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
            let Some((at, id)) = entry.split('|').next().zip(entry.split('|').nth(1)) else {
                continue;
            };
            let payload: Option<Vec<u8>> = redis::cmd("HGET")
                .arg(keys.dead_payloads())
                .arg(format!("{at}|{id}"))
                .query_async(&mut conn)
                .await
                .map_err(|e| self.err("reading a dead letter", e))?;
            letters.extend(parse_dead_entry(queue, &entry, payload.unwrap_or_default()));
        }
        Ok(letters)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker description as encoded before it carried `running`.
    #[derive(serde::Serialize)]
    struct OldStoredWorker {
        hostname: String,
        pid: u32,
        queues: Vec<String>,
        concurrency: usize,
        started_at_ms: i64,
        ttl_ms: u64,
    }

    #[test]
    fn an_old_worker_encoding_decodes_with_no_running_jobs() {
        let old = OldStoredWorker {
            hostname: "box".to_owned(),
            pid: 7,
            queues: vec!["q".to_owned()],
            concurrency: 4,
            started_at_ms: 1_700_000_000_000,
            ttl_ms: 30_000,
        };
        let bytes = rmp_serde::to_vec_named(&old).expect("encode");
        let info = decode_worker("w", &bytes).expect("an old encoding still decodes");
        assert_eq!((info.hostname.as_str(), info.concurrency, info.running), ("box", 4, 0));
        assert_eq!(worker_ttl(&bytes), Duration::from_millis(30_000));
    }

    #[test]
    fn a_fence_grows_with_the_claims_time_and_the_jobs_place_in_it() {
        let at = |ms: u64, n: u64| fence_of(&format!("7.{n}.{ms}.ab12@host-1-x"));
        assert_eq!(at(1_700_000_000_000, 3), 1_700_000_000_000 * FENCE_STRIDE + 3);
        assert!(at(1_700_000_000_001, 1) > at(1_700_000_000_000, 1000));
        assert!(at(1_700_000_000_000, 2) > at(1_700_000_000_000, 1));
        assert!(at(1_700_000_000_000, 1000) < 1 << 53);
        assert_eq!(fence_of("not a token"), 0);
    }

    #[test]
    fn only_the_lowercase_hyphenated_form_is_a_task_id_here() {
        let id = TaskId::new();
        assert_eq!(canonical_task_id(id.to_string().as_bytes()), Some(id));
        for other in [
            id.to_string().to_uppercase(),
            id.to_string().replace('-', ""),
            format!("{{{id}}}"),
            "not-a-task-id".to_owned(),
            "0b5c6f2e-3f3c-4d7e-9a57-6f1f2f0c9a1g".to_owned(),
        ] {
            assert_eq!(canonical_task_id(other.as_bytes()), None, "{other}");
        }
    }

    #[test]
    fn running_round_trips_through_the_encoding() {
        let info =
            WorkerInfo::new("w", "box", 7, vec!["q".to_owned()], 4, Utc::now()).with_running(3);
        let bytes = encode_worker(&info, Duration::from_secs(30)).expect("encode");
        assert_eq!(decode_worker("w", &bytes).expect("decode").running, 3);
    }
}
