//! The in-memory broker's admin capability: queues, their figures, dead letters,
//! purges, deleting a queue, cancelling a job, and finding a job.

use std::collections::VecDeque;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::{InMemoryBroker, Stored, token_matches};
use crate::broker::{
    BrokerAdmin, Cancelled, DeadLetter, FoundJob, JobState, Lease, QueueDeleted, QueueStats,
};
use crate::error::{Error, Result};
use crate::limits::Gate;
use crate::partition::is_partition_of;
use crate::task::TaskId;

#[async_trait]
impl BrokerAdmin for InMemoryBroker {
    async fn queues(&self) -> Result<Vec<String>> {
        let mut queues: Vec<String> = self.lock().queues.keys().cloned().collect();
        queues.sort();
        Ok(queues)
    }

    async fn queue_stats(&self, queue: &str) -> Result<QueueStats> {
        let mut state = self.lock();
        let limits = state.limits;
        let Some(q) = state.queues.get_mut(queue) else {
            return Ok(QueueStats::default());
        };
        q.promote(queue, Instant::now(), limits);
        Ok(QueueStats {
            ready: q.ready_len() as u64,
            suspect: q.suspect.len() as u64,
            gated: q.gated_len() as u64,
            bad_entries: 0,
            delayed: q.delayed.len() as u64,
            in_flight: q.in_flight.len() as u64,
            dead: q.dead.len() as u64,
            dead_dropped: q.dead_dropped,
            paused_since: q.paused_since,
        })
    }

    async fn pause(&self, queue: &str) -> Result<bool> {
        let mut state = self.lock();
        let paused = &mut state.queues.entry(queue.to_owned()).or_default().paused_since;
        Ok(paused.replace(paused.unwrap_or_else(Utc::now)).is_none())
    }

    async fn gates(&self, queue: &str) -> Result<Vec<crate::broker::GateStatus>> {
        let mut state = self.lock();
        let Some(q) = state.queues.get_mut(queue) else { return Ok(Vec::new()) };
        let now = (Instant::now(), Utc::now());
        let in_flight = &q.in_flight;
        let mut out: Vec<crate::broker::GateStatus> = q
            .gates
            .iter_mut()
            .map(|(name, gate)| {
                gate.running.retain(|id| in_flight.contains_key(id));
                let mut status = crate::broker::GateStatus::new(Gate::new(
                    name.to_string(),
                    gate.rate,
                    gate.burst,
                    gate.concurrency,
                ));
                status.running = gate.running.len() as u64;
                status.waiting = gate.waiting.len() as u64;
                status.next_start =
                    gate.opens_at().filter(|at| *at > now.0).map(|at| wall(at, now));
                status
            })
            .collect();
        out.sort_by(|a, b| a.gate.name.cmp(&b.gate.name));
        Ok(out)
    }

    async fn resume(&self, queue: &str) -> Result<bool> {
        let resumed = self.lock().queues.get_mut(queue).and_then(|q| q.paused_since.take());
        if resumed.is_some() {
            self.notify.notify_waiters();
        }
        Ok(resumed.is_some())
    }

    async fn purge(&self, queue: &str) -> Result<u64> {
        let mut state = self.lock();
        let Some(q) = state.queues.get_mut(queue) else { return Ok(0) };
        let mut purged = 0u64;
        for ready in &mut q.ready {
            for stored in ready.drain(..) {
                q.known.remove(&stored.id);
                purged += 1;
            }
        }
        for stored in q.suspect.drain(..).chain(std::mem::take(&mut q.grouped).into_values()) {
            q.known.remove(&stored.id);
            purged += 1;
        }
        for gate in q.gates.values_mut() {
            for (_, stored) in std::mem::take(&mut gate.waiting) {
                q.known.remove(&stored.id);
                purged += 1;
            }
        }
        for (_, stored) in std::mem::take(&mut q.delayed) {
            q.known.remove(&stored.id);
            purged += 1;
        }
        Ok(purged)
    }

    /// One step under the broker's lock: the check and the delete of every partition.
    /// Jobs whose lease expired count as waiting, as in
    /// [`queue_stats`](BrokerAdmin::queue_stats).
    async fn delete_queue(&self, queue: &str, force: bool) -> Result<QueueDeleted> {
        let mut state = self.lock();
        let limits = state.limits;
        let names: Vec<String> = state
            .queues
            .keys()
            .filter(|name| *name == queue || is_partition_of(name, queue))
            .cloned()
            .collect();
        let now = Instant::now();
        let mut in_flight = 0;
        for name in &names {
            if let Some(q) = state.queues.get_mut(name) {
                q.promote(name, now, limits);
                in_flight += q.in_flight.len() as u64;
            }
        }
        if in_flight > 0 && !force {
            return Err(Error::QueueBusy { queue: queue.to_owned(), in_flight });
        }
        let removed: Vec<_> = names.iter().filter_map(|name| state.queues.remove(name)).collect();
        drop(state);
        let mut deleted = QueueDeleted::default();
        for q in &removed {
            deleted += QueueDeleted {
                waiting: q.ready_len() as u64,
                delayed: q.delayed.len() as u64,
                dead_letters: q.dead.len() as u64,
                in_flight: q.in_flight.len() as u64,
            };
        }
        // The jobs are freed here, once the lock is released.
        drop(removed);
        Ok(deleted)
    }

    /// One step under the broker's lock. Leases are not looked at: a job whose lease
    /// lapsed is in flight until a claim or a reaper takes it back, as on Redis.
    async fn cancel(&self, queue: &str, id: TaskId) -> Result<Cancelled> {
        let mut state = self.lock();
        let Some(q) = state.queues.get_mut(queue) else { return Ok(Cancelled::NotFound) };
        if q.in_flight.contains_key(&id) {
            return Ok(Cancelled::Running);
        }
        if !q.known.contains(&id) {
            return Ok(Cancelled::NotFound);
        }
        let take = |list: &mut VecDeque<Stored>| {
            list.iter().position(|s| s.id == id).and_then(|at| list.remove(at))
        };
        let stored = q.ready.iter_mut().chain(std::iter::once(&mut q.suspect)).find_map(take);
        let stored = stored.or_else(|| {
            let key = q.delayed.iter().find(|(_, s)| s.id == id).map(|(key, _)| *key)?;
            q.delayed.remove(&key)
        });
        let stored = stored.or_else(|| {
            let key = q.grouped.iter().find(|(_, s)| s.id == id).map(|(key, _)| key.clone())?;
            q.grouped.remove(&key)
        });
        let stored = stored.or_else(|| {
            q.gates.values_mut().find_map(|gate| {
                let key = gate.waiting.iter().find(|(_, s)| s.id == id).map(|(key, _)| *key)?;
                gate.waiting.remove(&key)
            })
        });
        q.known.remove(&id);
        drop(state);
        Ok(stored
            .map_or(Cancelled::NotFound, |s| Cancelled::Removed { payload: s.payload.to_vec() }))
    }

    async fn dead_letters(
        &self,
        queue: &str,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        let state = self.lock();
        Ok(state
            .queues
            .get(queue)
            .map(|q| q.dead.iter().skip(offset).take(limit).cloned().collect())
            .unwrap_or_default())
    }

    async fn take_dead_letter(&self, queue: &str, id: TaskId) -> Result<Option<DeadLetter>> {
        let mut state = self.lock();
        let Some(q) = state.queues.get_mut(queue) else { return Ok(None) };
        Ok(q.dead.iter().position(|letter| letter.id == id).and_then(|at| q.dead.remove(at)))
    }

    async fn purge_dead_letters(&self, queue: &str) -> Result<u64> {
        let mut state = self.lock();
        let Some(q) = state.queues.get_mut(queue) else { return Ok(0) };
        let purged = q.dead.len() as u64;
        q.dead.clear();
        Ok(purged)
    }

    async fn leased_payload(&self, lease: &Lease) -> Result<Option<Vec<u8>>> {
        let state = self.lock();
        let held = state.queues.get(&lease.queue).and_then(|q| q.in_flight.get(&lease.id));
        let own = held.filter(|h| h.token == lease.fence && token_matches(h.token, &lease.token));
        Ok(own.map(|h| h.stored.payload.to_vec()))
    }

    async fn find_job(&self, id: TaskId, queues: &[String]) -> Result<Option<FoundJob>> {
        let state = self.lock();
        let mut names: Vec<&String> = if queues.is_empty() {
            state.queues.keys().collect()
        } else {
            queues.iter().filter(|name| state.queues.contains_key(*name)).collect()
        };
        names.sort();
        let now = (Instant::now(), Utc::now());
        for name in names {
            let Some(q) = state.queues.get(name) else { continue };
            let found = |state, at, payload: &[u8]| {
                Some(FoundJob::new(id, name.clone(), state, at, payload.to_vec()))
            };
            if let Some(held) = q.in_flight.get(&id) {
                return Ok(found(
                    JobState::InFlight,
                    Some(wall(held.deadline, now)),
                    &held.stored.payload,
                ));
            }
            if let Some(stored) = q.suspect.iter().find(|s| s.id == id) {
                return Ok(found(JobState::Suspect, None, &stored.payload));
            }
            let gated = q.gates.values().flat_map(|gate| gate.waiting.values());
            let mut ready = q.ready.iter().flatten().chain(gated).chain(q.grouped.values());
            if let Some(stored) = ready.find(|s| s.id == id) {
                return Ok(found(JobState::Ready, None, &stored.payload));
            }
            if let Some(((due, _), stored)) = q.delayed.iter().find(|(_, s)| s.id == id) {
                return Ok(found(JobState::Delayed, Some(wall(*due, now)), &stored.payload));
            }
            if let Some(letter) = q.dead.iter().find(|letter| letter.id == id) {
                let job = FoundJob::new(
                    id,
                    name.clone(),
                    JobState::DeadLettered,
                    Some(letter.at),
                    letter.payload.clone(),
                );
                return Ok(Some(job.with_reason(letter.reason.clone())));
            }
        }
        Ok(None)
    }
}

/// The wall-clock time of `at`, given an instant and the wall-clock time of the same
/// moment.
fn wall(at: Instant, (now, now_utc): (Instant, DateTime<Utc>)) -> DateTime<Utc> {
    let ahead = chrono::Duration::from_std(at.saturating_duration_since(now)).unwrap_or_default();
    let behind = chrono::Duration::from_std(now.saturating_duration_since(at)).unwrap_or_default();
    now_utc + ahead - behind
}
