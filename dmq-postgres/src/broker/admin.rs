//! What operators read and do, on the broker's tables: queues and their figures,
//! dead letters, purges, deleting a queue, cancelling a job, finding one by id.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use dmq_core::{
    BrokerAdmin, Cancelled, DeadLetter, Error, FoundJob, JobState, Lease, QueueDeleted, QueueStats,
    Result, TaskId,
};
use sqlx::Row;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use super::PostgresBroker;

fn count(row: &PgRow, column: &str) -> u64 {
    u64::try_from(row.try_get::<i64, _>(column).unwrap_or(0)).unwrap_or(0)
}

fn letter(row: &PgRow) -> std::result::Result<DeadLetter, sqlx::Error> {
    Ok(DeadLetter::new(
        TaskId::from(row.try_get::<Uuid, _>("id")?),
        row.try_get::<String, _>("queue")?,
        row.try_get::<Vec<u8>, _>("payload")?,
        row.try_get::<String, _>("reason")?,
        row.try_get::<DateTime<Utc>, _>("at")?,
    ))
}

impl PostgresBroker {
    /// `queue`, and when its name names no partition, every partition of it the queue
    /// registry lists (`queue#0`, `queue#1`, ...).
    fn queue_and_partitions(&self) -> String {
        format!(
            "SELECT name FROM {} WHERE name = $1 OR (strpos($1, '#') = 0 \
             AND left(name, length($1) + 1) = $1 || '#' \
             AND substr(name, length($1) + 2) ~ '^[0-9]+$')",
            self.inner.schema.at("queues")
        )
    }
}

#[async_trait]
impl BrokerAdmin for PostgresBroker {
    async fn queues(&self) -> Result<Vec<String>> {
        let inner = &self.inner;
        sqlx::query_scalar(crate::schema::sql(&format!(
            "SELECT name FROM {} ORDER BY name COLLATE \"C\"",
            inner.schema.at("queues")
        )))
        .fetch_all(&inner.pool)
        .await
        .map_err(|e| inner.fail("list queues", e))
    }

    async fn queue_stats(&self, queue: &str) -> Result<QueueStats> {
        let inner = &self.inner;
        let row = sqlx::query(crate::schema::sql(&format!(
            "SELECT count(*) FILTER (WHERE state = 'ready' \
                 OR (state = 'delayed' AND due_at <= now())) AS ready, \
             count(*) FILTER (WHERE state = 'ready' AND suspect) AS suspect, \
             count(*) FILTER (WHERE state = 'ready' AND NOT suspect AND gate IS NOT NULL) \
                 AS gated, \
             count(*) FILTER (WHERE state = 'delayed' AND due_at > now()) AS delayed, \
             count(*) FILTER (WHERE state = 'running') AS in_flight, \
             (SELECT count(*) FROM {dead} WHERE queue = $1) AS dead, \
             (SELECT coalesce(max(dead_dropped), 0) FROM {queues} WHERE name = $1) AS dropped, \
             (SELECT paused_at FROM {queues} WHERE name = $1) AS paused_at \
             FROM {jobs} WHERE queue = $1",
            dead = inner.schema.at("dead_letters"),
            queues = inner.schema.at("queues"),
            jobs = inner.schema.at("jobs"),
        )))
        .bind(queue)
        .fetch_one(&inner.pool)
        .await
        .map_err(|e| inner.fail("read a queue's figures", e))?;
        let mut stats = QueueStats::default();
        stats.ready = count(&row, "ready");
        stats.suspect = count(&row, "suspect");
        stats.gated = count(&row, "gated");
        stats.delayed = count(&row, "delayed");
        stats.in_flight = count(&row, "in_flight");
        stats.dead = count(&row, "dead");
        stats.dead_dropped = count(&row, "dropped");
        stats.paused_since =
            row.try_get("paused_at").map_err(|e| inner.fail("read a queue's figures", e))?;
        Ok(stats)
    }

    /// The queue's rows of `gates`, each with its jobs running and ready (the
    /// indexes `jobs_gate_running` and `jobs_gated` count them).
    async fn gates(&self, queue: &str) -> Result<Vec<dmq_core::GateStatus>> {
        let inner = &self.inner;
        let jobs = inner.schema.at("jobs");
        let sql = format!(
            "SELECT g.name, g.interval_us, g.burst, g.concurrency, \
                    CASE WHEN g.next_open > now() THEN g.next_open END AS next_open, \
                    (SELECT count(*) FROM {jobs} r WHERE r.queue = g.queue AND r.gate = g.name \
                       AND r.state = 'running') AS running, \
                    (SELECT count(*) FROM {jobs} w WHERE w.queue = g.queue AND w.gate = g.name \
                       AND w.state = 'ready' AND NOT w.suspect) AS waiting \
             FROM {} g WHERE g.queue = $1 ORDER BY g.name",
            inner.schema.at("gates")
        );
        let rows = sqlx::query(crate::schema::sql(&sql))
            .bind(queue)
            .fetch_all(&inner.pool)
            .await
            .map_err(|e| inner.fail("read a queue's gates", e))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let read = |e| inner.fail("read a queue's gates", e);
            let interval: i64 = row.try_get("interval_us").map_err(read)?;
            let burst: i32 = row.try_get("burst").map_err(read)?;
            let concurrency: i32 = row.try_get("concurrency").map_err(read)?;
            let mut status = dmq_core::GateStatus::new(dmq_core::Gate::new(
                row.try_get::<String, _>("name").map_err(read)?,
                dmq_core::RateLimit::of_interval_us(u64::try_from(interval).unwrap_or(0)),
                u32::try_from(burst).unwrap_or(1),
                u32::try_from(concurrency).ok().filter(|n| *n > 0),
            ));
            status.running = count(&row, "running");
            status.waiting = count(&row, "waiting");
            status.next_start = row.try_get("next_open").map_err(read)?;
            out.push(status);
        }
        Ok(out)
    }

    /// Sets the queue's `paused_at` (registering the queue), unless it is set; the
    /// claim function passes paused queues by.
    async fn pause(&self, queue: &str) -> Result<bool> {
        let inner = &self.inner;
        let changed = sqlx::query(crate::schema::sql(&format!(
            "INSERT INTO {queues} AS q (name, paused_at) VALUES ($1, now()) \
             ON CONFLICT (name) DO UPDATE SET paused_at = now() WHERE q.paused_at IS NULL",
            queues = inner.schema.at("queues"),
        )))
        .bind(queue)
        .execute(&inner.pool)
        .await
        .map_err(|e| inner.fail("pause a queue", e))?;
        Ok(changed.rows_affected() == 1)
    }

    /// Clears the queue's `paused_at` and, in the same transaction, notifies its idle
    /// claimers.
    async fn resume(&self, queue: &str) -> Result<bool> {
        let inner = &self.inner;
        let resumed: i64 = sqlx::query_scalar(crate::schema::sql(&format!(
            "WITH resumed AS (UPDATE {queues} SET paused_at = NULL \
                 WHERE name = $1 AND paused_at IS NOT NULL RETURNING name) \
             SELECT count(*) FROM (SELECT pg_notify($2, name) FROM resumed) notified",
            queues = inner.schema.at("queues"),
        )))
        .bind(queue)
        .bind(inner.schema.channel("jobs"))
        .fetch_one(&inner.pool)
        .await
        .map_err(|e| inner.fail("resume a queue", e))?;
        Ok(resumed > 0)
    }

    async fn purge(&self, queue: &str) -> Result<u64> {
        let inner = &self.inner;
        let done = sqlx::query(crate::schema::sql(&format!(
            "DELETE FROM {} WHERE queue = $1 AND state IN ('ready', 'delayed')",
            inner.schema.at("jobs")
        )))
        .bind(queue)
        .execute(&inner.pool)
        .await
        .map_err(|e| inner.fail("purge a queue", e))?;
        Ok(done.rows_affected())
    }

    async fn delete_queue(&self, queue: &str, force: bool) -> Result<QueueDeleted> {
        let inner = &self.inner;
        let fail = |e| inner.fail("delete a queue", e);
        let mut tx = inner.pool.begin().await.map_err(fail)?;
        let targets: Vec<String> = sqlx::query_scalar(crate::schema::sql(&format!(
            "{} FOR UPDATE",
            self.queue_and_partitions()
        )))
        .bind(queue)
        .fetch_all(&mut *tx)
        .await
        .map_err(fail)?;
        // Every job of the queue is locked first, so no claim takes one meanwhile.
        let row = sqlx::query(crate::schema::sql(&format!(
            "WITH held AS (SELECT state, due_at FROM {} WHERE queue = ANY ($1) FOR UPDATE) \
             SELECT count(*) FILTER (WHERE state = 'running') AS in_flight, \
             count(*) FILTER (WHERE state = 'ready' OR (state = 'delayed' AND due_at <= now())) \
                 AS waiting, \
             count(*) FILTER (WHERE state = 'delayed' AND due_at > now()) AS delayed \
             FROM held",
            inner.schema.at("jobs")
        )))
        .bind(&targets)
        .fetch_one(&mut *tx)
        .await
        .map_err(fail)?;
        let mut deleted = QueueDeleted::default();
        deleted.in_flight = count(&row, "in_flight");
        deleted.waiting = count(&row, "waiting");
        deleted.delayed = count(&row, "delayed");
        if deleted.in_flight > 0 && !force {
            return Err(Error::QueueBusy { queue: queue.to_owned(), in_flight: deleted.in_flight });
        }
        for table in ["jobs", "completions"] {
            sqlx::query(crate::schema::sql(&format!(
                "DELETE FROM {} WHERE queue = ANY ($1)",
                inner.schema.at(table)
            )))
            .bind(&targets)
            .execute(&mut *tx)
            .await
            .map_err(fail)?;
        }
        deleted.dead_letters = sqlx::query(crate::schema::sql(&format!(
            "DELETE FROM {} WHERE queue = ANY ($1)",
            inner.schema.at("dead_letters")
        )))
        .bind(&targets)
        .execute(&mut *tx)
        .await
        .map_err(fail)?
        .rows_affected();
        sqlx::query(crate::schema::sql(&format!(
            "DELETE FROM {} WHERE name = ANY ($1)",
            inner.schema.at("queues")
        )))
        .bind(&targets)
        .execute(&mut *tx)
        .await
        .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        Ok(deleted)
    }

    async fn cancel(&self, queue: &str, id: TaskId) -> Result<Cancelled> {
        let inner = &self.inner;
        let jobs = inner.schema.at("jobs");
        let row = sqlx::query(crate::schema::sql(&format!(
            "WITH gone AS (DELETE FROM {jobs} WHERE queue = $1 AND id = $2 \
                 AND state IN ('ready', 'delayed') RETURNING payload) \
             SELECT (SELECT payload FROM gone) AS payload, \
                    EXISTS (SELECT 1 FROM {jobs} WHERE queue = $1 AND id = $2 \
                            AND state = 'running') AS running"
        )))
        .bind(queue)
        .bind(id.as_uuid())
        .fetch_one(&inner.pool)
        .await
        .map_err(|e| inner.fail("cancel a job", e))?;
        let payload: Option<Vec<u8>> =
            row.try_get("payload").map_err(|e| inner.fail("cancel a job", e))?;
        let running: bool = row.try_get("running").map_err(|e| inner.fail("cancel a job", e))?;
        Ok(match payload {
            Some(payload) => Cancelled::Removed { payload },
            None if running => Cancelled::Running,
            None => Cancelled::NotFound,
        })
    }

    async fn dead_letters(
        &self,
        queue: &str,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        let inner = &self.inner;
        let rows = sqlx::query(crate::schema::sql(&format!(
            "SELECT queue, id, payload, reason, at FROM {} WHERE queue = $1 \
             ORDER BY position DESC OFFSET $2 LIMIT $3",
            inner.schema.at("dead_letters")
        )))
        .bind(queue)
        .bind(i64::try_from(offset).unwrap_or(i64::MAX))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&inner.pool)
        .await
        .map_err(|e| inner.fail("list dead letters", e))?;
        rows.iter()
            .map(|row| letter(row).map_err(|e| inner.fail("read a dead letter", e)))
            .collect()
    }

    async fn take_dead_letter(&self, queue: &str, id: TaskId) -> Result<Option<DeadLetter>> {
        let inner = &self.inner;
        let dead = inner.schema.at("dead_letters");
        let row = sqlx::query(crate::schema::sql(&format!(
            "DELETE FROM {dead} WHERE position = (SELECT position FROM {dead} \
             WHERE queue = $1 AND id = $2 ORDER BY position DESC LIMIT 1) \
             RETURNING queue, id, payload, reason, at"
        )))
        .bind(queue)
        .bind(id.as_uuid())
        .fetch_optional(&inner.pool)
        .await
        .map_err(|e| inner.fail("take a dead letter", e))?;
        row.map(|row| letter(&row).map_err(|e| inner.fail("read a dead letter", e))).transpose()
    }

    async fn purge_dead_letters(&self, queue: &str) -> Result<u64> {
        let inner = &self.inner;
        let done = sqlx::query(crate::schema::sql(&format!(
            "DELETE FROM {} WHERE queue = $1",
            inner.schema.at("dead_letters")
        )))
        .bind(queue)
        .execute(&inner.pool)
        .await
        .map_err(|e| inner.fail("purge dead letters", e))?;
        Ok(done.rows_affected())
    }

    async fn find_job(&self, id: TaskId, queues: &[String]) -> Result<Option<FoundJob>> {
        let inner = &self.inner;
        let fail = |e| inner.fail("find a job", e);
        let row = sqlx::query(crate::schema::sql(&format!(
            "SELECT queue, state, suspect, due_at, lease_until, payload FROM {} \
             WHERE id = $1 AND (cardinality($2::text[]) = 0 OR queue = ANY ($2)) LIMIT 1",
            inner.schema.at("jobs")
        )))
        .bind(id.as_uuid())
        .bind(queues)
        .fetch_optional(&inner.pool)
        .await
        .map_err(fail)?;
        if let Some(row) = row {
            let state: String = row.try_get("state").map_err(fail)?;
            let suspect: bool = row.try_get("suspect").map_err(fail)?;
            let due: DateTime<Utc> = row.try_get("due_at").map_err(fail)?;
            let (state, at) = match state.as_str() {
                "running" => (JobState::InFlight, row.try_get("lease_until").map_err(fail)?),
                "delayed" if due > Utc::now() => (JobState::Delayed, Some(due)),
                _ if suspect => (JobState::Suspect, None),
                _ => (JobState::Ready, None),
            };
            let queue: String = row.try_get("queue").map_err(fail)?;
            let payload: Vec<u8> = row.try_get("payload").map_err(fail)?;
            return Ok(Some(FoundJob::new(id, queue, state, at, payload)));
        }
        let row = sqlx::query(crate::schema::sql(&format!(
            "SELECT queue, id, payload, reason, at FROM {} \
             WHERE id = $1 AND (cardinality($2::text[]) = 0 OR queue = ANY ($2)) \
             ORDER BY position DESC LIMIT 1",
            inner.schema.at("dead_letters")
        )))
        .bind(id.as_uuid())
        .bind(queues)
        .fetch_optional(&inner.pool)
        .await
        .map_err(fail)?;
        Ok(match row {
            Some(row) => {
                let dead = letter(&row).map_err(fail)?;
                Some(
                    FoundJob::new(
                        id,
                        dead.queue,
                        JobState::DeadLettered,
                        Some(dead.at),
                        dead.payload,
                    )
                    .with_reason(dead.reason),
                )
            }
            None => None,
        })
    }

    async fn leased_payload(&self, lease: &Lease) -> Result<Option<Vec<u8>>> {
        let inner = &self.inner;
        sqlx::query_scalar(crate::schema::sql(&format!(
            "SELECT payload FROM {} WHERE queue = $1 AND id = $2 AND state = 'running' \
             AND token = $3 AND fence = $4",
            inner.schema.at("jobs")
        )))
        .bind(&lease.queue)
        .bind(lease.id.as_uuid())
        .bind(&lease.token)
        .bind(i64::try_from(lease.fence).unwrap_or(-1))
        .fetch_optional(&inner.pool)
        .await
        .map_err(|e| inner.fail("read a leased job", e))
    }
}
