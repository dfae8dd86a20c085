//! The outbox relay: moves the jobs committed to a schema's `outbox` table to a broker
//! (Redis), each exactly once, one relay at a time under an advisory lock.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use dmq_core::{Broker, Error, Job, Result, TaskId};
use futures::FutureExt as _;
use sqlx::postgres::types::PgInterval;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgRow};
use sqlx::{ConnectOptions as _, Connection as _, Row as _};
use tokio::time::Instant;
use uuid::Uuid;

use crate::broker::DEFAULT_DEAD_LETTER_CAP;
use crate::error::{pg_error, sqlstate};
use crate::listen::Listener;
use crate::schema::{self, DEFAULT_SCHEMA, Mode, Schema, redact};

/// How long the broker keeps the idempotency key `outbox:<id>` of each job the relay
/// hands it (7 days): the time within which a relay that takes over from one that
/// died between enqueueing a job and deleting its row still recognises the job as
/// enqueued.
pub const DEFAULT_RELAY_KEY_TTL: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// How many outbox rows the relay moves in one transaction, unless told otherwise.
pub const DEFAULT_RELAY_BATCH: usize = 100;

/// How often the relay looks at the outbox when no notification woke it: a fallback
/// for notifications lost with a connection.
pub const DEFAULT_RELAY_POLL: Duration = Duration::from_secs(10);

/// How long one attempt to take the advisory lock waits before trying again (and
/// looking whether the relay should stop).
const LOCK_WAIT: &str = "1s";

/// The longest wait between attempts after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How often the leading relay deletes lapsed idempotency keys of the schema.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Moves jobs from a PostgreSQL outbox to a broker, exactly once each.
///
/// [`EnqueueIn`](crate::EnqueueIn) writes the jobs of a schema in outbox mode into its
/// table `outbox`, in the caller's transaction; the relay moves those that committed
/// to the broker (a `RedisBroker`, in practice), in order of their writing. Workers
/// run one beside them with `dmq worker --outbox postgres://...`.
///
/// - **One at a time.** A relay relays only while it holds the schema's advisory lock
///   (`pg_advisory_lock`, on the connection its transactions use, whose
///   `application_name` is `dmq outbox relay (pid N)`). Other relays wait for the lock
///   and take over as soon as the holder stops or dies, its connection with it.
/// - **Batches.** In one transaction it reads up to a batch of rows (`FOR UPDATE`),
///   enqueues each to the broker in turn, deletes them and commits.
/// - **Exactly once.** Each job is enqueued with an idempotency key: the user's own
///   when the call had one ([`Call::idempotency_key`](dmq_core::Call::idempotency_key),
///   with its time to live), else `outbox:<job id>`, kept
///   [`DEFAULT_RELAY_KEY_TTL`] (7 days) by default. A relay that dies after enqueueing
///   a job and before its delete committed leaves the row behind; the relay that takes
///   over finds the key taken by that very job (or the job still queued), deletes the
///   row and counts it as [`already_relayed`](RelayStats::already_relayed) instead of
///   enqueueing it again. The guarantee lasts as long as the key: a row left behind
///   and relayed again only after its key lapsed (no relay ran for 7 days, or longer
///   than a short user key's life) is enqueued a second time. Each key costs the
///   broker about 150 bytes for its life; [`with_key_ttl`](OutboxRelay::with_key_ttl)
///   trades that memory against the length of an outage the guarantee survives.
/// - **A user's key** is the job's identity in the broker, too: when the broker holds
///   that key for another job (enqueued there directly, not through this outbox), the
///   row is deleted as a [duplicate](RelayStats::duplicates), as an enqueue with that
///   key would have done; the id `enqueue_in` returned then never gets a result.
/// - **Woken** by the `NOTIFY` that each committed outbox write sends (one listening
///   connection), with a slow poll ([`DEFAULT_RELAY_POLL`]) for notifications lost
///   with a connection.
/// - **Failures.** While the broker fails (Redis down), the rows stay and the relay
///   tries again, backing off up to 30 s; a job the broker refuses for what it is (a
///   bad name, too large) is dead-lettered in the schema's `dead_letters` table with
///   the reason, so that it does not hold up the rest. A lost PostgreSQL connection
///   loses the lock too: the relay connects again and waits for the lock like any.
///
/// ```no_run
/// use std::sync::Arc;
///
/// use dmq_postgres::OutboxRelay;
/// use dmq_redis::RedisBroker;
///
/// # async fn demo() -> dmq_core::Result<()> {
/// let broker = Arc::new(RedisBroker::connect("redis://127.0.0.1:6379").await?);
/// let relay = OutboxRelay::connect("postgres://postgres@127.0.0.1:5432/app", broker).await?;
/// let stats = relay.stats();
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// let running = tokio::spawn(relay.run_until(async {
///     let _ = stopped.await;
/// }));
/// // ... later:
/// let _ = stop.send(());
/// let _ = running.await;
/// println!("relayed {} jobs", stats.relayed());
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct OutboxRelay {
    options: PgConnectOptions,
    shown: String,
    schema: Schema,
    sql: Sql,
    broker: Arc<dyn Broker>,
    listener: Listener,
    batch: usize,
    poll: Duration,
    key_ttl: Duration,
    stats: RelayStats,
}

/// The relay's statements, written once for its schema.
#[derive(Debug)]
struct Sql {
    lock: String,
    read: String,
    delete: String,
    bury: String,
    sweep: String,
}

impl Sql {
    fn new(s: &Schema) -> Self {
        Sql {
            lock: "SELECT pg_advisory_lock(hashtextextended($1, 0))".to_owned(),
            read: format!(
                "SELECT position, queue, id, priority, eta, payload, idempotency_key, \
                 idempotency_ttl FROM {} ORDER BY position LIMIT $1 FOR UPDATE",
                s.at("outbox")
            ),
            delete: format!("DELETE FROM {} WHERE position = ANY ($1)", s.at("outbox")),
            bury: format!("SELECT {}($1, $2, $3, $4, $5)", s.at("bury")),
            sweep: format!("SELECT {}($1)", s.at("sweep")),
        }
    }
}

/// What a relay has done so far: a live view, shared by its clones.
///
/// Counts only what committed: a row is counted once its delete did.
#[derive(Debug, Clone, Default)]
pub struct RelayStats {
    counts: Arc<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    relayed: AtomicU64,
    already_relayed: AtomicU64,
    duplicates: AtomicU64,
    dead_lettered: AtomicU64,
    takeovers: AtomicU64,
}

impl RelayStats {
    /// Jobs this relay enqueued to the broker (and deleted from the outbox).
    #[must_use]
    pub fn relayed(&self) -> u64 {
        self.counts.relayed.load(Ordering::Relaxed)
    }

    /// Rows whose job the broker held already: left behind by a relay that stopped
    /// after enqueueing them and before deleting them. Deleted, not enqueued again.
    #[must_use]
    pub fn already_relayed(&self) -> u64 {
        self.counts.already_relayed.load(Ordering::Relaxed)
    }

    /// Rows whose job carried a user's idempotency key that the broker held for
    /// another job: deleted, as an enqueue with that key would have been a no-op.
    #[must_use]
    pub fn duplicates(&self) -> u64 {
        self.counts.duplicates.load(Ordering::Relaxed)
    }

    /// Rows the broker refused for what they are (a bad name, too large), moved to
    /// the schema's `dead_letters` table with the reason.
    #[must_use]
    pub fn dead_lettered(&self) -> u64 {
        self.counts.dead_lettered.load(Ordering::Relaxed)
    }

    /// How many times this relay took the outbox's lock and started relaying.
    #[must_use]
    pub fn takeovers(&self) -> u64 {
        self.counts.takeovers.load(Ordering::Relaxed)
    }

    fn add(&self, tally: &Tally) {
        let c = &self.counts;
        c.relayed.fetch_add(tally.relayed, Ordering::Relaxed);
        c.already_relayed.fetch_add(tally.already_relayed, Ordering::Relaxed);
        c.duplicates.fetch_add(tally.duplicates, Ordering::Relaxed);
        c.dead_lettered.fetch_add(tally.dead_lettered, Ordering::Relaxed);
    }
}

/// What one batch did.
#[derive(Debug, Default)]
struct Tally {
    relayed: u64,
    already_relayed: u64,
    duplicates: u64,
    dead_lettered: u64,
}

/// Why relaying stopped for a while.
#[derive(Debug)]
enum Trouble {
    /// PostgreSQL failed: the connection, and so the lock, may be gone.
    Postgres(Error),
    /// The broker failed; the connection and the lock are fine.
    Broker(Error),
}

/// One outbox row.
#[derive(Debug)]
struct Entry {
    position: i64,
    queue: String,
    id: TaskId,
    priority: u8,
    eta: Option<DateTime<Utc>>,
    payload: Vec<u8>,
    key: Option<(String, Duration)>,
}

impl Entry {
    fn read(row: &PgRow) -> std::result::Result<Self, sqlx::Error> {
        let priority: i16 = row.try_get("priority")?;
        let key: Option<String> = row.try_get("idempotency_key")?;
        let ttl: Option<PgInterval> = row.try_get("idempotency_ttl")?;
        Ok(Entry {
            position: row.try_get("position")?,
            queue: row.try_get("queue")?,
            id: TaskId::from(row.try_get::<Uuid, _>("id")?),
            priority: u8::try_from(priority.clamp(0, 9)).unwrap_or(0),
            eta: row.try_get("eta")?,
            payload: row.try_get("payload")?,
            key: key.map(|key| (key, ttl.map_or(dmq_core::DEFAULT_IDEMPOTENCY_TTL, duration))),
        })
    }
}

/// What the broker made of one row's job.
#[derive(Debug)]
enum Handed {
    /// Enqueued now.
    Relayed,
    /// Enqueued before, by a relay that did not live to delete the row.
    AlreadyThere,
    /// The user's key belongs to another job in the broker.
    Duplicate(TaskId),
    /// Refused for what it is: dead-letter it with this reason.
    Refused(String),
    /// The broker failed: try again later.
    Failed(Error),
}

/// A PostgreSQL interval as a duration (a month counted as 30 days).
fn duration(i: PgInterval) -> Duration {
    let days = i64::from(i.months) * 30 + i64::from(i.days);
    let micros = days.saturating_mul(86_400_000_000).saturating_add(i.microseconds);
    Duration::from_micros(u64::try_from(micros).unwrap_or(0))
}

/// The wait before attempt `failures + 1`: 1 s, doubling, at most 30 s.
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1 << failures.saturating_sub(1).min(5)).min(MAX_BACKOFF)
}

impl OutboxRelay {
    /// Connects to the outbox in namespace `dmq` (the schema `dmq`) of the PostgreSQL
    /// at `url`, to relay it to `broker`; makes and migrates the schema when needed and
    /// records that it serves an outbox.
    ///
    /// # Errors
    ///
    /// When the URL is not a PostgreSQL URL, the server cannot be reached, or the
    /// schema serves a [`PostgresBroker`](crate::PostgresBroker) (whose jobs
    /// `enqueue_in` writes straight into its own table: there is nothing to relay).
    pub async fn connect(url: &str, broker: Arc<dyn Broker>) -> Result<Self> {
        Self::connect_with_namespace(url, DEFAULT_SCHEMA, broker).await
    }

    /// Connects as [`connect`](OutboxRelay::connect) does, to the outbox of namespace
    /// `namespace` (the schema of that name; see
    /// [`EnqueueIn::enqueue_in_namespace`](crate::EnqueueIn::enqueue_in_namespace)).
    ///
    /// # Errors
    ///
    /// As [`connect`](OutboxRelay::connect), and [`Error::InvalidArgument`] for a
    /// namespace that cannot name a schema.
    pub async fn connect_with_namespace(
        url: &str,
        namespace: &str,
        broker: Arc<dyn Broker>,
    ) -> Result<Self> {
        let schema = Schema::new(namespace)?;
        schema::migrate(url, &schema, Some(Mode::Outbox)).await?;
        let pool = schema::pool(url, 1).await?;
        let listener = Listener::start(&pool, &schema, &["outbox"]).await?;
        let options = schema::options(url)?
            .application_name(&format!("dmq outbox relay (pid {})", std::process::id()));
        Ok(OutboxRelay {
            options,
            shown: redact(url),
            sql: Sql::new(&schema),
            schema,
            broker,
            listener,
            batch: DEFAULT_RELAY_BATCH,
            poll: DEFAULT_RELAY_POLL,
            key_ttl: DEFAULT_RELAY_KEY_TTL,
            stats: RelayStats::default(),
        })
    }

    /// The same relay, moving up to `rows` rows per transaction
    /// ([`DEFAULT_RELAY_BATCH`] by default; at least 1).
    #[must_use]
    pub fn with_batch_size(mut self, rows: usize) -> Self {
        self.batch = rows.clamp(1, i32::MAX as usize);
        self
    }

    /// The same relay, looking at the outbox every `poll` when no notification woke
    /// it ([`DEFAULT_RELAY_POLL`] by default).
    #[must_use]
    pub fn with_poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll.max(Duration::from_millis(10));
        self
    }

    /// The same relay, asking the broker to keep the key `outbox:<id>` of each job it
    /// enqueues for `ttl` ([`DEFAULT_RELAY_KEY_TTL`] by default): a row left behind by
    /// a relay that died is recognised as enqueued for that long.
    #[must_use]
    pub fn with_key_ttl(mut self, ttl: Duration) -> Self {
        self.key_ttl = ttl.max(Duration::from_millis(1));
        self
    }

    /// What the relay has done: a live view, to read while it runs.
    #[must_use]
    pub fn stats(&self) -> RelayStats {
        self.stats.clone()
    }

    /// The schema whose outbox it relays (its namespace).
    #[must_use]
    pub fn schema(&self) -> &str {
        self.schema.name()
    }

    /// Relays until `shutdown` completes: waits for the outbox's lock, then moves
    /// committed rows to the broker as they come. Failures are logged and tried again
    /// (backing off up to 30 s), never returned. On shutdown it finishes the batch in
    /// hand, lets the lock go and returns.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future instead loses nothing either: a batch cut short is rolled
    /// back, and what it had enqueued is recognised by the next relay (see the
    /// exactly-once rule above).
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send) {
        tokio::pin!(shutdown);
        let mut failures = 0u32;
        loop {
            let led = tokio::select! {
                biased;
                () = &mut shutdown => return,
                led = self.lead() => led,
            };
            match led {
                Ok(conn) => {
                    failures = 0;
                    match self.relay_while_leading(conn, shutdown.as_mut()).await {
                        None => return,
                        Some(e) => tracing::warn!(
                            schema = self.schema.name(),
                            error = %e,
                            "the outbox relay lost its PostgreSQL connection, and with it the \
                             outbox's lock; connecting again"
                        ),
                    }
                }
                Err(e) => tracing::warn!(
                    schema = self.schema.name(),
                    error = %e,
                    "the outbox relay could not connect to PostgreSQL or take the outbox's \
                     lock; trying again"
                ),
            }
            failures += 1;
            tokio::select! {
                biased;
                () = &mut shutdown => return,
                () = tokio::time::sleep(backoff(failures)) => {}
            }
        }
    }

    fn fail(&self, what: &str, e: sqlx::Error) -> Error {
        pg_error(
            &format!(
                "the outbox relay of schema {} could not {what} on PostgreSQL at {}",
                self.schema.name(),
                self.shown
            ),
            e,
        )
    }

    /// Connects and waits for the outbox's lock; returns the connection holding it.
    async fn lead(&self) -> Result<PgConnection> {
        let mut conn = self.options.connect().await.map_err(|e| self.fail("connect", e))?;
        sqlx::raw_sql(schema::sql(&format!("SET lock_timeout = '{LOCK_WAIT}'")))
            .execute(&mut conn)
            .await
            .map_err(|e| self.fail("set a lock timeout", e))?;
        let name = format!("dmq outbox relay {}", self.schema.name());
        let mut said = false;
        loop {
            match sqlx::query(schema::sql(&self.sql.lock)).bind(&name).execute(&mut conn).await {
                Ok(_) => break,
                Err(e) if sqlstate(&e).as_deref() == Some("55P03") => {
                    if !said {
                        said = true;
                        tracing::info!(
                            schema = self.schema.name(),
                            "another outbox relay holds the outbox; waiting to take over"
                        );
                    }
                }
                Err(e) => return Err(self.fail("take the outbox's lock", e)),
            }
        }
        sqlx::raw_sql("SET lock_timeout = 0")
            .execute(&mut conn)
            .await
            .map_err(|e| self.fail("clear the lock timeout", e))?;
        self.stats.counts.takeovers.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            schema = self.schema.name(),
            postgres = %self.shown,
            "relaying the outbox to the broker (this relay holds the outbox's lock)"
        );
        Ok(conn)
    }

    /// Relays on `conn`, which holds the lock, until `shutdown` (then `None`) or a
    /// PostgreSQL failure (then the error; the connection is dropped, the lock with it).
    async fn relay_while_leading(
        &self,
        mut conn: PgConnection,
        mut shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Option<Error> {
        let mut failures = 0u32;
        let mut swept = Instant::now();
        loop {
            if swept.elapsed() >= SWEEP_EVERY {
                swept = Instant::now();
                self.sweep(&mut conn).await;
            }
            // Registered before looking, so that a row committed meanwhile wakes it.
            let notified = self.listener.wakeups.outbox.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let wait = match self.relay_batch(&mut conn).await {
                Ok(moved) => {
                    failures = 0;
                    if moved >= self.batch {
                        if shutdown.as_mut().now_or_never().is_some() {
                            break;
                        }
                        continue;
                    }
                    self.poll
                }
                Err(Trouble::Postgres(e)) => return Some(e),
                Err(Trouble::Broker(e)) => {
                    failures += 1;
                    let wait = backoff(failures);
                    tracing::warn!(
                        schema = self.schema.name(),
                        error = %e,
                        "the broker failed to take the outbox's jobs; trying again in {wait:?}"
                    );
                    wait
                }
            };
            tokio::select! {
                biased;
                () = shutdown.as_mut() => break,
                () = &mut notified, if failures == 0 => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
        let _ = conn.close().await;
        tracing::debug!(schema = self.schema.name(), "the outbox relay let the outbox's lock go");
        None
    }

    /// Moves up to a batch of rows in one transaction; returns how many it read.
    async fn relay_batch(&self, conn: &mut PgConnection) -> std::result::Result<usize, Trouble> {
        let pg = |what: &str, e| Trouble::Postgres(self.fail(what, e));
        let mut tx = conn.begin().await.map_err(|e| pg("begin a transaction", e))?;
        let rows = sqlx::query(schema::sql(&self.sql.read))
            .bind(i64::try_from(self.batch).unwrap_or(i64::MAX))
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| pg("read the outbox", e))?;
        if rows.is_empty() {
            tx.commit().await.map_err(|e| pg("commit", e))?;
            return Ok(0);
        }
        let mut done = Vec::with_capacity(rows.len());
        let mut tally = Tally::default();
        let mut broker_failed = None;
        for row in &rows {
            let entry = Entry::read(row).map_err(|e| pg("read an outbox row", e))?;
            match self.hand_over(&entry).await {
                Handed::Relayed => tally.relayed += 1,
                Handed::AlreadyThere => tally.already_relayed += 1,
                Handed::Duplicate(existing) => {
                    tally.duplicates += 1;
                    tracing::info!(
                        schema = self.schema.name(),
                        id = %entry.id,
                        %existing,
                        queue = %entry.queue,
                        "the broker holds this job's idempotency key for another job; \
                         dropped it from the outbox as a duplicate"
                    );
                }
                Handed::Refused(reason) => {
                    tally.dead_lettered += 1;
                    tracing::error!(
                        schema = self.schema.name(),
                        id = %entry.id,
                        queue = %entry.queue,
                        %reason,
                        "the broker refused an outbox job; dead-lettered it in the schema's \
                         dead_letters table"
                    );
                    sqlx::query(schema::sql(&self.sql.bury))
                        .bind(&entry.queue)
                        .bind(entry.id.as_uuid())
                        .bind(&entry.payload)
                        .bind(format!("the outbox relay could not enqueue it: {reason}"))
                        .bind(i32::try_from(DEFAULT_DEAD_LETTER_CAP).unwrap_or(i32::MAX))
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| pg("dead-letter an outbox job", e))?;
                }
                Handed::Failed(e) => {
                    broker_failed = Some(e);
                    break;
                }
            }
            done.push(entry.position);
        }
        if !done.is_empty() {
            sqlx::query(schema::sql(&self.sql.delete))
                .bind(&done)
                .execute(&mut *tx)
                .await
                .map_err(|e| pg("delete relayed rows", e))?;
        }
        tx.commit().await.map_err(|e| pg("commit", e))?;
        self.stats.add(&tally);
        if tally.already_relayed > 0 {
            tracing::info!(
                schema = self.schema.name(),
                rows = tally.already_relayed,
                "found jobs in the outbox that the broker held already (a relay stopped \
                 between enqueueing and deleting them); deleted them without enqueueing \
                 them again"
            );
        }
        tracing::debug!(
            schema = self.schema.name(),
            relayed = tally.relayed,
            already = tally.already_relayed,
            duplicates = tally.duplicates,
            dead_lettered = tally.dead_lettered,
            "relayed a batch of the outbox"
        );
        match broker_failed {
            Some(e) => Err(Trouble::Broker(e)),
            None => Ok(rows.len()),
        }
    }

    /// Enqueues one row's job to the broker, under its idempotency key.
    async fn hand_over(&self, entry: &Entry) -> Handed {
        let job = Job::new(
            entry.id,
            entry.queue.clone(),
            entry.priority,
            entry.eta,
            entry.payload.clone(),
        );
        let job = match &entry.key {
            Some((key, ttl)) => job.with_idempotency_key(key.clone(), *ttl),
            None => job.with_idempotency_key(format!("outbox:{}", entry.id), self.key_ttl),
        };
        // The job's flow limits travel in its envelope. One that does not decode goes
        // as it is: the worker that takes it dead-letters it.
        let envelope = dmq_core::Envelope::decode(&entry.payload, entry.payload.len()).ok();
        let gate = envelope.as_ref().and_then(|e| dmq_core::Gate::of(&e.task, e.limits.as_ref()?));
        let job = match gate {
            Some(gate) => job.with_gate(gate),
            None => job,
        };
        // So does its group (fair claiming).
        let job = match envelope.and_then(|e| e.group) {
            Some(group) => job.in_group(group),
            None => job,
        };
        match self.broker.enqueue(job).await {
            Ok(()) => Handed::Relayed,
            Err(Error::IdempotencyKeyTaken { existing, .. }) if existing == entry.id => {
                Handed::AlreadyThere
            }
            Err(Error::IdempotencyKeyTaken { existing, .. }) => Handed::Duplicate(existing),
            Err(Error::DuplicateJob { .. }) => Handed::AlreadyThere,
            Err(e @ (Error::InvalidArgument(_) | Error::MessageTooLarge { .. })) => {
                Handed::Refused(e.to_string())
            }
            Err(e) => Handed::Failed(e),
        }
    }

    /// Deletes lapsed idempotency keys of the schema (those `enqueue_in` holds).
    async fn sweep(&self, conn: &mut PgConnection) {
        if let Err(e) =
            sqlx::query(schema::sql(&self.sql.sweep)).bind(1_000_i32).execute(&mut *conn).await
        {
            tracing::debug!(error = %e, "the outbox relay's sweep of lapsed keys failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_read_as_durations() {
        let i = PgInterval { months: 0, days: 1, microseconds: 1_500_000 };
        assert_eq!(duration(i), Duration::from_secs(86_401) + Duration::from_millis(500));
        let negative = PgInterval { months: 0, days: 0, microseconds: -5 };
        assert_eq!(duration(negative), Duration::ZERO);
    }

    #[test]
    fn backoff_doubles_up_to_thirty_seconds() {
        let waits: Vec<u64> = (1..=8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
    }
}
