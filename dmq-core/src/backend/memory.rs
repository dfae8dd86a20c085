//! A result backend held in process memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{ResultBackend, TaskOutcome, may_replace};
use crate::error::Result;
use crate::task::TaskId;

/// A [`ResultBackend`] in process memory; outcomes expire after their TTL.
#[derive(Debug, Default)]
pub struct InMemoryBackend {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Each outcome, when it expires, and the fence it was stored under (0 for none).
    outcomes: HashMap<TaskId, (TaskOutcome, Instant, u64)>,
    waiters: HashMap<TaskId, Arc<Notify>>,
    stores_since_sweep: usize,
}

impl InMemoryBackend {
    /// An empty backend.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stores `outcome`, under `fence` if given and only where [`may_replace`] allows;
    /// returns whether it stored.
    fn put(&self, id: TaskId, outcome: &TaskOutcome, ttl: Duration, fence: Option<u64>) -> bool {
        // Copied before the lock is taken, so that other callers do not wait for it.
        let entry = (outcome.clone(), crate::clock::deadline(ttl), fence.unwrap_or(0));
        let replaced = {
            let mut state = self.lock();
            if let Some(fence) = fence {
                let now = Instant::now();
                let stored = state.outcomes.get(&id).filter(|(_, expires, _)| *expires > now);
                if !may_replace(stored.map(|(outcome, _, fenced)| (outcome.state, *fenced)), fence)
                {
                    return false;
                }
            }
            let replaced = state.outcomes.insert(id, entry);
            // Most results are stored before anyone waits for them: skip the look-up.
            if !state.waiters.is_empty() {
                if let Some(notify) = state.waiters.remove(&id) {
                    notify.notify_waiters();
                }
            }
            state.sweep();
            replaced
        };
        // A replaced outcome is freed once the lock is released.
        drop(replaced);
        true
    }
}

impl State {
    fn live(&mut self, id: TaskId) -> Option<TaskOutcome> {
        let now = Instant::now();
        match self.outcomes.get(&id) {
            Some((outcome, expires, _)) if *expires > now => Some(outcome.clone()),
            Some(_) => {
                self.outcomes.remove(&id);
                None
            }
            None => None,
        }
    }

    /// Drops expired outcomes now and then, so memory follows the live set.
    fn sweep(&mut self) {
        self.stores_since_sweep += 1;
        if self.stores_since_sweep < 1024.max(self.outcomes.len() / 2) {
            return;
        }
        self.stores_since_sweep = 0;
        let now = Instant::now();
        self.outcomes.retain(|_, (_, expires, _)| *expires > now);
        self.waiters.retain(|_, notify| Arc::strong_count(notify) > 1);
    }
}

#[async_trait]
impl ResultBackend for InMemoryBackend {
    async fn store(&self, id: TaskId, outcome: &TaskOutcome, ttl: Duration) -> Result<()> {
        self.put(id, outcome, ttl, None);
        Ok(())
    }

    async fn store_fenced(
        &self,
        id: TaskId,
        outcome: &TaskOutcome,
        ttl: Duration,
        fence: u64,
    ) -> Result<bool> {
        Ok(self.put(id, outcome, ttl, Some(fence)))
    }

    async fn get(&self, id: TaskId) -> Result<Option<TaskOutcome>> {
        Ok(self.lock().live(id))
    }

    async fn wait(&self, id: TaskId, timeout: Duration) -> Result<Option<TaskOutcome>> {
        let give_up = crate::clock::deadline(timeout);
        loop {
            let notify = {
                let mut state = self.lock();
                if let Some(outcome) = state.live(id) {
                    return Ok(Some(outcome));
                }
                Arc::clone(state.waiters.entry(id).or_default())
            };
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Look again now that the wake-up is armed: a store between the first look
            // and `enable` would otherwise be missed.
            if let Some(outcome) = self.lock().live(id) {
                return Ok(Some(outcome));
            }
            if tokio::time::timeout_at(give_up, notified).await.is_err() {
                return Ok(self.lock().live(id));
            }
        }
    }
}
