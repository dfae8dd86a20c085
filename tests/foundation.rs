//! The foundation end to end on the in-memory broker: the DESIGN.md example, many
//! jobs on several queues and workers, panics, timeouts, shutdown and bad input.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use dmq_core::{
    Broker, Envelope, Error, FailureKind, InMemoryBroker, Job, Manager, TaskError, TaskId,
    TaskState, task,
};

mod common;
use common::{WAIT, encode_args, failure};

#[task]
async fn add(x: i64, y: i64) -> Result<i64, TaskError> {
    Ok(x + y)
}

#[task(name = "emails.send", queue = "emails", max_retries = 5, timeout = "30s")]
async fn send_email(to: String, body: String) -> Result<(), TaskError> {
    if to.is_empty() || body.is_empty() {
        return Err(TaskError::fatal("an e-mail needs a recipient and a body"));
    }
    Ok(())
}

/// The code of DESIGN.md's "The API a user writes", as written there (less the
/// `.cron(..)` line, which belongs to the scheduling work).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_design_example_returns_5() -> Result<(), Box<dyn std::error::Error>> {
    let manager = Manager::builder().build()?;
    let worker = manager.worker().concurrency(10).start();

    let handle = add::call(2, 3).enqueue(&manager).await?;
    assert_eq!(handle.result(Duration::from_secs(10)).await?, 5);
    let same: i64 = manager.result::<i64>(handle.id()).wait(Duration::from_secs(1)).await?;
    assert_eq!(same, 5);

    add::call(2, 3).delay(Duration::from_secs(30)).enqueue(&manager).await?;
    add::call(2, 3).eta(chrono::Utc::now() + chrono::Duration::hours(1)).enqueue(&manager).await?;
    assert_eq!(manager.broker().queue_stats("default").await?.delayed, 2);

    send_email::call("a@example.com".into(), "hi".into())
        .enqueue(&manager)
        .await?
        .result(WAIT)
        .await?;
    assert_eq!(add(2, 3).await?, 5, "the function stays callable as written");
    worker.shutdown().await;
    Ok(())
}

static RUNS: [AtomicU32; 10_000] = [const { AtomicU32::new(0) }; 10_000];

#[task(name = "foundation.count", queue = "count-a")]
async fn count(slot: usize) -> Result<usize, TaskError> {
    RUNS[slot].fetch_add(1, Ordering::SeqCst);
    Ok(slot)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_jobs_on_four_queues_and_two_workers_each_run_exactly_once() {
    let manager = Manager::builder().build().expect("manager");
    let queues = ["count-a", "count-b", "count-c", "count-d"];
    let first = manager.worker().concurrency(32).queues(queues).start();
    let second = manager.worker().concurrency(32).queues(queues.iter().rev().copied()).start();

    let mut handles = Vec::new();
    for slot in 0..10_000 {
        let call = count::call(slot).queue(queues[slot % 4]);
        handles.push(call.enqueue(&manager).await.expect("enqueue"));
    }
    for (slot, handle) in handles.iter().enumerate() {
        assert_eq!(handle.result(WAIT).await.expect("result"), slot);
    }
    first.shutdown().await;
    second.shutdown().await;
    for (slot, runs) in RUNS.iter().enumerate() {
        assert_eq!(
            runs.load(Ordering::SeqCst),
            1,
            "job {slot} ran a number of times other than one"
        );
    }
    for queue in queues {
        let stats = manager.broker().queue_stats(queue).await.expect("stats");
        assert_eq!((stats.ready, stats.in_flight, stats.dead), (0, 0, 0), "{queue}");
    }
}

#[task(queue = "panics")]
async fn explode(message: String) -> Result<(), TaskError> {
    panic!("{message}");
}

#[task(queue = "panics")]
async fn echo(text: String) -> Result<String, TaskError> {
    Ok(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_task_fails_and_the_next_job_still_runs() {
    let manager = Manager::builder().build().expect("manager");
    let worker = manager.worker().concurrency(1).queues(["panics"]).start();
    let boom = explode::call("kaboom".into()).enqueue(&manager).await.expect("enqueue");
    let after = echo::call("still here".into()).enqueue(&manager).await.expect("enqueue");

    let (kind, message) = failure(boom.result(WAIT).await);
    assert_eq!(kind, "panic");
    assert!(message.contains("kaboom"), "{message}");
    assert_eq!(after.result(WAIT).await.expect("next job"), "still here");
    assert_eq!(manager.broker().dead_letter_count("panics").await.expect("count"), 1);
    worker.shutdown().await;
}

#[task(queue = "slow", timeout = "200ms")]
async fn oversleep(secs: u64) -> Result<(), TaskError> {
    tokio::time::sleep(Duration::from_secs(secs)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_over_its_timeout_fails_naming_the_timeout() {
    let manager = Manager::builder().build().expect("manager");
    let worker = manager.worker().queues(["slow"]).start();
    let started = std::time::Instant::now();
    let handle = oversleep::call(60).enqueue(&manager).await.expect("enqueue");
    let (kind, message) = failure(handle.result(WAIT).await);
    assert_eq!(kind, "timeout");
    assert!(message.contains("timed out after 200ms"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(30), "the timeout was not applied");
    worker.shutdown().await;
}

static FINISHED: AtomicU32 = AtomicU32::new(0);

#[task(queue = "shutdown")]
async fn nap(millis: u64) -> Result<u64, TaskError> {
    tokio::time::sleep(Duration::from_millis(millis)).await;
    FINISHED.fetch_add(1, Ordering::SeqCst);
    Ok(millis)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_running_jobs_finish_within_the_grace_period_and_releases_the_rest() {
    let manager = Manager::builder().build().expect("manager");
    let mut ids = Vec::new();
    // Job 0 finishes at once; job 1 is still running when shutdown starts but ends
    // within the grace period; the long ones are still running when it ends. Enqueued
    // before the worker starts, so its first claim takes jobs 0 to 3.
    for millis in [10, 1_500].into_iter().chain([60_000; 18]) {
        ids.push(nap::call(millis).enqueue(&manager).await.expect("enqueue").id());
    }
    let worker =
        manager.worker().concurrency(4).queues(["shutdown"]).grace(Duration::from_secs(5)).start();
    assert_eq!(manager.result::<u64>(ids[0]).wait(WAIT).await.expect("first job"), 10);
    let report = worker.shutdown().await;

    assert_eq!(
        manager.result::<u64>(ids[1]).get().await.expect("get"),
        Some(1_500),
        "a job running at shutdown finishes within the grace period"
    );
    let mut completed = 0;
    for &id in &ids {
        if manager.result::<u64>(id).get().await.expect("get").is_some() {
            completed += 1;
        }
    }
    let stats = manager.broker().queue_stats("shutdown").await.expect("stats");
    assert_eq!(stats.in_flight, 0, "no job may stay leased after shutdown");
    assert_eq!(completed, 2, "only the short jobs finished");
    assert_eq!(stats.ready, 18, "every unfinished job is back in the queue");
    assert_eq!(FINISHED.load(Ordering::SeqCst), 2);
    assert!((2..=3).contains(&report.released), "released {}", report.released);
}

static LONG_RUNS: AtomicU32 = AtomicU32::new(0);

#[task(queue = "renewal")]
async fn outlive_the_lease(millis: u64) -> Result<u32, TaskError> {
    tokio::time::sleep(Duration::from_millis(millis)).await;
    Ok(LONG_RUNS.fetch_add(1, Ordering::SeqCst) + 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_longer_than_its_lease_keeps_it_and_runs_once() {
    let manager = Manager::builder().build().expect("manager");
    // Two workers: without renewal the second would take the job once the lease ran out.
    let first = manager.worker().queues(["renewal"]).lease(Duration::from_millis(300)).start();
    let second = manager.worker().queues(["renewal"]).lease(Duration::from_millis(300)).start();
    let handle = outlive_the_lease::call(2_000).enqueue(&manager).await.expect("enqueue");
    assert_eq!(handle.result(WAIT).await.expect("result"), 1);
    first.shutdown().await;
    second.shutdown().await;
    assert_eq!(LONG_RUNS.load(Ordering::SeqCst), 1, "the job ran more than once");
    let stats = manager.broker().queue_stats("renewal").await.expect("stats");
    assert_eq!((stats.ready, stats.in_flight, stats.dead), (0, 0, 0));
}

static RUNNING: AtomicU32 = AtomicU32::new(0);
static MOST_AT_ONCE: AtomicU32 = AtomicU32::new(0);

#[task(queue = "bounded")]
async fn occupy(millis: u64) -> Result<(), TaskError> {
    let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
    MOST_AT_ONCE.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(millis)).await;
    RUNNING.fetch_sub(1, Ordering::SeqCst);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_runs_as_many_jobs_at_once_as_its_concurrency_and_no_more() {
    let manager = Manager::builder().build().expect("manager");
    let calls = (0..40).map(|_| occupy::call(200));
    let ids = manager.enqueue_batch(calls).await.expect("enqueue");
    let worker = manager.worker().concurrency(8).queues(["bounded"]).start();
    for id in ids {
        manager.result::<()>(id).wait(WAIT).await.expect("result");
    }
    worker.shutdown().await;
    assert_eq!(MOST_AT_ONCE.load(Ordering::SeqCst), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_task_fails_and_is_dead_lettered() {
    let manager = Manager::builder().build().expect("manager");
    let worker = manager.worker().queues(["default"]).start();
    let args = encode_args(&(1, 2));
    let id = manager
        .enqueue_envelope(Envelope::new("no.such.task", "default", args))
        .await
        .expect("enqueue");
    let (kind, err) = failure(manager.result::<i64>(id).wait(WAIT).await);
    assert_eq!(kind, "unknown_task");
    assert!(err.contains("no task named \"no.such.task\""), "{err}");
    let dead = manager.broker().dead_letters("default", 0, 10).await.expect("dlq");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, id);
    assert!(dead[0].reason.starts_with("unknown_task"), "{}", dead[0].reason);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arguments_that_do_not_decode_fail_and_are_dead_lettered() {
    let manager = Manager::builder().build().expect("manager");
    let worker = manager.worker().queues(["default"]).start();
    let id = manager
        .enqueue_envelope(Envelope::new("add", "default", encode_args(&("two", "three"))))
        .await
        .expect("enqueue");
    let (kind, err) = failure(manager.result::<i64>(id).wait(WAIT).await);
    assert_eq!(kind, "bad_args");
    assert!(err.contains("(i64, i64)"), "{err}");
    let dead = manager.broker().dead_letters("default", 0, 10).await.expect("dlq");
    assert_eq!(dead.len(), 1);
    assert!(dead[0].reason.starts_with("bad_args"), "{}", dead[0].reason);

    // The worker lives on.
    let ok = add::call(1, 1).enqueue(&manager).await.expect("enqueue");
    assert_eq!(ok.result(WAIT).await.expect("result"), 2);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_envelope_is_dead_lettered_and_the_worker_carries_on() {
    let broker = Arc::new(InMemoryBroker::new());
    let manager = Manager::builder().shared_broker(broker.clone()).build().expect("manager");
    let worker = manager.worker().queues(["default"]).start();
    let id = TaskId::new();
    broker
        .enqueue(Job::new(id, "default", 5, None, b"\xc1 not msgpack".to_vec()))
        .await
        .expect("enqueue");
    let outcome = manager.backend().wait(id, WAIT).await.expect("wait").expect("an outcome");
    assert_eq!(outcome.state, TaskState::Failed);
    assert_eq!(outcome.failure.map(|f| f.kind), Some(FailureKind::Undecodable));
    let dead = broker.dead_letters("default", 0, 10).await.expect("dlq");
    assert!(dead[0].reason.starts_with("undecodable envelope"), "{}", dead[0].reason);

    let ok = add::call(20, 22).enqueue(&manager).await.expect("enqueue");
    assert_eq!(ok.result(WAIT).await.expect("result"), 42);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_read_as_the_wrong_type_is_an_error() {
    let manager = Manager::builder().build().expect("manager");
    let worker = manager.worker().queues(["default"]).start();
    let handle = add::call(2, 3).enqueue(&manager).await.expect("enqueue");
    handle.result(WAIT).await.expect("result");
    let err = manager.result::<Vec<String>>(handle.id()).wait(WAIT).await.expect_err("wrong type");
    assert!(matches!(err, Error::ResultType { .. }), "{err}");
    assert!(err.to_string().contains("Vec<alloc::string::String>"), "{err}");
    worker.shutdown().await;
}

#[tokio::test]
async fn a_job_over_the_size_limit_is_refused_at_enqueue() {
    let manager = Manager::builder().max_message_size(1024).build().expect("manager");
    let err = echo::call("x".repeat(4096)).enqueue(&manager).await.expect_err("too large");
    assert!(matches!(err, Error::MessageTooLarge { limit: 1024, .. }), "{err}");
    assert!(err.to_string().contains("max_message_size"), "{err}");
    assert_eq!(manager.broker().queue_stats("panics").await.expect("stats").ready, 0);
}

static FLAKY_RUNS: AtomicU32 = AtomicU32::new(0);

#[task(queue = "flaky", max_retries = 2)]
async fn flaky() -> Result<u32, TaskError> {
    let run = FLAKY_RUNS.fetch_add(1, Ordering::SeqCst) + 1;
    if run < 3 {
        return Err(TaskError::retry_after(
            std::io::Error::other(format!("run {run} failed")),
            Duration::from_millis(50),
        ));
    }
    Ok(run)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_task_is_retried_through_the_broker_within_max_retries() {
    let manager = Manager::builder().build().expect("manager");
    let worker = manager.worker().queues(["flaky"]).start();
    let handle = flaky::call().enqueue(&manager).await.expect("enqueue");
    assert_eq!(handle.result(WAIT).await.expect("third attempt succeeds"), 3);
    let outcome = manager.result::<u32>(handle.id()).outcome().await.expect("get").expect("stored");
    assert_eq!(outcome.attempts, 3);
    worker.shutdown().await;
}

static QUIET_RUNS: AtomicU32 = AtomicU32::new(0);

#[task(queue = "quiet", ignore_result)]
async fn quiet(n: u32) -> Result<u32, TaskError> {
    QUIET_RUNS.fetch_add(1, Ordering::SeqCst);
    Ok(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ignore_result_task_runs_and_stores_no_result() {
    let manager = Manager::builder().build().expect("manager");
    let ignored = quiet::call(7).enqueue(&manager).await.expect("enqueue");
    let marker =
        echo::call("after".into()).queue("quiet").enqueue(&manager).await.expect("enqueue");
    // One job at a time, in order: once the second job has a result, the first has run.
    let worker = manager.worker().concurrency(1).queues(["quiet"]).start();
    assert_eq!(marker.result(WAIT).await.expect("marker"), "after");
    worker.shutdown().await;
    assert_eq!(QUIET_RUNS.load(Ordering::SeqCst), 1);
    assert_eq!(manager.result::<u32>(ignored.id()).get().await.expect("get"), None);
    let stats = manager.broker().queue_stats("quiet").await.expect("stats");
    assert_eq!((stats.ready, stats.in_flight, stats.dead), (0, 0, 0), "the job was acknowledged");
}

static BACKOFF_RUNS: std::sync::Mutex<Vec<std::time::Instant>> = std::sync::Mutex::new(Vec::new());

#[task(queue = "backoff")]
async fn fails_twice() -> Result<u32, TaskError> {
    let runs = {
        let mut runs = BACKOFF_RUNS.lock().unwrap_or_else(|p| p.into_inner());
        runs.push(std::time::Instant::now());
        runs.len()
    };
    if runs < 3 {
        return Err(std::io::Error::other(format!("run {runs} failed")).into());
    }
    Ok(u32::try_from(runs).unwrap_or(u32::MAX))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_policy_on_the_call_sets_the_gaps_between_attempts() {
    use dmq_core::{Backoff, RetryPolicy};
    let manager = Manager::builder().build().expect("manager");
    let worker = manager.worker().queues(["backoff"]).start();
    // 300 ms, then 600 ms: the task itself allows no retries, the call allows two.
    let backoff = Backoff::linear(
        Duration::from_millis(300),
        Duration::from_millis(300),
        Duration::from_secs(10),
    )
    .expect("a valid backoff");
    let handle = fails_twice::call()
        .retry(RetryPolicy::new(2, backoff))
        .enqueue(&manager)
        .await
        .expect("enqueue");
    assert_eq!(handle.result(WAIT).await.expect("the third attempt succeeds"), 3);
    let runs = BACKOFF_RUNS.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let gaps: Vec<Duration> = runs.windows(2).map(|w| w[1] - w[0]).collect();
    // Never early; late only by scheduling (a generous bound, not a speed claim).
    for (gap, want) in gaps.iter().zip([300u64, 600]) {
        let want = Duration::from_millis(want);
        assert!(*gap >= want, "a retry came {gap:?} after the failure, before its {want:?}");
        assert!(*gap < want + Duration::from_secs(2), "a retry came {gap:?} late");
    }
    worker.shutdown().await;
}

#[test]
fn a_backoff_that_makes_no_sense_is_refused() {
    use dmq_core::Backoff;
    let s = Duration::from_secs(1);
    assert!(matches!(Backoff::exponential(s, 0.5, 10 * s), Err(Error::InvalidArgument(_))));
    assert!(matches!(Backoff::linear(10 * s, s, s), Err(Error::InvalidArgument(_))));
}

static EXPIRED_RUNS: AtomicU32 = AtomicU32::new(0);

#[task(queue = "expiring")]
async fn never_in_time() -> Result<(), TaskError> {
    EXPIRED_RUNS.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_expires_before_it_starts_never_runs() {
    let manager = Manager::builder().build().expect("manager");
    let worker = manager.worker().queues(["expiring"]).start();
    // Due in 300 ms, expired after 100 ms: no worker may start it.
    let late = never_in_time::call()
        .delay(Duration::from_millis(300))
        .expires_in(Duration::from_millis(100))
        .enqueue(&manager)
        .await
        .expect("enqueue");
    let past = never_in_time::call()
        .expires_at(chrono::Utc::now() - chrono::Duration::seconds(1))
        .enqueue(&manager)
        .await
        .expect("enqueue");
    for handle in [late, past] {
        let err = handle.result(WAIT).await.expect_err("an expired job has no value");
        assert!(matches!(err, Error::Expired { .. }), "{err}");
    }
    assert_eq!(EXPIRED_RUNS.load(Ordering::SeqCst), 0, "an expired job ran");
    let letters = manager.broker().dead_letters("expiring", 0, 10).await.expect("dead letters");
    assert_eq!(letters.len(), 2);
    assert!(letters.iter().all(|l| l.reason.contains("expired")), "{letters:?}");
    worker.shutdown().await;
}

static REQUEUED_RUNS: AtomicU32 = AtomicU32::new(0);

#[task(queue = "dlq")]
async fn fatal_once() -> Result<u32, TaskError> {
    let run = REQUEUED_RUNS.fetch_add(1, Ordering::SeqCst) + 1;
    if run == 1 {
        return Err(TaskError::fatal("the first run fails for good"));
    }
    Ok(run)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_requeued_runs_again_from_its_first_attempt() {
    let manager = Manager::builder().build().expect("manager");
    let worker = manager.worker().queues(["dlq", "dlq-again"]).start();
    let handle = fatal_once::call().enqueue(&manager).await.expect("enqueue");
    let id = handle.id();
    let err = handle.result(WAIT).await.expect_err("a fatal error");
    assert!(matches!(err, Error::TaskFailed { .. }), "{err}");
    assert_eq!(manager.dead_letter_count("dlq").await.expect("count"), 1);
    assert!(!manager.requeue_dead_letter("dlq", TaskId::new(), None).await.expect("requeue"));
    // Into another queue: the worker there runs it, from attempt 1.
    assert!(manager.requeue_dead_letter("dlq", id, Some("dlq-again")).await.expect("requeue"));
    assert_eq!(manager.dead_letter_count("dlq").await.expect("count"), 0);
    let deadline = std::time::Instant::now() + WAIT;
    let outcome = loop {
        let outcome = manager.result::<u32>(id).outcome().await.expect("read");
        if let Some(outcome) = outcome.filter(|o| o.state == TaskState::Succeeded) {
            break outcome;
        }
        assert!(std::time::Instant::now() < deadline, "the requeued job never succeeded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(outcome.attempts, 1, "attempts start over");
    assert_eq!(manager.result::<u32>(id).get().await.expect("value"), Some(2));
    assert_eq!(manager.broker().queue_stats("dlq-again").await.expect("stats").ready, 0);

    // Delete and purge.
    for _ in 0..3 {
        REQUEUED_RUNS.store(0, Ordering::SeqCst);
        let failed = fatal_once::call().enqueue(&manager).await.expect("enqueue");
        let _ = failed.result(WAIT).await;
    }
    assert_eq!(manager.dead_letter_count("dlq").await.expect("count"), 3);
    let newest = manager.dead_letters("dlq", 0, 1).await.expect("list")[0].id;
    assert!(manager.delete_dead_letter("dlq", newest).await.expect("delete"));
    assert_eq!(manager.purge_dead_letters("dlq").await.expect("purge"), 2);
    worker.shutdown().await;
}

static CHARGES: AtomicU32 = AtomicU32::new(0);

#[task(queue = "charges")]
async fn charge(cents: u32) -> Result<u32, TaskError> {
    CHARGES.fetch_add(1, Ordering::SeqCst);
    Ok(cents)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_enqueue_with_the_same_idempotency_key_enqueues_nothing() {
    let manager = Manager::builder().build().expect("manager");
    let first =
        charge::call(500).idempotency_key("order-42").enqueue(&manager).await.expect("enqueue");
    let again =
        charge::call(500).idempotency_key("order-42").enqueue(&manager).await.expect("enqueue");
    assert_eq!(again.id(), first.id(), "the second enqueue names the first job");
    assert_eq!(manager.broker().queue_len("charges").await.expect("len"), 1);
    let worker = manager.worker().queues(["charges"]).start();
    assert_eq!(again.result(WAIT).await.expect("result"), 500);
    worker.shutdown().await;
    assert_eq!(CHARGES.load(Ordering::SeqCst), 1, "the work ran once");
}
