//! dmq: a Celery-style distributed task runner.
//!
//! Mark an async function with [`#[task]`](macro@task), enqueue it with
//! `my_task::call(args).enqueue(&manager)`, and run workers that execute it, with
//! retries, timeouts and a result backend callers await by task id.
//!
//! ```standalone_crate
//! use dmq_core::{task, Manager, TaskError};
//! use std::time::Duration;
//!
//! #[task]
//! async fn add(x: i64, y: i64) -> Result<i64, TaskError> {
//!     Ok(x + y)
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let manager = Manager::builder().build()?;
//! let worker = manager.worker().concurrency(4).start();
//! let handle = add::call(2, 3).enqueue(&manager).await?;
//! assert_eq!(handle.result(Duration::from_secs(10)).await?, 5);
//! worker.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod backend;
mod broker;
mod clock;
mod core;
mod envelope;
mod error;
mod events;
mod guarantee;
mod limits;
mod manager;
mod metrics;
mod names;
mod partition;
mod registry;
mod retry;
mod schedule;
mod task;
mod trace;
mod unique;
mod worker;

#[cfg(feature = "test-util")]
pub mod conformance;

pub use async_trait::async_trait;
pub use backend::{
    DEFAULT_RESULT_TTL, InMemoryBackend, ResultBackend, TaskFailure, TaskOutcome, TaskState,
    may_replace,
};
pub use broker::{
    Broker, BrokerAdmin, Cancelled, DEFAULT_EVENT_STREAM_CAP, DEFAULT_MAX_DELIVERIES, DeadLetter,
    Delivery, EventCursor, EventPage, EventStream, EventsFrom, FoundJob, GateStatus, HeldBack,
    InMemoryBroker, Job, JobState, Lease, QueueCheckup, QueueDeleted, QueueStats, QuotaState,
    QuotaStore, QuotasSeen, ScheduleState, ScheduleStore, WorkerInfo, WorkerRegistry, WorkerStatus,
    refuse_keys_in_batches,
};
pub use dmq_macros::task;
pub use envelope::{
    DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_PRIORITY, DEFAULT_QUEUE, Envelope, FORMAT_VERSION,
    MAX_PRIORITY,
};
pub use error::{BackendSource, Error, Result};
pub use events::{
    Callback, DEFAULT_EVENT_BUFFER, DecodedEvents, Event, EventKind, EventType, HeldBy,
    ListenerStats, Rules,
};
pub use guarantee::Guarantee;
pub use limits::{Gate, Gcra, JobLimits, MAX_GATE_LEN, RateLimit};
pub use manager::{
    Call, ClaimedJob, Consumer, DEFAULT_IDEMPOTENCY_TTL, Manager, ManagerBuilder, Nack,
    NackOutcome, ResultRef, TaskHandle,
};
pub use metrics::Metrics;
pub use names::{MAX_NAME_LEN, check_queue_name, check_task_name};
pub use partition::{
    MAX_PARTITIONS, PARTITION_SEPARATOR, PartitionBy, is_partition_of, partition_name,
    partition_of_key, split_partition,
};
pub use registry::{Registry, TaskInfo};
pub use retry::{Backoff, Jitter, MAX_BACKOFF, RetryPolicy};
pub use schedule::{MissedFires, Schedule, Tz};
pub use task::{FailureKind, TaskContext, TaskError, TaskId, TaskPanicked, TaskTimedOut};
pub use trace::{TRACEPARENT_HEADER, TRACESTATE_HEADER, inject_trace_context};
pub use unique::{KeyHold, UniqueFor};
pub use worker::{
    CLAIMS_FAILING_LIMIT, DEFAULT_HEARTBEAT, FIRE_TIME_HEADER, Health, LoopFailure, LoopVitals,
    MISSED_HEARTBEATS, SCHEDULE_HEADER, ShutdownReport, WorkerBuilder, WorkerHandle, WorkerMonitor,
    WorkerVitals,
};

/// The README's Rust blocks, run as doctests so the quick start cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

/// What `#[task]` expands to refers only to this module. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::guarantee::Guarantee;
    pub use crate::manager::Call;
    pub use crate::registry::{
        PeriodicSpec, RunError, TaskFuture, TaskRegistration, decode_args, decode_no_args,
    };
    pub use crate::retry::{Backoff, Jitter, RetryPolicy};
    pub use crate::task::{TaskContext, TaskError};
    pub use inventory;
    pub use std::boxed::Box;
    pub use std::result::Result;
    pub use std::time::Duration;
    pub use std::vec::Vec;
    pub use tokio;

    use serde::Serialize;
    use serde::de::DeserializeOwned;

    /// A type a task may take as an argument or return as its value.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` cannot travel as a task argument or result",
        label = "a task's arguments and value must implement serde's `Serialize` and `Deserialize`, and be owned, `Send` and `'static`",
        note = "derive them with #[derive(serde::Serialize, serde::Deserialize)], or pass an id the task can look up"
    )]
    pub trait TaskValue: Serialize + DeserializeOwned + Send + 'static {}

    impl<T: Serialize + DeserializeOwned + Send + 'static> TaskValue for T {}

    /// Checks at compile time that `T` can be a task argument.
    pub const fn assert_value<T: TaskValue>() {}

    /// What a task function may return: `Result<T, E>` with `E: Into<TaskError>`.
    #[diagnostic::on_unimplemented(
        message = "a task must return `Result<T, E>`, not `{Self}`",
        label = "change the return type to `Result<T, TaskError>` (any error type that converts into `TaskError` works too)"
    )]
    pub trait TaskReturn {
        /// The success type.
        type Ok: TaskValue;
        /// Splits the value from the error.
        fn into_task_result(self) -> Result<Self::Ok, TaskError>;
    }

    impl<T: TaskValue, E: Into<TaskError>> TaskReturn for Result<T, E> {
        type Ok = T;
        fn into_task_result(self) -> Result<T, TaskError> {
            self.map_err(Into::into)
        }
    }

    /// Turns a task function's return into the encoded value or the error.
    ///
    /// # Errors
    ///
    /// [`RunError::Task`] with the task's error, [`RunError::BadOutput`] when the
    /// value does not encode.
    pub fn finish<R: TaskReturn>(returned: R) -> Result<Vec<u8>, RunError> {
        let value = returned.into_task_result().map_err(RunError::Task)?;
        rmp_serde::to_vec_named(&value)
            .map_err(|e| RunError::BadOutput(format!("the task's value did not encode: {e}")))
    }
}
