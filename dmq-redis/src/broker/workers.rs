//! The worker registry (each worker's record and heartbeat) and the reaper.

use std::time::Duration;

use async_trait::async_trait;
use chrono::DateTime;
use dmq_core::{Error, Result, WorkerInfo, WorkerRegistry, WorkerStatus};
use redis::{ScriptInvocation, Value};

use super::*;

/// How long the reaper lock holds if its holder dies mid-reap (a reap takes
/// milliseconds). Short, since a reaper may well die mid-reap: the job it just handed
/// back may be the poison pill that kills its process. Two reapers at once would be
/// harmless anyway (every script is atomic); the lock only saves repeated work.
pub(super) const REAPER_LOCK: Duration = Duration::from_secs(2);

/// A worker's description as the registry keeps it.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct StoredWorker {
    pub(super) hostname: String,
    pub(super) pid: u32,
    pub(super) queues: Vec<String>,
    pub(super) concurrency: usize,
    pub(super) started_at_ms: i64,
    /// The heartbeat ttl the worker registered with.
    #[serde(default)]
    pub(super) ttl_ms: u64,
    /// How many jobs the worker was running at this heartbeat (absent in older
    /// encodings: zero).
    #[serde(default)]
    pub(super) running: u32,
}

pub(super) fn encode_worker(info: &WorkerInfo, ttl: Duration) -> Result<Vec<u8>> {
    let stored = StoredWorker {
        ttl_ms: millis(ttl),
        hostname: info.hostname.clone(),
        pid: info.pid,
        queues: info.queues.clone(),
        concurrency: info.concurrency,
        started_at_ms: info.started_at.timestamp_millis(),
        running: info.running,
    };
    rmp_serde::to_vec_named(&stored)
        .map_err(|e| Error::Encode { what: "a worker description", reason: e.to_string() })
}

/// The heartbeat ttl stored for a worker (zero when it does not decode).
pub(super) fn worker_ttl(bytes: &[u8]) -> Duration {
    rmp_serde::from_slice::<StoredWorker>(bytes)
        .map_or(Duration::ZERO, |stored| Duration::from_millis(stored.ttl_ms))
}

/// The description stored for worker `id`; `None` when it does not decode.
pub(super) fn decode_worker(id: &str, bytes: &[u8]) -> Option<WorkerInfo> {
    let stored: StoredWorker = rmp_serde::from_slice(bytes).ok()?;
    Some(
        WorkerInfo::new(
            id,
            stored.hostname,
            stored.pid,
            stored.queues,
            stored.concurrency,
            DateTime::from_timestamp_millis(stored.started_at_ms).unwrap_or_default(),
        )
        .with_running(stored.running),
    )
}

impl RedisBroker {
    /// Runs the reap script on one queue; `dead` holds each dead worker's id and its
    /// heartbeat ttl in milliseconds.
    /// Returns how many jobs it moved, and the dead workers that still hold a job of
    /// this queue (claimed within their ttl), which must not be forgotten yet.
    pub(super) async fn reap_queue(
        &self,
        queue: &str,
        dead: &[(String, u64)],
    ) -> Result<(u64, Vec<String>)> {
        let keys = self.keys.queue(queue);
        let mut invocation = self.scripts.reap.prepare_invoke();
        add_lease_keys(&mut invocation, &keys);
        invocation.arg(self.max_deliveries).arg(self.dead_letter_cap);
        for (worker, ttl_ms) in dead {
            invocation.arg(worker).arg(ttl_ms);
        }
        let reply: Vec<Value> = self.run("reaping a queue", &invocation).await?;
        let mut items = reply.into_iter();
        let Some(Value::Int(moved)) = items.next() else {
            return Err(Error::backend("unexpected reply from the reap script".to_owned(), false));
        };
        let holding = items
            .filter_map(|v| match v {
                Value::BulkString(id) => String::from_utf8(id).ok(),
                _ => None,
            })
            .collect();
        Ok((u64::try_from(moved).unwrap_or(0), holding))
    }

    pub(super) fn registry_invocation<'a>(
        &self,
        script: &'a redis::Script,
    ) -> ScriptInvocation<'a> {
        let mut invocation = script.prepare_invoke();
        invocation.key(self.keys.workers()).key(self.keys.workers_info());
        invocation
    }

    /// The KEYS of `reap_begin` and `reap_end`: the lock, then the registry's.
    pub(super) fn reaper_invocation<'a>(&self, script: &'a redis::Script) -> ScriptInvocation<'a> {
        let mut invocation = script.prepare_invoke();
        invocation
            .key(self.keys.reaper_lock())
            .key(self.keys.workers())
            .key(self.keys.workers_info());
        invocation
    }
}

#[async_trait]
impl WorkerRegistry for RedisBroker {
    async fn heartbeat(&self, worker: &WorkerInfo, ttl: Duration) -> Result<()> {
        let mut invocation = self.registry_invocation(&self.scripts.heartbeat);
        invocation.arg(&worker.id).arg(millis(ttl).max(1)).arg(encode_worker(worker, ttl)?);
        self.run::<i64>("recording a heartbeat", &invocation).await?;
        self.register_queues(worker.queues.iter().map(String::as_str)).await;
        self.healthy_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(std::time::Instant::now);
        Ok(())
    }

    /// Gives back first what this worker's claims whose reply was lost took (a claim
    /// cut off by the stop, say), so that it does not wait out its lease.
    async fn deregister(&self, worker: &str) -> Result<()> {
        let lost = self
            .lost_claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|c| c.worker == worker);
        if lost {
            if let Err(e) = self.recover_lost_claims().await {
                tracing::warn!(error = %e, "could not give back the jobs of a claim whose reply was lost; they return when their lease expires");
            }
        }
        let mut invocation = self.registry_invocation(&self.scripts.deregister);
        invocation.arg(worker);
        self.run::<i64>("deregistering a worker", &invocation).await.map(|_| ())
    }

    async fn workers(&self) -> Result<Vec<WorkerStatus>> {
        let invocation = self.registry_invocation(&self.scripts.workers);
        let reply: Vec<(String, i64, Vec<u8>)> = self.run("listing workers", &invocation).await?;
        Ok(reply
            .into_iter()
            .filter_map(|(id, until, info)| {
                let until = DateTime::from_timestamp_millis(until)?;
                Some(WorkerStatus::new(decode_worker(&id, &info)?, until))
            })
            .collect())
    }

    async fn reap(&self, queues: &[String]) -> Result<u64> {
        let mut begin = self.reaper_invocation(&self.scripts.reap_begin);
        begin.arg(&self.reaper_id).arg(millis(REAPER_LOCK));
        let Some(lapsed) =
            self.run::<Option<Vec<(String, Vec<u8>)>>>("starting a reap", &begin).await?
        else {
            return Ok(0);
        };
        let healthy_for = self
            .healthy_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map_or(Duration::ZERO, |since| since.elapsed());
        let mut all_queues: Vec<String> = queues.to_vec();
        let mut dead = Vec::with_capacity(lapsed.len());
        for (id, info) in &lapsed {
            // Until this broker has been reachable for the worker's whole ttl, a lapse
            // may be the outage's doing, not the worker's.
            let ttl = worker_ttl(info);
            if ttl > healthy_for {
                continue;
            }
            if let Some(info) = decode_worker(id, info) {
                for queue in info.queues {
                    if !all_queues.contains(&queue) {
                        all_queues.push(queue);
                    }
                }
            }
            dead.push((id.clone(), millis(ttl)));
        }
        let mut moved = 0;
        let mut failed = None;
        // Lapsed workers that still hold a fresh claim: they may be alive, and if they
        // are not, a later reap takes the job back, so they stay registered.
        let mut holding = Vec::new();
        for queue in &all_queues {
            match self.reap_queue(queue, &dead).await {
                Ok((n, mut still)) => {
                    moved += n;
                    holding.append(&mut still);
                }
                Err(e) => failed = Some(e),
            }
        }
        dead.retain(|(id, _)| !holding.contains(id));
        let mut end = self.reaper_invocation(&self.scripts.reap_end);
        end.arg(&self.reaper_id);
        // A dead worker is forgotten only once all of its queues were reaped.
        if failed.is_none() {
            for (id, _) in &dead {
                end.arg(id);
            }
        }
        self.run::<i64>("ending a reap", &end).await?;
        if failed.is_none() {
            self.doctor_now_and_then(&all_queues).await;
        }
        if !dead.is_empty() && failed.is_none() {
            let workers: Vec<&str> = dead.iter().map(|(id, _)| id.as_str()).collect();
            tracing::warn!(
                ?workers,
                moved,
                "took back the jobs of workers that stopped heartbeating"
            );
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(moved),
        }
    }
}
