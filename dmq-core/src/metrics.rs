//! Prometheus metrics of a process: counters fed by its events, and a worker's
//! gauges read when the metrics are scraped.
//!
//! The counters and the run-time histogram live in a [`prometheus::Registry`] of
//! their own and are updated as events happen ([`Metrics::observe`], a label lookup
//! and an atomic add). Everything else (queue depths, running jobs, broker errors,
//! loop liveness, dropped events) is read at scrape time, in [`Metrics::render`],
//! into a registry made for that scrape, so that a value read elsewhere is never
//! copied into a counter that could then drift from it.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder as _, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::broker::{Broker, QueueStats};
use crate::error::Error;
use crate::events::{Event, EventKind, EventObserver, ListenerStats};
use crate::task::FailureKind;
use crate::worker::WorkerMonitor;

/// The prefix of every metric name.
const NAMESPACE: &str = "dmq";

/// How long a scrape waits for the broker to report a queue's depths.
const QUEUE_STATS_TIMEOUT: Duration = Duration::from_secs(2);

/// Upper bounds of the run-time histogram's buckets, in seconds: a millisecond to
/// ten minutes.
const RUN_TIME_BUCKETS: [f64; 18] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];

/// A process's Prometheus metrics: what happened to its jobs, counted from its
/// events, and, for a worker, its running jobs, queue depths, loops and broker
/// errors, read when scraped. Cheap to clone: clones share the same counters.
///
/// Give it to the manager with [`ManagerBuilder::metrics`](crate::ManagerBuilder::metrics),
/// then serve [`render`](Metrics::render) on an HTTP endpoint (`app worker
/// --metrics-addr 127.0.0.1:9090` does that for you). Each job is counted in the
/// process where the event happened: a producer counts what it enqueued, a worker
/// what it ran.
///
/// | metric | type | labels | what |
/// | --- | --- | --- | --- |
/// | `dmq_jobs_enqueued_total` | counter | `task`, `queue` | jobs this process enqueued |
/// | `dmq_jobs_started_total` | counter | `task`, `queue` | runs started (every attempt) |
/// | `dmq_jobs_total` | counter | `task`, `queue`, `outcome` | jobs that ended here, once each: `completed`, `failed`, `not_found`, `expired` |
/// | `dmq_retries_total` | counter | `task`, `queue` | failed runs that will run again |
/// | `dmq_dead_letters_total` | counter | `task`, `queue` | jobs this process dead-lettered |
/// | `dmq_job_run_seconds` | histogram | `task`, `queue` | how long each run took (completed, retried or failed for good) |
/// | `dmq_jobs_in_flight` | gauge | | jobs the worker runs now |
/// | `dmq_worker_concurrency` | gauge | | jobs the worker may run at once |
/// | `dmq_queue_depth` | gauge | `queue`, `state` | the worker's queues: `ready`, `gated` (of the ready, those held back by a rate or concurrency limit), `delayed`, `in_flight`, `dead` jobs |
/// | `dmq_dead_letters_dropped_total` | counter | `queue` | dead letters the broker dropped because the queue's dead-letter queue was full |
/// | `dmq_broker_up` | gauge | | 1 when the broker answered this scrape's reads, else 0 |
/// | `dmq_broker_errors_total` | counter | `operation` | failed broker operations: `claim`, `settle`, `renew`, `heartbeat`, `reap`, `schedule`, and `queue_stats` (this endpoint's own reads) |
/// | `dmq_worker_loop_alive` | gauge | `loop` | 1 while the worker's `claim`, `heartbeat` or `scheduler` loop makes progress (and, for `claim`, its claims have not all failed for over [`CLAIMS_FAILING_LIMIT`](crate::CLAIMS_FAILING_LIMIT)) |
/// | `dmq_worker_loop_last_progress_seconds` | gauge | `loop` | how long ago the loop last made progress |
/// | `dmq_events_dropped_total` | counter | `listener` | events a callback (or the event stream) had no room for |
///
/// A job that runs and fails twice before it succeeds counts three starts, two
/// retries and one `completed`. A job whose envelope does not decode names no task:
/// its series have an empty `task` label. Labels are task and queue names only,
/// never ids or error messages, so the number of series stays bounded.
///
/// ```
/// use dmq_core::{Manager, Metrics};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> dmq_core::Result<()> {
/// let metrics = Metrics::new();
/// let manager = Manager::builder().metrics(metrics.clone()).build()?;
/// let worker = manager.worker().start();
/// let monitor = worker.monitor();
/// // ... enqueue and run jobs; then, for each scrape:
/// let text = metrics.render(&manager, Some(&monitor)).await;
/// assert!(text.contains("# TYPE dmq_jobs_in_flight gauge"));
/// // Serve `text` with the content type `Metrics::CONTENT_TYPE`.
/// worker.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Counters>,
}

/// What events update, kept from one scrape to the next.
struct Counters {
    registry: Registry,
    enqueued: IntCounterVec,
    started: IntCounterVec,
    jobs: IntCounterVec,
    retries: IntCounterVec,
    dead_letters: IntCounterVec,
    held: IntCounterVec,
    run_seconds: HistogramVec,
    /// Scrapes whose read of a queue's depths failed or timed out.
    queue_stats_errors: AtomicU64,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// The content type of what [`render`](Metrics::render) returns: Prometheus's
    /// text exposition format, version 0.0.4.
    pub const CONTENT_TYPE: &'static str = prometheus::TEXT_FORMAT;

    /// Fresh metrics, every counter at zero.
    #[must_use]
    pub fn new() -> Self {
        let registry = Registry::new();
        let task_queue = ["task", "queue"];
        let enqueued = counter_vec(
            &registry,
            "jobs_enqueued_total",
            "Jobs this process enqueued.",
            &task_queue,
        );
        let started = counter_vec(
            &registry,
            "jobs_started_total",
            "Runs of jobs started, every attempt counted.",
            &task_queue,
        );
        let jobs = counter_vec(
            &registry,
            "jobs_total",
            "Jobs that ended in this process, once each, by outcome: completed, failed, \
             not_found (no such task in the worker) or expired.",
            &["task", "queue", "outcome"],
        );
        let retries = counter_vec(
            &registry,
            "retries_total",
            "Failed runs whose job runs again.",
            &task_queue,
        );
        let dead_letters = counter_vec(
            &registry,
            "dead_letters_total",
            "Jobs this process moved to a dead-letter queue.",
            &task_queue,
        );
        let held = counter_vec(
            &registry,
            "jobs_held_back_total",
            "Jobs this process's claims found due but held back at their gate, once per \
             hold: throttled by a rate limit (limit=rate) or deferred by a concurrency \
             limit (limit=concurrency).",
            &["task", "queue", "limit"],
        );
        let opts = HistogramOpts::new(
            "job_run_seconds",
            "How long each run took, in seconds (completed, retried or failed for good).",
        )
        .namespace(NAMESPACE)
        .buckets(RUN_TIME_BUCKETS.to_vec());
        let run_seconds = HistogramVec::new(opts, &task_queue).expect("a valid metric definition");
        registry.register(Box::new(run_seconds.clone())).expect("a metric registered once");
        Metrics {
            inner: Arc::new(Counters {
                registry,
                enqueued,
                started,
                jobs,
                retries,
                dead_letters,
                held,
                run_seconds,
                queue_stats_errors: AtomicU64::new(0),
            }),
        }
    }

    /// Counts one event. Runs on the job's own path, synchronously: a label lookup
    /// and an atomic add or two.
    pub(crate) fn observe(&self, event: &Event) {
        let c = &self.inner;
        let (task, queue) = (event.task.as_str(), event.queue.as_str());
        match &event.kind {
            EventKind::Queued { .. } => inc(&c.enqueued, &[task, queue]),
            EventKind::Started => inc(&c.started, &[task, queue]),
            EventKind::Completed { run_time } => {
                inc(&c.jobs, &[task, queue, "completed"]);
                c.observe_run(task, queue, *run_time);
            }
            EventKind::Failed { failure, run_time, .. } => {
                // A job of an unknown task was counted at its `NotFound` event.
                if !matches!(failure, FailureKind::UnknownTask) {
                    inc(&c.jobs, &[task, queue, "failed"]);
                }
                if let Some(run_time) = run_time {
                    c.observe_run(task, queue, *run_time);
                }
            }
            EventKind::Retry { run_time, .. } => {
                inc(&c.retries, &[task, queue]);
                c.observe_run(task, queue, *run_time);
            }
            EventKind::DeadLettered { .. } => inc(&c.dead_letters, &[task, queue]),
            EventKind::NotFound => inc(&c.jobs, &[task, queue, "not_found"]),
            EventKind::Expired { .. } => inc(&c.jobs, &[task, queue, "expired"]),
            EventKind::Held { limit, .. } => inc(&c.held, &[task, queue, limit.as_str()]),
        }
    }

    /// Every metric now, as [`render`](Metrics::render) says, with the listeners'
    /// figures and the queue depths read from `listeners` and `broker`.
    pub(crate) async fn render_from(
        &self,
        listeners: &[ListenerStats],
        broker: &dyn Broker,
        worker: Option<&WorkerMonitor>,
    ) -> String {
        let mut families = self.inner.registry.gather();
        families.extend(self.scrape(listeners, broker, worker).await);
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::error!(error = %e, "encoding the metrics failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// The metrics read at scrape time, in a registry of their own.
    async fn scrape(
        &self,
        listeners: &[ListenerStats],
        broker: &dyn Broker,
        worker: Option<&WorkerMonitor>,
    ) -> Vec<MetricFamily> {
        let registry = Registry::new();
        let dropped = counter_vec(
            &registry,
            "events_dropped_total",
            "Events a listener (a callback, or the broker's event stream) had no room for, or \
             that could not be written.",
            &["listener"],
        );
        for listener in listeners {
            if let Ok(c) = dropped.get_metric_with_label_values(&[listener.name.as_str()]) {
                c.inc_by(listener.dropped);
            }
        }
        if let Some(worker) = worker {
            self.scrape_worker(&registry, broker, worker).await;
        }
        registry.gather()
    }

    /// A worker's gauges and counters, and the depths of its queues.
    async fn scrape_worker(
        &self,
        registry: &Registry,
        broker: &dyn Broker,
        worker: &WorkerMonitor,
    ) {
        let vitals = worker.vitals();
        // A broker without an admin capability has no depths to give: none is read, and
        // that is no failure.
        let queues = if broker.admin().is_some() { vitals.queues.as_slice() } else { &[] };
        let reads = queues.iter().map(|queue| async move {
            let read = tokio::time::timeout(QUEUE_STATS_TIMEOUT, async move {
                match broker.admin() {
                    Some(admin) => admin.queue_stats(queue).await,
                    None => Err(Error::Unsupported("no admin capability".to_owned())),
                }
            });
            match read.await {
                Ok(Ok(stats)) => Some(stats),
                Ok(Err(e)) => {
                    tracing::debug!(%queue, error = %e, "a metrics scrape could not read a queue's depths");
                    None
                }
                Err(_) => {
                    tracing::debug!(%queue, "a metrics scrape timed out reading a queue's depths");
                    None
                }
            }
        });
        let stats: Vec<Option<QueueStats>> = futures::future::join_all(reads).await;
        let failed = stats.iter().filter(|s| s.is_none()).count() as u64;
        let errors = self.inner.queue_stats_errors.fetch_add(failed, Ordering::Relaxed) + failed;

        let depth = gauge_vec(
            registry,
            "queue_depth",
            "Jobs in each of the worker's queues, by state: ready, delayed, in_flight, dead.",
            &["queue", "state"],
        );
        let dead_dropped = counter_vec(
            registry,
            "dead_letters_dropped_total",
            "Dead letters dropped because the queue's dead-letter queue was full.",
            &["queue"],
        );
        for (queue, stats) in vitals.queues.iter().zip(&stats) {
            let Some(stats) = stats else { continue };
            for (state, n) in [
                ("ready", stats.ready),
                ("gated", stats.gated),
                ("delayed", stats.delayed),
                ("in_flight", stats.in_flight),
                ("dead", stats.dead),
            ] {
                if let Ok(g) = depth.get_metric_with_label_values(&[queue.as_str(), state]) {
                    g.set(clamp(n));
                }
            }
            if let Ok(c) = dead_dropped.get_metric_with_label_values(&[queue.as_str()]) {
                c.inc_by(stats.dead_dropped);
            }
        }
        let up = gauge(
            registry,
            "broker_up",
            "1 when the broker answered this scrape's reads of the queues, else 0.",
        );
        up.set(i64::from(failed == 0));

        gauge(registry, "jobs_in_flight", "Jobs the worker runs now.")
            .set(i64::from(vitals.running));
        gauge(registry, "worker_concurrency", "Jobs the worker may run at once.")
            .set(clamp(vitals.concurrency as u64));

        let broker_errors = counter_vec(
            registry,
            "broker_errors_total",
            "Failed broker operations, by operation: claim, settle, renew, heartbeat, reap, \
             schedule, and queue_stats (the metrics scrape's own reads).",
            &["operation"],
        );
        let operations = vitals.broker_errors.iter().copied().chain([("queue_stats", errors)]);
        for (operation, n) in operations {
            if let Ok(c) = broker_errors.get_metric_with_label_values(&[operation]) {
                c.inc_by(n);
            }
        }

        let alive = gauge_vec(
            registry,
            "worker_loop_alive",
            "1 while the worker's loop is alive as /health judges it (or the worker is stopping), else 0.",
            &["loop"],
        );
        let since = gauge_vec_f64(
            registry,
            "worker_loop_last_progress_seconds",
            "Seconds since the worker's loop last made progress.",
            &["loop"],
        );
        for l in &vitals.loops {
            if let Ok(g) = alive.get_metric_with_label_values(&[l.name]) {
                g.set(i64::from(l.alive));
            }
            if let (Some(ago), Ok(g)) =
                (l.since_beat, since.get_metric_with_label_values(&[l.name]))
            {
                g.set(ago.as_secs_f64());
            }
        }
    }
}

impl Counters {
    fn observe_run(&self, task: &str, queue: &str, run_time: Duration) {
        if let Ok(h) = self.run_seconds.get_metric_with_label_values(&[task, queue]) {
            h.observe(run_time.as_secs_f64());
        }
    }
}

/// Adds one to the counter of `labels` (their number is fixed by the caller).
fn inc(vec: &IntCounterVec, labels: &[&str]) {
    if let Ok(counter) = vec.get_metric_with_label_values(labels) {
        counter.inc();
    }
}

/// A count as a gauge value.
fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

// The definitions below are constants of this file: a name or label that Prometheus
// refuses, or one registered twice, is a bug that the unit tests catch.

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let vec = IntCounterVec::new(Opts::new(name, help).namespace(NAMESPACE), labels)
        .expect("a valid metric definition");
    registry.register(Box::new(vec.clone())).expect("a metric registered once");
    vec
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let vec = IntGaugeVec::new(Opts::new(name, help).namespace(NAMESPACE), labels)
        .expect("a valid metric definition");
    registry.register(Box::new(vec.clone())).expect("a metric registered once");
    vec
}

fn gauge_vec_f64(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::GaugeVec {
    let vec = prometheus::GaugeVec::new(Opts::new(name, help).namespace(NAMESPACE), labels)
        .expect("a valid metric definition");
    registry.register(Box::new(vec.clone())).expect("a metric registered once");
    vec
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let gauge = IntGauge::with_opts(Opts::new(name, help).namespace(NAMESPACE))
        .expect("a valid metric definition");
    registry.register(Box::new(gauge.clone())).expect("a metric registered once");
    gauge
}

impl EventObserver for Metrics {
    fn observe(&self, event: &Event) {
        Metrics::observe(self, event);
    }
}
