//! The `Core`: what a manager and its workers share (the broker, the result backend,
//! the task registry, the settings, the periodic schedules and the event bus). The
//! worker pool and its scheduler run on an `Arc<Core>`; `Manager` is the user's
//! façade over it.

pub(crate) mod bus;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::backend::{DEFAULT_RESULT_TTL, ResultBackend};
use crate::broker::{Broker, BrokerAdmin, Job};
use crate::envelope::{DEFAULT_MAX_MESSAGE_SIZE, Envelope};
use crate::error::{Error, Result};
use crate::events::{Event, EventKind, ListenerStats};
use crate::limits::Gate;
use crate::partition::{Partitions, split_partition};
use crate::registry::Registry;
use crate::retry::{Backoff, RetryPolicy};
use crate::schedule::Periodics;
use crate::task::TaskId;
use crate::unique::KeyHold;

use self::bus::Bus;

/// How many times an enqueue of a debounced job goes to the broker before it gives
/// up: twice when it replaces a waiting job, once more each time that job started
/// between the two (a window of a round trip).
const DEBOUNCE_TRIES: usize = 8;

/// The longest a unique job's key may be asked to last: 100 years, in milliseconds.
const MAX_KEY_TTL_MS: u64 = 100 * 365 * 24 * 3_600_000;

/// How long an idempotency key stays known by default: a day.
pub const DEFAULT_IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// The settings a manager was built with.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) max_message_size: usize,
    pub(crate) result_ttl: Duration,
    /// For tasks without a policy of their own: the retry limit and error filters,
    /// and the backoff for jobs whose call set none.
    pub(crate) default_retry: RetryPolicy,
    pub(crate) idempotency_ttl: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            result_ttl: DEFAULT_RESULT_TTL,
            default_retry: RetryPolicy::new(0, Backoff::default()),
            idempotency_ttl: DEFAULT_IDEMPOTENCY_TTL,
        }
    }
}

/// What a manager and its workers share.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) backend: Arc<dyn ResultBackend>,
    pub(crate) registry: Registry,
    pub(crate) config: Config,
    /// The periodic schedules, from the tasks' attributes and `Manager::periodic`.
    pub(crate) periodics: Mutex<Periodics>,
    /// Where events go: callbacks, the broker's event stream, metrics.
    pub(crate) events: Bus,
    /// The partitioned queues, and where their next jobs go.
    pub(crate) partitions: Partitions,
}

impl Core {
    /// A core on a fresh in-memory broker and backend, with the default settings and
    /// the tasks linked into the test binary.
    #[cfg(test)]
    pub(crate) fn in_memory() -> Arc<Core> {
        Arc::new(Core {
            broker: Arc::new(crate::broker::InMemoryBroker::new()),
            backend: Arc::new(crate::backend::InMemoryBackend::new()),
            registry: Registry::from_linked().expect("the test binary's tasks register"),
            config: Config::default(),
            periodics: Mutex::new(Vec::new()),
            events: Bus::new(Vec::new(), None, 1, None),
            partitions: Partitions::default(),
        })
    }

    /// The broker jobs go through.
    pub(crate) fn broker(&self) -> &Arc<dyn Broker> {
        &self.broker
    }

    /// The backend results are kept in.
    pub(crate) fn backend(&self) -> &Arc<dyn ResultBackend> {
        &self.backend
    }

    /// The tasks linked into this binary.
    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The settings.
    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// Where events go.
    pub(crate) fn events(&self) -> &Bus {
        &self.events
    }

    /// Waits up to `timeout` for the event listeners to handle the events queued for
    /// them so far; returns whether they did.
    pub(crate) async fn flush_events(&self, timeout: Duration) -> bool {
        self.events.flush(timeout).await
    }

    /// The broker's admin capability.
    pub(crate) fn admin(&self) -> Result<&dyn BrokerAdmin> {
        self.broker.admin().ok_or_else(|| {
            Error::Unsupported(
                "this broker has no admin capability (BrokerAdmin): it cannot list queues, \
                 dead letters or jobs"
                    .to_owned(),
            )
        })
    }

    /// The periodic schedules, for a worker's scheduler.
    pub(crate) fn periodics(&self) -> Periodics {
        self.periodics.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// What each event listener has been handed and has dropped so far.
    pub(crate) fn event_listeners(&self) -> Vec<ListenerStats> {
        self.events.stats()
    }

    /// Enqueues a prepared envelope with the current span's trace context, and returns
    /// its id (see `Manager::enqueue_envelope`).
    pub(crate) async fn enqueue_envelope(&self, envelope: Envelope) -> Result<TaskId> {
        self.enqueue_envelope_keyed(envelope, None).await
    }

    /// As [`enqueue_envelope`](Core::enqueue_envelope), placing the job on a
    /// partitioned queue by `partition_key` when there is one.
    pub(crate) async fn enqueue_envelope_keyed(
        &self,
        envelope: Envelope,
        partition_key: Option<&str>,
    ) -> Result<TaskId> {
        self.enqueue_envelope_reporting(envelope, partition_key).await.map(|(id, _)| id)
    }

    /// As [`enqueue_envelope_keyed`](Self::enqueue_envelope_keyed), also saying
    /// whether the envelope's idempotency key was known (the id is then the earlier
    /// job's, and nothing was enqueued).
    pub(crate) async fn enqueue_envelope_reporting(
        &self,
        mut envelope: Envelope,
        partition_key: Option<&str>,
    ) -> Result<(TaskId, bool)> {
        crate::trace::TraceContext::current().inject(&mut envelope);
        let mut job = self.job(&mut envelope, partition_key)?;
        let taken = self.take_quotas(std::slice::from_ref(&job)).await?;
        // A debounced job whose key names a job still waiting out its delay replaces
        // that job: it is encoded again with that job's id and enqueued again, which
        // the broker turns into a replacement (see `KeyHold::Debounce`). The waiting
        // job may start in between; then its id comes back and a fresh one is tried.
        let mut replacing = false;
        for _ in 0..DEBOUNCE_TRIES {
            let at = chrono::Utc::now();
            match self.broker.enqueue(job).await {
                Ok(()) => {
                    self.queued(&envelope, at);
                    if replacing {
                        self.refund_quotas(taken).await;
                    }
                    return Ok((envelope.id, replacing));
                }
                Err(Error::IdempotencyKeyTaken { existing, .. })
                    if envelope.unique_for == Some(KeyHold::Debounce) =>
                {
                    replacing = existing != envelope.id;
                    envelope.id = if replacing { existing } else { TaskId::new() };
                    job = self.job(&mut envelope, partition_key)?;
                }
                // The same work was enqueued already: its job stands for this one.
                Err(Error::IdempotencyKeyTaken { existing, .. }) => {
                    self.refund_quotas(taken).await;
                    return Ok((existing, true));
                }
                Err(e) => {
                    self.refund_quotas(taken).await;
                    return Err(e);
                }
            }
        }
        self.refund_quotas(taken).await;
        Err(Error::backend(
            format!(
                "a debounced job of {:?} found its key's job starting each of {DEBOUNCE_TRIES} \
                 times it tried to replace it; enqueue it again",
                envelope.task
            ),
            true,
        ))
    }

    /// Counts `jobs` against the broker's enqueue quotas, all or none (see
    /// [`QuotaStore`](crate::QuotaStore)); returns what it counted, per key.
    pub(crate) async fn take_quotas(&self, jobs: &[Job]) -> Result<Vec<(Option<String>, u64)>> {
        let Some(store) = self.broker.quota_store() else { return Ok(Vec::new()) };
        // One job (most enqueues): no grouping.
        if let [job] = jobs {
            store.take_quota(job.quota_key.as_deref(), 1).await?;
            return Ok(vec![(job.quota_key.clone(), 1)]);
        }
        let mut per_key: std::collections::BTreeMap<Option<&str>, u64> =
            std::collections::BTreeMap::new();
        for job in jobs {
            *per_key.entry(job.quota_key.as_deref()).or_default() += 1;
        }
        let mut taken = Vec::with_capacity(per_key.len());
        for (key, n) in per_key {
            if let Err(e) = store.take_quota(key, n).await {
                self.refund_quotas(taken).await;
                return Err(e);
            }
            taken.push((key.map(str::to_owned), n));
        }
        Ok(taken)
    }

    /// Gives back quota counted for jobs the broker refused; a failure to is logged
    /// (the count then runs high until the window ends).
    pub(crate) async fn refund_quotas(&self, taken: Vec<(Option<String>, u64)>) {
        let Some(store) = self.broker.quota_store() else { return };
        for (key, n) in taken {
            if let Err(e) = store.refund_quota(key.as_deref(), n).await {
                tracing::warn!(error = %e, "could not give back the enqueue quota of refused jobs");
            }
        }
    }

    /// Emits the `Queued` event of an envelope the broker accepted, dated `at`, just
    /// before the broker was asked: a quick worker may emit its first events about
    /// the job before this one, but never dated before it.
    pub(crate) fn queued(&self, envelope: &Envelope, at: chrono::DateTime<chrono::Utc>) {
        self.events.emit(|| {
            let eta = envelope.eta.filter(|eta| *eta > at);
            Event::new(
                EventKind::Queued { eta },
                envelope.id,
                envelope.task.clone(),
                envelope.queue.clone(),
                envelope.attempt,
            )
            .with_time(at)
        });
    }

    /// The job that enqueues `envelope`, placed on a partition of its queue when the
    /// queue is partitioned (by `partition_key` when given; the envelope's queue
    /// becomes that partition's). Every enqueue comes through here, so this is where
    /// its names are checked.
    pub(crate) fn job(&self, envelope: &mut Envelope, partition_key: Option<&str>) -> Result<Job> {
        crate::names::check_task_name(&envelope.task)?;
        Self::check_unique(envelope)?;
        // A unique job without a partition key goes where its key does, so that the
        // same work meets its key (keys are per partition).
        let unique_key = envelope.unique_for.and(envelope.idempotency_key.clone());
        let partition_key = partition_key.or(unique_key.as_deref());
        match split_partition(&envelope.queue) {
            // Named as a partition already (an envelope a job once had): one there is.
            (queue, Some(partition)) => {
                let count = self.partitions.count(queue).unwrap_or(1);
                if partition >= count {
                    return Err(Error::InvalidArgument(format!(
                        "queue {:?} names partition {partition} of queue {queue:?}, which has \
                         {count} partition(s) here; send the job to {queue:?} and let the \
                         manager pick the partition",
                        envelope.queue
                    )));
                }
                crate::names::check_queue_name(queue)?;
            }
            (queue, None) => {
                crate::names::check_queue_name(queue)?;
                if let Some(partition) = self.partitions.place(queue, envelope.id, partition_key) {
                    envelope.queue = partition;
                }
            }
        }
        // A job whose producer said nothing of limits (another language, `dmq
        // enqueue`, the HTTP API) passes the limits its task declares, when this
        // process knows the task.
        if envelope.limits.is_none() {
            envelope.limits = self.registry.get(&envelope.task).and_then(|reg| reg.limits());
        }
        if let Some(limits) = &envelope.limits {
            limits.check(&envelope.task)?;
        }
        let payload = envelope.encode(self.config.max_message_size)?;
        let mut job =
            Job::new(envelope.id, envelope.queue.clone(), envelope.priority, envelope.eta, payload);
        if let Some(gate) = envelope.limits.as_ref().and_then(|l| Gate::of(&envelope.task, l)) {
            job = job.with_gate(gate);
        }
        if let Some(key) = &envelope.quota_key {
            if key.contains('\0') || key.len() > crate::limits::MAX_GATE_LEN {
                return Err(Error::InvalidArgument(format!(
                    "the quota key of a job of {:?} must be text without NUL, up to {} bytes",
                    envelope.task,
                    crate::limits::MAX_GATE_LEN
                )));
            }
        }
        job.quota_key.clone_from(&envelope.quota_key);
        if let Some(group) = &envelope.group {
            if group.is_empty() || group.contains('\0') || group.len() > crate::limits::MAX_GATE_LEN
            {
                return Err(Error::InvalidArgument(format!(
                    "the group of a job of {:?} must be text without NUL, 1 to {} bytes",
                    envelope.task,
                    crate::limits::MAX_GATE_LEN
                )));
            }
        }
        job.group.clone_from(&envelope.group);
        Ok(match &envelope.idempotency_key {
            Some(key) => job
                .with_idempotency_key(key.clone(), self.key_ttl(envelope))
                .with_key_hold(envelope.unique_for.unwrap_or_default()),
            None => job,
        })
    }

    /// Gives a unique job without a key of its own the key its task and arguments
    /// derive (its task alone, for a debounce), and checks its key's ttl.
    fn check_unique(envelope: &mut Envelope) -> Result<()> {
        if let Some(ms) = envelope.unique_ttl_ms.filter(|ms| !(1..=MAX_KEY_TTL_MS).contains(ms)) {
            return Err(Error::InvalidArgument(format!(
                "a unique job of {:?} has a key ttl of {ms} ms; give 1 ms to 100 years",
                envelope.task
            )));
        }
        if envelope.idempotency_key.is_none() {
            envelope.idempotency_key = match envelope.unique_for {
                // A debounce replaces the arguments: calls of the task share the key.
                Some(KeyHold::Debounce) => Some(format!("debounce:{}", envelope.task)),
                Some(_) => Some(crate::unique::derived_key(&envelope.task, &envelope.args)),
                None => None,
            };
        }
        Ok(())
    }

    /// How long a job's idempotency key lasts at most: the envelope's ttl, else the
    /// manager's `idempotency_ttl`; for a mode that holds while the job waits or
    /// runs, counted from the job's eta.
    fn key_ttl(&self, envelope: &Envelope) -> Duration {
        let ttl = envelope.unique_ttl_ms.map_or(self.config.idempotency_ttl, Duration::from_millis);
        if envelope.unique_for.unwrap_or_default() == KeyHold::Ttl {
            return ttl;
        }
        let ahead = envelope.eta.and_then(|eta| (eta - chrono::Utc::now()).to_std().ok());
        ttl.saturating_add(ahead.unwrap_or_default())
    }
}

/// Checks the task and queue names of a job about to be enqueued.
pub(crate) fn check_names(envelope: &Envelope) -> Result<()> {
    crate::names::check_task_name(&envelope.task)?;
    crate::names::check_queue_name(&envelope.queue)
}
