//! A broker held in process memory: for tests, examples and single-process use.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Broker, DeadLetter, Delivery, Job, Lease, QueueStats, WorkerInfo, WorkerStatus};
use crate::envelope::MAX_PRIORITY;
use crate::error::{Error, Result};
use crate::task::TaskId;

/// The default cap on each queue's dead-letter queue.
pub const DEFAULT_DEAD_LETTER_CAP: usize = 10_000;

/// A [`Broker`] in process memory.
///
/// Several queues, priorities, delayed jobs held until their eta, leases that return
/// expired jobs to ready, and waiting claimers woken by notification. Everything is
/// lost when the process exits: use Redis where jobs must survive.
#[derive(Debug)]
pub struct InMemoryBroker {
    state: Mutex<State>,
    notify: Notify,
    dead_letter_cap: usize,
}

#[derive(Debug, Default)]
struct State {
    queues: HashMap<String, Queue>,
    next_seq: u64,
    /// Registered workers and when their heartbeat lapses.
    workers: HashMap<String, (WorkerInfo, Instant, DateTime<Utc>)>,
}

#[derive(Debug, Default)]
struct Queue {
    /// One list per priority, index 0 the lowest.
    ready: [VecDeque<Stored>; MAX_PRIORITY as usize + 1],
    delayed: BTreeMap<(Instant, u64), Stored>,
    in_flight: HashMap<TaskId, InFlight>,
    /// The ids of every job here that is ready, delayed or in flight.
    known: HashSet<TaskId>,
    dead: VecDeque<DeadLetter>,
    dead_dropped: u64,
}

#[derive(Debug)]
struct Stored {
    id: TaskId,
    priority: u8,
    payload: Vec<u8>,
    deliveries: u32,
}

#[derive(Debug)]
struct InFlight {
    stored: Stored,
    token: String,
    deadline: Instant,
    /// The worker holding the lease.
    worker: String,
}

impl Default for InMemoryBroker {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryBroker {
    /// An empty broker with the default dead-letter cap.
    #[must_use]
    pub fn new() -> Self {
        Self::with_dead_letter_cap(DEFAULT_DEAD_LETTER_CAP)
    }

    /// An empty broker whose dead-letter queues keep at most `cap` jobs each; older
    /// ones are dropped and counted.
    #[must_use]
    pub fn with_dead_letter_cap(cap: usize) -> Self {
        InMemoryBroker { state: Mutex::default(), notify: Notify::new(), dead_letter_cap: cap }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-written: every
        // mutation below completes before anything that could panic.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the job's in-flight entry when `lease` still holds it.
    fn settle<T>(
        &self,
        lease: &Lease,
        f: impl FnOnce(&mut Queue, InFlight, &mut u64) -> T,
    ) -> Result<T> {
        let mut state = self.lock();
        let state = &mut *state;
        let queue = state.queues.get_mut(&lease.queue).ok_or(Error::LeaseLost { id: lease.id })?;
        match queue.in_flight.get(&lease.id) {
            Some(held) if held.token == lease.token => {}
            _ => return Err(Error::LeaseLost { id: lease.id }),
        }
        let held = queue.in_flight.remove(&lease.id).ok_or(Error::LeaseLost { id: lease.id })?;
        Ok(f(queue, held, &mut state.next_seq))
    }
}

fn due_instant(eta: DateTime<Utc>) -> Instant {
    let ahead = (eta - Utc::now()).to_std().unwrap_or(Duration::ZERO);
    crate::clock::deadline(ahead)
}

impl Queue {
    fn push_ready(&mut self, stored: Stored) {
        self.ready[usize::from(stored.priority.min(MAX_PRIORITY))].push_back(stored);
    }

    /// Moves due delayed jobs and expired leases back to ready.
    fn promote(&mut self, now: Instant) {
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let stored = entry.remove();
            self.push_ready(stored);
        }
        let expired: Vec<TaskId> = self
            .in_flight
            .iter()
            .filter(|(_, held)| held.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(held) = self.in_flight.remove(&id) {
                let priority = usize::from(held.stored.priority.min(MAX_PRIORITY));
                self.ready[priority].push_front(held.stored);
            }
        }
    }

    fn pop_ready(&mut self) -> Option<Stored> {
        self.ready.iter_mut().rev().find_map(VecDeque::pop_front)
    }

    /// The next instant something here changes on its own: a delayed job falls due
    /// or a lease expires.
    fn next_change(&self) -> Option<Instant> {
        let delayed = self.delayed.keys().next().map(|(at, _)| *at);
        let lease = self.in_flight.values().map(|held| held.deadline).min();
        match (delayed, lease) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn ready_len(&self) -> usize {
        self.ready.iter().map(VecDeque::len).sum()
    }
}

impl State {
    /// Refuses jobs whose id is already queued, or repeated among `jobs`.
    fn check_new<'a>(&self, jobs: impl IntoIterator<Item = &'a Job>) -> Result<()> {
        let mut seen = HashSet::new();
        for job in jobs {
            let known = self.queues.get(&job.queue).is_some_and(|q| q.known.contains(&job.id));
            if known || !seen.insert((&job.queue, job.id)) {
                return Err(Error::DuplicateJob { id: job.id, queue: job.queue.clone() });
            }
        }
        Ok(())
    }

    fn add(&mut self, job: Job) {
        let stored = Stored {
            id: job.id,
            priority: job.priority.min(MAX_PRIORITY),
            payload: job.payload,
            deliveries: 0,
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        let queue = self.queues.entry(job.queue).or_default();
        queue.known.insert(job.id);
        match job.eta {
            Some(eta) if eta > Utc::now() => {
                queue.delayed.insert((due_instant(eta), seq), stored);
            }
            _ => queue.push_ready(stored),
        }
    }

    /// Claims up to `max` jobs, or returns when the next one could be due.
    fn try_claim(
        &mut self,
        worker: &str,
        queues: &[String],
        max: usize,
        lease: Duration,
    ) -> (Vec<Delivery>, Option<Instant>) {
        let now = Instant::now();
        let mut claimed = Vec::new();
        let mut next_change: Option<Instant> = None;
        for name in queues {
            let Some(queue) = self.queues.get_mut(name) else {
                continue;
            };
            queue.promote(now);
            while claimed.len() < max {
                let Some(mut stored) = queue.pop_ready() else {
                    break;
                };
                stored.deliveries += 1;
                self.next_seq += 1;
                let token = format!("{:x}", self.next_seq);
                let lease_info = Lease { id: stored.id, queue: name.clone(), token: token.clone() };
                claimed.push(Delivery::new(lease_info, stored.payload.clone(), stored.deliveries));
                queue.in_flight.insert(
                    stored.id,
                    InFlight {
                        stored,
                        token,
                        deadline: crate::clock::instant_after(now, lease),
                        worker: worker.to_owned(),
                    },
                );
            }
            if let Some(at) = queue.next_change() {
                next_change = Some(next_change.map_or(at, |n| n.min(at)));
            }
        }
        (claimed, next_change)
    }
}

#[async_trait]
impl Broker for InMemoryBroker {
    async fn enqueue(&self, job: Job) -> Result<()> {
        {
            let mut state = self.lock();
            state.check_new([&job])?;
            state.add(job);
        }
        self.notify.notify_waiters();
        Ok(())
    }

    async fn enqueue_batch(&self, jobs: Vec<Job>) -> Result<()> {
        {
            let mut state = self.lock();
            state.check_new(&jobs)?;
            for job in jobs {
                state.add(job);
            }
        }
        self.notify.notify_waiters();
        Ok(())
    }

    async fn claim(
        &self,
        worker: &str,
        queues: &[String],
        max: usize,
        lease: Duration,
        wait: Duration,
    ) -> Result<Vec<Delivery>> {
        if max == 0 || queues.is_empty() {
            return Ok(Vec::new());
        }
        let give_up = crate::clock::deadline(wait);
        loop {
            // Register for wake-ups before looking, so an enqueue between the look and
            // the wait is not missed. Nothing below awaits while holding claimed jobs,
            // so dropping this future loses nothing.
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (claimed, next_change) = self.lock().try_claim(worker, queues, max, lease);
            if !claimed.is_empty() {
                return Ok(claimed);
            }
            if Instant::now() >= give_up {
                return Ok(Vec::new());
            }
            let until = next_change.map_or(give_up, |at| at.min(give_up));
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(until) => {}
            }
        }
    }

    async fn ack(&self, lease: &Lease) -> Result<()> {
        self.settle(lease, |queue, held, _| {
            queue.known.remove(&held.stored.id);
        })
    }

    async fn retry(&self, lease: &Lease, payload: Vec<u8>, eta: DateTime<Utc>) -> Result<()> {
        self.settle(lease, |queue, held, seq| {
            let stored = Stored { payload, deliveries: 0, ..held.stored };
            *seq += 1;
            if eta > Utc::now() {
                queue.delayed.insert((due_instant(eta), *seq), stored);
            } else {
                queue.push_ready(stored);
            }
        })?;
        self.notify.notify_waiters();
        Ok(())
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        self.settle(lease, |queue, held, _| {
            let priority = usize::from(held.stored.priority.min(MAX_PRIORITY));
            // A release is a settle, not a lost delivery.
            let stored =
                Stored { deliveries: held.stored.deliveries.saturating_sub(1), ..held.stored };
            queue.ready[priority].push_front(stored);
        })?;
        self.notify.notify_waiters();
        Ok(())
    }

    async fn dead_letter(&self, lease: &Lease, reason: &str) -> Result<()> {
        let cap = self.dead_letter_cap;
        self.settle(lease, |queue, held, _| {
            let letter = DeadLetter::new(
                held.stored.id,
                lease.queue.clone(),
                held.stored.payload,
                reason,
                Utc::now(),
            );
            queue.known.remove(&letter.id);
            queue.dead.push_front(letter);
            while queue.dead.len() > cap {
                queue.dead.pop_back();
                queue.dead_dropped += 1;
            }
        })
    }

    async fn renew(&self, lease: &Lease, lease_for: Duration) -> Result<()> {
        let mut state = self.lock();
        let held = state
            .queues
            .get_mut(&lease.queue)
            .and_then(|q| q.in_flight.get_mut(&lease.id))
            .filter(|held| held.token == lease.token)
            .ok_or(Error::LeaseLost { id: lease.id })?;
        held.deadline = crate::clock::deadline(lease_for);
        Ok(())
    }

    async fn heartbeat(&self, worker: &WorkerInfo, ttl: Duration) -> Result<()> {
        let until = crate::clock::deadline(ttl);
        let until_utc =
            Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        self.lock().workers.insert(worker.id.clone(), (worker.clone(), until, until_utc));
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
            .filter(|(_, until, _)| *until > now)
            .map(|(info, _, until)| WorkerStatus::new(info.clone(), *until))
            .collect())
    }

    async fn reap(&self, _queues: &[String]) -> Result<u64> {
        let now = Instant::now();
        let mut moved = 0;
        {
            let mut state = self.lock();
            let state = &mut *state;
            let dead: HashSet<String> = state
                .workers
                .iter()
                .filter(|(_, (_, until, _))| *until <= now)
                .map(|(id, _)| id.clone())
                .collect();
            state.workers.retain(|id, _| !dead.contains(id));
            // One process holds every queue here, so every queue is reaped.
            for queue in state.queues.values_mut() {
                let lapsed: Vec<TaskId> = queue
                    .in_flight
                    .iter()
                    .filter(|(_, held)| held.deadline <= now || dead.contains(&held.worker))
                    .map(|(id, _)| *id)
                    .collect();
                for id in lapsed {
                    if let Some(held) = queue.in_flight.remove(&id) {
                        let priority = usize::from(held.stored.priority.min(MAX_PRIORITY));
                        queue.ready[priority].push_front(held.stored);
                        moved += 1;
                    }
                }
            }
        }
        if moved > 0 {
            self.notify.notify_waiters();
        }
        Ok(moved)
    }

    async fn queue_stats(&self, queue: &str) -> Result<QueueStats> {
        let mut state = self.lock();
        let Some(q) = state.queues.get_mut(queue) else {
            return Ok(QueueStats::default());
        };
        q.promote(Instant::now());
        Ok(QueueStats {
            ready: q.ready_len() as u64,
            delayed: q.delayed.len() as u64,
            in_flight: q.in_flight.len() as u64,
            dead: q.dead.len() as u64,
            dead_dropped: q.dead_dropped,
        })
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_dead_letter_cap_drops_the_oldest_and_counts_them() {
        let broker = InMemoryBroker::with_dead_letter_cap(3);
        let queues = vec!["q".to_owned()];
        for i in 0..5u8 {
            broker.enqueue(Job::new(TaskId::new(), "q", 5, None, vec![i])).await.unwrap();
            let got = broker.claim("w", &queues, 1, Duration::from_secs(30), Duration::ZERO).await;
            broker.dead_letter(&got.unwrap()[0].lease, &format!("bad {i}")).await.unwrap();
        }
        let stats = broker.queue_stats("q").await.unwrap();
        assert_eq!((stats.dead, stats.dead_dropped), (3, 2));
        let kept: Vec<String> =
            broker.dead_letters("q", 0, 10).await.unwrap().into_iter().map(|d| d.reason).collect();
        assert_eq!(kept, ["bad 4", "bad 3", "bad 2"]);
    }
}
