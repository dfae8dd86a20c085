//! The values brokers take and give: jobs, leases, deliveries, dead letters, worker
//! records, schedule states, queue figures and event pages.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::error::Result;
use crate::events::Event;
use crate::events::HeldBy;
use crate::limits::Gate;
use crate::task::TaskId;
use crate::unique::KeyHold;

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
    /// How long the idempotency key holds beyond being known: for its ttl alone, or
    /// also only while the job it names waits, or is not done, or waits out its delay
    /// (see [`KeyHold`]). The ttl bounds every mode.
    pub key_hold: KeyHold,
    /// The gate it passes before it starts: a rate, a concurrency, or both, shared
    /// with every job of its queue that names the same gate.
    pub gate: Option<Gate>,
    /// The key whose enqueue quota it counts against, beside its namespace's (see
    /// [`QuotaStore`](super::QuotaStore)); the broker itself does not read it.
    pub quota_key: Option<String>,
    /// The group it is claimed fairly in: a queue's grouped jobs are claimed round
    /// robin across groups (its ungrouped ones share each claim with them, half and
    /// half). Never empty, at most [`MAX_GATE_LEN`](crate::MAX_GATE_LEN) bytes, no NUL.
    pub group: Option<String>,
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
        Job {
            id,
            queue: queue.into(),
            priority,
            eta,
            payload,
            idempotency: None,
            key_hold: KeyHold::Ttl,
            gate: None,
            quota_key: None,
            group: None,
        }
    }

    /// The same job, passing `gate` before it starts.
    #[must_use]
    pub fn with_gate(mut self, gate: Gate) -> Self {
        self.gate = Some(gate);
        self
    }

    /// The same job, refused while `key` is known in its queue (for `ttl`).
    #[must_use]
    pub fn with_idempotency_key(mut self, key: impl Into<String>, ttl: Duration) -> Self {
        self.idempotency = Some((key.into(), ttl));
        self
    }

    /// The same job, claimed fairly in `group` (see [`Job::group`]).
    #[must_use]
    pub fn in_group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// The same job, its idempotency key holding as `hold` says (within its ttl).
    #[must_use]
    pub fn with_key_hold(mut self, hold: KeyHold) -> Self {
        self.key_hold = hold;
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
            .field("idempotency", &self.idempotency)
            .field("key_hold", &self.key_hold)
            .field("gate", &self.gate)
            .field("group", &self.group)
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

/// A job a claim found due but held back at its gate, once per hold (see
/// [`Broker::claim_reporting`](crate::Broker::claim_reporting)).
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeldBack {
    /// The job's id.
    pub id: TaskId,
    /// Its queue.
    pub queue: String,
    /// The gate that holds it.
    pub gate: String,
    /// Which of the gate's limits holds it.
    pub limit: HeldBy,
    /// The encoded envelope.
    pub payload: Vec<u8>,
}

impl HeldBack {
    /// A report of a job held back (for broker implementations).
    #[must_use]
    pub fn new(
        id: TaskId,
        queue: impl Into<String>,
        gate: impl Into<String>,
        limit: HeldBy,
        payload: Vec<u8>,
    ) -> Self {
        HeldBack { id, queue: queue.into(), gate: gate.into(), limit, payload }
    }

    /// The [`EventKind::Held`](crate::EventKind::Held) event that reports it, emitted by
    /// `worker`, with the task and attempt its envelope (at most `max_size` bytes) says;
    /// `None` when the envelope does not decode (the claim that hands the job out
    /// reports that).
    pub(crate) fn into_event(self, max_size: usize, worker: &str) -> Option<Event> {
        let envelope = crate::envelope::Envelope::decode(&self.payload, max_size).ok()?;
        let kind = crate::events::EventKind::Held { gate: self.gate, limit: self.limit };
        Some(
            Event::new(kind, self.id, envelope.task, self.queue, envelope.attempt)
                .with_worker(worker),
        )
    }
}

impl fmt::Debug for HeldBack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeldBack")
            .field("id", &self.id)
            .field("queue", &self.queue)
            .field("gate", &self.gate)
            .field("limit", &self.limit)
            .field("payload_bytes", &self.payload.len())
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
    /// Of the ready jobs, those held back by their gate (a rate or concurrency limit),
    /// waiting until it lets them start.
    pub gated: u64,
    /// Waiting for their eta (delayed jobs and retries).
    pub delayed: u64,
    /// Claimed and under a lease.
    pub in_flight: u64,
    /// In the dead-letter queue.
    pub dead: u64,
    /// Dead letters dropped because the dead-letter queue was full.
    pub dead_dropped: u64,
    /// Since when the queue is paused ([`BrokerAdmin::pause`](super::BrokerAdmin::pause)):
    /// no worker claims from it until it is resumed. `None` while it runs.
    pub paused_since: Option<DateTime<Utc>>,
}

/// What [`BrokerAdmin::delete_queue`](super::BrokerAdmin::delete_queue) removed: how
/// many jobs of each kind, added up over the partitions of a partitioned queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueDeleted {
    /// Jobs that waited to be claimed, suspect jobs included ([`QueueStats::ready`]).
    pub waiting: u64,
    /// Jobs that waited for their eta: delayed jobs and retries.
    pub delayed: u64,
    /// Dead letters.
    pub dead_letters: u64,
    /// Jobs workers held (only a forced delete removes any).
    pub in_flight: u64,
}

impl std::ops::AddAssign for QueueDeleted {
    fn add_assign(&mut self, more: QueueDeleted) {
        self.waiting += more.waiting;
        self.delayed += more.delayed;
        self.dead_letters += more.dead_letters;
        self.in_flight += more.in_flight;
    }
}

/// What [`BrokerAdmin::cancel`](super::BrokerAdmin::cancel) found of a job, and did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Cancelled {
    /// The job was waiting (ready, suspect or delayed) and is removed, with its
    /// stored envelope and metadata: no worker will run it.
    Removed {
        /// The envelope the job held, as stored (decode it with
        /// [`Envelope::decode`](crate::Envelope::decode)).
        payload: Vec<u8>,
    },
    /// A worker holds the job (in flight, under a lease, or its lease lapsed and no
    /// reaper or claim has taken it back yet): nothing was changed, and the run goes
    /// on.
    Running,
    /// The queue holds no such job, waiting or running: it finished, was
    /// dead-lettered (dead letters have their own delete,
    /// [`take_dead_letter`](super::BrokerAdmin::take_dead_letter)), is in another
    /// queue (or another partition), or never was.
    NotFound,
}

impl Cancelled {
    /// Whether the job was removed.
    #[must_use]
    pub fn is_removed(&self) -> bool {
        matches!(self, Cancelled::Removed { .. })
    }
}

/// A worker as it registers itself with the broker: who it is and what it does.
///
/// Workers heartbeat with this; [`WorkerRegistry::workers`](super::WorkerRegistry::workers) lists the live ones, and a
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

/// What [`BrokerAdmin::doctor`](super::BrokerAdmin::doctor) found in one queue.
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

/// A position in a broker's event stream, as [`EventStream::read_events`](super::EventStream::read_events) returns it:
/// read on from it with [`EventsFrom::After`].
///
/// The stream stores events in entries, one per
/// [`publish_events`](super::EventStream::publish_events) call; a cursor names an entry (in the
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

/// Where [`EventStream::read_events`](super::EventStream::read_events) starts reading the event stream.
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

/// Where a job is now, as [`BrokerAdmin::find_job`](super::BrokerAdmin::find_job) finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum JobState {
    /// Due and waiting to be claimed.
    Ready,
    /// Due, and taken back after its worker was lost while running it: it waits to be
    /// run alone ([`Delivery::isolated`]).
    Suspect,
    /// Waiting for its eta (a delayed job or a retry).
    Delayed,
    /// Claimed and under a lease.
    InFlight,
    /// In its queue's dead-letter queue.
    DeadLettered,
    /// Stored, but waiting nowhere, so that nothing would run it (see
    /// [`BrokerAdmin::doctor`](super::BrokerAdmin::doctor), which puts it back).
    Stranded,
}

impl JobState {
    /// The state in a few words, as the command line shows it: `ready`, `suspect`,
    /// `delayed`, `in flight`, `dead-lettered` or `stranded`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Ready => "ready",
            JobState::Suspect => "suspect",
            JobState::Delayed => "delayed",
            JobState::InFlight => "in flight",
            JobState::DeadLettered => "dead-lettered",
            JobState::Stranded => "stranded",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job found by id in a broker's queues.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FoundJob {
    /// The job's id.
    pub id: TaskId,
    /// The queue that holds it.
    pub queue: String,
    /// Where it is in that queue.
    pub state: JobState,
    /// When it is due (delayed), when its lease runs out (in flight), or when it was
    /// dead-lettered; `None` otherwise.
    pub at: Option<DateTime<Utc>>,
    /// Why it was dead-lettered, for a dead letter.
    pub reason: Option<String>,
    /// The encoded envelope.
    pub payload: Vec<u8>,
}

impl FoundJob {
    /// A found job (for broker implementations).
    #[must_use]
    pub fn new(
        id: TaskId,
        queue: impl Into<String>,
        state: JobState,
        at: Option<DateTime<Utc>>,
        payload: Vec<u8>,
    ) -> Self {
        FoundJob { id, queue: queue.into(), state, at, reason: None, payload }
    }

    /// The same job, with the reason it was dead-lettered.
    #[must_use]
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}

impl fmt::Debug for FoundJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FoundJob")
            .field("id", &self.id)
            .field("queue", &self.queue)
            .field("state", &self.state)
            .field("at", &self.at)
            .field("reason", &self.reason)
            .field("payload_bytes", &self.payload.len())
            .finish()
    }
}
