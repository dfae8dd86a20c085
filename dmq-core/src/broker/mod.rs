//! Where jobs wait, and how workers take, settle and renew them: the [`Broker`] trait
//! (the job lifecycle) and the capabilities a broker may add to it, each a trait of
//! its own ([`WorkerRegistry`], [`ScheduleStore`], [`EventStream`], [`BrokerAdmin`]).
//!
//! A new backend implements [`Broker`] first and passes the lifecycle part of the
//! conformance suite; then it adds capabilities one by one, each proven by its own
//! part of the suite, and announces each from [`Broker`]'s accessors
//! ([`Broker::worker_registry`] and the like). What a missing capability costs is
//! said on each accessor.

mod memory;
mod types;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::Result;
use crate::events::Event;
use crate::limits::{Gate, RateLimit};
use crate::task::TaskId;

pub use memory::{DEFAULT_MAX_DELIVERIES, InMemoryBroker};
pub use types::{
    Cancelled, DEFAULT_EVENT_STREAM_CAP, DeadLetter, Delivery, EventCursor, EventPage, EventsFrom,
    FoundJob, HeldBack, Job, JobState, Lease, QueueCheckup, QueueDeleted, QueueStats,
    ScheduleState, WorkerInfo, WorkerStatus, refuse_keys_in_batches,
};

/// Where jobs wait and how workers take them: the job lifecycle, which every broker
/// implements.
///
/// Delivery is at least once with fenced leases: [`claim`](Broker::claim) hands out a
/// job under a lease with a fresh token, and every settling call checks the token, so
/// a worker whose lease passed to another cannot complete, retry or overwrite the job.
/// A job whose lease expires goes back to ready.
///
/// What a broker does beyond the lifecycle it offers through the capability
/// accessors at the end ([`worker_registry`](Broker::worker_registry),
/// [`schedule_store`](Broker::schedule_store), [`event_stream`](Broker::event_stream),
/// [`admin`](Broker::admin)), which say `None` by default.
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

    /// Adds many jobs at once, atomically per queue: each queue's jobs all or none.
    /// Brokers that can (the in-memory broker, Redis on one server) make the whole
    /// batch atomic, across its queues too; a partitioned store (Redis Cluster), whose
    /// queues live apart, adds each queue's part on its own.
    ///
    /// # Errors
    ///
    /// As [`enqueue`](Broker::enqueue), also for an id repeated within the batch, and
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a job with an
    /// idempotency key (use `enqueue` for those); on an error no job of the queue the
    /// error names was added (nor of any queue, on a broker atomic across queues).
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

    /// Claims as [`claim`](Broker::claim) does, and also says which jobs this claim
    /// found due but held back at their gates (a rate or concurrency limit reached),
    /// each once per hold, so that the caller can report them (the worker emits an
    /// [`EventKind::Held`](crate::EventKind::Held) for each). By default, no report:
    /// a broker without gates holds nothing back.
    ///
    /// # Errors
    ///
    /// As [`claim`](Broker::claim).
    async fn claim_reporting(
        &self,
        worker: &str,
        queues: &[String],
        max: usize,
        lease: Duration,
        wait: Duration,
    ) -> Result<(Vec<Delivery>, Vec<HeldBack>)> {
        Ok((self.claim(worker, queues, max, lease, wait).await?, Vec::new()))
    }

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

    /// Checks that the broker can be reached now, for a health check. Brokers that
    /// live in the process are always reachable (the default).
    ///
    /// # Errors
    ///
    /// When the broker cannot be reached.
    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    /// The broker's worker registry: heartbeats, the list of live workers, and the
    /// reaper that takes back the jobs of a worker that stopped heartbeating. Without
    /// one, workers neither register nor reap, and a job whose worker died comes back
    /// only when its lease expires (if the broker's claim takes expired leases back).
    fn worker_registry(&self) -> Option<&dyn WorkerRegistry> {
        None
    }

    /// The broker's schedule store, which lets many schedulers fire each periodic
    /// schedule once. Without one, workers run no periodic schedules (they log why).
    fn schedule_store(&self) -> Option<&dyn ScheduleStore> {
        None
    }

    /// The broker's event stream, which other processes read (`dmq events`). Without
    /// one, events reach only the callbacks of the process that made them.
    fn event_stream(&self) -> Option<&dyn EventStream> {
        None
    }

    /// The broker's admin capability: queues and their figures, dead letters, purges,
    /// finding a job by id. Every admin surface (the command line today) goes
    /// through it. Without one, those calls fail with
    /// [`Error::Unsupported`](crate::Error::Unsupported).
    fn admin(&self) -> Option<&dyn BrokerAdmin> {
        None
    }

    /// The broker's enqueue quotas (`dmq quota set`), which a manager's enqueue
    /// takes from. Without them, enqueues are never counted and `dmq quota` fails with
    /// [`Error::Unsupported`](crate::Error::Unsupported).
    fn quota_store(&self) -> Option<&dyn QuotaStore> {
        None
    }
}

/// Enqueue quotas: how many jobs a namespace, or one key of it (a tenant), may enqueue
/// per period, counted in fixed windows that start with the first enqueue after the
/// last window ended. A capability of a broker ([`Broker::quota_store`]).
///
/// The quotas are kept by the broker, so every producer of the namespace counts
/// against them; a producer may learn of a quota set or changed up to a second late.
#[async_trait]
pub trait QuotaStore: Send + Sync {
    /// Sets the quota of the namespace (`key` `None`) or of one key, or removes it
    /// (`quota` `None`); says whether anything changed. A new quota starts with a
    /// fresh window.
    ///
    /// # Errors
    ///
    /// When the broker cannot be reached.
    async fn set_quota(&self, key: Option<&str>, quota: Option<RateLimit>) -> Result<bool>;

    /// Every quota set, with what its window used so far.
    ///
    /// # Errors
    ///
    /// When the broker cannot be reached.
    async fn quotas(&self) -> Result<Vec<QuotaState>>;

    /// Counts `n` enqueues against the namespace's quota and, with `key`, that key's
    /// quota: all of them, or (when one is used up) none.
    ///
    /// # Errors
    ///
    /// [`Error::QuotaExceeded`](crate::Error::QuotaExceeded) when a quota has fewer
    /// than `n` left in its window, saying when it opens again; otherwise when the
    /// broker cannot be reached.
    async fn take_quota(&self, key: Option<&str>, n: u64) -> Result<()>;

    /// Gives back `n` enqueues counted by [`take_quota`](QuotaStore::take_quota) whose
    /// jobs the broker then refused.
    ///
    /// # Errors
    ///
    /// When the broker cannot be reached.
    async fn refund_quota(&self, key: Option<&str>, n: u64) -> Result<()>;
}

/// One gate of a queue and what it holds back, as [`BrokerAdmin::gates`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GateStatus {
    /// The gate: its name (the task's, or `<task>[<key>]`) and its limits (its last
    /// enqueued job's).
    pub gate: Gate,
    /// Its jobs running now (those the gate let through and still in flight; with no
    /// concurrency limit, the broker may not count them and says 0).
    pub running: u64,
    /// Its jobs waiting for it to let them start.
    pub waiting: u64,
    /// When its rate lets the next job start, if that is later than now.
    pub next_start: Option<DateTime<Utc>>,
}

impl GateStatus {
    /// The status of `gate`, holding nothing back yet.
    #[must_use]
    pub fn new(gate: Gate) -> Self {
        GateStatus { gate, running: 0, waiting: 0, next_start: None }
    }

    /// Why the gate holds its waiting jobs back now, in words: `"concurrency: 3 of 3
    /// running"`, `"rate 50/s: next start in 12ms"`, or `None` when it does not.
    #[must_use]
    pub fn holding_back(&self) -> Option<String> {
        if self.waiting == 0 {
            return None;
        }
        if let Some(limit) = self.gate.concurrency {
            if self.running >= u64::from(limit) {
                return Some(format!("concurrency: {} of {limit} running", self.running));
            }
        }
        let (rate, at) = (self.gate.rate?, self.next_start?);
        let left = (at - Utc::now()).to_std().ok()?;
        Some(format!("rate {rate}: next start in {left:?}"))
    }
}

/// What a broker last read of whether any enqueue quota is set, trusted for
/// [`QuotasSeen::FRESH_FOR`]: while none is, an enqueue asks the server nothing, and a
/// quota set meanwhile takes effect in the producers within that time. For brokers
/// whose read costs a round trip (Redis, PostgreSQL).
#[derive(Debug, Default)]
pub struct QuotasSeen(std::sync::Mutex<Option<(std::time::Instant, bool)>>);

impl QuotasSeen {
    /// How long a read is trusted.
    pub const FRESH_FOR: Duration = Duration::from_secs(1);

    /// Whether any quota is set, as read less than [`FRESH_FOR`](Self::FRESH_FOR) ago;
    /// `None` when that must be read again.
    pub fn known(&self) -> Option<bool> {
        let seen = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.filter(|(at, _)| at.elapsed() < Self::FRESH_FOR).map(|(_, any)| any)
    }

    /// Records what was read now.
    pub fn record(&self, any: bool) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((std::time::Instant::now(), any));
    }

    /// Forgets what was read (this broker changed a quota).
    pub fn forget(&self) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }
}

/// One quota and its window, as [`QuotaStore::quotas`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuotaState {
    /// The key it counts (a tenant), or `None` for the whole namespace.
    pub key: Option<String>,
    /// How many per period.
    pub limit: RateLimit,
    /// Enqueues counted in the current window.
    pub used: u64,
    /// When the current window ends, if one is open.
    pub window_ends: Option<DateTime<Utc>>,
}

impl QuotaState {
    /// A quota's state.
    #[must_use]
    pub fn new(
        key: Option<String>,
        limit: RateLimit,
        used: u64,
        window_ends: Option<DateTime<Utc>>,
    ) -> Self {
        QuotaState { key, limit, used, window_ends }
    }
}

/// Workers' registrations and the reaper: a capability of a broker
/// ([`Broker::worker_registry`]).
#[async_trait]
pub trait WorkerRegistry: Send + Sync {
    /// Records that `worker` is alive until `ttl` from now, with what it does. A worker
    /// heartbeats well within its `ttl`; once its registration lapses,
    /// [`reap`](WorkerRegistry::reap) returns the jobs it holds to their queues.
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
}

/// Periodic schedules' shared state, so that of many schedulers exactly one fires
/// each fire time: a capability of a broker ([`Broker::schedule_store`]).
#[async_trait]
pub trait ScheduleStore: Send + Sync {
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
}

/// A capped stream of events that any process can read: a capability of a broker
/// ([`Broker::event_stream`]).
#[async_trait]
pub trait EventStream: Send + Sync {
    /// Whether other processes can read this broker's event stream: then every
    /// manager on it writes its events there unless told not to
    /// ([`ManagerBuilder::event_stream`](crate::ManagerBuilder::event_stream)). False
    /// by default and for the in-memory broker, whose stream only its own process
    /// reads (writing it costs a quarter of that broker's throughput, for nobody).
    fn shares_events(&self) -> bool {
        false
    }

    /// Appends `events` to the broker's event stream, as one entry, which any process
    /// can read with [`read_events`](EventStream::read_events) (`dmq events` tails it). The
    /// stream is capped: the oldest events are dropped as new ones come. Workers and
    /// producers call this off the hot path, in batches.
    ///
    /// # Errors
    ///
    /// When the broker cannot be reached; the events are then lost (and counted as
    /// dropped by the caller).
    async fn publish_events(&self, events: &[Arc<Event>]) -> Result<()>;

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
    /// use dmq_core::{EventStream, EventsFrom, InMemoryBroker};
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
    /// When the broker cannot be reached.
    ///
    /// # Cancel safety
    ///
    /// Implementations must be cancel safe: reading changes nothing, and the caller
    /// keeps its cursor, so a dropped read is simply made again.
    async fn read_events(&self, from: &EventsFrom, max: usize, wait: Duration)
    -> Result<EventPage>;
}

/// What operators read and do: queues and their figures, dead letters, purges, and
/// finding a job by id. A capability of a broker ([`Broker::admin`]); the command
/// line's admin commands use nothing else.
#[async_trait]
pub trait BrokerAdmin: Send + Sync {
    /// Every queue the broker knows in its namespace, sorted: each queue a job was
    /// enqueued to (a refused enqueue may leave its queue listed) or a worker takes
    /// jobs from, emptied ones included, until [`delete_queue`](BrokerAdmin::delete_queue)
    /// removes it. The broker keeps them in a registry written at enqueue, so listing
    /// them reads no job.
    ///
    /// # Errors
    ///
    /// When the broker cannot be reached.
    async fn queues(&self) -> Result<Vec<String>>;

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

    /// Pauses `queue`: no claim that starts after this returns takes a job from it,
    /// until [`resume`](BrokerAdmin::resume). Everything else goes on: enqueues, delayed
    /// jobs and retries land in it, and the jobs workers hold already run to their end
    /// and settle. The broker keeps the pause, so it holds for every worker of the
    /// namespace, those that start later included. A queue no job went to yet is
    /// registered ([`queues`](BrokerAdmin::queues)) and paused all the same.
    /// [`queue_stats`](BrokerAdmin::queue_stats) says since when it is paused.
    ///
    /// One queue name: a partitioned queue's partitions are queues of their own
    /// (`emails#3`), which [`Manager::pause`](crate::Manager::pause) pauses together.
    ///
    /// Returns `true` when the queue was running, `false` when it was paused already
    /// (it then stays paused since its first pause).
    ///
    /// ```standalone_crate
    /// use dmq_core::{Broker, BrokerAdmin, InMemoryBroker, Job, TaskId};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> dmq_core::Result<()> {
    /// let broker = InMemoryBroker::new();
    /// assert!(broker.pause("emails").await?);
    /// broker.enqueue(Job::new(TaskId::new(), "emails", 5, None, b"hi".to_vec())).await?;
    /// let queues = ["emails".to_owned()];
    /// assert!(broker.claim("w1", &queues, 10, Duration::from_secs(30), Duration::ZERO).await?.is_empty());
    /// assert!(broker.queue_stats("emails").await?.paused_since.is_some());
    /// assert!(broker.resume("emails").await?);
    /// assert_eq!(broker.claim("w1", &queues, 10, Duration::from_secs(30), Duration::ZERO).await?.len(), 1);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// When the broker cannot be reached; [`Error::Unsupported`](crate::Error::Unsupported)
    /// for a broker that cannot pause.
    async fn pause(&self, queue: &str) -> Result<bool> {
        Err(crate::Error::Unsupported(format!("this broker cannot pause queue {queue:?}")))
    }

    /// The gates (flow limits) of `queue`'s jobs: each one's limits (its last enqueued
    /// job's), how many of its jobs run and how many wait at it, and when its rate lets
    /// the next one start. Sorted by name.
    ///
    /// # Errors
    ///
    /// When the broker cannot be reached; [`Error::Unsupported`](crate::Error::Unsupported)
    /// for a broker without flow limits.
    async fn gates(&self, queue: &str) -> Result<Vec<GateStatus>> {
        Err(crate::Error::Unsupported(format!(
            "this broker keeps no flow limits, so queue {queue:?} has no gates"
        )))
    }

    /// Resumes paused `queue`: claims take its jobs again, and idle workers of it are
    /// woken. Returns `true` when it was paused, `false` when it was running already.
    ///
    /// # Errors
    ///
    /// When the broker cannot be reached; [`Error::Unsupported`](crate::Error::Unsupported)
    /// for a broker that cannot pause.
    async fn resume(&self, queue: &str) -> Result<bool> {
        Err(crate::Error::Unsupported(format!("this broker cannot resume queue {queue:?}")))
    }

    /// Removes every job of `queue` that waits, ready or delayed, and returns how many.
    /// Jobs in flight stay with their workers; dead letters stay too.
    ///
    /// # Errors
    ///
    /// When the broker cannot be reached.
    async fn purge(&self, queue: &str) -> Result<u64>;

    /// Deletes `queue` whole and returns what it removed: its waiting jobs (ready and
    /// suspect), its delayed jobs and retries, its dead letters and the count of
    /// letters the cap dropped, the completions it remembers for the exactly-once
    /// guarantee, and its entry in the queue registry ([`queues`](BrokerAdmin::queues)).
    /// A queue the broker does not know deletes nothing and returns zeros.
    ///
    /// A partitioned queue is deleted by its own name: `delete_queue("emails", ..)`
    /// deletes `emails` and every partition of it the queue registry lists
    /// (`emails#0`, `emails#1`, ...), and adds their figures up; a partition's name
    /// (`emails#3`) deletes that partition alone. A broker that keeps partitions apart
    /// (Redis Cluster) checks them all first, then deletes each in a step of its own
    /// (see its documentation).
    ///
    /// While workers hold jobs of the queue (in flight, as
    /// [`queue_stats`](BrokerAdmin::queue_stats) counts them), the delete is refused and
    /// nothing is deleted, unless `force`: then the jobs in flight are deleted too,
    /// and their workers' later [`ack`](Broker::ack), [`complete`](Broker::complete),
    /// [`retry`](Broker::retry), [`release`](Broker::release),
    /// [`dead_letter`](Broker::dead_letter) and [`renew`](Broker::renew) fail with
    /// [`Error::LeaseLost`](crate::Error::LeaseLost), as for a lease lost any other way.
    /// A dmq worker running such a job finds out at its next lease renewal (within a
    /// third of its lease) and abandons the run; a run that ends before that may still
    /// store its result, and its acknowledgement then fails. What a run did outside dmq
    /// stays done.
    ///
    /// What stays: results stored for the queue's jobs (they live in the result
    /// backend, until their TTL), and idempotency keys (until their TTL). A queue a
    /// producer enqueues to again, or a worker still takes jobs from, is registered
    /// again.
    ///
    /// ```
    /// use dmq_core::{BrokerAdmin, Error, InMemoryBroker};
    ///
    /// # async fn demo(broker: InMemoryBroker) -> dmq_core::Result<()> {
    /// match broker.delete_queue("emails", false).await {
    ///     Ok(deleted) => println!("deleted {} waiting jobs", deleted.waiting),
    ///     Err(Error::QueueBusy { in_flight, .. }) => {
    ///         println!("{in_flight} jobs are running; try again later, or force it")
    ///     }
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::QueueBusy`](crate::Error::QueueBusy), deleting nothing, when jobs of the
    /// queue are in flight and `force` is false;
    /// [`Error::Unsupported`](crate::Error::Unsupported) from a broker that cannot
    /// delete a queue (the default); otherwise when the broker cannot be reached.
    async fn delete_queue(&self, queue: &str, force: bool) -> Result<QueueDeleted> {
        let _ = force;
        Err(crate::Error::Unsupported(format!(
            "this broker cannot delete a queue, so queue {queue:?} was left as it is"
        )))
    }

    /// Cancels job `id` of `queue` if it has not started: a job that waits (ready,
    /// suspect, or delayed, a retry waiting its turn included) is removed with its
    /// stored envelope and metadata, in one atomic step that checks everything before
    /// it changes anything, and [`Cancelled::Removed`] returns its envelope. A job a
    /// worker holds is left alone ([`Cancelled::Running`]; cancelling a running job is
    /// not offered yet), and so is one whose lease lapsed until a reaper or a claim
    /// takes it back (then it waits, suspect, and a cancel removes it). A job the
    /// queue does not hold, waiting or running, is [`Cancelled::NotFound`]: finished,
    /// dead-lettered (a dead letter is deleted with
    /// [`take_dead_letter`](BrokerAdmin::take_dead_letter)), cancelled already, or
    /// never there.
    ///
    /// `queue` is the queue the job is in. For a partitioned queue that is the
    /// partition (`emails#3`), not the queue's logical name: a partition is a queue of
    /// its own, so `cancel("emails", id)` finds no job of `emails#3`.
    /// [`find_job`](BrokerAdmin::find_job), or `dmq job <ID>`, names the partition a
    /// job is in.
    ///
    /// The broker keeps no result: [`Manager::cancel`](crate::Manager::cancel) calls
    /// this and, when the job is removed, stores a
    /// [`TaskState::Cancelled`](crate::TaskState::Cancelled) outcome so that whoever
    /// waits for the result learns the job will never run. What stays: the job's
    /// idempotency key, until its TTL (a producer that enqueues the same key again
    /// gets the cancelled job's id), and any result stored by an earlier run.
    ///
    /// ```
    /// use dmq_core::{BrokerAdmin, Cancelled, InMemoryBroker, TaskId};
    ///
    /// # async fn demo(broker: InMemoryBroker, id: TaskId) -> dmq_core::Result<()> {
    /// match broker.cancel("emails", id).await? {
    ///     Cancelled::Removed { .. } => println!("job {id} will never run"),
    ///     Cancelled::Running => println!("job {id} is running; it was left alone"),
    ///     _ => println!("no job {id} waits or runs in queue emails"),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`](crate::Error::Unsupported) from a broker that cannot
    /// cancel a job (the default); otherwise when the broker cannot be reached, or
    /// refuses (a key of another type where the queue's keys should be: nothing is
    /// changed then).
    async fn cancel(&self, queue: &str, id: TaskId) -> Result<Cancelled> {
        Err(crate::Error::Unsupported(format!(
            "this broker cannot cancel a job, so job {id} of queue {queue:?} was left as it is"
        )))
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

    /// Finds job `id` in `queues` (every known queue when empty): waiting, in flight,
    /// or among the newest dead letters of its queue (the first 10,000 are searched).
    /// `None` when no queue holds it.
    ///
    /// # Errors
    ///
    /// When the broker cannot be reached.
    async fn find_job(&self, id: TaskId, queues: &[String]) -> Result<Option<FoundJob>>;

    /// The envelope of the job `lease` holds, while it holds it: `None` unless the job
    /// is in flight in `lease.queue` under exactly this lease (its token and its
    /// fence). For settling a job whose holder runs elsewhere
    /// ([`Consumer`](crate::Consumer)), which sends its lease back over the network:
    /// a holder that altered its lease's fence, or whose lease passed on, reads
    /// nothing. Brokers answer it with one read, where
    /// [`find_job`](BrokerAdmin::find_job) may search every list of the queue. The
    /// default asks `find_job` and checks neither token nor fence; the settling call
    /// that follows checks the token.
    ///
    /// # Errors
    ///
    /// When the broker cannot be reached.
    async fn leased_payload(&self, lease: &Lease) -> Result<Option<Vec<u8>>> {
        let found = self.find_job(lease.id, std::slice::from_ref(&lease.queue)).await?;
        Ok(found.filter(|job| job.state == JobState::InFlight).map(|job| job.payload))
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
}
