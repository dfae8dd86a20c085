//! The PostgreSQL broker: the job lifecycle on tables, in SQL functions (one per
//! atomic operation, in `migrations/`) and single statements. Each capability is a
//! file of its own: `workers.rs` (the worker registry and reaper), `schedules.rs`,
//! `events.rs` (the event stream) and `admin.rs`.

mod admin;
mod events;
mod quotas;
mod schedules;
mod workers;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use dmq_core::{
    Broker, BrokerAdmin, DEFAULT_EVENT_STREAM_CAP, DEFAULT_MAX_DELIVERIES, Delivery, Error,
    EventStream, HeldBack, HeldBy, Job, KeyHold, Lease, Result, ScheduleStore, TaskId,
    WorkerRegistry, refuse_keys_in_batches,
};
use sqlx::postgres::{PgPool, PgRow};
use sqlx::{Postgres, Row};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;

use crate::batch::{Coalescer, Write, WriteAll};
use crate::error::{PostgresFailure, pg_error, sqlstate};
use crate::listen::Listener;
use crate::schema::{self, DEFAULT_SCHEMA, Mode, Schema, redact};

/// The default cap on each queue's dead-letter queue.
pub const DEFAULT_DEAD_LETTER_CAP: usize = 10_000;

/// How often a broker deletes lapsed completions and idempotency keys.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// How many lapsed rows of each table one sweep deletes at most.
const SWEEP_BATCH: i32 = 1_000;

/// How often a broker checks whether to vacuum its tables.
const VACUUM_CHECK: Duration = Duration::from_secs(5);

/// How many job rows a broker changes (claims, acknowledgements, settlements) before
/// it vacuums, unless told otherwise.
pub const DEFAULT_VACUUM_AFTER: u64 = 10_000;

/// A [`Broker`] on PostgreSQL, with every capability: the worker registry and reaper,
/// schedules, an event stream and the admin calls.
///
/// Jobs live in the table `jobs` of the namespace's schema (`dmq` by default), one row
/// each; claims take them with `FOR UPDATE SKIP LOCKED` under fenced leases, idle
/// claimers wait for a `NOTIFY` (one listening connection per broker), and the
/// schema's tables and the view `queue_depths` can be read with SQL (see the README's
/// "PostgreSQL" section).
///
/// ```no_run
/// use dmq_core::Manager;
/// use dmq_postgres::{PostgresBackend, PostgresBroker};
///
/// # async fn demo() -> dmq_core::Result<()> {
/// let url = "postgres://postgres@127.0.0.1:5432/app";
/// let manager = Manager::builder()
///     .broker(PostgresBroker::connect(url).await?)
///     .backend(PostgresBackend::connect(url).await?)
///     .build()?;
/// # let _ = manager;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct PostgresBroker {
    inner: Arc<Inner>,
    sweeper: JoinHandle<()>,
    vacuum: JoinHandle<()>,
}

#[derive(Debug)]
struct Inner {
    pool: PgPool,
    schema: Schema,
    sql: Sql,
    listener: Listener,
    /// The URL without its password, for error messages.
    shown: String,
    /// Settings, changed only by the builders (before the broker is shared).
    dead_letter_cap: AtomicUsize,
    max_deliveries: AtomicU32,
    event_cap: AtomicUsize,
    /// Acknowledgements, sent in batches (see `batch.rs`).
    acks: Coalescer<Acked>,
    /// Job rows this broker changed since it last vacuumed.
    churn: AtomicU64,
    /// How many changed rows make it vacuum; 0: never.
    vacuum_after: AtomicU64,
    /// Whether any enqueue quota is set, as last read.
    quotas_seen: dmq_core::QuotasSeen,
}

impl Drop for PostgresBroker {
    fn drop(&mut self) {
        self.sweeper.abort();
        self.vacuum.abort();
    }
}

/// The broker's statements, written once for its schema.
#[derive(Debug)]
struct Sql {
    enqueue: String,
    enqueue_batch: String,
    /// As `enqueue` and `enqueue_batch`, for jobs with gates.
    enqueue_gated: String,
    enqueue_batch_gated: String,
    /// As `enqueue_gated`, for a job whose idempotency key holds by its job's state.
    enqueue_unique: String,
    /// Puts a job just enqueued (in the same transaction) in its group, and the jobs
    /// of a batch in theirs.
    set_group: String,
    set_groups: String,
    claim: String,
    complete: String,
    is_complete: String,
    retry: String,
    release: String,
    dead_letter: String,
    renew: String,
    sweep: String,
}

impl Sql {
    fn new(s: &Schema) -> Self {
        let jobs = s.at("jobs");
        // A job holds a token only while it runs (the table's CHECK constraint), so
        // the token alone says the lease holds. Naming `state` as well would let the
        // planner look the job up through `jobs_running` by queue alone, which walks
        // every running (and not yet vacuumed) row of the queue; without it, the
        // primary key finds the one row.
        let held = "queue = $1 AND id = $2 AND token = $3";
        Sql {
            enqueue: format!("SELECT {}($1, $2, $3, $4, $5, $6, $7)", s.at("enqueue")),
            enqueue_batch: format!(
                "SELECT dup_queue, dup_id FROM {}($1, $2, $3, $4, $5)",
                s.at("enqueue_batch")
            ),
            enqueue_gated: format!(
                "SELECT {}($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                s.at("enqueue")
            ),
            enqueue_unique: format!(
                "SELECT {}($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                s.at("enqueue_unique")
            ),
            set_group: format!("UPDATE {jobs} SET grp = $3 WHERE queue = $1 AND id = $2"),
            set_groups: format!(
                "UPDATE {jobs} j SET grp = u.g FROM unnest($1::text[], $2::uuid[], $3::text[]) \
                 AS u(q, i, g) WHERE j.queue = u.q AND j.id = u.i AND u.g IS NOT NULL"
            ),
            enqueue_batch_gated: format!(
                "SELECT dup_queue, dup_id FROM {}($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                s.at("enqueue_batch")
            ),
            claim: format!(
                "SELECT queue, id, payload, deliveries, token, fence, isolated, next_change \
                 FROM {}($1, $2, $3, $4, $5, $6)",
                s.at("claim")
            ),
            complete: format!(
                "WITH settled AS (DELETE FROM {jobs} WHERE {held} RETURNING queue, id) \
                 INSERT INTO {} (queue, id, until) \
                 SELECT queue, id, now() + $4 FROM settled \
                 ON CONFLICT (queue, id) DO UPDATE SET until = EXCLUDED.until \
                 RETURNING 1",
                s.at("completions")
            ),
            is_complete: format!(
                "SELECT EXISTS (SELECT 1 FROM {} WHERE queue = $1 AND id = $2 AND until > now())",
                s.at("completions")
            ),
            retry: format!(
                "UPDATE {jobs} SET payload = $4, \
                 state = CASE WHEN $5 > now() THEN 'delayed' ELSE 'ready' END, \
                 due_at = greatest($5, now()), position = nextval('{}'), deliveries = 0, \
                 strikes = 0, suspect = false, token = NULL, fence = NULL, worker = NULL, \
                 lease_until = NULL, claimed_at = NULL, isolated = false \
                 WHERE {held}",
                s.at("job_order")
            ),
            release: format!(
                "UPDATE {jobs} SET state = 'ready', suspect = isolated, \
                 position = -nextval('{}'), deliveries = greatest(deliveries - 1, 0), \
                 token = NULL, worker = NULL, lease_until = NULL, claimed_at = NULL, \
                 isolated = false \
                 WHERE {held}",
                s.at("job_order")
            ),
            dead_letter: format!(
                "WITH gone AS (DELETE FROM {jobs} WHERE {held} RETURNING queue, id, payload) \
                 SELECT {}(queue, id, payload, $4, $5) FROM gone",
                s.at("bury")
            ),
            renew: format!("UPDATE {jobs} SET lease_until = now() + $4 WHERE {held}"),
            sweep: format!("SELECT {}($1)", s.at("sweep")),
        }
    }
}

/// A duration as a PostgreSQL interval, within what one can hold (about 178 million
/// years; longer ones are cut to that).
pub(crate) fn interval(d: Duration) -> sqlx::postgres::types::PgInterval {
    let micros = i64::try_from(d.as_micros()).unwrap_or(i64::MAX / 2).min(i64::MAX / 2);
    sqlx::postgres::types::PgInterval { months: 0, days: 0, microseconds: micros }
}

impl PostgresBroker {
    /// Connects to the PostgreSQL at `url` (`postgres://user:password@host:5432/db`)
    /// in the default namespace, whose schema is `dmq`, making and migrating it when
    /// needed.
    ///
    /// # Errors
    ///
    /// When the URL is not a PostgreSQL URL, the server cannot be reached, or the
    /// schema serves an outbox for Redis (see [`OutboxRelay`](crate::OutboxRelay)).
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with_namespace(url, DEFAULT_SCHEMA).await
    }

    /// Connects as [`connect`](PostgresBroker::connect) does, in namespace
    /// `namespace`: its jobs live in the schema of that name (lowercase letters,
    /// digits and underscores), apart from every other namespace's.
    ///
    /// # Errors
    ///
    /// As [`connect`](PostgresBroker::connect), and
    /// [`Error::InvalidArgument`] for a namespace that cannot name a schema.
    pub async fn connect_with_namespace(url: &str, namespace: &str) -> Result<Self> {
        Self::connect_sized(url, namespace, schema::default_pool_size()).await
    }

    /// Connects as [`connect_with_namespace`](PostgresBroker::connect_with_namespace)
    /// does, with a pool of at most `pool_size` connections (10 by default), plus the
    /// one that listens for notifications.
    ///
    /// # Errors
    ///
    /// As [`connect_with_namespace`](PostgresBroker::connect_with_namespace).
    pub async fn connect_sized(url: &str, namespace: &str, pool_size: u32) -> Result<Self> {
        let schema = Schema::new(namespace)?;
        schema::migrate(url, &schema, Some(Mode::Broker)).await?;
        let pool = schema::pool(url, pool_size).await?;
        let listener = Listener::start(&pool, &schema, &["jobs", "events"]).await?;
        let inner = Arc::new(Inner {
            churn: AtomicU64::new(0),
            vacuum_after: AtomicU64::new(DEFAULT_VACUUM_AFTER),
            acks: Coalescer::start(ack_all(pool.clone(), &schema.at("jobs"), redact(url))),
            sql: Sql::new(&schema),
            pool,
            schema,
            listener,
            shown: redact(url),
            dead_letter_cap: AtomicUsize::new(DEFAULT_DEAD_LETTER_CAP),
            max_deliveries: AtomicU32::new(DEFAULT_MAX_DELIVERIES),
            event_cap: AtomicUsize::new(DEFAULT_EVENT_STREAM_CAP),
            quotas_seen: dmq_core::QuotasSeen::default(),
        });
        let sweeper = tokio::spawn(sweep(Arc::downgrade(&inner)));
        let vacuum = tokio::spawn(vacuum(Arc::downgrade(&inner)));
        Ok(PostgresBroker { inner, sweeper, vacuum })
    }

    /// The same broker, each queue's dead-letter queue keeping at most `cap` jobs
    /// (10,000 by default); older ones are dropped and counted.
    #[must_use]
    pub fn with_dead_letter_cap(self, cap: usize) -> Self {
        self.inner.dead_letter_cap.store(cap, Ordering::Relaxed);
        self
    }

    /// Dead-letters a job whose worker was lost `n` times while it ran alone (5 by
    /// default), instead of handing it out again. 0 means no limit.
    #[must_use]
    pub fn with_max_deliveries(self, n: u32) -> Self {
        self.inner.max_deliveries.store(n, Ordering::Relaxed);
        self
    }

    /// The same broker, its event stream keeping about the last `cap` events
    /// ([`DEFAULT_EVENT_STREAM_CAP`] by default): at least `cap`, less than one batch
    /// more, as the oldest batches are dropped whole.
    #[must_use]
    pub fn with_event_stream_cap(self, cap: usize) -> Self {
        self.inner.event_cap.store(cap, Ordering::Relaxed);
        self
    }

    /// The same broker, vacuuming its tables `jobs` and `events` once it changed `rows`
    /// job rows since it last did ([`DEFAULT_VACUUM_AFTER`] by default; 0: never,
    /// leaving it to autovacuum).
    ///
    /// Every job leaves dead row versions behind (its claim, its deletion), and a
    /// claim walks the dead entries at the head of the queue's index until a vacuum
    /// removes them. Autovacuum looks at a database once a minute by default, long
    /// enough for a busy queue to leave hundreds of thousands; an idle worker's claim
    /// after a burst of 300,000 jobs took 10 ms instead of 2. The broker checks every
    /// 5 s and runs `VACUUM (SKIP_LOCKED)`, which blocks no reader or writer and is
    /// skipped while another vacuum of the table runs. It needs the role to own the
    /// tables (the role that made the schema does); otherwise PostgreSQL skips it with
    /// a warning.
    #[must_use]
    pub fn with_vacuum_after(self, rows: u64) -> Self {
        self.inner.vacuum_after.store(rows, Ordering::Relaxed);
        self
    }

    /// The connection pool, for callers that run their own SQL beside dmq's.
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The schema the broker's tables live in (its namespace).
    #[must_use]
    pub fn schema(&self) -> &str {
        self.inner.schema.name()
    }
}

impl Inner {
    fn fail(&self, what: &str, e: sqlx::Error) -> Error {
        pg_error(&format!("could not {what} on PostgreSQL at {}", self.shown), e)
    }

    fn cap(&self) -> i32 {
        i32::try_from(self.dead_letter_cap.load(Ordering::Relaxed)).unwrap_or(i32::MAX)
    }

    fn max_deliveries(&self) -> i32 {
        i32::try_from(self.max_deliveries.load(Ordering::Relaxed)).unwrap_or(i32::MAX)
    }

    fn event_cap(&self) -> usize {
        self.event_cap.load(Ordering::Relaxed)
    }

    /// Runs a settling statement of `lease`'s job; `LeaseLost` when it changed no row.
    async fn settle(
        &self,
        what: &str,
        query: sqlx::query::Query<'_, Postgres, sqlx::postgres::PgArguments>,
        lease: &Lease,
    ) -> Result<()> {
        let done = query.execute(&self.pool).await.map_err(|e| self.fail(what, e))?;
        self.churn.fetch_add(done.rows_affected(), Ordering::Relaxed);
        if done.rows_affected() == 0 {
            return Err(Error::LeaseLost { id: lease.id });
        }
        Ok(())
    }

    /// One claim: the jobs, or when none, when the next one could be due.
    async fn try_claim(
        &self,
        worker: &str,
        queues: &[String],
        max: usize,
        lease: Duration,
    ) -> Result<(Vec<Delivery>, Vec<HeldBack>, Option<DateTime<Utc>>)> {
        let rows = sqlx::query(crate::schema::sql(&self.sql.claim))
            .bind(worker)
            .bind(queues)
            .bind(i32::try_from(max).unwrap_or(i32::MAX))
            .bind(interval(lease))
            .bind(self.max_deliveries())
            .bind(self.cap())
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.fail("claim jobs", e))?;
        let mut claimed = Vec::with_capacity(rows.len());
        let mut held = Vec::new();
        let mut next = None;
        for row in rows {
            let read = |e| self.fail("read a claimed job", e);
            if let Some(d) = delivery(&row).map_err(read)? {
                claimed.push(d);
            } else if let Some(h) = held_back(&row).map_err(read)? {
                held.push(h);
            } else {
                next = row.try_get("next_change").map_err(|e| self.fail("claim", e))?;
            }
        }
        self.churn.fetch_add(claimed.len() as u64, Ordering::Relaxed);
        Ok((claimed, held, next))
    }
}

/// A gate's limits as the SQL functions take them: the interval between starts in
/// microseconds (0 for no rate), the burst, the concurrency (0 for none).
pub(crate) fn gate_limits(gate: &dmq_core::Gate) -> (i64, i32, i32) {
    let interval =
        gate.rate.map_or(0, |rate| i64::try_from(rate.interval_us()).unwrap_or(i64::MAX));
    let burst = i32::try_from(gate.burst.max(1)).unwrap_or(i32::MAX);
    let concurrency = gate.concurrency.map_or(0, |n| i32::try_from(n).unwrap_or(i32::MAX));
    (interval, burst, concurrency)
}

/// A claimed job's row as a delivery; `None` for the row that says none was claimed
/// and for the rows that report held jobs (see [`held_back`]).
fn delivery(row: &PgRow) -> std::result::Result<Option<Delivery>, sqlx::Error> {
    let Some(id) = row.try_get::<Option<Uuid>, _>("id")? else {
        return Ok(None);
    };
    let Some(fence) = row.try_get::<Option<i64>, _>("fence")? else {
        return Ok(None);
    };
    let lease = Lease {
        id: TaskId::from(id),
        queue: row.try_get("queue")?,
        token: row.try_get("token")?,
        fence: u64::try_from(fence).unwrap_or(0),
    };
    let deliveries: i32 = row.try_get("deliveries")?;
    let delivery =
        Delivery::new(lease, row.try_get("payload")?, u32::try_from(deliveries).unwrap_or(0));
    Ok(Some(if row.try_get("isolated")? { delivery.to_run_alone() } else { delivery }))
}

/// A row of the claim that reports a job held back at its gate: it has no fence, and
/// its token says `held:<limit>:<gate>`.
fn held_back(row: &PgRow) -> std::result::Result<Option<HeldBack>, sqlx::Error> {
    let (Some(id), None) =
        (row.try_get::<Option<Uuid>, _>("id")?, row.try_get::<Option<i64>, _>("fence")?)
    else {
        return Ok(None);
    };
    let token: Option<String> = row.try_get("token")?;
    let Some(report) = token.as_deref().and_then(|t| t.strip_prefix("held:")) else {
        return Ok(None);
    };
    let (limit, gate) = report.split_once(':').unwrap_or(("rate", report));
    let limit = if limit == "concurrency" { HeldBy::Concurrency } else { HeldBy::Rate };
    let payload: Vec<u8> = row.try_get("payload")?;
    Ok(Some(HeldBack::new(
        TaskId::from(id),
        row.try_get::<String, _>("queue")?,
        gate,
        limit,
        payload,
    )))
}

/// Deletes lapsed completions and idempotency keys (and results, when the backend
/// shares the schema) now and then, until the broker is dropped.
async fn sweep(inner: std::sync::Weak<Inner>) {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let Some(inner) = inner.upgrade() else { return };
        if let Err(e) = sqlx::query(crate::schema::sql(&inner.sql.sweep))
            .bind(SWEEP_BATCH)
            .execute(&inner.pool)
            .await
        {
            tracing::debug!(error = %e, "the sweep of lapsed rows failed; it runs again later");
        }
    }
}

/// Vacuums the broker's tables whenever it changed enough job rows since it last did
/// (see [`PostgresBroker::with_vacuum_after`]), until the broker is dropped.
async fn vacuum(inner: std::sync::Weak<Inner>) {
    loop {
        tokio::time::sleep(VACUUM_CHECK).await;
        let Some(inner) = inner.upgrade() else { return };
        let after = inner.vacuum_after.load(Ordering::Relaxed);
        if after == 0 || inner.churn.load(Ordering::Relaxed) < after {
            continue;
        }
        inner.churn.store(0, Ordering::Relaxed);
        let sql = format!(
            "VACUUM (SKIP_LOCKED) {}, {}",
            inner.schema.at("jobs"),
            inner.schema.at("events")
        );
        if let Err(e) = sqlx::raw_sql(crate::schema::sql(&sql)).execute(&inner.pool).await {
            tracing::debug!(error = %e, "vacuuming the jobs table failed; it runs again later");
        }
    }
}

#[async_trait]
impl Broker for PostgresBroker {
    async fn enqueue(&self, job: Job) -> Result<()> {
        let inner = &self.inner;
        let (key, ttl) = match &job.idempotency {
            Some((key, ttl)) => (Some(key.as_str()), Some(interval(*ttl))),
            None => (None, None),
        };
        let unique = key.is_some() && job.key_hold != KeyHold::Ttl;
        let statement = match (unique, &job.gate) {
            (true, _) => &inner.sql.enqueue_unique,
            (false, Some(_)) => &inner.sql.enqueue_gated,
            (false, None) => &inner.sql.enqueue,
        };
        let mut query = sqlx::query_scalar(crate::schema::sql(statement))
            .bind(&job.queue)
            .bind(job.id.as_uuid())
            .bind(i16::from(job.priority.min(9)))
            .bind(job.eta)
            .bind(&job.payload)
            .bind(key)
            .bind(ttl);
        if unique {
            query = query.bind(job.key_hold.as_str());
        }
        match &job.gate {
            Some(gate) => {
                let (interval, burst, concurrency) = gate_limits(gate);
                query = query.bind(&gate.name).bind(interval).bind(burst).bind(concurrency);
            }
            None if unique => {
                query =
                    query.bind(None::<&str>).bind(None::<i64>).bind(None::<i32>).bind(None::<i32>);
            }
            None => {}
        }
        // A grouped job gets its group in the same transaction: no claim sees it
        // without.
        let holder: std::result::Result<Option<Uuid>, sqlx::Error> = match &job.group {
            None => query.fetch_one(&inner.pool).await,
            Some(group) => {
                async {
                    let mut tx = inner.pool.begin().await?;
                    let holder = query.fetch_one(&mut *tx).await?;
                    if holder.is_none() {
                        sqlx::query(crate::schema::sql(&inner.sql.set_group))
                            .bind(&job.queue)
                            .bind(job.id.as_uuid())
                            .bind(group)
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await?;
                    Ok(holder)
                }
                .await
            }
        };
        match holder {
            Ok(None) => Ok(()),
            Ok(Some(existing)) => Err(Error::IdempotencyKeyTaken {
                key: key.unwrap_or_default().to_owned(),
                queue: job.queue,
                existing: TaskId::from(existing),
            }),
            Err(e) if sqlstate(&e).as_deref() == Some("23505") => {
                Err(Error::DuplicateJob { id: job.id, queue: job.queue })
            }
            Err(e) => Err(inner.fail("enqueue a job", e)),
        }
    }

    async fn enqueue_batch(&self, jobs: Vec<Job>) -> Result<()> {
        refuse_keys_in_batches(&jobs)?;
        if jobs.is_empty() {
            return Ok(());
        }
        let inner = &self.inner;
        let mut queues = Vec::with_capacity(jobs.len());
        let mut ids = Vec::with_capacity(jobs.len());
        let mut priorities = Vec::with_capacity(jobs.len());
        let mut etas = Vec::with_capacity(jobs.len());
        let mut payloads = Vec::with_capacity(jobs.len());
        let gated = jobs.iter().any(|job| job.gate.is_some());
        let groups: Option<Vec<Option<String>>> = jobs
            .iter()
            .any(|job| job.group.is_some())
            .then(|| jobs.iter().map(|job| job.group.clone()).collect());
        let mut gates: Vec<Option<String>> = Vec::new();
        let (mut intervals, mut bursts, mut concurrencies) = (Vec::new(), Vec::new(), Vec::new());
        for job in jobs {
            if gated {
                let limits = job.gate.as_ref().map_or((0, 1, 0), gate_limits);
                gates.push(job.gate.map(|gate| gate.name));
                intervals.push(limits.0);
                bursts.push(limits.1);
                concurrencies.push(limits.2);
            }
            queues.push(job.queue);
            ids.push(*job.id.as_uuid());
            priorities.push(i16::from(job.priority.min(9)));
            etas.push(job.eta);
            payloads.push(job.payload);
        }
        let statement =
            if gated { &inner.sql.enqueue_batch_gated } else { &inner.sql.enqueue_batch };
        let mut query = sqlx::query(crate::schema::sql(statement))
            .bind(&queues)
            .bind(&ids)
            .bind(&priorities)
            .bind(&etas)
            .bind(&payloads);
        if gated {
            query = query.bind(&gates).bind(&intervals).bind(&bursts).bind(&concurrencies);
        }
        let done = match &groups {
            None => query.execute(&inner.pool).await,
            Some(groups) => {
                async {
                    let mut tx = inner.pool.begin().await?;
                    let done = query.execute(&mut *tx).await?;
                    sqlx::query(crate::schema::sql(&inner.sql.set_groups))
                        .bind(&queues)
                        .bind(&ids)
                        .bind(groups)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(done)
                }
                .await
            }
        };
        match done {
            Ok(_) => Ok(()),
            Err(e) if sqlstate(&e).as_deref() == Some("DQ001") => {
                let db = e.as_database_error();
                let id = db.and_then(|d| d.message().parse::<TaskId>().ok());
                let queue = db
                    .and_then(|d| d.try_downcast_ref::<sqlx::postgres::PgDatabaseError>())
                    .and_then(|d| d.detail().map(str::to_owned));
                match (id, queue) {
                    (Some(id), Some(queue)) => Err(Error::DuplicateJob { id, queue }),
                    _ => Err(inner.fail("enqueue a batch of jobs", e)),
                }
            }
            Err(e) if sqlstate(&e).as_deref() == Some("23505") => {
                Err(Error::DuplicateJob { id: TaskId::from(ids[0]), queue: queues[0].clone() })
            }
            Err(e) => Err(inner.fail("enqueue a batch of jobs", e)),
        }
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
        let inner = &self.inner;
        let give_up = Instant::now() + wait.min(Duration::from_secs(365 * 24 * 3600));
        let mut held = Vec::new();
        loop {
            // Register for the wake-up before looking, so that a job enqueued between
            // the look and the wait is not missed. A claim runs in one statement, so
            // dropping this future loses no job: either the statement committed and
            // the jobs are leased (their leases expire), or it claimed nothing.
            let notified = inner.listener.wakeups.jobs.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (claimed, mut kept, next) = inner.try_claim(worker, queues, max, lease).await?;
            held.append(&mut kept);
            if !claimed.is_empty() {
                return Ok((claimed, held));
            }
            let now = Instant::now();
            if now >= give_up {
                return Ok((Vec::new(), held));
            }
            let until = match next {
                Some(at) => {
                    let ahead = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                    // A little after it falls due, on PostgreSQL's clock.
                    (now + ahead + Duration::from_millis(5)).min(give_up)
                }
                None => give_up,
            };
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(until) => {}
            }
        }
    }

    async fn ack(&self, lease: &Lease) -> Result<()> {
        let acked = Acked {
            queue: lease.queue.clone(),
            id: *lease.id.as_uuid(),
            token: lease.token.clone(),
        };
        if !self.inner.acks.write(acked).await? {
            return Err(Error::LeaseLost { id: lease.id });
        }
        self.inner.churn.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn complete(&self, lease: &Lease, remember: Duration) -> Result<()> {
        let query = held(&self.inner.sql.complete, lease).bind(interval(remember));
        self.inner.settle("complete a job", query, lease).await
    }

    async fn is_complete(&self, queue: &str, id: TaskId) -> Result<bool> {
        sqlx::query_scalar(crate::schema::sql(&self.inner.sql.is_complete))
            .bind(queue)
            .bind(id.as_uuid())
            .fetch_one(&self.inner.pool)
            .await
            .map_err(|e| self.inner.fail("read a completion", e))
    }

    async fn retry(&self, lease: &Lease, payload: Vec<u8>, eta: DateTime<Utc>) -> Result<()> {
        let query = held(&self.inner.sql.retry, lease).bind(payload).bind(eta);
        self.inner.settle("retry a job", query, lease).await
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let query = held(&self.inner.sql.release, lease);
        self.inner.settle("release a job", query, lease).await
    }

    async fn dead_letter(&self, lease: &Lease, reason: &str) -> Result<()> {
        let inner = &self.inner;
        let query = held(&inner.sql.dead_letter, lease).bind(reason).bind(inner.cap());
        let rows =
            query.fetch_all(&inner.pool).await.map_err(|e| inner.fail("dead-letter a job", e))?;
        if rows.is_empty() {
            return Err(Error::LeaseLost { id: lease.id });
        }
        Ok(())
    }

    async fn renew(&self, lease: &Lease, lease_for: Duration) -> Result<()> {
        let query = held(&self.inner.sql.renew, lease).bind(interval(lease_for));
        self.inner.settle("renew a lease", query, lease).await
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.inner.pool)
            .await
            .map(drop)
            .map_err(|e| self.inner.fail("ping", e))
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

/// One acknowledgement, waiting for its statement.
struct Acked {
    queue: String,
    id: Uuid,
    token: String,
}

impl Write for Acked {
    fn id(&self) -> Uuid {
        self.id
    }
}

/// Deletes a batch of acknowledged jobs in one statement, each only while its lease
/// holds (its token matches, as in `Sql::new`); returns the ids it deleted.
fn ack_all(pool: PgPool, jobs: &str, shown: String) -> WriteAll<Acked> {
    let sql: Arc<str> = format!(
        "DELETE FROM {jobs} j USING unnest($1::text[], $2::uuid[], $3::text[]) AS a(queue, id, token) \
         WHERE j.queue = a.queue AND j.id = a.id AND j.token = a.token \
         RETURNING j.id"
    )
    .into();
    Arc::new(move |acks: Vec<Acked>| {
        let (pool, sql, shown) = (pool.clone(), Arc::clone(&sql), shown.clone());
        Box::pin(async move {
            let n = acks.len();
            let (mut queues, mut ids, mut tokens) =
                (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
            for a in acks {
                queues.push(a.queue);
                ids.push(a.id);
                tokens.push(a.token);
            }
            let deleted: Vec<Uuid> = sqlx::query_scalar(crate::schema::sql(&sql))
                .bind(&queues)
                .bind(&ids)
                .bind(&tokens)
                .fetch_all(&pool)
                .await
                .map_err(|e| {
                    let what = if n == 1 { "a job".to_owned() } else { format!("{n} jobs") };
                    PostgresFailure::new(
                        &format!("could not acknowledge {what} on PostgreSQL at {shown}"),
                        e,
                    )
                })?;
            Ok(deleted.into_iter().collect())
        })
    })
}

/// `sql` bound to the lease's queue, id and token ($1, $2, $3).
fn held<'q>(
    sql: &'q str,
    lease: &'q Lease,
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(crate::schema::sql(sql))
        .bind(&lease.queue)
        .bind(lease.id.as_uuid())
        .bind(&lease.token)
}
