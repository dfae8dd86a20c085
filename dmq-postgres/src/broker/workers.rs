//! The worker registry in the table `workers`, and the reaper (the SQL function
//! `take_back`, one reaper at a time under a transaction lock).

use std::time::Duration;

use async_trait::async_trait;
use dmq_core::{Result, WorkerInfo, WorkerRegistry, WorkerStatus};
use sqlx::Row;

use super::PostgresBroker;

#[async_trait]
impl WorkerRegistry for PostgresBroker {
    async fn heartbeat(&self, worker: &WorkerInfo, ttl: Duration) -> Result<()> {
        let inner = &self.inner;
        let mut tx = inner.pool.begin().await.map_err(|e| inner.fail("heartbeat", e))?;
        sqlx::query(crate::schema::sql(&format!(
            "INSERT INTO {} (id, hostname, pid, queues, concurrency, started_at, running, ttl, \
             alive_until) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now() + $8) \
             ON CONFLICT (id) DO UPDATE SET hostname = $2, pid = $3, queues = $4, \
             concurrency = $5, started_at = $6, running = $7, ttl = $8, alive_until = now() + $8",
            inner.schema.at("workers")
        )))
        .bind(&worker.id)
        .bind(&worker.hostname)
        .bind(i64::from(worker.pid))
        .bind(&worker.queues)
        .bind(i64::try_from(worker.concurrency).unwrap_or(i64::MAX))
        .bind(worker.started_at)
        .bind(i64::from(worker.running))
        .bind(super::interval(ttl))
        .execute(&mut *tx)
        .await
        .map_err(|e| inner.fail("heartbeat", e))?;
        // A queue a worker takes jobs from is a queue the registry lists.
        sqlx::query(crate::schema::sql(&format!(
            "INSERT INTO {} (name) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
            inner.schema.at("queues")
        )))
        .bind(&worker.queues)
        .execute(&mut *tx)
        .await
        .map_err(|e| inner.fail("heartbeat", e))?;
        tx.commit().await.map_err(|e| inner.fail("heartbeat", e))
    }

    async fn deregister(&self, worker: &str) -> Result<()> {
        let inner = &self.inner;
        sqlx::query(crate::schema::sql(&format!(
            "DELETE FROM {} WHERE id = $1",
            inner.schema.at("workers")
        )))
        .bind(worker)
        .execute(&inner.pool)
        .await
        .map(drop)
        .map_err(|e| inner.fail("deregister a worker", e))
    }

    async fn workers(&self) -> Result<Vec<WorkerStatus>> {
        let inner = &self.inner;
        let rows = sqlx::query(crate::schema::sql(&format!(
            "SELECT id, hostname, pid, queues, concurrency, started_at, running, alive_until \
             FROM {} WHERE alive_until > now() ORDER BY id",
            inner.schema.at("workers")
        )))
        .fetch_all(&inner.pool)
        .await
        .map_err(|e| inner.fail("list workers", e))?;
        let read = |row: &sqlx::postgres::PgRow| -> std::result::Result<WorkerStatus, sqlx::Error> {
            let info = WorkerInfo::new(
                row.try_get::<String, _>("id")?,
                row.try_get::<String, _>("hostname")?,
                u32::try_from(row.try_get::<i64, _>("pid")?).unwrap_or(0),
                row.try_get("queues")?,
                usize::try_from(row.try_get::<i64, _>("concurrency")?).unwrap_or(0),
                row.try_get("started_at")?,
            )
            .with_running(u32::try_from(row.try_get::<i64, _>("running")?).unwrap_or(0));
            Ok(WorkerStatus::new(info, row.try_get("alive_until")?))
        };
        rows.iter().map(|row| read(row).map_err(|e| inner.fail("read a worker", e))).collect()
    }

    async fn reap(&self, queues: &[String]) -> Result<u64> {
        let inner = &self.inner;
        let workers = inner.schema.at("workers");
        let jobs = inner.schema.at("jobs");
        let mut tx = inner.pool.begin().await.map_err(|e| inner.fail("reap", e))?;
        // One reaper at a time; another call meanwhile returns at once.
        let lock: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtext($1 || '.reaper'))")
                .bind(inner.schema.name())
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| inner.fail("reap", e))?;
        if !lock {
            return Ok(0);
        }
        let moved: i64 = sqlx::query_scalar(crate::schema::sql(&format!(
            "SELECT {}($1, true, $2, $3)",
            inner.schema.at("take_back")
        )))
        .bind(queues)
        .bind(inner.max_deliveries())
        .bind(inner.cap())
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| inner.fail("reap", e))?;
        // Workers whose heartbeat lapsed and that hold no job any more are forgotten.
        sqlx::query(crate::schema::sql(&format!(
            "DELETE FROM {workers} w WHERE w.alive_until <= now() AND NOT EXISTS \
             (SELECT 1 FROM {jobs} j WHERE j.state = 'running' AND j.worker = w.id)"
        )))
        .execute(&mut *tx)
        .await
        .map_err(|e| inner.fail("reap", e))?;
        tx.commit().await.map_err(|e| inner.fail("reap", e))?;
        Ok(u64::try_from(moved).unwrap_or(0))
    }
}
