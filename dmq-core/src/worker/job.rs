//! Running one claimed job: decode, look up, run under timeout and panic guard,
//! store the result, settle with the broker.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use chrono::Utc;
use futures::FutureExt;
use tracing::Instrument;

use super::Shared;
use crate::backend::TaskOutcome;
use crate::broker::{Delivery, Lease};
use crate::envelope::Envelope;
use crate::error::Error;
use crate::task::registry::{RunError, TaskRegistration};
use crate::task::{FailureKind, TaskContext};

/// The longest automatic retry delay.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(600);

/// Runs one delivery to the end: it is acknowledged, retried, dead-lettered or
/// released, and never panics the worker.
pub(super) async fn process(shared: &Shared, delivery: Delivery) {
    let lease = delivery.lease;
    let limit = shared.manager.config().max_message_size;
    let envelope = match Envelope::decode(&delivery.payload, limit) {
        Ok(envelope) => envelope,
        Err(e) => {
            let reason = format!("undecodable envelope: {e}");
            tracing::error!(id = %lease.id, queue = %lease.queue, %reason, "dead-lettering a job");
            dead_letter(shared, &lease, &reason).await;
            let outcome = TaskOutcome::failed(FailureKind::Undecodable, &reason, 0, None);
            store(shared, &lease, &outcome).await;
            return;
        }
    };
    let span = tracing::info_span!(
        "task",
        id = %envelope.id,
        name = %envelope.task,
        attempt = envelope.attempt,
        queue = %envelope.queue,
    );
    run_envelope(shared, lease, envelope).instrument(span).await;
}

async fn run_envelope(shared: &Shared, lease: Lease, envelope: Envelope) {
    let Some(registration) = shared.manager.registry().get(&envelope.task) else {
        let known: Vec<&str> = shared.manager.registry().tasks().iter().map(|t| t.name).collect();
        let reason = format!(
            "no task named {:?} is registered in this worker (it knows: {}); \
             is the task's crate linked into the worker binary?",
            envelope.task,
            known.join(", ")
        );
        fail(shared, &lease, &envelope, FailureKind::UnknownTask, &reason, None).await;
        return;
    };
    if let Some(expires_at) = envelope.expires_at {
        if expires_at <= Utc::now() {
            let reason = format!("expired at {expires_at} before it started");
            tracing::warn!(%reason, "not running an expired job");
            dead_letter(shared, &lease, &reason).await;
            store(shared, &lease, &TaskOutcome::expired(envelope.attempt)).await;
            return;
        }
    }

    let started_at = Utc::now();
    let timeout = envelope.timeout_ms.map(Duration::from_millis).or(registration.timeout);
    let run = execute(registration, &envelope, timeout);
    let result = tokio::select! {
        result = run => result,
        () = keep_lease(shared, &lease) => {
            tracing::warn!("lost the lease: another worker now holds this job; abandoning this run");
            return;
        }
        () = shared.hard_stop.cancelled() => {
            tracing::warn!("cancelled at the end of the grace period; releasing the job");
            release(shared, &lease).await;
            return;
        }
    };

    match result {
        Ok(value) => {
            if !registration.ignore_result {
                let outcome = TaskOutcome::succeeded(value, envelope.attempt, started_at);
                store(shared, &lease, &outcome).await;
            }
            settle(shared.manager.broker().ack(&lease).await, &lease, "acknowledge");
        }
        Err((kind, message, requested_delay)) => {
            let max_retries = envelope
                .max_retries
                .or(registration.max_retries)
                .unwrap_or(shared.manager.config().default_max_retries);
            if kind.is_retryable() && envelope.attempt <= max_retries {
                retry(shared, &lease, envelope, &message, requested_delay).await;
            } else {
                fail(shared, &lease, &envelope, kind, &message, Some(started_at)).await;
            }
        }
    }
}

/// Runs the task under its timeout and a panic guard.
async fn execute(
    registration: &'static TaskRegistration,
    envelope: &Envelope,
    timeout: Option<Duration>,
) -> Result<Vec<u8>, (FailureKind, String, Option<Duration>)> {
    let ctx = TaskContext {
        id: envelope.id,
        name: envelope.task.clone(),
        queue: envelope.queue.clone(),
        attempt: envelope.attempt,
        headers: envelope.headers.clone(),
    };
    let guarded = AssertUnwindSafe((registration.run)(envelope.args.clone(), ctx)).catch_unwind();
    let finished = match timeout {
        Some(limit) => match tokio::time::timeout(limit, guarded).await {
            Ok(finished) => finished,
            Err(_) => {
                let message = format!("task {:?} timed out after {limit:?}", envelope.task);
                return Err((FailureKind::Timeout, message, None));
            }
        },
        None => guarded.await,
    };
    match finished {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => {
            let delay = match &e {
                RunError::Task(task_error) => task_error.requested_delay(),
                _ => None,
            };
            Err((e.kind(), e.message(), delay))
        }
        Err(panic) => {
            let message = format!("task {:?} panicked: {}", envelope.task, panic_message(&*panic));
            Err((FailureKind::Panic, message, None))
        }
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(a non-string panic payload)")
}

/// Renews the lease every third of its length; returns only when it is lost.
async fn keep_lease(shared: &Shared, lease: &Lease) {
    let every = shared.config.lease / 3;
    loop {
        tokio::time::sleep(every).await;
        match shared.manager.broker().renew(lease, shared.config.lease).await {
            Ok(()) => {}
            Err(Error::LeaseLost { .. }) => return,
            Err(e) => tracing::warn!(error = %e, "renewing the lease failed; will try again"),
        }
    }
}

async fn retry(
    shared: &Shared,
    lease: &Lease,
    mut envelope: Envelope,
    message: &str,
    requested_delay: Option<Duration>,
) {
    let delay = requested_delay
        .map_or_else(|| default_backoff(envelope.attempt), |d| d.min(MAX_RETRY_DELAY));
    tracing::info!(error = %message, retry_in = ?delay, "attempt failed; retrying");
    envelope.attempt += 1;
    let eta = crate::clock::utc_after(delay);
    envelope.eta = Some(eta);
    match envelope.encode(shared.manager.config().max_message_size) {
        Ok(payload) => {
            let result = shared.manager.broker().retry(lease, payload, eta).await;
            settle(result, lease, "schedule a retry of");
        }
        Err(e) => {
            let reason = format!("could not re-encode the job for a retry: {e}");
            fail(shared, lease, &envelope, FailureKind::Undecodable, &reason, None).await;
        }
    }
}

/// 1 s, doubling with each attempt, up to ten minutes.
fn default_backoff(attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(20);
    Duration::from_secs(1u64 << exp).min(MAX_RETRY_DELAY)
}

/// Records a final failure and dead-letters the job.
async fn fail(
    shared: &Shared,
    lease: &Lease,
    envelope: &Envelope,
    kind: FailureKind,
    message: &str,
    started_at: Option<chrono::DateTime<Utc>>,
) {
    tracing::error!(%kind, error = %message, "job failed");
    // Dead-letter first: whoever sees the failed result then finds the job in the
    // dead-letter queue too.
    dead_letter(shared, lease, &format!("{kind}: {message}")).await;
    let outcome = TaskOutcome::failed(kind, message, envelope.attempt, started_at);
    store(shared, lease, &outcome).await;
}

async fn store(shared: &Shared, lease: &Lease, outcome: &TaskOutcome) {
    let ttl = shared.manager.config().result_ttl;
    if let Err(e) = shared.manager.backend().store(lease.id, outcome, ttl).await {
        tracing::error!(id = %lease.id, error = %e, "storing the result failed");
    }
}

async fn dead_letter(shared: &Shared, lease: &Lease, reason: &str) {
    let result = shared.manager.broker().dead_letter(lease, reason).await;
    settle(result, lease, "dead-letter");
}

pub(super) async fn release(shared: &Shared, lease: &Lease) {
    let result = shared.manager.broker().release(lease).await;
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
