//! Metrics rendered for a manager and, optionally, one of its workers.

use super::Manager;
use crate::metrics::Metrics;
use crate::worker::WorkerMonitor;

impl Metrics {
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
        self.render_from(&manager.event_listeners(), &**manager.broker(), worker).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::broker::{InMemoryBroker, Job};
    use crate::events::Callback;
    use crate::events::{Event, EventKind};
    use crate::registry::{TaskFuture, TaskRegistration};
    use crate::task::FailureKind;
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
            partitions: 1,
            rate_limit: None,
            burst: None,
            concurrency: None,
            limit_gate: None,
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

    fn held_back(limit: crate::HeldBy) -> EventKind {
        EventKind::Held { gate: "add".to_owned(), limit }
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
            // Held back at their gates: twice by the rate, once by the concurrency.
            event(held_back(crate::HeldBy::Rate), "add", "math"),
            event(held_back(crate::HeldBy::Rate), "add", "math"),
            event(held_back(crate::HeldBy::Concurrency), "add", "math"),
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
        let held = |limit: &str| {
            at(&format!(r#"dmq_jobs_held_back_total{{limit="{limit}",queue="math",task="add"}}"#))
        };
        assert_eq!((held("rate"), held("concurrency")), (Some(2.0), Some(1.0)), "{text}");
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
        assert_eq!(at(r#"dmq_queue_depth{queue="metrics-unit",state="gated"}"#), Some(0.0));
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
