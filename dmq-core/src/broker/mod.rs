//! The `Broker` trait: where jobs wait, and how workers take, settle and renew them.

mod memory;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::{Error, Result};
use crate::events::Event;
use crate::task::TaskId;

pub use memory::{DEFAULT_MAX_DELIVERIES, InMemoryBroker};

/// How many events a broker's event stream keeps by default, about: older ones are
/// dropped as new ones come (see each broker's `with_event_stream_cap`).
pub const DEFAULT_EVENT_STREAM_CAP: usize = 10_000;

/// A job handed to a broker: routing facts plus the encoded envelope.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Job {
    /// The job's id.
    pub id: TaskId,
    /// The queue it goes to.
    pub queue: String,
    /// 0 (lowest) to 9 (highest).
    pub priority: u8,
    /// When it becomes due; `None` for now.
    pub eta: Option<DateTime<Utc>>,
    /// The encoded envelope.
    pub payload: Vec<u8>,
    /// A key that makes a second enqueue of the same work a no-op for `ttl`: while it
    /// is known in the queue, enqueueing another job with it fails with
    /// [`Error::IdempotencyKeyTaken`](crate::Error::IdempotencyKeyTaken) naming the first.
    pub idempotency: Option<(String, Duration)>,
}

impl Job {
    /// A job with the given routing facts.
    #[must_use]
    pub fn new(
        id: TaskId,
        queue: impl Into<String>,
        priority: u8,
        eta: Option<DateTime<Utc>>,
        payload: Vec<u8>,
    ) -> Self {
        Job { id, queue: queue.into(), priority, eta, payload, idempotency: None }
    }

    /// The same job, refused while `key` is known in its queue (for `ttl`).
    #[must_use]
    pub fn with_idempotency_key(mut self, key: impl Into<String>, ttl: Duration) -> Self {
        self.idempotency = Some((key.into(), ttl));
        self
    }
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("id", &self.id)
            .field("queue", &self.queue)
            .field("priority", &self.priority)
            .field("eta", &self.eta)
            .field("payload_bytes", &self.payload.len())
            .finish()
    }
}

/// Proof that a worker holds a job: its id, queue and the token of the current lease.
///
/// Every settling call (ack, retry, release, dead-letter, renew) presents it; once
/// the lease has passed to another worker, the token no longer matches and the call
/// fails with [`Error::LeaseLost`](crate::Error::LeaseLost), changing nothing. The
/// result of a run is stored under its lease's [`fence`](Lease::fence)
/// ([`ResultBackend::store_fenced`](crate::ResultBackend::store_fenced)), so a run
/// that lost its lease cannot replace what a later one stored either.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lease {
    /// The job's id.
    pub id: TaskId,
    /// The queue it was claimed from.
    pub queue: String,
    /// The lease token, fresh for every claim.
    pub token: String,
    /// A number that grows with every claim of the job: a later delivery of it has a
    /// greater fence than any earlier one (below 2^53, so that any language's number
    /// holds it).
    pub fence: u64,
}

/// A claimed job.
#[derive(Clone)]
#[non_exhaustive]
pub struct Delivery {
    /// The lease the worker now holds.
    pub lease: Lease,
    /// The encoded envelope.
    pub payload: Vec<u8>,
    /// How many times this job has been claimed since it was last enqueued or retried,
    /// this claim included.
    pub deliveries: u32,
    /// Whether the job must run alone: it came back after its worker was lost while
    /// running it (it may be what killed that worker), so the worker runs nothing
    /// else beside it, and should release it at once if it cannot. A broker hands such
    /// a job out on its own, never in a batch with others.
    pub isolated: bool,
}

impl Delivery {
    /// A delivery (for broker implementations).
    #[must_use]
    pub fn new(lease: Lease, payload: Vec<u8>, deliveries: u32) -> Self {
        Delivery { lease, payload, deliveries, isolated: false }
    }

    /// The same delivery, to run alone (see [`isolated`](Delivery::isolated)).
    #[must_use]
    pub fn to_run_alone(mut self) -> Self {
        self.isolated = true;
        self
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("lease", &self.lease)
            .field("payload_bytes", &self.payload.len())
            .field("deliveries", &self.deliveries)
            .field("isolated", &self.isolated)
            .finish()
    }
}

/// Refuses a batch holding a job with an idempotency key (for broker implementations):
/// keys work with single enqueues only.
///
/// # Errors
///
/// [`Error::InvalidArgument`](crate::Error::InvalidArgument) naming the first such job.
pub fn refuse_keys_in_batches(jobs: &[Job]) -> Result<()> {
    match jobs.iter().find(|job| job.idempotency.is_some()) {
        Some(job) => Err(crate::Error::InvalidArgument(format!(
            "job {} has an idempotency key, which works with single enqueues only; \
             enqueue it on its own",
            job.id
        ))),
        None => Ok(()),
    }
}

/// A job in a dead-letter queue, with why it is there.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The job's id.
    pub id: TaskId,
    /// The queue it came from.
    pub queue: String,
    /// The encoded envelope as it was last delivered.
    pub payload: Vec<u8>,
    /// Why it was dead-lettered.
    pub reason: String,
    /// When.
    pub at: DateTime<Utc>,
}

impl DeadLetter {
    /// A dead letter (for broker implementations).
    #[must_use]
    pub fn new(
        id: TaskId,
        queue: impl Into<String>,
        payload: Vec<u8>,
        reason: impl Into<String>,
        at: DateTime<Utc>,
    ) -> Self {
        DeadLetter { id, queue: queue.into(), payload, reason: reason.into(), at }
    }

    /// The job's envelope, decoded: its task, arguments, the attempt that failed last
    /// (`attempt`) and when it was first enqueued (`created_at`).
    ///
    /// # Errors
    ///
    /// [`Error::Decode`](crate::Error::Decode) for a job dead-lettered because its
    /// envelope does not decode.
    pub fn envelope(&self) -> Result<crate::Envelope> {
        crate::Envelope::decode(&self.payload, self.payload.len())
    }
}

impl fmt::Debug for DeadLetter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetter")
            .field("id", &self.id)
            .field("queue", &self.queue)
            .field("reason", &self.reason)
            .field("at", &self.at)
            .field("payload_bytes", &self.payload.len())
            .finish()
    }
}

/// What the broker keeps of one periodic schedule, shared by every worker's
/// scheduler.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScheduleState {
    /// The schedule's name.
    pub name: String,
    /// When a scheduler first registered it (the broker's clock).
    pub since: DateTime<Utc>,
    /// The last fire time a scheduler claimed, if any.
    pub last_fire: Option<DateTime<Utc>>,
    /// The next fire time, as the scheduler that wrote last computed it.
    pub next_fire: Option<DateTime<Utc>>,
}

impl ScheduleState {
    /// A schedule's state (for broker implementations).
    #[must_use]
    pub fn new(
        name: impl Into<String>,
        since: DateTime<Utc>,
        last_fire: Option<DateTime<Utc>>,
        next_fire: Option<DateTime<Utc>>,
    ) -> Self {
        ScheduleState { name: name.into(), since, last_fire, next_fire }
    }
}

/// How many jobs a queue holds, by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueStats {
    /// Due and waiting to be claimed, suspect jobs included.
    pub ready: u64,
    /// Of the ready jobs, those that came back after their worker was lost while
    /// running them, and wait to be run alone ([`Delivery::isolated`]).
    pub suspect: u64,
    /// Entries the broker found in the queue that were no job of dmq's (an id that is
    /// not a task id, or one with no envelope): dropped and counted, never run.
    pub bad_entries: u64,
    /// Waiting for their eta (delayed jobs and retries).
    pub delayed: u64,
    /// Claimed and under a lease.
    pub in_flight: u64,
    /// In the dead-letter queue.
    pub dead: u64,
    /// Dead letters dropped because the dead-letter queue was full.
    pub dead_dropped: u64,
}

/// A worker as it registers itself with the broker: who it is and what it does.
///
/// Workers heartbeat with this; [`Broker::workers`] lists the live ones, and a
/// reaper returns the jobs of a worker that stopped heartbeating to their queues.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerInfo {
    /// Unique per worker: `<host>-<pid>-<random>`. Leases the worker holds carry it.
    pub id: String,
    /// The machine's host name.
    pub hostname: String,
    /// The worker's process id.
    pub pid: u32,
    /// The queues it takes jobs from.
    pub queues: Vec<String>,
    /// How many jobs it runs at once.
    pub concurrency: usize,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// How many jobs it was running at its last heartbeat.
    pub running: u32,
}

impl WorkerInfo {
    /// A worker's description (for worker and broker implementations).
    #[must_use]
    pub fn new(
        id: impl Into<String>,
        hostname: impl Into<String>,
        pid: u32,
        queues: Vec<String>,
        concurrency: usize,
        started_at: DateTime<Utc>,
    ) -> Self {
        WorkerInfo {
            id: id.into(),
            hostname: hostname.into(),
            pid,
            queues,
            concurrency,
            started_at,
            running: 0,
        }
    }

    /// The same description, reporting `running` jobs running now (as a heartbeat
    /// does).
    #[must_use]
    pub fn with_running(mut self, running: u32) -> Self {
        self.running = running;
        self
    }
}

/// What [`Broker::doctor`] found in one queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueCheckup {
    /// The queue.
    pub queue: String,
    /// Jobs whose envelope is stored but which wait nowhere (in no ready, suspect,
    /// delayed or in-flight list), so that nothing would ever run them: left behind
    /// by a write that was cut off halfway. Put back at the front of their ready list
    /// when the doctor was asked to fix them.
    pub stranded: Vec<String>,
    /// Whether the stranded jobs were put back.
    pub fixed: bool,
    /// Jobs waiting to be run alone ([`QueueStats::suspect`]).
    pub suspect: u64,
    /// Bad entries dropped so far ([`QueueStats::bad_entries`]).
    pub bad_entries: u64,
}

impl QueueCheckup {
    /// A check-up of `queue` that found nothing wrong (for broker implementations).
    #[must_use]
    pub fn healthy(queue: impl Into<String>) -> Self {
        QueueCheckup { queue: queue.into(), ..QueueCheckup::default() }
    }
}

/// A registered worker and when its registration runs out unless it heartbeats again.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerStatus {
    /// What the worker registered.
    pub info: WorkerInfo,
    /// When its last heartbeat lapses; after that the worker counts as dead.
    pub alive_until: DateTime<Utc>,
}

impl WorkerStatus {
    /// A worker's status (for broker implementations).
    #[must_use]
    pub fn new(info: WorkerInfo, alive_until: DateTime<Utc>) -> Self {
        WorkerStatus { info, alive_until }
    }
}

/// A position in a broker's event stream, as [`Broker::read_events`] returns it:
/// read on from it with [`EventsFrom::After`].
///
/// The stream stores events in entries, one per
/// [`publish_events`](Broker::publish_events) call; a cursor names an entry (in the
/// broker's own terms: a Redis stream id, say) and how many of its events were read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventCursor {
    entry: String,
    taken: Option<usize>,
}

impl EventCursor {
    /// After the whole of entry `entry`, and everything before it (for broker
    /// implementations).
    #[must_use]
    pub fn after(entry: impl Into<String>) -> Self {
        EventCursor { entry: entry.into(), taken: None }
    }

    /// After the first `taken` events of entry `entry`, and everything before it
    /// (for broker implementations).
    #[must_use]
    pub fn within(entry: impl Into<String>, taken: usize) -> Self {
        EventCursor { entry: entry.into(), taken: Some(taken) }
    }

    /// The entry it names.
    #[must_use]
    pub fn entry(&self) -> &str {
        &self.entry
    }

    /// How many events of the entry were read; `None` for all of them.
    #[must_use]
    pub fn taken(&self) -> Option<usize> {
        self.taken
    }
}

/// Where [`Broker::read_events`] starts reading the event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventsFrom {
    /// At the end of the stream as it is when the read begins: only events published
    /// from then on (what a tail follows).
    Now,
    /// At the oldest event the stream still keeps.
    Oldest,
    /// At the last `n` events the stream keeps (all of them when it keeps fewer).
    Last(usize),
    /// Right after `cursor`, which an earlier page returned.
    After(EventCursor),
}

/// Events read from a broker's event stream, and where to read on from.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EventPage {
    /// The events, oldest first, in the order they were published.
    pub events: Vec<Event>,
    /// Read on from here ([`EventsFrom::After`]), whether or not events came.
    pub cursor: EventCursor,
    /// Events passed over because they could not be read: of a kind this version of
    /// dmq does not know, say ([`DecodedEvents::skipped`](crate::DecodedEvents)).
    pub skipped: usize,
}

impl EventPage {
    /// A page of events (for broker implementations).
    #[must_use]
    pub fn new(events: Vec<Event>, cursor: EventCursor, skipped: usize) -> Self {
        EventPage { events, cursor, skipped }
    }
}

/// Where jobs wait and how workers take them.
///
/// Delivery is at least once with fenced leases: [`claim`](Broker::claim) hands out a
/// job under a lease with a fresh token, and every settling call checks the token, so
/// a worker whose lease passed to another cannot complete, retry or overwrite the job.
/// A job whose lease expires goes back to ready.
///
/// Implementations must be safe to call from many tasks at once. The trait is object
/// safe; dmq holds brokers as `Arc<dyn Broker>`.
#[async_trait]
pub trait Broker: Send + Sync + fmt::Debug + 'static {
    /// Adds one job: ready now, or delayed until its eta.
    ///
    /// # Errors
    ///
    /// [`Error::DuplicateJob`](crate::Error::DuplicateJob) when a job with the same id
    /// is already in the queue (ready, delayed or in flight), so one job can never be
    /// held twice; [`Error::IdempotencyKeyTaken`](crate::Error::IdempotencyKeyTaken)
    /// when the job's idempotency key is known (nothing is added then); otherwise when
    /// the broker cannot be reached or refuses the job.
    async fn enqueue(&self, job: Job) -> Result<()>;

    /// Adds many jobs at once, atomically: all of them or none.
    ///
    /// # Errors
    ///
    /// As [`enqueue`](Broker::enqueue), also for an id repeated within the batch, and
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a job with an
    /// idempotency key (use `enqueue` for those); on an error no job was added.
    async fn enqueue_batch(&self, jobs: Vec<Job>) -> Result<()>;

    /// Claims up to `max` due jobs from `queues`, highest priority first, each under a
    /// lease of `lease` with a fresh token, held by `worker` (a [`WorkerInfo::id`]). When
    /// none is due, waits up to `wait` for one (woken by notification, not by polling)
    /// and returns an empty list if none came.
    ///
    /// A suspect job (one taken back after its worker was lost) comes first, and
    /// alone, flagged [`Delivery::isolated`]: the caller runs it with nothing beside
    /// it, or releases it.
    ///
    /// # Errors
    ///
    /// When the broker cannot be reached.
    ///
    /// # Cancel safety
    ///
    /// Implementations must be cancel safe: a claim whose future is dropped loses no
    /// job (it either claimed nothing, or the claimed jobs return to ready when their
    /// lease expires).
    async fn claim(
        &self,
        worker: &str,
        queues: &[String],
        max: usize,
        lease: Duration,
        wait: Duration,
    ) -> Result<Vec<Delivery>>;

    /// Settles a job as done and forgets it.
    ///
    /// # Errors
    ///
    /// [`Error::LeaseLost`](crate::Error::LeaseLost) when the token is stale; nothing
    /// changes then.
    async fn ack(&self, lease: &Lease) -> Result<()>;

    /// Settles a job as done, as [`ack`](Broker::ack) does, and in the same atomic
    /// step records that job `lease.id` of `lease.queue` completed, for `remember`
    /// (the exactly-once guarantee reads the record with
    /// [`is_complete`](Broker::is_complete)).
    ///
    /// # Errors
    ///
    /// [`Error::LeaseLost`](crate::Error::LeaseLost) when the token is stale; nothing
    /// changes then, and no completion is recorded.
    async fn complete(&self, lease: &Lease, remember: Duration) -> Result<()>;

    /// Whether a completion of job `id` of `queue` is recorded and not yet forgotten.
    ///
    /// # Errors
    ///
    /// When the broker cannot be reached.
    async fn is_complete(&self, queue: &str, id: TaskId) -> Result<bool>;

    /// Puts a job back, with an updated envelope, to become due at `eta`.
    ///
    /// # Errors
    ///
    /// [`Error::LeaseLost`](crate::Error::LeaseLost) when the token is stale.
    async fn retry(&self, lease: &Lease, payload: Vec<u8>, eta: DateTime<Utc>) -> Result<()>;

    /// Puts a job back to ready at once, as on shutdown.
    ///
    /// # Errors
    ///
    /// [`Error::LeaseLost`](crate::Error::LeaseLost) when the token is stale.
    async fn release(&self, lease: &Lease) -> Result<()>;

    /// Registers schedule `name` if it is new (its `since` is now, on the broker's
    /// clock), records `next` as its next fire time when given, and returns its state.
    ///
    /// # Errors
    ///
    /// When the broker cannot be reached.
    async fn schedule_begin(
        &self,
        name: &str,
        next: Option<DateTime<Utc>>,
    ) -> Result<ScheduleState>;

    /// Claims fire time `fire` of schedule `name`, recording it as the last fire and
    /// `next` as the next one. Of any number of schedulers claiming the same fire time,
    /// exactly one gets `true`; a fire time at or before the last one claimed is
    /// refused to all.
    ///
    /// # Errors
    ///
    /// When the broker cannot be reached.
    async fn schedule_fire(
        &self,
        name: &str,
        fire: DateTime<Utc>,
        next: Option<DateTime<Utc>>,
    ) -> Result<bool>;

    /// Every registered schedule's state, sorted by name.
    ///
    /// # Errors
    ///
    /// When the broker cannot be reached.
    async fn schedules(&self) -> Result<Vec<ScheduleState>>;

    /// Removes every job of `queue` that waits, ready or delayed, and returns how many.
    /// Jobs in flight stay with their workers; dead letters stay too.
    ///
    /// # Errors
    ///
    /// When the broker cannot be reached.
    async fn purge(&self, queue: &str) -> Result<u64>;

    /// Moves a job to its queue's dead-letter queue with `reason`.
    ///
    /// # Errors
    ///
    /// [`Error::LeaseLost`](crate::Error::LeaseLost) when the token is stale.
    async fn dead_letter(&self, lease: &Lease, reason: &str) -> Result<()>;

    /// Extends a lease to `lease` from now.
    ///
    /// # Errors
    ///
    /// [`Error::LeaseLost`](crate::Error::LeaseLost) when the token is stale: the
    /// worker should stop treating the job as its own.
    async fn renew(&self, lease: &Lease, lease_for: Duration) -> Result<()>;

    /// Records that `worker` is alive until `ttl` from now, with what it does. A worker
    /// heartbeats well within its `ttl`; once its registration lapses,
    /// [`reap`](Broker::reap) returns the jobs it holds to their queues.
    ///
    /// # Errors
    ///
    /// When the broker cannot be reached.
    async fn heartbeat(&self, worker: &WorkerInfo, ttl: Duration) -> Result<()>;

    /// Removes a worker from the registry, as on a graceful stop.
    ///
    /// # Errors
    ///
    /// When the broker cannot be reached.
    async fn deregister(&self, worker: &str) -> Result<()>;

    /// The registered workers whose heartbeat has not lapsed.
    ///
    /// # Errors
    ///
    /// When the broker cannot be reached.
    async fn workers(&self) -> Result<Vec<WorkerStatus>>;

    /// Takes back the jobs in `queues` (and in the queues of dead workers) whose
    /// lease expired or whose worker's heartbeat lapsed. Such a job is suspect: it
    /// waits to be claimed alone ([`Delivery::isolated`]); one whose worker was lost
    /// while it ran alone as many times as the broker allows is dead-lettered as a
    /// poison pill. One reaper runs at a time; a call
    /// while another runs returns `Ok(0)` at once. Returns how many jobs it moved.
    ///
    /// # Errors
    ///
    /// When the broker cannot be reached.
    async fn reap(&self, queues: &[String]) -> Result<u64>;

    /// How many jobs `queue` holds, by state.
    ///
    /// # Errors
    ///
    /// When the broker cannot be reached.
    async fn queue_stats(&self, queue: &str) -> Result<QueueStats>;

    /// The number of ready jobs in `queue`.
    ///
    /// # Errors
    ///
    /// When the broker cannot be reached.
    async fn queue_len(&self, queue: &str) -> Result<u64> {
        Ok(self.queue_stats(queue).await?.ready)
    }

    /// A page of `queue`'s dead-letter queue, newest first.
    ///
    /// # Errors
    ///
    /// When the broker cannot be reached.
    async fn dead_letters(
        &self,
        queue: &str,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<DeadLetter>>;

    /// Removes the newest dead letter of job `id` from `queue`'s dead-letter queue and
    /// returns it; `None` when there is none.
    ///
    /// # Errors
    ///
    /// When the broker cannot be reached.
    async fn take_dead_letter(&self, queue: &str, id: TaskId) -> Result<Option<DeadLetter>>;

    /// Empties `queue`'s dead-letter queue; returns how many letters it removed. The
    /// count of letters the cap dropped is kept.
    ///
    /// # Errors
    ///
    /// When the broker cannot be reached.
    async fn purge_dead_letters(&self, queue: &str) -> Result<u64>;

    /// The number of jobs in `queue`'s dead-letter queue.
    ///
    /// # Errors
    ///
    /// When the broker cannot be reached.
    async fn dead_letter_count(&self, queue: &str) -> Result<u64> {
        Ok(self.queue_stats(queue).await?.dead)
    }

    /// Looks for jobs of `queues` that are stored but wait nowhere, so that nothing
    /// would ever run them (a write cut off halfway leaves such a job), and with `fix`
    /// puts them back in their queue. Workers' reapers run it now and then with `fix`.
    /// A broker whose every change is atomic in the process cannot strand a job: the
    /// default finds nothing.
    ///
    /// # Errors
    ///
    /// When the broker cannot be reached.
    async fn doctor(&self, queues: &[String], fix: bool) -> Result<Vec<QueueCheckup>> {
        let _ = fix;
        let mut checkups = Vec::with_capacity(queues.len());
        for queue in queues {
            let stats = self.queue_stats(queue).await?;
            let mut checkup = QueueCheckup::healthy(queue.clone());
            checkup.suspect = stats.suspect;
            checkup.bad_entries = stats.bad_entries;
            checkups.push(checkup);
        }
        Ok(checkups)
    }

    /// Checks that the broker can be reached now, for a health check. Brokers that
    /// live in the process are always reachable (the default).
    ///
    /// # Errors
    ///
    /// When the broker cannot be reached.
    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    /// Whether other processes can read this broker's event stream: then every
    /// manager on it writes its events there unless told not to
    /// ([`ManagerBuilder::event_stream`](crate::ManagerBuilder::event_stream)). False
    /// by default and for the in-memory broker, whose stream only its own process
    /// reads (writing it costs a quarter of that broker's throughput, for nobody).
    fn shares_events(&self) -> bool {
        false
    }

    /// Appends `events` to the broker's event stream, as one entry, which any process
    /// can read with [`read_events`](Broker::read_events) (`dmq events` tails it). The
    /// stream is capped: the oldest events are dropped as new ones come. Workers and
    /// producers call this off the hot path, in batches. A broker without a stream
    /// keeps nothing (the default).
    ///
    /// # Errors
    ///
    /// When the broker cannot be reached; the events are then lost (and counted as
    /// dropped by the caller).
    async fn publish_events(&self, events: &[Arc<Event>]) -> Result<()> {
        let _ = events;
        Ok(())
    }

    /// Reads up to `max` events of the event stream, starting `from` where it says, in
    /// the order they were published. When none is there yet, waits up to `wait` for
    /// some (woken by the publish, not by polling) and returns an empty page if none
    /// came. Read on from the page's cursor with [`EventsFrom::After`]; a `max` of 0
    /// reads nothing and only turns `from` into a cursor.
    ///
    /// The stream is capped, so a reader that falls further behind than the cap
    /// misses the events dropped meanwhile and reads on from the oldest kept.
    ///
    /// ```
    /// use std::time::Duration;
    /// use dmq_core::{Broker, EventsFrom, InMemoryBroker};
    ///
    /// # async fn demo() -> dmq_core::Result<()> {
    /// let broker = InMemoryBroker::new();
    /// let mut from = EventsFrom::Now;
    /// loop {
    ///     let page = broker.read_events(&from, 1000, Duration::from_secs(5)).await?;
    ///     for event in &page.events {
    ///         println!("{event}");
    ///     }
    ///     from = EventsFrom::After(page.cursor);
    /// #   break;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] for a broker that keeps no event stream (the default);
    /// otherwise when the broker cannot be reached.
    ///
    /// # Cancel safety
    ///
    /// Implementations must be cancel safe: reading changes nothing, and the caller
    /// keeps its cursor, so a dropped read is simply made again.
    async fn read_events(
        &self,
        from: &EventsFrom,
        max: usize,
        wait: Duration,
    ) -> Result<EventPage> {
        let _ = (from, max, wait);
        Err(Error::Unsupported(
            "this broker keeps no event stream to read; RedisBroker and InMemoryBroker do"
                .to_owned(),
        ))
    }
}
