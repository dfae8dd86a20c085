//! Periodic schedules' shared state in the table `schedules`: each fire time claimed
//! once, by one conditional update.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use dmq_core::{Result, ScheduleState, ScheduleStore};
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::PostgresBroker;

fn state(row: &PgRow) -> std::result::Result<ScheduleState, sqlx::Error> {
    Ok(ScheduleState::new(
        row.try_get::<String, _>("name")?,
        row.try_get("since")?,
        row.try_get("last_fire")?,
        row.try_get("next_fire")?,
    ))
}

#[async_trait]
impl ScheduleStore for PostgresBroker {
    async fn schedule_begin(
        &self,
        name: &str,
        next: Option<DateTime<Utc>>,
    ) -> Result<ScheduleState> {
        let inner = &self.inner;
        let table = inner.schema.at("schedules");
        let row = sqlx::query(crate::schema::sql(&format!(
            "INSERT INTO {table} AS s (name, next_fire) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET next_fire = coalesce($2, s.next_fire) \
             RETURNING name, since, last_fire, next_fire"
        )))
        .bind(name)
        .bind(next)
        .fetch_one(&inner.pool)
        .await
        .map_err(|e| inner.fail("register a schedule", e))?;
        state(&row).map_err(|e| inner.fail("read a schedule", e))
    }

    async fn schedule_fire(
        &self,
        name: &str,
        fire: DateTime<Utc>,
        next: Option<DateTime<Utc>>,
    ) -> Result<bool> {
        let inner = &self.inner;
        let table = inner.schema.at("schedules");
        // Only a fire time later than the last one claimed is granted: of any number
        // of schedulers, the row lock lets exactly one win each tick.
        let claimed = sqlx::query(crate::schema::sql(&format!(
            "INSERT INTO {table} AS s (name, last_fire, next_fire) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET last_fire = $2, next_fire = $3 \
             WHERE s.last_fire IS NULL OR s.last_fire < $2"
        )))
        .bind(name)
        .bind(fire)
        .bind(next)
        .execute(&inner.pool)
        .await
        .map_err(|e| inner.fail("claim a schedule's fire time", e))?;
        Ok(claimed.rows_affected() == 1)
    }

    async fn schedules(&self) -> Result<Vec<ScheduleState>> {
        let inner = &self.inner;
        let rows = sqlx::query(crate::schema::sql(&format!(
            "SELECT name, since, last_fire, next_fire FROM {} ORDER BY name",
            inner.schema.at("schedules")
        )))
        .fetch_all(&inner.pool)
        .await
        .map_err(|e| inner.fail("list schedules", e))?;
        rows.iter().map(|row| state(row).map_err(|e| inner.fail("read a schedule", e))).collect()
    }
}
