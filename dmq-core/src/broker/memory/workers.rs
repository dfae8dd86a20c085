//! The in-memory broker's worker registry and reaper.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use tokio::time::Instant;

use super::InMemoryBroker;
use crate::broker::{WorkerInfo, WorkerRegistry, WorkerStatus};
use crate::error::Result;

#[async_trait]
impl WorkerRegistry for InMemoryBroker {
    async fn heartbeat(&self, worker: &WorkerInfo, ttl: Duration) -> Result<()> {
        let until = crate::clock::deadline(ttl);
        let until_utc =
            Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        let mut state = self.lock();
        // The queues a worker takes jobs from are known queues, as on Redis.
        for queue in &worker.queues {
            state.queues.entry(queue.clone()).or_default();
        }
        state.workers.insert(worker.id.clone(), (worker.clone(), until, until_utc, ttl));
        Ok(())
    }

    async fn deregister(&self, worker: &str) -> Result<()> {
        self.lock().workers.remove(worker);
        Ok(())
    }

    async fn workers(&self) -> Result<Vec<WorkerStatus>> {
        let now = Instant::now();
        let state = self.lock();
        Ok(state
            .workers
            .values()
            .filter(|(_, until, _, _)| *until > now)
            .map(|(info, _, until, _)| WorkerStatus::new(info.clone(), *until))
            .collect())
    }

    async fn reap(&self, _queues: &[String]) -> Result<u64> {
        let now = Instant::now();
        let mut moved = 0;
        {
            let mut state = self.lock();
            let state = &mut *state;
            let dead: HashMap<String, Duration> = state
                .workers
                .iter()
                .filter(|(_, (_, until, _, _))| *until <= now)
                .map(|(id, (_, _, _, ttl))| (id.clone(), *ttl))
                .collect();
            // One process holds every queue here, so every queue is reaped.
            let mut holding = HashSet::new();
            let limits = state.limits;
            for (name, queue) in &mut state.queues {
                moved += queue.expire_leases(name, now, limits)
                    + queue.return_jobs_of(name, &dead, now, &mut holding, limits);
            }
            // A lapsed worker that still holds a fresh claim may be alive: it stays
            // registered, and a later reap takes the job back if it is not.
            state.workers.retain(|id, _| !dead.contains_key(id) || holding.contains(id));
        }
        if moved > 0 {
            self.notify.notify_waiters();
        }
        Ok(moved)
    }
}
