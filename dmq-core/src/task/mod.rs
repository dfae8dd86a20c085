//! Tasks: ids, errors, the context a running task may ask for, the registry that
//! `#[task]` fills, and the typed call builder and handle.

mod call;
mod context;
mod error;
mod id;
pub(crate) mod registry;

pub use call::{Call, ResultRef, TaskHandle};
pub use context::TaskContext;
pub use error::{FailureKind, TaskError, TaskPanicked, TaskTimedOut};
pub use id::TaskId;
pub use registry::{Registry, TaskInfo};
