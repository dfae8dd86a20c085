use std::collections::BTreeMap;

use crate::task::TaskId;

/// What a running task may know about its own job.
///
/// A task asks for it by taking a parameter of this type; it is filled in by the
/// worker and is not part of the task's call arguments:
///
/// ```
/// use dmq_core::{task, TaskContext, TaskError};
///
/// #[task]
/// async fn report(ctx: TaskContext, n: u32) -> Result<String, TaskError> {
///     Ok(format!("job {} attempt {} got {n}", ctx.id(), ctx.attempt()))
/// }
/// # fn main() { let _ = report::call(1); }
/// ```
#[derive(Debug, Clone)]
pub struct TaskContext {
    pub(crate) id: TaskId,
    pub(crate) name: String,
    pub(crate) queue: String,
    pub(crate) attempt: u32,
    pub(crate) headers: BTreeMap<String, String>,
}

impl TaskContext {
    /// A context for calling a task function directly, as in a unit test.
    #[must_use]
    pub fn for_test(name: impl Into<String>) -> Self {
        TaskContext {
            id: TaskId::new(),
            name: name.into(),
            queue: "default".to_owned(),
            attempt: 1,
            headers: BTreeMap::new(),
        }
    }

    /// The job's id.
    #[must_use]
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// The task's registered name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The queue the job came from.
    #[must_use]
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The attempt now running, starting at 1.
    #[must_use]
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The job's string headers (trace context, tenant, ...).
    #[must_use]
    pub fn headers(&self) -> &BTreeMap<String, String> {
        &self.headers
    }
}
