//! Enqueue quotas ([`QuotaStore`]) of the in-memory broker.

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use tokio::time::Instant;

use super::InMemoryBroker;
use crate::broker::{QuotaState, QuotaStore};
use crate::error::{Error, Result};
use crate::limits::RateLimit;

/// One quota and its window.
#[derive(Debug)]
pub(super) struct Quota {
    limit: RateLimit,
    used: u64,
    /// When the window ends; `None` before the first enqueue of a window.
    ends: Option<Instant>,
}

impl Quota {
    /// Closes the window once its time is up.
    fn roll(&mut self, now: Instant) {
        if self.ends.is_some_and(|ends| ends <= now) {
            self.used = 0;
            self.ends = None;
        }
    }

    /// How long until `n` more may be counted, if they may not be now.
    fn refusal(&self, n: u64, now: Instant) -> Option<Duration> {
        if self.used + n <= u64::from(self.limit.count()) {
            return None;
        }
        Some(self.ends.map_or(self.limit.period(), |ends| ends.saturating_duration_since(now)))
    }
}

/// How a quota is named in an error.
fn named(key: Option<&str>) -> String {
    match key {
        Some(key) => format!("key {key:?} of the in-memory broker"),
        None => "the namespace of the in-memory broker".to_owned(),
    }
}

#[async_trait]
impl QuotaStore for InMemoryBroker {
    async fn set_quota(&self, key: Option<&str>, quota: Option<RateLimit>) -> Result<bool> {
        let mut state = self.lock();
        let key = key.map(str::to_owned);
        let changed = match quota {
            Some(limit) => {
                let same = state.quotas.get(&key).is_some_and(|q| q.limit == limit);
                if !same {
                    state.quotas.insert(key, Quota { limit, used: 0, ends: None });
                }
                !same
            }
            None => state.quotas.remove(&key).is_some(),
        };
        self.quotas_set.store(!state.quotas.is_empty(), Ordering::Relaxed);
        Ok(changed)
    }

    async fn quotas(&self) -> Result<Vec<QuotaState>> {
        let mut state = self.lock();
        let now = (Instant::now(), Utc::now());
        let mut out: Vec<QuotaState> = state
            .quotas
            .iter_mut()
            .map(|(key, q)| {
                q.roll(now.0);
                let ends = q.ends.map(|ends| {
                    now.1 + chrono::Duration::from_std(ends - now.0).unwrap_or_default()
                });
                QuotaState::new(key.clone(), q.limit, q.used, ends)
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn take_quota(&self, key: Option<&str>, n: u64) -> Result<()> {
        if !self.quotas_set.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut state = self.lock();
        let now = Instant::now();
        let keys: Vec<Option<String>> = match key {
            Some(key) => vec![None, Some(key.to_owned())],
            None => vec![None],
        };
        for k in &keys {
            if let Some(q) = state.quotas.get_mut(k) {
                q.roll(now);
                if let Some(retry_after) = q.refusal(n, now) {
                    return Err(Error::QuotaExceeded {
                        quota: named(k.as_deref()),
                        limit: q.limit.to_string(),
                        retry_after,
                    });
                }
            }
        }
        for k in &keys {
            if let Some(q) = state.quotas.get_mut(k) {
                q.used += n;
                q.ends.get_or_insert_with(|| crate::clock::instant_after(now, q.limit.period()));
            }
        }
        Ok(())
    }

    async fn refund_quota(&self, key: Option<&str>, n: u64) -> Result<()> {
        let mut state = self.lock();
        let keys = [None, key.map(str::to_owned)];
        for k in keys.iter().take(if key.is_some() { 2 } else { 1 }) {
            if let Some(q) = state.quotas.get_mut(k) {
                q.used = q.used.saturating_sub(n);
            }
        }
        Ok(())
    }
}
