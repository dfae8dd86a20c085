//! The typed client: a [`Call`] of a task, ready to enqueue on a [`Manager`], the
//! [`TaskHandle`] it gives back, and [`ResultRef`], a result read by id.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Manager;
use crate::backend::{TaskOutcome, TaskState};
use crate::envelope::{Envelope, MAX_PRIORITY};
use crate::error::{Error, Result};
use crate::limits::{JobLimits, RateLimit};
use crate::retry::{Backoff, RetryPolicy};
use crate::schedule::Schedule;
use crate::task::TaskId;
use crate::unique::UniqueFor;

/// A typed call of one task, ready to enqueue: `add::call(2, 3)`.
///
/// Set where and when it runs with [`queue`](Call::queue), [`delay`](Call::delay),
/// [`eta`](Call::eta), [`cron`](Call::cron) and [`priority`](Call::priority), then
/// [`enqueue`](Call::enqueue) it. `T` is the task's success type.
#[must_use = "a call does nothing until it is enqueued"]
pub struct Call<T> {
    task: &'static str,
    queue: String,
    args: std::result::Result<Vec<u8>, String>,
    delay: Option<Duration>,
    eta: Option<DateTime<Utc>>,
    priority: u8,
    max_retries: Option<u32>,
    backoff: Option<Backoff>,
    /// Set when the call's retry policy had error filters, which cannot travel.
    filters_refused: bool,
    expires: Option<Expiry>,
    idempotency_key: Option<String>,
    unique: Option<UniqueFor>,
    /// The id the caller chose, if any.
    id: Option<TaskId>,
    partition_key: Option<String>,
    timeout: Option<Duration>,
    headers: BTreeMap<String, String>,
    limits: JobLimits,
    /// Set by `unlimited`: the job goes without its task's limits.
    unlimited: bool,
    quota_key: Option<String>,
    group: Option<String>,
    /// Why a limit given to this call is not valid, reported by `enqueue`.
    limits_refused: Option<String>,
    output: PhantomData<fn() -> T>,
}

/// When a call's job expires.
#[derive(Debug, Clone, Copy)]
enum Expiry {
    In(Duration),
    At(DateTime<Utc>),
}

impl<T> fmt::Debug for Call<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("task", &self.task)
            .field("queue", &self.queue)
            .field("delay", &self.delay)
            .field("eta", &self.eta)
            .field("priority", &self.priority)
            .finish_non_exhaustive()
    }
}

impl<T> Call<T> {
    /// A call of the task `task` with `args` (the argument tuple). `#[task]` generates
    /// the typed constructor; this one is for generated code.
    #[doc(hidden)]
    pub fn new<A: Serialize>(task: &'static str, queue: &'static str, args: &A) -> Self {
        Call {
            task,
            queue: queue.to_owned(),
            args: rmp_serde::to_vec(args).map_err(|e| e.to_string()),
            delay: None,
            eta: None,
            priority: crate::envelope::DEFAULT_PRIORITY,
            max_retries: None,
            backoff: None,
            filters_refused: false,
            expires: None,
            idempotency_key: None,
            unique: None,
            id: None,
            partition_key: None,
            timeout: None,
            headers: BTreeMap::new(),
            limits: JobLimits::default(),
            unlimited: false,
            quota_key: None,
            group: None,
            limits_refused: None,
            output: PhantomData,
        }
    }

    /// The same call with the limits its task's attribute declares. For generated code.
    #[doc(hidden)]
    pub fn with_task_limits(
        mut self,
        rate: Option<&str>,
        burst: Option<u32>,
        concurrency: Option<u32>,
        gate: Option<&str>,
    ) -> Self {
        if let Some(rate) = rate {
            self = self.rate_limit(rate);
        }
        self.limits.burst = burst;
        self.limits.concurrency = concurrency;
        self.limits.shared = gate.map(str::to_owned);
        self
    }

    /// Starts at most this many jobs of the task per period (`"100/s"`, `"30/m"`,
    /// `"1000/h"`, `"5/250ms"`) across every worker, overriding the task's
    /// `rate_limit`. Jobs over the limit wait in the broker, and start as soon as the
    /// limit allows; workers take other jobs meanwhile. A rate that does not parse
    /// fails the enqueue with [`Error::InvalidArgument`].
    ///
    /// The limit holds per gate: all jobs of the task in its queue, or with
    /// [`concurrency_key`](Call::concurrency_key), those with the same key.
    pub fn rate_limit(mut self, rate: &str) -> Self {
        self.unlimited = false;
        match rate.parse::<RateLimit>() {
            Ok(rate) => self.limits.rate = Some(rate),
            Err(e) => self.limits_refused = Some(e.to_string()),
        }
        self
    }

    /// Lets up to `burst` jobs start at once under the rate limit, after a quiet
    /// spell (by default what the rate allows in 10 ms, at least 1: up to 100/s, starts
    /// are evenly spaced).
    pub fn burst(mut self, burst: u32) -> Self {
        self.unlimited = false;
        self.limits.burst = Some(burst);
        self
    }

    /// Runs at most `limit` jobs of the task (or of its key, with
    /// [`concurrency_key`](Call::concurrency_key)) at once across every worker,
    /// overriding the task's `concurrency`. A slot held by a worker that dies comes
    /// back when its jobs are taken back.
    pub fn concurrency(mut self, limit: u32) -> Self {
        self.unlimited = false;
        self.limits.concurrency = Some(limit);
        self
    }

    /// Applies the task's limits per `key` (a tenant, a customer, an API token): at
    /// most `concurrency` jobs of one key run at once, and the rate holds per key.
    pub fn concurrency_key(mut self, key: impl Into<String>) -> Self {
        self.unlimited = false;
        self.limits.key = Some(key.into());
        self
    }

    /// Counts the job against the enqueue quota of `key` (a tenant, set with `dmq quota
    /// set NAMESPACE RATE --key KEY`) as well as its namespace's: over either, the
    /// enqueue fails with [`Error::QuotaExceeded`].
    pub fn quota_key(mut self, key: impl Into<String>) -> Self {
        self.quota_key = Some(key.into());
        self
    }

    /// Puts the job in `group` (a tenant, a customer) for fair claiming: workers take
    /// the queue's grouped jobs round robin across groups, one job of each group in
    /// turn, so that one group's backlog of 100,000 jobs does not hold back another's
    /// ten. Within a group, jobs go highest priority first, then in order; the
    /// queue's jobs without a group share each claim with the grouped ones, half and
    /// half while both wait (an odd slot goes to each side by turns). A job with a
    /// rate or concurrency limit passes its gate as well.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Passes the gate named `gate`, which other tasks may name too, instead of the
    /// task's own: the limits then hold for the jobs of every task that names it
    /// together (a limit on a whole queue, when each task of the queue names one gate;
    /// with a [`concurrency_key`](Call::concurrency_key), per key of it). The gate
    /// keeps the limits of the last job enqueued through it, so give every task that
    /// names it the same limits. Without a rate or concurrency limit it limits
    /// nothing.
    pub fn limit_gate(mut self, gate: impl Into<String>) -> Self {
        self.unlimited = false;
        self.limits.shared = Some(gate.into());
        self
    }

    /// Lifts the task's rate and concurrency limits for this call: the job starts as
    /// soon as a worker is free, and takes no slot of its task's.
    pub fn unlimited(mut self) -> Self {
        self.limits = JobLimits::default();
        self.limits_refused = None;
        self.unlimited = true;
        self
    }

    /// On a partitioned queue (`#[task(partitions = 8)]`, or
    /// [`ManagerBuilder::partitions`](crate::ManagerBuilder::partitions)), sends the job
    /// to the partition of `key` ([`partition_of_key`](crate::partition_of_key)): the
    /// jobs of one key (a user, a tenant, an order) go to one partition, so they keep
    /// their order relative to each other. On a queue without partitions it changes
    /// nothing.
    pub fn partition_key(mut self, key: impl Into<String>) -> Self {
        self.partition_key = Some(key.into());
        self
    }

    /// The call's partition key, taken out before the call becomes an envelope.
    pub(crate) fn take_partition_key(&mut self) -> Option<String> {
        self.partition_key.take()
    }

    /// The task's registered name.
    #[must_use]
    pub fn task_name(&self) -> &'static str {
        self.task
    }

    /// Sends the job to `queue` instead of the task's own.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }

    /// Runs the job no earlier than `delay` after it is enqueued.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self.eta = None;
        self
    }

    /// Runs the job no earlier than `eta`.
    pub fn eta(mut self, eta: DateTime<Utc>) -> Self {
        self.eta = Some(eta);
        self.delay = None;
        self
    }

    /// Runs the job once, at the next time after now that the cron expression `expr`
    /// matches, read in UTC: `add::call(2, 3).cron("0 */4 * * *")?` runs at the next
    /// 00:00, 04:00, 08:00 ... UTC. This sets the [`eta`](Call::eta) (replacing a
    /// [`delay`](Call::delay) or an earlier eta); the job runs once, not periodically.
    /// `expr` takes every form [`Schedule::cron`] does. For another time zone, use
    /// [`at_next`](Call::at_next) with a [`Schedule`].
    ///
    /// ```standalone_crate
    /// use dmq_core::{task, TaskError};
    ///
    /// #[task]
    /// async fn add(x: i64, y: i64) -> Result<i64, TaskError> {
    ///     Ok(x + y)
    /// }
    ///
    /// # fn main() -> Result<(), dmq_core::Error> {
    /// let call = add::call(2, 3).cron("0 */4 * * *")?;
    /// let eta = call.into_envelope()?.eta.expect("cron sets the eta");
    /// assert_eq!(eta.timestamp() % (4 * 3600), 0);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when `expr` does not parse (the message names the
    /// wrong field) or has no match after now.
    pub fn cron(self, expr: &str) -> Result<Self> {
        self.at_next(&Schedule::cron(expr)?)
    }

    /// Runs the job once, at `schedule`'s next fire time after now, in the schedule's
    /// time zone: with `mondays = Schedule::cron("0 9 * * Mon")?.in_time_zone(Tz::Europe__Paris)`,
    /// `report::call().at_next(&mondays)?` runs at the next Monday 09:00 in Paris.
    /// Sets the [`eta`](Call::eta) as [`cron`](Call::cron) does; only the schedule's
    /// fire times matter, not its name, start delay or missed-fires policy.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when the schedule has no fire time after now.
    pub fn at_next(self, schedule: &Schedule) -> Result<Self> {
        self.at_next_after(schedule, Utc::now())
    }

    /// [`at_next`](Call::at_next) with "now" given, so tests need no clock.
    fn at_next_after(self, schedule: &Schedule, now: DateTime<Utc>) -> Result<Self> {
        match schedule.next_after(now) {
            Some(at) => Ok(self.eta(at)),
            None => Err(Error::InvalidArgument(format!(
                "{} has no fire time after {now}, so this call of {:?} would never run; \
                 check the expression's years",
                schedule.describe(),
                self.task
            ))),
        }
    }

    /// Sets the priority, from 0 (lowest) to 9 (highest); 5 by default. Among due
    /// jobs in one queue, higher priorities are claimed first.
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = priority;
        self
    }

    /// Retries a failed run as `policy` says (how many times, and how long to wait
    /// before each), overriding the task's and the manager's settings. The policy's
    /// error filters cannot travel with the job: a policy that has some makes
    /// [`enqueue`](Call::enqueue) fail; set them on the task (`#[task(retry = ...)]`)
    /// or the manager instead.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.max_retries = Some(policy.max_retries);
        self.backoff = Some(policy.backoff);
        self.filters_refused = policy.has_error_filters();
        self
    }

    /// Makes a second enqueue of the same work a no-op: while a job with `key` is known
    /// in the queue (for the manager's `idempotency_ttl`, a day by default), enqueueing
    /// another call with it enqueues nothing and returns the first job's handle.
    /// Works with `enqueue`, not `enqueue_batch`.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Makes the job unique while `mode` says: a second enqueue of the same work in
    /// that time adds nothing and returns the first job's handle (a debounce replaces
    /// the waiting job's arguments and delay instead; see [`UniqueFor`]). The same
    /// work is the same key: the call's [`idempotency_key`](Call::idempotency_key) when
    /// it has one, else the task's name with its arguments. Works with `enqueue`, not
    /// `enqueue_batch`.
    ///
    /// ```standalone_crate
    /// use std::time::Duration;
    ///
    /// use dmq_core::{task, InMemoryBackend, InMemoryBroker, Manager, TaskError, UniqueFor};
    ///
    /// #[task]
    /// async fn reindex(user: u64) -> Result<(), TaskError> {
    ///     Ok(())
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), dmq_core::Error> {
    /// let manager = Manager::builder()
    ///     .broker(InMemoryBroker::new())
    ///     .backend(InMemoryBackend::new())
    ///     .build()?;
    /// let first = reindex::call(7).unique(UniqueFor::Queued).enqueue(&manager).await?;
    /// let again = reindex::call(7).unique(UniqueFor::Queued).enqueue(&manager).await?;
    /// assert_eq!(first.id(), again.id());
    /// let other = reindex::call(8).unique(UniqueFor::Queued).enqueue(&manager).await?;
    /// assert_ne!(first.id(), other.id());
    /// # Ok(())
    /// # }
    /// ```
    pub fn unique(mut self, mode: UniqueFor) -> Self {
        self.unique = Some(mode);
        self
    }

    /// Throttles the work: at most one job of it is enqueued per `window`, counted
    /// from the enqueue that added it. The same as
    /// [`unique(UniqueFor::Ttl(window))`](Call::unique).
    pub fn throttle(self, window: Duration) -> Self {
        self.unique(UniqueFor::Ttl(window))
    }

    /// Debounces the task: the job starts `quiet` after the last enqueue of it, with
    /// that enqueue's arguments. Calls of the task share one job whatever their
    /// arguments, unless they have an [`idempotency_key`](Call::idempotency_key): then
    /// calls with the same key do (one job per user, say). An enqueue while the job still waits replaces it
    /// (arguments, priority, options) and pushes its start back, keeping its id and
    /// handle; once it has started, an enqueue adds a new job. The same as
    /// [`unique(UniqueFor::Debounce(quiet))`](Call::unique); its delay replaces any
    /// [`delay`](Call::delay) or [`eta`](Call::eta) of the call.
    pub fn debounce(self, quiet: Duration) -> Self {
        self.unique(UniqueFor::Debounce(quiet))
    }

    /// Gives the job this id instead of a fresh one, so that a producer that enqueues
    /// it again (a retry after a timeout, a redelivered message) cannot make a second
    /// job: a second [`enqueue`](Call::enqueue) of the id, while it is known, enqueues
    /// nothing and returns the first job's handle, whatever its arguments. It is known
    /// for the manager's `idempotency_ttl` (a day by default), also after the job ran,
    /// through the idempotency key `id:<id>` (or the call's own
    /// [`idempotency_key`](Call::idempotency_key), which then decides). In
    /// `enqueue_batch`, a known id fails the batch with [`Error::DuplicateJob`] while
    /// its job waits in the queue.
    ///
    /// ```standalone_crate
    /// use dmq_core::{task, InMemoryBackend, InMemoryBroker, Manager, TaskError, TaskId};
    ///
    /// #[task]
    /// async fn add(x: i64, y: i64) -> Result<i64, TaskError> {
    ///     Ok(x + y)
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), dmq_core::Error> {
    /// let manager = Manager::builder()
    ///     .broker(InMemoryBroker::new())
    ///     .backend(InMemoryBackend::new())
    ///     .build()?;
    /// let id = TaskId::new();
    /// let first = add::call(2, 3).id(id).enqueue(&manager).await?;
    /// let again = add::call(2, 3).id(id).enqueue(&manager).await?;
    /// assert_eq!((first.id(), again.id()), (id, id));
    /// assert_eq!(manager.admin().expect("admin").queue_len(add::QUEUE).await?, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn id(mut self, id: impl Into<TaskId>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Never starts the job once `ttl` has passed from now: a worker that finds it
    /// later marks it expired in the result backend (the caller's `result` gives
    /// [`Error::Expired`]) and dead-letters it, without running it.
    pub fn expires_in(mut self, ttl: Duration) -> Self {
        self.expires = Some(Expiry::In(ttl));
        self
    }

    /// Never starts the job after the instant `at` (see [`expires_in`](Call::expires_in)).
    pub fn expires_at(mut self, at: DateTime<Utc>) -> Self {
        self.expires = Some(Expiry::At(at));
        self
    }

    /// Waits as `backoff` says before each retry, overriding the manager's default.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = Some(backoff);
        self
    }

    /// Allows `max_retries` retries of a failed run, overriding the task's setting.
    pub fn max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = Some(max_retries);
        self
    }

    /// Limits one run to `timeout`, overriding the task's setting.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Adds a string header that travels with the job.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// The envelope this call enqueues, with a fresh id (or the one given to
    /// [`id`](Call::id)).
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] when an argument did not encode, [`Error::InvalidArgument`]
    /// for a priority above 9 or a retry policy with error filters.
    pub fn into_envelope(self) -> Result<Envelope> {
        if self.filters_refused {
            return Err(Error::InvalidArgument(format!(
                "the retry policy of this call of {:?} has error filters (retry_on, \
                 dont_retry_on, retry_if, dont_retry_if), which are code and cannot travel \
                 with the job; set them in the task's policy (#[task(retry = path::to_fn)]) \
                 or the manager's default_retry",
                self.task
            )));
        }
        if let Some(why) = self.limits_refused {
            return Err(Error::InvalidArgument(format!("a call of {:?}: {why}", self.task)));
        }
        if self.priority > MAX_PRIORITY {
            return Err(Error::InvalidArgument(format!(
                "priority {} is out of range: use 0 (lowest) to 9 (highest)",
                self.priority
            )));
        }
        let args =
            self.args.map_err(|reason| Error::Encode { what: "the task's arguments", reason })?;
        let mut envelope = Envelope::new(self.task, self.queue, args);
        if let Some(id) = self.id {
            envelope.id = id;
        }
        envelope.eta = match (self.eta, self.delay) {
            (Some(eta), _) => Some(eta),
            (None, Some(delay)) => Some(
                envelope.created_at
                    + chrono::Duration::from_std(delay).map_err(|_| {
                        Error::InvalidArgument(format!("delay {delay:?} is too long"))
                    })?,
            ),
            (None, None) => None,
        };
        envelope.priority = self.priority;
        envelope.max_retries = self.max_retries;
        envelope.backoff = self.backoff;
        envelope.idempotency_key = self.idempotency_key;
        if let Some(mode) = self.unique {
            if self.id.is_some() && matches!(mode, UniqueFor::Debounce(_)) {
                return Err(Error::InvalidArgument(format!(
                    "a debounced call of {:?} cannot have a chosen id: its enqueue replaces \
                     the waiting job, keeping that job's id; leave .id out",
                    self.task
                )));
            }
            envelope.unique_for = Some(mode.hold());
            match mode {
                UniqueFor::Ttl(ttl) => {
                    envelope.unique_ttl_ms =
                        Some(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
                }
                UniqueFor::Debounce(quiet) => {
                    envelope.eta = Some(
                        envelope.created_at
                            + chrono::Duration::from_std(quiet).map_err(|_| {
                                Error::InvalidArgument(format!(
                                    "debounce window {quiet:?} is too long"
                                ))
                            })?,
                    );
                }
                UniqueFor::Queued | UniqueFor::UntilDone => {}
            }
        }
        envelope.expires_at = match self.expires {
            Some(Expiry::At(at)) => Some(at),
            Some(Expiry::In(ttl)) => Some(
                envelope.created_at
                    + chrono::Duration::from_std(ttl).map_err(|_| {
                        Error::InvalidArgument(format!("expiry {ttl:?} is too long"))
                    })?,
            ),
            None => None,
        };
        envelope.timeout_ms =
            self.timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
        envelope.headers = self.headers;
        envelope.quota_key = self.quota_key;
        envelope.group = self.group;
        if self.unlimited {
            // Said in the envelope, so that no registry puts the task's limits back.
            envelope.limits = Some(JobLimits::default());
        } else if self.limits.is_limited() {
            self.limits.check(self.task)?;
            envelope.limits = Some(self.limits);
        } else if self.limits.key.is_some() || self.limits.shared.is_some() {
            let what = if self.limits.key.is_some() { "a concurrency key" } else { "a limit gate" };
            return Err(Error::InvalidArgument(format!(
                "a call of {:?} has {what} but neither a concurrency nor a rate limit, so it \
                 would limit nothing: set #[task(concurrency = N)] or call .concurrency(N)",
                self.task
            )));
        }
        Ok(envelope)
    }

    /// The envelope this call enqueues, with a fresh id, and its
    /// [`partition_key`](Call::partition_key) if it was given one: for code that places
    /// jobs itself, outside a [`Manager`] (dmq-postgres's transactional `enqueue_in`),
    /// and so must not drop the key unseen as [`into_envelope`](Call::into_envelope)
    /// does.
    ///
    /// # Errors
    ///
    /// As [`into_envelope`](Call::into_envelope).
    pub fn into_envelope_and_partition_key(mut self) -> Result<(Envelope, Option<String>)> {
        let key = self.take_partition_key();
        Ok((self.into_envelope()?, key))
    }
}

impl<T: DeserializeOwned> Call<T> {
    /// Enqueues the job and returns a handle to await its result.
    ///
    /// # Errors
    ///
    /// [`Error::MessageTooLarge`] over the manager's size limit, [`Error::Encode`]
    /// when an argument did not encode, [`Error::InvalidArgument`] when the queue
    /// (set with [`queue`](Call::queue)) is not a usable name (see
    /// [`check_queue_name`](crate::check_queue_name)), or the broker's error.
    pub async fn enqueue(mut self, manager: &Manager) -> Result<TaskHandle<T>> {
        let key = self.take_partition_key();
        let chosen = self.id;
        let mut envelope = self.into_envelope()?;
        if let Some(id) = chosen {
            envelope.choose_id(id);
        }
        let id = manager.core.enqueue_envelope_keyed(envelope, key.as_deref()).await?;
        Ok(TaskHandle { result: manager.result::<T>(id) })
    }
}

/// A handle on one enqueued job, to await its typed result. Dropping it is fine: the
/// job runs all the same, and its result can be read later by id.
pub struct TaskHandle<T> {
    result: ResultRef<T>,
}

impl<T> fmt::Debug for TaskHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskHandle").field("id", &self.result.id).finish()
    }
}

impl<T: DeserializeOwned> TaskHandle<T> {
    /// The job's id.
    #[must_use]
    pub fn id(&self) -> TaskId {
        self.result.id
    }

    /// Waits up to `timeout` for the job's result.
    ///
    /// # Errors
    ///
    /// As [`ResultRef::wait`].
    pub async fn result(&self, timeout: Duration) -> Result<T> {
        self.result.wait(timeout).await
    }
}

/// The result of one job, by id, read as `T`: `manager.result::<i64>(id)`.
#[must_use]
pub struct ResultRef<T> {
    manager: Manager,
    id: TaskId,
    output: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for ResultRef<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResultRef").field("id", &self.id).finish()
    }
}

impl<T: DeserializeOwned> ResultRef<T> {
    pub(crate) fn new(manager: Manager, id: TaskId) -> Self {
        ResultRef { manager, id, output: PhantomData }
    }

    /// The job's id.
    #[must_use]
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// The result if the job has finished, `None` if not (yet). Never waits.
    ///
    /// # Errors
    ///
    /// [`Error::TaskFailed`], [`Error::Expired`] or [`Error::Cancelled`] when the job
    /// did not succeed, [`Error::ResultType`] when the value is not a `T`, or the
    /// backend's error.
    pub async fn get(&self) -> Result<Option<T>> {
        match self.manager.backend().get(self.id).await? {
            Some(outcome) => self.read(outcome).map(Some),
            None => Ok(None),
        }
    }

    /// Waits up to `timeout` for the result.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when none arrived in time, otherwise as [`get`](ResultRef::get).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future only stops the wait.
    pub async fn wait(&self, timeout: Duration) -> Result<T> {
        match self.manager.backend().wait(self.id, timeout).await? {
            Some(outcome) => self.read(outcome),
            None => Err(Error::Timeout { id: self.id, waited: timeout }),
        }
    }

    /// The raw stored outcome (state, attempts, timings), if any. Never waits.
    ///
    /// # Errors
    ///
    /// The backend's error.
    pub async fn outcome(&self) -> Result<Option<TaskOutcome>> {
        self.manager.backend().get(self.id).await
    }

    fn read(&self, outcome: TaskOutcome) -> Result<T> {
        match outcome.state {
            TaskState::Succeeded => {
                let bytes = outcome.value.unwrap_or_default();
                rmp_serde::from_slice(&bytes).map_err(|e| Error::ResultType {
                    id: self.id,
                    expected: std::any::type_name::<T>(),
                    reason: e.to_string(),
                })
            }
            TaskState::Failed => {
                let failure = outcome.failure;
                Err(Error::TaskFailed {
                    id: self.id,
                    kind: failure.as_ref().map_or("error", |f| f.kind.as_str()).to_owned(),
                    message: failure.map(|f| f.message).unwrap_or_default(),
                })
            }
            TaskState::Expired => Err(Error::Expired { id: self.id }),
            TaskState::Cancelled => Err(Error::Cancelled { id: self.id }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add() -> Call<i64> {
        Call::new("add", "default", &(2_i64, 3_i64))
    }

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    #[test]
    fn cron_sets_the_eta_to_the_next_match_after_now() {
        let schedule = Schedule::cron("0 */4 * * *").unwrap();
        let before = Utc::now();
        let envelope = add().cron("0 */4 * * *").unwrap().into_envelope().unwrap();
        let after = Utc::now();
        let eta = envelope.eta.expect("an eta");
        // The clock moved during the call: the eta is the next match after some instant
        // between `before` and `after`.
        assert!(eta >= schedule.next_after(before).unwrap(), "{eta}");
        assert!(eta <= schedule.next_after(after).unwrap(), "{eta}");
        assert_eq!(eta.timestamp() % (4 * 60 * 60), 0, "{eta}");
    }

    #[test]
    fn at_next_reads_the_schedule_at_a_given_now() {
        let paris =
            Schedule::cron("0 9 * * Mon").unwrap().in_time_zone(crate::schedule::Tz::Europe__Paris);
        let call =
            add().delay(Duration::from_secs(5)).at_next_after(&paris, utc("2025-03-28T12:00:00Z"));
        let envelope = call.unwrap().into_envelope().unwrap();
        assert_eq!(envelope.eta, Some(utc("2025-03-31T07:00:00Z")));

        let utc_cron = Schedule::cron("0 */4 * * *").unwrap();
        let call = add().at_next_after(&utc_cron, utc("2025-03-28T12:00:00Z")).unwrap();
        assert_eq!(call.into_envelope().unwrap().eta, Some(utc("2025-03-28T16:00:00Z")));
    }

    #[test]
    fn a_bad_or_finished_expression_is_an_error() {
        let error = add().cron("0 25 * * *").unwrap_err();
        assert!(matches!(error, Error::InvalidArgument(_)));
        assert!(error.to_string().contains("the hour field \"25\""), "{error}");

        let past = Schedule::cron("0 0 0 1 1 * 2020").unwrap();
        let error = add().at_next_after(&past, utc("2025-01-01T00:00:00Z")).unwrap_err();
        assert!(error.to_string().contains("has no fire time after"), "{error}");
    }
}
