//! The crate's error type.

use std::time::Duration;

use crate::task::TaskId;

/// A `Result` whose error defaults to dmq's [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in dmq outside of a task's own body.
///
/// Branch on the variant, or ask [`Error::is_transient`] whether trying again later
/// may help.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Two `#[task]` functions registered the same task name.
    #[error(
        "two tasks are registered under the name {name:?}: one at {first}, one at {second}; \
         give one of them another name with #[task(name = \"...\")]"
    )]
    DuplicateTask {
        /// The task name both use.
        name: String,
        /// Where the first one is defined (`file:line`).
        first: String,
        /// Where the second one is defined (`file:line`).
        second: String,
    },

    /// An encoded job is larger than the configured limit.
    #[error(
        "the job for task {task:?} is {size} bytes, over the {limit}-byte limit; \
         pass large data by reference (a key or URL) or raise Manager::builder().max_message_size(..)"
    )]
    MessageTooLarge {
        /// The task the job was for.
        task: String,
        /// The encoded size in bytes.
        size: usize,
        /// The configured limit in bytes.
        limit: usize,
    },

    /// A value could not be encoded as MessagePack.
    #[error("could not encode {what}: {reason}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's message.
        reason: String,
    },

    /// A job envelope could not be decoded.
    #[error("could not decode the job envelope: {0}")]
    Decode(String),

    /// A stored result does not decode into the type the caller asked for.
    #[error(
        "the result of task {id} does not decode as {expected}: {reason}; \
         ask for the task's own return type"
    )]
    ResultType {
        /// The task id.
        id: TaskId,
        /// The Rust type the caller asked for.
        expected: &'static str,
        /// The decoder's message.
        reason: String,
    },

    /// The task ran and failed; its error message and kind are kept.
    #[error("task {id} failed ({kind}): {message}")]
    TaskFailed {
        /// The task id.
        id: TaskId,
        /// The kind of failure: `error`, `fatal`, `panic`, `timeout`, `unknown_task`, `bad_args`, ...
        kind: String,
        /// The task's error message.
        message: String,
    },

    /// The job's expiry passed before it started, so it never ran.
    #[error("task {id} expired before it started and did not run")]
    Expired {
        /// The task id.
        id: TaskId,
    },

    /// The job was cancelled before it started
    /// ([`Manager::cancel`](crate::Manager::cancel)), so it will never run.
    #[error("task {id} was cancelled before it started and will not run")]
    Cancelled {
        /// The task id.
        id: TaskId,
    },

    /// No result arrived within the time the caller was willing to wait.
    #[error("no result for task {id} within {waited:?}; the job may still be queued or running")]
    Timeout {
        /// The task id.
        id: TaskId,
        /// How long the caller waited.
        waited: Duration,
    },

    /// A job with this id is already in the queue (ready, delayed or running).
    #[error(
        "a job with id {id} is already in queue {queue:?}; each enqueue needs a fresh id \
         (enqueue the call again rather than the same envelope)"
    )]
    DuplicateJob {
        /// The repeated id.
        id: TaskId,
        /// The queue.
        queue: String,
    },

    /// A job with this idempotency key is already known in the queue; nothing was
    /// enqueued. `Manager` turns this into the first job's id.
    #[error("idempotency key {key:?} already belongs to job {existing} in queue {queue:?}")]
    IdempotencyKeyTaken {
        /// The key.
        key: String,
        /// The queue.
        queue: String,
        /// The job the key belongs to.
        existing: TaskId,
    },

    /// An enqueue quota (`dmq quota set`) is used up for this window: nothing was
    /// enqueued. Enqueue again after `retry_after`.
    #[error(
        "the enqueue quota of {quota} ({limit}) is used up: nothing was enqueued; retry in \
         {retry_after:?}, or raise the quota (dmq quota set)"
    )]
    QuotaExceeded {
        /// Which quota: `namespace "billing"` or `key "tenant-7" of namespace "billing"`.
        quota: String,
        /// The quota, as set: `"1000/m"`.
        limit: String,
        /// When the quota's window ends and enqueues are let through again.
        retry_after: std::time::Duration,
    },

    /// A lease token no longer matches: the lease expired and the job was handed
    /// to another worker, or the job was already acknowledged.
    #[error("the lease on job {id} is no longer held by this worker (expired or already settled)")]
    LeaseLost {
        /// The job's task id.
        id: TaskId,
    },

    /// A queue was not deleted because workers hold jobs of it
    /// ([`BrokerAdmin::delete_queue`](crate::BrokerAdmin::delete_queue) without
    /// `force`); nothing was deleted.
    #[error(
        "queue {queue:?} has {in_flight} jobs in flight, held by workers; nothing was \
         deleted: wait for them to finish, or force the delete (the workers' \
         acknowledgements then fail with a lost lease)"
    )]
    QueueBusy {
        /// The queue, as the caller named it.
        queue: String,
        /// How many of its jobs workers hold.
        in_flight: u64,
    },

    /// An argument given to dmq was not valid.
    #[error("{0}")]
    InvalidArgument(String),

    /// The broker or backend does not offer what was asked of it, such as an event
    /// stream to read.
    #[error("{0}")]
    Unsupported(String),

    /// The broker or backend failed; `transient` tells whether retrying may help.
    /// Make one with [`Error::backend`] or [`Error::backend_caused_by`].
    #[error("{message}")]
    #[non_exhaustive]
    Backend {
        /// What failed and what to do about it.
        message: String,
        /// Whether the same call may succeed later (a lost connection, say).
        transient: bool,
        /// The backend's own error, when there is one (a `redis::RedisError` behind
        /// `dmq_redis::RedisFailure`, say): what [`source`](std::error::Error::source)
        /// returns.
        #[source]
        source: Option<BackendSource>,
    },
}

/// A backend's own error, kept as the source of an [`Error::Backend`]: shared, so
/// that one failure can be handed to each caller of a batch. It derefs to the error
/// itself, which is what [`source`](std::error::Error::source) returns, so walking the
/// chain downcasts to the backend's type.
#[derive(Debug, Clone)]
pub struct BackendSource(std::sync::Arc<dyn std::error::Error + Send + Sync + 'static>);

impl BackendSource {
    /// Keeps `error` as a backend failure's source.
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        BackendSource(std::sync::Arc::new(error))
    }
}

impl std::ops::Deref for BackendSource {
    type Target = dyn std::error::Error + Send + Sync + 'static;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl Error {
    /// A backend failure that says what failed and what to do (`message`), and whether
    /// the same call may succeed later.
    #[must_use]
    pub fn backend(message: impl Into<String>, transient: bool) -> Self {
        Error::Backend { message: message.into(), transient, source: None }
    }

    /// A backend failure caused by the backend's own error `source`, which
    /// [`source`](std::error::Error::source) returns.
    #[must_use]
    pub fn backend_caused_by(
        message: impl Into<String>,
        transient: bool,
        source: BackendSource,
    ) -> Self {
        Error::Backend { message: message.into(), transient, source: Some(source) }
    }

    /// The backend's own error behind a [`Backend`](Error::Backend) failure, to
    /// downcast to the backend's type (`dmq_redis::RedisFailure`, say): the same error
    /// [`source`](std::error::Error::source) returns.
    #[must_use]
    pub fn backend_source(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        match self {
            Error::Backend { source: Some(source), .. } => Some(&**source),
            _ => None,
        }
    }

    /// Whether the same operation may succeed if tried again later, as after a lost
    /// connection; `false` for errors that retrying cannot fix, like a bad argument.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Backend { transient: true, .. } | Error::Timeout { .. })
    }
}

/// The message a panic carries, when it is a string (a task's panic, a callback's).
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(a non-string panic payload)")
}
