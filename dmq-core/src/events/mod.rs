//! Lifecycle events: what happened to a job, the rules that select events, and the
//! callbacks that receive them.
//!
//! Every state change of a job is an [`Event`]. The manager hands each one to the
//! [`Callback`]s registered on it whose [`Rules`] select it, off the hot path: each
//! callback has a bounded queue of its own, events beyond the bound are dropped and
//! counted, and a callback that panics is logged and keeps receiving events.
//!
//! Every process also appends its events, in batches, to the broker's event stream
//! (`EventStream::publish_events`), which any process reads with `EventStream::read_events`
//! (`dmq events`); `wire.rs` holds the format a batch is stored in.

mod wire;

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::Error;
use crate::task::{FailureKind, TaskId};

pub use wire::DecodedEvents;

/// One state change of one job.
///
/// A job's events reach a callback in the order they happened, but for one: the
/// producer emits `Queued` once the broker has accepted the job, and a quick worker
/// in the same process may have emitted its first events by then. Its `at` is taken
/// before the job reached the broker, so ordering by `at` puts it first.
///
/// An event comes only once what it reports is written: a job's result is stored
/// before its `Completed`, `Failed`, `NotFound` or `Expired`, the retry scheduled
/// before its `Retry`, and the dead letter written before its `DeadLettered`.
///
/// ```
/// use dmq_core::{Event, EventKind};
///
/// fn describe(event: &Event) -> String {
///     match &event.kind {
///         EventKind::Completed { run_time, .. } => format!("{} took {run_time:?}", event.task),
///         EventKind::Failed { error, .. } => format!("{} failed: {error}", event.task),
///         other => format!("{} {}", event.task, other.event_type()),
///     }
/// }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Event {
    /// What happened, with the facts particular to it.
    pub kind: EventKind,
    /// The job's id.
    pub id: TaskId,
    /// The task's name.
    pub task: String,
    /// The queue the job is in.
    pub queue: String,
    /// The job's attempt: the run this event is about, counting from 1 (for
    /// [`Queued`](EventKind::Queued), the attempt it is queued for).
    pub attempt: u32,
    /// The id of the worker it happened in ([`WorkerInfo::id`](crate::WorkerInfo));
    /// `None` when a producer enqueued the job.
    pub worker: Option<String>,
    /// When it happened.
    pub at: DateTime<Utc>,
}

impl Event {
    /// An event of `kind` about job `id` of `task` in `queue`, happening now.
    pub fn new(
        kind: EventKind,
        id: TaskId,
        task: impl Into<String>,
        queue: impl Into<String>,
        attempt: u32,
    ) -> Self {
        Event {
            kind,
            id,
            task: task.into(),
            queue: queue.into(),
            attempt,
            worker: None,
            at: Utc::now(),
        }
    }

    /// The same event, as seen by worker `worker`.
    pub fn with_worker(mut self, worker: impl Into<String>) -> Self {
        self.worker = Some(worker.into());
        self
    }

    /// The same event, happening at `at`.
    pub fn with_time(mut self, at: DateTime<Utc>) -> Self {
        self.at = at;
        self
    }

    /// Which kind of event this is, without its facts.
    #[must_use]
    pub fn event_type(&self) -> EventType {
        self.kind.event_type()
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} id={} queue={} attempt={}",
            self.at.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
            self.event_type(),
            self.task,
            self.id,
            self.queue,
            self.attempt
        )?;
        match &self.kind {
            EventKind::Queued { eta: Some(eta) } => {
                write!(f, " eta={}", eta.format("%Y-%m-%dT%H:%M:%S%.3fZ"))?;
            }
            EventKind::Completed { run_time } => write!(f, " run_time={run_time:?}")?,
            EventKind::Failed { failure, error, .. } => write!(f, " {failure}: {error}")?,
            EventKind::Retry { delay, error, .. } => {
                write!(f, " retry_in={delay:?} error: {error}")?;
            }
            EventKind::DeadLettered { reason } => write!(f, " reason: {reason}")?,
            EventKind::Expired { expired_at } => {
                write!(f, " expired_at={}", expired_at.format("%Y-%m-%dT%H:%M:%S%.3fZ"))?;
            }
            EventKind::Held { gate, limit } => write!(f, " gate={gate} limit={}", limit.as_str())?,
            EventKind::Queued { eta: None } | EventKind::Started | EventKind::NotFound => {}
        }
        if let Some(worker) = &self.worker {
            write!(f, " worker={worker}")?;
        }
        Ok(())
    }
}

/// What happened to a job, with the facts particular to each kind of event.
///
/// A job's events come in this order:
///
/// | what happened | events |
/// | --- | --- |
/// | enqueued, ran, succeeded | `Queued`, `Started`, `Completed` |
/// | a run failed and the job will run again | `Started`, `Retry` (then `Started` again) |
/// | the last run failed, or the error is not retried | `Started`, `Failed`, `DeadLettered` |
/// | at most once, the run failed | `Started`, `Failed` (never dead-lettered) |
/// | no task of that name in the worker | `NotFound`, `Failed`, `DeadLettered` |
/// | expired before it started | `Expired`, `DeadLettered` |
/// | arguments that do not fit the task | `Started`, `Failed`, `DeadLettered` |
/// | an envelope that does not decode | `Failed`, `DeadLettered` (with the id, but no task name) |
///
/// A run that ends without settling its job (its lease passed to another worker, a
/// shutdown released it, or an at-most-once run was cut off) emits no closing event:
/// the job's next run emits its own.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum EventKind {
    /// The job was accepted by the broker: due now, or at `eta`.
    Queued {
        /// When it becomes due, if later than now.
        eta: Option<DateTime<Utc>>,
    },
    /// A worker started a run of the job.
    Started,
    /// A run succeeded; the job is done.
    Completed {
        /// How long the run took.
        run_time: Duration,
    },
    /// The job failed for good: its stored result is this failure.
    Failed {
        /// What kind of failure.
        failure: FailureKind,
        /// The error's message.
        error: String,
        /// How long the run took, when it ran.
        run_time: Option<Duration>,
    },
    /// A run failed and the job runs again, as attempt `attempt + 1`, after `delay`.
    Retry {
        /// How long until the next attempt.
        delay: Duration,
        /// The error's message.
        error: String,
        /// How long the failed run took.
        run_time: Duration,
    },
    /// The job went to its queue's dead-letter queue.
    DeadLettered {
        /// Why, as the dead letter records it.
        reason: String,
    },
    /// No task of the job's name is registered in the worker that claimed it.
    NotFound,
    /// The job's expiry passed before it started.
    Expired {
        /// When it expired.
        expired_at: DateTime<Utc>,
    },
    /// A claim found the job due but held it back: its gate's rate limit or
    /// concurrency limit is reached. It waits in the broker and starts when the gate
    /// lets it. Once per hold, emitted by the worker whose claim held it back.
    Held {
        /// The gate: the task's name, or `task[key]` for a limit per key.
        gate: String,
        /// Which limit held it back.
        limit: HeldBy,
    },
}

/// Which limit of its gate holds a job back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeldBy {
    /// The rate limit: the job is throttled until the rate lets it start.
    Rate,
    /// The concurrency limit: the job is deferred until a running job frees a slot.
    Concurrency,
}

impl HeldBy {
    /// `rate` or `concurrency`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            HeldBy::Rate => "rate",
            HeldBy::Concurrency => "concurrency",
        }
    }
}

impl EventKind {
    /// Which kind of event this is, without its facts.
    #[must_use]
    pub fn event_type(&self) -> EventType {
        match self {
            EventKind::Queued { .. } => EventType::Queued,
            EventKind::Started => EventType::Started,
            EventKind::Completed { .. } => EventType::Completed,
            EventKind::Failed { .. } => EventType::Failed,
            EventKind::Retry { .. } => EventType::Retry,
            EventKind::DeadLettered { .. } => EventType::DeadLettered,
            EventKind::NotFound => EventType::NotFound,
            EventKind::Expired { .. } => EventType::Expired,
            EventKind::Held { .. } => EventType::Held,
        }
    }
}

/// The kinds of [`Event`], without their facts: what [`Rules`] select.
///
/// Parses from and displays as `queued`, `started`, `completed`, `failed`, `retry`,
/// `dead_lettered`, `not_found` and `expired`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum EventType {
    /// [`EventKind::Queued`].
    Queued,
    /// [`EventKind::Started`].
    Started,
    /// [`EventKind::Completed`].
    Completed,
    /// [`EventKind::Failed`].
    Failed,
    /// [`EventKind::Retry`].
    Retry,
    /// [`EventKind::DeadLettered`].
    DeadLettered,
    /// [`EventKind::NotFound`].
    NotFound,
    /// [`EventKind::Expired`].
    Expired,
    /// [`EventKind::Held`].
    Held,
}

impl EventType {
    /// Every kind of event.
    pub const ALL: [EventType; 9] = [
        EventType::Queued,
        EventType::Started,
        EventType::Completed,
        EventType::Failed,
        EventType::Retry,
        EventType::DeadLettered,
        EventType::NotFound,
        EventType::Expired,
        EventType::Held,
    ];

    /// The kinds that say something went wrong: `failed`, `retry`, `dead_lettered`,
    /// `not_found` and `expired`.
    pub const FAILURES: [EventType; 5] = [
        EventType::Failed,
        EventType::Retry,
        EventType::DeadLettered,
        EventType::NotFound,
        EventType::Expired,
    ];

    /// The name it parses from and displays as.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Queued => "queued",
            EventType::Started => "started",
            EventType::Completed => "completed",
            EventType::Failed => "failed",
            EventType::Retry => "retry",
            EventType::DeadLettered => "dead_lettered",
            EventType::NotFound => "not_found",
            EventType::Expired => "expired",
            EventType::Held => "held",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventType {
    type Err = Error;

    /// Also takes `-` for `_` (`dead-lettered`) and any case.
    fn from_str(s: &str) -> Result<Self, Error> {
        let wanted = s.trim().to_ascii_lowercase().replace('-', "_");
        EventType::ALL.into_iter().find(|t| t.as_str() == wanted).ok_or_else(|| {
            let known: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
            Error::InvalidArgument(format!(
                "unknown event kind {s:?}; expected one of {}",
                known.join(", ")
            ))
        })
    }
}

/// Which events a [`Callback`] receives: by kind, task name and queue. Each part
/// left unset selects everything; the parts that are set must all match.
///
/// ```
/// use dmq_core::{EventType, Rules};
///
/// // Failures of two tasks, in any queue.
/// let rules = Rules::all()
///     .events([EventType::Failed, EventType::DeadLettered])
///     .tasks(["emails.send", "billing.charge"]);
/// # let _ = rules;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// A bit per [`EventType`]; `None` for every kind.
    events: Option<u16>,
    tasks: Option<BTreeSet<String>>,
    queues: Option<BTreeSet<String>>,
}

impl Rules {
    /// Every event.
    #[must_use]
    pub fn all() -> Self {
        Rules::default()
    }

    /// Every event that says something went wrong: [`EventType::FAILURES`].
    #[must_use]
    pub fn failures() -> Self {
        Rules::all().events(EventType::FAILURES)
    }

    /// Only events of these kinds (added to the kinds chosen before).
    #[must_use]
    pub fn events(mut self, kinds: impl IntoIterator<Item = EventType>) -> Self {
        let bits = kinds.into_iter().fold(0, |bits, kind| bits | kind.bit());
        self.events = Some(self.events.unwrap_or(0) | bits);
        self
    }

    /// Only events of these tasks (added to the tasks named before).
    #[must_use]
    pub fn tasks<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tasks.get_or_insert_with(BTreeSet::new).extend(names.into_iter().map(Into::into));
        self
    }

    /// Only events of jobs in these queues (added to the queues named before).
    #[must_use]
    pub fn queues<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.queues.get_or_insert_with(BTreeSet::new).extend(names.into_iter().map(Into::into));
        self
    }

    /// Whether these rules select an event of `kind` about `task` in `queue`.
    #[must_use]
    pub fn selects(&self, kind: EventType, task: &str, queue: &str) -> bool {
        self.events.is_none_or(|bits| bits & kind.bit() != 0)
            && self.tasks.as_ref().is_none_or(|tasks| tasks.contains(task))
            && self.queues.as_ref().is_none_or(|queues| queues.contains(queue))
    }

    /// Whether these rules select `event`.
    #[must_use]
    pub fn matches(&self, event: &Event) -> bool {
        self.selects(event.event_type(), &event.task, &event.queue)
    }
}

/// Receives the events its [`rules`](Callback::rules) select; register it with
/// [`ManagerBuilder::callback`](crate::ManagerBuilder::callback).
///
/// Callbacks run off the hot path, each on a task of its own fed by a bounded queue
/// ([`ManagerBuilder::event_buffer`](crate::ManagerBuilder::event_buffer) events): a
/// slow callback never holds up a job; when its queue is full, the events it has no
/// room for are dropped and counted ([`Manager::event_listeners`](crate::Manager::event_listeners)).
/// A callback that panics is logged and goes on receiving events. Each callback
/// sees the events of one process (the workers and producers of this manager); to
/// watch every process, read the broker's event stream (`dmq events`). A callback's
/// task runs on the tokio runtime that emitted the first event: keep a manager
/// within one runtime (a callback whose runtime has shut down gets no more events,
/// and they count as dropped).
///
/// ```
/// use dmq_core::{async_trait, Callback, Event, EventKind, Manager, Rules};
///
/// struct LogFailures;
///
/// #[async_trait]
/// impl Callback for LogFailures {
///     fn rules(&self) -> Rules {
///         Rules::failures()
///     }
///
///     async fn on_event(&self, event: &Event) {
///         eprintln!("{event}");
///     }
/// }
///
/// # fn main() -> dmq_core::Result<()> {
/// let manager = Manager::builder().callback(LogFailures).build()?;
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait Callback: Send + Sync + 'static {
    /// Which events to receive; every event by default. Read once, when the
    /// callback is registered.
    fn rules(&self) -> Rules {
        Rules::all()
    }

    /// Handles one event.
    async fn on_event(&self, event: &Event);

    /// The name logs and metrics give this callback; its type's name by default.
    fn name(&self) -> String {
        std::any::type_name::<Self>().to_owned()
    }
}

/// A shared callback is a callback: keep an `Arc` of yours to read what it gathered.
#[async_trait]
impl<C: Callback + ?Sized> Callback for std::sync::Arc<C> {
    fn rules(&self) -> Rules {
        (**self).rules()
    }

    async fn on_event(&self, event: &Event) {
        (**self).on_event(event).await;
    }

    fn name(&self) -> String {
        (**self).name()
    }
}

/// How many events each callback's queue holds by default.
pub const DEFAULT_EVENT_BUFFER: usize = 10_000;

/// What one listener has received and dropped, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListenerStats {
    /// The callback's [`name`](Callback::name), or `event-stream` for the broker's
    /// event stream.
    pub name: String,
    /// Events handed to it.
    pub delivered: u64,
    /// Events dropped because its queue was full (or, for the event stream, because
    /// the broker could not be written).
    pub dropped: u64,
}

/// Sees every event as it is emitted, before any callback: how the metrics count
/// jobs.
pub(crate) trait EventObserver: Send + Sync {
    /// Takes note of `event`; must not block.
    fn observe(&self, event: &Event);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_parse_from_their_names_and_common_spellings() {
        for kind in EventType::ALL {
            assert_eq!(kind.as_str().parse::<EventType>().ok(), Some(kind));
            assert_eq!(kind.to_string(), kind.as_str());
        }
        assert_eq!("Dead-Lettered".parse::<EventType>().ok(), Some(EventType::DeadLettered));
        let err = "finished".parse::<EventType>().err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("expected one of queued, started")));
    }

    #[test]
    fn rules_select_by_kind_task_and_queue_together() {
        let rules = Rules::all().events([EventType::Failed]).tasks(["a"]).queues(["q"]);
        assert!(rules.selects(EventType::Failed, "a", "q"));
        assert!(!rules.selects(EventType::Completed, "a", "q"));
        assert!(!rules.selects(EventType::Failed, "b", "q"));
        assert!(!rules.selects(EventType::Failed, "a", "other"));
        assert!(Rules::all().selects(EventType::Queued, "anything", "anywhere"));
        let failures = Rules::failures();
        let selected: Vec<EventType> =
            EventType::ALL.into_iter().filter(|kind| failures.selects(*kind, "t", "q")).collect();
        use EventType::{DeadLettered, Expired, Failed, NotFound, Retry};
        assert_eq!(selected, [Failed, Retry, DeadLettered, NotFound, Expired]);
        assert_eq!(EventType::FAILURES, [Failed, Retry, DeadLettered, NotFound, Expired]);
    }

    #[test]
    fn rules_add_up_across_calls() {
        let rules = Rules::all().events([EventType::Failed]).events([EventType::Retry]);
        assert!(rules.selects(EventType::Failed, "t", "q"));
        assert!(rules.selects(EventType::Retry, "t", "q"));
        assert!(!rules.selects(EventType::Started, "t", "q"));
    }
}
