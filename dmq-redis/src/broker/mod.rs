//! `RedisBroker`: jobs in Redis lists and sorted sets, every state change one Lua script.
//!
//! The job lifecycle is here; the rest is split by operation: `claim.rs` (the claim
//! reply, lost claims), `wait.rs` (blocking waits), `ack.rs` (the batched ack writer),
//! `workers.rs` (the worker registry and reaper), `schedules.rs`, `events.rs` (the
//! event stream) and `admin.rs`.

mod ack;
mod admin;
mod claim;
mod events;
mod quotas;
mod schedules;
mod wait;
mod workers;

use std::fmt;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use dmq_core::{
    Broker, BrokerAdmin, Delivery, Error, EventStream, HeldBack, Job, Lease, Result, ScheduleStore,
    TaskId, WorkerRegistry,
};
use redis::ScriptInvocation;
use tokio::time::Instant;

use crate::batch::Batcher;
use crate::conn::{self, Conn, Shared, Source};
use crate::error::redis_error;
use crate::keys::{DEFAULT_NAMESPACE, Keys, QueueKeys, cluster_slot, id_text};
use crate::redis_url::RedisUrl;
use crate::scripts::Scripts;

use self::ack::*;
use self::claim::*;
use self::wait::*;

/// The default cap on each queue's dead-letter list.
pub const DEFAULT_DEAD_LETTER_CAP: usize = 10_000;

pub use dmq_core::DEFAULT_MAX_DELIVERIES;

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
    blocking: Spares,
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
    /// How many replicas must confirm an enqueue, and how long to wait for them
    /// (`WAIT`); `None` for no wait.
    replicated_enqueue: Option<(u32, Duration)>,
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
    /// The queues this broker has written to the queue registry lately, so that it
    /// writes each again only after [`REGISTRY_REFRESH`].
    registered: Mutex<admin::Registered>,
    /// Whether any enqueue quota is set, as last read.
    quotas_seen: dmq_core::QuotasSeen,
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
        let source = Source::of(&url)
            .await
            .map_err(|e| redis_error(&format!("connecting to redis at {shown}"), e))?;
        Self::from_source(source, shown, namespace).await
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
            blocking: Spares::default(),
            acks,
            reaper_id: uuid::Uuid::new_v4().to_string(),
            healthy_since: Mutex::new(None),
            dead_letter_cap: DEFAULT_DEAD_LETTER_CAP,
            max_deliveries: DEFAULT_MAX_DELIVERIES,
            replicated_enqueue: None,
            event_stream_cap: dmq_core::DEFAULT_EVENT_STREAM_CAP,
            events_per_entry: AtomicUsize::new(events::FIRST_GUESS_PER_ENTRY),
            lost_claims: Mutex::new(Vec::new()),
            last_doctor: Mutex::new(None),
            registered: Mutex::new(admin::Registered::default()),
            quotas_seen: dmq_core::QuotasSeen::default(),
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

    /// Makes every enqueue wait until `replicas` replicas of its master hold the job
    /// (Redis `WAIT`), for at most `timeout`, so that an enqueue that returned `Ok`
    /// survives a failover: Redis replicates asynchronously, and a master that dies
    /// takes with it what its replicas had not received yet.
    ///
    /// Off by default. When fewer replicas confirm within `timeout`, the enqueue fails
    /// with a transient [`Error::Backend`] that says so: the job is on the master and
    /// will most likely run, but could be lost to a failover right then. The wait costs
    /// one more round trip per enqueue, and a replication round trip (see the README's
    /// Redis Cluster section for the figures).
    #[must_use]
    pub fn with_replicated_enqueue(mut self, replicas: u32, timeout: Duration) -> Self {
        self.replicated_enqueue = (replicas > 0).then_some((replicas, timeout));
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

    /// Adds `jobs` in one script: all or none. A single job may carry an idempotency
    /// key. On a cluster, a batch over queues of several slots is one script per slot,
    /// run together: each queue's part all or none.
    async fn enqueue_jobs(&self, jobs: Vec<Job>) -> Result<()> {
        if self.source.is_cluster() {
            let parts = self.by_slot(jobs, |job| job.queue.as_str());
            let added =
                futures::future::join_all(parts.into_iter().map(|part| self.enqueue_part(part)))
                    .await;
            return added.into_iter().collect();
        }
        self.enqueue_part(jobs).await
    }

    /// `items` in groups whose queues (`queue_of` each) share a cluster slot, in the
    /// order each slot first comes, since a script on a cluster touches one slot; one
    /// group on one Redis, where a script may touch any key.
    fn by_slot<T>(&self, items: Vec<T>, queue_of: impl Fn(&T) -> &str) -> Vec<Vec<T>> {
        if !self.source.is_cluster() {
            return vec![items];
        }
        let mut parts: Vec<(u16, Vec<T>)> = Vec::new();
        for item in items {
            let slot = cluster_slot(self.keys.queue(queue_of(&item)).signal().as_bytes());
            match parts.iter_mut().find(|(s, _)| *s == slot) {
                Some((_, part)) => part.push(item),
                None => parts.push((slot, vec![item])),
            }
        }
        parts.into_iter().map(|(_, part)| part).collect()
    }

    /// Adds `jobs` in one script: all or none.
    async fn enqueue_part(&self, jobs: Vec<Job>) -> Result<()> {
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
                    invocation.key(keys.gates()).key(keys.gated());
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
        let gated = jobs.iter().filter(|job| job.gate.is_some()).count();
        invocation.arg(gated);
        for (index, job) in jobs.iter().enumerate() {
            if let Some(gate) = &job.gate {
                invocation.arg(index).arg(&gate.name).arg(gate_limits(gate));
            }
        }
        invocation.arg(jobs.iter().filter(|job| job.group.is_some()).count());
        for (index, job) in jobs.iter().enumerate() {
            if let Some(group) = &job.group {
                invocation.arg(index).arg(group);
            }
        }
        // Only a lone job carries a key (`enqueue_batch` refuses keys).
        let idempotency = match jobs.as_slice() {
            [job] => job.idempotency.as_ref(),
            _ => None,
        };
        if let Some((key, ttl)) = idempotency {
            let keys = self.keys.queue(&jobs[0].queue);
            invocation.key(keys.in_flight()).key(keys.idempotency(key));
            invocation.arg(millis(*ttl).max(1)).arg(jobs[0].key_hold.as_str());
        }
        // Each distinct queue once (the list the invocation was built with), before
        // the jobs land: a queue that holds jobs is always registered.
        self.register_queues(queues.iter().copied()).await;
        let reply = self.run_enqueue(&invocation, &jobs[0].queue).await?;
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
            other => Err(Error::backend(
                format!("unexpected reply from the enqueue script: {other:?}"),
                false,
            )),
        }
    }
}

impl RedisBroker {
    /// Runs the enqueue script. With
    /// [`with_replicated_enqueue`](RedisBroker::with_replicated_enqueue), it runs on a
    /// connection of its own, followed there by `WAIT`, which counts the writes of the
    /// connection it is sent on and holds that connection until the replicas confirm:
    /// on the shared connection it would hold up every other command of this broker
    /// (claims, acks, heartbeats) whenever the replicas are slow.
    async fn run_enqueue(
        &self,
        invocation: &ScriptInvocation<'_>,
        queue: &str,
    ) -> Result<Vec<String>> {
        let Some((replicas, timeout)) = self.replicated_enqueue else {
            return self.run("enqueueing", invocation).await;
        };
        let what =
            format!("waiting for {replicas} replica(s) to confirm an enqueue to queue {queue:?}");
        let slot = self.blocking_slot(&self.keys.queue(queue).signal());
        let mut own = self.spare_connection().await?;
        let mut wait = redis::cmd("WAIT");
        wait.arg(replicas).arg(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX).max(1));
        let enqueued = async {
            let reply: Vec<String> = invocation.invoke_async(&mut own.conn).await?;
            if !matches!(reply.as_slice(), [ok] if ok == "ok") {
                return Ok((reply, None));
            }
            let confirmed: i64 = own.conn.on_slot(&wait, slot).await?;
            Ok((reply, Some(confirmed)))
        };
        // The connection answers without a time limit of its own (it waits for WAIT).
        let (reply, confirmed) =
            match tokio::time::timeout(conn::RESPONSE_TIMEOUT + timeout, enqueued).await {
                Ok(Ok(done)) => done,
                Ok(Err(e)) => return Err(self.err(&what, e)),
                Err(_) => {
                    let e = std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in time");
                    return Err(self.err(&what, e.into()));
                }
            };
        self.put_back(own);
        match confirmed {
            Some(confirmed) if confirmed < i64::from(replicas) => Err(Error::backend(
                format!(
                    "{what} on redis at {}: {confirmed} confirmed within {timeout:?}; the job is \
                     on the master and most likely runs, but a failover now could lose it; \
                     check the replicas (INFO replication); enqueueing again runs it twice \
                     unless the call has an idempotency key",
                    self.url
                ),
                true,
            )),
            _ => Ok(reply),
        }
    }
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

/// The KEYS of the claim and reap scripts.
fn add_lease_keys(invocation: &mut ScriptInvocation<'_>, keys: &QueueKeys) {
    invocation.key(keys.payloads()).key(keys.meta()).key(keys.delayed()).key(keys.in_flight());
    add_ready_keys(invocation, keys);
    invocation.key(keys.dead()).key(keys.dead_payloads()).key(keys.dead_dropped());
    invocation.key(keys.signal()).key(keys.suspect()).key(keys.bad_entries());
    add_gate_keys(invocation, keys);
}

/// The gates hash, gated zset and gates-due zset, in that order (see `gates_of` in
/// lib.lua).
fn add_gate_keys(invocation: &mut ScriptInvocation<'_>, keys: &QueueKeys) {
    invocation.key(keys.gates()).key(keys.gated()).key(keys.gates_due());
}

fn add_ready_keys(invocation: &mut ScriptInvocation<'_>, keys: &QueueKeys) {
    for priority in 0..=9 {
        invocation.key(keys.ready(priority));
    }
}

/// A gate's limits as the scripts read them: `<interval µs>:<burst>:<concurrency>`,
/// 0 for none.
fn gate_limits(gate: &dmq_core::Gate) -> String {
    let interval = gate.rate.map_or(0, |rate| rate.interval_us());
    format!("{interval}:{}:{}", gate.burst.max(1), gate.concurrency.unwrap_or(0))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A random number, for claim tags.
fn rand_u64() -> u64 {
    #[allow(clippy::cast_possible_truncation)]
    let bits = uuid::Uuid::new_v4().as_u128() as u64;
    bits
}

#[async_trait]
impl Broker for RedisBroker {
    async fn enqueue(&self, job: Job) -> Result<()> {
        self.enqueue_jobs(vec![job]).await
    }

    /// One script adds the whole batch, across all its queues, so it is atomic on one
    /// Redis. On a Redis Cluster, where a script may touch one slot only, a batch over
    /// queues of several slots is one script per slot, run together: each queue's part
    /// is added whole or not at all, and when one part is refused (a duplicate id) the
    /// parts of other queues may have been added; the error names the refused queue.
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
        Ok(self.claim_reporting(worker, queues, max, lease, wait).await?.0)
    }

    async fn claim_reporting(
        &self,
        worker: &str,
        queues: &[String],
        max: usize,
        lease: Duration,
        wait: Duration,
    ) -> Result<(Vec<Delivery>, Vec<HeldBack>)> {
        if max == 0 || queues.is_empty() {
            return Ok((Vec::new(), Vec::new()));
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
        // After a wait that took a queue's wake-up, the queues up to that one are
        // claimed from, in order, and not those after it: every queue was found empty
        // before the wait, and one that has jobs since has a wake-up of its own waiting
        // (that a later claim takes), so looking at each (a round trip apiece) would
        // only delay the jobs that woke this claimer. The queues before it still come
        // first, as the order of `queues` says.
        let mut upto: Option<usize> = None;
        // The jobs held back at their gates, by every round of this claim.
        let mut held = Vec::new();
        loop {
            let round = match upto {
                Some(last) => &queues[..=last],
                None => queues,
            };
            let mut claimed = Vec::new();
            // Settled once `claimed` is handed out; dropped before, they give it back.
            let mut pending = Vec::new();
            let mut next_change: Option<Duration> = None;
            let mut failure = None;
            for queue in round {
                if claimed.len() >= max {
                    break;
                }
                // A queue with a suspect job hands out that job alone. Offered even to
                // a claim that has jobs of earlier queues already, so that a suspect
                // in a later queue is not kept waiting by busy earlier ones: the
                // worker hands it back, lets its jobs end, and comes for it alone.
                let limits = (max - claimed.len(), true);
                match self.claim_queue(worker, queue, limits, lease).await {
                    Ok((mut got, mut kept, change, claim)) => {
                        pending.push(claim);
                        held.append(&mut kept);
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
                return Ok((claimed, held));
            }
            pending.into_iter().for_each(PendingClaim::settled);
            if let Some(e) = failure {
                return Err(e);
            }
            if upto.take().is_some() {
                // Another claimer took the jobs that woke this one: look at every
                // queue (and when their delayed jobs come due) before waiting again.
                continue;
            }
            let now = Instant::now();
            if now >= give_up {
                return Ok((Vec::new(), held));
            }
            let mut block = give_up - now;
            if let Some(change) = next_change {
                block = block.min(change.max(Duration::from_millis(1)));
            }
            woken = self.wait_for_signal(queues, block).await?;
            upto = woken.as_ref().and_then(|w| queues.iter().position(|q| q == w));
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
        add_gate_keys(&mut invocation, &keys);
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
        add_gate_keys(&mut invocation, &keys);
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
        add_gate_keys(&mut invocation, &keys);
        invocation.key(keys.signal());
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

    async fn renew(&self, lease: &Lease, lease_for: Duration) -> Result<()> {
        let keys = self.keys.queue(&lease.queue);
        let mut invocation = self.scripts.renew.prepare_invoke();
        invocation.key(keys.meta()).key(keys.in_flight());
        invocation.arg(lease.id.to_string()).arg(&lease.token).arg(millis(lease_for).max(1));
        self.settle("renewing a lease", lease, &invocation).await
    }

    async fn ping(&self) -> Result<()> {
        let mut conn = self.conn().await?;
        let _: String =
            redis::cmd("PING").query_async(&mut conn).await.map_err(|e| self.err("pinging", e))?;
        Ok(())
    }

    fn worker_registry(&self) -> Option<&dyn WorkerRegistry> {
        Some(self)
    }

    fn schedule_store(&self) -> Option<&dyn ScheduleStore> {
        Some(self)
    }

    fn event_stream(&self) -> Option<&dyn EventStream> {
        Some(self)
    }

    fn admin(&self) -> Option<&dyn BrokerAdmin> {
        Some(self)
    }

    fn quota_store(&self) -> Option<&dyn dmq_core::QuotaStore> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dmq_core::WorkerInfo;

    use super::workers::{decode_worker, encode_worker, worker_ttl};

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
