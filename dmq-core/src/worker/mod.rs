//! The worker pool: claims jobs in batches up to its free capacity, runs them
//! concurrently, stores their results and settles them with the broker.

mod job;
pub(crate) mod scheduler;
mod vitals;

pub(crate) use job::{Retries, retry_delay};
pub use scheduler::{FIRE_TIME_HEADER, SCHEDULE_HEADER};
pub use vitals::{
    CLAIMS_FAILING_LIMIT, Health, LoopFailure, LoopVitals, WorkerMonitor, WorkerVitals,
};

use vitals::{Loop, Op, Vitals};

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::broker::WorkerInfo;
use crate::core::Core;
use crate::events::{Event, EventKind};
use crate::guarantee::Guarantee;

/// How often a worker heartbeats by default.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);

/// How many heartbeats in a row a worker may miss before it counts as dead.
pub const MISSED_HEARTBEATS: u32 = 4;

/// How long a stopping worker waits for event listeners to catch up.
const FLUSH_EVENTS: Duration = Duration::from_secs(2);

/// Builds and starts an in-process worker: `manager.worker().concurrency(10).start()`.
#[must_use]
pub struct WorkerBuilder {
    core: Arc<Core>,
    config: WorkerConfig,
}

/// A worker's settings.
#[derive(Debug, Clone)]
pub(crate) struct WorkerConfig {
    pub(crate) concurrency: usize,
    pub(crate) queues: Option<Vec<String>>,
    pub(crate) grace: Duration,
    pub(crate) lease: Duration,
    pub(crate) claim_wait: Duration,
    pub(crate) heartbeat: Duration,
    pub(crate) guarantee: Guarantee,
    pub(crate) scheduler: bool,
}

impl fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerBuilder").field("config", &self.config).finish()
    }
}

impl WorkerBuilder {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        WorkerBuilder {
            core,
            config: WorkerConfig {
                concurrency: 10,
                queues: None,
                grace: Duration::from_secs(30),
                lease: Duration::from_secs(30),
                claim_wait: Duration::from_secs(5),
                heartbeat: DEFAULT_HEARTBEAT,
                guarantee: Guarantee::AtLeastOnce,
                scheduler: true,
            },
        }
    }

    /// Runs at most `n` jobs at once (10 by default; at least 1).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.config.concurrency = n.max(1);
        self
    }

    /// Takes jobs from these queues, in this order of preference; by default from
    /// every queue of the tasks linked into the binary.
    pub fn queues<I, S>(mut self, queues: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.queues = Some(queues.into_iter().map(Into::into).collect());
        self
    }

    /// On shutdown, lets running jobs finish for up to `grace` (30 s by default)
    /// before cancelling them and releasing them to their queues.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.config.grace = grace;
        self
    }

    /// Holds each claimed job under a lease of `lease` (30 s by default), renewed
    /// while the job runs. A job whose worker dies returns to its queue when the
    /// lease runs out.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.config.lease = lease.max(Duration::from_millis(10));
        self
    }

    /// Heartbeats every `every` (5 s by default; at least 10 ms). A worker that misses
    /// [`MISSED_HEARTBEATS`] heartbeats in a row counts as dead: the reaper, which every
    /// worker runs at this same interval (one at a time), returns its jobs to their
    /// queues without waiting for their leases to expire. A worker starts reaping once
    /// it has itself heartbeated that many times in a row (after it starts, or after
    /// the broker was out of reach), so it never takes for dead the live workers that
    /// are still reconnecting.
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.config.heartbeat = every.max(Duration::from_millis(10));
        self
    }

    /// Runs jobs with `guarantee` (at-least-once by default), for the tasks whose
    /// attribute sets none (`#[task(guarantee = "...")]` wins). See [`Guarantee`] for
    /// what each promises.
    pub fn guarantee(mut self, guarantee: Guarantee) -> Self {
        self.config.guarantee = guarantee;
        self
    }

    /// Runs the periodic scheduler in this worker (on by default): it enqueues the
    /// manager's periodic tasks at their fire times. Any number of workers may run it;
    /// each fire time is claimed in the broker, so each is enqueued once.
    pub fn scheduler(mut self, on: bool) -> Self {
        self.config.scheduler = on;
        self
    }

    /// Starts the worker on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    pub fn start(self) -> WorkerHandle {
        let queues = self.config.queues.clone().unwrap_or_else(|| {
            let mut queues = self.core.registry().queues();
            if queues.is_empty() {
                queues.push(crate::envelope::DEFAULT_QUEUE.to_owned());
            }
            queues
        });
        // A partitioned queue stands for its partitions, claimed from in turn.
        let queue_groups = self.core.partitions.expand(&queues);
        let partitioned = queue_groups.iter().any(|group| group.len() > 1);
        let queues: Vec<String> = queue_groups.concat();
        let stop = CancellationToken::new();
        let info = WorkerInfo::new(
            worker_id(),
            hostname(),
            std::process::id(),
            queues.clone(),
            self.config.concurrency,
            chrono::Utc::now(),
        );
        let shared = Arc::new(Shared {
            info,
            core: self.core,
            config: self.config,
            queues,
            queue_groups: partitioned.then_some(queue_groups),
            stop: stop.clone(),
            hard_stop: CancellationToken::new(),
            released: AtomicU64::new(0),
            running: AtomicU32::new(0),
            vitals: Vitals::new(),
            epoch: std::time::Instant::now(),
            alive_since: AtomicU64::new(0),
            lapsed_before: AtomicU64::new(0),
        });
        tracing::info!(
            worker = %shared.info.id,
            queues = ?shared.queues,
            concurrency = shared.config.concurrency,
            guarantee = %shared.config.guarantee,
            tasks = shared.core.registry().tasks().len(),
            "worker started"
        );
        let task = tokio::spawn(run(Arc::clone(&shared)));
        WorkerHandle { stop, task, shared }
    }
}

/// What a worker shares with its jobs.
pub(crate) struct Shared {
    /// Who this worker is, as registered with the broker.
    pub(crate) info: WorkerInfo,
    pub(crate) core: Arc<Core>,
    pub(crate) config: WorkerConfig,
    /// The queues, each partitioned one replaced by its partitions.
    pub(crate) queues: Vec<String>,
    /// When a queue is partitioned: the queues grouped by the queue they stand for,
    /// so that each claim can start at another partition.
    pub(crate) queue_groups: Option<Vec<Vec<String>>>,
    stop: CancellationToken,
    pub(crate) hard_stop: CancellationToken,
    pub(crate) released: AtomicU64,
    /// How many jobs are running now, reported at each heartbeat. Counted apart from
    /// the claim loop's slots, since the loop itself holds a slot while it claims.
    running: AtomicU32,
    /// Its loops' progress and its broker errors, for health checks and metrics.
    pub(crate) vitals: Vitals,
    /// The instant `alive_since` counts from.
    epoch: std::time::Instant,
    /// When the last successful heartbeat was sent, in milliseconds since `epoch`,
    /// plus one; 0 before the first. Until then plus the heartbeat ttl the broker
    /// counts this worker alive, so no reaper takes its jobs.
    alive_since: AtomicU64,
    /// When the first successful heartbeat after a gap of nearly the ttl or more was
    /// sent (same units): the registration may have lapsed before it, and a reaper
    /// taken the jobs claimed before it.
    lapsed_before: AtomicU64,
}

impl Shared {
    /// Emits the event `kind` makes about attempt `attempt` of job `id` of `task` in
    /// `queue`, as this worker; builds nothing when nobody listens.
    pub(crate) fn emit(
        &self,
        id: crate::TaskId,
        task: &str,
        queue: &str,
        attempt: u32,
        kind: impl FnOnce() -> EventKind,
    ) {
        self.core.events().emit(|| {
            Event::new(kind(), id, task, queue, attempt).with_worker(self.info.id.clone())
        });
    }

    /// Records that a heartbeat sent at `sent` succeeded.
    fn heartbeat_succeeded(&self, sent: std::time::Instant) {
        let ms = u64::try_from(sent.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let before = self.alive_since.fetch_max(ms, Ordering::Relaxed);
        let ttl = self.ttl();
        let gap = Duration::from_millis(ms.saturating_sub(before));
        if before != 0 && gap >= ttl - ttl / 5 {
            self.lapsed_before.fetch_max(ms, Ordering::Relaxed);
        }
    }

    /// How long the broker counts this worker alive after a heartbeat.
    fn ttl(&self) -> Duration {
        self.config.heartbeat.saturating_mul(MISSED_HEARTBEATS)
    }

    /// The instant `ms` (milliseconds since `epoch`, plus one) stands for.
    fn instant(&self, ms: u64) -> std::time::Instant {
        self.epoch + Duration::from_millis(ms.saturating_sub(1))
    }

    /// Whether this worker surely still holds a lease it claimed with a request sent
    /// at `claimed`, without asking the broker: the lease (taken at or after that
    /// instant) has not run out, and this worker's registration, which a reaper needs
    /// lapsed to take its jobs, has not lapsed since the claim (its heartbeats came
    /// within the ttl of each other, and of now); each with a fifth to spare. A worker
    /// that stalled (SIGSTOP, a frozen machine) past either finds out here, and asks
    /// the broker.
    pub(crate) fn surely_holds(&self, claimed: std::time::Instant) -> bool {
        let lease = self.config.lease;
        if claimed.elapsed() >= lease - lease / 5 {
            return false;
        }
        let ttl = self.ttl();
        let lapsed = self.lapsed_before.load(Ordering::Relaxed);
        if lapsed != 0 && self.instant(lapsed) >= claimed {
            return false;
        }
        match self.alive_since.load(Ordering::Relaxed) {
            0 => true,
            since => self.instant(since).elapsed() < ttl - ttl / 5,
        }
    }

    /// This worker's description as its next heartbeat reports it.
    fn heartbeat_info(&self) -> WorkerInfo {
        self.info.clone().with_running(self.running.load(Ordering::Relaxed))
    }
}

/// Counts one running job in [`Shared::running`] while it lives.
struct RunningJob(Arc<Shared>);

impl RunningJob {
    fn start(shared: &Arc<Shared>) -> Self {
        shared.running.fetch_add(1, Ordering::Relaxed);
        RunningJob(Arc::clone(shared))
    }
}

impl Drop for RunningJob {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A running worker. Stop it with [`shutdown`](WorkerHandle::shutdown); dropping the
/// handle leaves the worker running until the runtime ends.
#[must_use = "dropping the handle leaves the worker running with no way to stop it gracefully"]
pub struct WorkerHandle {
    stop: CancellationToken,
    task: JoinHandle<()>,
    shared: Arc<Shared>,
}

impl fmt::Debug for WorkerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerHandle").field("queues", &self.shared.queues).finish()
    }
}

/// How a worker's shutdown went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Jobs still running at the end of the grace period, cancelled and released to
    /// their queues.
    pub released: u64,
}

impl WorkerHandle {
    /// The queues this worker takes jobs from.
    #[must_use]
    pub fn queues(&self) -> &[String] {
        &self.shared.queues
    }

    /// A monitor of this worker's health and counters, to keep while the worker runs
    /// (a health endpoint or metrics exporter holds one).
    #[must_use]
    pub fn monitor(&self) -> WorkerMonitor {
        WorkerMonitor { shared: Arc::clone(&self.shared) }
    }

    /// Stops the worker gracefully: it stops claiming, lets running jobs finish within
    /// the grace period, then cancels the rest and releases them to their queues.
    pub async fn shutdown(self) -> ShutdownReport {
        self.stop.cancel();
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "the worker loop ended abnormally");
        }
        let released = self.shared.released.load(Ordering::Relaxed);
        // Events still queued (for the event stream, say) get a moment to go out.
        if !self.shared.core.flush_events(FLUSH_EVENTS).await {
            tracing::warn!(
                ?FLUSH_EVENTS,
                "some event listeners had not caught up when the worker stopped"
            );
        }
        tracing::info!(released, "worker stopped");
        ShutdownReport { released }
    }
}

/// The claim loop and the heartbeat, then the graceful stop.
async fn run(shared: Arc<Shared>) {
    // Registered before the first claim: a worker that died holding a job before it
    // ever heartbeated would be unknown to the reaper, and its job would wait for the
    // lease to expire.
    let ttl = shared.config.heartbeat.saturating_mul(MISSED_HEARTBEATS);
    if let Some(registry) = shared.core.broker().worker_registry() {
        if let Err(e) = registry.heartbeat(&shared.heartbeat_info(), ttl).await {
            tracing::warn!(error = %e, "the first heartbeat failed; retrying at the next one");
        }
    }
    let done = CancellationToken::new();
    let heartbeat = tokio::spawn(keep_alive(Arc::clone(&shared), done.clone()));
    let scheduler =
        shared.config.scheduler.then(|| tokio::spawn(scheduler::run(Arc::clone(&shared))));
    claim_loop(&shared).await;
    if let Some(scheduler) = scheduler {
        if let Err(e) = scheduler.await {
            tracing::error!(error = %e, "the scheduler ended abnormally");
        }
    }
    // Heartbeats go on until every job has finished or been released.
    done.cancel();
    if let Err(e) = heartbeat.await {
        tracing::error!(error = %e, "the heartbeat task ended abnormally");
    }
    if let Some(registry) = shared.core.broker().worker_registry() {
        if let Err(e) = registry.deregister(&shared.info.id).await {
            tracing::warn!(error = %e, "could not deregister the worker; it lapses on its own");
        }
    }
}

/// Heartbeats every interval and runs the reaper, until `done`.
async fn keep_alive(shared: Arc<Shared>, done: CancellationToken) {
    let every = shared.config.heartbeat;
    let ttl = every.saturating_mul(MISSED_HEARTBEATS);
    let Some(registry) = shared.core.broker().worker_registry() else {
        tracing::info!(
            "the broker has no worker registry: this worker neither heartbeats nor reaps, \
             and the jobs of a worker that dies come back when their leases expire"
        );
        return;
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // After the broker was out of reach, every worker's heartbeat may have lapsed:
    // reap only once this worker has heartbeated MISSED_HEARTBEATS times in a row, long
    // enough for the live workers (reconnecting with backoff) to heartbeat again too.
    let mut beats_in_a_row = 0u32;
    shared.vitals.starts(Loop::Heartbeat);
    loop {
        tokio::select! {
            biased;
            () = done.cancelled() => return,
            _ = tick.tick() => {}
        }
        shared.vitals.beat(Loop::Heartbeat);
        let sent = std::time::Instant::now();
        if let Err(e) = registry.heartbeat(&shared.heartbeat_info(), ttl).await {
            shared.vitals.broker_error(Op::Heartbeat);
            beats_in_a_row = 0;
            tracing::warn!(error = %e, "heartbeat failed; retrying at the next one");
            continue;
        }
        shared.heartbeat_succeeded(sent);
        beats_in_a_row = beats_in_a_row.saturating_add(1);
        if beats_in_a_row < MISSED_HEARTBEATS {
            continue;
        }
        match registry.reap(&shared.queues).await {
            Ok(0) => {}
            Ok(moved) => tracing::info!(
                moved,
                "reaper returned jobs of dead workers or expired leases to their queues"
            ),
            Err(e) => {
                shared.vitals.broker_error(Op::Reap);
                tracing::warn!(error = %e, "reaping failed; retrying at the next heartbeat");
            }
        }
    }
}

/// A fresh worker id: `<host>-<pid>-<random>`.
fn worker_id() -> String {
    let random = crate::task::TaskId::new().to_string();
    format!("{}-{}-{}", hostname(), std::process::id(), &random[..8])
}

/// This machine's host name, or "localhost" when it cannot be read.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The claim loop, then the graceful stop of the running jobs.
async fn claim_loop(shared: &Arc<Shared>) {
    let concurrency = shared.config.concurrency;
    let slots = Arc::new(Semaphore::new(concurrency));
    let mut failures = 0u32;
    // A job that must run alone was handed back: let the running jobs end, so that
    // this worker can take it, from its queue, with nothing beside it.
    let mut drain: Option<String> = None;
    let vitals = &shared.vitals;
    vitals.starts(Loop::Claim);
    // Claims so far, for the turn of a partitioned queue's partitions.
    let mut claims: usize = 0;
    loop {
        vitals.beat(Loop::Claim);
        let alone_from = drain.take();
        if alone_from.is_some() {
            vitals.waiting_for_slot(true);
            tokio::select! {
                biased;
                () = shared.stop.cancelled() => break,
                () = all_ended(&slots, concurrency) => {}
            }
            vitals.waiting_for_slot(false);
        }
        let first = match Arc::clone(&slots).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                vitals.waiting_for_slot(true);
                let permit = tokio::select! {
                    biased;
                    () = shared.stop.cancelled() => break,
                    permit = Arc::clone(&slots).acquire_owned() => permit,
                };
                vitals.waiting_for_slot(false);
                vitals.beat(Loop::Claim);
                match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                }
            }
        };
        if shared.stop.is_cancelled() {
            break;
        }
        // A finishing job wakes this loop at once, ahead of the other jobs finishing
        // on this thread: let them run first, so that one claim fills all their slots
        // rather than one claim per slot.
        tokio::task::yield_now().await;
        let free = 1 + slots.available_permits();
        let broker = shared.core.broker();
        let claimed_at = std::time::Instant::now();
        // After a drain, the queue of the job to run alone first, without waiting.
        let rotated;
        let (queues, wait) = match (&alone_from, &shared.queue_groups) {
            (Some(queue), _) => (std::slice::from_ref(queue), Duration::ZERO),
            (None, Some(groups)) => {
                claims = claims.wrapping_add(1);
                rotated = crate::partition::rotated(groups, claims);
                (rotated.as_slice(), shared.config.claim_wait)
            }
            (None, None) => (shared.queues.as_slice(), shared.config.claim_wait),
        };
        let claimed = tokio::select! {
            biased;
            () = shared.stop.cancelled() => break,
            claimed = broker.claim_reporting(&shared.info.id, queues, free, shared.config.lease, wait) => claimed,
        };
        let deliveries = match claimed {
            Ok((deliveries, held)) => {
                failures = 0;
                vitals.claim_succeeded();
                report_held(shared, held);
                deliveries
            }
            Err(e) => {
                vitals.broker_error(Op::Claim);
                vitals.claim_failed(&e);
                failures = failures.saturating_add(1);
                let pause = backoff(failures);
                tracing::warn!(error = %e, retry_in = ?pause, "claiming jobs failed");
                tokio::select! {
                    () = shared.stop.cancelled() => break,
                    () = tokio::time::sleep(pause) => continue,
                }
            }
        };
        // A job to run alone (it may have killed its last worker) runs only in a
        // worker that runs nothing else; it holds every slot until it ends.
        let alone = free == concurrency && deliveries.len() == 1;
        let mut first = Some(first);
        for delivery in deliveries {
            if delivery.isolated && !alone {
                tracing::info!(
                    id = %delivery.lease.id,
                    "a job whose last worker was lost while running it must run alone; \
                     handing it back until this worker's running jobs have ended"
                );
                let broker = shared.core.broker();
                if let Err(e) = broker.release(&delivery.lease).await {
                    tracing::warn!(id = %delivery.lease.id, error = %e, "could not hand back a job to run alone; it returns when its lease expires");
                }
                drain = Some(delivery.lease.queue.clone());
                continue;
            }
            let rest = if delivery.isolated {
                Arc::clone(&slots)
                    .try_acquire_many_owned(u32::try_from(concurrency - 1).unwrap_or(u32::MAX))
                    .ok()
            } else {
                None
            };
            let permit = match first.take() {
                Some(permit) => permit,
                None => match Arc::clone(&slots).try_acquire_owned() {
                    Ok(permit) => permit,
                    Err(_) => {
                        // Cannot happen: only this loop takes slots, and it claimed no
                        // more than were free. Hand the job back rather than overrun.
                        job::release(shared, &delivery.lease).await;
                        continue;
                    }
                },
            };
            let counted = RunningJob::start(shared);
            let shared = Arc::clone(shared);
            // Not a JoinSet: its bookkeeping cost this loop more than the claim did.
            // A job holds its slot until it ends, which is how the stop below knows.
            tokio::spawn(async move {
                let run =
                    AssertUnwindSafe(job::process(&shared, delivery, claimed_at)).catch_unwind();
                if let Err(panic) = run.await {
                    log_abnormal_end(&*panic);
                }
                drop(counted);
                drop(permit);
                drop(rest);
            });
        }
    }
    let grace = shared.config.grace;
    if tokio::time::timeout(grace, all_ended(&slots, concurrency)).await.is_err() {
        let running = concurrency.saturating_sub(slots.available_permits());
        tracing::warn!(running, ?grace, "grace period over; releasing running jobs");
        shared.hard_stop.cancel();
        all_ended(&slots, concurrency).await;
    }
}

/// Resolves once all `concurrency` slots are free again: every job has ended.
async fn all_ended(slots: &Semaphore, concurrency: usize) {
    let mut held = Vec::new();
    let mut left = concurrency;
    while left > 0 {
        let n = u32::try_from(left).unwrap_or(u32::MAX);
        let Ok(permit) = slots.acquire_many(n).await else {
            return;
        };
        held.push(permit);
        left = left.saturating_sub(n as usize);
    }
}

/// A job's task panicked: a bug in dmq, never in the user's task (whose panics are
/// caught). Logged so it cannot pass unseen.
fn log_abnormal_end(panic: &(dyn std::any::Any + Send)) {
    tracing::error!(
        panic = crate::error::panic_message(panic),
        "a job's task ended abnormally; the job returns to its queue when its lease expires"
    );
}

/// Emits a `Held` event for each job the claim held back at its gate. The task and
/// attempt come from the job's envelope; one that does not decode is left to the
/// claim that later hands it out (which dead-letters it).
fn report_held(shared: &Shared, held: Vec<crate::broker::HeldBack>) {
    let limit = shared.core.config().max_message_size;
    for job in held {
        if let Some(event) = job.into_event(limit, &shared.info.id) {
            shared.core.events().emit(|| event);
        }
    }
}

/// Pause after `failures` failed claims in a row: 100 ms doubling up to 5 s.
fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(6);
    Duration::from_millis(100 * (1u64 << exp)).min(Duration::from_secs(5))
}
