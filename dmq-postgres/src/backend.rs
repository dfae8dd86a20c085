//! The PostgreSQL result backend: outcomes in the table `results` until their TTL,
//! waiters woken through one listening connection per backend, lapsed rows swept in
//! batches.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use dmq_core::{Error, Result, ResultBackend, TaskId, TaskOutcome};
use sqlx::postgres::PgPool;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;

use crate::batch::{Coalescer, Write, WriteAll};
use crate::broker::interval;
use crate::error::{PostgresFailure, pg_error};
use crate::listen::Listener;
use crate::schema::{self, DEFAULT_SCHEMA, Schema, redact};

/// How often the backend deletes lapsed results, unless told otherwise.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// How many lapsed results one sweep deletes at most (it runs again at once while
/// it finds that many).
const SWEEP_BATCH: i32 = 1_000;

/// A [`ResultBackend`] on PostgreSQL, in the table `results` of the namespace's schema
/// (`dmq` by default). Works with any broker: the Redis broker too.
///
/// ```no_run
/// use dmq_core::Manager;
/// use dmq_postgres::PostgresBackend;
/// use dmq_redis::RedisBroker;
///
/// # async fn demo() -> dmq_core::Result<()> {
/// let manager = Manager::builder()
///     .broker(RedisBroker::connect("redis://127.0.0.1:6379").await?)
///     .backend(PostgresBackend::connect("postgres://postgres@127.0.0.1/app").await?)
///     .build()?;
/// # let _ = manager;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct PostgresBackend {
    inner: Arc<Inner>,
    sweeper: JoinHandle<()>,
}

#[derive(Debug)]
struct Inner {
    pool: PgPool,
    schema: Schema,
    listener: Listener,
    shown: String,
    store: String,
    /// Fenced stores, the ones workers make, sent in batches (see `batch.rs`).
    stores: Coalescer<Stored>,
    get: String,
    sweep: String,
    /// How often the sweeper runs, in milliseconds.
    sweep_every_ms: AtomicU64,
    /// Wakes the sweeper when its interval changes.
    sweep_changed: tokio::sync::Notify,
}

impl Drop for PostgresBackend {
    fn drop(&mut self) {
        self.sweeper.abort();
    }
}

impl PostgresBackend {
    /// Connects to the PostgreSQL at `url` in the default namespace (schema `dmq`),
    /// making and migrating the schema when needed.
    ///
    /// # Errors
    ///
    /// When the URL is not a PostgreSQL URL or the server cannot be reached.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with_namespace(url, DEFAULT_SCHEMA).await
    }

    /// Connects as [`connect`](PostgresBackend::connect) does, keeping results in
    /// the schema named `namespace`.
    ///
    /// # Errors
    ///
    /// As [`connect`](PostgresBackend::connect), and [`Error::InvalidArgument`] for a
    /// namespace that cannot name a schema.
    pub async fn connect_with_namespace(url: &str, namespace: &str) -> Result<Self> {
        let schema = Schema::new(namespace)?;
        schema::migrate(url, &schema, None).await?;
        let pool = schema::pool(url, schema::default_pool_size()).await?;
        let listener = Listener::start(&pool, &schema, &["results"]).await?;
        let results = schema.at("results");
        let upsert = format!(
            "INSERT INTO {results} AS r (id, state, fence, outcome, expires_at) \
             VALUES ($1, $2, $3, $4, now() + $5) \
             ON CONFLICT (id) DO UPDATE SET state = $2, fence = $3, outcome = $4, \
             stored_at = now(), expires_at = now() + $5"
        );
        let inner = Arc::new(Inner {
            stores: Coalescer::start(store_fenced(pool.clone(), &results, redact(url))),
            store: upsert,
            get: format!("SELECT outcome FROM {results} WHERE id = $1 AND expires_at > now()"),
            sweep: format!("SELECT {}($1)", schema.at("sweep")),
            sweep_every_ms: AtomicU64::new(millis(SWEEP_EVERY)),
            sweep_changed: tokio::sync::Notify::new(),
            pool,
            schema,
            listener,
            shown: redact(url),
        });
        let sweeper = tokio::spawn(sweep(Arc::downgrade(&inner)));
        Ok(PostgresBackend { inner, sweeper })
    }

    /// The same backend, deleting lapsed results every `every` (30 s by default).
    /// Reads never return a lapsed result whenever the sweep runs; the sweep only
    /// gives their room back.
    #[must_use]
    pub fn with_sweep_every(self, every: Duration) -> Self {
        self.inner.sweep_every_ms.store(millis(every).max(1), Ordering::Relaxed);
        self.inner.sweep_changed.notify_waiters();
        self
    }

    /// Deletes the lapsed results now (with the schema's lapsed completions and
    /// idempotency keys), a thousand rows a statement, through the index on their
    /// expiry: never a scan of the whole table. Returns how many rows it deleted. The
    /// backend does this on its own every 30 s ([`with_sweep_every`](Self::with_sweep_every)).
    ///
    /// # Errors
    ///
    /// When PostgreSQL cannot be reached.
    pub async fn sweep(&self) -> Result<u64> {
        self.inner.sweep().await
    }

    /// The connection pool.
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The schema the results live in (its namespace).
    #[must_use]
    pub fn schema(&self) -> &str {
        self.inner.schema.name()
    }
}

/// One fenced store of a result, waiting for its statement.
struct Stored {
    id: Uuid,
    state: &'static str,
    fence: i64,
    outcome: Vec<u8>,
    /// The TTL in microseconds.
    ttl: i64,
}

impl Write for Stored {
    fn id(&self) -> Uuid {
        self.id
    }
}

fn encode(outcome: &TaskOutcome) -> Result<Vec<u8>> {
    rmp_serde::to_vec_named(outcome)
        .map_err(|e| Error::Encode { what: "a task's outcome", reason: e.to_string() })
}

/// Stores a batch of fenced results in one statement, by the rule of
/// `dmq_core::may_replace` in SQL: a lapsed result counts as none; a success may be
/// replaced only by the run that stored it; anything else by that run or a later one.
/// Returns the ids it stored.
fn store_fenced(pool: PgPool, results: &str, shown: String) -> WriteAll<Stored> {
    let sql: Arc<str> = format!(
        "INSERT INTO {results} AS r (id, state, fence, outcome, expires_at) \
         SELECT w.id, w.state, w.fence, w.outcome, now() + w.ttl * interval '1 microsecond' \
         FROM unnest($1::uuid[], $2::text[], $3::int8[], $4::bytea[], $5::int8[]) \
              AS w(id, state, fence, outcome, ttl) \
         ON CONFLICT (id) DO UPDATE SET state = excluded.state, fence = excluded.fence, \
             outcome = excluded.outcome, stored_at = now(), expires_at = excluded.expires_at \
         WHERE r.expires_at <= now() \
            OR (r.state = 'succeeded' AND r.fence = excluded.fence) \
            OR (r.state <> 'succeeded' AND r.fence <= excluded.fence) \
         RETURNING r.id"
    )
    .into();
    Arc::new(move |writes: Vec<Stored>| {
        let (pool, sql, shown) = (pool.clone(), Arc::clone(&sql), shown.clone());
        Box::pin(async move {
            let n = writes.len();
            let (mut ids, mut states, mut fences, mut outcomes, mut ttls) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            for w in writes {
                ids.push(w.id);
                states.push(w.state);
                fences.push(w.fence);
                outcomes.push(w.outcome);
                ttls.push(w.ttl);
            }
            let stored: Vec<Uuid> = sqlx::query_scalar(crate::schema::sql(&sql))
                .bind(&ids)
                .bind(&states)
                .bind(&fences)
                .bind(&outcomes)
                .bind(&ttls)
                .fetch_all(&pool)
                .await
                .map_err(|e| {
                    let what = if n == 1 {
                        format!("store the result of task {}", TaskId::from(ids[0]))
                    } else {
                        format!("store the results of {n} tasks")
                    };
                    PostgresFailure::new(&format!("could not {what} on PostgreSQL at {shown}"), e)
                })?;
            Ok(stored.into_iter().collect())
        })
    })
}

impl Inner {
    fn fail(&self, what: &str, e: sqlx::Error) -> Error {
        pg_error(&format!("could not {what} on PostgreSQL at {}", self.shown), e)
    }

    async fn sweep(&self) -> Result<u64> {
        let mut total = 0;
        loop {
            let swept: i64 = sqlx::query_scalar(crate::schema::sql(&self.sweep))
                .bind(SWEEP_BATCH)
                .fetch_one(&self.pool)
                .await
                .map_err(|e| self.fail("delete lapsed results", e))?;
            total += u64::try_from(swept).unwrap_or(0);
            if swept < i64::from(SWEEP_BATCH) {
                return Ok(total);
            }
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Deletes lapsed results in batches now and then, until the backend is dropped.
async fn sweep(inner: std::sync::Weak<Inner>) {
    loop {
        // Held while it sleeps: dropping the backend aborts this task.
        let Some(inner) = inner.upgrade() else { return };
        let every = Duration::from_millis(inner.sweep_every_ms.load(Ordering::Relaxed));
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            // A new interval counts from now.
            () = inner.sweep_changed.notified() => continue,
        }
        if let Err(e) = inner.sweep().await {
            tracing::debug!(error = %e, "the sweep of lapsed results failed; it runs again later");
        }
    }
}

#[async_trait]
impl ResultBackend for PostgresBackend {
    async fn store(&self, id: TaskId, outcome: &TaskOutcome, ttl: Duration) -> Result<()> {
        let inner = &self.inner;
        sqlx::query(crate::schema::sql(&inner.store))
            .bind(id.as_uuid())
            .bind(outcome.state.as_str())
            .bind(0_i64)
            .bind(encode(outcome)?)
            .bind(interval(ttl))
            .execute(&inner.pool)
            .await
            .map_err(|e| inner.fail(&format!("store the result of task {id}"), e))?;
        Ok(())
    }

    async fn store_fenced(
        &self,
        id: TaskId,
        outcome: &TaskOutcome,
        ttl: Duration,
        fence: u64,
    ) -> Result<bool> {
        let micros = i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX / 2).min(i64::MAX / 2);
        let stored = Stored {
            id: *id.as_uuid(),
            state: outcome.state.as_str(),
            fence: i64::try_from(fence).unwrap_or(i64::MAX),
            outcome: encode(outcome)?,
            ttl: micros,
        };
        self.inner.stores.write(stored).await
    }

    async fn get(&self, id: TaskId) -> Result<Option<TaskOutcome>> {
        let inner = &self.inner;
        let bytes: Option<Vec<u8>> = sqlx::query_scalar(crate::schema::sql(&inner.get))
            .bind(id.as_uuid())
            .fetch_optional(&inner.pool)
            .await
            .map_err(|e| inner.fail(&format!("read the result of task {id}"), e))?;
        bytes
            .map(|bytes| {
                rmp_serde::from_slice(&bytes).map_err(|e| {
                    Error::backend(
                        format!(
                            "the result of task {id} in PostgreSQL at {} does not decode ({e}); \
                             it was written by an incompatible version of dmq or by another \
                             program",
                            inner.shown
                        ),
                        false,
                    )
                })
            })
            .transpose()
    }

    async fn wait(&self, id: TaskId, timeout: Duration) -> Result<Option<TaskOutcome>> {
        let now = Instant::now();
        let deadline = now.checked_add(timeout).unwrap_or(now + Duration::from_secs(1 << 30));
        let wakeups = &self.inner.listener.wakeups;
        let waiter = wakeups.result_waiter(id);
        let outcome = async {
            loop {
                // Interest first: a result stored after the look wakes this waiter,
                // and one stored before it is found by it.
                let notified = waiter.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if let Some(outcome) = self.get(id).await? {
                    return Ok(Some(outcome));
                }
                if tokio::time::timeout_at(deadline, notified).await.is_err() {
                    return self.get(id).await;
                }
            }
        }
        .await;
        wakeups.done_waiting(id, waiter);
        outcome
    }
}
