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
