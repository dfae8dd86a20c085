//! Enqueue quotas ([`QuotaStore`]): the table `quotas` and the functions `quota_take`
//! and `quota_refund` (migration 0005; see docs/postgres-layout.md).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use dmq_core::{Error, QuotaState, QuotaStore, RateLimit, Result};
use sqlx::Row;

use super::PostgresBroker;

/// The `quotas` row key of `key`: `*` for the namespace's own quota.
fn row_key(key: Option<&str>) -> String {
    key.map_or_else(|| "*".to_owned(), |key| format!("k:{key}"))
}

/// The rows a take or refund for `key` counts against: the namespace's, and the key's.
fn row_keys(key: Option<&str>) -> Vec<String> {
    let mut keys = vec![row_key(None)];
    if key.is_some() {
        keys.push(row_key(key));
    }
    keys
}

impl PostgresBroker {
    /// Whether any quota is set (see [`QuotasSeen`](dmq_core::QuotasSeen)).
    async fn any_quota(&self) -> Result<bool> {
        let inner = &self.inner;
        if let Some(any) = inner.quotas_seen.known() {
            return Ok(any);
        }
        let sql = format!("SELECT EXISTS (SELECT 1 FROM {})", inner.schema.at("quotas"));
        let any: bool = sqlx::query_scalar(crate::schema::sql(&sql))
            .fetch_one(&inner.pool)
            .await
            .map_err(|e| inner.fail("read the enqueue quotas", e))?;
        inner.quotas_seen.record(any);
        Ok(any)
    }

    /// How quota `key` is named in an error.
    fn quota_name(&self, key: Option<&str>) -> String {
        let ns = self.inner.schema.name();
        match key {
            Some(key) => format!("key {key:?} of namespace {ns:?}"),
            None => format!("namespace {ns:?}"),
        }
    }
}

#[async_trait]
impl QuotaStore for PostgresBroker {
    async fn set_quota(&self, key: Option<&str>, quota: Option<RateLimit>) -> Result<bool> {
        let inner = &self.inner;
        let table = inner.schema.at("quotas");
        let what = format!("set the enqueue quota of {}", self.quota_name(key));
        let changed = match quota {
            Some(q) => {
                let sql = format!(
                    "INSERT INTO {table} AS q (key, count, period_ms) VALUES ($1, $2, $3) \
                     ON CONFLICT (key) DO UPDATE \
                     SET count = EXCLUDED.count, period_ms = EXCLUDED.period_ms, used = 0, \
                         window_ends = NULL \
                     WHERE (q.count, q.period_ms) <> (EXCLUDED.count, EXCLUDED.period_ms)"
                );
                sqlx::query(crate::schema::sql(&sql))
                    .bind(row_key(key))
                    .bind(i64::from(q.count()))
                    .bind(i64::try_from(q.period().as_millis()).unwrap_or(i64::MAX))
                    .execute(&inner.pool)
                    .await
            }
            None => {
                let sql = format!("DELETE FROM {table} WHERE key = $1");
                sqlx::query(crate::schema::sql(&sql)).bind(row_key(key)).execute(&inner.pool).await
            }
        }
        .map_err(|e| inner.fail(&what, e))?;
        inner.quotas_seen.forget();
        Ok(changed.rows_affected() > 0)
    }

    async fn quotas(&self) -> Result<Vec<QuotaState>> {
        let inner = &self.inner;
        let sql = format!(
            "SELECT key, count, period_ms, \
                    CASE WHEN window_ends > now() THEN used ELSE 0 END AS used, \
                    CASE WHEN window_ends > now() THEN window_ends END AS window_ends \
             FROM {} ORDER BY key",
            inner.schema.at("quotas")
        );
        let rows = sqlx::query(crate::schema::sql(&sql))
            .fetch_all(&inner.pool)
            .await
            .map_err(|e| inner.fail("read the enqueue quotas", e))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let read = |e| inner.fail("read the enqueue quotas", e);
            let key: String = row.try_get("key").map_err(read)?;
            let key = match key.as_str() {
                "*" => None,
                other => match other.strip_prefix("k:") {
                    Some(key) => Some(key.to_owned()),
                    None => continue,
                },
            };
            let count: i64 = row.try_get("count").map_err(read)?;
            let period: i64 = row.try_get("period_ms").map_err(read)?;
            let used: i64 = row.try_get("used").map_err(read)?;
            let ends: Option<DateTime<Utc>> = row.try_get("window_ends").map_err(read)?;
            let Ok(limit) = RateLimit::new(
                u32::try_from(count).unwrap_or(u32::MAX),
                Duration::from_millis(u64::try_from(period).unwrap_or(0)),
            ) else {
                continue;
            };
            out.push(QuotaState::new(key, limit, u64::try_from(used).unwrap_or(0), ends));
        }
        Ok(out)
    }

    async fn take_quota(&self, key: Option<&str>, n: u64) -> Result<()> {
        if !self.any_quota().await? {
            return Ok(());
        }
        let inner = &self.inner;
        let sql = format!("SELECT refused, wait_ms FROM {}($1, $2)", inner.schema.at("quota_take"));
        let row = sqlx::query(crate::schema::sql(&sql))
            .bind(row_keys(key))
            .bind(i64::try_from(n).unwrap_or(i64::MAX))
            .fetch_one(&inner.pool)
            .await
            .map_err(|e| inner.fail("count an enqueue against its quotas", e))?;
        let refused: Option<String> =
            row.try_get("refused").map_err(|e| inner.fail("count an enqueue", e))?;
        let Some(refused) = refused else { return Ok(()) };
        let wait_ms: Option<i64> =
            row.try_get("wait_ms").map_err(|e| inner.fail("count an enqueue", e))?;
        let refused_key = refused.strip_prefix("k:");
        let limit = self
            .quotas()
            .await?
            .into_iter()
            .find(|q| q.key.as_deref() == refused_key)
            .map_or_else(String::new, |q| q.limit.to_string());
        Err(Error::QuotaExceeded {
            quota: self.quota_name(refused_key),
            limit,
            retry_after: Duration::from_millis(u64::try_from(wait_ms.unwrap_or(0)).unwrap_or(0)),
        })
    }

    async fn refund_quota(&self, key: Option<&str>, n: u64) -> Result<()> {
        let inner = &self.inner;
        let sql = format!("SELECT {}($1, $2)", inner.schema.at("quota_refund"));
        sqlx::query(crate::schema::sql(&sql))
            .bind(row_keys(key))
            .bind(i64::try_from(n).unwrap_or(i64::MAX))
            .execute(&inner.pool)
            .await
            .map_err(|e| inner.fail("give back enqueue quota", e))?;
        Ok(())
    }
}
