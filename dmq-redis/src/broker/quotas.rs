//! Enqueue quotas ([`QuotaStore`]): the hash `{<ns>}:quotas` and a counter per quota
//! that expires when its window ends (see docs/redis-layout.md), in the registry's slot.

use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use dmq_core::{Error, QuotaState, QuotaStore, RateLimit, Result};

use super::RedisBroker;

/// The quotas hash's field of `key`: `*` for the namespace's own quota.
fn field(key: Option<&str>) -> String {
    key.map_or_else(|| "*".to_owned(), |key| format!("k:{key}"))
}

impl RedisBroker {
    /// Whether any quota is set (see [`QuotasSeen`](dmq_core::QuotasSeen)).
    async fn any_quota(&self) -> Result<bool> {
        if let Some(any) = self.quotas_seen.known() {
            return Ok(any);
        }
        let mut conn = self.conn().await?;
        let set: u64 = redis::cmd("HLEN")
            .arg(self.keys.quotas())
            .query_async(&mut conn)
            .await
            .map_err(|e| self.err("reading the enqueue quotas", e))?;
        self.quotas_seen.record(set > 0);
        Ok(set > 0)
    }

    /// How quota `key` is named in an error.
    fn quota_name(&self, key: Option<&str>) -> String {
        let ns = self.keys.namespace();
        match key {
            Some(key) => format!("key {key:?} of namespace {ns:?}"),
            None => format!("namespace {ns:?}"),
        }
    }
}

#[async_trait]
impl QuotaStore for RedisBroker {
    async fn set_quota(&self, key: Option<&str>, quota: Option<RateLimit>) -> Result<bool> {
        let field = field(key);
        let mut conn = self.conn().await?;
        let what = format!("setting the enqueue quota of {}", self.quota_name(key));
        let before: Option<String> = redis::cmd("HGET")
            .arg(self.keys.quotas())
            .arg(&field)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.err(&what, e))?;
        let value = quota.map(|q| format!("{}:{}", q.count(), q.period().as_millis()));
        if before == value {
            return Ok(false);
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        match &value {
            Some(value) => pipe.hset(self.keys.quotas(), &field, value).ignore(),
            None => pipe.hdel(self.keys.quotas(), &field).ignore(),
        };
        pipe.del(self.keys.quota_used(&field)).ignore();
        let () = pipe.query_async(&mut conn).await.map_err(|e| self.err(&what, e))?;
        self.quotas_seen.forget();
        Ok(true)
    }

    async fn quotas(&self) -> Result<Vec<QuotaState>> {
        let mut conn = self.conn().await?;
        let what = "reading the enqueue quotas";
        let set: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(self.keys.quotas())
            .query_async(&mut conn)
            .await
            .map_err(|e| self.err(what, e))?;
        let mut out = Vec::with_capacity(set.len());
        for (field, value) in set {
            let key = match field.as_str() {
                "*" => None,
                other => match other.strip_prefix("k:") {
                    Some(key) => Some(key.to_owned()),
                    None => continue,
                },
            };
            let Some(limit) = value.split_once(':').and_then(|(count, ms)| {
                RateLimit::new(count.parse().ok()?, Duration::from_millis(ms.parse().ok()?)).ok()
            }) else {
                continue;
            };
            let (used, ttl): (Option<u64>, i64) = redis::pipe()
                .get(self.keys.quota_used(&field))
                .pttl(self.keys.quota_used(&field))
                .query_async(&mut conn)
                .await
                .map_err(|e| self.err(what, e))?;
            let ends = (ttl > 0).then(|| Utc::now() + chrono::Duration::milliseconds(ttl));
            out.push(QuotaState::new(
                key,
                limit,
                if ttl > 0 { used.unwrap_or(0) } else { 0 },
                ends,
            ));
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn take_quota(&self, key: Option<&str>, n: u64) -> Result<()> {
        if !self.any_quota().await? {
            return Ok(());
        }
        let mut invocation = self.scripts.quota_take.prepare_invoke();
        invocation.key(self.keys.quotas()).key(self.keys.quota_used("*"));
        invocation.arg(n);
        if let Some(key) = key {
            invocation.key(self.keys.quota_used(&field(Some(key)))).arg(field(Some(key)));
        }
        let reply: (u8, u64) =
            self.run("counting an enqueue against its quotas", &invocation).await?;
        match reply {
            (0, _) => Ok(()),
            (which, ms) => {
                let refused = if which == 1 { None } else { key };
                let limit = self
                    .quotas()
                    .await?
                    .into_iter()
                    .find(|q| q.key.as_deref() == refused)
                    .map_or_else(String::new, |q| q.limit.to_string());
                Err(Error::QuotaExceeded {
                    quota: self.quota_name(refused),
                    limit,
                    retry_after: Duration::from_millis(ms),
                })
            }
        }
    }

    async fn refund_quota(&self, key: Option<&str>, n: u64) -> Result<()> {
        let mut invocation = self.scripts.quota_refund.prepare_invoke();
        invocation.key(self.keys.quota_used("*"));
        if let Some(key) = key {
            invocation.key(self.keys.quota_used(&field(Some(key))));
        }
        invocation.arg(n);
        let _: u64 = self.run("giving back enqueue quota", &invocation).await?;
        Ok(())
    }
}
