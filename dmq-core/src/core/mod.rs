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

use self::bus::Bus;

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
        let job = self.job(&mut envelope, partition_key)?;
        let taken = self.take_quotas(std::slice::from_ref(&job)).await?;
        let at = chrono::Utc::now();
        match self.broker.enqueue(job).await {
            Ok(()) => {
                self.queued(&envelope, at);
                Ok((envelope.id, false))
            }
            // The same work was enqueued already: its job stands for this one.
            Err(Error::IdempotencyKeyTaken { existing, .. }) => {
                self.refund_quotas(taken).await;
                Ok((existing, true))
            }
            Err(e) => {
                self.refund_quotas(taken).await;
                Err(e)
            }
        }
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
        Ok(match &envelope.idempotency_key {
            Some(key) => job.with_idempotency_key(key.clone(), self.config.idempotency_ttl),
            None => job,
        })
    }
}

/// Checks the task and queue names of a job about to be enqueued.
pub(crate) fn check_names(envelope: &Envelope) -> Result<()> {
    crate::names::check_task_name(&envelope.task)?;
    crate::names::check_queue_name(&envelope.queue)
}
