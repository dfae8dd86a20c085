//! The `Manager`: the user's façade over the [`Core`] that producers and workers
//! share, with the typed client beside it (`client.rs`: `Call`, `TaskHandle`,
//! `ResultRef`).

mod client;
mod consumer;
mod metrics;

pub use client::{Call, ResultRef, TaskHandle};
pub use consumer::{ClaimedJob, Consumer, Nack, NackOutcome};

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::backend::{InMemoryBackend, ResultBackend, TaskOutcome};
use crate::broker::{Broker, BrokerAdmin, Cancelled, DeadLetter, EventStream, InMemoryBroker};
use crate::core::bus::Bus;
use crate::core::{Config, Core};
use crate::envelope::Envelope;
use crate::error::{BackendSource, Error, Result};
use crate::events::{Callback, DEFAULT_EVENT_BUFFER, EventObserver, ListenerStats};
use crate::metrics::Metrics;
use crate::partition::{PartitionBy, Partitions};
use crate::registry::PeriodicSpec;
use crate::registry::Registry;
use crate::retry::RetryPolicy;
use crate::schedule::{Periodic, Periodics, Schedule};
use crate::task::TaskId;
use crate::worker::WorkerBuilder;

/// The entry point: enqueues jobs, reads results and starts workers.
///
/// Cheap to clone; clones share everything.
///
/// ```
/// # async fn demo() -> dmq_core::Result<()> {
/// use dmq_core::Manager;
///
/// let manager = Manager::builder().build()?; // in-memory broker and backend
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Manager {
    core: Arc<Core>,
    metrics: Option<Metrics>,
}

pub use crate::core::DEFAULT_IDEMPOTENCY_TTL;

impl fmt::Debug for Manager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manager")
            .field("broker", &self.core.broker)
            .field("backend", &self.core.backend)
            .field("tasks", &self.core.registry.tasks().len())
            .field("config", &self.core.config)
            .finish()
    }
}

impl Manager {
    /// A builder; with nothing set it uses an in-memory broker and backend.
    pub fn builder() -> ManagerBuilder {
        ManagerBuilder::default()
    }

    /// The broker jobs go through.
    #[must_use]
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.core.broker
    }

    /// The backend results are kept in.
    #[must_use]
    pub fn backend(&self) -> &Arc<dyn ResultBackend> {
        &self.core.backend
    }

    /// The tasks linked into this binary.
    #[must_use]
    pub fn registry(&self) -> &Registry {
        &self.core.registry
    }

    /// The metrics this manager records, if it was given any
    /// ([`ManagerBuilder::metrics`]).
    #[must_use]
    pub fn metrics(&self) -> Option<&Metrics> {
        self.metrics.as_ref()
    }

    /// What each event listener (each callback, and the broker's event stream) has
    /// been handed and has dropped so far.
    #[must_use]
    pub fn event_listeners(&self) -> Vec<ListenerStats> {
        self.core.event_listeners()
    }

    /// Waits up to `timeout` for the event listeners to handle the events queued for
    /// them so far (a short-lived producer calls this before it exits, so that its
    /// `Queued` events reach the event stream). Returns whether they did.
    pub async fn flush_events(&self, timeout: Duration) -> bool {
        self.core.events.flush(timeout).await
    }

    /// Runs `call` periodically, as `schedule` says, from every worker of this manager
    /// whose scheduler is on (each fire time is enqueued once, whatever the number of
    /// workers). The schedule is named by [`Schedule::named`], or else after the task
    /// and the schedule (`add@cron "0 * * * *"`); the name is what the broker keeps
    /// its state under, so keep it stable across deployments.
    ///
    /// ```
    /// use dmq_core::{task, Manager, Schedule, TaskError};
    /// use std::time::Duration;
    ///
    /// #[task]
    /// async fn team_report(team: String) -> Result<(), TaskError> {
    ///     Ok(())
    /// }
    ///
    /// # fn main() -> dmq_core::Result<()> {
    /// let manager = Manager::builder().build()?;
    /// manager.periodic(team_report::call("ops".into()), Schedule::cron("0 9 * * 1-5")?)?;
    /// manager.periodic(
    ///     team_report::call("billing".into()),
    ///     Schedule::every(Duration::from_secs(300))?.starting_after(Duration::from_secs(60)),
    /// )?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when a schedule of that name is registered already
    /// or the call's task or queue name is not usable (see
    /// [`check_queue_name`](crate::check_queue_name)), or as [`Call::into_envelope`]
    /// for a call that does not encode.
    pub fn periodic<T>(&self, call: Call<T>, schedule: Schedule) -> Result<()> {
        let template = call.into_envelope()?;
        // Refused now, not at every fire time.
        crate::core::check_names(&template)?;
        let name = schedule
            .name()
            .map_or_else(|| format!("{}@{}", template.task, schedule.describe()), str::to_owned);
        self.add_periodic(Periodic { name, schedule, template })
    }

    fn add_periodic(&self, periodic: Periodic) -> Result<()> {
        let mut periodics = self.core.periodics.lock().unwrap_or_else(|p| p.into_inner());
        if periodics.iter().any(|p| p.name == periodic.name) {
            return Err(Error::InvalidArgument(format!(
                "a periodic schedule named {:?} is registered already; give this one another \
                 name with Schedule::named",
                periodic.name
            )));
        }
        periodics.push(Arc::new(periodic));
        Ok(())
    }

    /// A consumer that claims jobs for code running elsewhere (as `dmq serve` does for
    /// HTTP clients) and settles them by a worker's rules; its leases carry `id`.
    #[must_use]
    pub fn consumer(&self, id: impl Into<String>) -> Consumer {
        Consumer::new(Arc::clone(&self.core), id.into())
    }

    /// A builder for a worker that runs this manager's tasks in this process.
    pub fn worker(&self) -> WorkerBuilder {
        WorkerBuilder::new(Arc::clone(&self.core))
    }

    /// The result of job `id`, read as `T`.
    pub fn result<T: DeserializeOwned>(&self, id: TaskId) -> ResultRef<T> {
        ResultRef::new(self.clone(), id)
    }

    /// Enqueues a prepared envelope and returns its id. Most code calls
    /// `task::call(..).enqueue(&manager)` instead.
    ///
    /// The current span's OpenTelemetry context, if any, goes along in the headers
    /// ([`TRACEPARENT_HEADER`](crate::TRACEPARENT_HEADER) and
    /// [`TRACESTATE_HEADER`](crate::TRACESTATE_HEADER)), so that the run continues the
    /// enqueuer's trace. An envelope that has a `traceparent` header already (set with
    /// [`Call::header`], say) keeps it: a trace context set explicitly wins.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when the task or queue name is not one a job can
    /// have (see [`check_queue_name`](crate::check_queue_name)), nothing enqueued;
    /// [`Error::MessageTooLarge`] over the size limit, or the broker's error.
    pub async fn enqueue_envelope(&self, envelope: Envelope) -> Result<TaskId> {
        self.core.enqueue_envelope(envelope).await
    }

    /// As [`enqueue_envelope`](Manager::enqueue_envelope), sending a job of a
    /// partitioned queue to the partition of `partition_key` (see
    /// [`Call::partition_key`]).
    ///
    /// # Errors
    ///
    /// As [`enqueue_envelope`](Manager::enqueue_envelope).
    pub async fn enqueue_envelope_with_key(
        &self,
        envelope: Envelope,
        partition_key: Option<&str>,
    ) -> Result<TaskId> {
        self.core.enqueue_envelope_keyed(envelope, partition_key).await
    }

    /// As [`enqueue_envelope_with_key`](Manager::enqueue_envelope_with_key), also
    /// saying whether the envelope's idempotency key (its own, or the one
    /// [`Envelope::choose_id`] gives it) was known: then the id is the earlier job's,
    /// and nothing was enqueued. For front ends that report it, such as the HTTP API.
    ///
    /// # Errors
    ///
    /// As [`enqueue_envelope`](Manager::enqueue_envelope).
    pub async fn enqueue_envelope_reporting(
        &self,
        envelope: Envelope,
        partition_key: Option<&str>,
    ) -> Result<(TaskId, bool)> {
        self.core.enqueue_envelope_reporting(envelope, partition_key).await
    }

    /// How many partitions `queue` has for this manager (`#[task(partitions = N)]` or
    /// [`ManagerBuilder::partitions`]); `None` when it is not partitioned.
    pub fn partitions_of(&self, queue: &str) -> Option<u16> {
        self.core.partitions.count(queue)
    }

    /// Enqueues many calls in one step, atomically, and returns their ids in order.
    /// Each carries the current span's trace context, as with
    /// [`enqueue_envelope`](Manager::enqueue_envelope).
    ///
    /// # Errors
    ///
    /// As [`enqueue_envelope`](Manager::enqueue_envelope); on an error nothing was
    /// enqueued.
    pub async fn enqueue_batch<T>(
        &self,
        calls: impl IntoIterator<Item = Call<T>>,
    ) -> Result<Vec<TaskId>> {
        let mut envelopes = Vec::new();
        for mut call in calls {
            let key = call.take_partition_key();
            envelopes.push((call.into_envelope()?, key));
        }
        self.enqueue_envelope_batch(envelopes).await
    }

    /// Enqueues many prepared envelopes in one step, as
    /// [`enqueue_batch`](Manager::enqueue_batch) does, each with the partition key
    /// beside it (see [`Call::partition_key`]); returns their ids in order.
    ///
    /// # Errors
    ///
    /// As [`enqueue_batch`](Manager::enqueue_batch).
    pub async fn enqueue_envelope_batch(
        &self,
        envelopes: Vec<(Envelope, Option<String>)>,
    ) -> Result<Vec<TaskId>> {
        let mut ids = Vec::with_capacity(envelopes.len());
        let mut jobs = Vec::with_capacity(envelopes.len());
        let mut queued = Vec::new();
        let listened = self.core.events.is_listened();
        let trace = crate::trace::TraceContext::current();
        for (mut envelope, key) in envelopes {
            trace.inject(&mut envelope);
            jobs.push(self.core.job(&mut envelope, key.as_deref())?);
            ids.push(envelope.id);
            if listened {
                queued.push(envelope);
            }
        }
        let taken = self.core.take_quotas(&jobs).await?;
        let at = chrono::Utc::now();
        if let Err(e) = self.core.broker.enqueue_batch(jobs).await {
            self.core.refund_quotas(taken).await;
            return Err(e);
        }
        for envelope in &queued {
            self.core.queued(envelope, at);
        }
        Ok(ids)
    }

    /// The broker's admin capability: queues and their figures, dead letters, purges,
    /// finding a job by id.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] for a broker without one ([`Broker::admin`]).
    pub fn admin(&self) -> Result<&dyn BrokerAdmin> {
        self.core.admin()
    }

    /// Cancels job `id` of `queue` if it has not started, with
    /// [`BrokerAdmin::cancel`]: a job that waits (ready, suspect or delayed) is removed
    /// and will never run; one a worker holds is left alone
    /// ([`Cancelled::Running`]); one the queue does not hold is
    /// [`Cancelled::NotFound`]. `queue` is the queue the job is in: for a partitioned
    /// queue, its partition (`emails#3`; `dmq job <ID>` names it).
    ///
    /// When the job is removed, a [`TaskState::Cancelled`](crate::TaskState::Cancelled)
    /// outcome is stored as its result (for the manager's `result_ttl`), so that
    /// whoever waits for it ([`TaskHandle::result`](crate::TaskHandle::result),
    /// [`ResultRef::wait`]) gets [`Error::Cancelled`] at once instead of waiting out
    /// their timeout. It is stored under fence 0 ([`ResultBackend::store_fenced`]), so
    /// an outcome an earlier run of the job stored stays (a success whose
    /// acknowledgement was lost, say). No event is emitted: no
    /// [`EventKind`](crate::EventKind) says "cancelled" yet.
    ///
    /// ```standalone_crate
    /// use dmq_core::{task, Cancelled, Error, Manager, TaskError};
    /// use std::time::Duration;
    ///
    /// #[task]
    /// async fn digest(team: String) -> Result<(), TaskError> {
    ///     Ok(())
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> dmq_core::Result<()> {
    /// let manager = Manager::builder().build()?;
    /// let handle =
    ///     digest::call("ops".into()).delay(Duration::from_secs(3600)).enqueue(&manager).await?;
    /// let cancelled = manager.cancel("default", handle.id()).await?;
    /// assert!(matches!(cancelled, Cancelled::Removed { .. }));
    /// let waited = handle.result(Duration::from_secs(60)).await;
    /// assert!(matches!(waited, Err(Error::Cancelled { .. })));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] for a broker without the admin capability or without
    /// cancel; otherwise the broker's error, with nothing changed. When the job was
    /// removed but its result could not be stored, an [`Error::Backend`] that says so
    /// (its source is the backend's error): the job will not run, and its waiters time
    /// out.
    pub async fn cancel(&self, queue: &str, id: TaskId) -> Result<Cancelled> {
        let cancelled = self.admin()?.cancel(queue, id).await?;
        if let Cancelled::Removed { payload } = &cancelled {
            // The attempts that ran: those before the one it waited for.
            let attempts = Envelope::decode(payload, self.core.config.max_message_size)
                .map_or(0, |envelope| envelope.attempt.saturating_sub(1));
            let outcome = TaskOutcome::cancelled(attempts);
            let ttl = self.core.config.result_ttl;
            if let Err(e) = self.core.backend.store_fenced(id, &outcome, ttl, 0).await {
                return Err(Error::backend_caused_by(
                    format!(
                        "job {id} of queue {queue:?} was cancelled (removed: it will not run), \
                         but storing its cancelled result failed ({e}); whoever waits for its \
                         result waits until their timeout"
                    ),
                    false,
                    BackendSource::new(e),
                ));
            }
        }
        Ok(cancelled)
    }

    /// A page of `queue`'s dead-letter queue, newest first.
    ///
    /// # Errors
    ///
    /// When the broker cannot be reached.
    pub async fn dead_letters(
        &self,
        queue: &str,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        self.admin()?.dead_letters(queue, offset, limit).await
    }

    /// How many jobs `queue`'s dead-letter queue holds.
    ///
    /// # Errors
    ///
    /// When the broker cannot be reached.
    pub async fn dead_letter_count(&self, queue: &str) -> Result<u64> {
        self.admin()?.dead_letter_count(queue).await
    }

    /// Runs dead-lettered job `id` of `queue` again: its attempts start over, it is due
    /// at once, and it goes to `to` (another queue) or back to `queue`. Returns false
    /// when `queue` holds no dead letter of `id`.
    ///
    /// The job is enqueued before its letter is removed: if the removal fails, the
    /// letter stays (a second requeue then gets [`Error::DuplicateJob`] while the job
    /// is still queued), and no job is ever lost.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] (or [`Error::MessageTooLarge`]) for a letter whose envelope
    /// does not decode (it stays in the dead-letter queue), [`Error::InvalidArgument`]
    /// when `to` is not a usable queue name, or the broker's error.
    pub async fn requeue_dead_letter(
        &self,
        queue: &str,
        id: TaskId,
        to: Option<&str>,
    ) -> Result<bool> {
        let mut offset = 0;
        let letter = loop {
            let page = self.admin()?.dead_letters(queue, offset, 500).await?;
            if page.is_empty() {
                return Ok(false);
            }
            if let Some(letter) = page.iter().find(|letter| letter.id == id) {
                break letter.clone();
            }
            offset += page.len();
        };
        self.requeue_letter(queue, &letter, to).await?;
        Ok(true)
    }

    /// Enqueues a dead letter's job again from its first attempt, then removes the
    /// letter. A job already queued again (by a requeue running at the same time) is
    /// not enqueued twice; its letter is removed all the same.
    async fn requeue_letter(
        &self,
        queue: &str,
        letter: &DeadLetter,
        to: Option<&str>,
    ) -> Result<()> {
        let mut envelope = Envelope::decode(&letter.payload, self.core.config.max_message_size)?;
        envelope.attempt = 1;
        envelope.eta = None;
        // An operator's requeue runs the job: its idempotency key (which may still
        // name this very job) decides nothing now.
        envelope.idempotency_key = None;
        envelope.unique_for = None;
        envelope.unique_ttl_ms = None;
        if let Some(to) = to {
            to.clone_into(&mut envelope.queue);
        }
        match self.enqueue_envelope(envelope).await {
            Ok(_) | Err(Error::DuplicateJob { .. }) => {}
            Err(e) => return Err(e),
        }
        self.admin()?.take_dead_letter(queue, letter.id).await?;
        Ok(())
    }

    /// Runs every job in `queue`'s dead-letter queue again (see
    /// [`requeue_dead_letter`](Manager::requeue_dead_letter)); returns how many. A letter
    /// whose envelope does not decode stays where it is.
    ///
    /// # Errors
    ///
    /// The broker's error; the jobs requeued before it stay requeued.
    pub async fn requeue_all_dead_letters(&self, queue: &str, to: Option<&str>) -> Result<u64> {
        let mut requeued = 0;
        let mut skipped = 0;
        loop {
            let page = self.admin()?.dead_letters(queue, skipped, 500).await?;
            if page.is_empty() {
                return Ok(requeued);
            }
            // Each letter as listed: looking it up again would read the page once per
            // letter.
            for letter in page {
                match self.requeue_letter(queue, &letter, to).await {
                    Ok(()) => requeued += 1,
                    Err(Error::Decode(_) | Error::MessageTooLarge { .. }) => skipped += 1,
                    Err(e) => return Err(e),
                }
            }
        }
    }

    /// Pauses `queue` ([`BrokerAdmin::pause`]): workers everywhere stop claiming from
    /// it, while enqueues still land and the jobs already running finish. For a
    /// partitioned queue, every partition: those this manager declares
    /// (`#[task(partitions = N)]`, [`ManagerBuilder::partitions`]) and those the
    /// broker's queue registry lists; a partition's own name (`emails#3`) pauses that
    /// partition alone (`emails#03` is `emails#3`). Returns `true` when a queue was
    /// running until now, `false` when
    /// all were paused already.
    ///
    /// ```standalone_crate
    /// use dmq_core::{task, Manager, TaskError};
    /// use std::time::Duration;
    ///
    /// #[task(queue = "reports")]
    /// async fn report(day: u32) -> Result<(), TaskError> {
    ///     Ok(())
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> dmq_core::Result<()> {
    /// let manager = Manager::builder().build()?;
    /// manager.pause("reports").await?;
    /// let worker = manager.worker().queues(["reports"]).start();
    /// let handle = report::call(7).enqueue(&manager).await?;
    /// tokio::time::sleep(Duration::from_millis(200)).await;
    /// let waiting = manager.admin()?.queue_stats("reports").await?;
    /// assert_eq!(waiting.ready, 1, "a paused queue starts nothing");
    /// manager.resume("reports").await?;
    /// handle.result(Duration::from_secs(10)).await?;
    /// worker.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a name no queue can have; [`Error::Unsupported`]
    /// for a broker that cannot pause; otherwise the broker's error (the partitions
    /// paused before it stay paused).
    pub async fn pause(&self, queue: &str) -> Result<bool> {
        let mut changed = false;
        for name in self.queue_and_partitions(queue).await? {
            changed |= self.admin()?.pause(&name).await?;
        }
        Ok(changed)
    }

    /// Resumes paused `queue` ([`BrokerAdmin::resume`]), or every partition of a
    /// partitioned one, as [`pause`](Manager::pause) paused them. Returns `true` when a
    /// queue was paused until now.
    ///
    /// # Errors
    ///
    /// As [`pause`](Manager::pause).
    pub async fn resume(&self, queue: &str) -> Result<bool> {
        let mut changed = false;
        for name in self.queue_and_partitions(queue).await? {
            changed |= self.admin()?.resume(&name).await?;
        }
        Ok(changed)
    }

    /// `queue`'s partitions when it has any (declared here, or listed by the broker's
    /// queue registry), else `queue` itself; a partition's name stands for itself.
    async fn queue_and_partitions(&self, queue: &str) -> Result<Vec<String>> {
        let (logical, partition) = crate::partition::split_partition(queue);
        crate::names::check_queue_name(logical)?;
        // The partition in the form dmq names it (`emails#3` for `emails#03`), never a
        // queue of its own that nothing claims from.
        if let Some(partition) = partition {
            return Ok(vec![crate::partition::partition_name(logical, partition)]);
        }
        let mut names: Vec<String> = (0..self.partitions_of(queue).unwrap_or(0))
            .map(|p| crate::partition::partition_name(queue, p))
            .collect();
        for known in self.admin()?.queues().await? {
            if crate::partition::is_partition_of(&known, queue) && !names.contains(&known) {
                names.push(known);
            }
        }
        if names.is_empty() {
            names.push(queue.to_owned());
        }
        Ok(names)
    }

    /// Deletes the newest dead letter of job `id` from `queue`; false when there is none.
    ///
    /// # Errors
    ///
    /// When the broker cannot be reached.
    pub async fn delete_dead_letter(&self, queue: &str, id: TaskId) -> Result<bool> {
        Ok(self.admin()?.take_dead_letter(queue, id).await?.is_some())
    }

    /// Deletes every dead letter of `queue`; returns how many. The count of letters the
    /// cap dropped is kept.
    ///
    /// # Errors
    ///
    /// When the broker cannot be reached.
    pub async fn purge_dead_letters(&self, queue: &str) -> Result<u64> {
        self.admin()?.purge_dead_letters(queue).await
    }
}

/// Builds a [`Manager`].
#[must_use]
pub struct ManagerBuilder {
    broker: Option<Arc<dyn Broker>>,
    backend: Option<Arc<dyn ResultBackend>>,
    config: Config,
    callbacks: Vec<Arc<dyn Callback>>,
    event_buffer: usize,
    /// `None`: as the broker says ([`EventStream::shares_events`](crate::EventStream::shares_events)).
    event_stream: Option<bool>,
    metrics: Option<Metrics>,
    /// Queues declared partitioned with [`partitions`](ManagerBuilder::partitions).
    partitions: Vec<(String, u16, PartitionBy)>,
}

impl fmt::Debug for ManagerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagerBuilder")
            .field("broker", &self.broker)
            .field("backend", &self.backend)
            .field("config", &self.config)
            .field("callbacks", &self.callbacks.iter().map(|c| c.name()).collect::<Vec<_>>())
            .field("event_buffer", &self.event_buffer)
            .field("event_stream", &self.event_stream)
            .finish_non_exhaustive()
    }
}

impl Default for ManagerBuilder {
    fn default() -> Self {
        ManagerBuilder {
            broker: None,
            backend: None,
            config: Config::default(),
            callbacks: Vec::new(),
            event_buffer: DEFAULT_EVENT_BUFFER,
            event_stream: None,
            metrics: None,
            partitions: Vec::new(),
        }
    }
}

impl ManagerBuilder {
    /// Sends jobs through `broker` (an in-memory one by default).
    pub fn broker(self, broker: impl Broker) -> Self {
        self.shared_broker(Arc::new(broker))
    }

    /// Sends jobs through a broker shared with other managers.
    pub fn shared_broker(mut self, broker: Arc<dyn Broker>) -> Self {
        self.broker = Some(broker);
        self
    }

    /// Keeps results in `backend` (an in-memory one by default).
    pub fn backend(self, backend: impl ResultBackend) -> Self {
        self.shared_backend(Arc::new(backend))
    }

    /// Keeps results in a backend shared with other managers.
    pub fn shared_backend(mut self, backend: Arc<dyn ResultBackend>) -> Self {
        self.backend = Some(backend);
        self
    }

    /// Refuses jobs whose encoded envelope is over `bytes` (1 MiB by default).
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.config.max_message_size = bytes;
        self
    }

    /// Keeps results for `ttl` (one day by default).
    pub fn result_ttl(mut self, ttl: Duration) -> Self {
        self.config.result_ttl = ttl;
        self
    }

    /// How long an idempotency key stays known after its job was enqueued (a day by
    /// default): within it, a second enqueue with the key returns the first job's id.
    /// An exactly-once job's completion is remembered as long (see
    /// [`Guarantee::ExactlyOnce`](crate::Guarantee::ExactlyOnce)).
    pub fn idempotency_ttl(mut self, ttl: Duration) -> Self {
        self.config.idempotency_ttl = ttl;
        self
    }

    /// Retries failed jobs as `policy` says (its retry limit, backoff and error
    /// filters) unless the task or the call says otherwise. By default: no retries;
    /// when a task or call allows some, 1 s doubling up to ten minutes.
    pub fn default_retry(mut self, policy: RetryPolicy) -> Self {
        self.config.default_retry = policy;
        self
    }

    /// Allows `retries` retries of a failed job unless the task or the call says
    /// otherwise (0 by default).
    pub fn default_max_retries(mut self, retries: u32) -> Self {
        self.config.default_retry.max_retries = retries;
        self
    }

    /// Hands the events `callback` selects (by its [`rules`](Callback::rules)) to it,
    /// off the hot path; see [`Callback`]. Any number of callbacks may be registered.
    ///
    /// ```
    /// use dmq_core::{async_trait, Callback, Event, Manager, Rules};
    ///
    /// struct CountCompletions(std::sync::atomic::AtomicU64);
    ///
    /// #[async_trait]
    /// impl Callback for CountCompletions {
    ///     fn rules(&self) -> Rules {
    ///         Rules::all().events([dmq_core::EventType::Completed])
    ///     }
    ///     async fn on_event(&self, _event: &Event) {
    ///         self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    ///     }
    /// }
    ///
    /// # fn main() -> dmq_core::Result<()> {
    /// let manager = Manager::builder().callback(CountCompletions(Default::default())).build()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn callback(self, callback: impl Callback) -> Self {
        self.shared_callback(Arc::new(callback))
    }

    /// As [`callback`](ManagerBuilder::callback), for a callback the caller keeps a
    /// handle on too.
    pub fn shared_callback(mut self, callback: Arc<dyn Callback>) -> Self {
        self.callbacks.push(callback);
        self
    }

    /// How many events wait for each callback before further ones are dropped and
    /// counted: [`DEFAULT_EVENT_BUFFER`] by default. The event stream's writer has
    /// room for this many or 65,536, whichever is more.
    pub fn event_buffer(mut self, events: usize) -> Self {
        self.event_buffer = events.max(1);
        self
    }

    /// Whether this process appends its events to the broker's event stream, where
    /// any process can read them (`dmq events`). By default it does when other
    /// processes can read that stream ([`EventStream::shares_events`](crate::EventStream::shares_events): Redis, not the
    /// in-memory broker). The stream is capped by the broker and written in batches,
    /// off the hot path.
    pub fn event_stream(mut self, on: bool) -> Self {
        self.event_stream = Some(on);
        self
    }

    /// Records this process's jobs in `metrics` (see [`Metrics`]).
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Spreads `queue` over `count` partitions, `<queue>#0` to `<queue>#<count-1>`,
    /// which a broker keeps apart (a Redis Cluster, in slots of their own, so that one
    /// hot queue spreads over its masters), as `#[task(partitions = N)]` does for a
    /// task's queue. An enqueue to `queue` goes to one partition, each in turn, or by
    /// the call's [`partition_key`](Call::partition_key); a worker of `queue` claims from
    /// all of them, starting at another each claim. Every process that enqueues to the
    /// queue or works it must declare it alike. See [`partitions_by`](ManagerBuilder::partitions_by)
    /// to pick partitions by task id instead.
    pub fn partitions(self, queue: impl Into<String>, count: u16) -> Self {
        self.partitions_by(queue, count, PartitionBy::RoundRobin)
    }

    /// As [`partitions`](ManagerBuilder::partitions), picking the partition of a job
    /// without a partition key by `by`.
    pub fn partitions_by(mut self, queue: impl Into<String>, count: u16, by: PartitionBy) -> Self {
        self.partitions.push((queue.into(), count, by));
        self
    }

    /// Builds the manager, collecting every `#[task]` linked into the binary.
    ///
    /// # Errors
    ///
    /// [`Error::DuplicateTask`] when two tasks share a name, [`Error::InvalidArgument`]
    /// for a task whose name or queue is not usable (see
    /// [`check_queue_name`](crate::check_queue_name)) or a zero size limit.
    pub fn build(self) -> Result<Manager> {
        if self.config.max_message_size == 0 {
            return Err(Error::InvalidArgument(
                "max_message_size must be above zero bytes".to_owned(),
            ));
        }
        let registry = Registry::from_linked()?;
        let periodics = periodics_of(&registry)?;
        let mut partitions = Partitions::default();
        // A task without the attribute declares nothing (whatever the link order):
        // the queue's partitioned task, or the builder, says how many it has.
        for reg in registry.registrations().filter(|reg| reg.partitions > 1) {
            partitions
                .set(reg.queue, reg.partitions, PartitionBy::RoundRobin)
                .map_err(|e| Error::InvalidArgument(format!("the #[task] {}: {e}", reg.path)))?;
        }
        for (queue, count, by) in &self.partitions {
            crate::names::check_queue_name(queue)?;
            partitions.set(queue, *count, *by)?;
        }
        let broker = self.broker.unwrap_or_else(|| Arc::new(InMemoryBroker::new()));
        let stream = self
            .event_stream
            .unwrap_or_else(|| broker.event_stream().is_some_and(EventStream::shares_events))
            .then(|| Arc::clone(&broker));
        let observer =
            self.metrics.clone().map(|metrics| Arc::new(metrics) as Arc<dyn EventObserver>);
        let events = Bus::new(self.callbacks, stream, self.event_buffer, observer);
        Ok(Manager {
            core: Arc::new(Core {
                broker,
                backend: self.backend.unwrap_or_else(|| Arc::new(InMemoryBackend::new())),
                registry,
                config: self.config,
                periodics: Mutex::new(periodics),
                events,
                partitions,
            }),
            metrics: self.metrics,
        })
    }
}

/// The periodic schedules the tasks' attributes declare (`cron = ...`, `every = ...`),
/// each named after its task.
fn periodics_of(registry: &Registry) -> Result<Periodics> {
    let mut periodics = Vec::new();
    for reg in registry.registrations() {
        let Some(spec) = reg.periodic else { continue };
        let schedule = match spec {
            PeriodicSpec::Cron(expr) => Schedule::cron(expr),
            PeriodicSpec::Every(interval) => Schedule::every(interval),
        }
        .map_err(|e| {
            Error::InvalidArgument(format!(
                "the schedule of task {:?} ({}): {e}",
                reg.name, reg.path
            ))
        })?;
        // A periodic task takes no call arguments: its argument tuple is empty.
        let args = rmp_serde::to_vec(&()).map_err(|e| Error::Encode {
            what: "a periodic task's arguments",
            reason: e.to_string(),
        })?;
        let template = Envelope::new(reg.name, reg.queue, args);
        periodics.push(Arc::new(Periodic { name: reg.name.to_owned(), schedule, template }));
    }
    periodics.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(periodics)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::TaskState;

    fn envelope(queue: &str, attempt: u32) -> Envelope {
        let mut envelope = Envelope::new("tests.sleepy", queue, rmp_serde::to_vec(&(1,)).unwrap());
        envelope.attempt = attempt;
        envelope.eta = Some(chrono::Utc::now() + chrono::Duration::hours(1));
        envelope
    }

    /// A waiter on a cancelled job's result learns at once that it will not run: with
    /// [`Error::Cancelled`], long before its timeout.
    #[tokio::test]
    async fn a_waiter_on_a_cancelled_job_gets_cancelled_at_once() {
        let manager = Manager::builder().build().unwrap();
        let id = manager.enqueue_envelope(envelope("reports", 3)).await.unwrap();
        let waiter = {
            let result = manager.result::<i64>(id);
            tokio::spawn(async move { result.wait(Duration::from_secs(60)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = std::time::Instant::now();
        let cancelled = manager.cancel("reports", id).await.unwrap();
        assert!(cancelled.is_removed(), "{cancelled:?}");
        let waited = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter is woken, not left to its timeout")
            .unwrap();
        assert!(matches!(waited, Err(Error::Cancelled { id: got }) if got == id), "{waited:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let outcome = manager.backend().get(id).await.unwrap().expect("a stored outcome");
        assert_eq!((outcome.state, outcome.attempts), (TaskState::Cancelled, 2));
        let again = manager.result::<i64>(id).get().await;
        assert!(matches!(again, Err(Error::Cancelled { .. })), "{again:?}");
        assert_eq!(manager.cancel("reports", id).await.unwrap(), Cancelled::NotFound);
    }

    /// A job that is running, or not there, is left alone and gets no result; a
    /// success an earlier run stored stays when the job is cancelled afterwards.
    #[tokio::test]
    async fn cancel_stores_nothing_for_a_job_it_did_not_remove_and_keeps_a_success() {
        let manager = Manager::builder().build().unwrap();
        let mut ready = envelope("reports", 1);
        ready.eta = None;
        let id = manager.enqueue_envelope(ready).await.unwrap();
        let queues = ["reports".to_owned()];
        let long = Duration::from_secs(30);
        let held = manager.broker().claim("w", &queues, 1, long, Duration::ZERO).await.unwrap();
        assert_eq!(manager.cancel("reports", id).await.unwrap(), Cancelled::Running);
        assert_eq!(manager.cancel("reports", TaskId::new()).await.unwrap(), Cancelled::NotFound);
        assert!(manager.backend().get(id).await.unwrap().is_none(), "no result for either");

        // The run stored its success, then lost its acknowledgement: the job waits again.
        let value = rmp_serde::to_vec(&7_i64).unwrap();
        let success = TaskOutcome::succeeded(value, 1, chrono::Utc::now());
        let fence = held[0].lease.fence;
        manager.backend().store_fenced(id, &success, long, fence).await.unwrap();
        manager.broker().release(&held[0].lease).await.unwrap();
        assert!(manager.cancel("reports", id).await.unwrap().is_removed());
        assert_eq!(manager.result::<i64>(id).get().await.unwrap(), Some(7));
    }

    /// A broker without cancel says so, and nothing is stored.
    #[tokio::test]
    async fn cancel_on_a_broker_without_it_is_unsupported() {
        #[derive(Debug)]
        struct Bare;
        #[async_trait::async_trait]
        impl BrokerAdmin for Bare {
            async fn queues(&self) -> Result<Vec<String>> {
                Ok(Vec::new())
            }
            async fn queue_stats(&self, _: &str) -> Result<crate::QueueStats> {
                Ok(crate::QueueStats::default())
            }
            async fn purge(&self, _: &str) -> Result<u64> {
                Ok(0)
            }
            async fn dead_letters(&self, _: &str, _: usize, _: usize) -> Result<Vec<DeadLetter>> {
                Ok(Vec::new())
            }
            async fn take_dead_letter(&self, _: &str, _: TaskId) -> Result<Option<DeadLetter>> {
                Ok(None)
            }
            async fn purge_dead_letters(&self, _: &str) -> Result<u64> {
                Ok(0)
            }
            async fn find_job(&self, _: TaskId, _: &[String]) -> Result<Option<crate::FoundJob>> {
                Ok(None)
            }
        }
        let refused = Bare.cancel("reports", TaskId::new()).await;
        assert!(matches!(&refused, Err(Error::Unsupported(m)) if m.contains("cannot cancel")));
    }
}
