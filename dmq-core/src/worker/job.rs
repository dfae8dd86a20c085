//! Running one claimed job: decode, look up, run under timeout and panic guard,
//! store the result, settle with the broker.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use chrono::Utc;
use futures::FutureExt;
use futures::future::Either;
use tracing::Instrument;

use super::Shared;
use super::vitals::Op;
use crate::backend::{TaskOutcome, TaskState};
use crate::broker::{Delivery, Lease};
use crate::envelope::Envelope;
use crate::error::Error;
use crate::error::panic_message;
use crate::events::EventKind;
use crate::guarantee::Guarantee;
use crate::registry::{RunError, TaskFuture, TaskRegistration};
use crate::retry::{Backoff, MAX_BACKOFF};
use crate::task::{FailureKind, TaskContext, TaskError, TaskPanicked, TaskTimedOut};

/// Runs one delivery to the end: it is acknowledged, retried, dead-lettered or
/// released, and never panics the worker.
///
/// Every job spawns this future, and it is moved several times on its way into the
/// runtime, so it is kept small: whatever needs no waiting (decoding, the look-up,
/// starting the task) happens before it is built, it holds only what the rest of the
/// run needs, and the paths a job rarely takes (a failure, a poison message, an
/// expired job, a task that does not finish at once) box what they await.
///
/// `claimed` is when the claim that delivered the job was sent: its lease started no
/// earlier.
pub(super) fn process(
    shared: &Shared,
    delivery: Delivery,
    claimed: std::time::Instant,
) -> impl Future<Output = ()> + Send + '_ {
    let Delivery { lease, payload, .. } = delivery;
    let limit = shared.core.config().max_message_size;
    let envelope = match Envelope::decode(&payload, limit) {
        Ok(envelope) => envelope,
        Err(e) => return Either::Right(rare(async move { poison(shared, &lease, &e).await })),
    };
    if envelope.id != lease.id {
        // A producer's mistake: the result would be stored under one id while the task
        // saw the other.
        let e = Error::Decode(format!(
            "its envelope names the id {}, but it was queued under the id {}",
            envelope.id, lease.id
        ));
        return Either::Right(rare(async move { poison(shared, &lease, &e).await }));
    }
    let span = crate::trace::run_span(&envelope);
    let Some(registration) = shared.core.registry().get(&envelope.task) else {
        let known: Vec<&str> = shared.core.registry().tasks().iter().map(|t| t.name).collect();
        let reason = format!(
            "no task named {:?} is registered in this worker (it knows: {}); \
             is the task's crate linked into the worker binary?",
            envelope.task,
            known.join(", ")
        );
        let attempt = envelope.attempt;
        let kind = FailureKind::UnknownTask;
        let task = envelope.task;
        // NotFound comes first, with Failed and DeadLettered, once the job is in the
        // dead-letter queue.
        let failed =
            async move { fail(shared, &lease, (&task, attempt), kind, &reason, None).await };
        return Either::Right(rare(failed.instrument(span)));
    };
    if let Some(expires_at) = envelope.expires_at {
        if expires_at <= Utc::now() {
            let attempt = envelope.attempt;
            let expired =
                async move { expire(shared, &lease, registration, expires_at, attempt).await };
            return Either::Right(rare(expired.instrument(span)));
        }
    }
    match registration.guarantee.unwrap_or(shared.config.guarantee) {
        Guarantee::AtMostOnce => Either::Right(rare(
            at_most_once(shared, lease, registration, envelope).instrument(span),
        )),
        Guarantee::ExactlyOnce => {
            let once = async move {
                if completed_before(shared, &lease, registration, envelope.attempt).await {
                    return;
                }
                run(shared, (lease, claimed), registration, envelope, payload, Finish::Complete)
                    .await;
            };
            Either::Right(rare(once.instrument(span)))
        }
        Guarantee::AtLeastOnce => Either::Left(
            run(shared, (lease, claimed), registration, envelope, payload, Finish::Ack)
                .instrument(span),
        ),
    }
}

/// How a successful run settles its job.
#[derive(Clone, Copy)]
enum Finish {
    /// Acknowledge it (at-least-once).
    Ack,
    /// Acknowledge it and record its completion in the same step (exactly-once).
    Complete,
}

/// For an exactly-once job: whether it already completed (its completion is recorded
/// in the broker, or its success is in the result backend), in which case it is
/// acknowledged here without running. A job whose state cannot be read is released,
/// to be tried again later, and counts as handled too.
async fn completed_before(
    shared: &Shared,
    lease: &Lease,
    registration: &'static TaskRegistration,
    attempt: u32,
) -> bool {
    let broker = shared.core.broker();
    let backend = shared.core.backend();
    // Both reads at once: they cost one round trip, not two.
    // Whether its completion is recorded, and its stored success if there is one.
    let check = || async {
        let recorded = broker.is_complete(&lease.queue, lease.id);
        if registration.ignore_result {
            return Ok((recorded.await?, None));
        }
        let (recorded, stored) = tokio::try_join!(recorded, backend.get(lease.id))?;
        Ok((recorded, stored.filter(|o| o.state == TaskState::Succeeded)))
    };
    match persist(shared, lease, check).await {
        Ok((false, None)) => false,
        Ok((recorded, stored)) => {
            tracing::info!("this job already completed; acknowledging it without running it again");
            let remember = shared.core.config().idempotency_ttl;
            let done = persist(shared, lease, || broker.complete(lease, remember)).await;
            // A run that stored its success but was cut off before it settled the
            // job emitted no Completed: this is where the job completes.
            if let (false, Some(outcome), true) = (recorded, &stored, done.is_ok()) {
                let run_time = outcome
                    .started_at
                    .and_then(|at| (outcome.finished_at - at).to_std().ok())
                    .unwrap_or_default();
                shared.emit(lease.id, registration.name, &lease.queue, attempt, || {
                    EventKind::Completed { run_time }
                });
            }
            settle(done, lease, "acknowledge");
            true
        }
        Err(e) if e.is_transient() => {
            tracing::error!(error = %e, "could not read whether this exactly-once job already completed; releasing it to try again later");
            release(shared, lease).await;
            true
        }
        Err(e) => {
            // Released, it would come straight back to fail the same way.
            let reason =
                format!("could not read whether this exactly-once job already completed: {e}");
            tracing::error!(%reason, "dead-lettering a job");
            if dead_letter(shared, lease, &reason).await {
                shared.emit(lease.id, registration.name, &lease.queue, attempt, || {
                    EventKind::DeadLettered { reason }
                });
            }
            true
        }
    }
}

/// Runs an at-most-once job: acknowledged first, then run once, whatever happens.
/// Its outcome is stored; a failure is neither retried nor dead-lettered.
async fn at_most_once(
    shared: &Shared,
    lease: Lease,
    registration: &'static TaskRegistration,
    envelope: Envelope,
) {
    let broker = shared.core.broker();
    let acked = persist(shared, &lease, || broker.ack(&lease)).await;
    if acked.is_err() {
        // Not run: it is still the broker's, and returns to its queue.
        settle(acked, &lease, "acknowledge (before running, at most once)");
        return;
    }
    let (started_at, timeout, attempt) =
        (Utc::now(), timeout_of(&envelope, registration), envelope.attempt);
    let (id, name, queue) = (lease.id, registration.name, lease.queue.as_str());
    shared.emit(id, name, queue, attempt, || EventKind::Started);
    let task = start(registration, envelope);
    let result = tokio::select! {
        biased;
        result = execute(registration, task, timeout) => result,
        () = shared.hard_stop.cancelled() => {
            tracing::warn!("cancelled at the end of the grace period; this at-most-once job was acknowledged before it ran and is not run again");
            return;
        }
    };
    let run_time = since(started_at);
    let (outcome, event) = match result {
        Ok(_) if registration.ignore_result => {
            shared.emit(id, name, queue, attempt, || EventKind::Completed { run_time });
            return;
        }
        Ok(value) => {
            (TaskOutcome::succeeded(value, attempt, started_at), EventKind::Completed { run_time })
        }
        Err(failure) => {
            tracing::error!(kind = %failure.kind, error = %failure.message, "job failed; at most once, it is not retried");
            let outcome =
                TaskOutcome::failed(failure.kind, &failure.message, attempt, Some(started_at));
            let event = EventKind::Failed {
                failure: failure.kind,
                error: failure.message,
                run_time: Some(run_time),
            };
            (outcome, event)
        }
    };
    let ttl = shared.core.config().result_ttl;
    let backend = shared.core.backend();
    let store = || backend.store_fenced(lease.id, &outcome, ttl, lease.fence);
    match write(lease.id, store, std::future::pending()).await {
        Ok(true) => {}
        Ok(false) => kept_stored(),
        Err(e) => {
            tracing::error!(error = %e, "storing the result of an at-most-once job failed; it is lost");
        }
    }
    // After the store: a callback that reads the result finds it (unless it was lost).
    shared.emit(id, name, queue, attempt, || event);
}

/// The time since `start`, none when the clock went back.
fn since(start: chrono::DateTime<Utc>) -> Duration {
    (Utc::now() - start).to_std().unwrap_or_default()
}

/// The limit on one run of the job: the call's, else the task's.
fn timeout_of(envelope: &Envelope, registration: &TaskRegistration) -> Option<Duration> {
    envelope.timeout_ms.map(Duration::from_millis).or(registration.timeout)
}

/// The task's future for the job, under a panic guard; it starts running when first
/// polled.
fn start(registration: &'static TaskRegistration, envelope: Envelope) -> Guarded {
    let ctx = TaskContext {
        id: envelope.id,
        name: envelope.task,
        queue: envelope.queue,
        attempt: envelope.attempt,
        headers: envelope.headers,
    };
    AssertUnwindSafe((registration.run)(envelope.args, ctx)).catch_unwind()
}

/// A future for a path jobs rarely take, boxed so that it adds nothing to the size
/// of the future every job spawns.
type Rare<'a, T = ()> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

fn rare<'a, T>(future: impl Future<Output = T> + Send + 'a) -> Rare<'a, T> {
    Box::pin(future)
}

/// Dead-letters a job whose envelope does not decode, and records why: the reason
/// reads `undecodable: <what was wrong>`, as other failures read `<kind>: <message>`.
/// Its attempt is unknown, so the result records 0 attempts.
async fn poison(shared: &Shared, lease: &Lease, error: &Error) {
    let message = error.to_string();
    let kind = FailureKind::Undecodable;
    tracing::error!(id = %lease.id, queue = %lease.queue, %kind, error = %message, "dead-lettering a job");
    let reason = format!("{kind}: {message}");
    if dead_letter(shared, lease, &reason).await {
        let outcome = TaskOutcome::failed(kind, &message, 0, None);
        store(shared, lease, &outcome, DEAD_WITHOUT_RESULT).await;
        // Its task is unknown: the events name none.
        shared.emit(lease.id, "", &lease.queue, 0, || EventKind::Failed {
            failure: kind,
            error: message,
            run_time: None,
        });
        shared.emit(lease.id, "", &lease.queue, 0, || EventKind::DeadLettered { reason });
    }
}

/// Dead-letters a job whose expiry passed before it started.
async fn expire(
    shared: &Shared,
    lease: &Lease,
    registration: &'static TaskRegistration,
    expires_at: chrono::DateTime<Utc>,
    attempt: u32,
) {
    let reason = format!("expired at {expires_at} before it started");
    tracing::warn!(%reason, "not running an expired job");
    let (id, name, queue) = (lease.id, registration.name, lease.queue.as_str());
    if dead_letter(shared, lease, &reason).await {
        store(shared, lease, &TaskOutcome::expired(attempt), DEAD_WITHOUT_RESULT).await;
        shared.emit(id, name, queue, attempt, || EventKind::Expired { expired_at: expires_at });
        shared.emit(id, name, queue, attempt, || EventKind::DeadLettered { reason });
    }
}

/// The task's own future under a panic guard.
type Guarded = futures::future::CatchUnwind<AssertUnwindSafe<TaskFuture>>;

/// Starts the task of a decoded job, which takes the envelope's arguments, names and
/// headers, and returns the future that runs it and settles the job; `payload` is
/// the envelope as delivered, which a retry decodes again.
fn run<'a>(
    shared: &'a Shared,
    (lease, claimed): (Lease, std::time::Instant),
    registration: &'static TaskRegistration,
    envelope: Envelope,
    payload: Vec<u8>,
    finish: Finish,
) -> impl Future<Output = ()> + Send + 'a {
    let started_at = Utc::now();
    let timeout = timeout_of(&envelope, registration);
    let (attempt, max_retries) = (envelope.attempt, envelope.max_retries);
    shared.emit(lease.id, registration.name, &lease.queue, attempt, || EventKind::Started);
    // This only boxes the task's future; it starts running when first polled.
    let task = start(registration, envelope);
    async move {
        // Biased, the run first: a task that finishes at once never polls `stop`, so
        // it arms no renewal timer and allocates nothing for it.
        let result = tokio::select! {
            biased;
            result = execute(registration, task, timeout) => result,
            stopped = stop(shared, &lease) => {
                match stopped {
                    Stop::LeaseLost => tracing::warn!(
                        "lost the lease: another worker now holds this job; abandoning this run"
                    ),
                    Stop::HardStop => {
                        tracing::warn!("cancelled at the end of the grace period; releasing the job");
                        release(shared, &lease).await;
                    }
                }
                return;
            }
        };
        // Measured before the result is stored and the job settled.
        let run_time = since(started_at);
        match result {
            Ok(value) => {
                if !registration.ignore_result {
                    if !shared.surely_holds(claimed) && !rare(still_holds(shared, &lease)).await {
                        return;
                    }
                    let outcome = TaskOutcome::succeeded(value, attempt, started_at);
                    if !store(shared, &lease, &outcome, "the job runs again once its lease expires")
                        .await
                    {
                        // Acknowledging now would lose the result for good; the job
                        // runs again once its lease expires, and its result is written
                        // then.
                        return;
                    }
                }
                let broker = shared.core.broker();
                let acked = match finish {
                    Finish::Ack => persist(shared, &lease, || broker.ack(&lease)).await,
                    Finish::Complete => {
                        let remember = shared.core.config().idempotency_ttl;
                        rare(persist(shared, &lease, || broker.complete(&lease, remember))).await
                    }
                };
                if acked.is_ok() {
                    shared.emit(lease.id, registration.name, &lease.queue, attempt, || {
                        EventKind::Completed { run_time }
                    });
                }
                settle(acked, &lease, "acknowledge");
            }
            Err(failure) => {
                let failed = Failed {
                    registration,
                    attempt,
                    max_retries,
                    payload: &payload,
                    started_at,
                    run_time,
                };
                rare(failed.settle(shared, &lease, failure)).await;
            }
        }
    }
}

/// Why a run was abandoned before it finished.
enum Stop {
    /// Another worker holds the job now.
    LeaseLost,
    /// The grace period of a shutdown ended.
    HardStop,
}

/// Renews the lease while the task runs; resolves when the run must stop. Boxed when
/// first polled, which a task that finishes at once never is.
async fn stop(shared: &Shared, lease: &Lease) -> Stop {
    rare(async {
        tokio::select! {
            () = keep_lease(shared, lease) => Stop::LeaseLost,
            () = shared.hard_stop.cancelled() => Stop::HardStop,
        }
    })
    .await
}

/// A run that failed, with what deciding between a retry and a final failure takes.
struct Failed<'a> {
    registration: &'static TaskRegistration,
    attempt: u32,
    /// The call's own retry limit, if it set one.
    max_retries: Option<u32>,
    /// The envelope as delivered.
    payload: &'a [u8],
    started_at: chrono::DateTime<Utc>,
    /// How long the run took.
    run_time: Duration,
}

impl Failed<'_> {
    /// Retries the job when its failure, the retry policy and its attempts allow, or
    /// fails it for good.
    ///
    /// The retry limit is the call's, else the task's (its policy function or its
    /// `max_retries`), else the manager's; the backoff likewise; the error filters are
    /// the task policy's, else the manager's.
    async fn settle(self, shared: &Shared, lease: &Lease, failure: RunFailure) {
        let retries = Retries::of(Some(self.registration), &shared.core.config().default_retry);
        let policy = retries.policy();
        let max_retries = retries.max_retries(self.max_retries);
        let RunFailure { kind, message, error } = failure;
        let allowed = kind.is_retryable() && error.as_ref().is_some_and(|e| policy.allows(e));
        if !allowed || self.attempt > max_retries {
            if kind.is_retryable() && !allowed {
                tracing::info!(error = %message, "the retry policy does not retry this error");
            }
            let about = (self.registration.name, self.attempt);
            let ran = Some((self.started_at, self.run_time));
            fail(shared, lease, about, kind, &message, ran).await;
            return;
        }
        let requested = error.as_ref().and_then(TaskError::requested_delay);
        match Envelope::decode(self.payload, shared.core.config().max_message_size) {
            Ok(whole) => {
                let backoff = retries.backoff(whole.backoff);
                let failed = (message.as_str(), self.run_time);
                retry(shared, lease, whole, failed, backoff, requested).await;
            }
            Err(e) => {
                // Cannot happen: these bytes decoded before the run.
                let reason = format!("could not decode the job again for a retry: {e}");
                let about = (self.registration.name, self.attempt);
                fail(shared, lease, about, FailureKind::Undecodable, &reason, None).await;
            }
        }
    }
}

/// Why a run produced no value: its kind, its message, and the error a retry policy
/// judges (none for bad input, which is never retried).
struct RunFailure {
    kind: FailureKind,
    message: String,
    error: Option<TaskError>,
}

/// Runs the task under its timeout.
async fn execute(
    registration: &'static TaskRegistration,
    task: Guarded,
    timeout: Option<Duration>,
) -> Result<Vec<u8>, RunFailure> {
    let finished = match timeout {
        // Boxed: a timer is larger than the rest of the run, and costs more to arm.
        Some(limit) => match Box::pin(tokio::time::timeout(limit, task)).await {
            Ok(finished) => finished,
            Err(_) => {
                let message = format!("task {:?} timed out after {limit:?}", registration.name);
                let error = Some(TaskError::from(TaskTimedOut { limit }));
                return Err(RunFailure { kind: FailureKind::Timeout, message, error });
            }
        },
        None => task.await,
    };
    match finished {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => {
            let (kind, message) = (e.kind(), e.message());
            let error = match e {
                RunError::Task(task_error) => Some(task_error),
                RunError::BadArgs(_) | RunError::BadOutput(_) => None,
            };
            Err(RunFailure { kind, message, error })
        }
        Err(panic) => {
            let panicked = panic_message(&*panic).to_owned();
            let message = format!("task {:?} panicked: {panicked}", registration.name);
            let error = Some(TaskError::from(TaskPanicked { message: panicked }));
            Err(RunFailure { kind: FailureKind::Panic, message, error })
        }
    }
}

/// Renews the lease every third of its length; returns only when it is lost.
async fn keep_lease(shared: &Shared, lease: &Lease) {
    let every = shared.config.lease / 3;
    loop {
        tokio::time::sleep(every).await;
        match shared.core.broker().renew(lease, shared.config.lease).await {
            Ok(()) => {}
            Err(Error::LeaseLost { .. }) => return,
            Err(e) => {
                shared.vitals.broker_error(Op::Renew);
                tracing::warn!(error = %e, "renewing the lease failed; will try again");
            }
        }
    }
}

async fn retry(
    shared: &Shared,
    lease: &Lease,
    mut envelope: Envelope,
    (message, run_time): (&str, Duration),
    backoff: Backoff,
    requested_delay: Option<Duration>,
) {
    let delay = retry_delay(backoff, envelope.attempt, requested_delay);
    tracing::info!(error = %message, retry_in = ?delay, "attempt failed; retrying");
    let failed_attempt = envelope.attempt;
    envelope.attempt += 1;
    let eta = crate::clock::utc_after(delay);
    envelope.eta = Some(eta);
    match envelope.encode(shared.core.config().max_message_size) {
        Ok(payload) => {
            let broker = shared.core.broker();
            let result = persist(shared, lease, || broker.retry(lease, payload.clone(), eta)).await;
            if result.is_ok() {
                shared.emit(lease.id, &envelope.task, &lease.queue, failed_attempt, || {
                    EventKind::Retry { delay, error: message.to_owned(), run_time }
                });
            }
            settle(result, lease, "schedule a retry of");
        }
        Err(e) => {
            let reason = format!("could not re-encode the job for a retry: {e}");
            let kind = FailureKind::Undecodable;
            fail(shared, lease, (&envelope.task, failed_attempt), kind, &reason, None).await;
        }
    }
}

/// The retry settings a failed run of a job is judged by, for workers and remote
/// consumers alike: the call's own (from its envelope), else the task's retry policy
/// function's, else the task's attributes, else the manager's default.
pub(crate) struct Retries<'a> {
    /// What the task's policy function returned; none when it has none, or panicked.
    task_policy: Option<crate::retry::RetryPolicy>,
    registration: Option<&'a TaskRegistration>,
    default: &'a crate::retry::RetryPolicy,
}

impl<'a> Retries<'a> {
    /// The settings of a job of `registration` (none for a task this binary does not
    /// know), over the manager's `default`.
    pub(crate) fn of(
        registration: Option<&'a TaskRegistration>,
        default: &'a crate::retry::RetryPolicy,
    ) -> Self {
        // A policy function that panics counts as none: the manager's default applies.
        let task_policy = registration.and_then(|r| {
            let policy = r.retry?;
            std::panic::catch_unwind(policy)
                .inspect_err(|_| {
                    tracing::error!(
                        task = r.name,
                        "the task's retry policy function panicked; using the manager's default"
                    );
                })
                .ok()
        });
        Retries { task_policy, registration, default }
    }

    /// The policy whose error filters judge a failure.
    pub(crate) fn policy(&self) -> &crate::retry::RetryPolicy {
        self.task_policy.as_ref().unwrap_or(self.default)
    }

    /// How many retries a job gets, `call`'s own limit first.
    pub(crate) fn max_retries(&self, call: Option<u32>) -> u32 {
        call.or(self.task_policy.as_ref().map(|p| p.max_retries))
            .or(self.registration.and_then(|r| r.max_retries))
            .unwrap_or(self.default.max_retries)
    }

    /// The delay before each retry, `call`'s own backoff first.
    pub(crate) fn backoff(&self, call: Option<Backoff>) -> Backoff {
        call.or(self.task_policy.as_ref().map(|p| p.backoff))
            .or(self.registration.and_then(|r| r.backoff))
            .unwrap_or(self.default.backoff)
    }
}

/// The delay before retrying attempt `attempt`: `requested` (capped as backoffs are)
/// when the failure asked for one, else the backoff's.
pub(crate) fn retry_delay(backoff: Backoff, attempt: u32, requested: Option<Duration>) -> Duration {
    requested.map_or_else(|| backoff.delay(attempt, jitter_draw()), |d| d.min(MAX_BACKOFF))
}

/// A number in `[0, 1)` for a backoff's jitter, from the system's random source.
fn jitter_draw() -> f64 {
    // The low 53 bits of a v4 UUID are all random (its version and variant bits sit
    // higher up), and 53 bits are exactly representable in an f64.
    let bits = uuid::Uuid::new_v4().as_u128() & ((1 << 53) - 1);
    #[allow(clippy::cast_precision_loss)]
    let draw = bits as f64 / (1u64 << 53) as f64;
    draw
}

/// Records a final failure of attempt `attempt` of a job of task `task` (the `about`
/// pair) and dead-letters the job; `ran` is when the run started and how long it
/// took, if it ran.
async fn fail(
    shared: &Shared,
    lease: &Lease,
    (task, attempt): (&str, u32),
    kind: FailureKind,
    message: &str,
    ran: Option<(chrono::DateTime<Utc>, Duration)>,
) {
    tracing::error!(%kind, error = %message, "job failed");
    let (started_at, run_time) = (ran.map(|(at, _)| at), ran.map(|(_, took)| took));
    // Dead-letter first: whoever sees the failed result then finds the job in the
    // dead-letter queue too. A job that could not be dead-lettered stays with its lease
    // and runs again; its result is written then.
    let reason = format!("{kind}: {message}");
    if dead_letter(shared, lease, &reason).await {
        let outcome = TaskOutcome::failed(kind, message, attempt, started_at);
        store(shared, lease, &outcome, DEAD_WITHOUT_RESULT).await;
        // The events go after both writes: whoever reads the result or the dead-letter
        // queue on hearing of them finds what they report. A result that could not be
        // stored is lost (the job is already dead-lettered), and logged by `store`.
        let (id, queue) = (lease.id, lease.queue.as_str());
        if kind == FailureKind::UnknownTask {
            shared.emit(id, task, queue, attempt, || EventKind::NotFound);
        }
        shared.emit(id, task, queue, attempt, || EventKind::Failed {
            failure: kind,
            error: message.to_owned(),
            run_time,
        });
        shared.emit(id, task, queue, attempt, || EventKind::DeadLettered { reason });
    }
}

/// How many times a transient failure to store a result or settle a job is tried
/// again (over about 10 s) before the job is left to run again after its lease.
const PERSIST_ATTEMPTS: u32 = 10;

/// Runs `op` (a write to the broker or backend, or a read the job depends on) until
/// it succeeds, fails for good, or fails transiently [`PERSIST_ATTEMPTS`] times,
/// pausing 50 ms doubling to 2 s in between, and keeping the lease meanwhile: a Redis
/// restart in the middle of settling a job should cost a short wait, not a second run.
async fn persist<T, F, Fut>(shared: &Shared, lease: &Lease, mut op: F) -> crate::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = crate::Result<T>>,
{
    let keeper = async {
        keep_lease(shared, lease).await;
        Error::LeaseLost { id: lease.id }
    };
    let counted = || {
        let attempt = op();
        async move {
            let result = attempt.await;
            if result.as_ref().is_err_and(Error::is_transient) {
                shared.vitals.broker_error(Op::Settle);
            }
            result
        }
    };
    write(lease.id, counted, keeper).await
}

/// Runs `op` as [`persist`] does, while `keeper` runs beside the retries (the first
/// attempt runs alone: the common case arms no timer); `keeper` resolving ends the
/// retries with its error.
async fn write<T, F, Fut>(
    id: crate::TaskId,
    mut op: F,
    keeper: impl Future<Output = Error>,
) -> crate::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = crate::Result<T>>,
{
    let first = op().await;
    match first {
        Err(ref e) if e.is_transient() && PERSIST_ATTEMPTS > 1 => {
            tracing::warn!(%id, error = %e, "a write failed; trying again");
        }
        done => return done,
    }
    let retries = async {
        let mut pause = Duration::from_millis(50);
        let mut attempt = 1;
        loop {
            tokio::time::sleep(pause).await;
            attempt += 1;
            match op().await {
                Err(e) if e.is_transient() && attempt < PERSIST_ATTEMPTS => {
                    tracing::warn!(%id, error = %e, retry_in = ?pause, "a write failed; trying again");
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                done => return done,
            }
        }
    };
    tokio::select! {
        done = retries => done,
        error = keeper => Err(error),
    }
}

/// Stores a job's outcome under its lease's fence, so that it replaces neither a
/// success nor the outcome of a later run of the job (see
/// [`ResultBackend::store_fenced`](crate::ResultBackend::store_fenced)): true when it
/// was stored or such an outcome stands; false when it could not be stored, which is
/// logged with `then`, what becomes of the job.
async fn store(shared: &Shared, lease: &Lease, outcome: &TaskOutcome, then: &str) -> bool {
    let ttl = shared.core.config().result_ttl;
    let backend = shared.core.backend();
    match persist(shared, lease, || backend.store_fenced(lease.id, outcome, ttl, lease.fence)).await
    {
        Ok(true) => true,
        Ok(false) => {
            kept_stored();
            true
        }
        Err(e) => {
            tracing::error!(id = %lease.id, error = %e, "storing the result failed; {then}");
            false
        }
    }
}

/// Logs that a run's outcome was not stored because another run's stands.
fn kept_stored() {
    tracing::warn!(
        "storing nothing from this run: a success, or the outcome of a later run of this \
         job, is stored already and stays"
    );
}

/// Asks the broker whether this worker still holds `lease` (renewing it), before a
/// run that may have stalled past it stores its result: a run that lost its lease
/// stores nothing. False, logged, when the lease is lost or cannot be confirmed (the
/// job then runs again once its lease expires).
async fn still_holds(shared: &Shared, lease: &Lease) -> bool {
    let broker = shared.core.broker();
    match persist(shared, lease, || broker.renew(lease, shared.config.lease)).await {
        Ok(()) => true,
        Err(Error::LeaseLost { .. }) => {
            tracing::warn!(
                "storing nothing from this run: it lost its lease (this worker stalled past \
                 it), and the worker that holds it now runs the job"
            );
            false
        }
        Err(e) => {
            tracing::error!(error = %e, "could not confirm the lease before storing the result; the job runs again once its lease expires");
            false
        }
    }
}

/// What becomes of a dead-lettered job whose result could not be stored.
const DEAD_WITHOUT_RESULT: &str = "the job stays in the dead-letter queue with no result";

/// Dead-letters a job; false when that failed.
async fn dead_letter(shared: &Shared, lease: &Lease, reason: &str) -> bool {
    let broker = shared.core.broker();
    let result = persist(shared, lease, || broker.dead_letter(lease, reason)).await;
    let done = result.is_ok();
    settle(result, lease, "dead-letter");
    done
}

pub(super) async fn release(shared: &Shared, lease: &Lease) {
    let broker = shared.core.broker();
    let result = persist(shared, lease, || broker.release(lease)).await;
    if result.is_ok() {
        shared.released.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    settle(result, lease, "release");
}

fn settle(result: crate::Result<()>, lease: &Lease, what: &str) {
    match result {
        Ok(()) => {}
        Err(Error::LeaseLost { .. }) => {
            tracing::warn!(id = %lease.id, "could not {what} the job: its lease passed to another worker");
        }
        Err(e) => {
            tracing::error!(id = %lease.id, error = %e, "could not {what} the job; it returns to its queue when its lease expires");
        }
    }
}
