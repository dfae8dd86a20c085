//! The registry of tasks linked into the binary, filled by `#[task]` through
//! `inventory`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::guarantee::Guarantee;
use crate::retry::{Backoff, RetryPolicy};
use crate::task::{FailureKind, TaskContext, TaskError};

/// The future a registered task's entry point returns: the encoded return value, or
/// why there is none.
pub type TaskFuture = Pin<Box<dyn Future<Output = Result<Vec<u8>, RunError>> + Send>>;

/// Why a run produced no value.
#[derive(Debug)]
pub enum RunError {
    /// The arguments did not decode into the task's parameter types.
    BadArgs(String),
    /// The return value could not be encoded.
    BadOutput(String),
    /// The task itself returned an error.
    Task(TaskError),
}

impl RunError {
    pub(crate) fn kind(&self) -> FailureKind {
        match self {
            RunError::BadArgs(_) => FailureKind::BadArgs,
            RunError::BadOutput(_) => FailureKind::BadOutput,
            RunError::Task(e) => e.kind(),
        }
    }

    pub(crate) fn message(&self) -> String {
        match self {
            RunError::BadArgs(m) | RunError::BadOutput(m) => m.clone(),
            RunError::Task(e) => e.to_string(),
        }
    }
}

/// One `#[task]`, as the macro registers it. Not for hand use.
#[derive(Debug)]
pub struct TaskRegistration {
    /// The task's registered name.
    pub name: &'static str,
    /// The queue its jobs go to unless a call says otherwise.
    pub queue: &'static str,
    /// How many times a failed run is retried; `None` for the manager's default.
    pub max_retries: Option<u32>,
    /// The delay before each retry; `None` for the manager's default.
    pub backoff: Option<Backoff>,
    /// The task's whole retry policy (`#[task(retry = path)]`), which replaces the
    /// manager's default, filters included.
    pub retry: Option<fn() -> RetryPolicy>,
    /// The task's delivery guarantee; `None` for the worker's.
    pub guarantee: Option<Guarantee>,
    /// When the task fires by itself (`#[task(cron = "...")]` or
    /// `#[task(every = "...")]`, for tasks without arguments).
    pub periodic: Option<PeriodicSpec>,
    /// How long one run may take.
    pub timeout: Option<Duration>,
    /// Whether workers skip storing the result.
    pub ignore_result: bool,
    /// The Rust path of the function.
    pub path: &'static str,
    /// The file that defines it.
    pub file: &'static str,
    /// The line that defines it.
    pub line: u32,
    /// Decodes the arguments, runs the function and encodes its value.
    pub run: fn(Vec<u8>, TaskContext) -> TaskFuture,
}

inventory::collect!(TaskRegistration);

/// The schedule a `#[task]` attribute gives its task. Not for hand use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeriodicSpec {
    /// `cron = "..."`: a cron expression, checked when the manager is built.
    Cron(&'static str),
    /// `every = "..."`: a fixed interval.
    Every(Duration),
}

impl TaskRegistration {
    fn location(&self) -> String {
        format!("{} ({}:{})", self.path, self.file, self.line)
    }
}

/// What a worker knows about one registered task.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TaskInfo {
    /// The task's registered name.
    pub name: &'static str,
    /// Its default queue.
    pub queue: &'static str,
    /// Its retry limit, when the attribute set one.
    pub max_retries: Option<u32>,
    /// Its backoff, when the attribute set one.
    pub backoff: Option<Backoff>,
    /// Whether the attribute gave it a whole retry policy (`retry = path`).
    pub has_retry_policy: bool,
    /// Its delivery guarantee, when the attribute set one.
    pub guarantee: Option<Guarantee>,
    /// Its schedule, when the attribute declares it periodic: `cron "0 */4 * * *"` or
    /// `every 5m`.
    pub schedule: Option<String>,
    /// Its timeout, when the attribute set one.
    pub timeout: Option<Duration>,
    /// Whether workers skip storing its result.
    pub ignore_result: bool,
    /// The Rust path of the function.
    pub path: &'static str,
}

/// The tasks linked into this binary, by name.
#[derive(Debug)]
pub struct Registry {
    by_name: HashMap<&'static str, &'static TaskRegistration>,
}

impl Registry {
    /// Collects every `#[task]` linked into the binary.
    ///
    /// # Errors
    ///
    /// [`Error::DuplicateTask`] when two tasks share a name; the message names both.
    pub fn from_linked() -> Result<Self> {
        Self::from_registrations(inventory::iter::<TaskRegistration>)
    }

    fn from_registrations(
        regs: impl IntoIterator<Item = &'static TaskRegistration>,
    ) -> Result<Self> {
        let mut by_name: HashMap<&'static str, &'static TaskRegistration> = HashMap::new();
        for reg in regs {
            if let Some(first) = by_name.insert(reg.name, reg) {
                let (a, b) = order(first, reg);
                return Err(Error::DuplicateTask {
                    name: reg.name.to_owned(),
                    first: a.location(),
                    second: b.location(),
                });
            }
        }
        Ok(Registry { by_name })
    }

    pub(crate) fn get(&self, name: &str) -> Option<&'static TaskRegistration> {
        self.by_name.get(name).copied()
    }

    /// The task registered under `name`.
    #[must_use]
    pub fn task(&self, name: &str) -> Option<TaskInfo> {
        self.get(name).map(info)
    }

    /// Every registration, in no particular order.
    pub(crate) fn registrations(&self) -> impl Iterator<Item = &'static TaskRegistration> + '_ {
        self.by_name.values().copied()
    }

    /// Every registered task, sorted by name.
    #[must_use]
    pub fn tasks(&self) -> Vec<TaskInfo> {
        let mut all: Vec<TaskInfo> = self.by_name.values().copied().map(info).collect();
        all.sort_by_key(|t| t.name);
        all
    }

    /// The distinct queues of the registered tasks, sorted.
    #[must_use]
    pub fn queues(&self) -> Vec<String> {
        let mut queues: Vec<String> = self.by_name.values().map(|r| r.queue.to_owned()).collect();
        queues.sort();
        queues.dedup();
        queues
    }
}

/// Orders two registrations by location, so the error reads the same whatever order
/// the linker chose.
fn order(
    x: &'static TaskRegistration,
    y: &'static TaskRegistration,
) -> (&'static TaskRegistration, &'static TaskRegistration) {
    if (x.file, x.line) <= (y.file, y.line) { (x, y) } else { (y, x) }
}

fn info(reg: &'static TaskRegistration) -> TaskInfo {
    TaskInfo {
        name: reg.name,
        queue: reg.queue,
        max_retries: reg.max_retries,
        backoff: reg.backoff,
        has_retry_policy: reg.retry.is_some(),
        guarantee: reg.guarantee,
        schedule: reg.periodic.map(|spec| match spec {
            PeriodicSpec::Cron(expr) => format!("cron {expr:?}"),
            PeriodicSpec::Every(d) => format!("every {d:?}"),
        }),
        timeout: reg.timeout,
        ignore_result: reg.ignore_result,
        path: reg.path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn never(_: Vec<u8>, _: TaskContext) -> TaskFuture {
        Box::pin(async { Ok(Vec::new()) })
    }

    static A: TaskRegistration = TaskRegistration {
        name: "same",
        queue: "default",
        max_retries: None,
        backoff: None,
        retry: None,
        guarantee: None,
        periodic: None,
        timeout: None,
        ignore_result: false,
        path: "app::a",
        file: "src/a.rs",
        line: 3,
        run: never,
    };
    static B: TaskRegistration = TaskRegistration {
        name: "same",
        queue: "default",
        max_retries: None,
        backoff: None,
        retry: None,
        guarantee: None,
        periodic: None,
        timeout: None,
        ignore_result: false,
        path: "app::b",
        file: "src/b.rs",
        line: 7,
        run: never,
    };

    #[test]
    fn duplicate_names_are_refused_naming_both_places() {
        let err = Registry::from_registrations([&B, &A]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("\"same\""), "{text}");
        assert!(text.contains("app::a (src/a.rs:3)"), "{text}");
        assert!(text.contains("app::b (src/b.rs:7)"), "{text}");
        assert!(matches!(err, Error::DuplicateTask { .. }));
    }
}
