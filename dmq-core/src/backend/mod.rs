//! The `ResultBackend` trait: where task outcomes are kept for callers to read.

mod memory;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::task::{FailureKind, TaskId};

pub use memory::InMemoryBackend;

/// The default time a result is kept: one day.
pub const DEFAULT_RESULT_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Where a finished job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TaskState {
    /// It ran and returned a value.
    Succeeded,
    /// It failed for good (after its last attempt, or at once for bad input).
    Failed,
    /// Its expiry passed before it started; it never ran.
    Expired,
    /// It was cancelled while it waited ([`Manager::cancel`](crate::Manager::cancel));
    /// it will never run.
    Cancelled,
}

impl TaskState {
    /// The state's name as stored and shown: `succeeded`, `failed`, `expired` or
    /// `cancelled`.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::Expired => "expired",
            TaskState::Cancelled => "cancelled",
        }
    }
}

/// Why a job failed: the kind, and the task's error message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFailure {
    /// The kind of failure.
    pub kind: FailureKind,
    /// The error message.
    pub message: String,
}

/// A finished job's outcome, as stored in a [`ResultBackend`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TaskOutcome {
    /// How it ended.
    pub state: TaskState,
    /// The return value, MessagePack, when it succeeded.
    #[serde(default, with = "serde_bytes")]
    pub value: Option<Vec<u8>>,
    /// Why it failed, when it failed.
    #[serde(default)]
    pub failure: Option<TaskFailure>,
    /// How many attempts ran.
    pub attempts: u32,
    /// When the last attempt started.
    #[serde(default, with = "chrono::serde::ts_milliseconds_option")]
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub finished_at: DateTime<Utc>,
}

impl TaskOutcome {
    /// A success carrying the encoded `value`.
    #[must_use]
    pub fn succeeded(value: Vec<u8>, attempts: u32, started_at: DateTime<Utc>) -> Self {
        TaskOutcome {
            state: TaskState::Succeeded,
            value: Some(value),
            failure: None,
            attempts,
            started_at: Some(started_at),
            finished_at: Utc::now(),
        }
    }

    /// A failure of `kind` with `message`.
    #[must_use]
    pub fn failed(
        kind: FailureKind,
        message: impl Into<String>,
        attempts: u32,
        started_at: Option<DateTime<Utc>>,
    ) -> Self {
        TaskOutcome {
            state: TaskState::Failed,
            value: None,
            failure: Some(TaskFailure { kind, message: message.into() }),
            attempts,
            started_at,
            finished_at: Utc::now(),
        }
    }

    /// A job that expired before it started.
    #[must_use]
    pub fn expired(attempts: u32) -> Self {
        TaskOutcome {
            state: TaskState::Expired,
            value: None,
            failure: None,
            attempts,
            started_at: None,
            finished_at: Utc::now(),
        }
    }
}

impl TaskOutcome {
    /// A job cancelled while it waited, after `attempts` attempts ran (0 unless it
    /// waited for a retry).
    #[must_use]
    pub fn cancelled(attempts: u32) -> Self {
        TaskOutcome { state: TaskState::Cancelled, ..TaskOutcome::expired(attempts) }
    }
}

impl fmt::Debug for TaskOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskOutcome")
            .field("state", &self.state)
            .field("value_bytes", &self.value.as_ref().map(Vec::len))
            .field("failure", &self.failure)
            .field("attempts", &self.attempts)
            .field("started_at", &self.started_at)
            .field("finished_at", &self.finished_at)
            .finish()
    }
}

/// Whether a run's outcome, stored under fence `fence`, may replace the outcome
/// already stored for the job (its state and the fence it was stored under, 0 for a
/// plain [`store`](ResultBackend::store)), for
/// [`store_fenced`](ResultBackend::store_fenced): the one rule every backend applies.
///
/// - nothing stored yet: yes;
/// - a success is stored: only by the very run that stored it (the same fence), so a
///   write repeated after a lost reply changes nothing;
/// - a failure, an expiry or a cancellation is stored: by that run or a later one (a
///   job taken from the dead-letter queue and run again), never by an earlier one.
#[must_use]
pub fn may_replace(stored: Option<(TaskState, u64)>, fence: u64) -> bool {
    match stored {
        None => true,
        Some((TaskState::Succeeded, stored_fence)) => stored_fence == fence,
        Some((_, stored_fence)) => stored_fence <= fence,
    }
}

/// Where task outcomes are kept, by task id, for a limited time.
///
/// The trait is object safe; dmq holds backends as `Arc<dyn ResultBackend>`.
#[async_trait]
pub trait ResultBackend: Send + Sync + fmt::Debug + 'static {
    /// Stores `outcome` under `id` for `ttl`, replacing any earlier one, and wakes
    /// whoever waits for it.
    ///
    /// # Errors
    ///
    /// When the backend cannot be reached.
    async fn store(&self, id: TaskId, outcome: &TaskOutcome, ttl: Duration) -> Result<()>;

    /// Stores the outcome of the run that held the lease with fence `fence`
    /// ([`Lease::fence`](crate::Lease::fence)) as [`store`](ResultBackend::store)
    /// does, unless [`may_replace`] says no: a success once stored is never replaced
    /// by another run, and nothing replaces what a later run (a greater fence) stored.
    /// The check and the write are one atomic step. Returns whether it stored.
    ///
    /// Workers store every result this way, so a run that lost its lease (it stalled
    /// past it, and another worker took the job over and finished it) cannot change
    /// the result its successor stored.
    ///
    /// # Errors
    ///
    /// When the backend cannot be reached.
    async fn store_fenced(
        &self,
        id: TaskId,
        outcome: &TaskOutcome,
        ttl: Duration,
        fence: u64,
    ) -> Result<bool>;

    /// The outcome stored under `id`, if any. Never waits.
    ///
    /// # Errors
    ///
    /// When the backend cannot be reached.
    async fn get(&self, id: TaskId) -> Result<Option<TaskOutcome>>;

    /// The outcome stored under `id`, waiting up to `timeout` for it to arrive
    /// (woken by notification, not by polling); `None` if it did not.
    ///
    /// # Errors
    ///
    /// When the backend cannot be reached.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future only stops the wait.
    async fn wait(&self, id: TaskId, timeout: Duration) -> Result<Option<TaskOutcome>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_is_named_as_it_is_stored() {
        for state in
            [TaskState::Succeeded, TaskState::Failed, TaskState::Expired, TaskState::Cancelled]
        {
            let stored: String =
                rmp_serde::from_slice(&rmp_serde::to_vec(&state).unwrap()).unwrap();
            assert_eq!(stored, state.as_str());
        }
    }

    #[test]
    fn a_success_is_replaced_only_by_the_run_that_stored_it() {
        let success = Some((TaskState::Succeeded, 7));
        assert!(may_replace(success, 7));
        assert!(!may_replace(success, 6), "an earlier run");
        assert!(!may_replace(success, 8), "a later run");
        assert!(!may_replace(Some((TaskState::Succeeded, 0)), 8), "a plain store's success");
    }

    #[test]
    fn a_failure_is_replaced_by_the_same_or_a_later_run_only() {
        for state in [TaskState::Failed, TaskState::Expired, TaskState::Cancelled] {
            assert!(may_replace(Some((state, 7)), 7));
            assert!(may_replace(Some((state, 8)), 9));
            assert!(!may_replace(Some((state, 8)), 7), "an earlier run");
        }
        assert!(may_replace(None, 1));
    }
}
