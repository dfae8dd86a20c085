//! The task model's plain values: ids, the errors a task returns, and the context a
//! running task may ask for. It imports nothing else of dmq.

mod context;
mod error;
mod id;

pub use context::TaskContext;
pub use error::{FailureKind, TaskError, TaskPanicked, TaskTimedOut};
pub use id::TaskId;
