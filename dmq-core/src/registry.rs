//! The registry of tasks linked into the binary, filled by `#[task]` through
//! `inventory`.

use crate::limits::{JobLimits, RateLimit};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::de::{DeserializeOwned, IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::envelope::without_values;
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
    /// How many partitions its queue has (`#[task(partitions = N)]`); 1 for none.
    pub partitions: u16,
    /// Its rate limit as written (`#[task(rate_limit = "100/s")]`, checked when it
    /// compiled).
    pub rate_limit: Option<&'static str>,
    /// How many of its jobs may start at once under the rate.
    pub burst: Option<u32>,
    /// How many of its jobs may run at once (per key, with `concurrency_key`).
    pub concurrency: Option<u32>,
    /// The gate it shares with other tasks (`#[task(limit_gate = "mail")]`), if any.
    pub limit_gate: Option<&'static str>,
    /// The Rust path of the function.
    pub path: &'static str,
    /// The file that defines it.
    pub file: &'static str,
    /// The line that defines it.
    pub line: u32,
    /// Decodes the arguments, runs the function and encodes its value.
    pub run: fn(Vec<u8>, TaskContext) -> TaskFuture,
    /// Decodes the arguments as `run` does, without running the function: whether a
    /// job's arguments fit the task.
    pub check_args: fn(&[u8]) -> Result<(), RunError>,
}

inventory::collect!(TaskRegistration);

/// Decodes the argument tuple of task `task`, which takes `A`. For generated code.
///
/// # Errors
///
/// [`RunError::BadArgs`] saying which types were expected.
pub fn decode_args<A: DeserializeOwned>(task: &str, bytes: &[u8]) -> Result<A, RunError> {
    rmp_serde::from_slice(bytes).map_err(|e| {
        let takes = short_type_name(std::any::type_name::<A>());
        RunError::BadArgs(format!(
            "the arguments do not fit task {task:?}, which takes {takes}: {}",
            without_values(&e.to_string())
        ))
    })
}

/// Decodes the arguments of task `task`, which takes none: an empty array, as the wire
/// format documents (and `dmq enqueue t '[]'` sends), or nil, which is what `()`
/// encodes to and what dmq's own producers write. For generated code.
///
/// # Errors
///
/// [`RunError::BadArgs`] for anything else.
pub fn decode_no_args(task: &str, bytes: &[u8]) -> Result<(), RunError> {
    rmp_serde::from_slice::<NoArgs>(bytes).map(|NoArgs| ()).map_err(|e| {
        RunError::BadArgs(format!(
            "the arguments do not fit task {task:?}, which takes no arguments: {}",
            without_values(&e.to_string())
        ))
    })
}

/// The arguments of a task that takes none.
struct NoArgs;

impl<'de> Deserialize<'de> for NoArgs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NoArgs)
    }
}

impl<'de> Visitor<'de> for NoArgs {
    type Value = NoArgs;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an empty array")
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<NoArgs, E> {
        Ok(NoArgs)
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<NoArgs, E> {
        Ok(NoArgs)
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<NoArgs, S::Error> {
        let mut items = 0;
        while seq.next_element::<IgnoredAny>()?.is_some() {
            items += 1;
        }
        if items == 0 { Ok(NoArgs) } else { Err(serde::de::Error::invalid_length(items, &self)) }
    }
}

/// A type's name as `std::any::type_name` gives it, without the module paths:
/// `(alloc::string::String, app::Order)` becomes `(String, Order)`.
fn short_type_name(full: &str) -> String {
    let mut out = String::with_capacity(full.len());
    let mut segment = String::new();
    let mut chars = full.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ':' && chars.peek() == Some(&':') {
            // A path separator: what came before it was a module.
            chars.next();
            segment.clear();
        } else if c.is_alphanumeric() || c == '_' {
            segment.push(c);
        } else {
            out.push_str(&segment);
            segment.clear();
            out.push(c);
        }
    }
    out.push_str(&segment);
    out
}

/// The schedule a `#[task]` attribute gives its task. Not for hand use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeriodicSpec {
    /// `cron = "..."`: a cron expression, checked when the manager is built.
    Cron(&'static str),
    /// `every = "..."`: a fixed interval.
    Every(Duration),
}

impl TaskRegistration {
    /// The flow limits the attribute declares, if any (the key, taken from an
    /// argument, only a typed call knows).
    pub(crate) fn limits(&self) -> Option<JobLimits> {
        let rate = self.rate_limit.and_then(|rate| rate.parse::<RateLimit>().ok());
        let limits = JobLimits {
            rate,
            burst: self.burst,
            concurrency: self.concurrency,
            key: None,
            shared: self.limit_gate.map(str::to_owned),
        };
        limits.is_limited().then_some(limits)
    }

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
    /// How many partitions its queue has, as its attribute declares (1: none).
    pub partitions: u16,
    /// Its flow limits, when the attribute sets any: every job of it passes them
    /// unless its call lifts them ([`Call::unlimited`](crate::Call::unlimited)).
    pub limits: Option<JobLimits>,
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
    /// [`Error::InvalidArgument`] for a task whose name or queue is not usable (see
    /// [`check_queue_name`](crate::check_queue_name)), naming where it is defined.
    pub fn from_linked() -> Result<Self> {
        Self::from_registrations(inventory::iter::<TaskRegistration>)
    }

    fn from_registrations(
        regs: impl IntoIterator<Item = &'static TaskRegistration>,
    ) -> Result<Self> {
        let mut by_name: HashMap<&'static str, &'static TaskRegistration> = HashMap::new();
        for reg in regs {
            crate::names::check_task_name(reg.name)
                .and_then(|()| crate::names::check_queue_name(reg.queue))
                .map_err(|e| {
                    Error::InvalidArgument(format!("the #[task] {}: {e}", reg.location()))
                })?;
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

    /// Checks that `args`, an encoded argument tuple, decode into the parameter types of
    /// the task registered as `name`, as a worker would decode them before a run,
    /// without running it. A producer that knows the task (`app enqueue`) refuses
    /// arguments that do not fit at once, rather than have the job dead-lettered later.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when no task `name` is registered in this binary, or
    /// when `args` do not fit its parameters; the message names their types.
    pub fn check_args(&self, name: &str, args: &[u8]) -> Result<()> {
        let Some(reg) = self.get(name) else {
            return Err(Error::InvalidArgument(format!(
                "no task named {name:?} is registered in this binary, so its arguments \
                 cannot be checked"
            )));
        };
        (reg.check_args)(args).map_err(|e| Error::InvalidArgument(e.message()))
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
        partitions: reg.partitions,
        limits: reg.limits(),
        path: reg.path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn never(_: Vec<u8>, _: TaskContext) -> TaskFuture {
        Box::pin(async { Ok(Vec::new()) })
    }

    fn two_numbers(args: &[u8]) -> Result<(), RunError> {
        decode_args::<(i64, i64)>("same", args).map(|_| ())
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
        partitions: 1,
        rate_limit: None,
        burst: None,
        concurrency: None,
        limit_gate: None,
        path: "app::a",
        file: "src/a.rs",
        line: 3,
        run: never,
        check_args: two_numbers,
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
        partitions: 1,
        rate_limit: None,
        burst: None,
        concurrency: None,
        limit_gate: None,
        path: "app::b",
        file: "src/b.rs",
        line: 7,
        run: never,
        check_args: two_numbers,
    };

    #[test]
    fn type_names_lose_their_module_paths() {
        assert_eq!(short_type_name("(alloc::string::String, i64)"), "(String, i64)");
        assert_eq!(short_type_name("(u32,)"), "(u32,)");
        assert_eq!(
            short_type_name("(alloc::vec::Vec<app::orders::Order>, core::option::Option<[u8; 4]>)"),
            "(Vec<Order>, Option<[u8; 4]>)"
        );
        assert_eq!(short_type_name("()"), "()");
    }

    #[test]
    fn no_arguments_are_an_empty_array_or_nil() {
        for bytes in [&[0x90][..], &[0xdc, 0, 0], &[0xdd, 0, 0, 0, 0], &[0xc0]] {
            assert!(decode_no_args("t", bytes).is_ok(), "{bytes:?}");
        }
        assert_eq!(rmp_serde::to_vec(&()).unwrap(), [0xc0], "what dmq writes for none");
        for (bytes, expected) in [
            (&[0x91, 0x01][..], "invalid length 1, expected an empty array"),
            (&[0x80], "invalid type: map, expected an empty array"),
            (&[0xa1, b'x'], "invalid type: a string of 1 bytes, expected an empty array"),
            (&[], "the arguments do not fit task \"t\", which takes no arguments: "),
        ] {
            let Err(RunError::BadArgs(message)) = decode_no_args("t", bytes) else {
                panic!("{bytes:?} decoded");
            };
            assert!(message.contains(expected), "{expected:?} in {message}");
        }
    }

    #[test]
    fn a_task_with_an_unusable_queue_is_refused_naming_its_place() {
        static SPACED: TaskRegistration = TaskRegistration {
            name: "report",
            queue: "daily reports",
            path: "app::report",
            file: "src/report.rs",
            line: 12,
            ..A
        };
        let err = Registry::from_registrations([&A, &SPACED]).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
        assert!(
            text.starts_with(
                "the #[task] app::report (src/report.rs:12): queue name \"daily reports\""
            ),
            "{text}"
        );
    }

    #[test]
    fn arguments_are_checked_against_the_registered_types() {
        let registry = Registry::from_registrations([&A]).unwrap();
        assert!(registry.check_args("same", &rmp_serde::to_vec(&(2, 3)).unwrap()).is_ok());
        let err = registry.check_args("same", &rmp_serde::to_vec(&(2,)).unwrap()).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "the arguments do not fit task \"same\", which takes (i64, i64): invalid length 1, \
             expected a tuple of size 2"
        );
        let err = registry.check_args("other", &[0x90]).unwrap_err();
        assert!(err.to_string().contains("no task named \"other\" is registered"), "{err}");
    }

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
