use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The error a task returns.
///
/// Any error type converts into it with `?`, and such an error is retryable (within
/// the task's `max_retries`). [`TaskError::fatal`] marks an error that must never be
/// retried; [`TaskError::retry_after`] asks for a specific delay before the next
/// attempt.
///
/// ```
/// use dmq_core::TaskError;
///
/// fn parse(s: &str) -> Result<i64, TaskError> {
///     let n: i64 = s.parse()?; // retryable
///     if n < 0 {
///         return Err(TaskError::fatal("negative input will never work"));
///     }
///     Ok(n)
/// }
/// # assert!(parse("-1").unwrap_err().is_fatal());
/// ```
pub struct TaskError {
    source: Box<dyn StdError + Send + Sync + 'static>,
    class: Class,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Class {
    Retryable,
    Fatal,
    RetryAfter(Duration),
}

impl TaskError {
    /// A retryable error with a plain message.
    pub fn msg(message: impl fmt::Display) -> Self {
        TaskError { source: message.to_string().into(), class: Class::Retryable }
    }

    /// An error that must never be retried: the job fails at once.
    pub fn fatal(error: impl Into<Box<dyn StdError + Send + Sync + 'static>>) -> Self {
        TaskError { source: error.into(), class: Class::Fatal }
    }

    /// A retryable error that asks for the next attempt after `delay` (still bounded by
    /// the task's `max_retries`).
    pub fn retry_after(
        error: impl Into<Box<dyn StdError + Send + Sync + 'static>>,
        delay: Duration,
    ) -> Self {
        TaskError { source: error.into(), class: Class::RetryAfter(delay) }
    }

    /// Whether this error forbids any retry.
    #[must_use]
    pub fn is_fatal(&self) -> bool {
        self.class == Class::Fatal
    }

    /// The delay this error asked for before the next attempt, if any.
    #[must_use]
    pub fn requested_delay(&self) -> Option<Duration> {
        match self.class {
            Class::RetryAfter(d) => Some(d),
            _ => None,
        }
    }

    /// The underlying error, to downcast to the type the task returned.
    #[must_use]
    pub fn source_error(&self) -> &(dyn StdError + Send + Sync + 'static) {
        &*self.source
    }

    /// The underlying error as `E`, when it is one.
    #[must_use]
    pub fn downcast_ref<E: StdError + 'static>(&self) -> Option<&E> {
        self.source.downcast_ref::<E>()
    }

    /// The kind recorded in the task's result.
    #[must_use]
    pub fn kind(&self) -> FailureKind {
        match self.class {
            Class::Fatal => FailureKind::Fatal,
            _ => FailureKind::Error,
        }
    }
}

impl<E: StdError + Send + Sync + 'static> From<E> for TaskError {
    fn from(error: E) -> Self {
        TaskError { source: Box::new(error), class: Class::Retryable }
    }
}

impl From<TaskError> for Box<dyn StdError + Send + Sync + 'static> {
    fn from(error: TaskError) -> Self {
        error.source
    }
}

impl From<TaskError> for Box<dyn StdError + 'static> {
    fn from(error: TaskError) -> Self {
        error.source
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.source, f)?;
        let mut cause = self.source.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

impl fmt::Debug for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskError")
            .field("class", &self.class)
            .field("error", &self.source)
            .finish()
    }
}

/// The error a retry policy's filters see when a task panicked:
/// `RetryPolicy::retry_on::<TaskPanicked>()` retries panics.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TaskPanicked {
    /// The panic's message.
    pub message: String,
}

impl fmt::Display for TaskPanicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the task panicked: {}", self.message)
    }
}

impl StdError for TaskPanicked {}

/// The error a retry policy's filters see when a task ran past its timeout:
/// `RetryPolicy::retry_on::<TaskTimedOut>()` retries timeouts.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TaskTimedOut {
    /// The timeout the run exceeded.
    pub limit: Duration,
}

impl fmt::Display for TaskTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the task timed out after {:?}", self.limit)
    }
}

impl StdError for TaskTimedOut {}

/// Why a job did not produce a value, as recorded in its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureKind {
    /// The task returned a (retryable) error.
    Error,
    /// The task returned [`TaskError::fatal`].
    Fatal,
    /// The task panicked.
    Panic,
    /// The task ran past its timeout.
    Timeout,
    /// No task of the job's name is registered in the worker.
    UnknownTask,
    /// The job's arguments do not decode into the task's parameter types.
    BadArgs,
    /// The task's return value could not be encoded.
    BadOutput,
    /// The job's envelope could not be decoded.
    Undecodable,
}

impl FailureKind {
    /// The kind's name as stored and shown: `error`, `fatal`, `panic`, ...
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            FailureKind::Error => "error",
            FailureKind::Fatal => "fatal",
            FailureKind::Panic => "panic",
            FailureKind::Timeout => "timeout",
            FailureKind::UnknownTask => "unknown_task",
            FailureKind::BadArgs => "bad_args",
            FailureKind::BadOutput => "bad_output",
            FailureKind::Undecodable => "undecodable",
        }
    }

    /// Whether a failure of this kind may be retried at all.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(self, FailureKind::Error | FailureKind::Panic | FailureKind::Timeout)
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
