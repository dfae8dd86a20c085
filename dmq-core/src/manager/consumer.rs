//! A consumer that runs jobs outside this process (a program in another language,
//! reached through `dmq serve`): it claims jobs under dmq's fenced leases and settles
//! them with the same rules a worker applies, so a job run remotely is acknowledged,
//! retried, dead-lettered and recorded exactly as one run by a Rust worker.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::backend::TaskOutcome;
use crate::broker::Lease;
use crate::core::Core;
use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::events::{Event, EventKind};
use crate::task::{FailureKind, TaskId};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A job a [`Consumer`] claimed: its lease, to settle it with, and its decoded
/// envelope.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClaimedJob {
    /// The lease the consumer now holds; every settling call takes it back.
    pub lease: Lease,
    /// The job's envelope: its task, arguments (MessagePack), attempt, headers.
    pub envelope: Envelope,
    /// How many times the job has been claimed since it was last enqueued or retried.
    pub deliveries: u32,
    /// Whether the job came back after its last holder was lost while running it:
    /// run it alone, or release it.
    pub isolated: bool,
}

/// How a consumer's failed run should be settled ([`Consumer::nack`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Nack {
    /// What went wrong, as the result and the dead-letter reason record it.
    pub message: String,
    /// Whether the failure may be retried; `false` fails the job for good at once.
    pub retryable: bool,
    /// The delay before the retry, instead of the job's backoff.
    pub delay: Option<Duration>,
}

impl Nack {
    /// A retryable failure with `message`.
    #[must_use]
    pub fn new(message: impl Into<String>) -> Self {
        Nack { message: message.into(), retryable: true, delay: None }
    }

    /// Never retried: the job is dead-lettered at once.
    #[must_use]
    pub fn fatal(mut self) -> Self {
        self.retryable = false;
        self
    }

    /// Retried after `delay` (capped as backoffs are), instead of the job's backoff.
    #[must_use]
    pub fn retry_after(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }
}

/// What became of a job a consumer failed ([`Consumer::nack`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NackOutcome {
    /// It runs again as attempt `attempt` once `eta` comes.
    Retried {
        /// The attempt it runs as next.
        attempt: u32,
        /// When it becomes due.
        eta: DateTime<Utc>,
    },
    /// It failed for good: it is in its queue's dead-letter queue, and its failure is
    /// stored as its result.
    DeadLettered,
}

/// Claims and settles jobs for code that runs them elsewhere; see
/// [`Manager::consumer`](crate::Manager::consumer).
///
/// Leases work as a worker's do: a consumer that vanishes loses its jobs when their
/// leases expire (the next claim of their queue takes them back, each to run alone, as
/// does a worker's reaper), and once a
/// lease has passed to another holder, nothing the first holder sends changes the job
/// or its result.
///
/// The settling calls of one job are taken one at a time within a consumer (and its
/// clones): an ack and a nack of the same lease sent at once, or an ack repeated by a
/// client that timed out, never interleave their writes, so the one that loses finds
/// the lease gone and changes nothing. Consumers in different processes holding the
/// same lease are not kept apart this way; each settle call still checks the token.
#[derive(Debug, Clone)]
pub struct Consumer {
    core: Arc<Core>,
    id: String,
    /// The jobs being settled now, each with the lock its settle calls take.
    settling: Arc<Mutex<HashMap<TaskId, Arc<tokio::sync::Mutex<()>>>>>,
}

/// The turn of one settle call of a job: while it lives, no other settle call of the
/// job through the same consumer runs.
struct Turn<'a> {
    consumer: &'a Consumer,
    id: TaskId,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut settling = self.consumer.settling.lock().unwrap_or_else(|p| p.into_inner());
        // Forgotten once no other call waits for it (the map's copy and this turn's
        // guard's are the last two).
        if settling.get(&self.id).is_some_and(|lock| Arc::strong_count(lock) <= 2) {
            settling.remove(&self.id);
        }
    }
}

impl Consumer {
    pub(crate) fn new(core: Arc<Core>, id: String) -> Self {
        Consumer { core, id, settling: Arc::default() }
    }

    /// Waits for the turn to settle job `id`.
    async fn turn(&self, id: TaskId) -> Turn<'_> {
        let lock = {
            let mut settling = self.settling.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(settling.entry(id).or_default())
        };
        let guard = lock.lock_owned().await;
        Turn { consumer: self, id, _guard: guard }
    }

    /// The id its leases carry (the worker id the broker sees).
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Claims up to `max` due jobs of `queues` under leases of `lease`, waiting up to
    /// `wait` for one when none is due. A job whose envelope does not decode is
    /// dead-lettered here, as a worker does, and not returned.
    ///
    /// # Errors
    ///
    /// When the broker cannot be reached.
    pub async fn claim(
        &self,
        queues: &[String],
        max: usize,
        lease: Duration,
        wait: Duration,
    ) -> Result<Vec<ClaimedJob>> {
        let (deliveries, held) =
            self.core.broker.claim_reporting(&self.id, queues, max, lease, wait).await?;
        let limit = self.core.config.max_message_size;
        // The jobs the claim held back at their gates, as a worker reports them.
        for job in held {
            if let Some(event) = job.into_event(limit, &self.id) {
                self.core.events.emit(|| event);
            }
        }
        let mut claimed = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            let envelope = match Envelope::decode(&delivery.payload, limit) {
                Ok(envelope) if envelope.id == delivery.lease.id => envelope,
                Ok(envelope) => {
                    let reason = format!(
                        "undecodable: its envelope names the id {}, but it was queued under \
                         the id {}",
                        envelope.id, delivery.lease.id
                    );
                    self.poison(&delivery.lease, &reason).await;
                    continue;
                }
                Err(e) => {
                    self.poison(&delivery.lease, &format!("undecodable: {e}")).await;
                    continue;
                }
            };
            if let Some(expires_at) = envelope.expires_at.filter(|at| *at <= Utc::now()) {
                self.expire(&delivery.lease, &envelope, expires_at).await;
                continue;
            }
            self.emit(&delivery.lease, &envelope.task, envelope.attempt, || EventKind::Started);
            claimed.push(ClaimedJob {
                lease: delivery.lease,
                envelope,
                deliveries: delivery.deliveries,
                isolated: delivery.isolated,
            });
        }
        Ok(claimed)
    }

    /// Extends a lease to `lease_for` from now.
    ///
    /// # Errors
    ///
    /// [`Error::LeaseLost`] when the lease passed to another holder.
    pub async fn renew(&self, lease: &Lease, lease_for: Duration) -> Result<()> {
        self.core.broker.renew(lease, lease_for).await
    }

    /// Settles a job as done with `value` (MessagePack) as its result: the lease is
    /// confirmed first, the result stored under the lease's fence, then the job
    /// acknowledged, so a holder whose lease has passed on stores nothing.
    ///
    /// # Errors
    ///
    /// [`Error::LeaseLost`] when the lease passed to another holder (nothing stored);
    /// otherwise when the broker or backend cannot be reached (the job then runs again
    /// once its lease expires).
    pub async fn ack(&self, lease: &Lease, value: Vec<u8>, lease_for: Duration) -> Result<()> {
        let _turn = self.turn(lease.id).await;
        let envelope = self.in_flight(lease).await?;
        self.core.broker.renew(lease, lease_for).await?;
        let started_at = Utc::now();
        let outcome = TaskOutcome::succeeded(value, envelope.attempt, started_at);
        let ttl = self.core.config.result_ttl;
        if !self.core.backend.store_fenced(lease.id, &outcome, ttl, lease.fence).await? {
            tracing::warn!(id = %lease.id, "storing nothing from this run: a success, or the outcome of a later run of this job, is stored already and stays");
        }
        self.core.broker.ack(lease).await?;
        self.emit(lease, &envelope.task, envelope.attempt, || EventKind::Completed {
            run_time: Duration::ZERO,
        });
        Ok(())
    }

    /// Settles a failed run: retried by the job's retry settings, as a worker's
    /// failed run is (the call's retry limit and backoff, else the task's retry policy
    /// function's and then its attributes' when it is registered in this binary, else
    /// the manager's default) unless `nack` is fatal or the attempts are spent, in which
    /// case the job is dead-lettered and its failure stored as its result.
    ///
    /// # Errors
    ///
    /// [`Error::LeaseLost`] when the lease passed to another holder (nothing changes);
    /// otherwise when the broker cannot be reached.
    pub async fn nack(&self, lease: &Lease, nack: &Nack) -> Result<NackOutcome> {
        let _turn = self.turn(lease.id).await;
        let mut envelope = self.in_flight(lease).await?;
        let registration = self.core.registry.get(&envelope.task);
        let retries = crate::worker::Retries::of(registration, &self.core.config.default_retry);
        let max_retries = retries.max_retries(envelope.max_retries);
        let attempt = envelope.attempt;
        if !nack.retryable || attempt > max_retries {
            let kind = if nack.retryable { FailureKind::Error } else { FailureKind::Fatal };
            let reason = format!("{kind}: {}", nack.message);
            self.core.broker.dead_letter(lease, &reason).await?;
            let outcome = TaskOutcome::failed(kind, &nack.message, attempt, None);
            let ttl = self.core.config.result_ttl;
            if let Err(e) =
                self.core.backend.store_fenced(lease.id, &outcome, ttl, lease.fence).await
            {
                tracing::error!(id = %lease.id, error = %e, "storing the failure of a dead-lettered job failed; it stays in the dead-letter queue with no result");
            }
            let task = envelope.task.clone();
            self.emit(lease, &task, attempt, || EventKind::Failed {
                failure: kind,
                error: nack.message.clone(),
                run_time: None,
            });
            self.emit(lease, &task, attempt, || EventKind::DeadLettered { reason });
            return Ok(NackOutcome::DeadLettered);
        }
        let delay =
            crate::worker::retry_delay(retries.backoff(envelope.backoff), attempt, nack.delay);
        envelope.attempt += 1;
        let eta = crate::clock::utc_after(delay);
        envelope.eta = Some(eta);
        let payload = envelope.encode(self.core.config.max_message_size)?;
        self.core.broker.retry(lease, payload, eta).await?;
        self.emit(lease, &envelope.task, attempt, || EventKind::Retry {
            delay,
            error: nack.message.clone(),
            run_time: Duration::ZERO,
        });
        Ok(NackOutcome::Retried { attempt: envelope.attempt, eta })
    }

    /// Puts a job back to ready at once, unrun.
    ///
    /// # Errors
    ///
    /// [`Error::LeaseLost`] when the lease passed to another holder.
    pub async fn release(&self, lease: &Lease) -> Result<()> {
        let _turn = self.turn(lease.id).await;
        self.core.broker.release(lease).await
    }

    /// The envelope of the job `lease` holds: a lease no longer held (settled, taken
    /// back, or its fence altered by the client that sent it) is lost. The settling
    /// call that follows checks the token again, atomically, so a lease lost between
    /// the two changes nothing either.
    async fn in_flight(&self, lease: &Lease) -> Result<Envelope> {
        match self.core.admin()?.leased_payload(lease).await? {
            Some(payload) => Envelope::decode(&payload, self.core.config.max_message_size),
            None => Err(Error::LeaseLost { id: lease.id }),
        }
    }

    /// Dead-letters a job whose expiry passed before it started, as a worker does:
    /// it is never handed out.
    async fn expire(&self, lease: &Lease, envelope: &Envelope, expires_at: DateTime<Utc>) {
        let reason = format!("expired at {expires_at} before it started");
        tracing::warn!(id = %lease.id, %reason, "not handing out an expired job");
        if let Err(e) = self.core.broker.dead_letter(lease, &reason).await {
            tracing::error!(id = %lease.id, error = %e, "could not dead-letter the expired job; it returns when its lease expires");
            return;
        }
        let (task, attempt) = (envelope.task.as_str(), envelope.attempt);
        let outcome = TaskOutcome::expired(attempt);
        let ttl = self.core.config.result_ttl;
        if let Err(e) = self.core.backend.store_fenced(lease.id, &outcome, ttl, lease.fence).await {
            tracing::error!(id = %lease.id, error = %e, "storing the expiry of a dead-lettered job failed");
        }
        self.emit(lease, task, attempt, || EventKind::Expired { expired_at: expires_at });
        self.emit(lease, task, attempt, || EventKind::DeadLettered { reason });
    }

    /// Dead-letters a job whose envelope could not be read.
    async fn poison(&self, lease: &Lease, reason: &str) {
        tracing::error!(id = %lease.id, queue = %lease.queue, %reason, "dead-lettering a job");
        match self.core.broker.dead_letter(lease, reason).await {
            Ok(()) => {
                let kind = FailureKind::Undecodable;
                let outcome = TaskOutcome::failed(kind, reason, 0, None);
                let ttl = self.core.config.result_ttl;
                let _ = self.core.backend.store_fenced(lease.id, &outcome, ttl, lease.fence).await;
                let reason = reason.to_owned();
                self.emit(lease, "", 0, || EventKind::DeadLettered { reason });
            }
            Err(e) => {
                tracing::error!(id = %lease.id, error = %e, "could not dead-letter the job; it returns when its lease expires");
            }
        }
    }

    fn emit(&self, lease: &Lease, task: &str, attempt: u32, kind: impl FnOnce() -> EventKind) {
        self.core.events.emit(|| {
            Event::new(kind(), lease.id, task, lease.queue.as_str(), attempt)
                .with_worker(self.id.clone())
        });
    }
}
