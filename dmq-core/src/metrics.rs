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

use crate::broker::QueueStats;
use crate::events::{Event, EventKind};
use crate::manager::Manager;
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
/// | `dmq_queue_depth` | gauge | `queue`, `state` | the worker's queues: `ready`, `delayed`, `in_flight`, `dead` jobs |
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
        }
    }

    /// Every metric now, in Prometheus's text exposition format
    /// ([`CONTENT_TYPE`](Metrics::CONTENT_TYPE)): the counters of this process's
    /// events, the dropped events of `manager`'s listeners and, given the `worker`'s
    /// monitor, its running jobs, loops, broker errors and the depths of its queues.
    ///
    /// The depths are read from the broker, each queue within 2 seconds; a queue
    /// that cannot be read is left out of `dmq_queue_depth`, counted in
    /// `dmq_broker_errors_total{operation="queue_stats"}`, and sets `dmq_broker_up`
    /// to 0: the scrape itself still succeeds.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future only abandons this scrape.
    pub async fn render(&self, manager: &Manager, worker: Option<&WorkerMonitor>) -> String {
        let mut families = self.inner.registry.gather();
        families.extend(self.scrape(manager, worker).await);
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::error!(error = %e, "encoding the metrics failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// The metrics read at scrape time, in a registry of their own.
    async fn scrape(&self, manager: &Manager, worker: Option<&WorkerMonitor>) -> Vec<MetricFamily> {
        let registry = Registry::new();
        let dropped = counter_vec(
            &registry,
            "events_dropped_total",
            "Events a listener (a callback, or the broker's event stream) had no room for, or \
             that could not be written.",
            &["listener"],
        );
        for listener in manager.event_listeners() {
            if let Ok(c) = dropped.get_metric_with_label_values(&[listener.name.as_str()]) {
                c.inc_by(listener.dropped);
            }
        }
        if let Some(worker) = worker {
            self.scrape_worker(&registry, manager, worker).await;
        }
        registry.gather()
    }

    /// A worker's gauges and counters, and the depths of its queues.
    async fn scrape_worker(&self, registry: &Registry, manager: &Manager, worker: &WorkerMonitor) {
        let vitals = worker.vitals();
        let reads = vitals.queues.iter().map(|queue| async move {
            let read = tokio::time::timeout(QUEUE_STATS_TIMEOUT, async move {
                manager.admin()?.queue_stats(queue).await
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::{InMemoryBroker, Job};
    use crate::events::Callback;
    use crate::task::registry::{TaskFuture, TaskRegistration};
    use crate::task::{TaskContext, TaskId};
    use tokio::sync::Notify;

    /// Lets the one job of `metrics.unit.held` end.
    static RELEASE_HELD: Notify = Notify::const_new();

    fn held(_: Vec<u8>, _: TaskContext) -> TaskFuture {
        Box::pin(async {
            RELEASE_HELD.notified().await;
            Ok(Vec::new())
        })
    }

    // Linked into every unit test's manager; only a worker of `metrics-held` runs it.
    inventory::submit! {
        TaskRegistration {
            name: "metrics.unit.held",
            queue: "metrics-held",
            max_retries: None,
            backoff: None,
            retry: None,
            guarantee: None,
            periodic: None,
            timeout: None,
            ignore_result: true,
            path: "dmq_core::metrics::tests::held",
            file: file!(),
            line: line!(),
            run: held,
            check_args: |_| Ok(()),
        }
    }

    /// A callback that handles nothing until it is told to, so its queue fills.
    struct Blocked(Arc<Notify>);

    #[async_trait::async_trait]
    impl Callback for Blocked {
        async fn on_event(&self, _event: &Event) {
            self.0.notified().await;
        }

        fn name(&self) -> String {
            "blocked".to_owned()
        }
    }

    /// Waits up to 5 s for `done`.
    async fn until(mut done: impl FnMut() -> bool) {
        for _ in 0..500 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("still not done after 5 s");
    }

    fn event(kind: EventKind, task: &str, queue: &str) -> Event {
        Event::new(kind, TaskId::new(), task, queue, 1)
    }

    fn failed(failure: FailureKind, run_time: Option<Duration>) -> EventKind {
        EventKind::Failed { failure, error: "boom".to_owned(), run_time }
    }

    /// The value of the one line of `text` that starts with `series` and a space.
    fn value(text: &str, series: &str) -> Option<f64> {
        let line =
            text.lines().find(|l| l.strip_prefix(series).is_some_and(|v| v.starts_with(' ')))?;
        line[series.len()..].trim().parse().ok()
    }

    #[tokio::test]
    async fn each_job_is_counted_once_at_its_end() {
        let metrics = Metrics::new();
        let ms = Duration::from_millis;
        let events = [
            // Succeeds on its second attempt.
            event(EventKind::Queued { eta: None }, "add", "math"),
            event(EventKind::Started, "add", "math"),
            event(
                EventKind::Retry { delay: ms(10), error: "e".into(), run_time: ms(3) },
                "add",
                "math",
            ),
            event(EventKind::Started, "add", "math"),
            event(EventKind::Completed { run_time: ms(3) }, "add", "math"),
            // Fails for good.
            event(EventKind::Started, "add", "math"),
            event(failed(FailureKind::Fatal, Some(ms(2000))), "add", "math"),
            event(EventKind::DeadLettered { reason: "fatal: boom".into() }, "add", "math"),
            // Unknown task.
            event(EventKind::NotFound, "nope", "math"),
            event(failed(FailureKind::UnknownTask, None), "nope", "math"),
            event(EventKind::DeadLettered { reason: "unknown".into() }, "nope", "math"),
            // Expired.
            event(EventKind::Expired { expired_at: chrono::Utc::now() }, "add", "math"),
            event(EventKind::DeadLettered { reason: "expired".into() }, "add", "math"),
        ];
        for e in &events {
            metrics.observe(e);
        }
        let manager = Manager::builder().build().unwrap();
        let text = metrics.render(&manager, None).await;
        let at = |series: &str| value(&text, series);
        assert_eq!(at(r#"dmq_jobs_enqueued_total{queue="math",task="add"}"#), Some(1.0), "{text}");
        assert_eq!(at(r#"dmq_jobs_started_total{queue="math",task="add"}"#), Some(3.0));
        assert_eq!(at(r#"dmq_jobs_total{outcome="completed",queue="math",task="add"}"#), Some(1.0));
        assert_eq!(at(r#"dmq_jobs_total{outcome="failed",queue="math",task="add"}"#), Some(1.0));
        assert_eq!(at(r#"dmq_jobs_total{outcome="expired",queue="math",task="add"}"#), Some(1.0));
        assert_eq!(
            at(r#"dmq_jobs_total{outcome="not_found",queue="math",task="nope"}"#),
            Some(1.0)
        );
        assert_eq!(
            at(r#"dmq_jobs_total{outcome="failed",queue="math",task="nope"}"#),
            None,
            "{text}"
        );
        assert_eq!(at(r#"dmq_retries_total{queue="math",task="add"}"#), Some(1.0));
        assert_eq!(at(r#"dmq_dead_letters_total{queue="math",task="add"}"#), Some(2.0));
        assert_eq!(at(r#"dmq_dead_letters_total{queue="math",task="nope"}"#), Some(1.0));
        // Three runs: two of 3 ms (one retried) and one of 2 s.
        assert_eq!(at(r#"dmq_job_run_seconds_count{queue="math",task="add"}"#), Some(3.0));
        assert_eq!(
            at(r#"dmq_job_run_seconds_bucket{queue="math",task="add",le="0.005"}"#),
            Some(2.0)
        );
        assert_eq!(
            at(r#"dmq_job_run_seconds_bucket{queue="math",task="add",le="2.5"}"#),
            Some(3.0)
        );
        assert_eq!(at(r#"dmq_job_run_seconds_sum{queue="math",task="add"}"#), Some(2.006));
        assert!(text.contains("# TYPE dmq_job_run_seconds histogram"), "{text}");
        assert!(text.contains("# TYPE dmq_jobs_total counter"), "{text}");
        // Without a worker there is nothing of a worker's.
        assert!(
            !text.contains("dmq_jobs_in_flight") && !text.contains("dmq_queue_depth"),
            "{text}"
        );
        // Clones share the counters.
        metrics.clone().observe(&event(EventKind::Started, "add", "math"));
        let text = metrics.render(&manager, None).await;
        assert_eq!(value(&text, r#"dmq_jobs_started_total{queue="math",task="add"}"#), Some(4.0));
    }

    #[tokio::test]
    async fn a_scrape_reads_the_workers_queues_loops_and_errors() {
        let metrics = Metrics::new();
        let manager = Manager::builder().metrics(metrics.clone()).build().unwrap();
        let call = crate::Call::<()>::new("metrics.unit.later", "metrics-unit", &());
        call.delay(Duration::from_secs(3600)).enqueue(&manager).await.unwrap();
        let worker = manager.worker().queues(["metrics-unit"]).concurrency(7).start();
        let monitor = worker.monitor();
        // Its loops report once they have started.
        for _ in 0..500 {
            if monitor.vitals().loops.len() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let text = metrics.render(&manager, Some(&monitor)).await;
        let at = |series: &str| value(&text, series);
        assert_eq!(
            at(r#"dmq_queue_depth{queue="metrics-unit",state="delayed"}"#),
            Some(1.0),
            "{text}"
        );
        assert_eq!(at(r#"dmq_queue_depth{queue="metrics-unit",state="ready"}"#), Some(0.0));
        assert_eq!(at(r#"dmq_queue_depth{queue="metrics-unit",state="dead"}"#), Some(0.0));
        assert_eq!(at(r#"dmq_queue_depth{queue="metrics-unit",state="in_flight"}"#), Some(0.0));
        assert_eq!(at("dmq_worker_concurrency"), Some(7.0));
        assert_eq!(at("dmq_jobs_in_flight"), Some(0.0));
        assert_eq!(at("dmq_broker_up"), Some(1.0));
        assert_eq!(at(r#"dmq_broker_errors_total{operation="claim"}"#), Some(0.0));
        assert_eq!(at(r#"dmq_broker_errors_total{operation="queue_stats"}"#), Some(0.0));
        assert_eq!(at(r#"dmq_worker_loop_alive{loop="claim"}"#), Some(1.0), "{text}");
        assert!(text.contains("# TYPE dmq_broker_errors_total counter"), "{text}");
        assert!(text.contains(r#"dmq_worker_loop_last_progress_seconds{loop="heartbeat"}"#));
        // The producer side counted its enqueue.
        assert_eq!(
            at(r#"dmq_jobs_enqueued_total{queue="metrics-unit",task="metrics.unit.later"}"#),
            Some(1.0)
        );
        worker.shutdown().await;
    }

    #[tokio::test]
    async fn a_running_job_is_in_flight_until_it_ends() {
        let metrics = Metrics::new();
        let manager = Manager::builder().metrics(metrics.clone()).build().unwrap();
        let worker = manager.worker().queues(["metrics-held"]).start();
        let monitor = worker.monitor();
        crate::Call::<()>::new("metrics.unit.held", "metrics-held", &())
            .enqueue(&manager)
            .await
            .unwrap();
        until(|| monitor.vitals().running == 1).await;
        let text = metrics.render(&manager, Some(&monitor)).await;
        assert_eq!(value(&text, "dmq_jobs_in_flight"), Some(1.0), "{text}");

        RELEASE_HELD.notify_one();
        until(|| monitor.vitals().running == 0).await;
        let text = metrics.render(&manager, Some(&monitor)).await;
        assert_eq!(value(&text, "dmq_jobs_in_flight"), Some(0.0), "{text}");
        worker.shutdown().await;
    }

    #[tokio::test]
    async fn events_a_full_callback_had_no_room_for_are_counted() {
        let release = Arc::new(Notify::new());
        let manager = Manager::builder()
            .callback(Blocked(Arc::clone(&release)))
            .event_buffer(1)
            .build()
            .unwrap();
        // Each enqueue emits a Queued event. The callback blocks on the first it takes
        // and its queue holds one more: at least three of the five are dropped.
        for _ in 0..5 {
            crate::Call::<()>::new("metrics.unit.later", "metrics-drops", &())
                .delay(Duration::from_secs(3600))
                .enqueue(&manager)
                .await
                .unwrap();
        }
        let listeners = manager.event_listeners();
        let blocked = listeners.iter().find(|l| l.name == "blocked").expect("the callback");
        assert!(blocked.dropped >= 3, "{listeners:?}");
        let text = Metrics::new().render(&manager, None).await;
        assert_eq!(
            value(&text, r#"dmq_events_dropped_total{listener="blocked"}"#),
            Some(blocked.dropped as f64),
            "{text}"
        );
        release.notify_waiters();
    }

    #[tokio::test]
    async fn dead_letters_a_full_dead_letter_queue_dropped_are_counted() {
        let metrics = Metrics::new();
        let manager =
            Manager::builder().broker(InMemoryBroker::with_dead_letter_cap(1)).build().unwrap();
        let broker = manager.broker();
        let queues = vec!["metrics-dead".to_owned()];
        for i in 0..3u8 {
            broker
                .enqueue(Job::new(TaskId::new(), "metrics-dead", 5, None, vec![i]))
                .await
                .unwrap();
            let got = broker.claim("w", &queues, 1, Duration::from_secs(30), Duration::ZERO).await;
            broker.dead_letter(&got.unwrap()[0].lease, "bad").await.unwrap();
        }
        let worker = manager.worker().queues(["metrics-dead"]).scheduler(false).start();
        let text = metrics.render(&manager, Some(&worker.monitor())).await;
        let at = |series: &str| value(&text, series);
        assert_eq!(
            at(r#"dmq_queue_depth{queue="metrics-dead",state="dead"}"#),
            Some(1.0),
            "{text}"
        );
        assert_eq!(at(r#"dmq_dead_letters_dropped_total{queue="metrics-dead"}"#), Some(2.0));
        worker.shutdown().await;
    }
}
